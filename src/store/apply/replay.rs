//! The effects of enters and leaves again, statement by statement, for `roomsync rebuild`.

use super::*;

/// `rooms.member_count` follows the newest member event (ties: the larger count).
pub(super) async fn set_member_count(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
    rank: i16,
    change: &MemberChange,
) -> Result<(), sqlx::Error> {
    let Some(count) = change.member_count else {
        return Ok(());
    };
    sqlx::query!(
        r#"UPDATE rooms SET member_count = $3, member_count_at = $4, member_count_rank = $5
           WHERE sdk_app_id = $1 AND room_id = $2
             AND (member_count_at IS NULL
                  OR (member_count_at, member_count_rank, member_count) < ($4, $5, $3))"#,
        room.app,
        room.id,
        count,
        at,
        rank,
    )
    .execute(conn)
    .await?;
    Ok(())
}
pub(super) async fn enter(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
    change: &MemberChange,
    last_destroy_at: Option<DateTime<Utc>>,
    notify: Notify,
) -> Result<(), sqlx::Error> {
    let users = user_ids(change);
    // The first destroy at or after this enter ends it again (docs/semantics.md#destroy).
    let ended_by = match last_destroy_at {
        Some(d) if d >= at => first_destroy_since(conn, room, at).await?,
        _ => None,
    };
    let (ended_at, exit) = ended_by.unzip();
    let applied = sqlx::query_scalar!(
        r#"INSERT INTO room_members AS m
               (sdk_app_id, room_id, user_id, in_room, entered_at, left_at, leave_type,
                last_event_at, last_event_rank)
           SELECT $1, $2, u, $4::timestamptz IS NULL, $3, $4, $6, $3, 0
           FROM UNNEST($5::text[]) AS t(u)
           ON CONFLICT (sdk_app_id, room_id, user_id) DO UPDATE SET
               in_room = EXCLUDED.in_room,
               entered_at = EXCLUDED.entered_at,
               left_at = COALESCE(EXCLUDED.left_at, m.left_at),
               leave_type = COALESCE(EXCLUDED.leave_type, m.leave_type),
               last_event_at = EXCLUDED.last_event_at,
               last_event_rank = 0
           WHERE (m.last_event_at, m.last_event_rank) <= (EXCLUDED.last_event_at, 0::smallint)
           RETURNING user_id"#,
        room.app,
        room.id,
        at,
        ended_at,
        &users,
        exit,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut changes = Changes::new(room, at);
    changes.add(applied, ended_at.is_none());
    let late = missing(&users, &changes);
    changes.recompute(conn, late).await?;
    if notify == Notify::Yes {
        changes.notify(conn).await?;
    }
    Ok(())
}

pub(super) async fn leave(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
    change: &MemberChange,
    exit: Option<&str>,
    notify: Notify,
) -> Result<(), sqlx::Error> {
    let users = user_ids(change);
    // At equal time two leaves are ordered by (Type, Reason), as in membership::fold.
    let applied = sqlx::query_scalar!(
        r#"INSERT INTO room_members AS m
               (sdk_app_id, room_id, user_id, in_room, left_at, leave_type, leave_reason,
                last_event_at, last_event_rank)
           SELECT $1, $2, u, false, $3, $4, $5, $3, 1
           FROM UNNEST($6::text[]) AS t(u)
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
           RETURNING user_id"#,
        room.app,
        room.id,
        at,
        exit,
        change.reason.as_deref(),
        &users,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut changes = Changes::new(room, at);
    changes.add(applied, false);
    let late = missing(&users, &changes);
    changes.recompute(conn, late).await?;
    if notify == Notify::Yes {
        changes.notify(conn).await?;
    }
    Ok(())
}
