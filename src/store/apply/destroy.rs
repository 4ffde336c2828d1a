//! Destroys (callbacks and corrections).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Effects, Room};
use crate::{
    callback::{RECONCILED, ROOM_DESTROYED},
    store::membership::RANK_ENTER,
};

/// Ends the memberships this destroy ends, and clears the seats; members who entered again
/// after it go to [`Effects::late`] (their latest exit may be this destroy).
pub(super) async fn destroy<'a>(
    conn: &mut PgConnection,
    room: Room<'a>,
    at: DateTime<Utc>,
    exit: &str,
    effects: &mut Effects<'a>,
) -> Result<(), sqlx::Error> {
    // Members whose newest event is an enter before this destroy, and who are in the room or
    // were ended by a later destroy: this one ends them (docs/semantics.md#destroy).
    // The old row beside the new one: the feed needs who was in before.
    let ended = sqlx::query!(
        r#"UPDATE room_members m SET in_room = false, left_at = $3, leave_type = $4
           FROM room_members o
           WHERE m.sdk_app_id = $1 AND m.room_id = $2
             AND o.sdk_app_id = m.sdk_app_id AND o.room_id = m.room_id
             AND o.user_id = m.user_id
             AND m.last_event_rank = $7 AND m.last_event_at <= $3
             AND (m.in_room
                  OR (m.leave_type IN ($5, $6)
                      AND (m.left_at > $3
                           -- At one time a destroy callback goes before a correction.
                           OR (m.left_at = $3 AND m.leave_type = $6 AND $4 = $5))))
           RETURNING m.user_id, o.in_room AS was_in"#,
        room.app,
        room.id,
        at,
        exit,
        ROOM_DESTROYED,
        RECONCILED,
        RANK_ENTER,
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in ended {
        effects.seen(room, &row.user_id, row.was_in);
        effects.notices.insert((room, row.user_id), (at, false));
    }
    // Members who entered again after this destroy: it may be the latest exit before that
    // enter, which only their history tells. An exit by a later destroy can be superseded too
    // (this earlier destroy may have ended the membership first).
    let later = sqlx::query_scalar!(
        r#"SELECT user_id FROM room_members
           WHERE sdk_app_id = $1 AND room_id = $2 AND in_room AND last_event_at > $3
             AND (left_at IS NULL OR left_at <= $3 OR leave_type IN ($4, $5))"#,
        room.app,
        room.id,
        at,
        ROOM_DESTROYED,
        RECONCILED,
    )
    .fetch_all(&mut *conn)
    .await?;
    for user in later {
        effects.seen(room, &user, true);
        effects.late(room, &user, at);
    }
    // Seats end with the room; changes older than this destroy stay out (see apply_effects).
    sqlx::query!(
        r#"DELETE FROM room_seats
           WHERE sdk_app_id = $1 AND room_id = $2 AND last_event_at <= $3"#,
        room.app,
        room.id,
        at,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
