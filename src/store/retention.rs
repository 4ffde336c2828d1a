//! Retention: prunes old `room_events` (`EVENT_RETENTION_DAYS`, off by default) and old
//! `rejected_callbacks` (`REJECTED_RETENTION_DAYS`) in small batches, in the background, so
//! callbacks never wait on it.

use std::time::Duration;

use sqlx::PgPool;

/// Rows deleted per statement: short transactions, short locks.
const BATCH: i64 = 1000;
/// Pause between batches, so pruning yields to callbacks.
const PAUSE: Duration = Duration::from_millis(50);
/// How often pruning runs.
const EVERY: Duration = Duration::from_secs(3600);

/// Deletes history received more than `days` days ago; returns the rows deleted.
pub async fn prune(pool: &PgPool, days: i32) -> Result<u64, sqlx::Error> {
    prune_in_batches(|| async {
        sqlx::query!(
            r#"DELETE FROM room_events WHERE id IN (
                   SELECT id FROM room_events
                   WHERE received_at < now() - make_interval(days => $1)
                   ORDER BY id LIMIT $2)"#,
            days,
            BATCH,
        )
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
    })
    .await
}

/// Deletes rejected callbacks received more than `days` days ago; returns the rows deleted.
pub async fn prune_rejected(pool: &PgPool, days: i32) -> Result<u64, sqlx::Error> {
    prune_in_batches(|| async {
        sqlx::query!(
            r#"DELETE FROM rejected_callbacks WHERE id IN (
                   SELECT id FROM rejected_callbacks
                   WHERE received_at < now() - make_interval(days => $1)
                   ORDER BY id LIMIT $2)"#,
            days,
            BATCH,
        )
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
    })
    .await
}

async fn prune_in_batches<F, Fut>(mut batch: F) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let deleted = batch().await?;
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Prunes at start and then hourly, until aborted. `history_days` `None` keeps the history.
pub fn spawn(
    pool: PgPool,
    history_days: Option<i32>,
    rejected_days: i32,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Some(days) = history_days {
                match prune(&pool, days).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, days, "pruned old history"),
                    Err(error) => {
                        tracing::warn!(error = %error, "history pruning failed; will retry")
                    }
                }
            }
            match prune_rejected(&pool, rejected_days).await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(
                        deleted,
                        days = rejected_days,
                        "pruned old rejected callbacks"
                    )
                }
                Err(error) => {
                    tracing::warn!(error = %error, "rejected-callback pruning failed; will retry")
                }
            }
            tokio::time::sleep(EVERY).await;
        }
    })
}
