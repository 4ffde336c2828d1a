//! Enters and leaves of the whole batch: the members' rows (read with the history insert),
//! the fold in memory.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::{Destroys, Effects, Room, encoding::member_event_of, room_of};
use crate::{
    callback::{Callback, Event},
    store::membership::{self, MemberEvent, MemberState},
};

/// The members named by these callbacks' enters and leaves, in the batch's key order.
pub(super) fn named_members<'a>(callbacks: &[&'a Callback]) -> Vec<(Room<'a>, &'a str)> {
    let mut named: Vec<(Room<'a>, &'a str)> = callbacks
        .iter()
        .filter_map(|callback| Some((room_of(callback)?, callback.member_change()?)))
        .flat_map(|(room, change)| change.members.iter().map(move |m| (room, m.as_str())))
        .collect();
    named.sort_unstable();
    named.dedup();
    named
}

/// The current rows of named members, by (app, room, user).
pub(super) type MemberRows = HashMap<(i64, String, String), MemberState>;

/// Folds each named member's new events onto its row. A member whose row cannot take them
/// in order goes to [`Effects::late`], to be recomputed from the room's history: its row is
/// newer than one of its events, its room is destroyed in this batch, or a known destroy may
/// end one of its enters again (docs/semantics.md#destroy).
pub(super) fn fold_members<'a>(
    callbacks: &[&'a Callback],
    mut rows: MemberRows,
    destroys: &Destroys<'a>,
    effects: &mut Effects<'a>,
) {
    let mut destroyed_now = Vec::new();
    // Per member, its events in this batch.
    let mut events: BTreeMap<(Room<'a>, &'a str), Vec<MemberEvent>> = BTreeMap::new();
    for callback in callbacks {
        let Some(room) = room_of(callback) else {
            continue;
        };
        if matches!(callback.event, Event::DestroyRoom) {
            destroyed_now.push(room);
        }
        let (Some(change), Some(event)) = (callback.member_change(), member_event_of(callback))
        else {
            continue;
        };
        // A list may name a member twice: one event, as the fold would treat it.
        for member in change.distinct_members() {
            events
                .entry((room, member.as_str()))
                .or_default()
                .push(event.clone());
        }
    }
    for ((room, user), events) in events {
        let at = newest(&events);
        let last_destroy = destroys.get(&room).copied().flatten();
        let row = rows.remove(&(room.app, room.id.to_owned(), user.to_owned()));
        effects.seen(room, user, row.as_ref().is_some_and(|row| row.in_room));
        let in_order = !destroyed_now.contains(&room)
            && events.iter().all(|event| match event {
                MemberEvent::Enter { at } => last_destroy.is_none_or(|d| d < *at),
                _ => true,
            })
            && row
                .as_ref()
                .is_none_or(|row| events.iter().all(|event| row.precedes(event)));
        if !in_order {
            effects.late(room, user, at);
        } else if let Some(state) = membership::fold_from(row, events) {
            effects.set(room, user.to_owned(), state, at);
        }
    }
}

fn newest(events: &[MemberEvent]) -> DateTime<Utc> {
    events
        .iter()
        .map(|event| match event {
            MemberEvent::Enter { at } | MemberEvent::Leave { at, .. } => *at,
            MemberEvent::Destroy { at, .. } => *at,
        })
        .max()
        .expect("a member is named by at least one event")
}
