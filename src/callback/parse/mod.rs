//! Body parsing: JSON -> [`Callback`], with an error that names the field
//! (docs/protocol.md#commands-and-bodies, docs/protocol.md#bounds).
//!
//! This file: the entry points ([`parse_body`], [`parse_stored`]) and the checks of the whole
//! callback (its command, its `EventTime`). The tests go through the entry points, so they
//! stay here and cover the parts too.
//! - `object`: a JSON object's typed fields, each error naming the field's path.
//! - `bodies`: the parts of the commands' bodies (times, members, room info, seats).

mod bodies;
mod object;

use super::{
    Callback, CallbackParts, CallbackQuery, Command, Event, EventTime, Product, RESERVED_PREFIX,
    SdkAppId,
    limits::MAX_TYPE_BYTES,
    rejection::{Rejection, RejectionKind},
    storable::{check_escapes, storable_top_level},
};
use bodies::Direction;
use object::Object;

pub use bodies::seat_list_of;
pub use object::account_id;

/// Parses a callback again from what was stored (the journal, the history), with the same
/// rules as when it arrived, except the bound on a future `EventTime`: that one was checked
/// against the bound in force at its arrival, and a record already answered 200 (or already
/// in the history) must not turn into a refusal because the bound was lowered since.
pub fn parse_stored(
    sdk_app_id: i64,
    query: &CallbackQuery,
    body: &[u8],
    received_at: chrono::DateTime<chrono::Utc>,
) -> Result<Callback, Rejection> {
    let app = SdkAppId::from_i64(sdk_app_id)
        .ok_or_else(|| Rejection::bounds("SdkAppid", "must be a positive integer"))?;
    parse_body(body, query, app, received_at, None)
}

