//! Rooms with callbacks in the journal still to be applied, so that a room's new callbacks join
//! them rather than overtake them (docs/durability.md#draining-beside-live-traffic). Written
//! ahead of its journaled ones, a live callback would make each of them late for its room:
//! correct all the same (the rules of docs/semantics.md), but each late batch folds the room's
//! attendance session again, and a drain beside live traffic would crawl.
//!
//! Counted per room in this process: an append adds one, a record applied or parked takes one
//! away. Records journaled before a restart are not counted (their rooms' live callbacks may
//! overtake them, as before; the result is the same).

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
};

/// Shared by the router and the drain.
#[derive(Clone, Default)]
pub struct Backlog {
    /// Journaled records still to apply, by a hash of their room (a collision only sends a
    /// callback to the journal, which is always safe).
    rooms: Arc<Mutex<HashMap<u64, u32>>>,
}

/// A room as the backlog counts it: a hash of `Callback::locked_room`, made once per callback
/// (nothing allocated on the callback path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomKey(u64);

impl RoomKey {
    pub fn of((app, room): (i64, &str)) -> Self {
        let mut hasher = DefaultHasher::new();
        (app, room).hash(&mut hasher);
        Self(hasher.finish())
    }
}

impl Backlog {
    /// Whether the room has journaled callbacks still to apply.
    pub fn holds(&self, room: RoomKey) -> bool {
        self.rooms.lock().expect("backlog").contains_key(&room.0)
    }

    /// A callback of the room went to the journal.
    pub fn add(&self, room: RoomKey) {
        *self
            .rooms
            .lock()
            .expect("backlog")
            .entry(room.0)
            .or_default() += 1;
    }

    /// Journaled callbacks of these rooms were applied or parked.
    pub fn remove(&self, rooms: impl IntoIterator<Item = RoomKey>) {
        let mut held = self.rooms.lock().expect("backlog");
        for RoomKey(key) in rooms {
            if let Some(count) = held.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    held.remove(&key);
                }
            }
        }
    }

    /// Rooms counted.
    pub fn rooms(&self) -> usize {
        self.rooms.lock().expect("backlog").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_is_held_until_each_of_its_records_is_taken_away() {
        let key = |app, room| RoomKey::of((app, room));
        let backlog = Backlog::default();
        backlog.add(key(1, "a"));
        backlog.add(key(1, "a"));
        backlog.add(key(2, "a"));
        assert!(backlog.holds(key(1, "a")) && backlog.holds(key(2, "a")));
        assert!(!backlog.holds(key(1, "b")), "another room is free");
        backlog.remove([key(1, "a")]);
        assert!(backlog.holds(key(1, "a")), "one record of room a is left");
        backlog.remove([key(1, "a"), key(2, "a")]);
        assert_eq!(backlog.rooms(), 0);
        // A record journaled before a restart was never counted: nothing to take away.
        backlog.remove([key(3, "c")]);
        assert!(!backlog.holds(key(3, "c")));
    }
}
