//! What differs between the view and Tencent's answer for one room: a pure comparison, so the
//! rules (grace period, which members, which seats) are tested without a server.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::{
    callback::{Id, Seat},
    store::checks::{RoomView, ViewSeat},
};

/// Members to correct, and those left alone because their newest event is too young.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemberDiff {
    /// Present at Tencent, not `in_room` here.
    pub enter: Vec<Id>,
    /// `in_room` here, absent at Tencent.
    pub leave: Vec<Id>,
    /// Would be corrected, but their newest event is younger than the grace period.
    pub held_back: Vec<String>,
}

/// Compares the members. `observed_at` is when Tencent's list was read; a member whose newest
/// event is after `observed_at - grace` is left alone (its callback may be in flight).
pub fn members(
    view: &RoomView,
    tencent: &[Id],
    observed_at: DateTime<Utc>,
    grace: chrono::Duration,
) -> MemberDiff {
    let settled_before = observed_at - grace;
    let here: BTreeMap<&str, (bool, DateTime<Utc>)> = view
        .members
        .iter()
        .map(|m| (m.user_id.as_str(), (m.in_room, m.last_event_at)))
        .collect();
    let there: BTreeSet<&str> = tencent.iter().map(Id::as_str).collect();
    let mut diff = MemberDiff::default();
    for id in tencent {
        match here.get(id.as_str()) {
            Some((true, _)) => {}
            Some((false, last)) if *last > settled_before => {
                diff.held_back.push(id.as_str().to_owned())
            }
            _ => diff.enter.push(id.clone()),
        }
    }
    for (user, (in_room, last)) in &here {
        if !in_room || there.contains(user) {
            continue;
        }
        if *last > settled_before {
            diff.held_back.push((*user).to_owned());
        } else if let Ok(id) = Id::parse(user) {
            diff.leave.push(id);
        }
    }
    diff.enter.sort();
    diff.held_back.sort();
    diff
}

/// Whether the room's newest event is too young for a destroy to be corrected.
pub fn too_recent(view: &RoomView, observed_at: DateTime<Utc>, grace: chrono::Duration) -> bool {
    view.last_event_at
        .is_some_and(|last| last > observed_at - grace)
}

/// Whether the seats should be asked for: the room has seat rows, or seats are enabled.
pub fn has_seats(view: &RoomView, seat_enabled_at_tencent: Option<bool>) -> bool {
    !view.seats.is_empty() || view.seats_enabled || seat_enabled_at_tencent == Some(true)
}

/// Whether Tencent's seat list says something else than the view (a seat missing on either
/// side, or any of its fields).
pub fn seats_differ(view: &[ViewSeat], tencent: &[Seat]) -> bool {
    let ours: BTreeMap<i32, &ViewSeat> = view.iter().map(|s| (s.seat_index, s)).collect();
    if ours.len() != tencent.len() {
        return true;
    }
    tencent.iter().any(|seat| {
        ours.get(&seat.index).is_none_or(|mine| {
            mine.member_account.as_deref() != seat.member.as_ref().map(Id::as_str)
                || mine.is_taken_disabled != seat.is_taken_disabled
                || mine.is_video_disabled != seat.is_video_disabled
                || mine.is_audio_disabled != seat.is_audio_disabled
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::checks::ViewMember;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }
    fn id(s: &str) -> Id {
        Id::parse(s).unwrap()
    }
    fn view(members: &[(&str, bool, i64)]) -> RoomView {
        RoomView {
            last_event_at: Some(t(0)),
            destroyed: false,
            member_count: None,
            seats_enabled: false,
            product: "Room".into(),
            members: members
                .iter()
                .map(|(u, in_room, at)| ViewMember {
                    user_id: (*u).into(),
                    in_room: *in_room,
                    last_event_at: t(*at),
                })
                .collect(),
            seats: Vec::new(),
        }
    }
    const GRACE: chrono::Duration = chrono::Duration::seconds(30);

    #[test]
    fn ghosts_leave_and_missing_members_enter() {
        let v = view(&[("ghost", true, 0), ("here", true, 0), ("gone", false, 0)]);
        let d = members(&v, &[id("here"), id("new"), id("gone")], t(1000), GRACE);
        assert_eq!(d.enter, vec![id("gone"), id("new")]);
        assert_eq!(d.leave, vec![id("ghost")]);
        assert!(d.held_back.is_empty());
    }

    #[test]
    fn the_grace_period_holds_back_young_members_on_both_sides() {
        let v = view(&[
            ("young-ghost", true, 980),
            ("young-out", false, 975),
            ("old", true, 969),
        ]);
        let d = members(&v, &[id("young-out")], t(1000), GRACE);
        assert!(d.enter.is_empty());
        assert_eq!(d.leave, vec![id("old")]);
        assert_eq!(d.held_back, vec!["young-ghost", "young-out"]);
    }

    #[test]
    fn nothing_differs_nothing_to_do() {
        let v = view(&[("a", true, 0), ("b", false, 0)]);
        assert_eq!(
            members(&v, &[id("a")], t(1000), GRACE),
            MemberDiff::default()
        );
    }

    #[test]
    fn seats_compare_every_field_and_the_set() {
        let ours = vec![ViewSeat {
            seat_index: 0,
            member_account: Some("a".into()),
            is_taken_disabled: false,
            is_video_disabled: false,
            is_audio_disabled: false,
        }];
        let same = Seat {
            index: 0,
            member: Some(id("a")),
            is_taken_disabled: false,
            is_video_disabled: false,
            is_audio_disabled: false,
        };
        assert!(!seats_differ(&ours, std::slice::from_ref(&same)));
        let muted = Seat {
            is_audio_disabled: true,
            ..same.clone()
        };
        assert!(seats_differ(&ours, &[muted]));
        let free = Seat {
            member: None,
            ..same.clone()
        };
        assert!(seats_differ(&ours, &[free]));
        let more = Seat {
            index: 1,
            ..same.clone()
        };
        assert!(seats_differ(&ours, &[same, more]));
        assert!(seats_differ(&ours, &[]));
    }
}
