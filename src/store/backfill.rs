//! The attendance ledger of rooms that existed before it (docs/attendance.md#upgrading): made
//! from their history in the background, one room per short transaction, so that callbacks
//! never wait for it. A callback for such a room meanwhile changes its view and history only;
//! the pass folds it with the rest of the room's history.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use super::{attendance::Policy, backfill_ledger};

/// Rooms looked up per page.
const PAGE: i64 = 100;
/// Pause between rooms: the backfill yields to callbacks.
const PAUSE: Duration = Duration::from_millis(5);
/// After a failure (the database down, a room held elsewhere), the next pass waits this long.
const RETRY: Duration = Duration::from_secs(5);

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backfilled {
    /// Rooms whose ledger this pass made.
    pub rooms: u64,
    /// Rooms left for a later pass: held elsewhere past the lock timeout, or failed.
    pub left: u64,
}

/// One pass over every room still waiting for its ledger, in key order.
pub async fn backfill_all(
    pool: &PgPool,
    policy: Policy,
    lock_timeout: Duration,
    stop: &watch::Receiver<bool>,
) -> Result<Backfilled, sqlx::Error> {
    let mut done = Backfilled::default();
    let mut after: (i64, String) = (i64::MIN, String::new());
    let begin = format!(
        "BEGIN; SET LOCAL lock_timeout = {}",
        lock_timeout.as_millis().max(1)
    );
    loop {
        let page = sqlx::query!(
            r#"SELECT sdk_app_id, room_id FROM rooms
               WHERE ledger_backfill AND (sdk_app_id, room_id) > ($1, $2)
               ORDER BY sdk_app_id, room_id LIMIT $3"#,
            after.0,
            &after.1,
            PAGE,
        )
        .fetch_all(pool)
        .await?;
        let Some(last) = page.last() else {
            return Ok(done);
        };
        after = (last.sdk_app_id, last.room_id.clone());
        for room in &page {
            if *stop.borrow() {
                return Ok(done);
            }
            let made = async {
                let mut conn = pool.acquire().await?;
                let begin = sqlx::AssertSqlSafe(begin.clone());
                let mut tx = sqlx::Connection::begin_with(&mut *conn, begin).await?;
                let made = backfill_ledger(&mut tx, room.sdk_app_id, &room.room_id, policy).await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(made)
            }
            .await;
            match made {
                Ok(true) => done.rooms += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(error = %error, room = %room.room_id, "backfill of a room deferred");
                    done.left += 1;
                }
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
}

/// Passes until no room is left, then ends (new rooms never need it). Stops between two
/// rooms when `stop` turns true.
pub fn spawn(
    pool: PgPool,
    policy: Policy,
    lock_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut total = 0;
        while !*stop.borrow() {
            match backfill_all(&pool, policy, lock_timeout, &stop).await {
                Ok(pass) => {
                    total += pass.rooms;
                    if pass.left == 0 {
                        if total > 0 {
                            tracing::info!(rooms = total, "attendance ledger made from history");
                        }
                        return;
                    }
                }
                Err(error) => {
                    tracing::debug!(error = %error, "attendance backfill paused; will retry")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = stop.changed() => {}
            }
        }
    })
}
