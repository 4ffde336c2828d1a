//! What the console shows (docs/console.md), read from the tables: live rooms, one room,
//! refusals, the setup check and drift repair's latest corrections. Every read is bounded.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::callback::{Command, RECONCILE_COMMAND};

/// Live rooms listed at most (the page pages through them).
pub const ROOMS_MAX: i64 = 10_000;

#[derive(Debug, Serialize)]
pub struct LiveRoom {
    pub sdk_app_id: i64,
    pub room_id: String,
    pub room_name: Option<String>,
    pub product: String,
    pub members: i64,
}

/// Rooms with at least one member in, most members first, and the feed position they are
/// valid at (one snapshot).
pub async fn live_rooms(pool: &PgPool) -> Result<(Vec<LiveRoom>, i64), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let cursor = sqlx::query_scalar!("SELECT last_seq FROM room_changes_head")
        .fetch_one(&mut *tx)
        .await?;
    let rooms = sqlx::query_as!(
        LiveRoom,
        r#"SELECT m.sdk_app_id, m.room_id, r.room_name, coalesce(r.product, 'Room') AS "product!",
                  count(*) AS "members!"
           FROM room_members m
           LEFT JOIN rooms r ON r.sdk_app_id = m.sdk_app_id AND r.room_id = m.room_id
           WHERE m.in_room
           GROUP BY m.sdk_app_id, m.room_id, r.room_name, r.product
           ORDER BY count(*) DESC, m.sdk_app_id, m.room_id
           LIMIT $1"#,
        ROOMS_MAX,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((rooms, cursor))
}

#[derive(Debug, Serialize)]
pub struct HistoryRow {
    pub id: i64,
    pub callback_command: String,
    pub event_type: Option<String>,
    pub member_list: Vec<String>,
    pub event_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct Seat {
    pub seat_index: i32,
    pub member_account: Option<String>,
    pub is_taken_disabled: bool,
    pub is_video_disabled: bool,
    pub is_audio_disabled: bool,
}

#[derive(Debug, Serialize)]
pub struct RoomInfo {
    pub room_name: Option<String>,
    pub product: String,
    pub created_at: Option<DateTime<Utc>>,
    pub destroyed_at: Option<DateTime<Utc>>,
    pub member_count: Option<i32>,
}

/// One room's info, newest history rows (at most 50), and seats.
pub async fn room(
    pool: &PgPool,
    app: i64,
    room: &str,
) -> Result<(Option<RoomInfo>, Vec<HistoryRow>, Vec<Seat>), sqlx::Error> {
    let info = sqlx::query_as!(
        RoomInfo,
        r#"SELECT room_name, product, created_at, destroyed_at, member_count
           FROM rooms WHERE sdk_app_id = $1 AND room_id = $2"#,
        app,
        room,
    )
    .fetch_optional(pool)
    .await?;
    let history = sqlx::query_as!(
        HistoryRow,
        r#"SELECT id, callback_command, event_type, member_list, event_at, received_at
           FROM room_events WHERE sdk_app_id = $1 AND room_id = $2
           ORDER BY event_at DESC, id DESC LIMIT 50"#,
        app,
        room,
    )
    .fetch_all(pool)
    .await?;
    let seats = sqlx::query_as!(
        Seat,
        r#"SELECT seat_index, member_account, is_taken_disabled, is_video_disabled,
                  is_audio_disabled
           FROM room_seats WHERE sdk_app_id = $1 AND room_id = $2 ORDER BY seat_index"#,
        app,
        room,
    )
    .fetch_all(pool)
    .await?;
    Ok((info, history, seats))
}

#[derive(Debug, Serialize)]
pub struct Refusal {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub sdk_app_id: Option<i64>,
    pub callback_command: Option<String>,
    pub error_code: i32,
    pub error_info: String,
}

/// The newest refusals (at most 50), without their bodies.
pub async fn refusals(pool: &PgPool) -> Result<Vec<Refusal>, sqlx::Error> {
    sqlx::query_as!(
        Refusal,
        r#"SELECT id, received_at, sdk_app_id, callback_command, error_code, error_info
           FROM rejected_callbacks ORDER BY id DESC LIMIT 50"#
    )
    .fetch_all(pool)
    .await
}

/// One refusal's body as kept (text; bytes that were not UTF-8 shown escaped by PostgreSQL).
pub async fn refusal_body(pool: &PgPool, id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT CASE WHEN body_bytes IS NULL THEN body ELSE encode(body_bytes, 'escape') END
                  AS "body!"
           FROM rejected_callbacks WHERE id = $1"#,
        id,
    )
    .fetch_optional(pool)
    .await
}

/// How far back the setup check looks for a command's last arrival.
pub const ARRIVALS_DAYS: i32 = 30;

#[derive(Debug, Serialize)]
pub struct Arrival {
    pub command: String,
    /// Callbacks of this command that arrived today (UTC), stored or already stored.
    pub today: i64,
    /// Its newest arrival within ARRIVALS_DAYS.
    pub last_at: Option<DateTime<Utc>>,
    /// Nothing arrived for 24 hours: a switch left off in Tencent's configuration?
    pub quiet: bool,
}

/// Per command roomsync handles, what arrived: today's count and the newest arrival, from
/// the counts every storing transaction keeps (`ingest_counts`: a few rows per day), never
/// from the history, whose size grows with the traffic.
pub async fn arrivals(pool: &PgPool) -> Result<Vec<Arrival>, sqlx::Error> {
    let handled: Vec<&str> = Command::HANDLED.to_vec();
    let now = Utc::now();
    let rows = sqlx::query!(
        r#"SELECT callback_command,
                  COALESCE(sum(accepted + duplicates)
                           FILTER (WHERE day = (now() AT TIME ZONE 'UTC')::date), 0)::int8 AS "today!",
                  max(last_at) AS last_at
           FROM ingest_counts
           WHERE day >= (now() AT TIME ZONE 'UTC')::date - $2::int4
             AND callback_command = ANY($1::text[])
           GROUP BY callback_command"#,
        &handled as &[&str],
        ARRIVALS_DAYS,
    )
    .fetch_all(pool)
    .await?;
    Ok(Command::HANDLED
        .iter()
        .map(|command| {
            let row = rows.iter().find(|r| r.callback_command == *command);
            let last_at = row.and_then(|r| r.last_at);
            Arrival {
                command: (*command).to_owned(),
                today: row.map_or(0, |r| r.today),
                last_at,
                quiet: last_at.is_none_or(|at| now - at > chrono::TimeDelta::hours(24)),
            }
        })
        .collect())
}

#[derive(Debug, Serialize)]
pub struct Correction {
    pub sdk_app_id: i64,
    pub room_id: Option<String>,
    pub kind: Option<String>,
    pub member_list: Vec<String>,
    pub event_at: DateTime<Utc>,
}

/// Drift repair's newest corrections of the last 24 hours (at most 20; from a partial index
/// that holds only corrections, never a walk of the history).
pub async fn corrections(pool: &PgPool) -> Result<Vec<Correction>, sqlx::Error> {
    sqlx::query_as!(
        Correction,
        r#"SELECT sdk_app_id, room_id, event_type AS kind, member_list, event_at
           FROM room_events
           WHERE callback_command = $1 AND received_at >= now() - interval '24 hours'
           ORDER BY id DESC LIMIT 20"#,
        RECONCILE_COMMAND,
    )
    .fetch_all(pool)
    .await
}
