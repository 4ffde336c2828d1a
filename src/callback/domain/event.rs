//! What a callback does: an [`Event`], with its member change, room info or seat list.

use serde_json::{Map, Value};

use super::ids::Id;

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
