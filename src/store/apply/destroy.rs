//! Destroys (callbacks and corrections) and the first destroy after an enter.

use super::*;

pub(super) async fn destroy(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
    exit: &str,
    notify: Notify,
) -> Result<(), sqlx::Error> {
    // Members whose newest event is an enter before this destroy, and who are in the room or
    // were ended by a later destroy: this one ends them (docs/semantics.md#destroy).
    let ended = sqlx::query_scalar!(
        r#"UPDATE room_members SET in_room = false, left_at = $3, leave_type = $4
           WHERE sdk_app_id = $1 AND room_id = $2
             AND last_event_rank = 0 AND last_event_at <= $3
             AND (in_room
                  OR (leave_type IN ($5, $6)
                      AND (left_at > $3
                           -- At one time a destroy callback goes before a correction.
                           OR (left_at = $3 AND leave_type = $6 AND $4 = $5))))
           RETURNING user_id"#,
        room.app,
        room.id,
        at,
        exit,
        ROOM_DESTROYED,
        RECONCILED,
    )
    .fetch_all(&mut *conn)
    .await?;
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
    let mut changes = Changes::new(room, at);
    changes.add(ended, false);
    changes.recompute(conn, later).await?;
    if notify == Notify::Yes {
        changes.notify(conn).await?;
    }
    Ok(())
}

/// The first destroy (callback or correction) at or after `at`, and the exit it gives.
pub(super) async fn first_destroy_since(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
) -> Result<Option<(DateTime<Utc>, &'static str)>, sqlx::Error> {
    let first = sqlx::query!(
        r#"SELECT event_at, callback_command = $4 AS "reconciled!" FROM room_events
           WHERE sdk_app_id = $1 AND room_id = $2 AND event_at >= $3
             AND (callback_command IN ($5, $6) OR (callback_command = $4 AND event_type = 'Destroy'))
           ORDER BY event_at, callback_command = $4
           LIMIT 1"#,
        room.app,
        room.id,
        at,
        RECONCILE,
        DESTROY,
        LIVE_DESTROY,
    )
    .fetch_optional(conn)
    .await?;
    // At one time a destroy callback applies before a correction (the fold's order).
    Ok(first.map(|row| (row.event_at, exit_of(row.reconciled))))
}

pub(super) fn exit_of(reconciled: bool) -> &'static str {
    if reconciled {
        RECONCILED
    } else {
        ROOM_DESTROYED
    }
}
