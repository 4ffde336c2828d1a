//! `rejected_callbacks`: what Tencent sent that roomsync or PostgreSQL refused, kept for an
//! operator; bounded so that a flood of bad callbacks cannot fill the disk.

use std::{sync::Mutex, time::Instant};

use sqlx::{PgConnection, PgPool};

use super::{DbRuntime, StoreError};
use crate::{callback::Command, telemetry::Metrics};

pub struct RejectedCallback<'a> {
    pub sdk_app_id: Option<i64>,
    pub callback_command: Option<&'a str>,
    pub error_code: i32,
    pub error_info: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
}

impl RejectedCallback<'_> {
    /// Where `ingest_daily` counts the refusal: under its app and the command's canonical
    /// name when it came after the app and signature checks; else under app 0 (anyone can
    /// send those, with any app id). A command roomsync does not know is counted as `''`, so
    /// that what a sender makes up cannot add rows.
    fn counted_as(&self) -> (i64, &'static str) {
        let past_checks = u32::try_from(self.error_code)
            .is_ok_and(|code| crate::codes::PAST_APP_CHECKS.contains(&code));
        let app = self.sdk_app_id.filter(|_| past_checks).unwrap_or(0);
        let command = self
            .callback_command
            .and_then(|c| {
                Command::HANDLED
                    .into_iter()
                    .find(|h| Command::parse(c).as_str() == *h)
            })
            .filter(|_| past_checks)
            .unwrap_or("");
        (app, command)
    }
}

/// Whether a record may be dropped when the budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// A callback answered 4xx: the sender was told; past the budget only a counter keeps it.
    Counted,
    /// A callback whose data PostgreSQL refused (answered 503): a sender can make PostgreSQL
    /// refuse at will, so it is bounded too, by a reserve of its own a flood of 4xx cannot
    /// take: [`REFUSED_RESERVE`] of each budget, on top of it.
    Refused,
    /// A journal record that no longer parses (answered 200 long ago): always kept. Only
    /// roomsync's own journal holds them, bounded by `JOURNAL_MAX_BYTES`.
    Exempt,
}

/// The reserve of [`Budget::Refused`] rows, as a share of each budget (per second and in
/// total): a tenth.
pub const REFUSED_RESERVE: u64 = 10;

/// How much of what was refused is kept for an operator (`REJECTED_*`, docs/configuration.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectedLimits {
    pub body_max_bytes: usize,
    /// Bytes of rows written per second for 4xx answers.
    pub max_bytes_per_sec: u64,
    /// Bytes the table may hold before rows for 4xx answers are no longer written.
    pub max_total_bytes: u64,
    pub retention_days: i32,
}

/// Keeps refused callbacks within [`RejectedLimits`].
pub struct RejectedStore {
    pool: PgPool,
    /// Where the inserts run (see [`DbRuntime`]).
    runtime: DbRuntime,
    limits: RejectedLimits,
    bucket: Mutex<TokenBucket>,
    /// The reserve of rows PostgreSQL refused.
    refused: Mutex<TokenBucket>,
}

impl RejectedStore {
    pub fn new(pool: PgPool, limits: RejectedLimits) -> Self {
        let per_sec = limits.max_bytes_per_sec as f64;
        Self {
            pool,
            runtime: DbRuntime::current(),
            limits,
            bucket: Mutex::new(TokenBucket::new(per_sec)),
            refused: Mutex::new(TokenBucket::new(per_sec / REFUSED_RESERVE as f64)),
        }
    }

