//! The sequential rules (docs/semantics.md) for one member, as a pure fold. The database applies events
//! incrementally when they arrive in order; when they do not, a member's row is recomputed with
//! this fold over the room's history.

use chrono::{DateTime, Utc};

pub use crate::callback::{RECONCILED, ROOM_DESTROYED};

/// Rank at equal EventTime (docs/semantics.md#equal-eventtime): enters and creates, then leaves, then destroys.
pub const RANK_ENTER: i16 = 0;
pub const RANK_LEAVE: i16 = 1;
pub const RANK_DESTROY: i16 = 2;

/// What one member's row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub in_room: bool,
    pub entered_at: Option<DateTime<Utc>>,
    pub left_at: Option<DateTime<Utc>>,
    pub leave_type: Option<String>,
    pub leave_reason: Option<String>,
    pub last_event_at: DateTime<Utc>,
    pub last_event_rank: i16,
}

/// An event that touches one member: its own enters and leaves, and the room's destroys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    Enter {
        at: DateTime<Utc>,
    },
    Leave {
        at: DateTime<Utc>,
        kind: Option<String>,
        reason: Option<String>,
    },
    /// A destroy, or a correction that found the room gone: `exit` is the `leave_type` it
    /// gives ([`ROOM_DESTROYED`] or [`RECONCILED`]).
    Destroy {
        at: DateTime<Utc>,
        exit: &'static str,
    },
}

impl MemberEvent {
    /// Total order of application. Two leaves at the same time are ordered by (Type, Reason)
    /// in byte order, so the result never depends on arrival order.
    pub fn order_key(&self) -> (DateTime<Utc>, i16, &str, &str) {
        match self {
            Self::Enter { at } => (*at, RANK_ENTER, "", ""),
            Self::Leave { at, kind, reason } => (
                *at,
                RANK_LEAVE,
                kind.as_deref().unwrap_or(""),
                reason.as_deref().unwrap_or(""),
            ),
            // Two destroys at one time: the callback ends the membership before a correction
            // does (it says more: who destroyed the room).
            Self::Destroy { at, exit } => {
                let second = if *exit == RECONCILED { "1" } else { "0" };
                (*at, RANK_DESTROY, second, "")
            }
        }
    }
}

/// Applies the events one by one in order; `None` when the member never entered nor left.
pub fn fold(events: Vec<MemberEvent>) -> Option<MemberState> {
    fold_from(None, events)
}

/// [`fold`] continued from a member's row: `state` must be the fold of every event before
/// `events` (its own last event and any destroy since, see [`MemberState::precedes`]).
pub fn fold_from(
    mut state: Option<MemberState>,
    mut events: Vec<MemberEvent>,
) -> Option<MemberState> {
    events.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    for event in events {
        match event {
            MemberEvent::Enter { at } => {
                let s = state.get_or_insert_with(|| blank(at));
                s.in_room = true;
                s.entered_at = Some(at);
                s.last_event_at = at;
                s.last_event_rank = RANK_ENTER;
            }
            MemberEvent::Leave { at, kind, reason } => {
                let s = state.get_or_insert_with(|| blank(at));
                s.in_room = false;
                s.left_at = Some(at);
                s.leave_type = kind;
                s.leave_reason = reason;
                s.last_event_at = at;
                s.last_event_rank = RANK_LEAVE;
            }
            MemberEvent::Destroy { at, exit } => {
                // Only ends a membership; leave_reason and last_event_at are the member's own.
                if let Some(s) = state.as_mut().filter(|s| s.in_room) {
                    s.in_room = false;
                    s.left_at = Some(at);
                    s.leave_type = Some(exit.to_owned());
                }
            }
        }
    }
    state
}

impl MemberState {
    /// Whether this row's own last event goes at or before `event` in the fold's order, so
    /// that folding `event` onto the row gives what folding the whole history would. (A
    /// destroy after the row's last event is in the row already; the caller keeps out the
    /// enters that a destroy may end.)
    pub fn precedes(&self, event: &MemberEvent) -> bool {
        let own = if self.last_event_rank == RANK_LEAVE {
            (
                self.last_event_at,
                RANK_LEAVE,
                self.leave_type.as_deref().unwrap_or(""),
                self.leave_reason.as_deref().unwrap_or(""),
            )
        } else {
            (self.last_event_at, RANK_ENTER, "", "")
        };
        own <= event.order_key()
    }
}

