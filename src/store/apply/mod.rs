//! One callback's effects, inside the caller's transaction.
//!
//! Every callback with a room first locks that room's `rooms` row; so all writes for one room
//! are serialized, whichever process makes them, and batches that lock rooms in sorted order
//! cannot deadlock. Member rows are updated incrementally when an event is the newest for the
//! member (the common case); otherwise the member is recomputed from the room's history with
//! the sequential fold of [`super::membership`].
//!
//! Laid out along its seams: [`lock`] (the rooms' rows), [`members`] (enters and leaves, the
//! live path), [`replay`] (the same effects for `roomsync rebuild`), [`destroy`],
//! [`recompute`] (late events), [`rooms`] (history rows and room info), [`seats`], and
//! [`notify`] (`NOTIFY room_members`).

mod destroy;
mod lock;
mod members;
mod notify;
mod recompute;
mod replay;
mod rooms;
mod seats;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use sqlx::PgConnection;

use super::membership::{self, MemberEvent, MemberState, RANK_ENTER, RANK_LEAVE};
use crate::callback::{Callback, Command, Event, MemberChange, Product, RoomInfo, Seat};
use crate::callback::{RECONCILE_COMMAND, RECONCILED, ROOM_DESTROYED};

use destroy::*;
use lock::*;
use members::*;
use notify::*;
use recompute::*;
use replay::*;
use rooms::*;
use seats::*;

const ENTER: &str = "Room.CallbackAfterMemberEnter";
const LEAVE: &str = "Room.CallbackAfterMemberLeave";
const DESTROY: &str = "Room.CallbackAfterDestroyRoom";
/// Live member events: `event_type` `Online` (an enter) or `Offline` (a leave whose
/// `leave_type` is the `EventCause`, kept in `reason`).
const LIVE_MEMBER: &str = "Live.CallbackAfterMemberStateChanged";
const LIVE_DESTROY: &str = "Live.CallbackAfterDestroyRoom";
/// Corrections: `event_type` `Enter`, `Leave` or `Destroy` act as those events.
const RECONCILE: &str = RECONCILE_COMMAND;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// First delivery: the new `room_events.id`.
    Stored { id: i64 },
    /// Identical to a callback already stored: nothing changed.
    Duplicate,
}

#[derive(Clone, Copy)]
struct Room<'a> {
    app: i64,
    id: &'a str,
}

/// Stores a batch of callbacks in history and applies their effects, each exactly once. One
/// statement locks every room of the batch, in one global order (so concurrent batches, from
/// any process, cannot deadlock); enters and leaves then take one statement each.
pub async fn apply_batch(
    conn: &mut PgConnection,
    callbacks: &[&Callback],
) -> Result<Vec<Outcome>, sqlx::Error> {
    let last_destroys = lock_rooms(conn, callbacks).await?;
    let mut outcomes = Vec::with_capacity(callbacks.len());
    for callback in callbacks {
        let at = callback.event_time.to_datetime();
        // Commands without a room, and commands roomsync does not know, touch only history.
        let Some(room_id) = callback
            .room_id
            .as_ref()
            .filter(|_| callback.event.changes_state())
        else {
            let id = insert_event(conn, callback, at).await?;
            outcomes.push(id.map_or(Outcome::Duplicate, |id| Outcome::Stored { id }));
            continue;
        };
        let room = Room {
            app: callback.sdk_app_id.get(),
            id: room_id.as_str(),
        };
        let last_destroy_at = last_destroys.get(&(room.app, room.id)).copied().flatten();
        let outcome = match &callback.event {
            Event::MemberEnter(change) => {
                member_event(conn, callback, room, change, Some(last_destroy_at)).await?
            }
            Event::MemberLeave(change) => member_event(conn, callback, room, change, None).await?,
            _ => match insert_event(conn, callback, at).await? {
                None => Outcome::Duplicate,
                Some(id) => {
                    apply_effects(conn, callback, room, last_destroy_at, Notify::Yes).await?;
                    Outcome::Stored { id }
                }
            },
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Applies a stored callback's effects again, without history or notifications (rebuild).
pub async fn replay_callback(
    conn: &mut PgConnection,
    callback: &Callback,
) -> Result<(), sqlx::Error> {
    let Some(id) = callback
        .room_id
        .as_ref()
        .filter(|_| callback.event.changes_state())
    else {
        return Ok(());
    };
    let room = Room {
        app: callback.sdk_app_id.get(),
        id: id.as_str(),
    };
    let at = callback.event_time.to_datetime();
    let last_destroy_at = lock_room(conn, room, at, &callback.event).await?;
    if callback.command.product() == Some(Product::Live) {
        mark_live(conn, &[(room.app, room.id)]).await?;
    }
    apply_effects(conn, callback, room, last_destroy_at, Notify::No).await
}

/// Whether membership changes are announced with NOTIFY.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Notify {
    Yes,
    No,
}

async fn apply_effects(
    conn: &mut PgConnection,
    callback: &Callback,
    room: Room<'_>,
    last_destroy_at: Option<DateTime<Utc>>,
    notify: Notify,
) -> Result<(), sqlx::Error> {
    let at = callback.event_time.to_datetime();
    match &callback.event {
        Event::MemberEnter(change) => {
            set_member_count(conn, room, at, RANK_ENTER, change).await?;
            enter(conn, room, at, change, last_destroy_at, notify).await?;
        }
        Event::MemberLeave(change) => {
            set_member_count(conn, room, at, RANK_LEAVE, change).await?;
            leave(conn, room, at, change, callback.exit_type(), notify).await?;
        }
        Event::DestroyRoom => {
            let exit = callback.exit_type().unwrap_or(ROOM_DESTROYED);
            destroy(conn, room, at, exit, notify).await?
        }
        Event::CreateRoom { info, .. } => merge_room_info(conn, room, at, info, true).await?,
        Event::UpdateRoomInfo { info } => merge_room_info(conn, room, at, info, false).await?,
        Event::SeatInfoChanged { seats } => {
            // A destroy at or after this change has already cleared the seats.
            if last_destroy_at.is_none_or(|d| d < at) {
                change_seats(conn, room, at, seats).await?;
                // A correction is Tencent's whole list: seats it does not list are gone.
                if callback.command == Command::Reconcile {
                    remove_unlisted_seats(conn, room, at, seats).await?;
                }
            }
        }
        Event::Other => {}
    }
    Ok(())
}
