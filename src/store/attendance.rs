//! The attendance ledger's rules (docs/attendance.md), as a pure fold over one room's member
//! events in the order of docs/semantics.md: stays, reconnects merged, sessions with their
//! peak, distinct members and member time. The database keeps the fold's result in
//! `room_stays` and `room_sessions`; the store either continues the fold from those rows
//! (events in order) or folds again from a session's start (late events), see
//! `store/apply/ledger/`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};

use super::membership::{MemberEvent, RANK_ENTER};

pub const EMPTIED: &str = "Emptied";
pub const DESTROYED: &str = "Destroyed";

/// The two choices an operator makes (docs/attendance.md#policies). Every instance must be
/// given the same; a change applies to the past with `roomsync rebuild`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `STAY_MERGE_GAP_SECS`: a leave followed by an enter of the same member this close (or
    /// closer) is one stay. Zero: off.
    pub merge_gap: TimeDelta,
    /// `SESSION_EMPTY_GRACE_SECS`: a room empty this long (or shorter) is still in its session.
    pub empty_grace: TimeDelta,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            merge_gap: TimeDelta::zero(),
            empty_grace: TimeDelta::seconds(300),
        }
    }
}

/// One event of a room as the ledger sees it: a member event and the distinct members it
/// names (none for a destroy, which concerns everyone in the room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomEvent {
    pub event: MemberEvent,
    pub users: Vec<String>,
}

impl RoomEvent {
    /// The order of application, with the membership fold's rule for ties.
    pub fn order_key(&self) -> (DateTime<Utc>, i16, &str, &str) {
        self.event.order_key()
    }
}

/// A row of `room_stays`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stay {
    pub user: String,
    pub joined_at: DateTime<Utc>,
    pub session_no: i32,
    pub left_at: Option<DateTime<Utc>>,
    pub leave_type: Option<String>,
    pub leave_reason: Option<String>,
    pub merged_gaps: i32,
    pub gap_ms: i64,
}

impl Stay {
    /// Time in the room, less merged gaps; zero while open (a session's `member_ms` counts
    /// ended stays only).
    fn member_ms(&self) -> i64 {
        self.left_at.map_or(0, |left| {
            (left - self.joined_at).num_milliseconds() - self.gap_ms
        })
    }
}

/// A row of `room_sessions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub no: i32,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_cause: Option<String>,
    pub peak_members: i32,
    pub peak_at: DateTime<Utc>,
    pub unique_members: i32,
    pub member_ms: i64,
    pub open_stays: i32,
}

/// One room's ledger while it is folded: the newest session, each known member's newest stay,
/// and what changed (to be written).
#[derive(Debug, Clone)]
pub struct RoomLedger {
    policy: Policy,
    session: Option<Session>,
    /// The number the next new session takes.
    next_no: i32,
    /// Each member's newest stay, of those the fold knows: every stay it made, and the
    /// newest stays read for the members an event names.
    stays: HashMap<String, Stay>,
    /// Open stays by member: a destroy ends them all.
    open: BTreeSet<String>,
    /// Stays made or changed, as they are now, by (member, joined_at).
    changed_stays: BTreeMap<(String, DateTime<Utc>), Stay>,
    /// Sessions made or changed before the newest, as they ended, by number (a fold may pass
    /// through several).
    changed_sessions: BTreeMap<i32, Session>,
    /// Whether the newest session was made or changed by this fold.
    session_changed: bool,
    /// The newest event folded: (EventTime, rank).
    folded: Option<(DateTime<Utc>, i16)>,
}

impl RoomLedger {
    /// A ledger with nothing before it; its first session is numbered `first_no`.
    pub fn empty(policy: Policy, first_no: i32) -> Self {
        Self {
            policy,
            session: None,
            next_no: first_no,
            stays: HashMap::new(),
            open: BTreeSet::new(),
            changed_stays: BTreeMap::new(),
            changed_sessions: BTreeMap::new(),
            session_changed: false,
            folded: None,
        }
    }