/// Parses a body that passed the app-id and signature checks.
/// `received_at` stands in for a missing `EventTime` of an unknown command, and is what
/// `max_future` (docs/limits.md#the-callback) is measured from: an `EventTime` later than
/// `received_at + max_future` is refused.
pub fn parse_body(
    body: &[u8],
    query: &CallbackQuery,
    sdk_app_id: SdkAppId,
    received_at: chrono::DateTime<chrono::Utc>,
    max_future: Option<std::time::Duration>,
) -> Result<Callback, Rejection> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Rejection::new(RejectionKind::NotJson, "body is not UTF-8 text"))?;
    let top = storable_top_level(text)?;
    // Only the values that are stored as text; the others fail their own checks.
    let stored = ["CallbackCommand", "ClientIP", "OptPlatform"];
    if let Some(name) = query.not_utf8.iter().find(|n| stored.contains(n)) {
        let info = format!("{name} in the query is not UTF-8 text");
        return Err(Rejection::new(RejectionKind::WrongType, info));
    }
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
    let Some(top) = top else {
        return Err(Rejection::wrong_type("body", "a JSON object"));
    };
    // Refuse anywhere what PostgreSQL's text and jsonb cannot hold, not only in known fields:
    // such a callback could never be stored, however often it came.
    // Then every string, also those no field reads or a later duplicate key hides: jsonb
    // decodes them all.
    top.check_storable()?;
    check_escapes(text)?;
    let body = Object {
        map: &top.known,
        path: String::new(),
    };

    let body_command = body.opt_text("CallbackCommand")?;
    let command = match (query.command.as_deref(), body_command.as_deref()) {
        // The old and new names of one command are the same command.
        (Some(q), Some(b)) if Command::parse(q) != Command::parse(b) => {
            return Err(Rejection::new(
                RejectionKind::CommandMismatch,
                format!("CallbackCommand differs: {q:?} in the query, {b:?} in the body"),
            ));
        }
        (Some(name), _) | (None, Some(name)) if is_reserved(name) => {
            return Err(Rejection::bounds(
                "CallbackCommand",
                &format!("{name:?} is reserved for roomsync's own corrections"),
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

    // Live callbacks may carry EventTime inside RoomInfo instead, and Tencent's own Live
    // create sample carries only RoomInfo.CreateTime, in seconds (docs/live.md#quirks).
    let event_time = match body.opt_event_time()? {
        Some(t) => Some(t),
        None if command.product() == Some(Product::Live) => match body.room_info_event_time()? {
            Some(t) => Some(t),
            None if command == Command::LiveCreateRoom => body.room_info_create_time()?,
            None => None,
        },
        None => None,
    };
    let event_time = match (event_time, &command) {
        (Some(t), _) => Some(t),
        (None, Command::Other(_)) => None,
        (None, _) => return Err(Rejection::missing("EventTime")),
    };
    if let (Some(t), Some(max_future)) = (event_time, max_future) {
        check_not_future(t, received_at, max_future)?;
    }
    let operator = body
        .opt_short_text("Operator_Account", MAX_TYPE_BYTES)?
        .filter(|s| !s.is_empty());

    let (room_id, event) = match &command {
        Command::MemberEnter => (
            Some(body.id("RoomId")?),
            Event::MemberEnter(body.change(Direction::Enter)?),
        ),
        Command::MemberLeave => (
            Some(body.id("RoomId")?),
            Event::MemberLeave(body.change(Direction::Leave)?),
        ),
        Command::DestroyRoom => (Some(body.id("RoomId")?), Event::DestroyRoom),
        Command::LiveDestroyRoom => {
            // EventType (DestroyByUser, DestroyBySystem) and Statistic stay in the payload.
            body.opt_text("EventType")?;
            let room = match body.opt_id("RoomId")? {
                Some(room) => room,
                None if body.get("RoomInfo").is_some() => body.room_info()?.0,
                None => return Err(Rejection::missing("RoomId")),
            };
            (Some(room), Event::DestroyRoom)
        }
        Command::LiveCreateRoom => {
            let (room, info) = body.room_info()?;
            let invitees = None;
            (Some(room), Event::CreateRoom { info, invitees })
        }
        Command::LiveUpdateRoomInfo => {
            let (room, info) = body.room_info()?;
            (Some(room), Event::UpdateRoomInfo { info })
        }
        Command::LiveMemberStateChanged => (Some(body.id("RoomId")?), body.member_state()?),
        Command::CreateRoom => {
            let (room, info) = body.room_info()?;
            // As sent in the payload (duplicates too); the room keeps the distinct ones.
            let mut invitees = body.opt_id_list("ScheduleInviteeList_Account")?;
            invitees.sort();
            invitees.dedup();
            (
                Some(room),
                Event::CreateRoom {
                    info,
                    invitees: Some(invitees),
                },
            )
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
        Command::Other(_) | Command::Reconcile => (body.opt_id("RoomId")?, Event::Other),
    };

    let payload = text.to_owned();
    let sent_time = event_time.is_some();
    // Unknown commands without EventTime: the arrival time stands in, and the dedup key
    // covers the whole body instead.
    let event_time = match event_time {
        Some(t) => t,
        None => EventTime::from_millis(received_at.timestamp_millis()).ok_or_else(|| {
            Rejection::bounds("EventTime", "is missing and the clock is before 1970")
        })?,
    };
    Ok(Callback::new(CallbackParts {
        sdk_app_id,
        command,
        room_id,
        operator,
        event_time,
        event_time_was_sent: sent_time,
        event,
        meta: query.meta(),
        payload,
    }))
}

/// Whether a command name is under roomsync's own prefix, as a sender could try to spell it
/// (any case, padded with whitespace).
fn is_reserved(name: &str) -> bool {
    let name = name.trim();
    name.get(..RESERVED_PREFIX.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(RESERVED_PREFIX))
}

/// A time further ahead than `max_future` would win over every real event and correction
/// until then: refused rather than clamped (docs/limits.md#the-callback says why).
fn check_not_future(
    t: EventTime,
    received_at: chrono::DateTime<chrono::Utc>,
    max_future: std::time::Duration,
) -> Result<(), Rejection> {
    let limit = received_at
        .timestamp_millis()
        .saturating_add(i64::try_from(max_future.as_millis()).unwrap_or(i64::MAX));
    if t.millis() > limit {
        return Err(Rejection::new(
            RejectionKind::FutureEventTime,
            format!(
                "EventTime {} is more than {} s after the arrival time {}",
                t.millis(),
                max_future.as_secs(),
                received_at.timestamp_millis()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::{parse_body, parse_stored};
    use crate::callback::{
        Callback, CallbackQuery, Command, Event, Id, Product, SdkAppId,
        limits::{MAX_LIST_ENTRIES, MAX_REASON_BYTES, MAX_TYPE_BYTES},
        rejection::{Rejection, RejectionKind},
    };

    const APP: &str = "1400000001";

    fn parse_with(body: &str, query: &str) -> Result<Callback, Rejection> {
        parse_body(
            body.as_bytes(),
            &CallbackQuery::parse(query),
            SdkAppId::parse(APP).unwrap(),
            chrono::Utc::now(),
            Some(std::time::Duration::from_secs(300)),
        )
    }

    fn parse(body: &str) -> Result<Callback, Rejection> {
        parse_with(body, "SdkAppid=1400000001")
    }

    fn rejected(body: &str) -> Rejection {
        parse(body).expect_err("should be rejected")
    }

    const ENTER: &str = r#"{"CallbackCommand":"Room.CallbackAfterMemberEnter","RoomId":"r1","MemberList_Account":["a","b"],"EventTime":5}"#;

    #[test]
    fn fixture_member_enter() {
        let cb = parse(include_str!("../../../tests/fixtures/member_enter.json")).unwrap();
        assert_eq!(cb.command, Command::MemberEnter);
        assert_eq!(cb.room_id.as_ref().unwrap().as_str(), "rid-123");
        assert_eq!(cb.operator.as_deref(), Some("user1"));
        assert_eq!(cb.event_time.millis(), 1670574414123);
        let Event::MemberEnter(change) = &cb.event else {
            panic!("not an enter")
        };
        assert_eq!(change.members, vec![Id::parse("user1").unwrap()]);
        assert_eq!(change.member_count, Some(20));
        assert_eq!(change.kind.as_deref(), Some("Enter"));
    }

    #[test]
    fn fixture_member_leave() {
        let cb = parse(include_str!("../../../tests/fixtures/member_leave.json")).unwrap();
        let Event::MemberLeave(change) = &cb.event else {
            panic!("not a leave")
        };
        assert_eq!(change.kind.as_deref(), Some("Leave"));
        assert_eq!(change.reason.as_deref(), Some("xxxx"));
    }

    #[test]
    fn fixture_create_room() {
        let cb = parse(include_str!("../../../tests/fixtures/create_room.json")).unwrap();
        assert_eq!(cb.room_id.as_ref().unwrap().as_str(), "tandy-test-rest");
        let Event::CreateRoom { info, invitees } = &cb.event else {
            panic!("not a create")
        };
        assert_eq!(info.text("RoomName"), Some("tandy-test-rest"));
        // The room keeps the distinct invitees.
        let invitees = invitees.as_ref().unwrap();
        let names: Vec<&str> = invitees.iter().map(Id::as_str).collect();
        assert_eq!(names, ["user2", "user3"]);
        assert_eq!(info.integer("MaxMemberCount"), Some(300));
        // Duplicates are kept as sent, in the payload.
        let payload: Value = serde_json::from_str(&cb.payload).unwrap();
        assert_eq!(
            payload["ScheduleInviteeList_Account"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn fixture_destroy_room() {
        let cb = parse(include_str!("../../../tests/fixtures/destroy_room.json")).unwrap();
        assert_eq!(cb.event, Event::DestroyRoom);
        assert_eq!(cb.room_id.as_ref().unwrap().as_str(), "tandy-test-rest");
    }

    #[test]
    fn fixture_update_room_info_with_string_boolean() {
        let cb = parse(include_str!(
            "../../../tests/fixtures/update_room_info.json"
        ))
        .unwrap();
        let Event::UpdateRoomInfo { info } = &cb.event else {
            panic!("not an update")
        };
        assert_eq!(info.fields["IsCloudRecordingDisabled"], Value::Bool(false));
        assert_eq!(cb.room_id.as_ref().unwrap().as_str(), "rid-123");
    }

    #[test]
    fn fixture_seat_with_big_number_keeps_every_digit() {
        let cb = parse(include_str!(
            "../../../tests/fixtures/seat_info_changed.json"
        ))
        .unwrap();
        let Event::SeatInfoChanged { seats } = &cb.event else {
            panic!("not a seat change")
        };
        assert_eq!(
            seats[0].member.as_ref().unwrap().as_str(),
            "144115233775727695"
        );
        assert_eq!(seats[0].index, 1);
    }

    #[test]
    fn numbers_beyond_u64_keep_their_digits() {
        let body = r#"{"CallbackCommand":"Mic.CallbackAfterSeatInfoChanged","RoomId":"r","EventTime":1,
            "SeatList":[{"Index":0,"Member_Account":123456789012345678901234567890}]}"#;
        let Event::SeatInfoChanged { seats } = parse(body).unwrap().event else {
            panic!()
        };
        assert_eq!(
            seats[0].member.as_ref().unwrap().as_str(),
            "123456789012345678901234567890"
        );
    }

    #[test]
    fn free_seats_and_string_booleans() {
        let body = r#"{"CallbackCommand":"Mic.CallbackAfterSeatInfoChanged","RoomId":"r","EventTime":1,
            "SeatList":[{"Index":0,"Member_Account":"","IsAudioDisabled":"true"},{"Index":1},{"Index":0,"Member_Account":"x"}]}"#;
        let Event::SeatInfoChanged { seats } = parse(body).unwrap().event else {
            panic!()
        };
        assert_eq!(
            seats.len(),
            2,
            "a seat listed twice is described by its last entry"
        );
        let free = seats.iter().find(|s| s.index == 1).unwrap();
        assert_eq!(free.member, None);
        let zero = seats.iter().find(|s| s.index == 0).unwrap();
        assert_eq!(zero.member.as_ref().unwrap().as_str(), "x");
    }

    #[test]
    fn command_from_query_or_body() {
        let no_command = r#"{"RoomId":"r1","MemberList_Account":["a"],"EventTime":5}"#;
        let cb = parse_with(no_command, "CallbackCommand=Room.CallbackAfterMemberEnter").unwrap();
        assert_eq!(cb.command, Command::MemberEnter);
        assert_eq!(
            parse_with(ENTER, "CallbackCommand=Room.CallbackAfterMemberEnter")
                .unwrap()
                .command,
            Command::MemberEnter
        );
        let mismatch =
            parse_with(ENTER, "CallbackCommand=Room.CallbackAfterMemberLeave").unwrap_err();
        assert_eq!(mismatch.kind, RejectionKind::CommandMismatch);
        assert_eq!(rejected(no_command).kind, RejectionKind::MissingCommand);
    }

    #[test]
    fn old_update_name_is_accepted() {
        let body = r#"{"CallbackCommand":"Room.CallbackUpdateRoomInfo","RoomInfo":{"RoomId":"r","RoomName":"n"},"EventTime":9}"#;
        assert_eq!(parse(body).unwrap().command, Command::UpdateRoomInfo);
    }

    #[test]
    fn unknown_commands_are_kept() {
        let body =
            r#"{"CallbackCommand":"Room.CallbackAfterSomethingNew","RoomId":"r","Extra":{"x":1}}"#;
        let cb = parse(body).unwrap();
        assert_eq!(
            cb.command,
            Command::Other("Room.CallbackAfterSomethingNew".into())
        );
        assert_eq!(cb.event, Event::Other);
        assert_eq!(cb.payload, body);
    }

    #[test]
    fn unknown_fields_are_ignored_and_kept_in_the_payload() {
        let body = r#"{"CallbackCommand":"Room.CallbackAfterMemberEnter","RoomId":"r","MemberList_Account":["a"],"EventTime":5,"New":[1,{"y":true}]}"#;
        assert_eq!(parse(body).unwrap().payload, body);
    }

    #[test]
    fn meta_comes_from_the_query() {
        let cb = parse_with(ENTER, "ClientIP=not-an-ip&OptPlatform=Windows").unwrap();
        assert_eq!(cb.meta.client_ip.as_deref(), Some("not-an-ip"));
        assert_eq!(cb.meta.opt_platform.as_deref(), Some("Windows"));
    }

    #[test]
    fn every_refusal_names_its_field() {
        let long = "x".repeat(257);
        let many: Vec<String> = (0..10_001).map(|i| format!("\"u{i}\"")).collect();
        let many = format!(
            r#"{{"CallbackCommand":"Room.CallbackAfterMemberEnter","RoomId":"r","EventTime":5,"MemberList_Account":[{}]}}"#,
            many.join(",")
        );
        let enter =
            |rest: &str| format!(r#"{{"CallbackCommand":"Room.CallbackAfterMemberEnter",{rest}}}"#);
        let cases: Vec<(String, RejectionKind, &str)> = vec![
            ("not json".into(), RejectionKind::NotJson, "JSON"),
            ("[1,2]".into(), RejectionKind::WrongType, "object"),
            (enter(r#""MemberList_Account":["a"],"EventTime":5"#), RejectionKind::MissingField, "RoomId"),
            (enter(r#""RoomId":"r","EventTime":5"#), RejectionKind::MissingField, "MemberList_Account"),
            (enter(r#""RoomId":"r","MemberList_Account":["a"]"#), RejectionKind::MissingField, "EventTime"),
            (enter(r#""RoomId":7.5,"MemberList_Account":["a"],"EventTime":5"#), RejectionKind::WrongType, "RoomId"),
            (enter(r#""RoomId":"r","MemberList_Account":"a","EventTime":5"#), RejectionKind::WrongType, "MemberList_Account"),
            (enter(r#""RoomId":"r","MemberList_Account":["a",true],"EventTime":5"#), RejectionKind::WrongType, "MemberList_Account[1]"),
            (enter(r#""RoomId":"r","MemberList_Account":["a"],"EventTime":"5""#), RejectionKind::WrongType, "EventTime"),
            (enter(r#""RoomId":"r","MemberList_Account":["a"],"EventTime":1.5"#), RejectionKind::WrongType, "EventTime"),
            (enter(r#""RoomId":"r","MemberList_Account":["a"],"EventTime":0"#), RejectionKind::OutOfBounds, "EventTime"),
            (enter(r#""RoomId":"r","MemberList_Account":["a"],"EventTime":-1"#), RejectionKind::OutOfBounds, "EventTime"),
            (enter(r#""RoomId":"r","MemberList_Account":["a"],"EventTime":9223372036854775807"#), RejectionKind::OutOfBounds, "EventTime"),
            (enter(r#""RoomId":"r","MemberList_Account":["a"],"EventTime":99999999999999999999"#), RejectionKind::OutOfBounds, "EventTime"),
            (enter(r#""RoomId":"","MemberList_Account":["a"],"EventTime":5"#), RejectionKind::OutOfBounds, "RoomId"),
            (enter(&format!(r#""RoomId":"{long}","MemberList_Account":["a"],"EventTime":5"#)), RejectionKind::OutOfBounds, "RoomId"),
            (enter(r#""RoomId":"r","MemberList_Account":[""],"EventTime":5"#), RejectionKind::OutOfBounds, "MemberList_Account[0]"),
            (enter(r#""RoomId":"r","MemberList_Account":["a"],"EventTime":5,"MemberCount":-1"#), RejectionKind::OutOfBounds, "MemberCount"),
            (enter(r#""RoomId":"r\u0000","MemberList_Account":["a"],"EventTime":5"#), RejectionKind::NulCharacter, "RoomId"),
            (enter(r#""RoomId":"r","MemberList_Account":["a"],"EventTime":5,"Note":{"x":"\u0000"}"#), RejectionKind::NulCharacter, "Note.x"),
            (many, RejectionKind::OutOfBounds, "10000"),
            (r#"{"CallbackCommand":"Room.CallbackAfterCreateRoom","EventTime":5}"#.into(), RejectionKind::MissingField, "RoomInfo"),
            (r#"{"CallbackCommand":"Room.CallbackAfterCreateRoom","EventTime":5,"RoomInfo":{"RoomName":"n"}}"#.into(), RejectionKind::MissingField, "RoomInfo.RoomId"),
            (r#"{"CallbackCommand":"Room.CallbackAfterCreateRoom","EventTime":5,"RoomInfo":{"RoomId":"r","IsSeatEnabled":"maybe"}}"#.into(), RejectionKind::WrongType, "RoomInfo.IsSeatEnabled"),
            (r#"{"CallbackCommand":"Room.CallbackAfterCreateRoom","EventTime":5,"RoomInfo":{"RoomId":"r","MaxMemberCount":"300"}}"#.into(), RejectionKind::WrongType, "RoomInfo.MaxMemberCount"),
            (r#"{"CallbackCommand":"Mic.CallbackAfterSeatInfoChanged","RoomId":"r","EventTime":5,"SeatList":[{"Member_Account":"a"}]}"#.into(), RejectionKind::MissingField, "SeatList[0].Index"),
            (r#"{"CallbackCommand":"Mic.CallbackAfterSeatInfoChanged","RoomId":"r","EventTime":5,"SeatList":[{"Index":1,"Member_Account":-3}]}"#.into(), RejectionKind::WrongType, "SeatList[0].Member_Account"),
            (r#"{"CallbackCommand":"Room.CallbackAfterDestroyRoom","EventTime":5}"#.into(), RejectionKind::MissingField, "RoomId"),
            (r#"{"CallbackCommand":5,"RoomId":"r","EventTime":5}"#.into(), RejectionKind::WrongType, "CallbackCommand"),
            (r#"{"CallbackCommand":"roomsync.Reconcile","RoomId":"r","EventTime":5}"#.into(), RejectionKind::OutOfBounds, "reserved"),
        ];
        for (body, kind, field) in cases {
            let r = rejected(&body);
            assert_eq!(r.kind, kind, "{body:.120}: {r:?}");
            assert!(r.info.contains(field), "{:?} should name {field}", r.info);
        }
        let bad_utf8 = parse_body(
            b"{\"a\":\"\xff\"}",
            &CallbackQuery::default(),
            SdkAppId::parse(APP).unwrap(),
            chrono::Utc::now(),
            Some(std::time::Duration::from_secs(300)),
        );
        assert_eq!(bad_utf8.unwrap_err().kind, RejectionKind::NotJson);
        let nul_ip = parse_with(ENTER, "ClientIP=%00").unwrap_err();
        assert_eq!(nul_ip.kind, RejectionKind::NulCharacter);
    }

    #[test]
    fn live_fixtures() {
        let create = parse(include_str!(
            "../../../tests/fixtures/live_create_room.json"
        ))
        .unwrap();
        assert_eq!(create.command, Command::LiveCreateRoom);
        assert_eq!(create.command.product(), Some(Product::Live));
        // EventTime inside RoomInfo, and extra RoomInfo fields kept.
        assert_eq!(create.event_time.millis(), 1_703_589_922_780);
        let Event::CreateRoom { info, .. } = &create.event else {
            panic!("not a create")
        };
        assert_eq!(info.fields["Category"], serde_json::json!([1, 7]));
        assert_eq!(info.fields["IsPublicVisible"], Value::Bool(true));
        assert_eq!(create.operator.as_deref(), Some("@TIM#SYSTEM"));

        let online = parse(include_str!(
            "../../../tests/fixtures/live_member_online.json"
        ))
        .unwrap();
        let Event::MemberEnter(change) = &online.event else {
            panic!("Online is an enter")
        };
        let ids: Vec<&str> = change.members.iter().map(Id::as_str).collect();
        assert_eq!(ids, ["jared", "144115212385832541"], "every digit kept");
        assert_eq!(online.event_type(), Some("Online"));
        assert_eq!(online.history_reason(), Some("Enter"));

        let offline = parse(include_str!(
            "../../../tests/fixtures/live_member_offline.json"
        ))
        .unwrap();
        assert!(matches!(offline.event, Event::MemberLeave(_)));
        assert_eq!(offline.event_type(), Some("Offline"));
        assert_eq!(offline.exit_type(), Some("HeartbeatInterrupt"));

        let destroy = parse(include_str!(
            "../../../tests/fixtures/live_destroy_room.json"
        ))
        .unwrap();
        assert_eq!(destroy.event, Event::DestroyRoom);
        assert!(
            destroy.payload.contains("TotalViewers"),
            "Statistic kept in the payload"
        );

        let update = parse(include_str!(
            "../../../tests/fixtures/live_update_room_info.json"
        ))
        .unwrap();
        assert_eq!(update.event_time.millis(), 1_703_590_022_780);
        // The older URL name is the same command.
        let alias = parse_with(
            include_str!("../../../tests/fixtures/live_member_online.json"),
            "CallbackCommand=Live.CallbackMemberStateChanged",
        )
        .unwrap();
        assert_eq!(alias.command, Command::LiveMemberStateChanged);
        assert_eq!(alias.dedup_key, online.dedup_key);
    }

    #[test]
    fn an_event_time_beyond_the_skew_is_refused() {
        let arrival = chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        let skew = std::time::Duration::from_secs(300);
        let at = |ms: i64, max: Option<std::time::Duration>| {
            let body = ENTER.replace("\"EventTime\":5", &format!("\"EventTime\":{ms}"));
            let query = CallbackQuery::default();
            let app = SdkAppId::parse(APP).unwrap();
            parse_body(body.as_bytes(), &query, app, arrival, max)
        };
        let limit = 1_700_000_000_000 + 300_000;
        assert!(at(limit, Some(skew)).is_ok(), "exactly at the bound");
        let r = at(limit + 1, Some(skew)).unwrap_err();
        assert_eq!(r.kind, RejectionKind::FutureEventTime);
        assert!(r.info.contains("EventTime"), "{:?}", r.info);
        assert_eq!(
            at(8_210_266_876_799_999, Some(skew)).unwrap_err().kind,
            RejectionKind::FutureEventTime
        );
        // Measured from the arrival, not from now: a record journaled long ago still parses.
        assert!(
            parse_stored(
                1_400_000_001,
                &CallbackQuery::default(),
                ENTER.as_bytes(),
                arrival
            )
            .is_ok()
        );
        // Inside RoomInfo, and from CreateTime, the same bound.
        let live = format!(
            r#"{{"CallbackCommand":"Live.CallbackAfterCreateRoom","RoomInfo":{{"RoomId":"r","CreateTime":{}}}}}"#,
            (limit + 1000) / 1000
        );
        let r = parse_body(
            live.as_bytes(),
            &CallbackQuery::default(),
            SdkAppId::parse(APP).unwrap(),
            arrival,
            Some(skew),
        )
        .unwrap_err();
        assert_eq!(r.kind, RejectionKind::FutureEventTime);
    }

    #[test]
    fn a_live_create_without_event_time_takes_create_time() {
        let sample = r#"{"CallbackCommand":"Live.CallbackAfterCreateRoom","Operator_Account":"@TIM#SYSTEM","RoomInfo":{"RoomId":"live-1","RoomName":"n","CreateTime":1703589922}}"#;
        let create = parse(sample).unwrap();
        assert_eq!(create.event_time.millis(), 1_703_589_922_000);
        // EventTime, at the top or inside RoomInfo, wins over CreateTime.
        let inner = sample.replace(
            r#""CreateTime""#,
            r#""EventTime":1703589922780,"CreateTime""#,
        );
        assert_eq!(
            parse(&inner).unwrap().event_time.millis(),
            1_703_589_922_780
        );
        let top = sample.replace(
            r#""Operator_Account""#,
            r#""EventTime":77,"Operator_Account""#,
        );
        assert_eq!(parse(&top).unwrap().event_time.millis(), 77);
        // Neither: refused as before; CreateTime 0 is no time.
        for none in [
            sample.replace(r#","CreateTime":1703589922"#, ""),
            sample.replace("1703589922", "0"),
        ] {
            assert_eq!(rejected(&none).kind, RejectionKind::MissingField, "{none}");
        }
        let huge = sample.replace("1703589922", "9223372036854775807");
        assert!(rejected(&huge).info.contains("RoomInfo.CreateTime"));
        // Only a Live create: an update or a Room create still needs EventTime.
        let update = sample.replace("AfterCreateRoom", "AfterUpdateRoomInfo");
        assert_eq!(rejected(&update).kind, RejectionKind::MissingField);
        let room = sample.replace("Live.", "Room.");
        assert_eq!(rejected(&room).kind, RejectionKind::MissingField);
    }

    #[test]
    fn short_texts_are_bounded() {
        let leave = |extra: &str| {
            format!(
                r#"{{"CallbackCommand":"Room.CallbackAfterMemberLeave","RoomId":"r","MemberList_Account":["a"],"EventTime":5,{extra}}}"#
            )
        };
        let cases = [
            ("Type", MAX_TYPE_BYTES),
            ("Reason", MAX_REASON_BYTES),
            ("Operator_Account", MAX_TYPE_BYTES),
        ];
        for (field, max) in cases {
            let at = leave(&format!(r#""{field}":"{}""#, "x".repeat(max)));
            assert!(parse(&at).is_ok(), "{field} at its bound");
            let past = leave(&format!(r#""{field}":"{}""#, "x".repeat(max + 1)));
            let r = rejected(&past);
            assert_eq!(r.kind, RejectionKind::OutOfBounds, "{field}");
            assert!(r.info.starts_with(field), "{:?}", r.info);
        }
        let state = format!(
            r#"{{"CallbackCommand":"Live.CallbackAfterMemberStateChanged","RoomId":"r","EventTime":5,"EventType":"Offline","EventCause":"{}","MemberList":[{{"Member_Account":"a"}}]}}"#,
            "c".repeat(MAX_TYPE_BYTES + 1)
        );
        assert!(rejected(&state).info.starts_with("EventCause"));
    }

    #[test]
    fn the_reserved_prefix_in_any_spelling_is_refused() {
        for name in [
            "roomsync.Reconcile",
            "ROOMSYNC.Reconcile",
            " roomsync.Reconcile",
            "\\troomSync.anything",
        ] {
            let body = ENTER.replace("Room.CallbackAfterMemberEnter", name);
            let r = rejected(&body);
            assert_eq!(r.kind, RejectionKind::OutOfBounds, "{name:?}");
            assert!(r.info.contains("reserved"), "{:?}", r.info);
        }
        assert!(parse(&ENTER.replace("Room.CallbackAfterMemberEnter", "roomsync2.X")).is_ok());
    }

    #[test]
    fn live_member_refusals_name_the_field() {
        let state = |rest: &str| {
            format!(
                r#"{{"CallbackCommand":"Live.CallbackAfterMemberStateChanged","RoomId":"r","EventTime":5,{rest}}}"#
            )
        };
        let cases = [
            (state(r#""EventCause":"Enter","MemberList":[{"Member_Account":"a"}]"#), RejectionKind::MissingField, "EventType"),
            (state(r#""EventType":"Sleeping","EventCause":"Enter","MemberList":[{"Member_Account":"a"}]"#), RejectionKind::OutOfBounds, "EventType"),
            (state(r#""EventType":7,"EventCause":"Enter","MemberList":[{"Member_Account":"a"}]"#), RejectionKind::WrongType, "EventType"),
            (state(r#""EventType":"Online","MemberList":[{"Member_Account":"a"}]"#), RejectionKind::MissingField, "EventCause"),
            (state(r#""EventType":"Online","EventCause":"","MemberList":[{"Member_Account":"a"}]"#), RejectionKind::OutOfBounds, "EventCause"),
            (state(r#""EventType":"Online","EventCause":["Enter"],"MemberList":[{"Member_Account":"a"}]"#), RejectionKind::WrongType, "EventCause"),
            (state(r#""EventType":"Online","EventCause":"Enter","MemberList":[]"#), RejectionKind::OutOfBounds, "MemberList"),
            (state(r#""EventType":"Online","EventCause":"Enter""#), RejectionKind::MissingField, "MemberList"),
            (state(r#""EventType":"Online","EventCause":"Enter","MemberList":["a"]"#), RejectionKind::WrongType, "MemberList[0]"),
            (state(r#""EventType":"Online","EventCause":"Enter","MemberList":[{"NameCard":"a"}]"#), RejectionKind::MissingField, "MemberList[0].Member_Account"),
            (state(r#""EventType":"Online","EventCause":"Enter","MemberList":[{"Member_Account":-5}]"#), RejectionKind::WrongType, "MemberList[0].Member_Account"),
            (r#"{"CallbackCommand":"Live.CallbackAfterCreateRoom","RoomInfo":{"RoomId":"r"}}"#.to_owned(), RejectionKind::MissingField, "EventTime"),
            (r#"{"CallbackCommand":"Live.CallbackAfterCreateRoom","RoomInfo":{"RoomId":"r","EventTime":"soon"}}"#.to_owned(), RejectionKind::WrongType, "RoomInfo.EventTime"),
            (r#"{"CallbackCommand":"Live.CallbackAfterDestroyRoom","EventTime":5}"#.to_owned(), RejectionKind::MissingField, "RoomId"),
        ];
        for (body, kind, field) in cases {
            let r = rejected(&body);
            assert_eq!(r.kind, kind, "{body}: {r:?}");
            assert!(r.info.contains(field), "{:?} should name {field}", r.info);
        }
        let many: Vec<String> = (0..10_001)
            .map(|i| format!(r#"{{"Member_Account":"u{i}"}}"#))
            .collect();
        let body = state(&format!(
            r#""EventType":"Online","EventCause":"Enter","MemberList":[{}]"#,
            many.join(",")
        ));
        assert!(rejected(&body).info.contains("10000"));
        // An unknown cause is kept as sent, like an unknown leave Type.
        let kicked = parse(&state(
            r#""EventType":"Offline","EventCause":"Kicked","MemberList":[{"Member_Account":"a"}]"#,
        ))
        .unwrap();
        assert_eq!(kicked.exit_type(), Some("Kicked"));
    }

    #[test]
    fn numbers_postgresql_cannot_store_are_refused_by_path() {
        for (extra, path) in [
            (r#""X":1e999999"#, "X"),
            (r#""X":-1e-999999"#, "X"),
            (r#""X":1e131072"#, "X"),
            (r#""Note":{"deep":[1,2,1E+131072]}"#, "Note.deep[2]"),
            (r#""X":0.0e-16384"#, "X"),
        ] {
            let body = ENTER.replace(r#""EventTime":5"#, &format!(r#""EventTime":5,{extra}"#));
            let r = rejected(&body);
            assert_eq!(r.kind, RejectionKind::OutOfBounds, "{extra}");
            assert!(r.info.starts_with(path), "{:?} should name {path}", r.info);
        }
        let info = r#"{"CallbackCommand":"Room.CallbackAfterUpdateRoomInfo","EventTime":5,"RoomInfo":{"RoomId":"r","Extra":1e-16384}}"#;
        assert!(rejected(info).info.starts_with("RoomInfo.Extra"));
        // The largest of each kind still fits.
        let fits = ENTER.replace(
            r#""EventTime":5"#,
            r#""EventTime":5,"A":9e131071,"B":1e-16383,"C":0e-16383"#,
        );
        assert!(parse(&fits).is_ok());
    }

    #[test]
    fn unknown_fields_are_checked_without_a_value_and_in_key_order() {
        // The first fault in key order is named, in a known field or not.
        let body = ENTER.replace(
            r#""EventTime":5"#,
            r#""EventTime":5,"Zed":"\u0000","Alpha":[1,{"b":[0,1e999999]}]"#,
        );
        assert_eq!(
            rejected(&body).info,
            "Alpha[1].b[1] is a number beyond what PostgreSQL's numeric type can store"
        );
        let body = ENTER.replace(r#""r1""#, r#""r1","Zed":"\u0000","Aa":"\u0000""#);
        assert_eq!(rejected(&body).info, "Aa contains a NUL character");
        // A known field before an unknown one.
        let body = ENTER.replace(r#""EventTime":5"#, r#""EventTime":5,"Z":"\u0000""#);
        let body = body.replace(r#""CallbackCommand""#, r#""Aa":1,"CallbackCommand""#);
        assert_eq!(rejected(&body).info, "Z contains a NUL character");
        // A repeated key: jsonb reads the value a later duplicate hides, and refuses it.
        let body = ENTER.replace(r#""EventTime":5"#, r#""EventTime":5,"X":"\u0000","X":1"#);
        assert_eq!(rejected(&body).info, "X contains a NUL character");
        let body = ENTER.replace(r#""EventTime":5"#, r#""EventTime":5,"X":1e999999,"X":1"#);
        assert_eq!(
            rejected(&body).info,
            "X is a number beyond what PostgreSQL's numeric type can store"
        );
        let body = ENTER.replace(
            r#""EventTime":5"#,
            r#""EventTime":5,"X":1,"X":{"\u0000":2}"#,
        );
        assert_eq!(rejected(&body).info, r"X.\u{0} contains a NUL character");
        // Many small values cost no value each, and are still checked to the last.
        let junk = format!("[{}1e131072]", "0,{},[],".repeat(100_000));
        let body = ENTER.replace(
            r#""EventTime":5"#,
            &format!(r#""EventTime":5,"Junk":{junk}"#),
        );
        assert_eq!(
            rejected(&body).info,
            "Junk[300000] is a number beyond what PostgreSQL's numeric type can store"
        );
        // Broken JSON after a fault is still broken JSON.
        let body = ENTER.replace(r#""EventTime":5}"#, r#""EventTime":5,"X":"\u0000","#);
        assert_eq!(rejected(&body).kind, RejectionKind::NotJson);
    }

    #[test]
    fn a_seat_list_of_the_documented_length_with_every_field_passes() {
        let seats: Vec<String> = (0..MAX_LIST_ENTRIES)
            .map(|i| {
                format!(
                    r#"{{"Index":{i},"Member_Account":"user-{i}","IsTakenDisabled":false,"IsVideoDisabled":"true","IsAudioDisabled":false}}"#
                )
            })
            .collect();
        let body = format!(
            r#"{{"CallbackCommand":"Mic.CallbackAfterSeatInfoChanged","RoomId":"r","EventTime":5,"SeatList":[{}]}}"#,
            seats.join(",")
        );
        let callback = parse(&body).unwrap_or_else(|r| panic!("{}", r.info));
        let Event::SeatInfoChanged { seats } = &callback.event else {
            panic!("a seat change");
        };
        assert_eq!(seats.len(), MAX_LIST_ENTRIES);
    }

    #[test]
    fn strings_jsonb_cannot_hold_are_refused_wherever_they_are() {
        let with =
            |extra: &str| ENTER.replace(r#""EventTime":5"#, &format!(r#""EventTime":5,{extra}"#));
        for extra in [
            // In a field roomsync does not read, deep or not; as a key; hidden by a duplicate.
            r#""Junk":"\ud800""#,
            r#""Junk":"\udc00""#,
            r#""Junk":["a",{"b":"x\ud800\u0041"}]"#,
            r#""Junk":"\ud800\ud800\udc00""#,
            r#""Junk":"\uDBFF""#,
            r#""Junk":{"\ud800":1}"#,
            r#""\udfff":1"#,
            r#""X":"\ud800","X":1"#,
            r#""RoomInfo":{"A":"\ud800"},"RoomInfo":{}"#,
            // In a field roomsync reads, or a key serde_json decodes.
            r#""Reason":"\ud800""#,
        ] {
            let r = rejected(&with(extra));
            assert_eq!(r.kind, RejectionKind::LoneSurrogate, "{extra}: {r:?}");
            assert!(r.info.contains("lone surrogate"), "{extra}: {}", r.info);
        }
        assert_eq!(
            rejected(&ENTER.replace(r#""r1""#, r#""r\ud800""#)).kind,
            RejectionKind::LoneSurrogate
        );
        // A NUL escape anywhere, also a key's, also hidden.
        for extra in [r#""Junk":{"a\u0000":1}"#, r#""Y":{"\u0000":1},"Y":2"#] {
            assert_eq!(
                rejected(&with(extra)).kind,
                RejectionKind::NulCharacter,
                "{extra}"
            );
        }
        // Pairs are characters; escaped backslashes are text; broken JSON stays broken JSON.
        for fine in [
            r#""Junk":"\ud83d\ude00""#,
            r#""Junk":"\\ud800""#,
            r#""Junk":"\\\\ud800\\u0000""#,
            r#""Junk":"\uD83D\uDE00\u00e9""#,
        ] {
            assert!(parse(&with(fine)).is_ok(), "{fine}");
        }
        assert_eq!(
            rejected(&with(r#""Junk":"\ud800"#)).kind,
            RejectionKind::NotJson
        );
        assert_eq!(
            rejected(&with(r#""Junk":"\ud800\x""#)).kind,
            RejectionKind::NotJson
        );
    }

    #[test]
    fn numeric_bounds_match_postgresql() {
        use crate::callback::numeric::fits;
        for ok in [
            "0",
            "-0",
            "1.5",
            "1e131071",
            "9.99e131071",
            "12e131070",
            "1e-16383",
            "0.5e-16382",
            "0e-16383",
            "0.000e-16380",
            "100000e-16383",
            "0e999999999",
        ] {
            assert!(fits(ok), "{ok}");
        }
        for bad in [
            "1e131072",
            "10e131071",
            "1e-16384",
            "0.5e-16383",
            "0e-16384",
            "1e1073741823",
            "0e1073741823",
            "1e99999999999999999999",
            "1.0000e-16380",
        ] {
            assert!(!fits(bad), "{bad}");
        }
    }

    #[test]
    fn messages_escape_what_the_sender_chose() {
        let body = ENTER.replace(
            r#""EventTime":5"#,
            r#""EventTime":5,"k\nWARN forged line\u001b[31m":"\u0000""#,
        );
        let r = rejected(&body);
        assert_eq!(r.kind, RejectionKind::NulCharacter);
        assert!(!r.info.chars().any(char::is_control), "{:?}", r.info);
        assert!(
            r.info.contains(r"k\nWARN forged line\u{1b}[31m"),
            "{:?}",
            r.info
        );
        let long_key = format!(r#""EventTime":5,"{}":"\u0000""#, "k".repeat(5000));
        let r = rejected(&ENTER.replace(r#""EventTime":5"#, &long_key));
        assert!(
            r.info.len() < 200,
            "a long key is cut: {} bytes",
            r.info.len()
        );
    }

    #[test]
    fn a_query_value_that_is_not_utf8_is_refused() {
        let r = parse_with(ENTER, "ClientIP=%C3%28").unwrap_err();
        assert_eq!(r.kind, RejectionKind::WrongType);
        assert!(r.info.contains("ClientIP"));
        let ok = parse_with(ENTER, "ClientIP=%E4%B8%AD&Sign=%FF").unwrap();
        assert_eq!(ok.meta.client_ip.as_deref(), Some("中"));
    }

    #[test]
    fn dedup_key_ignores_member_order_and_repeats() {
        let a = parse(ENTER).unwrap();
        let b = parse(r#"{"CallbackCommand":"Room.CallbackAfterMemberEnter","RoomId":"r1","MemberList_Account":["b","a","b"],"EventTime":5}"#).unwrap();
        assert_eq!(a.dedup_key, b.dedup_key);
        let other_time = parse(&ENTER.replace("\"EventTime\":5", "\"EventTime\":6")).unwrap();
        let other_members = parse(&ENTER.replace("[\"a\",\"b\"]", "[\"a\"]")).unwrap();
        let other_room = parse(&ENTER.replace("r1", "r2")).unwrap();
        for other in [other_time, other_members, other_room] {
            assert_ne!(a.dedup_key, other.dedup_key);
        }
    }

    #[test]
    fn dedup_key_covers_content_with_an_effect_in_canonical_form() {
        let seat = |list: &str| {
            parse(&format!(
                r#"{{"CallbackCommand":"Mic.CallbackAfterSeatInfoChanged","RoomId":"r","EventTime":5,"SeatList":{list}}}"#
            ))
            .unwrap()
        };
        let alice = seat(r#"[{"Index":0,"Member_Account":"alice"}]"#);
        let bob = seat(r#"[{"Index":1,"Member_Account":"bob"}]"#);
        let free = seat(r#"[{"Index":0,"Member_Account":""}]"#);
        assert_ne!(alice.dedup_key, bob.dedup_key);
        assert_ne!(alice.dedup_key, free.dedup_key);
        // Order of the entries, of the keys, whitespace, a flag as a string: the same list.
        let two = seat(r#"[{"Index":0,"Member_Account":"a"},{"Index":1,"IsAudioDisabled":true}]"#);
        let again =
            seat(r#"[ {"IsAudioDisabled":"true", "Index":1}, {"Member_Account":"a","Index":0} ]"#);
        assert_eq!(two.dedup_key, again.dedup_key);

        let update = |info: &str| {
            parse(&format!(
                r#"{{"CallbackCommand":"Room.CallbackAfterUpdateRoomInfo","EventTime":5,"RoomInfo":{info}}}"#
            ))
            .unwrap()
        };
        let name = update(r#"{"RoomId":"r","RoomName":"a","Deep":{"x":1,"y":[true]}}"#);
        let same =
            update(r#"{ "Deep" : { "y" : [ true ] , "x" : 1 }, "RoomName":"a","RoomId":"r"}"#);
        let mode = update(r#"{"RoomId":"r","TakeSeatMode":"ApplyToTake"}"#);
        assert_eq!(name.dedup_key, same.dedup_key);
        assert_ne!(name.dedup_key, mode.dedup_key);
        let create = |name: &str| {
            parse(&format!(
                r#"{{"CallbackCommand":"Room.CallbackAfterCreateRoom","EventTime":5,"RoomInfo":{{"RoomId":"r","RoomName":"{name}"}}}}"#
            ))
            .unwrap()
        };
        assert_ne!(create("a").dedup_key, create("b").dedup_key);

        // A leave's Reason and a member event's MemberCount have an effect too.
        let leave = |extra: &str| {
            parse(&format!(
                r#"{{"CallbackCommand":"Room.CallbackAfterMemberLeave","RoomId":"r","MemberList_Account":["a"],"Type":"Kicked","EventTime":5{extra}}}"#
            ))
            .unwrap()
        };
        let plain = leave("");
        assert_ne!(plain.dedup_key, leave(r#","Reason":"x""#).dedup_key);
        assert_ne!(plain.dedup_key, leave(r#","MemberCount":3"#).dedup_key);
        // The Operator_Account only reaches the history: the same callback.
        assert_eq!(
            plain.dedup_key,
            leave(r#","Operator_Account":"op""#).dedup_key
        );

        // The first version's key is kept beside, for redeliveries of what it stored: it left
        // the content out, so the three seat changes share it.
        assert_eq!(alice.legacy_key, free.legacy_key);
        assert!(alice.legacy_key.is_some());
        assert_ne!(alice.legacy_key, Some(alice.dedup_key));
        // A destroy has no content of its own: one key, as before.
        let destroy = parse(
            r#"{"CallbackCommand":"Room.CallbackAfterDestroyRoom","RoomId":"r","EventTime":5}"#,
        )
        .unwrap();
        assert_eq!(destroy.legacy_key, None);
    }

    #[test]
    fn unknown_command_without_event_time_dedups_on_its_body() {
        let a = parse(r#"{"CallbackCommand":"X.New","Value":1}"#).unwrap();
        let b = parse(r#"{"CallbackCommand":"X.New","Value":2}"#).unwrap();
        assert_ne!(a.dedup_key, b.dedup_key);
        // A redelivery arrives later: still the same callback.
        let later = chrono::Utc::now() + chrono::Duration::seconds(5);
        let again = parse_body(
            br#"{"CallbackCommand":"X.New","Value":1}"#,
            &CallbackQuery::default(),
            SdkAppId::parse(APP).unwrap(),
            later,
            None,
        )
        .unwrap();
        assert_eq!(a.dedup_key, again.dedup_key);
    }

    /// Arbitrary input never panics the parsers, and whatever they accept is within every
    /// bound the store relies on.
    mod properties {
        use proptest::prelude::*;
        use serde_json::Value;

        use crate::callback::{
            CallbackQuery, SdkAppId,
            limits::MAX_LIST_ENTRIES,
            parse::parse_body,
            storable::{check_storable, top_level, unstorable_escape},
        };

        const KEYS: &[&str] = &[
            "CallbackCommand",
            "RoomId",
            "EventTime",
            "MemberList_Account",
            "MemberCount",
            "Type",
            "Reason",
            "RoomInfo",
            "SeatList",
            "Index",
            "Member_Account",
            "Operator_Account",
            "IsSeatEnabled",
            "MaxMemberCount",
            "Extra",
        ];
        const COMMANDS: &[&str] = &[
            "Room.CallbackAfterMemberEnter",
            "Room.CallbackAfterMemberLeave",
            "Room.CallbackAfterCreateRoom",
            "Room.CallbackAfterDestroyRoom",
            "Room.CallbackUpdateRoomInfo",
            "Mic.CallbackAfterSeatInfoChanged",
            "X.Unknown",
        ];

        /// JSON text shaped like callbacks: known keys, odd values, odd numbers, escapes.
        fn json_like() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                Just("null".to_owned()),
                any::<bool>().prop_map(|b| b.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                "-?[0-9]{1,30}(\\.[0-9]{1,20})?([eE][-+]?[0-9]{1,7})?",
                prop::sample::select(COMMANDS).prop_map(|c| format!("{c:?}")),
                "\"([a-z\\\\\"]|\\\\u00[0-9a-f]{2}|\\\\u[dD][0-9a-fA-F]{3}|[\\x{80}-\\x{10ffff}]){0,300}\"",
            ];
            leaf.prop_recursive(4, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8)
                        .prop_map(|items| format!("[{}]", items.join(","))),
                    prop::collection::vec((prop::sample::select(KEYS), inner), 0..10).prop_map(
                        |fields| {
                            let fields: Vec<String> =
                                fields.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                            format!("{{{}}}", fields.join(","))
                        }
                    ),
                ]
            })
        }

        fn check(body: &[u8], query: &str) {
            let query = CallbackQuery::parse(query);
            let app = SdkAppId::parse("1400000001").unwrap();
            match parse_body(
                body,
                &query,
                app,
                chrono::Utc::now(),
                Some(std::time::Duration::from_secs(300)),
            ) {
                Ok(callback) => {
                    let value: Value = serde_json::from_str(&callback.payload).unwrap();
                    assert!(check_storable(&value, "body").is_ok());
                    if let Some(change) = callback.member_change() {
                        assert!(change.members.len() <= MAX_LIST_ENTRIES);
                    }
                    assert!(callback.event_time.millis() > 0);
                }
                Err(rejection) => {
                    assert!(!rejection.info.is_empty());
                    assert!(!rejection.info.chars().any(char::is_control));
                }
            }
        }

        /// The checks made while parsing give what a check of the whole parsed value gives:
        /// the same JSON errors, and the same first fault where there are several. Where a key
        /// repeats, the parsed value lost the hidden values: the checks find at least its
        /// faults. A lone surrogate serde_json refuses to decode, they find by its escape.
        fn same_as_a_value_tree(text: &str) {
            let tree = serde_json::from_str::<Value>(text);
            let escape = unstorable_escape(text.as_bytes());
            match (top_level(text), tree) {
                // Refused for a surrogate the checks did not decode: broken JSON further on
                // may be what they report.
                (_, Err(b)) if escape.is_some() && b.to_string().contains("hex escape") => {}
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{text}"),
                (Ok(None), Ok(value)) => assert!(!value.is_object(), "{text}"),
                (Ok(Some(top)), Ok(value)) if has_repeated_keys(text) => {
                    if check_storable(&value, "body").is_err() {
                        assert!(top.check_storable().is_err(), "{text}");
                    }
                }
                (Ok(Some(top)), Ok(value)) => assert_eq!(
                    top.check_storable().err(),
                    check_storable(&value, "body").err(),
                    "{text}"
                ),
                (a, b) => panic!("{text}: {:?} against {b:?}", a.map(|t| t.is_some())),
            }
        }

        /// Whether any object of `text` (valid JSON) has a key twice.
        fn has_repeated_keys(text: &str) -> bool {
            struct Repeats;
            impl<'de> serde::de::Visitor<'de> for Repeats {
                type Value = bool;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("JSON")
                }
                fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
                    Ok(false)
                }
                fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
                    Ok(false)
                }
                fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
                    Ok(false)
                }
                fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
                    Ok(false)
                }
                fn visit_str<E>(self, _: &str) -> Result<bool, E> {
                    Ok(false)
                }
                fn visit_unit<E>(self) -> Result<bool, E> {
                    Ok(false)
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<bool, A::Error> {
                    let mut any = false;
                    while let Some(r) = seq.next_element_seed(Seed)? {
                        any |= r;
                    }
                    Ok(any)
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<bool, A::Error> {
                    let mut seen = std::collections::HashSet::new();
                    let mut any = false;
                    while let Some(key) = map.next_key::<String>()? {
                        any |= !seen.insert(key);
                        any |= map.next_value_seed(Seed)?;
                    }
                    Ok(any)
                }
            }
            struct Seed;
            impl<'de> serde::de::DeserializeSeed<'de> for Seed {
                type Value = bool;
                fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
                    d.deserialize_any(Repeats)
                }
            }
            use serde::de::DeserializeSeed;
            Seed.deserialize(&mut serde_json::Deserializer::from_str(text))
                .unwrap_or(true)
        }

        proptest! {
            #[test]
            fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..2048), query in ".{0,200}") {
                check(&body, &query);
                if let Ok(text) = std::str::from_utf8(&body) {
                    same_as_a_value_tree(text);
                }
            }

            #[test]
            fn callback_shaped_json(body in json_like(), command in prop::sample::select(COMMANDS)) {
                check(body.as_bytes(), &format!("CallbackCommand={command}&ClientIP=%FF"));
                check(body.as_bytes(), &format!("CallbackCommand={command}"));
                check(body.as_bytes(), "");
                same_as_a_value_tree(&body);
                // A key with a NUL character, known fields around it.
                same_as_a_value_tree(&body.replace("\"Extra\"", "\"E\\u0000\""));
            }

            #[test]
            fn arbitrary_query_strings(raw in "([a-zA-Z%+=&]|%[0-9a-fA-F]{2}|[\\x{80}-\\x{10ffff}]){0,300}") {
                let query = CallbackQuery::parse(&raw);
                // A value that is not UTF-8 is flagged, never stored half-decoded.
                for name in &query.not_utf8 {
                    let slot = match *name {
                        "CallbackCommand" => &query.command,
                        "ClientIP" => &query.client_ip,
                        "OptPlatform" => &query.opt_platform,
                        "SdkAppid" => &query.sdk_app_id,
                        "Sign" => &query.sign,
                        _ => &query.request_time,
                    };
                    prop_assert!(slot.is_none());
                }
            }
        }
    }
}
