//! A batch of callbacks' effects, inside the caller's transaction, in a constant number of
//! statements whatever the batch's size (the rules are in docs/semantics.md):
//!
//! 1. [`lock`]: one upsert locks every room of the batch in one global order (so batches from
//!    any process cannot deadlock) and makes the bumps that arrival order cannot change:
//!    times, `member_count`, `product`.
//! 2. [`history`]: one statement inserts the batch's history rows (the dedup constraint tells
//!    which callbacks are new; a replay inserts none: the rows are its input) and reads the
//!    rows of every member that the batch's enters and leaves name, and (plain PostgreSQL)
//!    what the ledger holds for them and their rooms.
//! 3. [`members`]: each member's new events are folded onto its row in memory with
//!    [`membership::fold_from`], the same fold that recomputes late members.
//! 4. Rare paths, per room or per callback: destroys ([`destroy`]), room info ([`rooms`]),
//!    seats ([`seats`]), and members whose row is newer than one of their events, recomputed
//!    from the room's history ([`recompute`]).
//! 5. [`write`]: every member's new row and the notifications ([`notify`]; a replay sends
//!    none), gathered.
//! 6. [`ledger`]: the attendance ledger, from the same new events (docs/attendance.md): read
//!    for the batch by step 2's statement on plain PostgreSQL (by one of its own on Citus), and
//!    its changes gathered when its events go after what the ledger holds.
//! 7. [`feed`]: the change feed's rows (docs/feed.md), gathered by the steps above.
//! 8. [`finish`]: one statement writes what 5 to 7 gathered, the transaction's last.
//!
//! So a batch of enters and leaves takes three statements between `BEGIN` and `COMMIT` on
//! plain PostgreSQL, whatever its size.
//!
//! Callbacks, drift-repair corrections and `roomsync rebuild` all take this one path.

mod destroy;
mod encoding;
mod feed;
mod finish;
mod history;
mod late;
mod ledger;
mod lock;
mod members;
mod notify;
mod recompute;
mod rooms;
mod seats;
mod write;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{attendance::Policy, membership::MemberState};
use crate::callback::{Callback, Command, Event, ROOM_DESTROYED};

pub use feed::{Kind as ChangeKind, NotifyMode};

use destroy::destroy;
use feed::{Cause, Feed};
use finish::finish;
use history::insert_events;
use late::{Windows, starts_of};
use ledger::keep_ledger;
use lock::lock_rooms;
use members::{MemberRows, fold_members, named_members};
use recompute::recompute_members;
use rooms::{InfoChange, merge_room_info};
use seats::{SeatChange, change_seats};
use write::MembersWrite;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// First delivery: the new `room_events.id`.
    Stored { id: i64 },
    /// Identical to a callback already stored: nothing changed.
    Duplicate,
}

/// A room, as the batch's maps key it: ordered by app, then id (the lock order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Room<'a> {
    app: i64,
    id: &'a str,
}

/// The room whose view a callback changes; `None` for history-only callbacks (no room, or a
/// command roomsync does not know).
fn room_of(callback: &Callback) -> Option<Room<'_>> {
    callback.locked_room().map(|(app, id)| Room { app, id })
}

/// How the view is kept: the attendance policy, and how changes are announced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    pub attendance: Policy,
    pub notify: NotifyMode,
}

impl From<Policy> for Rules {
    fn from(attendance: Policy) -> Self {
        Self {
            attendance,
            notify: NotifyMode::default(),
        }
    }
}

/// Stores a batch of callbacks in history and applies the effects of the new ones, each
/// exactly once, with their change feed rows. Outcomes are in the order given.
/// `known`: the database's form when the caller knows it (it saves a round trip and, on Citus,
/// a two-phase commit); otherwise the first statement tells.
/// The feed's last statement holds the feed's head until the transaction ends: the caller
/// commits right after.
pub async fn apply_batch(
    conn: &mut PgConnection,
    callbacks: &[&Callback],
    known: Option<Dialect>,
    rules: Rules,
) -> Result<Vec<Outcome>, sqlx::Error> {
    let (destroys, dialect) = lock_rooms(conn, callbacks, known).await?;
    let named = named_members(callbacks);
    let ledger_rooms = ledger_rooms(dialect, callbacks);
    let (outcomes, rows, read) =
        insert_events(conn, dialect, callbacks, &named, &ledger_rooms).await?;
    let fresh: Vec<(&Callback, Option<i64>)> = callbacks
        .iter()
        .zip(&outcomes)
        .filter_map(|(callback, outcome)| match outcome {
            Outcome::Stored { id } => Some((*callback, Some(*id))),
            Outcome::Duplicate => None,
        })
        .collect();
    let mut feed = Feed::of(&fresh);
    let fresh: Vec<&Callback> = fresh.into_iter().map(|(callback, _)| callback).collect();
    let notify = Notify::from(rules.notify);
    let (mut windows, members) =
        apply_effects(conn, dialect, &fresh, rows, &destroys, notify, &mut feed).await?;
    let ledger = keep_ledger(
        conn,
        dialect,
        &fresh,
        rules.attendance,
        &mut windows,
        &mut feed,
        read,
    )
    .await?;
    finish(conn, dialect, members, ledger, feed, rules.notify).await?;
    Ok(outcomes)
}

