//! Body parsing: JSON -> [`Callback`], with an error that names the field (SPEC §1.3, §3).

use serde_json::{Map, Value};

use super::{
    Callback, CallbackQuery, Command, Event, EventTime, Id, MemberChange, RoomInfo, SdkAppId, Seat,
};

/// Most entries any list may hold (SPEC §3).
pub const MAX_LIST_ENTRIES: usize = 10_000;

/// Why a body was refused: the kind fixes the ErrorCode, `info` names the field or problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{info}")]
pub struct Rejection {
    pub kind: RejectionKind,
    pub info: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    NotJson,
    MissingField,
    WrongType,
    OutOfBounds,
    NulCharacter,
    CommandMismatch,
    MissingCommand,
}

impl Rejection {
    fn new(kind: RejectionKind, info: impl Into<String>) -> Self {
        Self {
            kind,
            info: info.into(),
        }
    }
    fn missing(path: &str) -> Self {
        Self::new(RejectionKind::MissingField, format!("{path} is required"))
    }
    fn wrong_type(path: &str, expected: &str) -> Self {
        Self::new(
            RejectionKind::WrongType,
            format!("{path} must be {expected}"),
        )
    }
    fn bounds(path: &str, problem: &str) -> Self {
        Self::new(RejectionKind::OutOfBounds, format!("{path} {problem}"))
    }
}

/// Parses a body that passed the app-id and signature checks.
pub fn parse_body(
    body: &[u8],
    query: &CallbackQuery,
    sdk_app_id: SdkAppId,
) -> Result<Callback, Rejection> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Rejection::new(RejectionKind::NotJson, "body is not UTF-8 text"))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Rejection::new(RejectionKind::NotJson, format!("body is not JSON: {e}")))?;
    for (name, text) in [
        ("CallbackCommand", query.command.as_deref()),
        ("ClientIP", query.client_ip.as_deref()),
        ("OptPlatform", query.opt_platform.as_deref()),
    ] {
        if text.is_some_and(|t| t.contains('\0')) {
            let info = format!("{name} in the query contains a NUL character");
            return Err(Rejection::new(RejectionKind::NulCharacter, info));
        }
    }
    let Value::Object(map) = &value else {
        return Err(Rejection::wrong_type("body", "a JSON object"));
    };
    // PostgreSQL text and jsonb cannot hold NUL: refuse it anywhere, not only in ids.
    reject_nul(&value, "body")?;
    let body = Object {
        map,
        path: String::new(),
    };

    let body_command = body.opt_text("CallbackCommand")?;
    let command = match (query.command.as_deref(), body_command.as_deref()) {
        (Some(q), Some(b)) if q != b => {
            return Err(Rejection::new(
                RejectionKind::CommandMismatch,
                format!("CallbackCommand differs: {q:?} in the query, {b:?} in the body"),
            ));
        }
        (Some(name), _) | (None, Some(name)) if !name.is_empty() => Command::parse(name),
        _ => {
            return Err(Rejection::new(
                RejectionKind::MissingCommand,
                "CallbackCommand is required in the query or the body",
            ));
        }
    };

    let event_time = match (body.opt_event_time()?, &command) {
        (Some(t), _) => Some(t),
        (None, Command::Other(_)) => None,
        (None, _) => return Err(Rejection::missing("EventTime")),
    };
    let operator = body.opt_text("Operator_Account")?.filter(|s| !s.is_empty());

    let (room_id, event) = match &command {
        Command::MemberEnter => (
            Some(body.id("RoomId")?),
            Event::MemberEnter(body.change(false)?),
        ),
        Command::MemberLeave => (
            Some(body.id("RoomId")?),
            Event::MemberLeave(body.change(true)?),
        ),
        Command::DestroyRoom => (Some(body.id("RoomId")?), Event::DestroyRoom),
        Command::CreateRoom => {
            let (room, info) = body.room_info()?;
            let invitees = body.opt_id_list("ScheduleInviteeList_Account")?;
            (Some(room), Event::CreateRoom { info, invitees })
        }
        Command::UpdateRoomInfo => {
            let (room, info) = body.room_info()?;
            (Some(room), Event::UpdateRoomInfo { info })
        }
        Command::SeatInfoChanged => (
            Some(body.id("RoomId")?),
            Event::SeatInfoChanged {
                seats: body.seats()?,
            },
        ),
        Command::Other(_) => (body.opt_id("RoomId")?, Event::Other),
    };

    let payload = text.to_owned();
    let sent_time = event_time.is_some();
    // Unknown commands without EventTime: the arrival time stands in, and the dedup key
    // covers the whole body instead.
    let event_time = event_time.unwrap_or_else(|| {
        EventTime::from_millis(chrono::Utc::now().timestamp_millis()).expect("clock after 1970")
    });
    let mut callback = Callback {
        sdk_app_id,
        command,
        room_id,
        operator,
        event_time,
        event,
        meta: query.meta(),
        payload,
        dedup_key: [0; 32],
    };
    callback.dedup_key = callback.compute_dedup_key(sent_time);
    Ok(callback)
}

