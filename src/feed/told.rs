//! What a reader of the feed gets: each change made once into its JSON and its server-sent
//! event, shared by every reader; a page of them.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

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

/// One read of the feed reader: consecutive changes, with what readers make of them made once
/// (on first use) and shared: their JSON joined, and how they moved each room's member count.
/// A reader whose position is a read's start gets it whole, and costs a copy of text, not a pass
/// over its changes (docs/feed.md#http).
pub(super) struct Chunk {
    changes: Vec<Told>,
    json: OnceLock<String>,
    moves: OnceLock<String>,
}

impl Chunk {
    /// `changes` must be consecutive and not empty.
    pub fn new(changes: Vec<Told>) -> Self {
        debug_assert!(!changes.is_empty());
        debug_assert!(changes.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        Self {
            changes,
            json: OnceLock::new(),
            moves: OnceLock::new(),
        }
    }

    /// The position just before its first change.
    pub fn after(&self) -> i64 {
        self.changes[0].seq - 1
    }

    /// Its newest change's `seq`.
    pub fn last(&self) -> i64 {
        self.newest().seq
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn changes(&self) -> &[Told] {
        &self.changes
    }

    fn newest(&self) -> &Told {
        self.changes.last().expect("a chunk is not empty")
    }

    /// The changes after `after` (within this chunk), at most `limit`, as a chunk of their own.
    pub fn part(&self, after: i64, limit: usize) -> Self {
        let skip = usize::try_from(after - self.after()).unwrap_or(0);
        Self::new(self.changes[skip..].iter().take(limit).cloned().collect())
    }

    /// Its changes' JSON, comma-separated: the inside of a JSON array.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| {
            let size = self.changes.iter().map(|c| c.json().len() + 1).sum();
            let mut out = String::with_capacity(size);
            for (i, change) in self.changes.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(change.json());
            }
            out
        })
    }

    /// `[sdk_app_id,"room_id",moved]` for each room whose member count it moved, in the order the
    /// rooms first changed, comma-separated (empty when it moved none).
    pub fn moves(&self) -> &str {
        self.moves.get_or_init(|| {
            let mut at: HashMap<(i64, &str), usize> = HashMap::new();
            let mut rooms: Vec<(i64, &str, i32)> = Vec::new();
            for change in self.changes.iter().filter(|c| c.members_delta != 0) {
                let room = (change.sdk_app_id, &*change.room_id);
                let i = *at.entry(room).or_insert_with(|| {
                    rooms.push((room.0, room.1, 0));
                    rooms.len() - 1
                });
                rooms[i].2 = rooms[i].2.saturating_add(change.members_delta);
            }
            let mut out = String::new();
            for (i, room) in rooms.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(room).expect("a move serializes"));
            }
            out
        })
    }
}

/// What a reader gets: consecutive chunks (whole reads where the reader's position allows).
pub struct Page {
    pub(super) chunks: Vec<Arc<Chunk>>,
    /// The position to ask from next.
    pub next: i64,
}

impl Page {
    /// A page of the changes after `after`: none, or `changes` (consecutive) as one chunk.
    pub fn of(after: i64, changes: Vec<Told>) -> Self {
        if changes.is_empty() {
            return Self::empty(after);
        }
        let chunk = Chunk::new(changes);
        Self {
            next: chunk.last(),
            chunks: vec![Arc::new(chunk)],
        }
    }

    pub fn empty(after: i64) -> Self {
        Self {
            chunks: Vec::new(),
            next: after,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// How many changes it holds.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }

    pub fn changes(&self) -> impl Iterator<Item = &Told> {
        self.chunks.iter().flat_map(|c| c.changes())
    }

    /// When its newest change was recorded.
    pub fn recorded_at(&self) -> Option<DateTime<Utc>> {
        self.chunks.last().map(|c| c.newest().recorded_at)
    }

    /// Each chunk's moves, comma-separated: a room can appear once per chunk, its moves in
    /// order (adding them up gives the room's move over the page).
    pub fn moves(&self, out: &mut String) {
        let mut first = true;
        for moves in self
            .chunks
            .iter()
            .map(|c| c.moves())
            .filter(|m| !m.is_empty())
        {
            if !first {
                out.push(',');
            }
            out.push_str(moves);
            first = false;
        }
    }

    /// `{"changes":[…],"next":N}` from the chunks' JSON, without serializing a change again.
    pub fn to_json(&self) -> String {
        let size: usize = self.chunks.iter().map(|c| c.json().len() + 1).sum();
        let mut out = String::with_capacity(size + 40);
        out.push_str("{\"changes\":[");
        for (i, chunk) in self.chunks.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(chunk.json());
        }
        out.push_str("],\"next\":");
        out.push_str(&self.next.to_string());
        out.push('}');
        out
    }
}

/// A change as the feed reader tells it, for tests.
#[cfg(test)]
pub(crate) fn sample(seq: i64, room: &str, kind: &str, users: &[&str]) -> Told {
    let at = "2026-12-06T00:00:00Z".parse().unwrap();
    Told::from(&Change {
        seq,
        sdk_app_id: 1,
        room_id: room.into(),
        room_seq: seq,
        kind: kind.into(),
        user_ids: users.iter().map(|u| (*u).to_owned()).collect(),
        event_at: at,
        event_id: None,
        cause: "callback".into(),
        recorded_at: at,
    })
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
        let page = Page::of(41, vec![told]);
        let body: serde_json::Value = serde_json::from_str(&page.to_json()).unwrap();
        assert_eq!(body["changes"][0]["seq"], 42);
        assert_eq!(body["next"], 42);
    }
}
