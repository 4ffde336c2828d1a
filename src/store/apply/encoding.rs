//! How history rows say what happens to members: one mapping, for the callbacks of a batch
//! and for the rows that recompute a member, so the two cannot disagree.

use chrono::{DateTime, Utc};

use crate::{
    callback::{Callback, Command, RECONCILED, ROOM_DESTROYED, event_types},
    store::membership::MemberEvent,
};

/// What a history row (command, `event_type`, `reason`, `event_at`) does to the members it
/// names, or to every member for a destroy; `None` for the other commands.
pub(super) fn member_event(
    command: &Command,
    event_type: Option<&str>,
    reason: Option<&str>,
    at: DateTime<Utc>,
) -> Option<MemberEvent> {
    let leave = |kind: Option<&str>, reason: Option<&str>| MemberEvent::Leave {
        at,
        kind: kind.map(str::to_owned),
        reason: reason.map(str::to_owned),
    };
    Some(match (command, event_type) {
        (Command::MemberEnter, _) => MemberEvent::Enter { at },
        (Command::MemberLeave, _) => leave(event_type, reason),
        // A Live leave's exit is its EventCause, kept in `reason`.
        (Command::LiveMemberStateChanged, Some(event_types::ONLINE)) => MemberEvent::Enter { at },
        (Command::LiveMemberStateChanged, _) => leave(reason, None),
        (Command::DestroyRoom | Command::LiveDestroyRoom, _) => MemberEvent::Destroy {
            at,
            exit: ROOM_DESTROYED,
        },
        (Command::Reconcile, Some(event_types::ENTER)) => MemberEvent::Enter { at },
        (Command::Reconcile, Some(event_types::LEAVE)) => leave(Some(RECONCILED), reason),
        (Command::Reconcile, Some(event_types::DESTROY)) => MemberEvent::Destroy {
            at,
            exit: RECONCILED,
        },
        _ => return None,
    })
}

/// The event of a callback, as its history row will say it.
pub(super) fn member_event_of(callback: &Callback) -> Option<MemberEvent> {
    member_event(
        &callback.command,
        callback.event_type(),
        callback.history_reason(),
        callback.event_time.to_datetime(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callback_and_its_history_row_say_the_same() {
        let fixtures = [
            (Command::MemberEnter, Some("Enter"), None),
            (Command::MemberLeave, Some("Kicked"), Some("spam")),
            (
                Command::LiveMemberStateChanged,
                Some("Online"),
                Some("Enter"),
            ),
            (
                Command::LiveMemberStateChanged,
                Some("Offline"),
                Some("Timeout"),
            ),
            (Command::Reconcile, Some("Leave"), None),
            (Command::Reconcile, Some("Destroy"), None),
        ];
        let at = DateTime::from_timestamp_millis(5).unwrap();
        let events: Vec<_> = fixtures
            .iter()
            .map(|(c, t, r)| member_event(c, *t, *r, at))
            .collect();
        assert_eq!(events[0], Some(MemberEvent::Enter { at }));
        let leave = |kind: &str, reason: Option<&str>| {
            Some(MemberEvent::Leave {
                at,
                kind: Some(kind.into()),
                reason: reason.map(Into::into),
            })
        };
        assert_eq!(events[1], leave("Kicked", Some("spam")));
        assert_eq!(events[2], Some(MemberEvent::Enter { at }));
        assert_eq!(events[3], leave("Timeout", None));
        assert_eq!(events[4], leave(RECONCILED, None));
        let exit = RECONCILED;
        assert_eq!(events[5], Some(MemberEvent::Destroy { at, exit }));
        assert_eq!(member_event(&Command::CreateRoom, None, None, at), None);
    }
}
