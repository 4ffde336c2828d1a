//! The seat lists of the batch's rooms.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Dialect, Room};
use crate::callback::Seat;

/// A seat list at its EventTime; a correction's list is Tencent's whole list.
pub(super) struct SeatChange<'a> {
    pub room: Room<'a>,
    pub at: DateTime<Utc>,
    pub seats: &'a [Seat],
    pub whole_list: bool,
}

/// Writes every seat's newest state in one statement (per seat the newest change wins; at
/// equal times the larger state by [`seat_order`], in the batch as against the row, so
/// arrival order never shows), one routed statement a seat on Citus; then a correction removes
/// the seats it does not list.
pub(super) async fn change_seats(
    conn: &mut PgConnection,
    dialect: Dialect,
    changes: &[SeatChange<'_>],
) -> Result<(), sqlx::Error> {
    let mut newest: BTreeMap<(Room<'_>, i32), (DateTime<Utc>, &Seat)> = BTreeMap::new();
    for change in changes {
        for seat in change.seats {
            let slot = newest
                .entry((change.room, seat.index))
                .or_insert((change.at, seat));
            if (change.at, seat_order(seat)) >= (slot.0, seat_order(slot.1)) {
                *slot = (change.at, seat);
            }
        }
    }
    if dialect == Dialect::Citus {
        // One routed statement a seat: an `INSERT … SELECT` would go through the coordinator.
        for ((room, index), (at, seat)) in &newest {
            sqlx::query!(
                r#"INSERT INTO room_seats AS s
                       (sdk_app_id, room_id, seat_index, member_account, is_taken_disabled,
                        is_video_disabled, is_audio_disabled, last_event_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                   ON CONFLICT (sdk_app_id, room_id, seat_index) DO UPDATE SET
                       member_account = EXCLUDED.member_account,
                       is_taken_disabled = EXCLUDED.is_taken_disabled,
                       is_video_disabled = EXCLUDED.is_video_disabled,
                       is_audio_disabled = EXCLUDED.is_audio_disabled,
                       last_event_at = EXCLUDED.last_event_at
                   WHERE s.last_event_at < EXCLUDED.last_event_at
                      OR (s.last_event_at = EXCLUDED.last_event_at
                          AND (coalesce(s.member_account, '') COLLATE "C", s.is_taken_disabled,
                               s.is_video_disabled, s.is_audio_disabled)
                           <= (coalesce(EXCLUDED.member_account, '') COLLATE "C",
                               EXCLUDED.is_taken_disabled, EXCLUDED.is_video_disabled,
                               EXCLUDED.is_audio_disabled))"#,
                room.app,
                room.id,
                index,
                seat.member.as_ref().map(|m| m.as_str()),
                seat.is_taken_disabled,
                seat.is_video_disabled,
                seat.is_audio_disabled,
                at,
            )
            .execute(&mut *conn)
            .await?;
        }
    } else if !newest.is_empty() {
        let apps: Vec<i64> = newest.keys().map(|(room, _)| room.app).collect();
        let ids: Vec<&str> = newest.keys().map(|(room, _)| room.id).collect();
        let index: Vec<i32> = newest.keys().map(|(_, index)| *index).collect();
        let at: Vec<DateTime<Utc>> = newest.values().map(|(at, _)| *at).collect();
        // A free seat is a NULL in the array.
        let member: Vec<Option<&str>> = newest
            .values()
            .map(|(_, s)| s.member.as_ref().map(|m| m.as_str()))
            .collect();
        let flag = |f: fn(&Seat) -> bool| newest.values().map(|(_, s)| f(s)).collect::<Vec<_>>();
        sqlx::query!(
            r#"INSERT INTO room_seats AS s
                   (sdk_app_id, room_id, seat_index, member_account, is_taken_disabled,
                    is_video_disabled, is_audio_disabled, last_event_at)
               SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int4[], $4::text[], $5::bool[],
                                    $6::bool[], $7::bool[], $8::timestamptz[])
               ON CONFLICT (sdk_app_id, room_id, seat_index) DO UPDATE SET
                   member_account = EXCLUDED.member_account,
                   is_taken_disabled = EXCLUDED.is_taken_disabled,
                   is_video_disabled = EXCLUDED.is_video_disabled,
                   is_audio_disabled = EXCLUDED.is_audio_disabled,
                   last_event_at = EXCLUDED.last_event_at
               WHERE s.last_event_at < EXCLUDED.last_event_at
                  OR (s.last_event_at = EXCLUDED.last_event_at
                      AND (coalesce(s.member_account, '') COLLATE "C", s.is_taken_disabled,
                           s.is_video_disabled, s.is_audio_disabled)
                       <= (coalesce(EXCLUDED.member_account, '') COLLATE "C",
                           EXCLUDED.is_taken_disabled, EXCLUDED.is_video_disabled,
                           EXCLUDED.is_audio_disabled))"#,
            &apps,
            &ids as &[&str],
            &index,
            &member as &[Option<&str>],
            &flag(|s| s.is_taken_disabled),
            &flag(|s| s.is_video_disabled),
            &flag(|s| s.is_audio_disabled),
            &at,
        )
        .execute(&mut *conn)
        .await?;
    }
    for change in changes.iter().filter(|c| c.whole_list) {
        remove_unlisted_seats(conn, change.room, change.at, change.seats).await?;
    }
    Ok(())
}

/// How two states of one seat at one EventTime are ordered; the larger wins (a rule on content,
/// docs/semantics.md#seat-change). The SQL above compares the same tuple: a free seat as `''`,
/// which sorts before every id (ids are never empty), ids as bytes (`COLLATE "C"`), then the
/// flags, `false` before `true`.
fn seat_order(seat: &Seat) -> (&[u8], bool, bool, bool) {
    (
        seat.member
            .as_ref()
            .map_or(&[][..], |m| m.as_str().as_bytes()),
        seat.is_taken_disabled,
        seat.is_video_disabled,
        seat.is_audio_disabled,
    )
}

async fn remove_unlisted_seats(
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
