//! The commands: Tencent's names for them, old and new, the product each is about, and the
//! names roomsync itself writes into the history (its corrections' command and kinds).

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

#[cfg(test)]
mod tests {
    use super::Command;

    #[test]
    fn every_handled_command_is_known_under_its_canonical_name() {
        for name in Command::HANDLED {
            let command = Command::parse(name);
            assert!(!matches!(command, Command::Other(_)), "{name}");
            assert_eq!(command.as_str(), name);
        }
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
