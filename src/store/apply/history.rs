//! The batch's history rows, the rows of the members it names and, on plain PostgreSQL, what
//! the attendance ledger holds for it, in one statement.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{
    Dialect, Outcome, Room,
    ledger::{LedgerRooms, State, StateRow},
    members::MemberRows,
};
use crate::{callback::Callback, store::membership::MemberState};

/// Inserts every callback's history row, and reads the current rows of `members`. The dedup
/// constraint keeps out what is already there: a callback is `Stored` when its row is new, the
/// first of identical callbacks within the batch included; `Duplicate` otherwise.
/// On plain PostgreSQL it also reads the ledger of `ledger` (rooms) and of `members` (each
/// one's newest stay), which saves the batch a round trip (BENCHMARKS.md, "The ledger read with
/// the history"); on Citus the ledger is read on its own (`State` is `None`).
pub(super) async fn insert_events(
    conn: &mut PgConnection,
    dialect: Dialect,
    callbacks: &[&Callback],
    members: &[(Room<'_>, &str)],
    ledger: &LedgerRooms<'_>,
) -> Result<(Vec<Outcome>, MemberRows, Option<State>), sqlx::Error> {
    let n = callbacks.len();
    let mut rows = HistoryRows::with_capacity(n);
    for callback in callbacks {
        rows.push(callback);
    }
    let member_apps: Vec<i64> = members.iter().map(|(room, _)| room.app).collect();
    let member_rooms: Vec<&str> = members.iter().map(|(room, _)| room.id).collect();
    let member_users: Vec<&str> = members.iter().map(|(_, user)| *user).collect();
    // One statement, in the database's form: the history's and members' parameters are the
    // same; plain PostgreSQL's also reads the ledger (`$20..$22`).
    macro_rules! insert_events {
        ($row:ident, $file:literal $(, $ledger:expr)*) => {
            sqlx::query_file_as!(
                $row,
                $file,
                &rows.apps,
                &rows.commands as &[&str],
                &rows.rooms as &[Option<&str>],
                &rows.operators as &[Option<&str>],
                &rows.event_types as &[Option<&str>],
                &rows.members as &[&str],
                &rows.first as &[i32],
                &rows.last as &[i32],
                &rows.counts as &[Option<i32>],
                &rows.reasons as &[Option<&str>],
                &rows.at,
                &rows.client_ips as &[Option<&str>],
                &rows.platforms as &[Option<&str>],
                &rows.payloads as &[&str],
                &rows.keys as &[&[u8]],
                &member_apps,
                &member_rooms as &[&str],
                &member_users as &[&str],
                &rows.legacy_keys as &[Option<&[u8]>],
                $($ledger,)*
            )
            .fetch_all(conn)
            .await?
        };
    }
    let (returned, state) = if dialect == Dialect::Citus {
        let returned = insert_events!(EventOrMember, "src/store/apply/sql/insert_events_citus.sql");
        (returned, None)
    } else {
        let returned = insert_events!(
            Returned,
            "src/store/apply/sql/insert_events.sql",
            &ledger.apps,
            &ledger.ids as &[&str],
            &ledger.open
        );
        let mut history = Vec::with_capacity(returned.len());
        let mut ledger_rows = Vec::new();
        for row in returned {
            match row.split() {
                Split::History(row) => history.push(row),
                Split::Ledger(row) => ledger_rows.push(row),
            }
        }
        (history, Some(State::of(ledger_rows)))
    };
    let mut ids: HashMap<(i64, Option<String>, Vec<u8>), i64> = HashMap::with_capacity(n);
    let mut current = MemberRows::with_capacity(members.len());
    for row in returned {
        let Some(app) = row.sdk_app_id else { continue };
        match (row.id, row.dedup_key, row.user_id, row.room_id) {
            (Some(id), Some(key), _, room) => {
                // On Citus a callback without a room is stored under '' (never a room's id).
                ids.insert((app, room.filter(|r| !r.is_empty()), key), id);
            }
            (None, _, Some(user), Some(room)) => {
                let (Some(in_room), Some(last_event_at), Some(last_event_rank)) =
                    (row.in_room, row.last_event_at, row.last_event_rank)
                else {
                    continue;
                };
                let state = MemberState {
                    in_room,
                    entered_at: row.entered_at,
                    left_at: row.left_at,
                    leave_type: row.leave_type,
                    leave_reason: row.leave_reason,
                    last_event_at,
                    last_event_rank,
                };
                current.insert((app, room, user), state);
            }
            _ => {}
        }
    }
    let outcomes = callbacks
        .iter()
        .map(|c| {
            // `remove`: of identical callbacks in one batch, only the first is new.
            let key = (
                c.sdk_app_id.get(),
                c.room_id.as_ref().map(|r| r.as_str().to_owned()),
                c.dedup_key().to_vec(),
            );
            ids.remove(&key)
                .map_or(Outcome::Duplicate, |id| Outcome::Stored { id })
        })
        .collect();
    Ok((outcomes, current, state))
}

/// A row of `insert_events.sql`: a history row or a member's (`kind` `event` or `member`, as
/// [`EventOrMember`]), or the ledger's (`room`, `open`, `stay`, as [`StateRow`]).
struct Returned {
    kind: String,
    id: Option<i64>,
    sdk_app_id: Option<i64>,
    room_id: Option<String>,
    dedup_key: Option<Vec<u8>>,
    user_id: Option<String>,
    in_room: Option<bool>,
    entered_at: Option<DateTime<Utc>>,
    left_at: Option<DateTime<Utc>>,
    leave_type: Option<String>,
    leave_reason: Option<String>,
    last_event_at: Option<DateTime<Utc>>,
    last_event_rank: Option<i16>,
    ledger_at: Option<DateTime<Utc>>,
    ledger_rank: Option<i16>,
    ledger_backfill: Option<bool>,
    session_no: Option<i32>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    end_cause: Option<String>,
    peak_members: Option<i32>,
    peak_at: Option<DateTime<Utc>>,
    unique_members: Option<i32>,
    member_ms: Option<i64>,
    open_stays: Option<i32>,
    joined_at: Option<DateTime<Utc>>,
    merged_gaps: Option<i32>,
    gap_ms: Option<i64>,
}

impl Returned {
    /// A history or member row, or else the ledger's.
    fn split(self) -> Split {
        if matches!(self.kind.as_str(), "event" | "member") {
            return Split::History(EventOrMember {
                id: self.id,
                sdk_app_id: self.sdk_app_id,
                room_id: self.room_id,
                dedup_key: self.dedup_key,
                user_id: self.user_id,
                in_room: self.in_room,
                entered_at: self.entered_at,
                left_at: self.left_at,
                leave_type: self.leave_type,
                leave_reason: self.leave_reason,
                last_event_at: self.last_event_at,
                last_event_rank: self.last_event_rank,
            });
        }
        Split::Ledger(StateRow {
            kind: self.kind,
            // The ledger's rows always name their room.
            sdk_app_id: self.sdk_app_id.unwrap_or_default(),
            room_id: self.room_id.unwrap_or_default(),
            user_id: self.user_id,
            ledger_at: self.ledger_at,
            ledger_rank: self.ledger_rank,
            ledger_backfill: self.ledger_backfill,
            session_no: self.session_no,
            started_at: self.started_at,
            ended_at: self.ended_at,
            end_cause: self.end_cause,
            peak_members: self.peak_members,
            peak_at: self.peak_at,
            unique_members: self.unique_members,
            member_ms: self.member_ms,
            open_stays: self.open_stays,
            joined_at: self.joined_at,
            left_at: self.left_at,
            leave_type: self.leave_type,
            leave_reason: self.leave_reason,
            merged_gaps: self.merged_gaps,
            gap_ms: self.gap_ms,
        })
    }
}

enum Split {
    History(EventOrMember),
    Ledger(StateRow),
}

/// A row of `insert_events_citus.sql`, or of `insert_events.sql`'s first two kinds: a new
/// history row (`id`, `dedup_key`) or a member's current row (`user_id` and its state).
struct EventOrMember {
    id: Option<i64>,
    sdk_app_id: Option<i64>,
    room_id: Option<String>,
    dedup_key: Option<Vec<u8>>,
    user_id: Option<String>,
    in_room: Option<bool>,
    entered_at: Option<DateTime<Utc>>,
    left_at: Option<DateTime<Utc>>,
    leave_type: Option<String>,
    leave_reason: Option<String>,
    last_event_at: Option<DateTime<Utc>>,
    last_event_rank: Option<i16>,
}

/// The history columns of a batch, one array per column. Member lists, of any length, are
/// one flat array sliced per row (`first..=last`, 1-based; empty when `first > last`).
struct HistoryRows<'a> {
    apps: Vec<i64>,
    commands: Vec<&'a str>,
    rooms: Vec<Option<&'a str>>,
    operators: Vec<Option<&'a str>>,
    event_types: Vec<Option<&'a str>>,
    members: Vec<&'a str>,
    first: Vec<i32>,
    last: Vec<i32>,
    counts: Vec<Option<i32>>,
    reasons: Vec<Option<&'a str>>,
    at: Vec<DateTime<Utc>>,
    client_ips: Vec<Option<&'a str>>,
    platforms: Vec<Option<&'a str>>,
    payloads: Vec<&'a str>,
    keys: Vec<&'a [u8]>,
    legacy_keys: Vec<Option<&'a [u8]>>,
}

impl<'a> HistoryRows<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            apps: Vec::with_capacity(n),
            commands: Vec::with_capacity(n),
            rooms: Vec::with_capacity(n),
            operators: Vec::with_capacity(n),
            event_types: Vec::with_capacity(n),
            members: Vec::with_capacity(n),
            first: Vec::with_capacity(n),
            last: Vec::with_capacity(n),
            counts: Vec::with_capacity(n),
            reasons: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            client_ips: Vec::with_capacity(n),
            platforms: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            legacy_keys: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, callback: &'a Callback) {
        let change = callback.member_change();
        // The list as sent (repeats included); bounded per callback by the parser.
        let start = self.members.len();
        self.members.extend(
            change
                .into_iter()
                .flat_map(|c| c.members.iter().map(|m| m.as_str())),
        );
        let as_i32 = |n: usize| i32::try_from(n).expect("a batch's member lists fit in i32");
        self.first.push(as_i32(start + 1));
        self.last.push(as_i32(self.members.len()));
        self.apps.push(callback.sdk_app_id.get());
        self.commands.push(callback.command.as_str());
        self.rooms
            .push(callback.room_id.as_ref().map(|r| r.as_str()));
        self.operators.push(callback.operator.as_deref());
        self.event_types.push(callback.event_type());
        self.counts.push(change.and_then(|c| c.member_count));
        self.reasons.push(callback.history_reason());
        self.at.push(callback.event_time.to_datetime());
        self.client_ips.push(callback.meta.client_ip.as_deref());
        self.platforms.push(callback.meta.opt_platform.as_deref());
        self.payloads.push(callback.payload.as_str());
        self.keys.push(&callback.dedup_key()[..]);
        self.legacy_keys.push(callback.legacy_key().map(|k| &k[..]));
    }
}
