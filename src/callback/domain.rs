//! Validated callback types. Constructors are the only way in, so a value of these types is
//! always within the bounds of docs/protocol.md#bounds.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// An SDKAppID: a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SdkAppId(i64);

impl SdkAppId {
    /// Plain decimal digits, as Tencent writes it: no sign, no leading zero, no spaces
    /// (`i64`'s own parser would take `+1400000001` as that app).
    pub fn parse(raw: &str) -> Option<Self> {
        let plain = raw.bytes().all(|b| b.is_ascii_digit()) && !raw.starts_with('0');
        plain
            .then(|| raw.parse::<i64>().ok())
            .flatten()
            .and_then(Self::from_i64)
    }
    /// From a stored value (the journal, the history).
    pub fn from_i64(id: i64) -> Option<Self> {
        (id > 0).then_some(Self(id))
    }
    pub fn get(self) -> i64 {
        self.0
    }
}

/// A room or user id: 1..=256 bytes, no NUL character.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    pub const MAX_BYTES: usize = 256;

    pub fn parse(raw: &str) -> Result<Self, IdError> {
        if raw.is_empty() {
            Err(IdError::Empty)
        } else if raw.len() > Self::MAX_BYTES {
            Err(IdError::TooLong)
        } else if raw.contains('\0') {
            Err(IdError::Nul)
        } else {
            Ok(Self(raw.to_owned()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a text is not an [`Id`]; the message completes "<field> ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("is longer than {} bytes", Id::MAX_BYTES)]
    TooLong,
    #[error("contains a NUL character")]
    Nul,
}

/// `EventTime`: milliseconds since the Unix epoch, positive, a valid timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(i64);

impl EventTime {
    pub fn from_millis(ms: i64) -> Option<Self> {
        (ms > 0 && DateTime::<Utc>::from_timestamp_millis(ms).is_some()).then_some(Self(ms))
    }
    pub fn millis(self) -> i64 {
        self.0
    }
    pub fn to_datetime(self) -> DateTime<Utc> {
        // The constructor checked the range.
        DateTime::<Utc>::from_timestamp_millis(self.0).expect("EventTime checked at parse")
    }
}

/// The commands roomsync knows (six of TUIRoomKit, four of TUILiveKit); anything else is kept
/// as sent. [`Command::Reconcile`] is roomsync's
/// own: a drift-repair correction, never accepted from the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command {
    MemberEnter,
    MemberLeave,
    CreateRoom,
    DestroyRoom,
    UpdateRoomInfo,
    SeatInfoChanged,
    /// TUILiveKit (docs/live.md): the same view for live rooms.
    LiveCreateRoom,
    LiveDestroyRoom,
    LiveUpdateRoomInfo,
    LiveMemberStateChanged,
    Reconcile,
    Other(String),
}

/// Which Tencent product a room belongs to (`rooms.product`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Product {
    Room,
    Live,
}

impl Product {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Room => "Room",
            Self::Live => "Live",
        }
    }
}

/// `room_events.callback_command` of a correction (docs/drift-repair.md).
pub const RECONCILE_COMMAND: &str = "roomsync.Reconcile";
/// Commands under this prefix are roomsync's own; a callback may not use them.
pub const RESERVED_PREFIX: &str = "roomsync.";
/// `leave_type` of a membership ended by a destroy, and by a correction.
pub const ROOM_DESTROYED: &str = "RoomDestroyed";
pub const RECONCILED: &str = "Reconciled";

/// `room_events.event_type` of what is not a Room member event's own `Type`: a Live member
/// event's direction, and a correction's kind.
pub mod event_types {
    pub const ONLINE: &str = "Online";
    pub const OFFLINE: &str = "Offline";
    pub const ENTER: &str = "Enter";
    pub const LEAVE: &str = "Leave";
    pub const DESTROY: &str = "Destroy";
    pub const SEATS: &str = "Seats";
}

impl Command {
    /// The canonical names of every command roomsync handles (the console's setup check; #33's
    /// `tencent check`).
    pub const HANDLED: [&'static str; 10] = [
        "Room.CallbackAfterCreateRoom",
        "Room.CallbackAfterDestroyRoom",
        "Room.CallbackAfterUpdateRoomInfo",
        "Room.CallbackAfterMemberEnter",
        "Room.CallbackAfterMemberLeave",
        "Mic.CallbackAfterSeatInfoChanged",
        "Live.CallbackAfterCreateRoom",
        "Live.CallbackAfterDestroyRoom",
        "Live.CallbackAfterUpdateRoomInfo",
        "Live.CallbackAfterMemberStateChanged",
    ];

