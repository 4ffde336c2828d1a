//! Members recomputed from the room's history, for late or reordered events: from the start
//! of the session the events fall in (docs/attendance.md#late-events), where nobody was in the
//! room, so the work is in proportion to that session and those after it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::Room;
use crate::store::{
    attendance::RoomEvent,
    membership::{self, MemberEvent, MemberState},
};

/// Recomputes members from the room's history (late or reordered events): one read of the
/// room's member events from `from` on, then the fold per member in memory, so
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
    window: impl Iterator<Item = &RoomEvent>,
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
    // The room's member events from `from` on, as the ledger reads them (one mapping).
    let mut destroys = Vec::new();
    let mut events: HashMap<&str, Vec<MemberEvent>> =
        users.iter().map(|u| (u.as_str(), Vec::new())).collect();
    for room_event in window {
        match &room_event.event {
            destroy @ MemberEvent::Destroy { .. } => destroys.push(destroy.clone()),
            event => {
                for member in &room_event.users {
                    if let Some(list) = events.get_mut(member.as_str()) {
                        list.push(event.clone());
                    }
                }
            }
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
