//! What the ledger holds, read in one statement for a batch's rooms and members
//! (`ledger_read`, in the database's form), and the rows a refold replaces.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::store::{
    apply::{Dialect, Room},
    attendance::{RoomEvent, Session, Stay},
    membership::MemberEvent,
};

/// Rooms' stays and sessions from a session number on, as they are before a refold: two
/// statements for every room; on Citus, two routed statements per room.
pub(super) async fn old_rows<'a>(
    conn: &mut PgConnection,
    dialect: Dialect,
    rooms: &[(Room<'a>, i32)],
) -> Result<HashMap<Room<'a>, (Vec<Stay>, Vec<Session>)>, sqlx::Error> {
    let mut old: HashMap<Room<'a>, (Vec<Stay>, Vec<Session>)> = HashMap::new();
    if dialect == Dialect::Citus {
        for &(room, from) in rooms {
            let stays = sqlx::query_as!(
                Stay,
                r#"SELECT user_id AS "user", joined_at, session_no, left_at, leave_type,
                          leave_reason, merged_gaps, gap_ms
                   FROM room_stays
                   WHERE sdk_app_id = $1 AND room_id = $2 AND session_no >= $3"#,
                room.app,
                room.id,
                from,
            )
            .fetch_all(&mut *conn)
            .await?;
            let sessions = sqlx::query_as!(
                Session,
                r#"SELECT session_no AS "no", started_at, ended_at, end_cause, peak_members,
                          peak_at, unique_members, member_ms, open_stays
                   FROM room_sessions
                   WHERE sdk_app_id = $1 AND room_id = $2 AND session_no >= $3"#,
                room.app,
                room.id,
                from,
            )
            .fetch_all(&mut *conn)
            .await?;
            old.insert(room, (stays, sessions));
        }
        return Ok(old);
    }
    let apps: Vec<i64> = rooms.iter().map(|(room, _)| room.app).collect();
    let ids: Vec<&str> = rooms.iter().map(|(room, _)| room.id).collect();
    let from: Vec<i32> = rooms.iter().map(|(_, no)| *no).collect();
    let index = |i: i64| usize::try_from(i - 1).expect("an ordinality is positive");
    let stays = sqlx::query!(
        r#"SELECT t.i AS "i!", s.user_id, s.joined_at, s.session_no, s.left_at, s.leave_type,
                  s.leave_reason, s.merged_gaps, s.gap_ms
           FROM UNNEST($1::int8[], $2::text[], $3::int4[]) WITH ORDINALITY AS t(a, r, n, i)
           JOIN room_stays s ON s.sdk_app_id = t.a AND s.room_id = t.r AND s.session_no >= t.n"#,
        &apps,
        &ids as &[&str],
        &from,
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in stays {
        let room = rooms[index(row.i)].0;
        old.entry(room).or_default().0.push(Stay {
            user: row.user_id,
            joined_at: row.joined_at,
            session_no: row.session_no,
            left_at: row.left_at,
            leave_type: row.leave_type,
            leave_reason: row.leave_reason,
            merged_gaps: row.merged_gaps,
            gap_ms: row.gap_ms,
        });
    }
    let sessions = sqlx::query!(
        r#"SELECT t.i AS "i!", s.session_no, s.started_at, s.ended_at, s.end_cause,
                  s.peak_members, s.peak_at, s.unique_members, s.member_ms, s.open_stays
           FROM UNNEST($1::int8[], $2::text[], $3::int4[]) WITH ORDINALITY AS t(a, r, n, i)
           JOIN room_sessions s ON s.sdk_app_id = t.a AND s.room_id = t.r
                               AND s.session_no >= t.n"#,
        &apps,
        &ids as &[&str],
        &from,
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in sessions {
        let room = rooms[index(row.i)].0;
        old.entry(room).or_default().1.push(Session {
            no: row.session_no,
            started_at: row.started_at,
            ended_at: row.ended_at,
            end_cause: row.end_cause,
            peak_members: row.peak_members,
            peak_at: row.peak_at,
            unique_members: row.unique_members,
            member_ms: row.member_ms,
            open_stays: row.open_stays,
        });
    }
    Ok(old)
}

/// A room's place in its ledger.
pub(in crate::store::apply) struct Place {
    pub(super) folded: Option<(DateTime<Utc>, i16)>,
    pub(super) backfill: bool,
    pub(super) session: Option<Session>,
}

/// What the ledger holds for a batch's rooms and members.
#[derive(Default)]
pub(in crate::store::apply) struct State {
    pub(in crate::store::apply) places: HashMap<(i64, String), Place>,
    /// Named members' newest stays.
    pub(in crate::store::apply) stays: HashMap<(i64, String, String), Stay>,
    /// Every open stay of the rooms with a destroy in the batch.
    pub(in crate::store::apply) open: HashMap<(i64, String), Vec<Stay>>,
}

/// A row of the ledger's read, as every form returns it (`ledger_read_citus.sql`, and the
/// history statement's ledger rows on plain PostgreSQL).
pub(in crate::store::apply) struct StateRow {
    pub(in crate::store::apply) kind: String,
    pub(in crate::store::apply) sdk_app_id: i64,
    pub(in crate::store::apply) room_id: String,
    pub(in crate::store::apply) user_id: Option<String>,
    pub(in crate::store::apply) ledger_at: Option<DateTime<Utc>>,
    pub(in crate::store::apply) ledger_rank: Option<i16>,
    pub(in crate::store::apply) ledger_backfill: Option<bool>,
    pub(in crate::store::apply) session_no: Option<i32>,
    pub(in crate::store::apply) started_at: Option<DateTime<Utc>>,
    pub(in crate::store::apply) ended_at: Option<DateTime<Utc>>,
    pub(in crate::store::apply) end_cause: Option<String>,
    pub(in crate::store::apply) peak_members: Option<i32>,
    pub(in crate::store::apply) peak_at: Option<DateTime<Utc>>,
    pub(in crate::store::apply) unique_members: Option<i32>,
    pub(in crate::store::apply) member_ms: Option<i64>,
    pub(in crate::store::apply) open_stays: Option<i32>,
    pub(in crate::store::apply) joined_at: Option<DateTime<Utc>>,
    pub(in crate::store::apply) left_at: Option<DateTime<Utc>>,
    pub(in crate::store::apply) leave_type: Option<String>,
    pub(in crate::store::apply) leave_reason: Option<String>,
    pub(in crate::store::apply) merged_gaps: Option<i32>,
    pub(in crate::store::apply) gap_ms: Option<i64>,
}

/// The rooms whose ledger a batch reads, one element per room: its place and newest session,
/// and every open stay where `open` says (a destroy is coming).
#[derive(Default)]
pub(in crate::store::apply) struct LedgerRooms<'a> {
    pub(in crate::store::apply) apps: Vec<i64>,
    pub(in crate::store::apply) ids: Vec<&'a str>,
    pub(in crate::store::apply) open: Vec<bool>,
}

impl<'a> LedgerRooms<'a> {
    pub(super) fn of(events: &BTreeMap<Room<'a>, Vec<RoomEvent>>) -> Self {
        Self {
            apps: events.keys().map(|room| room.app).collect(),
            ids: events.keys().map(|room| room.id).collect(),
            open: events.values().map(|list| has_destroy(list)).collect(),
        }
    }
}

pub(super) fn has_destroy(events: &[RoomEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e.event, MemberEvent::Destroy { .. }))
}