    pub fn parse(raw: &str) -> Self {
        match raw {
            "Room.CallbackAfterMemberEnter" => Self::MemberEnter,
            "Room.CallbackAfterMemberLeave" => Self::MemberLeave,
            "Room.CallbackAfterCreateRoom" => Self::CreateRoom,
            "Room.CallbackAfterDestroyRoom" => Self::DestroyRoom,
            // The older name is the same event (docs/protocol.md#commands-and-bodies).
            "Room.CallbackAfterUpdateRoomInfo" | "Room.CallbackUpdateRoomInfo" => {
                Self::UpdateRoomInfo
            }
            "Mic.CallbackAfterSeatInfoChanged" => Self::SeatInfoChanged,
            "Live.CallbackAfterCreateRoom" => Self::LiveCreateRoom,
            "Live.CallbackAfterDestroyRoom" => Self::LiveDestroyRoom,
            "Live.CallbackAfterUpdateRoomInfo" => Self::LiveUpdateRoomInfo,
            // Tencent's own documents use both names for one command.
            "Live.CallbackAfterMemberStateChanged" | "Live.CallbackMemberStateChanged" => {
                Self::LiveMemberStateChanged
            }
            // A correction is made by roomsync, never parsed from a callback.
            other => Self::Other(other.to_owned()),
        }
    }

    /// The command of a stored history row: as [`Command::parse`], and roomsync's own
    /// corrections too.
    pub fn from_history(name: &str) -> Self {
        if name == RECONCILE_COMMAND {
            Self::Reconcile
        } else {
            Self::parse(name)
        }
    }

    /// The canonical name, stored in `room_events.callback_command`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::MemberEnter => "Room.CallbackAfterMemberEnter",
            Self::MemberLeave => "Room.CallbackAfterMemberLeave",
            Self::CreateRoom => "Room.CallbackAfterCreateRoom",
            Self::DestroyRoom => "Room.CallbackAfterDestroyRoom",
            Self::UpdateRoomInfo => "Room.CallbackAfterUpdateRoomInfo",
            Self::SeatInfoChanged => "Mic.CallbackAfterSeatInfoChanged",
            Self::LiveCreateRoom => "Live.CallbackAfterCreateRoom",
            Self::LiveDestroyRoom => "Live.CallbackAfterDestroyRoom",
            Self::LiveUpdateRoomInfo => "Live.CallbackAfterUpdateRoomInfo",
            Self::LiveMemberStateChanged => "Live.CallbackAfterMemberStateChanged",
            Self::Reconcile => RECONCILE_COMMAND,
            Self::Other(name) => name,
        }
    }

    /// The product whose rooms this command is about; `None` when it does not say (seat
    /// changes come from both, corrections and unknown commands from neither).
    pub fn product(&self) -> Option<Product> {
        match self {
            Self::MemberEnter
            | Self::MemberLeave
            | Self::CreateRoom
            | Self::DestroyRoom
            | Self::UpdateRoomInfo => Some(Product::Room),
            Self::LiveCreateRoom
            | Self::LiveDestroyRoom
            | Self::LiveUpdateRoomInfo
            | Self::LiveMemberStateChanged => Some(Product::Live),
            Self::SeatInfoChanged | Self::Reconcile | Self::Other(_) => None,
        }
    }

    /// A bounded label for metrics: unknown commands share one.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MemberEnter => "member_enter",
            Self::MemberLeave => "member_leave",
            Self::CreateRoom => "create_room",
            Self::DestroyRoom => "destroy_room",
            Self::UpdateRoomInfo => "update_room_info",
            Self::SeatInfoChanged => "seat_info_changed",
            Self::LiveCreateRoom => "live_create_room",
            Self::LiveDestroyRoom => "live_destroy_room",
            Self::LiveUpdateRoomInfo => "live_update_room_info",
            Self::LiveMemberStateChanged => "live_member_state_changed",
            Self::Reconcile => "reconcile",
            Self::Other(_) => "other",
        }
    }
}

