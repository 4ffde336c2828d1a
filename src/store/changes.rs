//! Reading the change feed and the snapshots it follows (docs/feed.md).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::Dialect;

/// One row of `room_changes`, as the API gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub seq: i64,
    pub sdk_app_id: i64,
    pub room_id: String,
    pub room_seq: i64,
    pub kind: String,
    pub user_ids: Vec<String>,
    pub event_at: DateTime<Utc>,
    pub event_id: Option<i64>,
    pub cause: String,
    pub recorded_at: DateTime<Utc>,
}

/// Why the feed could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The position is older than the oldest change retention kept.
    #[error("position older than the oldest kept change {oldest}")]
    Gone { oldest: i64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// SQLSTATE of `room_changes_after` for a position retention passed.
const GONE: &str = "RF410";

/// The changes after `after`, at most `limit`, in `seq` order: each final (docs/feed.md#order).
pub async fn changes_after(
    pool: &PgPool,
    after: i64,
    limit: i32,
) -> Result<Vec<Change>, FeedError> {
    let rows = sqlx::query_as!(
        Change,
        r#"SELECT seq AS "seq!", sdk_app_id AS "sdk_app_id!", room_id AS "room_id!",
                  room_seq AS "room_seq!", kind AS "kind!", user_ids AS "user_ids!",
                  event_at AS "event_at!", event_id, cause AS "cause!",
                  recorded_at AS "recorded_at!"
           FROM room_changes_after($1, $2)"#,
        after,
        limit,
    )
    .fetch_all(pool)
    .await;
    match rows {
        Ok(rows) => Ok(rows),
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some(GONE) => {
            Err(FeedError::Gone {
                oldest: oldest(pool).await?,
            })
        }
        Err(error) => Err(error.into()),
    }
}

/// The oldest position from which the feed is whole (what retention deleted is before it).
pub async fn oldest(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT deleted_upto + 1 AS "oldest!" FROM room_changes_horizon"#)
        .fetch_one(pool)
        .await
}

/// The newest `seq` given out (0 before the first change).
pub async fn head(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!("SELECT last_seq FROM room_changes_head")
        .fetch_one(pool)
        .await
}

/// A member in a room's roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Present {
    pub user_id: String,
    pub entered_at: Option<DateTime<Utc>>,
}

/// A room's roster and the feed position it is valid at: the room's changes after `cursor`,
/// applied to it, give the roster at any later moment.
#[derive(Debug, Clone, Serialize)]
pub struct Roster {
    pub members: Vec<Present>,
    pub cursor: i64,
}

/// Reads a room's roster and its cursor as of one moment of the feed.
///
/// Plain PostgreSQL: one transaction snapshot holds both (the feed's `seq` is given out in
/// commit order, so the head in the snapshot is exactly what the roster reflects). Citus: the
/// members live on a worker, committed after the coordinator (two-phase commit), so a snapshot
/// of each is not one moment; the head's row is locked in share mode, which waits for the
/// transaction writing the feed to finish on every node and keeps the next from starting its
/// last statement until the roster is read (one routed query).
pub async fn roster(
    pool: &PgPool,
    dialect: Dialect,
    app: i64,
    room: &str,
) -> Result<Roster, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let cursor = match dialect {
        Dialect::Postgres => {
            sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
            head_in(&mut tx, false).await?
        }
        Dialect::Citus => head_in(&mut tx, true).await?,
    };
    let members = sqlx::query_as!(
        Present,
        r#"SELECT user_id, entered_at FROM room_members
           WHERE sdk_app_id = $1 AND room_id = $2 AND in_room
           ORDER BY user_id"#,
        app,
        room,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Roster { members, cursor })
}

async fn head_in(conn: &mut PgConnection, share: bool) -> Result<i64, sqlx::Error> {
    if share {
        sqlx::query_scalar!("SELECT last_seq FROM room_changes_head FOR SHARE")
            .fetch_one(conn)
            .await
    } else {
        sqlx::query_scalar!("SELECT last_seq FROM room_changes_head")
            .fetch_one(conn)
            .await
    }
}

/// A session of a room, with who attended it (docs/attendance.md).
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    pub session_no: i32,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_cause: Option<String>,
    pub peak_members: i32,
    pub unique_members: i32,
    pub member_ms: i64,
    pub attendance: Vec<Attendee>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attendee {
    pub user_id: String,
    pub first_joined_at: Option<DateTime<Utc>>,
    pub last_left_at: Option<DateTime<Utc>>,
    pub present_ms: i64,
    pub stays: i32,
    pub invited: bool,
}

/// The room's newest sessions, newest first, at most `limit`, with their attendance.
pub async fn sessions(
    pool: &PgPool,
    app: i64,
    room: &str,
    limit: i64,
) -> Result<Vec<SessionView>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let sessions = sqlx::query!(
        r#"SELECT session_no, started_at, ended_at, end_cause, peak_members, unique_members,
                  member_ms
           FROM room_sessions WHERE sdk_app_id = $1 AND room_id = $2
           ORDER BY session_no DESC LIMIT $3"#,
        app,
        room,
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    let first = sessions.last().map_or(i32::MAX, |s| s.session_no);
    let attendees = sqlx::query!(
        r#"SELECT session_no AS "session_no!", user_id AS "user_id!", first_joined_at,
                  last_left_at, present_ms AS "present_ms!", stays AS "stays!",
                  invited AS "invited!"
           FROM room_attendance
           WHERE sdk_app_id = $1 AND room_id = $2 AND session_no >= $3
           ORDER BY session_no, user_id"#,
        app,
        room,
        first,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut out: Vec<SessionView> = sessions
        .into_iter()
        .map(|s| SessionView {
            session_no: s.session_no,
            started_at: s.started_at,
            ended_at: s.ended_at,
            end_cause: s.end_cause,
            peak_members: s.peak_members,
            unique_members: s.unique_members,
            member_ms: s.member_ms,
            attendance: Vec::new(),
        })
        .collect();
    for a in attendees {
        if let Some(session) = out.iter_mut().find(|s| s.session_no == a.session_no) {
            session.attendance.push(Attendee {
                user_id: a.user_id,
                first_joined_at: a.first_joined_at,
                last_left_at: a.last_left_at,
                present_ms: a.present_ms,
                stays: a.stays,
                invited: a.invited,
            });
        }
    }
    Ok(out)
}