    /// A ledger that goes on from its rows: the room's newest session, the newest stay of each
    /// member the coming events name, and every open stay when a destroy is coming (a destroy
    /// ends them all). The open stays among `stays` must be all of them or the session's
    /// `open_stays` count keeps the rest.
    pub fn resume(policy: Policy, session: Option<Session>, stays: Vec<Stay>) -> Self {
        let next_no = session.as_ref().map_or(1, |s| s.no + 1);
        let mut ledger = Self::empty(policy, next_no);
        for stay in stays {
            if stay.left_at.is_none() {
                ledger.open.insert(stay.user.clone());
            }
            ledger.stays.insert(stay.user.clone(), stay);
        }
        ledger.session = session;
        ledger
    }

    /// Folds events that all go after everything folded so far, in the fold's order.
    pub fn fold(&mut self, mut events: Vec<RoomEvent>) {
        events.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        for event in &events {
            self.apply(event);
        }
    }

    fn apply(&mut self, event: &RoomEvent) {
        match &event.event {
            MemberEvent::Enter { at } => self.enter(*at, &event.users),
            MemberEvent::Leave { at, kind, reason } => {
                for user in &event.users {
                    self.end_stay(user, *at, kind.clone(), reason.clone());
                }
                self.after_exits(*at);
            }
            MemberEvent::Destroy { at, exit } => self.destroy(*at, exit),
        }
        let (at, rank, _, _) = event.order_key();
        self.folded = self.folded.max(Some((at, rank)));
    }

    fn enter(&mut self, at: DateTime<Utc>, users: &[String]) {
        let arriving: Vec<&String> = users.iter().filter(|u| !self.open.contains(*u)).collect();
        if arriving.is_empty() {
            return;
        }
        let no = self.session_for(at);
        for user in arriving {
            let session = self.session.as_mut().expect("session_for opened one");
            let merge_gap = self.policy.merge_gap;
            match self.stays.get_mut(user.as_str()) {
                // A reconnect: the stay that a leave ended a moment ago goes on.
                Some(stay)
                    if stay.session_no == no
                        && stay.left_at.is_some_and(|left| at - left <= merge_gap) =>
                {
                    let left = stay.left_at.take().expect("checked");
                    session.member_ms -= stay.member_ms_with(left);
                    stay.leave_type = None;
                    stay.leave_reason = None;
                    stay.merged_gaps += 1;
                    stay.gap_ms += (at - left).num_milliseconds();
                }
                previous => {
                    if previous.is_none_or(|stay| stay.session_no != no) {
                        session.unique_members += 1;
                    }
                    let stay = Stay {
                        user: user.clone(),
                        joined_at: at,
                        session_no: no,
                        left_at: None,
                        leave_type: None,
                        leave_reason: None,
                        merged_gaps: 0,
                        gap_ms: 0,
                    };
                    self.stays.insert(user.clone(), stay);
                }
            }
            session.open_stays += 1;
            self.open.insert(user.clone());
            self.record(user);
        }
        let session = self.session.as_mut().expect("opened above");
        if session.open_stays > session.peak_members {
            session.peak_members = session.open_stays;
            session.peak_at = at;
        }
        self.touch_session();
    }

    /// The number of the session an arrival at `at` belongs to: the open one, the one it
    /// re-opens within its grace, or a new one.
    fn session_for(&mut self, at: DateTime<Utc>) -> i32 {
        let grace = self.policy.empty_grace;
        match &mut self.session {
            Some(s) if s.ended_at.is_none() => return s.no,
            Some(s)
                if s.end_cause.as_deref() == Some(EMPTIED)
                    && s.ended_at.is_some_and(|end| at - end <= grace) =>
            {
                s.ended_at = None;
                s.end_cause = None;
                self.session_changed = true;
                return s.no;
            }
            _ => {}
        }
        let no = self.next_no;
        self.next_no += 1;
        // The session before can no longer change: kept as it is, if this fold changed it.
        if let Some(previous) = self.session.take().filter(|_| self.session_changed) {
            self.changed_sessions.insert(previous.no, previous);
        }
        self.session = Some(Session {
            no,
            started_at: at,
            ended_at: None,
            end_cause: None,
            peak_members: 0,
            peak_at: at,
            unique_members: 0,
            member_ms: 0,
            open_stays: 0,
        });
        no
    }