/// The rooms whose ledger the history statement reads (plain PostgreSQL); none on Citus, where
/// the ledger is read on its own.
fn ledger_rooms<'a>(dialect: Dialect, callbacks: &[&'a Callback]) -> ledger::LedgerRooms<'a> {
    match dialect {
        Dialect::Postgres => ledger::rooms_to_read(callbacks),
        Dialect::Citus => ledger::LedgerRooms::default(),
    }
}

/// Applies stored callbacks' effects again, through the same statements, without history
/// rows, notifications or feed rows (`roomsync rebuild`, which records its diff at the end).
/// `known` as for [`apply_batch`]; returns the database's form, for the next batch.
pub async fn replay_batch(
    conn: &mut PgConnection,
    callbacks: &[&Callback],
    known: Option<Dialect>,
    policy: Policy,
) -> Result<Dialect, sqlx::Error> {
    let (destroys, dialect) = lock_rooms(conn, callbacks, known).await?;
    let named = named_members(callbacks);
    let ledger_rooms = ledger_rooms(dialect, callbacks);
    let (_, rows, read) = insert_events(conn, dialect, &[], &named, &ledger_rooms).await?;
    let mut feed = Feed::default();
    let (mut windows, members) = apply_effects(
        conn,
        dialect,
        callbacks,
        rows,
        &destroys,
        Notify::No,
        &mut feed,
    )
    .await?;
    let ledger = keep_ledger(
        conn,
        dialect,
        callbacks,
        policy,
        &mut windows,
        &mut feed,
        read,
    )
    .await?;
    // A replay's feed rows are not written: the rebuild records its diff at the end.
    let feed = Feed::default();
    finish(conn, dialect, members, ledger, feed, NotifyMode::Off).await?;
    Ok(dialect)
}

/// Records what a rebuild changed in the members' view, as `member.entered`/`member.left`
/// with cause `rebuild`: `changed`, per room, who is in now and who is out now, at the time
/// of the member's newest event. The rebuild's transaction commits next.
pub async fn record_rebuild_diff(
    conn: &mut PgConnection,
    changed: &[(i64, String, String, bool, DateTime<Utc>)],
    notify: NotifyMode,
) -> Result<Option<i64>, sqlx::Error> {
    let mut feed = Feed::caused_by(Cause::Rebuild);
    for (app, room_id, user, in_room, at) in changed {
        let kind = if *in_room {
            ChangeKind::MemberEntered
        } else {
            ChangeKind::MemberLeft
        };
        feed.add(
            Room {
                app: *app,
                id: room_id,
            },
            *at,
            kind,
            std::slice::from_ref(user),
        );
    }
    feed.record(conn, notify).await
}

/// Makes the attendance ledger of a room that existed before the ledger did (a database
/// upgraded from a version without it), in the caller's transaction; `false` when it was made
/// already. See docs/attendance.md#upgrading.
pub async fn backfill_ledger(
    conn: &mut PgConnection,
    app: i64,
    room_id: &str,
    policy: Policy,
) -> Result<bool, sqlx::Error> {
    ledger::backfill(conn, Room { app, id: room_id }, policy).await
}

/// The database's form: plain PostgreSQL, or room tables distributed by Citus, where a few
/// statements take another form (docs/scaling.md#citus).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Citus,
}

impl Dialect {
    fn of(citus: bool) -> Self {
        if citus { Self::Citus } else { Self::Postgres }
    }
}

/// Whether membership changes are announced with `NOTIFY room_members`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Notify {
    Yes,
    No,
}

impl From<NotifyMode> for Notify {
    fn from(mode: NotifyMode) -> Self {
        if mode == NotifyMode::Members {
            Self::Yes
        } else {
            Self::No
        }
    }
}

/// The newest destroy of each locked room (in this batch or before): a hint that an enter
/// may be ended again.
type Destroys<'a> = HashMap<Room<'a>, Option<DateTime<Utc>>>;