    /// Inserts the record unless `budget` allows dropping it and the budget (bytes per second,
    /// bytes in the table) is spent; returns whether it was kept.
    pub async fn keep(
        &self,
        rejected: &RejectedCallback<'_>,
        budget: Budget,
        metrics: &Metrics,
    ) -> Result<bool, StoreError> {
        let row = StoredRow::of(rejected, self.limits.body_max_bytes);
        let total = self.limits.max_total_bytes;
        let (bucket, total_cap) = match budget {
            Budget::Exempt => (None, None),
            Budget::Counted => (Some(&self.bucket), Some(total)),
            Budget::Refused => (
                Some(&self.refused),
                Some(total.saturating_add(total / REFUSED_RESERVE)),
            ),
        };
        if let Some(bucket) = bucket
            && !bucket
                .lock()
                .expect("bucket")
                .take(row.bytes() as f64, Instant::now())
        {
            metrics.rejected_dropped.inc();
            return Ok(false);
        }
        // On the pool's runtime (a refusal is kept from an HTTP worker): the record is copied
        // for it, at most the bound of a body, and only once the budget let it through.
        let owned = (
            rejected.sdk_app_id,
            rejected.callback_command.map(str::to_owned),
            rejected.error_code,
            rejected.error_info.to_owned(),
            rejected.query.to_owned(),
            rejected.body.to_vec(),
        );
        drop(row);
        let (pool, body_max_bytes) = (self.pool.clone(), self.limits.body_max_bytes);
        let insert = async move {
            let (sdk_app_id, command, error_code, error_info, query, body) = &owned;
            let rejected = RejectedCallback {
                sdk_app_id: *sdk_app_id,
                callback_command: command.as_deref(),
                error_code: *error_code,
                error_info,
                query,
                body,
            };
            let row = StoredRow::of(&rejected, body_max_bytes);
            let mut conn = pool.acquire().await?;
            insert_rejected(&mut conn, &rejected, &row, total_cap).await
        };
        let kept = self.runtime.run(insert).await?;
        if kept.is_none() {
            metrics.rejected_dropped.inc();
        }
        Ok(kept.is_some())
    }
}

struct TokenBucket {
    tokens: f64,
    capacity: f64,
    per_sec: f64,
    at: Instant,
}

impl TokenBucket {
    /// Full, with bursts of ten seconds' worth.
    fn new(per_sec: f64) -> Self {
        Self {
            tokens: per_sec * 10.0,
            capacity: per_sec * 10.0,
            per_sec,
            at: Instant::now(),
        }
    }

    /// Takes `amount` tokens while any are left (the balance may go below zero): a row of any
    /// size can be kept after a quiet spell, the rate holds on average, and a burst exceeds
    /// its bound by one row at most.
    fn take(&mut self, amount: f64, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.at = now;
        if self.tokens > 0.0 {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }
}

/// What a row holds: the body once, as text when it can be (UTF-8 without NUL), else as the
/// exact bytes; cut at `body_max_bytes`.
pub struct StoredRow<'a> {
    body: Option<std::borrow::Cow<'a, str>>,
    body_bytes: Option<&'a [u8]>,
    callback_command: Option<String>,
    error_info: String,
    query: String,
}

impl<'a> StoredRow<'a> {
    pub fn of(rejected: &RejectedCallback<'a>, body_max_bytes: usize) -> Self {
        let kept = &rejected.body[..rejected.body.len().min(body_max_bytes)];
        // A cut in the middle of a character is not a reason to keep bytes: the text ends
        // before it.
        let (body, body_bytes) = match std::str::from_utf8(kept) {
            Ok(text) if !text.contains('\0') => (Some(text.into()), None),
            Err(e) if e.error_len().is_none() && !kept[..e.valid_up_to()].contains(&0) => {
                let text = std::str::from_utf8(&kept[..e.valid_up_to()]).expect("valid prefix");
                (Some(text.into()), None)
            }
            _ => (None, Some(kept)),
        };
        let strip = |s: &str| s.replace('\0', "\u{FFFD}");
        Self {
            body,
            body_bytes,
            callback_command: rejected.callback_command.map(strip),
            error_info: strip(rejected.error_info),
            query: strip(rejected.query),
        }
    }

    /// The bytes the row counts for in the budget (as `rejected_callbacks_row_bytes` counts
    /// them in the database).
    pub fn bytes(&self) -> usize {
        self.body.as_ref().map_or(0, |b| b.len())
            + self.body_bytes.map_or(0, <[u8]>::len)
            + self.callback_command.as_ref().map_or(0, String::len)
            + self.error_info.len()
            + self.query.len()
    }
}

