//! Members recomputed from the room's history, for late or reordered events.

use super::*;

/// Recomputes members from the room's history (late or reordered events): one read of the
/// room's events that name any of them, the fold per member in memory, one write for all, so a
/// late event of 10,000 members costs a few statements, not 10,000 round trips.
pub(super) async fn recompute_members(
    conn: &mut PgConnection,
    room: Room<'_>,
    users: &[String],
) -> Result<Vec<(String, MemberState)>, sqlx::Error> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query!(
        r#"SELECT callback_command, event_at, event_type, reason, member_list FROM room_events
           WHERE sdk_app_id = $1 AND room_id = $2
             AND (callback_command IN ($3, $9)
                  OR (callback_command = $7 AND event_type = 'Destroy')
                  OR (callback_command IN ($4, $5, $7, $8) AND member_list && $6::text[]))"#,
        room.app,
        room.id,
        DESTROY,
        ENTER,
        LEAVE,
        users,
        RECONCILE,
        LIVE_MEMBER,
        LIVE_DESTROY,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut destroys = Vec::new();
    let mut events: HashMap<&str, Vec<MemberEvent>> =
        users.iter().map(|u| (u.as_str(), Vec::new())).collect();
    for row in &rows {
        let at = row.event_at;
        let event = match (row.callback_command.as_str(), row.event_type.as_deref()) {
            (ENTER, _) | (RECONCILE, Some("Enter")) | (LIVE_MEMBER, Some("Online")) => {
                MemberEvent::Enter { at }
            }
            (LIVE_MEMBER, _) => MemberEvent::Leave {
                at,
                kind: row.reason.clone(),
                reason: None,
            },
            (LEAVE, _) => MemberEvent::Leave {
                at,
                kind: row.event_type.clone(),
                reason: row.reason.clone(),
            },
            (RECONCILE, Some("Leave")) => MemberEvent::Leave {
                at,
                kind: Some(RECONCILED.to_owned()),
                reason: row.reason.clone(),
            },
            (command, _) => {
                let exit = exit_of(command == RECONCILE);
                destroys.push(MemberEvent::Destroy { at, exit });
                continue;
            }
        };
        // A list may name a member twice; the fold treats a repeated event as one anyway.
        for member in &row.member_list {
            if let Some(list) = events.get_mut(member.as_str()) {
                list.push(event.clone());
            }
        }
    }
    let states: Vec<(String, MemberState)> = users
        .iter()
        .filter_map(|user| {
            let mut own = events.remove(user.as_str()).unwrap_or_default();
            own.extend(destroys.iter().cloned());
            membership::fold(own).map(|state| (user.clone(), state))
        })
        .collect();
    write_members(conn, room, &states).await?;
    Ok(states)
}

/// Writes members' whole state (recompute and rebuild), all in one statement.
pub(super) async fn write_members(
    conn: &mut PgConnection,
    room: Room<'_>,
    states: &[(String, MemberState)],
) -> Result<(), sqlx::Error> {
    if states.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&MemberState) -> Option<DateTime<Utc>>| {
        states.iter().map(|(_, s)| f(s)).collect::<Vec<_>>()
    };
    let text = |f: fn(&MemberState) -> Option<&str>| {
        states
            .iter()
            .map(|(_, s)| f(s).map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let users: Vec<&str> = states.iter().map(|(u, _)| u.as_str()).collect();
    let in_room: Vec<bool> = states.iter().map(|(_, s)| s.in_room).collect();
    let last_at: Vec<DateTime<Utc>> = states.iter().map(|(_, s)| s.last_event_at).collect();
    let rank: Vec<i16> = states.iter().map(|(_, s)| s.last_event_rank).collect();
    sqlx::query!(
        r#"INSERT INTO room_members AS m
               (sdk_app_id, room_id, user_id, in_room, entered_at, left_at, leave_type,
                leave_reason, last_event_at, last_event_rank)
           SELECT $1, $2, u, i, e, l, lt, lr, la, lk
           FROM UNNEST($3::text[], $4::bool[], $5::timestamptz[], $6::timestamptz[], $7::text[],
                       $8::text[], $9::timestamptz[], $10::int2[])
                AS t(u, i, e, l, lt, lr, la, lk)
           ON CONFLICT (sdk_app_id, room_id, user_id) DO UPDATE SET
               in_room = EXCLUDED.in_room, entered_at = EXCLUDED.entered_at,
               left_at = EXCLUDED.left_at, leave_type = EXCLUDED.leave_type,
               leave_reason = EXCLUDED.leave_reason, last_event_at = EXCLUDED.last_event_at,
               last_event_rank = EXCLUDED.last_event_rank"#,
        room.app,
        room.id,
        &users as &[&str],
        &in_room,
        &column(|s| s.entered_at) as &[Option<DateTime<Utc>>],
        &column(|s| s.left_at) as &[Option<DateTime<Utc>>],
        &text(|s| s.leave_type.as_deref()) as &[Option<String>],
        &text(|s| s.leave_reason.as_deref()) as &[Option<String>],
        &last_at,
        &rank,
    )
    .execute(conn)
    .await?;
    Ok(())
}
