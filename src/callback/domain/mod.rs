//! Validated callback types. Constructors are the only way in, so a value of these types is
//! always within the bounds of docs/protocol.md#bounds.
//!
//! This file holds the [`Callback`] itself and its parts before the dedup key; the values it
//! is made of are in `ids` (ids and times), `command` (the commands and the names roomsync
//! stores) and `event` (what a callback does).

mod command;
mod event;
mod ids;

use serde_json::Value;

pub use command::{
    Command, Product, RECONCILE_COMMAND, RECONCILED, RESERVED_PREFIX, ROOM_DESTROYED, event_types,
};
pub use event::{Event, MemberChange, RoomInfo, Seat};
pub use ids::{EventTime, Id, IdError, SdkAppId};

/// Informational query parameters, stored as they came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub client_ip: Option<String>,
    pub opt_platform: Option<String>,
}

/// A callback that passed every check: what the store writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    pub sdk_app_id: SdkAppId,
    pub command: Command,
    pub room_id: Option<Id>,
    pub operator: Option<String>,
    pub event_time: EventTime,
    pub event: Event,
    pub meta: Meta,
    /// The body exactly as received (valid JSON without NUL characters).
    pub payload: String,
    /// See [`CallbackParts`]'s dedup key. Private to `callback/`: made once from the parsed
    /// content, never set from outside.
    pub(super) dedup_key: [u8; 32],
    /// The key an older version gave this callback, when it differs from `dedup_key`: a
    /// redelivery of a callback stored under it is still a duplicate
    /// (docs/semantics.md#exactly-once).
    pub(super) legacy_key: Option<[u8; 32]>,
}

impl Callback {
    /// What makes two deliveries the same callback (docs/semantics.md#exactly-once).
    pub fn dedup_key(&self) -> &[u8; 32] {
        &self.dedup_key
    }

    /// The key an older version gave this callback, when it differs.
    pub fn legacy_key(&self) -> Option<&[u8; 32]> {
        self.legacy_key.as_ref()
    }

    /// The room whose view this callback changes, as (app, room id): the room a write locks,
    /// the writer's group on plain PostgreSQL, and the lock order. `None` for history-only
    /// callbacks (no room, or a command roomsync does not know).
    pub fn locked_room(&self) -> Option<(i64, &str)> {
        let room = self
            .room_id
            .as_ref()
            .filter(|_| self.event.changes_state())?;
        Some((self.sdk_app_id.get(), room.as_str()))
    }

    /// A drift-repair correction observed at `at`: `event` is an enter, a leave, a destroy or
    /// a seat list; `payload` is the REST answer it came from.
    pub fn correction(
        sdk_app_id: SdkAppId,
        room_id: Id,
        at: EventTime,
        event: Event,
        payload: &Value,
    ) -> Self {
        Self::new(CallbackParts {
            sdk_app_id,
            command: Command::Reconcile,
            room_id: Some(room_id),
            operator: None,
            event_time: at,
            event_time_was_sent: true,
            event,
            meta: Meta::default(),
            payload: payload.to_string(),
        })
    }

    /// The callback of these parts, with its dedup key.
    pub fn new(parts: CallbackParts) -> Self {
        let (dedup_key, legacy_key) = parts.dedup_keys();
        let CallbackParts {
            sdk_app_id,
            command,
            room_id,
            operator,
            event_time,
            event,
            meta,
            payload,
            ..
        } = parts;
        Self {
            sdk_app_id,
            command,
            room_id,
            operator,
            event_time,
            event,
            meta,
            payload,
            dedup_key,
            legacy_key,
        }
    }

    /// `room_events.event_type`: a member event's `Type`; a correction's kind (`Enter`,
    /// `Leave`, `Destroy`, `Seats`).
    pub fn event_type(&self) -> Option<&str> {
        event_type(&self.command, &self.event)
    }

    /// `room_events.reason`: a leave's `Reason`; a Live member event's `EventCause`.
    pub fn history_reason(&self) -> Option<&str> {
        history_reason(&self.command, &self.event)
    }

    /// The `leave_type` a membership gets when this event ends it.
    pub fn exit_type(&self) -> Option<&str> {
        match (&self.command, &self.event) {
            (Command::Reconcile, Event::MemberLeave(_) | Event::DestroyRoom) => Some(RECONCILED),
            (_, Event::MemberLeave(change)) => change.kind.as_deref(),
            (_, Event::DestroyRoom) => Some(ROOM_DESTROYED),
            _ => None,
        }
    }

    pub fn member_change(&self) -> Option<&MemberChange> {
        self.event.member_change()
    }
}

/// A callback before its dedup key: what the parser and the reconciler fill in, for
/// [`Callback::new`].
pub struct CallbackParts {
    pub sdk_app_id: SdkAppId,
    pub command: Command,
    pub room_id: Option<Id>,
    pub operator: Option<String>,
    pub event_time: EventTime,
    /// False for an unknown command without `EventTime` (the arrival time stands in).
    pub event_time_was_sent: bool,
    pub event: Event,
    pub meta: Meta,
    pub payload: String,
}

/// `room_events.reason` (see [`Callback::history_reason`]).
pub(super) fn history_reason<'a>(command: &Command, event: &'a Event) -> Option<&'a str> {
    let change = event.member_change()?;
    if *command == Command::LiveMemberStateChanged {
        change.kind.as_deref()
    } else {
        change.reason.as_deref()
    }
}

/// `room_events.event_type` (see [`Callback::event_type`]).
pub(super) fn event_type<'a>(command: &Command, event: &'a Event) -> Option<&'a str> {
    if *command == Command::LiveMemberStateChanged {
        return Some(match event {
            Event::MemberLeave(_) => event_types::OFFLINE,
            _ => event_types::ONLINE,
        });
    }
    if *command == Command::Reconcile {
        return Some(match event {
            Event::MemberEnter(_) => event_types::ENTER,
            Event::MemberLeave(_) => event_types::LEAVE,
            Event::DestroyRoom => event_types::DESTROY,
            _ => event_types::SEATS,
        });
    }
    event.member_change().and_then(|c| c.kind.as_deref())
}
