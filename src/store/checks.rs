//! Drift repair's storage (docs/drift-repair.md#several-instances-leases-and-one-rate-bound):
//! which rooms are due for a check and who holds them, the REST call counter that all
//! instances share, and what the view says of one room. The reconciler decides what to do with
//! them; corrections themselves are written like callbacks, through [`super::write_batch`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::callback::{Id, SdkAppId};

/// A room to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRef {
    pub sdk_app_id: i64,
    pub room_id: String,
}

/// Claims up to `limit` live rooms of `apps` that are due: never checked, or checked more than
/// `interval` ago, oldest first, not in backoff, not held by another instance. Each claimed
/// room is held by `owner` for `lease` (or until [`finish_check`]).
pub async fn claim_due(
    pool: &PgPool,
    apps: &[i64],
    owner: &str,
    interval: Duration,
    lease: Duration,
    limit: i64,
) -> Result<Vec<RoomRef>, sqlx::Error> {
    // Two statements, both of which Citus runs (it refuses a time function in ON CONFLICT's
    // WHERE, and a parameter in its SET): first the rooms' rows, where missing; then the claim.
    // The claim's UPDATE re-checks the lease on the row's newest version, so two instances
    // that picked the same room cannot both take it.
    sqlx::query!(
        r#"INSERT INTO room_checks (sdk_app_id, room_id)
           SELECT r.sdk_app_id, r.room_id FROM rooms r
           WHERE r.sdk_app_id = ANY($1) AND r.destroyed_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM room_checks k
                             WHERE k.sdk_app_id = r.sdk_app_id AND k.room_id = r.room_id)
           ON CONFLICT (sdk_app_id, room_id) DO NOTHING"#,
        apps,
    )
    .execute(pool)
    .await?;
    sqlx::query_as!(
        RoomRef,
        r#"UPDATE room_checks c
           SET lease_owner = $2, lease_until = now() + make_interval(secs => $4)
           FROM (
               SELECT k.sdk_app_id, k.room_id FROM room_checks k
               JOIN rooms r ON r.sdk_app_id = k.sdk_app_id AND r.room_id = k.room_id
               WHERE k.sdk_app_id = ANY($1)
                 AND r.destroyed_at IS NULL
                 AND (r.created_at > now() - interval '1 day'
                      OR EXISTS (SELECT 1 FROM room_members m
                                 WHERE m.sdk_app_id = r.sdk_app_id AND m.room_id = r.room_id
                                   AND m.in_room))
                 AND (k.checked_at IS NULL OR k.checked_at < now() - make_interval(secs => $3))
                 AND (k.next_attempt_at IS NULL OR k.next_attempt_at <= now())
                 AND (k.lease_until IS NULL OR k.lease_until < now())
               ORDER BY k.checked_at NULLS FIRST, k.sdk_app_id, k.room_id
               LIMIT $5
           ) AS due
           WHERE c.sdk_app_id = due.sdk_app_id AND c.room_id = due.room_id
             AND (c.lease_until IS NULL OR c.lease_until < now())
             AND (c.checked_at IS NULL OR c.checked_at < now() - make_interval(secs => $3))
             AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= now())
           RETURNING c.sdk_app_id, c.room_id"#,
        apps,
        owner,
        interval.as_secs_f64(),
        lease.as_secs_f64(),
        limit,
    )
    .fetch_all(pool)
    .await
}

/// Ends `owner`'s hold on a room: a success records the check; a failure counts it and sets
/// the backoff (`retry_after`).
pub async fn finish_check(
    pool: &PgPool,
    room: &RoomRef,
    owner: &str,
    failure: Option<(&str, Duration)>,
) -> Result<(), sqlx::Error> {
    // One statement a case: Citus refuses a time function inside CASE.
    match failure {
        None => {
            sqlx::query!(
                r#"UPDATE room_checks SET
                   lease_owner = NULL, lease_until = NULL, checked_at = now(), failures = 0,
                   next_attempt_at = NULL, last_error = NULL
               WHERE sdk_app_id = $1 AND room_id = $2 AND lease_owner = $3"#,
                room.sdk_app_id,
                room.room_id,
                owner,
            )
            .execute(pool)
            .await?
        }
        Some((error, retry_after)) => {
            sqlx::query!(
                r#"UPDATE room_checks SET
                   lease_owner = NULL, lease_until = NULL, failures = failures + 1,
                   next_attempt_at = now() + make_interval(secs => $4), last_error = $5
               WHERE sdk_app_id = $1 AND room_id = $2 AND lease_owner = $3"#,
                room.sdk_app_id,
                room.room_id,
                owner,
                retry_after.as_secs_f64(),
                error,
            )
            .execute(pool)
            .await?
        }
    };
    Ok(())
}