/// What the batch does to members, gathered before the one write.
#[derive(Default)]
struct Effects<'a> {
    /// Each member's new row.
    states: BTreeMap<(Room<'a>, String), MemberState>,
    /// What listeners hear: each member's state now, and the EventTime that caused it.
    notices: BTreeMap<(Room<'a>, String), (DateTime<Utc>, bool)>,
    /// Members to recompute from the room's history, and the EventTime that asks for it.
    late: BTreeMap<Room<'a>, BTreeMap<String, DateTime<Utc>>>,
    /// Each member's `in_room` before the batch, for the feed.
    before: HashMap<(Room<'a>, String), bool>,
}

impl<'a> Effects<'a> {
    fn set(&mut self, room: Room<'a>, user: String, state: MemberState, at: DateTime<Utc>) {
        self.notices
            .insert((room, user.clone()), (at, state.in_room));
        self.states.insert((room, user), state);
    }

    /// Notes a member's `in_room` as the database held it before the batch (the first note
    /// of a member is the one kept).
    fn seen(&mut self, room: Room<'a>, user: &str, in_room: bool) {
        self.before
            .entry((room, user.to_owned()))
            .or_insert(in_room);
    }

    fn late(&mut self, room: Room<'a>, user: &str, at: DateTime<Utc>) {
        let slot = self.late.entry(room).or_default();
        let newest = slot.get(user).map_or(at, |seen| at.max(*seen));
        slot.insert(user.to_owned(), newest);
    }
}

/// Applies the effects on the view; gives back the late rooms' windows it read, for the
/// ledger, and the members' rows to write.
async fn apply_effects<'a>(
    conn: &mut PgConnection,
    dialect: Dialect,
    callbacks: &[&'a Callback],
    rows: MemberRows,
    destroys: &Destroys<'a>,
    notify: Notify,
    feed: &mut Feed<'a>,
) -> Result<(Windows<'a>, MembersWrite<'a>), sqlx::Error> {
    let mut effects = Effects::default();
    fold_members(callbacks, rows, destroys, &mut effects);
    let (mut infos, mut seat_lists) = (Vec::new(), Vec::new());
    for callback in callbacks {
        let Some(room) = room_of(callback) else {
            continue;
        };
        let at = callback.event_time.to_datetime();
        match &callback.event {
            Event::DestroyRoom => {
                let exit = callback.exit_type().unwrap_or(ROOM_DESTROYED);
                destroy(conn, room, at, exit, &mut effects).await?;
            }
            Event::CreateRoom { info, invitees } => infos.push(InfoChange {
                room,
                at,
                info,
                is_create: true,
                invitees: invitees.as_deref(),
            }),
            Event::UpdateRoomInfo { info } => {
                infos.push(InfoChange {
                    room,
                    at,
                    info,
                    is_create: false,
                    invitees: None,
                });
            }
            // A destroy at or after this change has already cleared the seats.
            Event::SeatInfoChanged { seats }
                if destroys
                    .get(&room)
                    .copied()
                    .flatten()
                    .is_none_or(|d| d < at) =>
            {
                feed.add(room, at, ChangeKind::SeatsChanged, &[]);
                seat_lists.push(SeatChange {
                    room,
                    at,
                    seats,
                    whole_list: callback.command == Command::Reconcile,
                });
            }
            _ => {}
        }
    }
    merge_room_info(conn, dialect, &infos).await?;
    change_seats(conn, dialect, &seat_lists).await?;
    // Late members: each room from the start of the session its earliest event of the batch
    // falls in; the reads for every such room at once.
    let late = std::mem::take(&mut effects.late);
    let earliest: Vec<(Room<'a>, DateTime<Utc>)> = late
        .keys()
        .map(|room| {
            let at = callbacks
                .iter()
                .filter(|callback| room_of(callback) == Some(*room))
                .map(|callback| callback.event_time.to_datetime())
                .min()
                .expect("a late member's room has an event in the batch");
            (*room, at)
        })
        .collect();
    let starts = starts_of(conn, dialect, &earliest).await?;
    let from: Vec<_> = late
        .keys()
        .copied()
        .zip(starts.iter().map(|s| s.members_from))
        .collect();
    let mut windows = Windows::default();
    windows.read(conn, dialect, &from).await?;
    for ((room, users), (_, from)) in late.into_iter().zip(from) {
        let names: Vec<String> = users.keys().cloned().collect();
        let events = windows.events(room, from);
        for (user, state) in recompute_members(conn, room, &names, from, events).await? {
            let at = users[&user];
            effects.set(room, user, state, at);
        }
    }
    feed.members(&effects);
    let members = MembersWrite::of(effects, notify);
    Ok((windows, members))
}
