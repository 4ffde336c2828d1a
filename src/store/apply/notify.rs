//! `NOTIFY room_members`: who changed, in payloads under PostgreSQL's size limit.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use super::Room;

/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
pub(super) const NOTIFY_MAX_PAYLOAD: usize = 7999;

/// The payloads that announce the batch's notices, grouped by room and by the EventTime that
/// caused each change.
pub(super) fn payloads(
    notices: &BTreeMap<(Room<'_>, String), (DateTime<Utc>, bool)>,
) -> Vec<String> {
    let mut groups: BTreeMap<(Room<'_>, DateTime<Utc>), Changes<'_>> = BTreeMap::new();
    for ((room, user), (at, in_room)) in notices {
        groups
            .entry((*room, *at))
            .or_insert_with(|| Changes::new(*room, *at))
            .add(user, *in_room);
    }
    groups.values().flat_map(Changes::payloads).collect()
}

/// Members of one room whose row changed by events at one EventTime.
pub(super) struct Changes<'a> {
    room: Room<'a>,
    at: DateTime<Utc>,
    entered: Vec<&'a str>,
    left: Vec<&'a str>,
}

impl<'a> Changes<'a> {
    pub(super) fn new(room: Room<'a>, at: DateTime<Utc>) -> Self {
        Self {
            room,
            at,
            entered: Vec::new(),
            left: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, user: &'a str, in_room: bool) {
        if in_room {
            self.entered.push(user);
        } else {
            self.left.push(user);
        }
    }

    /// The payloads, each under [`NOTIFY_MAX_PAYLOAD`] bytes as encoded: sizes are those of
    /// the JSON text (an escaped byte takes up to six), room id included. At the bounds of
    /// the ids (256 bytes, every byte escaped) one payload holds at least four users.
    pub(super) fn payloads(&self) -> Vec<String> {
        let event_at = self.at.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut payloads = Vec::new();
        for (users, in_room) in [(&self.entered, true), (&self.left, false)] {
            let empty = self.payload(&[], in_room, &event_at).len();
            let mut chunk: Vec<&str> = Vec::new();
            let mut size = empty;
            for user in users.iter() {
                // The user's JSON string, and a comma unless it is the first.
                let cost = json_string_len(user) + usize::from(!chunk.is_empty());
                if size + cost > NOTIFY_MAX_PAYLOAD && !chunk.is_empty() {
                    payloads.push(self.payload(&chunk, in_room, &event_at));
                    chunk.clear();
                    size = empty;
                    size += json_string_len(user);
                } else {
                    size += cost;
                }
                chunk.push(user);
            }
            if !chunk.is_empty() {
                payloads.push(self.payload(&chunk, in_room, &event_at));
            }
        }
        payloads
    }

    fn payload(&self, users: &[&str], in_room: bool, event_at: &str) -> String {
        json!({
            "sdk_app_id": self.room.app,
            "room_id": self.room.id,
            "user_ids": users,
            "in_room": in_room,
            "event_at": event_at,
        })
        .to_string()
    }
}

/// Length of `text` as a JSON string literal, quotes included.
pub(super) fn json_string_len(text: &str) -> usize {
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, text).expect("counting cannot fail");
    counter.0
}

pub(super) struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn notify_payloads_stay_under_the_limit_at_the_worst_case() {
        // The worst case of the bounds: 256-byte ids whose every byte is escaped (\u0001).
        let worst = |i: usize| {
            let mut id = format!("{i:05}");
            id.extend(std::iter::repeat_n('\u{1}', 251));
            id
        };
        let room_id: String = std::iter::repeat_n('\u{1f}', 256).collect();
        let mut changes = Changes::new(
            Room {
                app: i64::MAX,
                id: &room_id,
            },
            DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
        );
        let users: Vec<String> = (0..10_000).map(worst).collect();
        for user in &users {
            changes.add(user, true);
        }
        changes.add(r#"q"00001"#, false);
        changes.add("plain", false);
        let payloads = changes.payloads();
        let mut seen = Vec::new();
        for payload in &payloads {
            assert!(payload.len() < 8000, "{} bytes", payload.len());
            let value: Value = serde_json::from_str(payload).unwrap();
            assert_eq!(value["room_id"], json!(room_id));
            for user in value["user_ids"].as_array().unwrap() {
                seen.push((user.as_str().unwrap().to_owned(), value["in_room"].clone()));
            }
        }
        assert_eq!(seen.len(), 10_002, "every user announced once");
        // Four such users fit in one payload; the leaves take one more.
        assert_eq!(payloads.len(), 10_000 / 4 + 1, "chunks are filled");
        assert_eq!(seen[10_000], (r#"q"00001"#.to_owned(), json!(false)));
    }
}
