//! The seat list of a room.

use super::*;

pub(super) async fn change_seats(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
    seats: &[Seat],
) -> Result<(), sqlx::Error> {
    let index: Vec<i32> = seats.iter().map(|s| s.index).collect();
    // A free seat is a NULL in the array.
    let member: Vec<Option<&str>> = seats
        .iter()
        .map(|s| s.member.as_ref().map(|m| m.as_str()))
        .collect();
    let taken: Vec<bool> = seats.iter().map(|s| s.is_taken_disabled).collect();
    let video: Vec<bool> = seats.iter().map(|s| s.is_video_disabled).collect();
    let audio: Vec<bool> = seats.iter().map(|s| s.is_audio_disabled).collect();
    sqlx::query!(
        r#"INSERT INTO room_seats AS s
               (sdk_app_id, room_id, seat_index, member_account, is_taken_disabled,
                is_video_disabled, is_audio_disabled, last_event_at)
           SELECT $1, $2, i, m, tk, vd, ad, $3
           FROM UNNEST($4::int4[], $5::text[], $6::bool[], $7::bool[], $8::bool[]) AS t(i, m, tk, vd, ad)
           ON CONFLICT (sdk_app_id, room_id, seat_index) DO UPDATE SET
               member_account = EXCLUDED.member_account,
               is_taken_disabled = EXCLUDED.is_taken_disabled,
               is_video_disabled = EXCLUDED.is_video_disabled,
               is_audio_disabled = EXCLUDED.is_audio_disabled,
               last_event_at = EXCLUDED.last_event_at
           WHERE s.last_event_at <= EXCLUDED.last_event_at"#,
        room.app,
        room.id,
        at,
        &index,
        &member as &[Option<&str>],
        &taken,
        &video,
        &audio,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn remove_unlisted_seats(
    conn: &mut PgConnection,
    room: Room<'_>,
    at: DateTime<Utc>,
    seats: &[Seat],
) -> Result<(), sqlx::Error> {
    let listed: Vec<i32> = seats.iter().map(|s| s.index).collect();
    sqlx::query!(
        r#"DELETE FROM room_seats
           WHERE sdk_app_id = $1 AND room_id = $2 AND last_event_at <= $3
             AND seat_index <> ALL($4::int4[])"#,
        room.app,
        room.id,
        at,
        &listed,
    )
    .execute(conn)
    .await?;
    Ok(())
}
