//! The journal's values: a callback as it arrived ([`Record`]), and the state of a parked one
//! ([`Parked`]), each encoded with a version byte first.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::JournalError;

/// Record layout version, first byte of every record.
const RECORD_V1: u8 = 1;
/// Parked-record layout version, first byte of every value of `parked_callbacks`.
const PARKED_V1: u8 = 1;

/// A parked record waits 1 s after its first failure, then twice as long after each next one,
/// up to this: a condition that passes (a full NOTIFY queue, a trigger lifted) is noticed within
/// a minute, and a record that keeps failing costs one small transaction a minute.
pub const PARK_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A callback as it arrived: enough to parse it again, exactly as the HTTP path did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub sdk_app_id: i64,
    pub received_at: DateTime<Utc>,
    pub query: String,
    pub body: String,
}

impl Record {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 + 8 + 4 + self.query.len() + self.body.len());
        out.push(RECORD_V1);
        out.extend_from_slice(&self.sdk_app_id.to_le_bytes());
        out.extend_from_slice(&self.received_at.timestamp_micros().to_le_bytes());
        out.extend_from_slice(&(self.query.len() as u32).to_le_bytes());
        out.extend_from_slice(self.query.as_bytes());
        out.extend_from_slice(self.body.as_bytes());
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, JournalError> {
        let take = |at: usize, n: usize| bytes.get(at..at + n).ok_or(JournalError::Damaged);
        if take(0, 1)? != [RECORD_V1] {
            return Err(JournalError::Damaged);
        }
        let int = |at| take(at, 8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")));
        let sdk_app_id = int(1)?;
        let received_at = DateTime::from_timestamp_micros(int(9)?).ok_or(JournalError::Damaged)?;
        let query_len = u32::from_le_bytes(take(17, 4)?.try_into().expect("4 bytes")) as usize;
        let query = take(21, query_len)?;
        let body = bytes.get(21 + query_len..).ok_or(JournalError::Damaged)?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| JournalError::Damaged);
        Ok(Self {
            sdk_app_id,
            received_at,
            query: text(query)?,
            body: text(body)?,
        })
    }
}

/// Why a record waits, and when it is tried next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// Failed attempts so far (1 after the first).
    pub attempts: u32,
    pub first_failed_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    /// What PostgreSQL said the last time (SQLSTATE and message).
    pub error: String,
}

impl Parked {
    /// The state after a failure at `now`, given the previous one.
    pub(super) fn after_failure(
        previous: Option<&Parked>,
        error: String,
        now: DateTime<Utc>,
    ) -> Self {
        let attempts = previous.map_or(1, |p| p.attempts.saturating_add(1));
        let wait = Duration::from_secs(1u64 << (attempts - 1).min(16)).min(PARK_BACKOFF_MAX);
        Self {
            attempts,
            first_failed_at: previous.map_or(now, |p| p.first_failed_at),
            next_attempt_at: now + wait,
            error,
        }
    }

    pub(super) fn encode(&self, record: &[u8]) -> Vec<u8> {
        let error = self.error.as_bytes();
        let mut out = Vec::with_capacity(1 + 4 + 8 + 8 + 4 + error.len() + record.len());
        out.push(PARKED_V1);
        out.extend_from_slice(&self.attempts.to_le_bytes());
        out.extend_from_slice(&self.first_failed_at.timestamp_micros().to_le_bytes());
        out.extend_from_slice(&self.next_attempt_at.timestamp_micros().to_le_bytes());
        out.extend_from_slice(&(error.len() as u32).to_le_bytes());
        out.extend_from_slice(error);
        out.extend_from_slice(record);
        out
    }

    /// The state and the encoded record it holds.
    pub(super) fn decode(bytes: &[u8]) -> Result<(Self, &[u8]), JournalError> {
        let take = |at: usize, n: usize| bytes.get(at..at + n).ok_or(JournalError::Damaged);
        if take(0, 1)? != [PARKED_V1] {
            return Err(JournalError::Damaged);
        }
        let u32_at = |at| take(at, 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
        let time_at = |at| {
            take(at, 8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .and_then(|us| DateTime::from_timestamp_micros(us).ok_or(JournalError::Damaged))
        };
        let error_len = u32_at(21)? as usize;
        let error =
            String::from_utf8(take(25, error_len)?.to_vec()).map_err(|_| JournalError::Damaged)?;
        let record = bytes.get(25 + error_len..).ok_or(JournalError::Damaged)?;
        let parked = Self {
            attempts: u32_at(1)?,
            first_failed_at: time_at(5)?,
            next_attempt_at: time_at(13)?,
            error,
        };
        Ok((parked, record))
    }
}

/// A record for the journal's unit tests: app 1400000001, the n-th of its kind.
#[cfg(test)]
pub(super) fn test_record(n: i64) -> Record {
    Record {
        sdk_app_id: 1400000001,
        received_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
        query: format!("SdkAppid=1400000001&n={n}"),
        body: format!(r#"{{"n":{n},"text":"房间"}}"#),
    }
}

/// One record as the drain or an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: u64,
    pub record: Record,
    /// `None` while pending.
    pub parked: Option<Parked>,
}