fn blank(at: DateTime<Utc>) -> MemberState {
    MemberState {
        in_room: false,
        entered_at: None,
        left_at: None,
        leave_type: None,
        leave_reason: None,
        last_event_at: at,
        last_event_rank: RANK_ENTER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }
    fn enter(ms: i64) -> MemberEvent {
        MemberEvent::Enter { at: t(ms) }
    }
    fn leave(ms: i64, kind: &str) -> MemberEvent {
        MemberEvent::Leave {
            at: t(ms),
            kind: Some(kind.into()),
            reason: None,
        }
    }
    fn destroy(ms: i64) -> MemberEvent {
        MemberEvent::Destroy {
            at: t(ms),
            exit: ROOM_DESTROYED,
        }
    }

    #[test]
    fn enter_before_a_destroy_is_out() {
        let s = fold(vec![destroy(200), enter(100)]).unwrap();
        assert!(!s.in_room);
        assert_eq!(s.left_at, Some(t(200)));
        assert_eq!(s.leave_type.as_deref(), Some(ROOM_DESTROYED));
        assert_eq!(s.last_event_at, t(100));
    }

    #[test]
    fn leave_between_enter_and_destroy_wins() {
        let s = fold(vec![enter(100), destroy(200), leave(150, "Leave")]).unwrap();
        assert_eq!(s.leave_type.as_deref(), Some("Leave"));
        assert_eq!(s.left_at, Some(t(150)));
    }

    #[test]
    fn destroy_before_a_later_enter_does_not_end_it() {
        let s = fold(vec![enter(300), destroy(200)]).unwrap();
        assert!(s.in_room);
        assert_eq!(s.left_at, None);
    }

    #[test]
    fn equal_times_apply_enter_then_leave_then_destroy() {
        let s = fold(vec![destroy(5), leave(5, "Kicked"), enter(5)]).unwrap();
        assert!(!s.in_room);
        assert_eq!(s.leave_type.as_deref(), Some("Kicked"));
        let s = fold(vec![destroy(5), enter(5)]).unwrap();
        assert_eq!(s.leave_type.as_deref(), Some(ROOM_DESTROYED));
    }

    #[test]
    fn order_of_the_input_does_not_matter() {
        let events = vec![
            enter(1),
            leave(2, "Leave"),
            enter(3),
            destroy(4),
            leave(4, "Kicked"),
        ];
        let expected = fold(events.clone());
        let mut reversed = events;
        reversed.reverse();
        assert_eq!(fold(reversed), expected);
    }

    #[test]
    fn a_destroy_correction_ends_with_its_own_exit_and_ties_are_ordered() {
        let reconciled = MemberEvent::Destroy {
            at: t(200),
            exit: RECONCILED,
        };
        let s = fold(vec![enter(100), reconciled.clone()]).unwrap();
        assert_eq!(s.leave_type.as_deref(), Some(RECONCILED));
        // Same time as a destroy callback: the result does not depend on the input order.
        let a = fold(vec![enter(100), destroy(200), reconciled.clone()]);
        let b = fold(vec![enter(100), reconciled, destroy(200)]);
        assert_eq!(a, b);
        assert_eq!(a.unwrap().leave_type.as_deref(), Some(ROOM_DESTROYED));
    }

    #[test]
    fn folding_onto_a_row_equals_folding_the_whole_history() {
        let history = vec![enter(1), leave(2, "Leave"), enter(3)];
        let later = vec![leave(5, "Kicked"), enter(4), enter(6)];
        let row = fold(history.clone()).unwrap();
        assert!(later.iter().all(|e| row.precedes(e)));
        let whole = fold(history.into_iter().chain(later.clone()).collect());
        assert_eq!(fold_from(Some(row), later), whole);
        let s = whole.unwrap();
        assert_eq!((s.in_room, s.left_at), (true, Some(t(5))));
    }

    #[test]
    fn a_row_newer_than_an_event_does_not_precede_it() {
        let row = fold(vec![leave(5, "Kicked")]).unwrap();
        assert!(!row.precedes(&enter(4)));
        assert!(row.precedes(&enter(6)));
        // At one time: leaves in (Type, Reason) order, an enter before any leave.
        assert!(!row.precedes(&enter(5)));
        assert!(!row.precedes(&leave(5, "Anything")));
        assert!(row.precedes(&leave(5, "Kicked")));
        assert!(row.precedes(&leave(5, "Later")));
    }

    #[test]
    fn destroys_alone_make_no_member() {
        assert_eq!(fold(vec![destroy(1)]), None);
    }
}
