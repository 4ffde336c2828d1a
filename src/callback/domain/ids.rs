//! The scalar values of a callback: the app, room and user ids, and `EventTime`, each
//! checked by its constructor.

use chrono::{DateTime, Utc};

/// An SDKAppID: a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SdkAppId(i64);

impl SdkAppId {
    /// Plain decimal digits, as Tencent writes it: no sign, no leading zero, no spaces
    /// (`i64`'s own parser would take `+1400000001` as that app).
    pub fn parse(raw: &str) -> Option<Self> {
        let plain = raw.bytes().all(|b| b.is_ascii_digit()) && !raw.starts_with('0');
        plain
            .then(|| raw.parse::<i64>().ok())
            .flatten()
            .and_then(Self::from_i64)
    }
    /// From a stored value (the journal, the history).
    pub fn from_i64(id: i64) -> Option<Self> {
        (id > 0).then_some(Self(id))
    }
    pub fn get(self) -> i64 {
        self.0
    }
}

/// A room or user id: 1..=256 bytes, no NUL character.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    pub const MAX_BYTES: usize = 256;

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        if raw.is_empty() {
            Err(IdError::Empty)
        } else if raw.len() > Self::MAX_BYTES {
            Err(IdError::TooLong)
        } else if raw.contains('\0') {
            Err(IdError::Nul)
        } else {
            Ok(Self(raw.to_owned()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a text is not an [`Id`]; the message completes "<field> ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("is longer than {} bytes", Id::MAX_BYTES)]
    TooLong,
    #[error("contains a NUL character")]
    Nul,
}

/// `EventTime`: milliseconds since the Unix epoch, positive, a valid timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(i64);

impl EventTime {
    pub fn from_millis(ms: i64) -> Option<Self> {
        (ms > 0 && DateTime::<Utc>::from_timestamp_millis(ms).is_some()).then_some(Self(ms))
    }
    pub fn millis(self) -> i64 {
        self.0
    }
    pub fn to_datetime(self) -> DateTime<Utc> {
        // The constructor checked the range.
        DateTime::<Utc>::from_timestamp_millis(self.0).expect("EventTime checked at parse")
    }
}

#[cfg(test)]
mod tests {
    use super::{EventTime, Id, SdkAppId};

    #[test]
    fn id_bounds() {
        assert!(Id::parse("").is_err());
        assert!(Id::parse(&"a".repeat(256)).is_ok());
        assert!(Id::parse(&"a".repeat(257)).is_err());
        // 256 bytes, not characters: 86 three-byte characters are 258 bytes.
        assert!(Id::parse(&"中".repeat(86)).is_err());
        assert!(Id::parse("a\0b").is_err());
    }

    #[test]
    fn sdk_app_id_is_plain_digits() {
        assert_eq!(
            SdkAppId::parse("1400000001").map(SdkAppId::get),
            Some(1_400_000_001)
        );
        for bad in [
            "",
            "+1400000001",
            "-1",
            "01400000001",
            "0",
            " 1400000001",
            "1400000001 ",
            "1_4",
            "99999999999999999999",
        ] {
            assert_eq!(SdkAppId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn event_time_bounds() {
        assert!(EventTime::from_millis(0).is_none());
        assert!(EventTime::from_millis(-5).is_none());
        assert!(EventTime::from_millis(i64::MAX).is_none());
        let t = EventTime::from_millis(1_670_574_414_123).unwrap();
        assert_eq!(
            t.to_datetime().to_rfc3339(),
            "2022-12-09T08:26:54.123+00:00"
        );
    }
}
