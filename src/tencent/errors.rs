//! What a Tencent REST call can fail with ([`TencentError`]), and how a failure is classed: worth a
//! retry, a problem with our credentials, a metrics label. No error text ever holds the URL,
//! which carries the UserSig (docs/drift-repair.md#failures-and-backoff).

use std::time::Duration;

use super::answer::MalformedAnswer;

/// `ErrorCode` of a room that does not exist (never did, or was destroyed).
pub const ROOM_NOT_FOUND: i64 = 100_004;
/// `ErrorCode` of Tencent's internal error; worth a retry.
pub const INTERNAL_ERROR: i64 = 100_001;
/// `ErrorCode` of `set_callback` when the app already has a callback configuration for the
/// product (`update_callback` changes it).
pub const CALLBACK_CONFIG_EXISTS: i64 = 100_300;
/// `ErrorCode` of `get_callback`/`update_callback` when the app has no callback configuration
/// for the product (`set_callback` creates it).
pub const NO_CALLBACK_CONFIG: i64 = 100_301;

/// What a call failed with. No variant's text contains the key, the UserSig or the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TencentError {
    /// `ErrorCode` 100004: the room does not exist (never did, or was destroyed).
    #[error("room not found (ErrorCode 100004)")]
    RoomNotFound,
    /// Any other non-zero `ErrorCode` (or `ActionStatus` `FAIL`).
    #[error("Tencent error {code}: {info}")]
    Api { code: i64, info: String },
    /// An HTTP status other than 200 (Tencent answers 200 unless the network failed).
    #[error("HTTP status {0}")]
    Http(u16),
    #[error("no answer within the timeout")]
    Timeout,
    /// Connection refused, reset, TLS failure, DNS, … (the text names no URL).
    #[error("network error: {0}")]
    Network(String),
    /// Not JSON, or a field missing or of the wrong type.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The client has no key for this app (a caller's mistake, not Tencent's).
    #[error("no secret key configured for app {0}")]
    NoKey(i64),
    /// The rate bound did not admit the call: no call was made.
    #[error("the REST call budget is unavailable: {0}")]
    Budget(BudgetError),
}

impl TencentError {
    /// `ErrorCode` as Tencent sent it, when the failure came from one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::RoomNotFound => Some(ROOM_NOT_FOUND),
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A transient failure: trying the same call later may well succeed (internal errors,
    /// Tencent's timeouts and frequency limits, 5xx/429, timeouts, network errors).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { code, .. } => {
                *code == INTERNAL_ERROR || *code == 60008 || is_rate_limit(*code)
            }
            Self::Http(status) => *status == 429 || (500..600).contains(status),
            Self::Timeout | Self::Network(_) | Self::Budget(_) => true,
            Self::RoomNotFound | Self::Malformed(_) | Self::NoKey(_) => false,
        }
    }

    /// A problem with our credentials (bad or expired UserSig, wrong key, wrong or disabled
    /// app, not an administrator, …): no retry helps until the configuration is fixed, and an
    /// operator must be told.
    pub fn is_auth_error(&self) -> bool {
        match self {
            Self::Api { code, .. } => {
                (70_000..80_000).contains(code)
                    || matches!(code, 60_004 | 60_005 | 60_006 | 60_010 | 60_016 | 60_021)
            }
            Self::NoKey(_) => true,
            _ => false,
        }
    }

    /// Tencent's frequency limit was hit.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, Self::Api { code, .. } if is_rate_limit(*code))
    }

    /// A metrics label with a bounded set of values: the `ErrorCode` for the codes worth
    /// telling apart, a class for any other code, and a name for each non-API failure.
    pub fn error_code_label(&self) -> &'static str {
        match self {
            Self::RoomNotFound => "100004",
            Self::Api { code, .. } => match code {
                100_001 => "100001",
                100_002 => "100002",
                100_003 => "100003",
                60_004 => "60004",
                60_005 => "60005",
                60_006 => "60006",
                60_007 => "60007",
                60_008 => "60008",
                60_010 => "60010",
                60_011 => "60011",
                60_016 => "60016",
                60_018 => "60018",
                60_019 => "60019",
                60_021 => "60021",
                70_001 => "70001",
                70_003 => "70003",
                70_009 => "70009",
                70_013 => "70013",
                70_014 => "70014",
                70_016 => "70016",
                70_020 => "70020",
                70_050 => "70050",
                70_107 => "70107",
                60_000..80_000 => "common_other",
                _ => "api_other",
            },
            Self::Http(status) if (500..600).contains(status) => "http_5xx",
            Self::Http(status) if (400..500).contains(status) => "http_4xx",
            Self::Http(_) => "http_other",
            Self::Timeout => "timeout",
            Self::Network(_) => "network",
            Self::Malformed(_) => "malformed",
            Self::NoKey(_) => "no_key",
            Self::Budget(_) => "budget",
        }
    }
}

