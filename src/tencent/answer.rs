//! Tencent's REST answers decoded into domain types (docs/drift-repair.md#what-is-compared): a
//! room's details, its member list pages and its seats; and a product's callback configuration
//! (`get_callback`). The same decoders read the answer
//! stored in a correction's payload back (`roomsync rebuild`), so both agree on every quirk.
//!
//! The envelope (`ActionStatus`, `ErrorCode`) is the client's to judge; these read `Response`.

use serde_json::{Map, Value};

use crate::callback::{Id, Seat, account_id, seat_list_of};

/// An answer without the shape Tencent documents; the text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedAnswer(pub String);

fn malformed(what: &str) -> MalformedAnswer {
    MalformedAnswer(what.to_owned())
}

/// The members of a Live room as `get_member_list` lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMembers {
    pub members: Vec<Id>,
    /// `Response.MemberCount`: the whole room, which may be more than `members`.
    pub member_count: Option<i64>,
}

/// `Response.RoomInfo` of `get_room_info`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomDetails {
    /// `MemberCount`: how many people are in the room now.
    pub member_count: Option<i64>,
    /// `IsSeatEnabled` (also when sent as `"true"`/`"false"`).
    pub is_seat_enabled: Option<bool>,
    /// Every field as sent.
    pub fields: Map<String, Value>,
}

/// `Response` of `get_callback` (Room or Live): where Tencent sends the product's callbacks,
/// and which commands are switched on, as Tencent names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackConfig {
    pub url: String,
    pub commands: Vec<String>,
}

/// The callback configuration of a `get_callback` answer. A missing or null
/// `CallbackCommandList` is an empty list (nothing switched on); a missing `Url` is malformed,
/// since Tencent never stores a configuration without one.
pub fn callback_config(answer: &Value) -> Result<CallbackConfig, MalformedAnswer> {
    let response = response(answer)?;
    let url = match response.get("Url") {
        Some(Value::String(url)) => url.clone(),
        Some(_) => return Err(malformed("Response.Url is not a string")),
        None => return Err(malformed("Response.Url is missing")),
    };
    let commands = match response.get("CallbackCommandList") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    MalformedAnswer(format!("CallbackCommandList[{i}] is not a string"))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(malformed("Response.CallbackCommandList is not an array")),
    };
    Ok(CallbackConfig { url, commands })
}

fn response(answer: &Value) -> Result<&Map<String, Value>, MalformedAnswer> {
    match answer.get("Response") {
        Some(Value::Object(response)) => Ok(response),
        Some(_) => Err(malformed("Response is not an object")),
        None => Err(malformed("Response is missing")),
    }
}

/// `Response.RoomInfo` of a `get_room_info` answer (of the Room or the Live API).
pub fn room_details(answer: &Value) -> Result<RoomDetails, MalformedAnswer> {
    let info = match response(answer)?.get("RoomInfo") {
        Some(Value::Object(info)) => info,
        Some(_) => return Err(malformed("Response.RoomInfo is not an object")),
        None => return Err(malformed("Response.RoomInfo is missing")),
    };
    let member_count = match info.get("MemberCount") {
        None | Some(Value::Null) => None,
        Some(v) => {
            Some(integer(v).ok_or_else(|| malformed("RoomInfo.MemberCount is not an integer"))?)
        }
    };
    let is_seat_enabled = match info.get("IsSeatEnabled") {
        None | Some(Value::Null) => None,
        Some(v) => {
            Some(boolean(v).ok_or_else(|| malformed("RoomInfo.IsSeatEnabled is not a boolean"))?)
        }
    };
    Ok(RoomDetails {
        member_count,
        is_seat_enabled,
        fields: info.clone(),
    })
}

/// One page of a member list: its members and the `Next` token (empty: the last page).
pub fn member_page(answer: &Value) -> Result<(Vec<Id>, String), MalformedAnswer> {
    let response = response(answer)?;
    let items: &[Value] = match response.get("MemberList") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) => items,
        Some(_) => return Err(malformed("Response.MemberList is not an array")),
    };
    let members = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let account = item.get("Member_Account").ok_or_else(|| {
                MalformedAnswer(format!("MemberList[{i}].Member_Account is missing"))
            })?;
            let path = format!("MemberList[{i}].Member_Account");
            account_id(account, &path).map_err(|rejection| MalformedAnswer(rejection.info))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let next = match response.get("Next") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(next)) => next.clone(),
        Some(_) => return Err(malformed("Response.Next is not a string")),
    };
    Ok((members, next))
}

