//! What a reader of the feed gets: each change made once into its JSON and its server-sent
//! event, shared by every reader; a page of them.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::store::{ChangeKind, changes::Change};

/// A change as readers get it: its position, its JSON and its server-sent event, made once
/// for every reader (one text holds both: the event is the JSON with its frame around it).
#[derive(Clone)]
pub struct Told {
    pub seq: i64,
    /// What a console's room list needs without reading the JSON again.
    pub sdk_app_id: i64,
    pub room_id: Arc<str>,
    /// The room's member count moves by this (`member.entered`: +n, `member.left`: -n).
    pub members_delta: i32,
    pub recorded_at: DateTime<Utc>,
    event: Arc<str>,
    json_at: usize,
}

impl Told {
    /// The change as JSON (one line: serde_json escapes line breaks inside strings).
    pub fn json(&self) -> &str {
        &self.event[self.json_at..self.event.len() - 2]
    }

    /// The change as a server-sent event `change` with its `seq` as id.
    pub fn event(&self) -> &str {
        &self.event
    }
}

impl From<&Change> for Told {
    fn from(change: &Change) -> Self {
        let json = serde_json::to_string(change).expect("a change serializes");
        let head = format!("id: {}\nevent: change\ndata: ", change.seq);
        let mut event = String::with_capacity(head.len() + json.len() + 2);
        event.push_str(&head);
        event.push_str(&json);
        event.push_str("\n\n");
        let n = i32::try_from(change.user_ids.len()).unwrap_or(i32::MAX);
        let kind = change.kind.as_str();
        let members_delta = if kind == ChangeKind::MemberEntered.as_str() {
            n
        } else if kind == ChangeKind::MemberLeft.as_str() {
            -n
        } else {
            0
        };
        Self {
            seq: change.seq,
            sdk_app_id: change.sdk_app_id,
            room_id: change.room_id.as_str().into(),
            members_delta,
            recorded_at: change.recorded_at,
            event: event.into(),
            json_at: head.len(),
        }
    }
}

/// What a reader gets.
pub struct Page {
    /// Each change's JSON, made once in the window whatever the number of readers.
    pub changes: Vec<Told>,
    /// The position to ask from next.
    pub next: i64,
}

impl Page {
    /// `{"changes":[…],"next":N}` from the changes' JSON, without serializing them again.
    pub fn to_json(&self) -> String {
        let size: usize = self.changes.iter().map(|c| c.json().len() + 1).sum();
        let mut out = String::with_capacity(size + 40);
        out.push_str("{\"changes\":[");
        for (i, change) in self.changes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(change.json());
        }
        out.push_str("],\"next\":");
        out.push_str(&self.next.to_string());
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_told_as_one_json_line_and_one_event() {
        let at = "2026-12-06T00:00:00Z".parse().unwrap();
        let change = Change {
            seq: 42,
            sdk_app_id: 1,
            room_id: "r\n\n<b>".into(),
            room_seq: 3,
            kind: "member.entered".into(),
            user_ids: vec!["u\r\nid: 7".into()],
            event_at: at,
            event_id: Some(9),
            cause: "callback".into(),
            recorded_at: at,
        };
        let told = Told::from(&change);
        let json: serde_json::Value = serde_json::from_str(told.json()).unwrap();
        assert_eq!(json["room_id"], "r\n\n<b>");
        assert_eq!(json["user_ids"][0], "u\r\nid: 7");
        assert_eq!(
            (told.sdk_app_id, &*told.room_id, told.members_delta),
            (1, "r\n\n<b>", 1)
        );
        assert!(!told.json().contains('\n') && !told.json().contains('\r'));
        // An event stream parser sees one event, id 42, whose data is the JSON.
        assert_eq!(
            told.event(),
            format!("id: 42\nevent: change\ndata: {}\n\n", told.json())
        );
        let page = Page {
            changes: vec![told.clone(), told],
            next: 42,
        };
        let body: serde_json::Value = serde_json::from_str(&page.to_json()).unwrap();
        assert_eq!(body["changes"][1]["seq"], 42);
        assert_eq!(body["next"], 42);
    }
}
