//! Locking the rooms' rows of a batch, in one global order.

use super::*;

/// Locks (creating if needed) the rows of every room in the batch, in (app, room) order, and
/// makes the idempotent bumps (a duplicate changes nothing); returns each room's newest destroy
/// known now (in this batch or before), a hint that an enter may be ended again.
pub(super) async fn lock_rooms<'a>(
    conn: &mut PgConnection,
    callbacks: &[&'a Callback],
) -> Result<HashMap<(i64, &'a str), Option<DateTime<Utc>>>, sqlx::Error> {
    // One row per room: the statement may not touch a row twice.
    // Per room: the newest event, and the newest event that revives and that destroys it.
    let mut rooms: BTreeMap<(i64, &str), RoomTimes> = BTreeMap::new();
    for callback in callbacks {
        let Some(room_id) = callback
            .room_id
            .as_ref()
            .filter(|_| callback.event.changes_state())
        else {
            continue;
        };
        let at = callback.event_time.to_datetime();
        let revives = matches!(
            callback.event,
            Event::MemberEnter(_) | Event::CreateRoom { .. }
        );
        let destroys = matches!(callback.event, Event::DestroyRoom);
        let slot = rooms
            .entry((callback.sdk_app_id.get(), room_id.as_str()))
            .or_insert(RoomTimes {
                last: at,
                revive: None,
                destroy: None,
            });
        slot.last = slot.last.max(at);
        // Option's order puts None first: max keeps the newest time, if any.
        slot.revive = slot.revive.max(revives.then_some(at));
        slot.destroy = slot.destroy.max(destroys.then_some(at));
    }
    if rooms.is_empty() {
        return Ok(HashMap::new());
    }
    let apps: Vec<i64> = rooms.keys().map(|(app, _)| *app).collect();
    let ids: Vec<String> = rooms.keys().map(|(_, id)| (*id).to_owned()).collect();
    let last: Vec<DateTime<Utc>> = rooms.values().map(|t| t.last).collect();
    // Arrays with NULLs: sqlx binds `Option` elements as SQL NULL.
    let revive: Vec<Option<DateTime<Utc>>> = rooms.values().map(|t| t.revive).collect();
    let destroy: Vec<Option<DateTime<Utc>>> = rooms.values().map(|t| t.destroy).collect();
    let locked = sqlx::query!(
        r#"INSERT INTO rooms AS r (sdk_app_id, room_id, last_event_at, last_revive_at, last_destroy_at)
           SELECT a, id, e, v, d
           FROM UNNEST($1::int8[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[])
                AS t(a, id, e, v, d)
           ORDER BY a, id
           ON CONFLICT (sdk_app_id, room_id) DO UPDATE SET
               last_event_at = GREATEST(r.last_event_at, EXCLUDED.last_event_at),
               last_revive_at = GREATEST(r.last_revive_at, EXCLUDED.last_revive_at),
               last_destroy_at = GREATEST(r.last_destroy_at, EXCLUDED.last_destroy_at)
           RETURNING sdk_app_id, room_id, last_destroy_at"#,
        &apps,
        &ids,
        &last,
        &revive as &[Option<DateTime<Utc>>],
        &destroy as &[Option<DateTime<Utc>>],
    )
    .fetch_all(&mut *conn)
    .await?;
    // Rooms start as TUIRoomKit rooms; a Live callback makes its room a Live room (a seat
    // change alone says neither).
    let live: Vec<(i64, &str)> = callbacks
        .iter()
        .filter(|c| c.command.product() == Some(Product::Live) && c.event.changes_state())
        .filter_map(|c| Some((c.sdk_app_id.get(), c.room_id.as_ref()?.as_str())))
        .collect();
    if !live.is_empty() {
        mark_live(conn, &live).await?;
    }
    let mut out = HashMap::with_capacity(locked.len());
    for row in locked {
        if let Some(key) = rooms
            .keys()
            .find(|(app, id)| *app == row.sdk_app_id && *id == row.room_id)
        {
            out.insert(*key, row.last_destroy_at);
        }
    }
    Ok(out)
}

/// `rooms.product = 'Live'` for these (locked) rooms.
pub(super) async fn mark_live(
    conn: &mut PgConnection,
    rooms: &[(i64, &str)],
) -> Result<(), sqlx::Error> {
    let apps: Vec<i64> = rooms.iter().map(|(app, _)| *app).collect();
    let ids: Vec<&str> = rooms.iter().map(|(_, id)| *id).collect();
    sqlx::query!(
        r#"UPDATE rooms r SET product = 'Live'
           FROM UNNEST($1::int8[], $2::text[]) AS t(a, id)
           WHERE r.sdk_app_id = t.a AND r.room_id = t.id AND r.product <> 'Live'"#,
        &apps,
        &ids as &[&str],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks (creating if needed) the room row; returns the newest destroy seen so far.
pub(super) async fn lock_room(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
    event: &Event,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let revive = matches!(event, Event::MemberEnter(_) | Event::CreateRoom { .. }).then_some(at);
    let destroy = matches!(event, Event::DestroyRoom).then_some(at);
    sqlx::query_scalar!(
        r#"INSERT INTO rooms AS r (sdk_app_id, room_id, last_event_at, last_revive_at, last_destroy_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (sdk_app_id, room_id) DO UPDATE SET
               last_event_at = GREATEST(r.last_event_at, EXCLUDED.last_event_at),
               last_revive_at = GREATEST(r.last_revive_at, EXCLUDED.last_revive_at),
               last_destroy_at = GREATEST(r.last_destroy_at, EXCLUDED.last_destroy_at)
           RETURNING last_destroy_at"#,
        room.app,
        room.id,
        at,
        revive,
        destroy,
    )
    .fetch_one(conn)
    .await
}

/// What a batch says of one room's times.
struct RoomTimes {
    last: DateTime<Utc>,
    revive: Option<DateTime<Utc>>,
    destroy: Option<DateTime<Utc>>,
}