/// Live rooms of `apps` whose last check failed (they wait out a backoff).
pub async fn failing(pool: &PgPool, apps: &[i64]) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM room_checks c
           JOIN rooms r ON r.sdk_app_id = c.sdk_app_id AND r.room_id = c.room_id
           WHERE c.sdk_app_id = ANY($1) AND c.failures > 0 AND r.destroyed_at IS NULL"#,
        apps,
    )
    .fetch_one(pool)
    .await
}

/// Failed checks in a row of a room (for the backoff).
pub async fn failures(pool: &PgPool, room: &RoomRef) -> Result<i32, sqlx::Error> {
    let failures = sqlx::query_scalar!(
        "SELECT failures FROM room_checks WHERE sdk_app_id = $1 AND room_id = $2",
        room.sdk_app_id,
        room.room_id,
    )
    .fetch_optional(pool)
    .await?;
    Ok(failures.unwrap_or(0))
}

/// The live rooms of one app, or all (`roomsync reconcile` without `--room`).
pub async fn live_rooms(pool: &PgPool, apps: &[i64]) -> Result<Vec<RoomRef>, sqlx::Error> {
    sqlx::query_as!(
        RoomRef,
        r#"SELECT r.sdk_app_id, r.room_id FROM rooms r
           WHERE r.sdk_app_id = ANY($1)
             AND r.destroyed_at IS NULL
             AND (r.created_at > now() - interval '1 day'
                  OR EXISTS (SELECT 1 FROM room_members m
                             WHERE m.sdk_app_id = r.sdk_app_id AND m.room_id = r.room_id
                               AND m.in_room))
           ORDER BY r.sdk_app_id, r.room_id"#,
        apps,
    )
    .fetch_all(pool)
    .await
}

/// One member as the view has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewMember {
    pub user_id: String,
    pub in_room: bool,
    pub last_event_at: DateTime<Utc>,
}

/// One seat as the view has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSeat {
    pub seat_index: i32,
    pub member_account: Option<String>,
    pub is_taken_disabled: bool,
    pub is_video_disabled: bool,
    pub is_audio_disabled: bool,
}

/// What the view says of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomView {
    /// `None`: no such row.
    pub last_event_at: Option<DateTime<Utc>>,
    pub destroyed: bool,
    pub member_count: Option<i32>,
    pub seats_enabled: bool,
    /// `rooms.product`: `Room` or `Live`.
    pub product: String,
    pub members: Vec<ViewMember>,
    pub seats: Vec<ViewSeat>,
}

pub async fn room_view(pool: &PgPool, app: SdkAppId, room: &Id) -> Result<RoomView, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let row = sqlx::query!(
        r#"SELECT last_event_at, destroyed_at IS NOT NULL AS "destroyed!", member_count,
                  COALESCE(room_info -> 'IsSeatEnabled' = 'true'::jsonb, false) AS "seats_enabled!",
                  product
           FROM rooms WHERE sdk_app_id = $1 AND room_id = $2"#,
        app.get(),
        room.as_str(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    let members = sqlx::query_as!(
        ViewMember,
        r#"SELECT user_id, in_room, last_event_at FROM room_members
           WHERE sdk_app_id = $1 AND room_id = $2"#,
        app.get(),
        room.as_str(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let seats = sqlx::query_as!(
        ViewSeat,
        r#"SELECT seat_index, member_account, is_taken_disabled, is_video_disabled,
                  is_audio_disabled
           FROM room_seats WHERE sdk_app_id = $1 AND room_id = $2 ORDER BY seat_index"#,
        app.get(),
        room.as_str(),
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(RoomView {
        last_event_at: row.as_ref().map(|r| r.last_event_at),
        destroyed: row.as_ref().is_some_and(|r| r.destroyed),
        member_count: row.as_ref().and_then(|r| r.member_count),
        seats_enabled: row.as_ref().is_some_and(|r| r.seats_enabled),
        product: row
            .as_ref()
            .map_or_else(|| "Room".to_owned(), |r| r.product.clone()),
        members,
        seats,
    })
}

/// Takes one REST call of `app`'s budget for this second of the database's clock (one row per
/// app, so every instance counts against the same `max_rps`); `false` when it is spent.
pub async fn take_budget(pool: &PgPool, app: SdkAppId, max_rps: i32) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query_scalar!(
        r#"INSERT INTO reconcile_budget AS b (sdk_app_id, second, used)
               VALUES ($1, date_trunc('second', clock_timestamp()), 1)
               ON CONFLICT (sdk_app_id) DO UPDATE SET
                   used = CASE WHEN b.second = EXCLUDED.second THEN b.used + 1 ELSE 1 END,
                   second = EXCLUDED.second
               WHERE b.second <> EXCLUDED.second OR b.used < $2
               RETURNING used"#,
        app.get(),
        max_rps,
    )
    .fetch_optional(pool)
    .await?;
    Ok(taken.is_some())
}
