//! The attendance ledger (`room_stays`, `room_sessions`), kept in the batch's transaction
//! (docs/attendance.md). Per room, the batch's member events either go after everything the
//! ledger has folded, and the fold goes on from its rows (one read and one write for the whole
//! batch), or some go before, and the room's ledger is folded again from the start of the
//! session they fall in: the work is in proportion to that session and those after it, never
//! to the room's whole history.
//!
//! This file folds: a batch's events ([`keep_ledger`]), and the whole history of a room older
//! than the ledger ([`backfill`]).
//! - `read`: what the ledger holds for the batch's rooms and members, and a refold's old rows.
//! - `write`: the changes as one array per column (the batch's last statement writes them,
//!   `finish.rs`), and the feed's session rows.

mod read;
mod write;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{
    Dialect, Room,
    encoding::member_event_of,
    feed::Feed,
    late::{Start, Windows, starts_of},
    room_of,
};
use crate::{
    callback::{Callback, Command, Event},
    store::attendance::{Policy, RoomEvent, RoomLedger, Stay, goes_after},
};
pub(super) use read::{LedgerRooms, State, StateRow};
use read::{has_destroy, old_rows, read_state};
pub(super) use write::LedgerWrite;
use write::feed_session;

/// Folds the batch's new member events into each room's ledger; gives back what changed,
/// for the batch's last statement (a refold's deletions and rows that statement does not
/// take are written here).
/// `callbacks`: the batch's callbacks that are new to history (or replayed by a rebuild);
/// `windows`: the late rooms' events the members' recompute read already (shared);
/// `read`: what the history statement read of the ledger, for the rooms of
/// [`rooms_to_read`] and the batch's named members (plain PostgreSQL); `None`: read here.
pub(super) async fn keep_ledger<'a>(
    conn: &mut PgConnection,
    dialect: Dialect,
    callbacks: &[&'a Callback],
    policy: Policy,
    windows: &mut Windows<'a>,
    feed: &mut Feed<'a>,
    read: Option<State>,
) -> Result<LedgerWrite, sqlx::Error> {
    let events = room_events(callbacks);
    if events.is_empty() {
        return Ok(LedgerWrite::default());
    }
    let state = match read {
        Some(state) => state,
        None => read_state(conn, &events).await?,
    };
    let mut write = LedgerWrite::default();
    // Rooms with an event before the ledger's place: each folded again below, all at once.
    let mut late: Vec<(Room<'a>, DateTime<Utc>)> = Vec::new();
    let mut late_places = Vec::new();
    for (room, room_events) in events {
        let Some(place) = state.places.get(&(room.app, room.id.to_owned())) else {
            // Every room of the batch is locked, hence there; nothing to fold into otherwise.
            continue;
        };
        // A room older than the ledger: the background pass folds its whole history, these
        // events included (they are in history now), so a callback never pays for it.
        if place.backfill {
            continue;
        }
        let in_order = room_events.iter().all(|event| {
            let (at, rank, _, _) = event.order_key();
            goes_after(place.folded, at, rank)
        });
        if !in_order {
            let earliest = room_events
                .iter()
                .map(|event| event.order_key().0)
                .min()
                .expect("a room here has events");
            late.push((room, earliest));
            late_places.push(place.folded);
            continue;
        }
        let mut stays: Vec<Stay> = Vec::new();
        for event in &room_events {
            for user in &event.users {
                let key = (room.app, room.id.to_owned(), user.clone());
                if let Some(stay) = state.stays.get(&key) {
                    stays.push(stay.clone());
                }
            }
        }
        // Read ahead for every callback of the batch, the open stays count only where a new
        // callback destroys the room.
        if has_destroy(&room_events)
            && let Some(open) = state.open.get(&(room.app, room.id.to_owned()))
        {
            stays.extend(open.iter().cloned());
        }
        let mut ledger = RoomLedger::resume(policy, place.session.clone(), stays);
        ledger.fold(room_events);
        for session in ledger.changes().sessions {
            let was = place.session.as_ref().filter(|old| old.no == session.no);
            feed_session(feed, room, was, session);
        }
        write.push(room, None, &ledger, place.folded);
    }
    if !late.is_empty() {
        let starts = starts_of(conn, dialect, &late).await?;
        let from: Vec<_> = late
            .iter()
            .zip(&starts)
            .map(|((room, _), start)| (*room, start.ledger_from))
            .collect();
        windows.read(conn, dialect, &from).await?;
        let firsts: Vec<_> = late
            .iter()
            .zip(&starts)
            .map(|((room, _), start)| (*room, start.first_no))
            .collect();
        let mut old = old_rows(conn, dialect, &firsts).await?;
        for (((room, at), start), folded) in late.into_iter().zip(&starts).zip(late_places) {
            let ledger = refold(windows, room, start, policy);
            // Only what the late event changed is written: a long session's other stays stay
            // as they are.
            let rows = old.remove(&room).unwrap_or_default();
            write.push_diff(room, &ledger, rows, folded, (at, feed));
        }
    }
    write.write_apart(conn, dialect).await?;
    Ok(write)
}

/// Makes the ledger of a room that existed before the ledger did, from its whole history, in
/// the caller's transaction; `false` when it is made already (by a callback, or another
/// instance). The room's row is locked first, as a batch would lock it.
pub(super) async fn backfill(
    conn: &mut PgConnection,
    room: Room<'_>,
    policy: Policy,
) -> Result<bool, sqlx::Error> {
    let pending = sqlx::query_scalar!(
        r#"SELECT ledger_backfill FROM rooms WHERE sdk_app_id = $1 AND room_id = $2 FOR UPDATE"#,
        room.app,
        room.id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if pending != Some(true) {
        return Ok(false);
    }
    let mut windows = Windows::default();
    // One room: its routed form serves both forms of the database.
    windows
        .read(conn, Dialect::Citus, &[(room, Start::WHOLE.ledger_from)])
        .await?;
    let ledger = refold(&windows, room, &Start::WHOLE, policy);
    let mut write = LedgerWrite::default();
    write.push(room, Some(1), &ledger, None);
    // A refold (a cut room) is written row by row whatever the database's form.
    write.write_apart(conn, Dialect::Postgres).await?;
    fill_invitees(conn, room).await?;
    Ok(true)
}

/// Folds a room's ledger again from `start`, from the room's window read before.
fn refold(windows: &Windows<'_>, room: Room<'_>, start: &Start, policy: Policy) -> RoomLedger {
    let mut ledger = RoomLedger::empty(policy, start.first_no);
    ledger.fold(windows.events(room, start.ledger_from).cloned().collect());
    ledger
}

/// The invitees of a room's newest create that lists them, for a room created before the
/// ledger existed (a create that arrives later sets them itself, see `rooms.rs`).
async fn fill_invitees(conn: &mut PgConnection, room: Room<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE rooms r SET invitees = i.list, invitees_at = i.event_at
           FROM (SELECT event_at,
                        ARRAY(SELECT DISTINCT x FROM jsonb_array_elements_text(
                                  payload -> 'ScheduleInviteeList_Account') AS x
                              ORDER BY x) AS list
                 FROM room_events
                 WHERE sdk_app_id = $1 AND room_id = $2 AND callback_command = $3
                   AND jsonb_typeof(payload -> 'ScheduleInviteeList_Account') = 'array'
                 ORDER BY event_at DESC, id DESC LIMIT 1) i
           WHERE r.sdk_app_id = $1 AND r.room_id = $2 AND cardinality(i.list) > 0
             AND (r.invitees_at IS NULL OR r.invitees_at < i.event_at)"#,
        room.app,
        room.id,
        Command::CreateRoom.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The rooms whose ledger a batch of `callbacks` reads (a superset of what its new callbacks
/// need: the history statement reads it before it knows which are new).
pub(super) fn rooms_to_read<'a>(callbacks: &[&'a Callback]) -> LedgerRooms<'a> {
    LedgerRooms::of(&room_events(callbacks))
}

/// The batch's member events, per room.
fn room_events<'a>(callbacks: &[&'a Callback]) -> BTreeMap<Room<'a>, Vec<RoomEvent>> {
    let mut events: BTreeMap<Room<'a>, Vec<RoomEvent>> = BTreeMap::new();
    for callback in callbacks {
        let (Some(room), Some(event)) = (room_of(callback), member_event_of(callback)) else {
            continue;
        };
        let users = match (&callback.event, callback.member_change()) {
            (Event::DestroyRoom, _) | (_, None) => Vec::new(),
            (_, Some(change)) => change
                .distinct_members()
                .into_iter()
                .map(|m| m.as_str().to_owned())
                .collect(),
        };
        events
            .entry(room)
            .or_default()
            .push(RoomEvent { event, users });
    }
    events
}
