//! An async client for the three Tencent Room REST calls drift repair needs.
//!
//! Every call is `POST {base}/v4/{service}/{api}?sdkappid=…&identifier=…&usersig=…&random=…&contenttype=json`
//! with a JSON body. Tencent answers HTTP 200 with
//! `{"ActionStatus":"OK"|"FAIL","ErrorCode":0,"ErrorInfo":"","RequestId":"…","Response":{…}}`
//! (other statuses only for network-level failures); [`TencentClient`] turns that into a typed
//! [`Answer`] or a [`TencentError`].
//!
//! One `reqwest::Client` serves all calls, so connections are reused; each call has a timeout
//! (5 s by default). The URL carries the UserSig, a credential, so no URL ever reaches an error
//! text or a log line.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    sync::Arc,
    time::Duration,
};

use reqwest::Url;
use serde_json::{Value, json};

use crate::{
    callback::{
        Id, SdkAppId, Seat,
        answer::{self, LiveMembers, MalformedAnswer, RoomDetails, integer},
    },
    config::{DriftRepairConfig, Secret},
    tencent::usersig::UserSigCache,
};

/// Rooms and members.
pub const ROOM_SERVICE: &str = "room_engine_http_srv";
/// Seats (mics).
pub const MIC_SERVICE: &str = "room_engine_http_mic";
/// TUILiveKit's rooms and members.
pub const LIVE_SERVICE: &str = "live_engine_http_srv";

/// Tencent's reconciliation deadline per call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Members asked for per page: Tencent's documented default (it documents no maximum, so a
/// larger page is not assumed to be accepted).
pub const DEFAULT_MEMBER_PAGE_SIZE: u32 = 50;
/// A member list longer than this many pages is refused as [`TencentError::Malformed`]: with
/// the default page size that is 25,000 members, well past the 10,000 a room can hold, so only
/// a server that never ends its list gets there.
pub const DEFAULT_MAX_MEMBER_PAGES: usize = 500;

/// `ErrorCode` of a room that does not exist (never did, or was destroyed).
pub const ROOM_NOT_FOUND: i64 = 100_004;
/// `ErrorCode` of Tencent's internal error; worth a retry.
pub const INTERNAL_ERROR: i64 = 100_001;

/// Tuning of a [`TencentClient`]; `Default` is what production uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Whole-call deadline: connect, send, and read the answer.
    pub timeout: Duration,
    /// `Count` of each `get_room_member_list` page (at least 1).
    pub member_page_size: u32,
    /// See [`DEFAULT_MAX_MEMBER_PAGES`].
    pub max_member_pages: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            member_page_size: DEFAULT_MEMBER_PAGE_SIZE,
            max_member_pages: DEFAULT_MAX_MEMBER_PAGES,
        }
    }
}

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

/// A parsed answer together with the JSON it came from, which the reconciler stores as the
/// payload of the correction it makes.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    pub data: T,
    /// The whole answer as received (numbers keep every digit). For the member list, a JSON
    /// array of the answers of every page, in order.
    pub raw: Value,
}

/// The client. Cheap to share (`Arc` it, or clone: clones share connections and UserSigs).
#[derive(Clone)]
pub struct TencentClient {
    http: reqwest::Client,
    base: Url,
    admin_account: String,
    sigs: Arc<BTreeMap<SdkAppId, UserSigCache>>,
    options: ClientOptions,
    gate: Option<Arc<dyn RateGate>>,
}

/// Admits each REST call (every page of a member list too) within a rate bound that may be
/// shared with other processes (the reconciler's is).
pub trait RateGate: Send + Sync {
    /// Returns once one more call for `app` is within the bound; an error when it is not
    /// (then no call is made).
    fn admit(&self, app: SdkAppId) -> futures_util::future::BoxFuture<'_, Result<(), BudgetError>>;
}

