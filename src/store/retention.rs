//! Retention: prunes old `room_events` (`EVENT_RETENTION_DAYS`, off by default), old
//! `rejected_callbacks` (`REJECTED_RETENTION_DAYS`) and old sessions of the attendance ledger
//! (`ATTENDANCE_RETENTION_DAYS`, off by default) in small batches, in the background, so
//! callbacks never wait on it. Pruning history never touches the ledger.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

/// Rows deleted per statement: short transactions, short locks.
const BATCH: i64 = 1000;
/// Pause between batches, so pruning yields to callbacks.
const PAUSE: Duration = Duration::from_millis(50);
/// How often pruning runs.
const EVERY: Duration = Duration::from_secs(3600);

/// Deletes history received more than `days` days ago; returns the rows deleted.
pub async fn prune(pool: &PgPool, days: i32) -> Result<u64, sqlx::Error> {
    prune_history(pool, days, &never()).await
}

async fn prune_history(
    pool: &PgPool,
    days: i32,
    stop: &watch::Receiver<bool>,
) -> Result<u64, sqlx::Error> {
    prune_in_batches(stop, || async {
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
    prune_rejected_until(pool, days, &never()).await
}

async fn prune_rejected_until(
    pool: &PgPool,
    days: i32,
    stop: &watch::Receiver<bool>,
) -> Result<u64, sqlx::Error> {
    prune_in_batches(stop, || async {
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

/// Deletes sessions that ended more than `days` days ago, with their stays (a room's newest
/// session stays); returns the sessions deleted.
pub async fn prune_attendance(pool: &PgPool, days: i32) -> Result<u64, sqlx::Error> {
    prune_attendance_until(pool, days, &never()).await
}

async fn prune_attendance_until(
    pool: &PgPool,
    days: i32,
    stop: &watch::Receiver<bool>,
) -> Result<u64, sqlx::Error> {
    prune_in_batches(stop, || async {
        let limit = i32::try_from(BATCH).expect("a small batch");
        let deleted = sqlx::query_scalar!(
            r#"SELECT prune_attendance($1, $2) AS "deleted!""#,
            days,
            limit
        )
        .fetch_one(pool)
        .await?;
        Ok(u64::try_from(deleted).unwrap_or(0))
    })
    .await
}

/// Deletes feed changes written more than `hours` hours ago, oldest first; returns the rows
/// deleted. Each room's newest change stays (the feed's newest among them, so a consumer at
/// the head is never told it is too old).
pub async fn prune_changes(pool: &PgPool, hours: i32) -> Result<u64, sqlx::Error> {
    prune_changes_until(pool, hours, &never()).await
}

async fn prune_changes_until(
    pool: &PgPool,
    hours: i32,
    stop: &watch::Receiver<bool>,
) -> Result<u64, sqlx::Error> {
    prune_in_batches(stop, || async {
        // Oldest first: what is kept is always a suffix of the feed (docs/feed.md#retention),
        // but for each room's newest change, which numbers the room's next ones.
        // One statement: the rows and the horizon after which the feed is whole go together.
        let deleted = sqlx::query_scalar!(
            r#"WITH gone AS (
                   DELETE FROM room_changes WHERE seq IN (
                       SELECT c.seq FROM room_changes c
                       WHERE c.recorded_at < now() - make_interval(hours => $1)
                         AND EXISTS (SELECT 1 FROM room_changes n
                                     WHERE n.sdk_app_id = c.sdk_app_id
                                       AND n.room_id = c.room_id AND n.room_seq > c.room_seq)
                       ORDER BY c.seq LIMIT $2)
                   RETURNING seq),
               moved AS (
                   UPDATE room_changes_horizon
                   SET deleted_upto = greatest(deleted_upto, (SELECT max(seq) FROM gone))
                   WHERE EXISTS (SELECT 1 FROM gone))
               SELECT count(*) AS "deleted!" FROM gone"#,
            hours,
            BATCH,
        )
        .fetch_one(pool)
        .await?;
        Ok(u64::try_from(deleted).unwrap_or(0))
    })
    .await
}

/// A stop signal that never comes (pruning by hand runs to the end).
fn never() -> watch::Receiver<bool> {
    watch::channel(false).1
}

/// Deletes batch after batch until one comes back short, or `stop` turns true between two.
async fn prune_in_batches<F, Fut>(
    stop: &watch::Receiver<bool>,
    mut batch: F,
) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let deleted = batch().await?;
        total += deleted;
        if deleted < BATCH as u64 || *stop.borrow() {
            return Ok(total);
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// How long each kind of row is kept; `None`: for ever.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub history_days: Option<i32>,
    pub rejected_days: i32,
    pub attendance_days: Option<i32>,
    pub changes_hours: i32,
}

/// Prunes at start and then hourly, until `stop` turns true (it then stops between two
/// statements).
pub fn spawn(
    pool: PgPool,
    retention: Retention,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let Retention {
        history_days,
        rejected_days,
        attendance_days,
        changes_hours,
    } = retention;
    tokio::spawn(async move {
        while !*stop.borrow() {
            if let Some(days) = attendance_days {
                match prune_attendance_until(&pool, days, &stop).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, days, "pruned old sessions"),
                    Err(error) => {
                        tracing::warn!(error = %error, "session pruning failed; will retry")
                    }
                }
            }
            if let Some(days) = history_days {
                match prune_history(&pool, days, &stop).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, days, "pruned old history"),
                    Err(error) => {
                        tracing::warn!(error = %error, "history pruning failed; will retry")
                    }
                }
            }
            match prune_changes_until(&pool, changes_hours, &stop).await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(deleted, hours = changes_hours, "pruned old feed changes")
                }
                Err(error) => tracing::warn!(error = %error, "feed pruning failed; will retry"),
            }
            match prune_rejected_until(&pool, rejected_days, &stop).await {
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
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stop.changed() => {}
            }
        }
    })
}
