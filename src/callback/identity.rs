//! What makes two deliveries the same callback (docs/semantics.md#exactly-once): the dedup key
//! of a [`CallbackParts`], and the canonical form of the content it covers.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::domain::{
    CallbackParts, Command, Event, Id, MemberChange, Seat, event_type, history_reason,
};

impl CallbackParts {
    /// What makes two deliveries "the same callback" (docs/semantics.md#exactly-once): app,
    /// command, room, EventTime, Type, the member set (order-insensitive), and the content
    /// that has an effect: a member event's `MemberCount` and `Reason`, a room info in
    /// canonical form, a seat list. The app is a column of its own. Unknown commands without
    /// an EventTime carry their whole body instead.
    ///
    /// Returns the key, and the key of the first version (which left the content out) when
    /// the two differ. The second is domain-separated, so it never equals a first-version key.
    pub(super) fn dedup_keys(&self) -> ([u8; 32], Option<[u8; 32]>) {
        let mut identity = KeyParts::default();
        identity.part(self.command.as_str().as_bytes());
        identity.part(
            self.room_id
                .as_ref()
                .map_or(&[][..], |r| r.as_str().as_bytes()),
        );
        // Without a sent EventTime the time is the arrival's, which a redelivery does not share.
        if self.event_time_was_sent {
            identity.part(&self.event_time.millis().to_le_bytes());
        }
        identity.part(
            event_type(&self.command, &self.event)
                .unwrap_or("")
                .as_bytes(),
        );
        if self.command == Command::LiveMemberStateChanged {
            // Offline by Leave and Offline by HeartbeatInterrupt are two events.
            identity.part(
                history_reason(&self.command, &self.event)
                    .unwrap_or("")
                    .as_bytes(),
            );
        }
        let members = self
            .event
            .member_change()
            .map(MemberChange::distinct_members)
            .unwrap_or_default();
        identity.part(&(members.len() as u64).to_le_bytes());
        for member in members {
            identity.part(member.as_str().as_bytes());
        }
        if !self.event_time_was_sent {
            identity.part(self.payload.as_bytes());
        }
        let Some(content) = effect_content(&self.event) else {
            // Nothing beyond the first version's parts has an effect: the key is unchanged.
            return (identity.finish(), None);
        };
        let legacy = identity.clone().finish();
        identity.part(b"content");
        identity.part(&content);
        let mut key = KeyParts::default();
        key.part(KEY_V2);
        key.part(&identity.finish());
        (key.finish(), Some(legacy))
    }
}

/// Separates the second version's keys from the first's.
const KEY_V2: &[u8] = b"roomsync dedup key v2";

/// Length-prefixed parts, so no two different tuples hash the same bytes.
#[derive(Clone, Default)]
struct KeyParts(Sha256);

impl KeyParts {
    fn part(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }
    fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// The content of an event that changes the view beyond its members and type, as bytes that
/// do not depend on how it was written (key order, whitespace, a seat listed twice); `None`
/// when there is none (destroys, unknown commands).
fn effect_content(event: &Event) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match event {
        Event::MemberEnter(change) | Event::MemberLeave(change) => {
            let count = change.member_count.map(i64::from).unwrap_or(-1);
            out.extend_from_slice(&count.to_le_bytes());
            match &change.reason {
                Some(reason) => {
                    out.push(1);
                    out.extend_from_slice(reason.as_bytes());
                }
                None => out.push(0),
            }
        }
        // The invitees are not in the key: callbacks stored before the ledger kept them must
        // still be recognized (two creates that differ only in invitees are one event).
        Event::CreateRoom { info, .. } | Event::UpdateRoomInfo { info } => {
            out = canonical_json(&Value::Object(info.fields.clone())).into_bytes();
        }
        Event::SeatInfoChanged { seats } => {
            let mut sorted: Vec<&Seat> = seats.iter().collect();
            sorted.sort_by_key(|s| s.index);
            for seat in sorted {
                let member = seat.member.as_ref().map_or("", Id::as_str);
                out.extend_from_slice(&seat.index.to_le_bytes());
                out.extend_from_slice(&(member.len() as u64).to_le_bytes());
                out.extend_from_slice(member.as_bytes());
                out.extend([
                    u8::from(seat.is_taken_disabled),
                    u8::from(seat.is_video_disabled),
                    u8::from(seat.is_audio_disabled),
                ]);
            }
        }
        Event::DestroyRoom | Event::Other => return None,
    }
    Some(out)
}

/// JSON text with the keys of every object in byte order and no whitespace: one text per
/// value, however the sender wrote it (numbers are kept as sent: `1e2` and `100` differ).
pub fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                out.push('{');
                for (i, (key, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(item, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            leaf => out.push_str(&leaf.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}
