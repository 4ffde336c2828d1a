//! Enters and leaves of the whole batch: one read of the members' rows, the fold in memory.

use super::*;

/// Folds each named member's new events onto its row. A member whose row cannot take them
/// in order goes to [`Effects::late`], to be recomputed from the room's history: its row is
/// newer than one of its events, its room is destroyed in this batch, or a known destroy may
/// end one of its enters again (docs/semantics.md#destroy).
pub(super) async fn fold_members<'a>(
    conn: &mut PgConnection,
    callbacks: &[&'a Callback],
    destroys: &Destroys<'a>,
    effects: &mut Effects<'a>,
) -> Result<(), sqlx::Error> {
    let mut destroyed_now = Vec::new();
    // Per member, its events in this batch.
    let mut events: BTreeMap<(Room<'a>, &'a str), Vec<MemberEvent>> = BTreeMap::new();
    for callback in callbacks {
        let Some(room) = room_of(callback) else {
            continue;
        };
        if matches!(callback.event, Event::DestroyRoom) {
            destroyed_now.push(room);
        }
        let (Some(change), Some(event)) = (callback.member_change(), member_event_of(callback))
        else {
            continue;
        };
        // A list may name a member twice: one event, as the fold would treat it.
        for member in change.distinct_members() {
            events
                .entry((room, member.as_str()))
                .or_default()
                .push(event.clone());
        }
    }
    let (direct, late): (Vec<_>, Vec<_>) = events.into_iter().partition(|((room, _), events)| {
        let last_destroy = destroys.get(room).copied().flatten();
        !destroyed_now.contains(room)
            && events.iter().all(|event| match event {
                MemberEvent::Enter { at } => last_destroy.is_none_or(|d| d < *at),
                _ => true,
            })
    });
    for ((room, user), events) in late {
        effects.late(room, user, newest(&events));
    }
    let mut rows = read_members(conn, direct.iter().map(|(key, _)| *key)).await?;
    for ((room, user), events) in direct {
        let row = rows.remove(&(room.app, room.id.to_owned(), user.to_owned()));
        let at = newest(&events);
        if row
            .as_ref()
            .is_some_and(|row| !events.iter().all(|event| row.precedes(event)))
        {
            effects.late(room, user, at);
        } else if let Some(state) = membership::fold_from(row, events) {
            effects.set(room, user.to_owned(), state, at);
        }
    }
    Ok(())
}

fn newest(events: &[MemberEvent]) -> DateTime<Utc> {
    events
        .iter()
        .map(|event| match event {
            MemberEvent::Enter { at } | MemberEvent::Leave { at, .. } => *at,
            MemberEvent::Destroy { at, .. } => *at,
        })
        .max()
        .expect("a member is named by at least one event")
}

type MemberRows = HashMap<(i64, String, String), MemberState>;

/// The current rows of these members, in one statement.
async fn read_members<'a>(
    conn: &mut PgConnection,
    members: impl Iterator<Item = (Room<'a>, &'a str)>,
) -> Result<MemberRows, sqlx::Error> {
    let (mut apps, mut rooms, mut users) = (Vec::new(), Vec::new(), Vec::new());
    for (room, user) in members {
        apps.push(room.app);
        rooms.push(room.id);
        users.push(user);
    }
    if apps.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query_file!(
        "src/store/apply/sql/read_members.sql",
        &apps,
        &rooms as &[&str],
        &users as &[&str],
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let state = MemberState {
                in_room: row.in_room,
                entered_at: row.entered_at,
                left_at: row.left_at,
                leave_type: row.leave_type,
                leave_reason: row.leave_reason,
                last_event_at: row.last_event_at,
                last_event_rank: row.last_event_rank,
            };
            ((row.sdk_app_id, row.room_id, row.user_id), state)
        })
        .collect())
}
