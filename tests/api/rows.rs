//! Reading the SQL contract back: one helper per question a test asks of the tables. Every
//! helper reads app `APP_ID` and panics on a database error (a test failure, with the error).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::APP_ID;

/// A `room_members` row, every contract column but the key's app and room.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MemberRow {
    pub user_id: String,
    pub in_room: bool,
    pub entered_at: Option<DateTime<Utc>>,
    pub left_at: Option<DateTime<Utc>>,
    pub leave_type: Option<String>,
    pub leave_reason: Option<String>,
    pub last_event_at: DateTime<Utc>,
}

/// `user`'s row in `room`, or `None` when roomsync never saw them there.
pub async fn member(pool: &PgPool, room: &str, user: &str) -> Option<MemberRow> {
    sqlx::query_as(
        "SELECT user_id, in_room, entered_at, left_at, leave_type, leave_reason, last_event_at
         FROM room_members WHERE sdk_app_id = $1 AND room_id = $2 AND user_id = $3",
    )
    .bind(APP_ID)
    .bind(room)
    .bind(user)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// Who is in `room` now, through the `room_roster` view, sorted by user id.
pub async fn roster(pool: &PgPool, room: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT user_id FROM room_roster WHERE sdk_app_id = $1 AND room_id = $2 ORDER BY user_id",
    )
    .bind(APP_ID)
    .bind(room)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A `rooms` row, every contract column but the key.
#[derive(Debug, PartialEq, sqlx::FromRow)]
pub struct RoomRow {
    pub member_count: Option<i32>,
    pub room_name: Option<String>,
    pub room_type: Option<String>,
    pub owner_account: Option<String>,
    pub max_member_count: Option<i32>,
    pub room_info: Option<Value>,
    pub created_at: Option<DateTime<Utc>>,
    pub destroyed_at: Option<DateTime<Utc>>,
    pub last_event_at: DateTime<Utc>,
}

/// `room`'s row; panics if there is none.
pub async fn room(pool: &PgPool, room: &str) -> RoomRow {
    sqlx::query_as(
        "SELECT member_count, room_name, room_type, owner_account, max_member_count, room_info,
                created_at, destroyed_at, last_event_at
         FROM rooms WHERE sdk_app_id = $1 AND room_id = $2",
    )
    .bind(APP_ID)
    .bind(room)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// `room`'s seats by index: (index, member, taken disabled, video disabled, audio disabled).
pub async fn seats(pool: &PgPool, room: &str) -> Vec<(i32, Option<String>, bool, bool, bool)> {
    sqlx::query_as(
        "SELECT seat_index, member_account, is_taken_disabled, is_video_disabled, is_audio_disabled
         FROM room_seats WHERE sdk_app_id = $1 AND room_id = $2 ORDER BY seat_index",
    )
    .bind(APP_ID)
    .bind(room)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Rows in the history (`room_events`), all apps.
pub async fn history(pool: &PgPool) -> i64 {
    count(pool, "SELECT count(*) FROM room_events").await
}

/// The distinct `EventTime`s (ms) in the history: the tests that stream unique enters use
/// them as callback ids.
pub async fn history_times(pool: &PgPool) -> std::collections::BTreeSet<i64> {
    let times: Vec<DateTime<Utc>> = sqlx::query_scalar("SELECT event_at FROM room_events")
        .fetch_all(pool)
        .await
        .unwrap();
    times.into_iter().map(|t| t.timestamp_millis()).collect()
}

/// The single `bigint` that `sql` (a `SELECT count(*) ...`) returns.
pub async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// The three view tables as JSON text, every column, in key order: two snapshots are equal
/// when the views are.
pub async fn view_snapshot(pool: &PgPool) -> [String; 3] {
    let mut out = [String::new(), String::new(), String::new()];
    let queries: [&'static str; 3] = [
        "SELECT coalesce(json_agg(to_jsonb(r) ORDER BY sdk_app_id, room_id), '[]')::text FROM rooms r",
        "SELECT coalesce(json_agg(to_jsonb(m) ORDER BY sdk_app_id, room_id, user_id), '[]')::text FROM room_members m",
        "SELECT coalesce(json_agg(to_jsonb(s) ORDER BY sdk_app_id, room_id, seat_index), '[]')::text FROM room_seats s",
    ];
    for (slot, sql) in out.iter_mut().zip(queries) {
        *slot = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
    }
    out
}