/// What the ledger holds for the batch's rooms (each one's place and session, and the open
/// stays of those with a destroy) and for the members their events name (the newest stay):
/// on Citus, where the history statement does not read it (`ledger_read_citus.sql`).
pub(super) async fn read_state(
    conn: &mut PgConnection,
    events: &BTreeMap<Room<'_>, Vec<RoomEvent>>,
) -> Result<State, sqlx::Error> {
    let rooms = LedgerRooms::of(events);
    let mut named: Vec<(i64, &str, &str)> = events
        .iter()
        .flat_map(|(room, list)| {
            list.iter()
                .flat_map(move |e| e.users.iter().map(move |u| (room.app, room.id, u.as_str())))
        })
        .collect();
    named.sort_unstable();
    named.dedup();
    let user_apps: Vec<i64> = named.iter().map(|n| n.0).collect();
    let user_rooms: Vec<&str> = named.iter().map(|n| n.1).collect();
    let users: Vec<&str> = named.iter().map(|n| n.2).collect();
    let rows = sqlx::query_file_as!(
        StateRow,
        "src/store/apply/sql/ledger_read_citus.sql",
        &rooms.apps,
        &rooms.ids as &[&str],
        &rooms.open,
        &user_apps,
        &user_rooms as &[&str],
        &users as &[&str],
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(State::of(rows))
}

impl State {
    /// The ledger's rows of a read, by kind: `room` (place and session), `open` (an open stay
    /// of a room with a destroy), `stay` (a named member's newest stay).
    pub(in crate::store::apply) fn of(rows: impl IntoIterator<Item = StateRow>) -> Self {
        let mut state = State::default();
        for row in rows {
            let stay = || -> Option<Stay> {
                Some(Stay {
                    user: row.user_id.clone()?,
                    joined_at: row.joined_at?,
                    session_no: row.session_no?,
                    left_at: row.left_at,
                    leave_type: row.leave_type.clone(),
                    leave_reason: row.leave_reason.clone(),
                    merged_gaps: row.merged_gaps?,
                    gap_ms: row.gap_ms?,
                })
            };
            match row.kind.as_str() {
                "room" => {
                    let session = (|| {
                        Some(Session {
                            no: row.session_no?,
                            started_at: row.started_at?,
                            ended_at: row.ended_at,
                            end_cause: row.end_cause.clone(),
                            peak_members: row.peak_members?,
                            peak_at: row.peak_at?,
                            unique_members: row.unique_members?,
                            member_ms: row.member_ms?,
                            open_stays: row.open_stays?,
                        })
                    })();
                    let folded = row.ledger_at.zip(row.ledger_rank);
                    let place = Place {
                        folded,
                        backfill: row.ledger_backfill.unwrap_or(false),
                        session,
                    };
                    state.places.insert((row.sdk_app_id, row.room_id), place);
                }
                "open" => {
                    if let Some(stay) = stay() {
                        let key = (row.sdk_app_id, row.room_id.clone());
                        state.open.entry(key).or_default().push(stay);
                    }
                }
                "stay" => {
                    if let Some(stay) = stay() {
                        let key = (row.sdk_app_id, row.room_id.clone(), stay.user.clone());
                        state.stays.insert(key, stay);
                    }
                }
                _ => {}
            }
        }
        state
    }
}