/// Tencent's count of a Live room's members: the `Response.MemberCount` of the last page that
/// has one.
pub fn live_member_count(pages: &[Value]) -> Result<Option<i64>, MalformedAnswer> {
    let mut member_count = None;
    for page in pages {
        if let Some(count) = response(page)?.get("MemberCount") {
            let count = integer(count)
                .ok_or_else(|| malformed("Response.MemberCount is not an integer"))?;
            member_count = Some(count);
        }
    }
    Ok(member_count)
}

/// The seats of a `get_seat_list` answer (also as stored in a seats correction's payload):
/// every seat, free ones with `member: None`.
pub fn seats_of_answer(answer: &Value) -> Result<Vec<Seat>, MalformedAnswer> {
    seat_list(response(answer)?)
}

fn seat_list(response: &Map<String, Value>) -> Result<Vec<Seat>, MalformedAnswer> {
    match response.get("SeatList") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(_) => seat_list_of(response).map_err(|rejection| MalformedAnswer(rejection.info)),
    }
}

/// An integer, also when sent as decimal text.
pub fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean, also when sent as the string "true" or "false".
fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn seats_tolerate_strings_and_big_numbers() {
        let response = json!({"SeatList": [
            {"Index": 0, "Member_Account": "", "IsTakenDisabled": "true"},
            {"Index": 1, "Member_Account": 123456789012345678901234567890u128, "IsVideoDisabled": false, "IsAudioDisabled": "false"},
            {"Index": 2},
            {"Index": 0, "Member_Account": "later"}
        ]});
        let seats = seat_list(response.as_object().unwrap()).unwrap();
        assert_eq!(seats.len(), 3);
        assert_eq!(seats[0].index, 1);
        assert_eq!(
            seats[0].member.as_ref().unwrap().as_str(),
            "123456789012345678901234567890"
        );
        assert!(seats[1].member.is_none() && !seats[1].is_taken_disabled);
        assert_eq!(seats[2].member.as_ref().unwrap().as_str(), "later");
        for bad in [
            json!({"SeatList": [{"Member_Account": "a"}]}),
            json!({"SeatList": [{"Index": -1}]}),
            json!({"SeatList": [{"Index": 1, "IsAudioDisabled": "yes"}]}),
            json!({"SeatList": [{"Index": 1, "Member_Account": 1.5}]}),
            json!({"SeatList": {}}),
        ] {
            assert!(seat_list(bad.as_object().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn callback_configs() {
        let answer = json!({"ActionStatus": "OK", "ErrorCode": 0, "RequestId": "r", "Response": {
            "Url": "https://rooms.example.com/callback",
            "CallbackCommandList": ["Room.CallbackAfterCreateRoom", "Mic.CallbackAfterSeatInfoChanged"]
        }});
        assert_eq!(
            callback_config(&answer).unwrap(),
            CallbackConfig {
                url: "https://rooms.example.com/callback".into(),
                commands: vec![
                    "Room.CallbackAfterCreateRoom".into(),
                    "Mic.CallbackAfterSeatInfoChanged".into()
                ],
            }
        );
        // Nothing switched on yet.
        for list in [
            json!({"Url": "https://x/"}),
            json!({"Url": "https://x/", "CallbackCommandList": null}),
        ] {
            let config = callback_config(&json!({"Response": list})).unwrap();
            assert!(config.commands.is_empty());
        }
        for (bad, what) in [
            (json!({}), "Response is missing"),
            (json!({"Response": []}), "Response is not an object"),
            (
                json!({"Response": {"CallbackCommandList": []}}),
                "Url is missing",
            ),
            (json!({"Response": {"Url": 7}}), "Url is not a string"),
            (
                json!({"Response": {"Url": "https://x/", "CallbackCommandList": "Room.CallbackAfterCreateRoom"}}),
                "not an array",
            ),
            (
                json!({"Response": {"Url": "https://x/", "CallbackCommandList": ["a", 1]}}),
                "CallbackCommandList[1]",
            ),
        ] {
            let error = callback_config(&bad).unwrap_err().0;
            assert!(error.contains(what), "{bad}: {error}");
        }
    }

    #[test]
    fn member_pages() {
        let answer = json!({"ActionStatus": "OK", "ErrorCode": 0, "Response": {
            "MemberList": [{"Member_Account": "a", "Role": "Owner"}, {"Member_Account": 18446744073709551617u128}],
            "Next": "n1"
        }});
        let (members, next) = member_page(&answer).unwrap();
        let ids: Vec<&str> = members.iter().map(Id::as_str).collect();
        assert_eq!(ids, ["a", "18446744073709551617"]);
        assert_eq!(next, "n1");
        let last = json!({"Response": {"Next": ""}});
        assert_eq!(member_page(&last).unwrap(), (vec![], String::new()));
        let bad = json!({"Response": {"MemberList": [{"Member_Account": ""}]}});
        assert!(member_page(&bad).is_err());
    }
}