    fn end_stay(
        &mut self,
        user: &str,
        at: DateTime<Utc>,
        kind: Option<String>,
        reason: Option<String>,
    ) {
        if !self.open.remove(user) {
            return;
        }
        let stay = self.stays.get_mut(user).expect("an open stay is known");
        stay.left_at = Some(at);
        stay.leave_type = kind;
        stay.leave_reason = reason;
        let ms = stay.member_ms();
        if let Some(session) = self.session.as_mut() {
            session.open_stays -= 1;
            session.member_ms += ms;
            self.session_changed = true;
        }
        self.record(user);
    }

    /// Keeps a member's newest stay, as it is now, among the changes.
    fn record(&mut self, user: &str) {
        let stay = &self.stays[user];
        self.changed_stays
            .insert((stay.user.clone(), stay.joined_at), stay.clone());
    }

    /// After members left at `at`: a session left empty has ended (until an arrival within
    /// its grace re-opens it).
    fn after_exits(&mut self, at: DateTime<Utc>) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if session.ended_at.is_none() && session.open_stays == 0 {
            session.ended_at = Some(at);
            session.end_cause = Some(EMPTIED.to_owned());
            self.touch_session();
        }
    }

    fn destroy(&mut self, at: DateTime<Utc>, exit: &str) {
        let grace = self.policy.empty_grace;
        let ends = match &self.session {
            Some(s) if s.ended_at.is_none() => true,
            Some(s) => {
                s.end_cause.as_deref() == Some(EMPTIED)
                    && s.ended_at.is_some_and(|end| at - end <= grace)
            }
            None => false,
        };
        if !ends {
            return;
        }
        let open: Vec<String> = self.open.iter().cloned().collect();
        for user in open {
            self.end_stay(&user, at, Some(exit.to_owned()), None);
        }
        let session = self.session.as_mut().expect("checked");
        session.ended_at = Some(at);
        session.end_cause = Some(DESTROYED.to_owned());
        self.touch_session();
    }

    fn touch_session(&mut self) {
        self.session_changed = true;
    }

    /// The stays and sessions this fold made or changed, and the newest event it folded.
    pub fn changes(&self) -> Changes<'_> {
        Changes {
            stays: self.changed_stays.values().collect(),
            sessions: self
                .changed_sessions
                .values()
                .chain(self.session.as_ref().filter(|_| self.session_changed))
                .collect(),
            folded: self.folded,
        }
    }
}

impl Stay {
    /// `member_ms` as if the stay had ended at `left`.
    fn member_ms_with(&self, left: DateTime<Utc>) -> i64 {
        (left - self.joined_at).num_milliseconds() - self.gap_ms
    }
}

/// What a fold changed.
#[derive(Debug)]
pub struct Changes<'a> {
    pub stays: Vec<&'a Stay>,
    pub sessions: Vec<&'a Session>,
    pub folded: Option<(DateTime<Utc>, i16)>,
}