/// Enter or leave of some members.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberChange {
    /// As listed in the callback (the history keeps the list as sent).
    pub members: Vec<Id>,
    pub member_count: Option<i32>,
    /// `Type`, as sent.
    pub kind: Option<String>,
    /// `Reason` (leave only).
    pub reason: Option<String>,
}

impl MemberChange {
    /// The distinct members, sorted: the order in which rows are written and locked.
    pub fn distinct_members(&self) -> Vec<&Id> {
        let mut members: Vec<&Id> = self.members.iter().collect();
        members.sort();
        members.dedup();
        members
    }
}

/// A `RoomInfo` object: known fields type-checked (booleans sent as strings become booleans),
/// unknown fields kept.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomInfo {
    pub fields: Map<String, Value>,
}

impl RoomInfo {
    pub fn text(&self, field: &str) -> Option<&str> {
        self.fields.get(field).and_then(Value::as_str)
    }
    pub fn integer(&self, field: &str) -> Option<i64> {
        self.fields.get(field).and_then(Value::as_i64)
    }
}

/// One entry of a `SeatList`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub index: i32,
    /// `None` when the seat is free.
    pub member: Option<Id>,
    pub is_taken_disabled: bool,
    pub is_video_disabled: bool,
    pub is_audio_disabled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    MemberEnter(MemberChange),
    MemberLeave(MemberChange),
    CreateRoom {
        info: RoomInfo,
        /// `ScheduleInviteeList_Account` (Room scheduled conferences), distinct and sorted;
        /// `None` when the command has no such list (Live). Kept in `rooms.invitees`.
        invitees: Option<Vec<Id>>,
    },
    DestroyRoom,
    UpdateRoomInfo {
        info: RoomInfo,
    },
    SeatInfoChanged {
        seats: Vec<Seat>,
    },
    Other,
}

impl Event {
    /// The members of an enter or a leave.
    pub fn member_change(&self) -> Option<&MemberChange> {
        match self {
            Self::MemberEnter(change) | Self::MemberLeave(change) => Some(change),
            _ => None,
        }
    }

    /// Whether the event changes the view; unknown commands are history only.
    pub fn changes_state(&self) -> bool {
        !matches!(self, Self::Other)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handled_command_is_known_under_its_canonical_name() {
        for name in Command::HANDLED {
            let command = Command::parse(name);
            assert!(!matches!(command, Command::Other(_)), "{name}");
            assert_eq!(command.as_str(), name);
        }
    }

    #[test]
    fn id_bounds() {
        assert!(Id::parse("").is_err());
        assert!(Id::parse(&"a".repeat(256)).is_ok());
        assert!(Id::parse(&"a".repeat(257)).is_err());
        // 256 bytes, not characters: 86 three-byte characters are 258 bytes.
        assert!(Id::parse(&"中".repeat(86)).is_err());
        assert!(Id::parse("a\0b").is_err());
    }

    #[test]
    fn sdk_app_id_is_plain_digits() {
        assert_eq!(
            SdkAppId::parse("1400000001").map(SdkAppId::get),
            Some(1_400_000_001)
        );
        for bad in [
            "",
            "+1400000001",
            "-1",
            "01400000001",
            "0",
            " 1400000001",
            "1400000001 ",
            "1_4",
            "99999999999999999999",
        ] {
            assert_eq!(SdkAppId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn event_time_bounds() {
        assert!(EventTime::from_millis(0).is_none());
        assert!(EventTime::from_millis(-5).is_none());
        assert!(EventTime::from_millis(i64::MAX).is_none());
        let t = EventTime::from_millis(1_670_574_414_123).unwrap();
        assert_eq!(
            t.to_datetime().to_rfc3339(),
            "2022-12-09T08:26:54.123+00:00"
        );
    }

    #[test]
    fn old_update_name_is_the_same_command() {
        assert_eq!(
            Command::parse("Room.CallbackUpdateRoomInfo"),
            Command::UpdateRoomInfo
        );
        assert_eq!(
            Command::UpdateRoomInfo.as_str(),
            "Room.CallbackAfterUpdateRoomInfo"
        );
        assert_eq!(Command::parse("Room.New").as_str(), "Room.New");
    }
}
