//! `roomsync rebuild`: recomputes `rooms`, `room_members`, `room_seats` and the attendance
//! ledger from `room_events` (for recovery, after a change to the rules, or to apply a new
//! attendance policy to the past).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::{PgConnection, PgPool};

use crate::{
    callback::{Callback, CallbackQuery, RECONCILE_COMMAND, parse_stored},
    reconcile::correction::StoredCorrection,
    store::{Dialect, Rules, attendance::Policy, record_rebuild_diff, replay_batch},
};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// History rows replayed.
    pub replayed: u64,
    /// History rows that no longer parse (logged, left out): a callback the rules now refuse,
    /// or a correction whose row is damaged (its payload not JSON, an unknown kind).
    pub skipped: u64,
    /// Members whose `in_room` the rebuild changed (each a `room_changes` row, docs/feed.md).
    pub changed_members: u64,
}

/// Replays the whole history, in EventTime order, into empty view tables, in one transaction:
/// readers see the old view until it commits. Writers wait meanwhile (and, past their commit
/// timeout, go to the journal, which drains afterwards). The ledger is folded again under
/// `policy`, but for the sessions that ended before their room's oldest remaining event
/// (history pruned by `EVENT_RETENTION_DAYS`): those stay as they were. What the rebuild
/// changed in who is in each room goes to the change feed, with cause `rebuild`.
pub async fn rebuild(pool: &PgPool, rules: Rules) -> Result<RebuildReport, sqlx::Error> {
    let policy = rules.attendance;
    let mut tx = pool.begin().await?;
    sqlx::query!("LOCK TABLE rooms, room_members IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let before = present(&mut tx).await?;
    // EXCLUSIVE blocks writers but not readers; DELETE (not TRUNCATE) keeps the old rows
    // visible to readers until the commit.
    sqlx::raw_sql(
        "LOCK TABLE rooms, room_members, room_seats, room_stays, room_sessions
             IN EXCLUSIVE MODE;
         DELETE FROM room_seats; DELETE FROM room_members;
         -- A session that ended before its room's oldest remaining event has no history
         -- left to fold it from: it stays, with its stays.
         DELETE FROM room_sessions s
         WHERE s.ended_at IS NULL OR s.ended_at >= COALESCE((
             SELECT min(e.event_at) FROM room_events e
             WHERE e.sdk_app_id = s.sdk_app_id AND e.room_id = s.room_id), 'infinity');
         DELETE FROM room_stays t
         WHERE NOT EXISTS (SELECT 1 FROM room_sessions s
                           WHERE s.sdk_app_id = t.sdk_app_id AND s.room_id = t.room_id
                             AND s.session_no = t.session_no);
         DELETE FROM rooms;",
    )
    .execute(&mut *tx)
    .await?;
    // History is read on a second connection while the first writes.
    let mut reader = pool.acquire().await?;
    let mut rows = sqlx::query!(
        r#"SELECT sdk_app_id, callback_command, client_ip, opt_platform, received_at,
                  room_id AS "room_id!", event_type, member_list, member_count, reason, event_at,
                  payload::text AS "payload!"
           FROM room_events
           WHERE room_id IS NOT NULL
           ORDER BY event_at, id"#
    )
    .fetch(&mut *reader);
    let mut report = RebuildReport::default();
    // Replayed in batches, through the statements live callbacks take.
    let mut batch = Vec::with_capacity(REPLAY_BATCH);
    // The database's form, told by the first batch (on Citus, the next take their routed form).
    let mut dialect = None;
    while let Some(row) = rows.try_next().await? {
        // A correction's payload is Tencent's answer, not a callback: its columns say it all.
        let parsed = if row.callback_command == RECONCILE_COMMAND {
            StoredCorrection {
                sdk_app_id: row.sdk_app_id,
                room_id: &row.room_id,
                event_type: row.event_type.as_deref(),
                member_list: &row.member_list,
                member_count: row.member_count,
                reason: row.reason.as_deref(),
                event_at: row.event_at,
                payload: &row.payload,
            }
            .decode()
            .map_err(|error| crate::telemetry::error_chain(&error))
        } else {
            let query = CallbackQuery {
                command: Some(row.callback_command),
                client_ip: row.client_ip,
                opt_platform: row.opt_platform,
                ..CallbackQuery::default()
            };
            parse_stored(
                row.sdk_app_id,
                &query,
                row.payload.as_bytes(),
                row.received_at,
            )
            .map_err(|rejection| rejection.info)
        };
        match parsed {
            Ok(callback) => {
                batch.push(callback);
                report.replayed += 1;
                if batch.len() == REPLAY_BATCH {
                    replay(&mut tx, &mut batch, &mut dialect, policy).await?;
                }
            }
            Err(info) => {
                tracing::warn!(
                    info,
                    "a history row no longer parses; left out of the rebuild"
                );
                report.skipped += 1;
            }
        }
    }
    drop(rows);
    replay(&mut tx, &mut batch, &mut dialect, policy).await?;
    let mut after = present(&mut tx).await?;
    let now = Utc::now();
    let mut changed: Vec<(i64, String, String, bool, DateTime<Utc>)> = before
        .into_keys()
        .filter_map(|key| match after.remove(&key) {
            Some(_) => None,
            None => Some((key.0, key.1, key.2, false, now)),
        })
        .collect();
    changed.extend(
        after
            .into_iter()
            .map(|((app, room, user), at)| (app, room, user, true, at)),
    );
    report.changed_members = changed.len() as u64;
    record_rebuild_diff(&mut tx, &changed, rules.notify).await?;
    tx.commit().await?;
    Ok(report)
}

/// Who is in each room, with the time of the member's newest event.
async fn present(
    conn: &mut PgConnection,
) -> Result<HashMap<(i64, String, String), DateTime<Utc>>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT sdk_app_id, room_id, user_id, last_event_at FROM room_members WHERE in_room"
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.sdk_app_id, r.room_id, r.user_id), r.last_event_at))
        .collect())
}

/// History rows per replayed batch: the live writer's order of magnitude.
const REPLAY_BATCH: usize = 256;

async fn replay(
    conn: &mut sqlx::PgConnection,
    batch: &mut Vec<Callback>,
    dialect: &mut Option<Dialect>,
    policy: Policy,
) -> Result<(), sqlx::Error> {
    let refs: Vec<&Callback> = batch.iter().collect();
    *dialect = Some(replay_batch(conn, &refs, *dialect, policy).await?);
    batch.clear();
    Ok(())
}
