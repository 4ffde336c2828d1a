//! The reads of the late path (docs/attendance.md#late-events), for every late room of a batch
//! at once: where each room is folded again from ([`starts_of`]) and its member events from
//! there on ([`Windows`]), read once and shared by the members' recompute and the ledger. On
//! plain PostgreSQL each read is one statement whatever the number of rooms, so a journal
//! drain, whose every record is late once live traffic has moved its rooms on, pays a constant
//! number of round trips a batch, not a few per room. On Citus, one routed statement a room (a
//! join of parameter arrays with distributed tables is not routed to one shard).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Dialect, Room, encoding::member_event};
use crate::{callback::Command, store::attendance::RoomEvent, store::membership::MemberEvent};

/// Where a room's history may be folded again from, for events at `earliest` or later.
#[derive(Debug, Clone, Copy)]
pub(super) struct Start {
    /// The first session number the fold makes (those from it on are replaced).
    pub first_no: i32,
    /// The ledger's fold starts here: the start of the session `earliest` falls in, `earliest`
    /// itself before the room's first session, `None` (the whole history) for a room whose
    /// ledger is still to be made.
    pub ledger_from: Option<DateTime<Utc>>,
    /// Members may be folded from here, from their rows with `in_room` false: nobody was in
    /// the room just before it. `None`: from the whole history.
    pub members_from: Option<DateTime<Utc>>,
}

impl Start {
    /// The whole history, from session 1 (a room whose ledger is still to be made).
    pub const WHOLE: Self = Self {
        first_no: 1,
        ledger_from: None,
        members_from: None,
    };

    /// From what the database says of the room: the session `earliest` falls in (the newest
    /// that started at or before it), the first kept session (older ones pruned by
    /// ATTENDANCE_RETENTION_DAYS), and whether the ledger is still to be made.
    fn of(
        earliest: DateTime<Utc>,
        within: Option<(i32, DateTime<Utc>)>,
        first: Option<(i32, DateTime<Utc>)>,
        backfill: bool,
    ) -> Self {
        if backfill {
            return Self::WHOLE;
        }
        match (within, first) {
            (Some((no, started)), _) => Self {
                first_no: no,
                ledger_from: Some(started),
                members_from: Some(started),
            },
            // Before the first session ever: nobody was in the room before `earliest`.
            (None, None | Some((1, _))) => Self {
                first_no: 1,
                ledger_from: Some(earliest),
                members_from: Some(earliest),
            },
            // Before the first kept session: the pruned ones stay pruned, and events of their
            // time stay out of the ledger; members are folded from their whole history.
            (None, Some((first, started))) => Self {
                first_no: first,
                ledger_from: Some(started),
                members_from: None,
            },
        }
    }
}