impl fmt::Debug for TencentClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TencentClient")
            .field("base", &self.base.as_str())
            .field("admin_account", &self.admin_account)
            .field("apps", &self.sigs.keys().collect::<Vec<_>>())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TencentClient {
    /// The production client for a drift-repair configuration.
    pub fn new(config: &DriftRepairConfig) -> Result<Self, TencentError> {
        Self::with_options(
            &config.api_base,
            &config.admin_account,
            &config.keys,
            ClientOptions::default(),
        )
    }

    /// A client with explicit tuning (tests use a short timeout and small pages).
    pub fn with_options(
        api_base: &Url,
        admin_account: &str,
        keys: &BTreeMap<SdkAppId, Secret>,
        options: ClientOptions,
    ) -> Result<Self, TencentError> {
        // rustls, verified against the system's root certificates (the container image ships
        // them).
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .user_agent(concat!("roomsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TencentError::Network(describe(&e)))?;
        let sigs = keys
            .iter()
            .map(|(app, key)| (*app, UserSigCache::new(key.clone(), *app, admin_account)))
            .collect();
        Ok(Self {
            http,
            base: api_base.clone(),
            admin_account: admin_account.to_owned(),
            sigs: Arc::new(sigs),
            options,
            gate: None,
        })
    }

    /// The apps this client has keys for.
    /// Every call first passes `gate` (the rate bound of drift repair).
    pub fn with_gate(mut self, gate: Arc<dyn RateGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    pub fn apps(&self) -> impl Iterator<Item = SdkAppId> + '_ {
        self.sigs.keys().copied()
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// `room_engine_http_srv/get_room_info`. [`TencentError::RoomNotFound`] when the room is
    /// gone.
    pub async fn get_room_info(
        &self,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<RoomDetails>, TencentError> {
        self.room_info_of(ROOM_SERVICE, app, room).await
    }

    /// `live_engine_http_srv/get_room_info`: a TUILiveKit room, in the same shape.
    pub async fn get_live_room_info(
        &self,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<RoomDetails>, TencentError> {
        self.room_info_of(LIVE_SERVICE, app, room).await
    }

    /// `live_engine_http_srv/get_member_list`, every page. Tencent lists at most 1,000
    /// members of a larger room, and refreshes the list about every 40 s; `member_count` is
    /// its count of the whole room, so a caller can tell a cut list.
    pub async fn get_live_member_list(
        &self,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<LiveMembers>, TencentError> {
        let (members, pages) = self
            .member_pages(
                app,
                LIVE_SERVICE,
                "get_member_list",
                |next| json!({ "RoomId": room.as_str(), "Next": next }),
            )
            .await?;
        let member_count = answer::live_member_count(&pages)?;
        let data = LiveMembers {
            members,
            member_count,
        };
        Ok(Answer {
            data,
            raw: Value::Array(pages),
        })
    }

    /// Every page of a member list: the members in Tencent's order, each once, and the
    /// answers. `body` makes a page's request from the `Next` of the one before.
    async fn member_pages(
        &self,
        app: SdkAppId,
        service: &str,
        api: &str,
        body: impl Fn(&str) -> Value,
    ) -> Result<(Vec<Id>, Vec<Value>), TencentError> {
        let mut next = String::new();
        let mut pages = Vec::new();
        let mut members = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..self.options.max_member_pages {
            let raw = self.call(app, service, api, &body(&next)).await?;
            let (page, page_next) = answer::member_page(&raw)?;
            members.extend(page.into_iter().filter(|m| seen.insert(m.clone())));
            pages.push(raw);
            if page_next.is_empty() {
                return Ok((members, pages));
            }
            if page_next == next {
                return Err(malformed("Response.Next did not advance"));
            }
            next = page_next;
        }
        Err(TencentError::Malformed(format!(
            "the member list did not end within {} pages",
            self.options.max_member_pages
        )))
    }

    async fn room_info_of(
        &self,
        service: &str,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<RoomDetails>, TencentError> {
        let raw = self
            .call(
                app,
                service,
                "get_room_info",
                &json!({ "RoomId": room.as_str() }),
            )
            .await?;
        let data = answer::room_details(&raw)?;
        Ok(Answer { data, raw })
    }

    /// `room_engine_http_srv/get_room_member_list`, every page: the members in Tencent's order,
    /// each once.
    pub async fn get_room_member_list(
        &self,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<Vec<Id>>, TencentError> {
        let count = self.options.member_page_size.max(1);
        let (members, pages) = self
            .member_pages(
                app,
                ROOM_SERVICE,
                "get_room_member_list",
                |next| json!({ "RoomId": room.as_str(), "Count": count, "Next": next }),
            )
            .await?;
        Ok(Answer {
            data: members,
            raw: Value::Array(pages),
        })
    }

    /// `room_engine_http_mic/get_seat_list`: every seat, free ones with `member: None`.
    pub async fn get_seat_list(
        &self,
        app: SdkAppId,
        room: &Id,
    ) -> Result<Answer<Vec<Seat>>, TencentError> {
        let raw = self
            .call(
                app,
                MIC_SERVICE,
                "get_seat_list",
                &json!({ "RoomId": room.as_str() }),
            )
            .await?;
        let data = answer::seats_of_answer(&raw)?;
        Ok(Answer { data, raw })
    }

    /// One REST call: the whole answer when `ActionStatus` is OK and `ErrorCode` 0, else the
    /// error it stands for. The building block of the typed calls; usable for others.
    pub async fn call(
        &self,
        app: SdkAppId,
        service: &str,
        api: &str,
        body: &Value,
    ) -> Result<Value, TencentError> {
        let sigs = self.sigs.get(&app).ok_or(TencentError::NoKey(app.get()))?;
        if let Some(gate) = &self.gate {
            gate.admit(app).await.map_err(TencentError::Budget)?;
        }
        let sig = sigs.get();
        let mut url = self.base.clone();
        url.set_path(&format!(
            "{}/v4/{service}/{api}",
            self.base.path().trim_end_matches('/')
        ));
        url.query_pairs_mut()
            .append_pair("sdkappid", &app.get().to_string())
            .append_pair("identifier", &self.admin_account)
            .append_pair("usersig", sig.expose())
            .append_pair("random", &rand::random::<u32>().to_string())
            .append_pair("contenttype", "json");
        let result = self.send(url, body).await;
        tracing::debug!(
            sdk_app_id = app.get(),
            service,
            api,
            outcome = result
                .as_ref()
                .err()
                .map_or("ok", TencentError::error_code_label),
            "Tencent REST call"
        );
        result
    }

    async fn send(&self, url: Url, body: &Value) -> Result<Value, TencentError> {
        let response = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(from_reqwest)?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(TencentError::Http(status.as_u16()));
        }
        let bytes = response.bytes().await.map_err(from_reqwest)?;
        let answer: Value = serde_json::from_slice(&bytes)
            .map_err(|e| TencentError::Malformed(format!("not JSON: {e}")))?;
        check_status(answer)
    }
}

/// Splits an answer into success or the error its `ActionStatus`/`ErrorCode` say.
fn check_status(answer: Value) -> Result<Value, TencentError> {
    let Value::Object(fields) = &answer else {
        return Err(malformed("the answer is not a JSON object"));
    };
    let code = match fields.get("ErrorCode") {
        None | Some(Value::Null) => 0,
        Some(v) => integer(v).ok_or_else(|| malformed("ErrorCode is not an integer"))?,
    };
    let info = || {
        fields
            .get("ErrorInfo")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match (fields.get("ActionStatus").and_then(Value::as_str), code) {
        (_, ROOM_NOT_FOUND) => Err(TencentError::RoomNotFound),
        (Some("OK"), 0) => Ok(answer),
        (Some("FAIL"), 0) => Err(TencentError::Api {
            code: 0,
            info: info(),
        }),
        (_, 0) => Err(malformed("ActionStatus is neither OK nor FAIL")),
        (_, code) => Err(TencentError::Api { code, info: info() }),
    }
}

fn malformed(what: &str) -> TencentError {
    TencentError::Malformed(what.to_owned())
}

impl From<MalformedAnswer> for TencentError {
    fn from(error: MalformedAnswer) -> Self {
        Self::Malformed(error.0)
    }
}

fn from_reqwest(error: reqwest::Error) -> TencentError {
    if error.is_timeout() {
        TencentError::Timeout
    } else {
        TencentError::Network(describe(&error))
    }
}

/// The error and its causes, without the URL (which holds the UserSig).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error_without_url(error);
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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

    fn check(answer: Value) -> Result<Value, TencentError> {
        check_status(answer)
    }

    #[test]
    fn status_and_codes() {
        let ok = json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "Response": {}});
        assert_eq!(check(ok.clone()), Ok(ok));
        assert_eq!(
            check(
                json!({"ActionStatus": "FAIL", "ErrorCode": 100004, "ErrorInfo": "room not exist"})
            ),
            Err(TencentError::RoomNotFound)
        );
        assert_eq!(
            check(
                json!({"ActionStatus": "FAIL", "ErrorCode": "70001", "ErrorInfo": "sig expired"})
            ),
            Err(TencentError::Api {
                code: 70_001,
                info: "sig expired".into()
            })
        );
        assert_eq!(
            check(json!({"ActionStatus": "FAIL", "ErrorCode": 0})),
            Err(TencentError::Api {
                code: 0,
                info: String::new()
            })
        );
        assert!(matches!(
            check(json!({"ActionStatus": "MAYBE"})),
            Err(TencentError::Malformed(_))
        ));
        assert!(matches!(check(json!([1])), Err(TencentError::Malformed(_))));
        assert!(matches!(check(json!({})), Err(TencentError::Malformed(_))));
    }

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
