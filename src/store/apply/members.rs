//! Enters and leaves on the live path: history row, `member_count` and members' rows in one statement.

use super::*;

/// An enter (`last_destroy_at` given) or a leave: the history row, `member_count` and the
/// members' rows in one statement; late members recomputed; then NOTIFY.
pub(super) async fn member_event(
    conn: &mut PgConnection,
    callback: &Callback,
    room: Room<'_>,
    change: &MemberChange,
    enter_after: Option<Option<DateTime<Utc>>>,
) -> Result<Outcome, sqlx::Error> {
    let at = callback.event_time.to_datetime();
    let users = user_ids(change);
    let as_sent: Vec<String> = change
        .members
        .iter()
        .map(|m| m.as_str().to_owned())
        .collect();
    let (id, applied, in_room) = match enter_after {
        Some(last_destroy_at) => {
            // The first destroy at or after this enter ends it again (docs/semantics.md#destroy).
            let ended_by = match last_destroy_at {
                Some(d) if d >= at => first_destroy_since(conn, room, at).await?,
                _ => None,
            };
            let (ended_at, exit) = ended_by.unzip();
            let row = sqlx::query!(
                r#"WITH ev AS (
                       INSERT INTO room_events
                           (sdk_app_id, callback_command, room_id, operator_account, event_type,
                            member_list, member_count, reason, event_at, client_ip, opt_platform,
                            payload, dedup_key)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $16, $8, $9, $10, $11::text::jsonb, $12)
                       ON CONFLICT ON CONSTRAINT room_events_dedup DO NOTHING
                       RETURNING id
                   ), counted AS (
                       UPDATE rooms SET member_count = $7, member_count_at = $8, member_count_rank = 0
                       WHERE sdk_app_id = $1 AND room_id = $3 AND $7::int4 IS NOT NULL
                         AND EXISTS (SELECT 1 FROM ev)
                         AND (member_count_at IS NULL
                              OR (member_count_at, member_count_rank, member_count) < ($8, 0::int2, $7))
                   ), applied AS (
                       INSERT INTO room_members AS m
                           (sdk_app_id, room_id, user_id, in_room, entered_at, left_at, leave_type,
                            last_event_at, last_event_rank)
                       SELECT $1, $3, u, $14::timestamptz IS NULL, $8, $14, $15, $8, 0
                       FROM UNNEST($13::text[]) AS t(u)
                       WHERE EXISTS (SELECT 1 FROM ev)
                       ON CONFLICT (sdk_app_id, room_id, user_id) DO UPDATE SET
                           in_room = EXCLUDED.in_room,
                           entered_at = EXCLUDED.entered_at,
                           left_at = COALESCE(EXCLUDED.left_at, m.left_at),
                           leave_type = COALESCE(EXCLUDED.leave_type, m.leave_type),
                           last_event_at = EXCLUDED.last_event_at,
                           last_event_rank = 0
                       WHERE (m.last_event_at, m.last_event_rank) <= (EXCLUDED.last_event_at, 0::smallint)
                       RETURNING user_id
                   )
                   SELECT (SELECT id FROM ev) AS id, ARRAY(SELECT user_id FROM applied) AS "applied!""#,
                room.app,
                callback.command.as_str(),
                room.id,
                callback.operator.as_deref(),
                callback.event_type(),
                &as_sent,
                change.member_count,
                at,
                callback.meta.client_ip.as_deref(),
                callback.meta.opt_platform.as_deref(),
                callback.payload.as_str(),
                &callback.dedup_key[..],
                &users,
                ended_at,
                exit,
                callback.history_reason(),
            )
            .fetch_one(&mut *conn)
            .await?;
            (row.id, row.applied, ended_at.is_none())
        }
        None => {
            // At equal time two leaves are ordered by (Type, Reason), as in membership::fold.
            let row = sqlx::query!(
                r#"WITH ev AS (
                       INSERT INTO room_events
                           (sdk_app_id, callback_command, room_id, operator_account, event_type,
                            member_list, member_count, reason, event_at, client_ip, opt_platform,
                            payload, dedup_key)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $16, $8, $9, $10, $11::text::jsonb, $12)
                       ON CONFLICT ON CONSTRAINT room_events_dedup DO NOTHING
                       RETURNING id
                   ), counted AS (
                       UPDATE rooms SET member_count = $7, member_count_at = $8, member_count_rank = 1
                       WHERE sdk_app_id = $1 AND room_id = $3 AND $7::int4 IS NOT NULL
                         AND EXISTS (SELECT 1 FROM ev)
                         AND (member_count_at IS NULL
                              OR (member_count_at, member_count_rank, member_count) < ($8, 1::int2, $7))
                   ), applied AS (
                       INSERT INTO room_members AS m
                           (sdk_app_id, room_id, user_id, in_room, left_at, leave_type, leave_reason,
                            last_event_at, last_event_rank)
                       SELECT $1, $3, u, false, $8, $15, $14, $8, 1
                       FROM UNNEST($13::text[]) AS t(u)
                       WHERE EXISTS (SELECT 1 FROM ev)
                       ON CONFLICT (sdk_app_id, room_id, user_id) DO UPDATE SET
                           in_room = false,
                           left_at = EXCLUDED.left_at,
                           leave_type = EXCLUDED.leave_type,
                           leave_reason = EXCLUDED.leave_reason,
                           last_event_at = EXCLUDED.last_event_at,
                           last_event_rank = 1
                       WHERE (m.last_event_at, m.last_event_rank) < (EXCLUDED.last_event_at, 1::smallint)
                          OR ((m.last_event_at, m.last_event_rank) = (EXCLUDED.last_event_at, 1::smallint)
                              AND (COALESCE(m.leave_type, '') COLLATE "C", COALESCE(m.leave_reason, '') COLLATE "C")
                               <= (COALESCE(EXCLUDED.leave_type, '') COLLATE "C", COALESCE(EXCLUDED.leave_reason, '') COLLATE "C"))
                       RETURNING user_id
                   )
                   SELECT (SELECT id FROM ev) AS id, ARRAY(SELECT user_id FROM applied) AS "applied!""#,
                room.app,
                callback.command.as_str(),
                room.id,
                callback.operator.as_deref(),
                callback.event_type(),
                &as_sent,
                change.member_count,
                at,
                callback.meta.client_ip.as_deref(),
                callback.meta.opt_platform.as_deref(),
                callback.payload.as_str(),
                &callback.dedup_key[..],
                &users,
                change.reason.as_deref(),
                callback.exit_type(),
                callback.history_reason(),
            )
            .fetch_one(&mut *conn)
            .await?;
            (row.id, row.applied, false)
        }
    };
    let Some(id) = id else {
        return Ok(Outcome::Duplicate);
    };
    let mut changes = Changes::new(room, at);
    changes.add(applied, in_room);
    let late = missing(&users, &changes);
    changes.recompute(conn, late).await?;
    changes.notify(conn).await?;
    Ok(Outcome::Stored { id })
}
pub(super) fn user_ids(change: &MemberChange) -> Vec<String> {
    change
        .distinct_members()
        .into_iter()
        .map(|m| m.as_str().to_owned())
        .collect()
}

pub(super) fn missing(users: &[String], changes: &Changes<'_>) -> Vec<String> {
    users
        .iter()
        .filter(|u| !changes.contains(u))
        .cloned()
        .collect()
}
