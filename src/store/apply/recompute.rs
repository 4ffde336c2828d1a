//! Members recomputed from the room's history, for late or reordered events: from the start
//! of the session the events fall in (docs/attendance.md#late-events), where nobody was in the
//! room, so the work is in proportion to that session and those after it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Room, encoding::member_event};
use crate::{
    callback::{Command, event_types},
    store::membership::{self, MemberEvent, MemberState},
};

/// Recomputes members from the room's history (late or reordered events): one read of the
/// room's events from `from` on that name any of them, then the fold per member in memory, so
/// a late event of 10,000 members costs one statement, not 10,000 round trips. The caller
/// writes them.
///
/// `from`: nobody was in the room just before it (the start of a session), so each member's
/// fold starts from its row with `in_room` false: a field that no event from `from` on sets
/// still holds what the events before `from` set (events are only ever added, so an event from
/// `from` on that set it before sets it again). `None`: the whole history, from no row.
pub(super) async fn recompute_members(
    conn: &mut PgConnection,
    room: Room<'_>,
    users: &[String],
    from: Option<DateTime<Utc>>,
) -> Result<Vec<(String, MemberState)>, sqlx::Error> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let mut start: HashMap<String, MemberState> = HashMap::new();
    if from.is_some() {
        let rows = sqlx::query!(
            r#"SELECT user_id, entered_at, left_at, leave_type, leave_reason, last_event_at,
                      last_event_rank
               FROM room_members
               WHERE sdk_app_id = $1 AND room_id = $2 AND user_id = ANY($3::text[])"#,
            room.app,
            room.id,
            users,
        )
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let state = MemberState {
                in_room: false,
                entered_at: row.entered_at,
                left_at: row.left_at,
                leave_type: row.leave_type,
                leave_reason: row.leave_reason,
                last_event_at: row.last_event_at,
                last_event_rank: row.last_event_rank,
            };
            start.insert(row.user_id, state);
        }
    }
    let rows = sqlx::query!(
        r#"SELECT callback_command, event_at, event_type, reason, member_list FROM room_events
           WHERE sdk_app_id = $1 AND room_id = $2 AND event_at >= $8
             AND (callback_command = ANY($3::text[])
                  OR (callback_command = $4 AND event_type = $5)
                  OR (callback_command = ANY($6::text[]) AND member_list && $7::text[]))"#,
        room.app,
        room.id,
        &[
            Command::DestroyRoom.as_str(),
            Command::LiveDestroyRoom.as_str()
        ] as &[&str],
        Command::Reconcile.as_str(),
        event_types::DESTROY,
        &[
            Command::MemberEnter.as_str(),
            Command::MemberLeave.as_str(),
            Command::LiveMemberStateChanged.as_str(),
            Command::Reconcile.as_str(),
        ] as &[&str],
        users,
        // EventTime is positive: nothing is older than the epoch.
        from.unwrap_or(DateTime::UNIX_EPOCH),
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut destroys = Vec::new();
    let mut events: HashMap<&str, Vec<MemberEvent>> =
        users.iter().map(|u| (u.as_str(), Vec::new())).collect();
    for row in &rows {
        let command = Command::from_history(&row.callback_command);
        let event = member_event(
            &command,
            row.event_type.as_deref(),
            row.reason.as_deref(),
            row.event_at,
        );
        match event {
            Some(destroy @ MemberEvent::Destroy { .. }) => destroys.push(destroy),
            // A list may name a member twice; the fold treats a repeated event as one anyway.
            Some(event) => {
                for member in &row.member_list {
                    if let Some(list) = events.get_mut(member.as_str()) {
                        list.push(event.clone());
                    }
                }
            }
            None => {}
        }
    }
    Ok(users
        .iter()
        .filter_map(|user| {
            let mut own = events.remove(user.as_str()).unwrap_or_default();
            own.extend(destroys.iter().cloned());
            membership::fold_from(start.remove(user.as_str()), own)
                .map(|state| (user.clone(), state))
        })
        .collect())
}