/// Why a [`RateGate`] did not admit a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The bound cannot be known (the shared counter is unreachable); the cause as text, since
    /// the client knows nothing of where the counter lives.
    #[error("{0}")]
    Unavailable(String),
    /// No call was free within this wait.
    #[error("no budget within {} s", .0.as_secs())]
    Exhausted(Duration),
}

fn is_rate_limit(code: i64) -> bool {
    matches!(code, 60_007 | 60_011 | 60_018 | 60_019)
}

pub(super) fn malformed(what: &str) -> TencentError {
    TencentError::Malformed(what.to_owned())
}

impl From<MalformedAnswer> for TencentError {
    fn from(error: MalformedAnswer) -> Self {
        Self::Malformed(error.0)
    }
}

pub(super) fn from_reqwest(error: reqwest::Error) -> TencentError {
    if error.is_timeout() {
        TencentError::Timeout
    } else {
        TencentError::Network(describe(&error))
    }
}

/// The error and its causes, without the URL (which holds the UserSig).
pub(super) fn describe(error: &reqwest::Error) -> String {
    crate::telemetry::chain_after(error_without_url(error), std::error::Error::source(error))
}

fn error_without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_connect() {
        "connection failed"
    } else if error.is_request() {
        "request failed"
    } else if error.is_body() || error.is_decode() {
        "reading the answer failed"
    } else if error.is_builder() {
        "building the client failed"
    } else {
        "HTTP failure"
    };
    kind.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes() {
        let api = |code| TencentError::Api {
            code,
            info: String::new(),
        };
        assert!(api(100_001).is_retryable());
        assert!(!api(100_002).is_retryable());
        assert!(!TencentError::RoomNotFound.is_retryable());
        assert!(TencentError::Timeout.is_retryable());
        assert!(TencentError::Http(502).is_retryable());
        assert!(!TencentError::Http(404).is_retryable());
        for code in [70_001, 70_003, 70_009, 70_013, 60_006] {
            assert!(api(code).is_auth_error(), "{code}");
            assert!(!api(code).is_retryable(), "{code}");
        }
        assert!(!api(100_001).is_auth_error());
        assert!(api(60_011).is_rate_limited() && api(60_011).is_retryable());
    }

    #[test]
    fn labels_are_bounded() {
        let api = |code| TencentError::Api {
            code,
            info: String::new(),
        };
        assert_eq!(TencentError::RoomNotFound.error_code_label(), "100004");
        assert_eq!(api(100_001).error_code_label(), "100001");
        assert_eq!(api(70_001).error_code_label(), "70001");
        // Only the callback-configuration commands meet these; drift repair's metric keeps
        // its label set.
        assert_eq!(api(CALLBACK_CONFIG_EXISTS).error_code_label(), "api_other");
        assert_eq!(api(71_234).error_code_label(), "common_other");
        assert_eq!(api(123_456_789).error_code_label(), "api_other");
        assert_eq!(api(-1).error_code_label(), "api_other");
        assert_eq!(TencentError::Http(502).error_code_label(), "http_5xx");
        assert_eq!(TencentError::Timeout.error_code_label(), "timeout");
    }

    #[test]
    fn a_malformed_answer_is_a_malformed_error() {
        let error = TencentError::from(MalformedAnswer("Response is missing".into()));
        assert_eq!(error, TencentError::Malformed("Response is missing".into()));
    }
}
