//! Drift-repair corrections as domain events (docs/drift-repair.md#corrections-are-events): made
//! from what the reconciler observed, and read back from their history rows by `roomsync
//! rebuild`. A correction's kind, members and reason are columns of its row; only a seat list
//! is read from the stored REST answer.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{
    callback::{Callback, Event, EventTime, Id, IdError, MemberChange, SdkAppId, event_types},
    tencent::answer::{MalformedAnswer, seats_of_answer},
};

/// A correction observed at `observed_at`, standing for `event`; `payload` is the REST answer
/// it came from.
pub fn correction_at(
    app: SdkAppId,
    room: &Id,
    observed_at: DateTime<Utc>,
    event: Event,
    payload: &Value,
) -> Callback {
    let at =
        EventTime::from_millis(observed_at.timestamp_millis()).expect("the clock is after 1970");
    Callback::correction(app, room.clone(), at, event, payload)
}

/// The columns of a correction's `room_events` row.
#[derive(Debug, Clone, Copy)]
pub struct StoredCorrection<'a> {
    pub sdk_app_id: i64,
    pub room_id: &'a str,
    pub event_type: Option<&'a str>,
    pub member_list: &'a [String],
    pub member_count: Option<i32>,
    pub reason: Option<&'a str>,
    pub event_at: DateTime<Utc>,
    /// `payload` as text.
    pub payload: &'a str,
}

/// Why a stored correction cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum CorrectionError {
    #[error("sdk_app_id {0} is not a positive integer")]
    AppId(i64),
    #[error("room_id {0}")]
    RoomId(IdError),
    #[error("member_list {0}")]
    Member(IdError),
    #[error("payload is not JSON")]
    Payload(#[source] serde_json::Error),
    #[error("the stored seat list")]
    Seats(#[source] MalformedAnswer),
    #[error("unknown correction {0:?}")]
    Kind(Option<String>),
}

impl StoredCorrection<'_> {
    /// The correction again, as it was written.
    pub fn decode(&self) -> Result<Callback, CorrectionError> {
        let app =
            SdkAppId::from_i64(self.sdk_app_id).ok_or(CorrectionError::AppId(self.sdk_app_id))?;
        let room = Id::parse(self.room_id).map_err(CorrectionError::RoomId)?;
        // Every correction's payload is JSON written by the reconciler: anything else is a
        // damaged row, not one to replay with a made-up payload.
        let payload: Value =
            serde_json::from_str(self.payload).map_err(CorrectionError::Payload)?;
        let change = |reason: Option<&str>| -> Result<MemberChange, CorrectionError> {
            Ok(MemberChange {
                members: self
                    .member_list
                    .iter()
                    .map(|m| Id::parse(m).map_err(CorrectionError::Member))
                    .collect::<Result<_, _>>()?,
                member_count: self.member_count,
                kind: None,
                reason: reason.map(str::to_owned),
            })
        };
        let event = match self.event_type {
            Some(event_types::ENTER) => Event::MemberEnter(change(None)?),
            Some(event_types::LEAVE) => Event::MemberLeave(change(self.reason)?),
            Some(event_types::DESTROY) => Event::DestroyRoom,
            Some(event_types::SEATS) => Event::SeatInfoChanged {
                seats: seats_of_answer(&payload).map_err(CorrectionError::Seats)?,
            },
            other => return Err(CorrectionError::Kind(other.map(str::to_owned))),
        };
        Ok(correction_at(app, &room, self.event_at, event, &payload))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn stored<'a>(
        event_type: &'a str,
        members: &'a [String],
        payload: &'a str,
    ) -> StoredCorrection<'a> {
        StoredCorrection {
            sdk_app_id: 1_400_000_001,
            room_id: "r1",
            event_type: Some(event_type),
            member_list: members,
            member_count: Some(2),
            reason: Some("absent from Tencent's member list"),
            event_at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            payload,
        }
    }

    #[test]
    fn a_correction_reads_back_as_written() {
        let app = SdkAppId::from_i64(1_400_000_001).unwrap();
        let room = Id::parse("r1").unwrap();
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let answer = json!({"get_room_info": {}, "get_room_member_list": []});
        let change = MemberChange {
            members: vec![Id::parse("u1").unwrap()],
            member_count: Some(2),
            kind: None,
            reason: Some("absent from Tencent's member list".into()),
        };
        let written = correction_at(app, &room, at, Event::MemberLeave(change), &answer);
        let members = ["u1".to_owned()];
        let text = answer.to_string();
        let read = stored(event_types::LEAVE, &members, &text)
            .decode()
            .unwrap();
        assert_eq!(read, written);
    }

    #[test]
    fn seats_come_from_the_stored_answer() {
        let answer = json!({"Response": {"SeatList": [{"Index": 1, "Member_Account": "u1"}]}});
        let text = answer.to_string();
        let read = stored(event_types::SEATS, &[], &text).decode().unwrap();
        let Event::SeatInfoChanged { seats } = read.event else {
            panic!("{:?}", read.event);
        };
        assert_eq!(seats.len(), 1);
        assert_eq!(seats[0].member.as_ref().unwrap().as_str(), "u1");
    }

    #[test]
    fn a_damaged_row_is_an_error_not_a_guess() {
        let members = ["u1".to_owned()];
        let bad_member = ["".to_owned()];
        let cases = [
            (
                stored(event_types::ENTER, &members, "{not json"),
                "payload is not JSON",
            ),
            (
                stored(event_types::SEATS, &[], r#"{"Response": {"SeatList": {}}}"#),
                "seat list",
            ),
            (stored(event_types::ENTER, &bad_member, "{}"), "member_list"),
            (stored("Sideways", &members, "{}"), "unknown correction"),
            (
                StoredCorrection {
                    room_id: "",
                    ..stored(event_types::DESTROY, &[], "{}")
                },
                "room_id",
            ),
            (
                StoredCorrection {
                    sdk_app_id: 0,
                    ..stored(event_types::DESTROY, &[], "{}")
                },
                "sdk_app_id",
            ),
        ];
        for (row, problem) in cases {
            let err = row.decode().unwrap_err().to_string();
            assert!(err.contains(problem), "{err:?} should say {problem}");
        }
    }
}