fn reject_nul(value: &Value, path: &str) -> Result<(), Rejection> {
    let nul = |p: &str| {
        Rejection::new(
            RejectionKind::NulCharacter,
            format!("{p} contains a NUL character"),
        )
    };
    match value {
        Value::String(s) if s.contains('\0') => Err(nul(path)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| reject_nul(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            let child = if path == "body" {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.contains('\0') {
                Err(nul(&child))
            } else {
                reject_nul(item, &child)
            }
        }),
        _ => Ok(()),
    }
}

/// A JSON object and its path, for messages that name the field.
struct Object<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Object<'a> {
    fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// A present, non-null value.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn opt_text(&self, key: &str) -> Result<Option<String>, Rejection> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Rejection::wrong_type(&self.path_of(key), "a string")),
        }
    }

    fn opt_id(&self, key: &str) -> Result<Option<Id>, Rejection> {
        self.get(key)
            .map(|v| id_from(v, &self.path_of(key)))
            .transpose()
    }

    fn id(&self, key: &str) -> Result<Id, Rejection> {
        self.opt_id(key)?
            .ok_or_else(|| Rejection::missing(&self.path_of(key)))
    }

    fn opt_id_list(&self, key: &str) -> Result<Vec<Id>, Rejection> {
        let path = self.path_of(key);
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                if items.len() > MAX_LIST_ENTRIES {
                    return Err(Rejection::bounds(&path, "has more than 10000 entries"));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| id_from(v, &format!("{path}[{i}]")))
                    .collect()
            }
            Some(_) => Err(Rejection::wrong_type(&path, "an array of strings")),
        }
    }

    fn opt_integer(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, Rejection> {
        let path = self.path_of(key);
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
                Some(_) => Err(Rejection::bounds(
                    &path,
                    &format!("must be in {min}..={max}"),
                )),
                // A float, or an integer beyond i64.
                None if n.is_f64() => Err(Rejection::wrong_type(&path, "an integer")),
                None => Err(Rejection::bounds(
                    &path,
                    &format!("must be in {min}..={max}"),
                )),
            },
            Some(_) => Err(Rejection::wrong_type(&path, "an integer")),
        }
    }

    /// A boolean, also when sent as the string "true" or "false".
    fn opt_bool(&self, key: &str) -> Result<Option<bool>, Rejection> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(_) => Err(Rejection::wrong_type(&self.path_of(key), "a boolean")),
        }
    }

    fn opt_event_time(&self) -> Result<Option<EventTime>, Rejection> {
        let Some(ms) = self.opt_integer("EventTime", 1, i64::MAX)? else {
            return Ok(None);
        };
        EventTime::from_millis(ms)
            .map(Some)
            .ok_or_else(|| Rejection::bounds("EventTime", "is not a valid time in milliseconds"))
    }

    fn change(&self, is_leave: bool) -> Result<MemberChange, Rejection> {
        if self.get("MemberList_Account").is_none() {
            return Err(Rejection::missing("MemberList_Account"));
        }
        Ok(MemberChange {
            members: self.opt_id_list("MemberList_Account")?,
            member_count: self
                .opt_integer("MemberCount", 0, i32::MAX.into())?
                .map(|n| n as i32),
            kind: self.opt_text("Type")?,
            reason: if is_leave {
                self.opt_text("Reason")?
            } else {
                None
            },
        })
    }

    fn room_info(&self) -> Result<(Id, RoomInfo), Rejection> {
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
        ] {
            if let Some(b) = info.opt_bool(key)? {
                fields.insert(key.to_owned(), Value::Bool(b));
            }
        }
        Ok((room, RoomInfo { fields }))
    }

    fn seats(&self) -> Result<Vec<Seat>, Rejection> {
        let items = match self.get("SeatList") {
            None => return Err(Rejection::missing("SeatList")),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(Rejection::wrong_type("SeatList", "an array of objects")),
        };
        if items.len() > MAX_LIST_ENTRIES {
            return Err(Rejection::bounds("SeatList", "has more than 10000 entries"));
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

/// An id sent as a string, or as a bare integer (kept digit for digit).
fn id_from(value: &Value, path: &str) -> Result<Id, Rejection> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            let digits = n.to_string();
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Rejection::wrong_type(
                    path,
                    "a string or a non-negative integer",
                ));
            }
            digits
        }
        _ => return Err(Rejection::wrong_type(path, "a string")),
    };
    Id::parse(&text).map_err(|problem| Rejection::bounds(path, problem))
}
