//! `rejected_callbacks`: what Tencent sent that roomsync or PostgreSQL refused, kept for an
//! operator; bounded so that a flood of bad callbacks cannot fill the disk.

use std::{sync::Mutex, time::Instant};

use sqlx::{PgConnection, PgPool};

use super::StoreError;
use crate::{config::RejectedLimits, telemetry::Metrics};

pub struct RejectedCallback<'a> {
    pub sdk_app_id: Option<i64>,
    pub callback_command: Option<&'a str>,
    pub error_code: i32,
    pub error_info: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
}

/// Whether a record may be dropped when the budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// A callback answered 4xx: the sender was told; past the budget only a counter keeps it.
    Counted,
    /// A callback that was answered 200 (from the journal) or that PostgreSQL refused: always
    /// kept.
    Exempt,
}

/// Keeps refused callbacks within [`RejectedLimits`].
pub struct RejectedStore {
    pool: PgPool,
    limits: RejectedLimits,
    bucket: Mutex<TokenBucket>,
}

impl RejectedStore {
    pub fn new(pool: PgPool, limits: RejectedLimits) -> Self {
        let capacity = f64::from(limits.max_per_sec) * 10.0;
        Self {
            pool,
            limits,
            bucket: Mutex::new(TokenBucket {
                tokens: capacity,
                capacity,
                per_sec: f64::from(limits.max_per_sec),
                at: Instant::now(),
            }),
        }
    }

    /// Inserts the record unless `budget` allows dropping it and the budget is spent; returns
    /// whether it was kept.
    pub async fn keep(
        &self,
        rejected: &RejectedCallback<'_>,
        budget: Budget,
        metrics: &Metrics,
    ) -> Result<bool, StoreError> {
        if budget == Budget::Counted && !self.bucket.lock().expect("bucket").take() {
            metrics.rejected_dropped.inc();
            return Ok(false);
        }
        let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
        insert_rejected(&mut conn, rejected, self.limits.body_max_bytes).await?;
        Ok(true)
    }
}

struct TokenBucket {
    tokens: f64,
    capacity: f64,
    per_sec: f64,
    at: Instant,
}

impl TokenBucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Inserts one row; a body longer than `body_max_bytes` is kept cut (`body_size` says how long
/// it was).
pub async fn insert_rejected(
    conn: &mut PgConnection,
    rejected: &RejectedCallback<'_>,
    body_max_bytes: usize,
) -> Result<i64, sqlx::Error> {
    let kept = &rejected.body[..rejected.body.len().min(body_max_bytes)];
    // Text cannot hold NUL or invalid UTF-8: keep a lossy text and the exact bytes beside it.
    // A cut in the middle of a character is not a reason to keep bytes.
    let (body, body_bytes) = match std::str::from_utf8(kept) {
        Ok(text) if !text.contains('\0') => (text.to_owned(), None),
        Err(e) if e.error_len().is_none() && !kept[..e.valid_up_to()].contains(&0) => (
            String::from_utf8_lossy(&kept[..e.valid_up_to()]).into_owned(),
            None,
        ),
        _ => (
            String::from_utf8_lossy(kept).replace('\0', "\u{FFFD}"),
            Some(kept.to_vec()),
        ),
    };
    let strip = |s: &str| s.replace('\0', "\u{FFFD}");
    let size = i32::try_from(rejected.body.len()).unwrap_or(i32::MAX);
    sqlx::query_scalar!(
        r#"INSERT INTO rejected_callbacks
               (sdk_app_id, callback_command, error_code, error_info, query, body, body_bytes,
                body_size)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           RETURNING id"#,
        rejected.sdk_app_id,
        rejected.callback_command.map(strip),
        rejected.error_code,
        strip(rejected.error_info),
        strip(rejected.query),
        body,
        body_bytes,
        size,
    )
    .fetch_one(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut bucket = TokenBucket {
            tokens: 20.0,
            capacity: 20.0,
            per_sec: 2.0,
            at: Instant::now(),
        };
        let burst = (0..100).filter(|_| bucket.take()).count();
        assert_eq!(burst, 20);
        bucket.at -= std::time::Duration::from_secs(3);
        assert_eq!((0..100).filter(|_| bucket.take()).count(), 6);
        bucket.at -= std::time::Duration::from_secs(3600);
        assert_eq!(
            (0..100).filter(|_| bucket.take()).count(),
            20,
            "never above the burst"
        );
    }
}