/// Whether events at `(at, rank)` go after a ledger whose newest folded event is `folded`, so
/// that the fold can go on from its rows: later, or at the same time among enters (which
/// commute). Anything else is folded again from its session's start.
pub fn goes_after(folded: Option<(DateTime<Utc>, i16)>, at: DateTime<Utc>, rank: i16) -> bool {
    folded.is_none_or(|last| (at, rank) > last || (at, rank) == last && rank == RANK_ENTER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::membership::{RECONCILED, ROOM_DESTROYED};

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }
    fn users(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }
    fn enter(ms: i64, names: &[&str]) -> RoomEvent {
        RoomEvent {
            event: MemberEvent::Enter { at: t(ms) },
            users: users(names),
        }
    }
    fn leave(ms: i64, names: &[&str]) -> RoomEvent {
        RoomEvent {
            event: MemberEvent::Leave {
                at: t(ms),
                kind: Some("Leave".into()),
                reason: None,
            },
            users: users(names),
        }
    }
    fn destroy(ms: i64) -> RoomEvent {
        RoomEvent {
            event: MemberEvent::Destroy {
                at: t(ms),
                exit: ROOM_DESTROYED,
            },
            users: Vec::new(),
        }
    }
    fn policy(gap_s: i64, grace_s: i64) -> Policy {
        Policy {
            merge_gap: TimeDelta::seconds(gap_s),
            empty_grace: TimeDelta::seconds(grace_s),
        }
    }
    fn fold(policy: Policy, events: Vec<RoomEvent>) -> (Vec<Stay>, Vec<Session>) {
        let mut ledger = RoomLedger::empty(policy, 1);
        ledger.fold(events);
        let changes = ledger.changes();
        let mut stays: Vec<Stay> = changes.stays.into_iter().cloned().collect();
        stays.sort_by(|a, b| (&a.user, a.joined_at).cmp(&(&b.user, b.joined_at)));
        (stays, changes.sessions.into_iter().cloned().collect())
    }

    #[test]
    fn a_redelivered_leave_after_a_rejoin_changes_nothing() {
        let events = vec![
            enter(0, &["a"]),
            leave(10_000, &["a"]),
            enter(20_000, &["a"]),
            leave(10_000, &["a"]),
        ];
        let (stays, sessions) = fold(policy(0, 300), events);
        assert_eq!(stays.len(), 2);
        assert_eq!(stays[0].left_at, Some(t(10_000)));
        assert_eq!((stays[1].joined_at, stays[1].left_at), (t(20_000), None));
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].ended_at, None);
        assert_eq!(sessions[0].unique_members, 1);
    }

    #[test]
    fn a_reconnect_within_the_gap_is_one_stay() {
        let (stays, sessions) = fold(
            policy(5, 300),
            vec![enter(0, &["a"]), leave(1_000, &["a"]), enter(3_000, &["a"])],
        );
        assert_eq!(stays.len(), 1);
        assert_eq!((stays[0].merged_gaps, stays[0].gap_ms), (1, 2_000));
        assert_eq!(stays[0].left_at, None);
        assert_eq!(sessions[0].member_ms, 0, "open stays count no member time");
        assert_eq!(sessions[0].peak_members, 1);
    }

    #[test]
    fn the_gap_includes_its_bound_and_not_beyond() {
        let at_bound = fold(
            policy(2, 300),
            vec![enter(0, &["a"]), leave(1_000, &["a"]), enter(3_000, &["a"])],
        );
        assert_eq!(at_bound.0[0].merged_gaps, 1);
        let past = fold(
            policy(2, 300),
            vec![enter(0, &["a"]), leave(1_000, &["a"]), enter(3_001, &["a"])],
        );
        assert_eq!(past.0.len(), 2);
        assert_eq!(past.0[1].joined_at, t(3_001));
        assert_eq!(past.1[0].unique_members, 1);
    }

    #[test]
    fn an_empty_room_within_its_grace_is_one_session_beyond_it_two() {
        let (_, sessions) = fold(
            policy(0, 60),
            vec![
                enter(0, &["a"]),
                leave(1_000, &["a"]),
                enter(61_000, &["b"]),
                leave(62_000, &["b"]),
                enter(122_001, &["c"]),
            ],
        );
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions[0].ended_at, Some(t(62_000)));
        assert_eq!(sessions[0].end_cause.as_deref(), Some(EMPTIED));
        assert_eq!(sessions[0].unique_members, 2);
        assert_eq!(sessions[0].member_ms, 2_000);
        assert_eq!((sessions[1].no, sessions[1].started_at), (2, t(122_001)));
    }

    #[test]
    fn a_destroy_ends_the_session_and_its_stays_and_no_merge_crosses_it() {
        let (stays, sessions) = fold(
            policy(600, 600),
            vec![enter(0, &["a", "b"]), destroy(5_000), enter(6_000, &["a"])],
        );
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions[0].end_cause.as_deref(), Some(DESTROYED));
        assert_eq!(sessions[0].member_ms, 10_000);
        let b = stays.iter().find(|s| s.user == "b").unwrap();
        assert_eq!(b.leave_type.as_deref(), Some(ROOM_DESTROYED));
        let a = stays.iter().rfind(|s| s.user == "a").unwrap();
        assert_eq!((a.session_no, a.merged_gaps), (2, 0));
    }

    #[test]
    fn a_destroy_within_the_grace_ends_an_emptied_session_beyond_it_nothing() {
        let within = fold(
            policy(0, 60),
            vec![enter(0, &["a"]), leave(1_000, &["a"]), destroy(61_000)],
        );
        assert_eq!(within.1[0].end_cause.as_deref(), Some(DESTROYED));
        assert_eq!(within.1[0].ended_at, Some(t(61_000)));
        let beyond = fold(
            policy(0, 60),
            vec![enter(0, &["a"]), leave(1_000, &["a"]), destroy(61_001)],
        );
        assert_eq!(beyond.1[0].end_cause.as_deref(), Some(EMPTIED));
        assert_eq!(beyond.1[0].ended_at, Some(t(1_000)));
    }

    #[test]
    fn an_enter_and_a_leave_at_one_millisecond_count_the_enter_first() {
        let (_, sessions) = fold(
            policy(0, 300),
            vec![enter(0, &["a"]), leave(5, &["a"]), enter(5, &["b"])],
        );
        assert_eq!(sessions[0].peak_members, 2);
        assert_eq!(sessions[0].peak_at, t(5));
    }

    #[test]
    fn the_peak_is_reached_at_its_earliest_time() {
        let (_, sessions) = fold(
            policy(0, 300),
            vec![enter(0, &["a", "b"]), leave(10, &["a"]), enter(20, &["c"])],
        );
        assert_eq!((sessions[0].peak_members, sessions[0].peak_at), (2, t(0)));
    }

    #[test]
    fn a_leave_that_leaves_others_in_the_room_changes_the_session_too() {
        let p = policy(0, 300);
        let mut ledger = RoomLedger::empty(p, 1);
        ledger.fold(vec![enter(0, &["a", "b"])]);
        let session = ledger.session.clone();
        let stays: Vec<Stay> = ledger.stays.values().cloned().collect();
        // Continued from the rows, as the next batch does.
        let mut next = RoomLedger::resume(p, session, stays);
        next.fold(vec![leave(5_000, &["a"])]);
        let changes = next.changes();
        assert_eq!(changes.sessions.len(), 1);
        assert_eq!(
            (
                changes.sessions[0].member_ms,
                changes.sessions[0].open_stays
            ),
            (5_000, 1)
        );
        assert_eq!(changes.stays.len(), 1);
    }

    #[test]
    fn a_fold_through_several_sessions_returns_each_as_it_ended() {
        let (_, sessions) = fold(
            policy(0, 0),
            vec![
                enter(0, &["a"]),
                leave(10, &["a"]),
                enter(20, &["a", "b"]),
                leave(30, &["a"]),
                leave(40, &["b"]),
                enter(50, &["c"]),
            ],
        );
        let summary: Vec<_> = sessions
            .iter()
            .map(|s| (s.no, s.member_ms, s.open_stays, s.ended_at))
            .collect();
        assert_eq!(
            summary,
            [
                (1, 10, 0, Some(t(10))),
                (2, 30, 0, Some(t(40))),
                (3, 0, 1, None)
            ]
        );
    }

    #[test]
    fn a_leave_without_its_enter_changes_nothing() {
        let (stays, sessions) = fold(policy(0, 300), vec![leave(5, &["a"])]);
        assert!(stays.is_empty() && sessions.is_empty());
    }

    #[test]
    fn resuming_from_rows_equals_folding_the_whole_history() {
        let p = policy(3, 30);
        let first = vec![enter(0, &["a", "b"]), leave(1_000, &["a"])];
        let then = vec![enter(2_000, &["a"]), destroy(4_000)];
        let mut whole = RoomLedger::empty(p, 1);
        whole.fold(first.iter().chain(&then).cloned().collect());
        let mut part = RoomLedger::empty(p, 1);
        part.fold(first);
        let session = part.session.clone();
        let stays: Vec<Stay> = part.stays.values().cloned().collect();
        let mut resumed = RoomLedger::resume(p, session, stays);
        resumed.fold(then);
        assert_eq!(resumed.session, whole.session);
        let mut a: Vec<_> = resumed.stays.values().cloned().collect();
        let mut b: Vec<_> = whole.stays.values().cloned().collect();
        a.sort_by_key(|s| s.user.clone());
        b.sort_by_key(|s| s.user.clone());
        assert_eq!(a, b);
        let reconciled = RoomEvent {
            event: MemberEvent::Destroy {
                at: t(9),
                exit: RECONCILED,
            },
            users: Vec::new(),
        };
        assert!(!goes_after(Some((t(10), RANK_ENTER)), t(9), 2));
        assert!(goes_after(Some((t(5), 2)), reconciled.order_key().0, 2));
        assert!(goes_after(Some((t(9), RANK_ENTER)), t(9), RANK_ENTER));
        assert!(!goes_after(Some((t(9), 1)), t(9), 1));
    }
}