/// Where to fold each room again from for its events at `earliest` or later: the start of the
/// session they fall in, where nobody was in the room. In the order given.
pub(super) async fn starts_of(
    conn: &mut PgConnection,
    dialect: Dialect,
    rooms: &[(Room<'_>, DateTime<Utc>)],
) -> Result<Vec<Start>, sqlx::Error> {
    if rooms.is_empty() {
        return Ok(Vec::new());
    }
    if dialect == Dialect::Citus {
        let mut starts = Vec::with_capacity(rooms.len());
        for &(room, earliest) in rooms {
            let row = sqlx::query!(
                r#"SELECT
                     (SELECT session_no FROM room_sessions
                      WHERE sdk_app_id = $1 AND room_id = $2 AND started_at <= $3
                      ORDER BY session_no DESC LIMIT 1) AS no,
                     (SELECT started_at FROM room_sessions
                      WHERE sdk_app_id = $1 AND room_id = $2 AND started_at <= $3
                      ORDER BY session_no DESC LIMIT 1) AS started_at,
                     (SELECT session_no FROM room_sessions
                      WHERE sdk_app_id = $1 AND room_id = $2
                      ORDER BY session_no LIMIT 1) AS first_no,
                     (SELECT started_at FROM room_sessions
                      WHERE sdk_app_id = $1 AND room_id = $2
                      ORDER BY session_no LIMIT 1) AS first_started,
                     (SELECT ledger_backfill FROM rooms
                      WHERE sdk_app_id = $1 AND room_id = $2) AS backfill"#,
                room.app,
                room.id,
                earliest,
            )
            .fetch_one(&mut *conn)
            .await?;
            starts.push(Start::of(
                earliest,
                row.no.zip(row.started_at),
                row.first_no.zip(row.first_started),
                row.backfill.unwrap_or(false),
            ));
        }
        return Ok(starts);
    }
    let apps: Vec<i64> = rooms.iter().map(|(room, _)| room.app).collect();
    let ids: Vec<&str> = rooms.iter().map(|(room, _)| room.id).collect();
    let times: Vec<DateTime<Utc>> = rooms.iter().map(|(_, at)| *at).collect();
    let rows = sqlx::query!(
        r#"SELECT t.i AS "i!", w.session_no AS "no?", w.started_at AS "started_at?",
                  f.session_no AS "first_no?", f.started_at AS "first_started?",
                  r.ledger_backfill AS "backfill?"
           FROM UNNEST($1::int8[], $2::text[], $3::timestamptz[]) WITH ORDINALITY AS t(a, r, e, i)
           LEFT JOIN LATERAL (
               SELECT session_no, started_at FROM room_sessions
               WHERE sdk_app_id = t.a AND room_id = t.r AND started_at <= t.e
               ORDER BY session_no DESC LIMIT 1) AS w ON true
           LEFT JOIN LATERAL (
               SELECT session_no, started_at FROM room_sessions
               WHERE sdk_app_id = t.a AND room_id = t.r
               ORDER BY session_no LIMIT 1) AS f ON true
           LEFT JOIN LATERAL (
               SELECT ledger_backfill FROM rooms
               WHERE sdk_app_id = t.a AND room_id = t.r) AS r ON true"#,
        &apps,
        &ids as &[&str],
        &times,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut starts = vec![Start::WHOLE; rooms.len()];
    for row in rows {
        let i = usize::try_from(row.i - 1).expect("an ordinality is positive");
        starts[i] = Start::of(
            rooms[i].1,
            row.no.zip(row.started_at),
            row.first_no.zip(row.first_started),
            row.backfill.unwrap_or(false),
        );
    }
    Ok(starts)
}

/// The commands whose history rows change members (see `encoding::member_event`).
const MEMBER_COMMANDS: [Command; 6] = [
    Command::MemberEnter,
    Command::MemberLeave,
    Command::LiveMemberStateChanged,
    Command::DestroyRoom,
    Command::LiveDestroyRoom,
    Command::Reconcile,
];

/// Rooms' member events from a point on, read at most once a batch.
#[derive(Default)]
pub(super) struct Windows<'a> {
    read: HashMap<Room<'a>, (Option<DateTime<Utc>>, Vec<RoomEvent>)>,
}

impl<'a> Windows<'a> {
    /// Reads, in one statement (one a room on Citus), the windows not read yet or read from a
    /// later point; `None`: the whole history.
    pub async fn read(
        &mut self,
        conn: &mut PgConnection,
        dialect: Dialect,
        wanted: &[(Room<'a>, Option<DateTime<Utc>>)],
    ) -> Result<(), sqlx::Error> {
        let missing: Vec<(Room<'a>, Option<DateTime<Utc>>)> = wanted
            .iter()
            .filter(|(room, from)| {
                self.read
                    .get(room)
                    .is_none_or(|(have, _)| have.is_some() && (from.is_none() || have > from))
            })
            .copied()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let commands: Vec<&str> = MEMBER_COMMANDS.iter().map(Command::as_str).collect();
        // EventTime is positive: nothing is older than the epoch.
        let epoch = DateTime::UNIX_EPOCH;
        let mut events: Vec<Vec<RoomEvent>> = vec![Vec::new(); missing.len()];
        match dialect {
            Dialect::Postgres => {
                let apps: Vec<i64> = missing.iter().map(|(room, _)| room.app).collect();
                let ids: Vec<&str> = missing.iter().map(|(room, _)| room.id).collect();
                let froms: Vec<DateTime<Utc>> = missing
                    .iter()
                    .map(|(_, from)| from.unwrap_or(epoch))
                    .collect();
                let rows = sqlx::query!(
                    r#"SELECT t.i AS "i!", e.callback_command, e.event_at, e.event_type, e.reason,
                              e.member_list
                       FROM UNNEST($1::int8[], $2::text[], $3::timestamptz[])
                            WITH ORDINALITY AS t(a, r, f, i)
                       CROSS JOIN LATERAL (
                           SELECT callback_command, event_at, event_type, reason, member_list
                           FROM room_events
                           WHERE sdk_app_id = t.a AND room_id = t.r AND event_at >= t.f
                             AND callback_command = ANY($4::text[])) AS e"#,
                    &apps,
                    &ids as &[&str],
                    &froms,
                    &commands as &[&str],
                )
                .fetch_all(&mut *conn)
                .await?;
                for row in rows {
                    let i = usize::try_from(row.i - 1).expect("an ordinality is positive");
                    events[i].extend(room_event(
                        &row.callback_command,
                        row.event_type.as_deref(),
                        row.reason.as_deref(),
                        row.event_at,
                        row.member_list,
                    ));
                }
            }
            Dialect::Citus => {
                for (i, (room, from)) in missing.iter().enumerate() {
                    let rows = sqlx::query!(
                        r#"SELECT callback_command, event_at, event_type, reason, member_list
                           FROM room_events
                           WHERE sdk_app_id = $1 AND room_id = $2 AND event_at >= $3
                             AND callback_command = ANY($4::text[])"#,
                        room.app,
                        room.id,
                        from.unwrap_or(epoch),
                        &commands as &[&str],
                    )
                    .fetch_all(&mut *conn)
                    .await?;
                    events[i].extend(rows.into_iter().filter_map(|row| {
                        room_event(
                            &row.callback_command,
                            row.event_type.as_deref(),
                            row.reason.as_deref(),
                            row.event_at,
                            row.member_list,
                        )
                    }));
                }
            }
        }
        for ((room, from), list) in missing.into_iter().zip(events) {
            self.read.insert(room, (from, list));
        }
        Ok(())
    }

    /// The room's member events from `from` on, from a window read before that starts there
    /// or earlier.
    pub fn events(
        &self,
        room: Room<'a>,
        from: Option<DateTime<Utc>>,
    ) -> impl Iterator<Item = &RoomEvent> {
        let (have, list) = self
            .read
            .get(&room)
            .expect("a window is read before it is used");
        debug_assert!(have.is_none() || (from.is_some() && have <= &from));
        list.iter()
            .filter(move |event| from.is_none_or(|from| event.order_key().0 >= from))
    }
}

/// A history row as the ledger and the recompute see it; `None` for rows that do not change
/// members.
fn room_event(
    command: &str,
    event_type: Option<&str>,
    reason: Option<&str>,
    at: DateTime<Utc>,
    member_list: Vec<String>,
) -> Option<RoomEvent> {
    let event = member_event(&Command::from_history(command), event_type, reason, at)?;
    let users = match event {
        MemberEvent::Destroy { .. } => Vec::new(),
        _ => {
            let mut users = member_list;
            users.sort_unstable();
            users.dedup();
            users
        }
    };
    Some(RoomEvent { event, users })
}