/// Inserts one row, unless `total_cap` is given and the table already holds that many bytes or
/// more (so it exceeds the cap by one row at most); returns its id if it was inserted. A body
/// longer than the row's cut is kept cut (`body_size` says how long it was).
pub async fn insert_rejected(
    conn: &mut PgConnection,
    rejected: &RejectedCallback<'_>,
    row: &StoredRow<'_>,
    total_cap: Option<u64>,
) -> Result<Option<i64>, sqlx::Error> {
    let size = i32::try_from(rejected.body.len()).unwrap_or(i32::MAX);
    let cap = total_cap.map(|c| i64::try_from(c).unwrap_or(i64::MAX));
    // The total is read in the insert itself: two instances at once may overshoot it by a row
    // each, never by more.
    let (count_app, count_command) = rejected.counted_as();
    // Counted in ingest_daily with the row, only when the row is kept.
    sqlx::query_scalar!(
        r#"WITH kept AS (
               INSERT INTO rejected_callbacks
                   (sdk_app_id, callback_command, error_code, error_info, query, body,
                    body_bytes, body_size)
               SELECT $1::bigint, $2::text, $3::integer, $4::text, $5::text, $6::text,
                      $7::bytea, $8::integer
               WHERE $9::bigint IS NULL
                  OR (SELECT bytes FROM rejected_callbacks_size) < $9::bigint
               RETURNING id
           ),
           counted AS (
               SELECT ingest_counted(ARRAY[$10::bigint], ARRAY[$11::text], NULL, NULL,
                                     ARRAY[1::int8], NULL, NULL) AS touched
               FROM kept
           )
           SELECT id AS "id!" FROM kept LEFT JOIN counted ON touched IS NOT NULL"#,
        rejected.sdk_app_id,
        row.callback_command.as_deref(),
        rejected.error_code,
        row.error_info,
        row.query,
        row.body.as_deref(),
        row.body_bytes,
        size,
        cap,
        count_app,
        count_command,
    )
    .fetch_optional(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket {
            tokens: 20.0,
            capacity: 20.0,
            per_sec: 2.0,
            at: start,
        };
        let at = |secs: f64| start + std::time::Duration::from_secs_f64(secs);
        let burst = (0..100).filter(|_| bucket.take(1.0, at(0.0))).count();
        assert_eq!(burst, 20);
        assert_eq!((0..100).filter(|_| bucket.take(1.0, at(3.0))).count(), 6);
        assert_eq!(
            (0..100).filter(|_| bucket.take(1.0, at(3600.0))).count(),
            20,
            "never above the burst"
        );
        // A row larger than what is left is kept; the debt holds the next back until repaid.
        assert!(bucket.take(25.0, at(7200.0)));
        assert!(!bucket.take(1.0, at(7202.4)), "still 0.2 in debt");
        assert!(bucket.take(1.0, at(7202.6)));
    }

    fn rejected(body: &[u8]) -> RejectedCallback<'_> {
        RejectedCallback {
            sdk_app_id: Some(1),
            callback_command: Some("C"),
            error_code: 40001,
            error_info: "bad",
            query: "q=1",
            body,
        }
    }

    #[test]
    fn a_body_is_kept_once() {
        let text = StoredRow::of(&rejected("中文 ok".as_bytes()), 100);
        assert_eq!(text.body.as_deref(), Some("中文 ok"));
        assert!(text.body_bytes.is_none());
        assert_eq!(text.bytes(), "中文 ok".len() + 1 + 3 + 3);
        for raw in [&b"\xff\xfe raw"[..], b"nul \x00 inside"] {
            let bytes = StoredRow::of(&rejected(raw), 100);
            assert!(bytes.body.is_none(), "no second, lossy copy");
            assert_eq!(bytes.body_bytes, Some(raw));
            assert_eq!(bytes.bytes(), raw.len() + 1 + 3 + 3);
        }
        // Cut in the middle of a character: text up to it, no bytes.
        let cut = StoredRow::of(&rejected("ab中".as_bytes()), 3);
        assert_eq!(cut.body.as_deref(), Some("ab"));
        assert!(cut.body_bytes.is_none());
    }
}
