//! The parts of the commands' bodies, each into its domain type: event times (also inside
//! `RoomInfo`), member changes, a room info, a seat list.

use serde_json::{Map, Value};

use super::object::{Object, too_many};
use crate::callback::{
    Event, EventTime, Id, MemberChange, RoomInfo, Seat, event_types,
    limits::{MAX_LIST_ENTRIES, MAX_REASON_BYTES, MAX_TYPE_BYTES},
    rejection::Rejection,
};

/// Which way a member event goes.
#[derive(Clone, Copy)]
pub(super) enum Direction {
    Enter,
    Leave,
}

// Methods of `Object`, as its field readers are, so that a command reads its parts as
// `body.room_info()`, `body.seats()`.
impl Object<'_> {
    pub(super) fn opt_event_time(&self) -> Result<Option<EventTime>, Rejection> {
        let Some(ms) = self.opt_integer("EventTime", 1, i64::MAX)? else {
            return Ok(None);
        };
        EventTime::from_millis(ms).map(Some).ok_or_else(|| {
            Rejection::bounds(
                &self.path_of("EventTime"),
                "is not a valid time in milliseconds",
            )
        })
    }

    /// `EventTime` inside `RoomInfo` (Live create and update).
    pub(super) fn room_info_event_time(&self) -> Result<Option<EventTime>, Rejection> {
        match self.get("RoomInfo") {
            Some(Value::Object(map)) => Object {
                map,
                path: "RoomInfo".into(),
            }
            .opt_event_time(),
            _ => Ok(None),
        }
    }

    /// `RoomInfo.CreateTime` (seconds) as an EventTime in milliseconds (a Live create).
    pub(super) fn room_info_create_time(&self) -> Result<Option<EventTime>, Rejection> {
        let Some(Value::Object(map)) = self.get("RoomInfo") else {
            return Ok(None);
        };
        let info = Object {
            map,
            path: "RoomInfo".into(),
        };
        // 0 is no time at all: refused as a missing EventTime.
        let Some(secs) = info
            .opt_integer("CreateTime", 0, i64::MAX)?
            .filter(|s| *s > 0)
        else {
            return Ok(None);
        };
        secs.checked_mul(1000)
            .and_then(EventTime::from_millis)
            .map(Some)
            .ok_or_else(|| {
                Rejection::bounds(
                    &info.path_of("CreateTime"),
                    "is not a valid time in seconds",
                )
            })
    }

    /// `Live.CallbackAfterMemberStateChanged`: `Online` is an enter, `Offline` a leave whose
    /// `leave_type` is the `EventCause` (an unknown cause is kept as sent).
    pub(super) fn member_state(&self) -> Result<Event, Rejection> {
        let direction = match self.opt_text("EventType")?.as_deref() {
            Some(event_types::ONLINE) => Direction::Enter,
            Some(event_types::OFFLINE) => Direction::Leave,
            Some(other) => {
                return Err(Rejection::bounds(
                    "EventType",
                    &format!("{other:?} is neither Online nor Offline"),
                ));
            }
            None => return Err(Rejection::missing("EventType")),
        };
        let cause = match self.opt_short_text("EventCause", MAX_TYPE_BYTES)? {
            Some(cause) if !cause.is_empty() => cause,
            Some(_) => return Err(Rejection::bounds("EventCause", "must not be empty")),
            None => return Err(Rejection::missing("EventCause")),
        };
        let change = MemberChange {
            members: self.member_objects("MemberList")?,
            member_count: self
                .opt_integer("MemberCount", 0, i32::MAX.into())?
                .map(|n| n as i32),
            kind: Some(cause),
            reason: None,
        };
        Ok(match direction {
            Direction::Enter => Event::MemberEnter(change),
            Direction::Leave => Event::MemberLeave(change),
        })
    }

    /// A non-empty list of `{"Member_Account": …}` objects (an account may be a bare number).
    fn member_objects(&self, key: &str) -> Result<Vec<Id>, Rejection> {
        let items = match self.get(key) {
            None => return Err(Rejection::missing(key)),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(Rejection::wrong_type(key, "an array of objects")),
        };
        if items.is_empty() {
            return Err(Rejection::bounds(key, "must not be empty"));
        }
        if items.len() > MAX_LIST_ENTRIES {
            return Err(too_many(key));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let path = format!("{key}[{i}]");
                let Value::Object(map) = item else {
                    return Err(Rejection::wrong_type(&path, "an object"));
                };
                Object { map, path }.id("Member_Account")
            })
            .collect()
    }

    pub(super) fn change(&self, direction: Direction) -> Result<MemberChange, Rejection> {
        if self.get("MemberList_Account").is_none() {
            return Err(Rejection::missing("MemberList_Account"));
        }
        Ok(MemberChange {
            members: self.opt_id_list("MemberList_Account")?,
            member_count: self
                .opt_integer("MemberCount", 0, i32::MAX.into())?
                .map(|n| n as i32),
            kind: self.opt_short_text("Type", MAX_TYPE_BYTES)?,
            // Only a leave has a Reason.
            reason: match direction {
                Direction::Leave => self.opt_short_text("Reason", MAX_REASON_BYTES)?,
                Direction::Enter => None,
            },
        })
    }

    pub(super) fn room_info(&self) -> Result<(Id, RoomInfo), Rejection> {
        let map = match self.get("RoomInfo") {
            None => return Err(Rejection::missing("RoomInfo")),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(Rejection::wrong_type("RoomInfo", "an object")),
        };
        let info = Object {
            map,
            path: "RoomInfo".into(),
        };
        let room = info.id("RoomId")?;
        let mut fields = map.clone();
        for key in [
            "RoomName",
            "RoomType",
            "CustomInfo",
            "RoomStatus",
            "TakeSeatMode",
        ] {
            info.opt_text(key)?;
        }
        info.opt_id("Owner_Account")?;
        for key in ["MaxMemberCount", "MaxSeatCount"] {
            info.opt_integer(key, 0, i32::MAX.into())?;
        }
        for key in ["ScheduleStartTime", "ScheduleEndTime", "CreateTime"] {
            info.opt_integer(key, 0, i64::MAX)?;
        }
        for key in [
            "IsVideoDisabled",
            "IsAudioDisabled",
            "IsMessageDisabled",
            "IsScreenSharingDisabled",
            "IsCloudRecordingDisabled",
            "IsSeatEnabled",
            "IsPublicVisible",
        ] {
            if let Some(b) = info.opt_bool(key)? {
                fields.insert(key.to_owned(), Value::Bool(b));
            }
        }
        Ok((room, RoomInfo { fields }))
    }

    pub(super) fn seats(&self) -> Result<Vec<Seat>, Rejection> {
        let items = match self.get("SeatList") {
            None => return Err(Rejection::missing("SeatList")),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(Rejection::wrong_type("SeatList", "an array of objects")),
        };
        if items.len() > MAX_LIST_ENTRIES {
            return Err(too_many("SeatList"));
        }
        let mut seats: Vec<Seat> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = format!("SeatList[{i}]");
            let Value::Object(map) = item else {
                return Err(Rejection::wrong_type(&path, "an object"));
            };
            let seat = Object { map, path };
            let index = seat
                .opt_integer("Index", 0, i32::MAX.into())?
                .ok_or_else(|| Rejection::missing(&seat.path_of("Index")))?;
            // Empty or absent means the seat is free.
            let member = match seat.get("Member_Account") {
                Some(Value::String(s)) if s.is_empty() => None,
                _ => seat.opt_id("Member_Account")?,
            };
            let flag = |key| seat.opt_bool(key).map(Option::unwrap_or_default);
            let parsed = Seat {
                index: index as i32,
                member,
                is_taken_disabled: flag("IsTakenDisabled")?,
                is_video_disabled: flag("IsVideoDisabled")?,
                is_audio_disabled: flag("IsAudioDisabled")?,
            };
            // A seat listed twice: the later entry describes it.
            seats.retain(|s| s.index != parsed.index);
            seats.push(parsed);
        }
        Ok(seats)
    }
}

/// The seats of a `SeatList` in `map` (a seat callback, or Tencent's `get_seat_list` answer):
/// one parser for both, so they tolerate the same quirks.
pub fn seat_list_of(map: &Map<String, Value>) -> Result<Vec<Seat>, Rejection> {
    Object {
        map,
        path: String::new(),
    }
    .seats()
}
