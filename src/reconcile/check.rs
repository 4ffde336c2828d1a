//! One room's check (docs/drift-repair.md#what-is-compared): read the view, ask Tencent, decide
//! the corrections, store them in one transaction. The decisions are pure functions of the view
//! and the answers ([`Plan`]), so they are unit-tested here without a server.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Reconciler, correction::correction_at, diff, report::RoomReport};
use crate::{
    callback::{Callback, Event, Id, MemberChange, Product, SdkAppId, Seat},
    store::{self, StoreError, checks::RoomView},
    tencent::{Answer, ROOM_NOT_FOUND, TencentError, answer::RoomDetails},
};

/// Tencent refreshes a Live room's member list about every 40 s: a shorter grace would undo
/// callbacks that are right.
const LIVE_MIN_GRACE: Duration = Duration::from_secs(60);
/// Tencent lists at most this many members of a Live room.
const LIVE_LIST_CUT: usize = 1000;
/// The `Reason` of a leave that a correction makes.
const ABSENT: &str = "absent from Tencent's member list";

/// Why a room could not be checked (nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Tencent(#[from] TencentError),
    #[error("the database")]
    Store(#[source] StoreError),
}

impl From<sqlx::Error> for CheckError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

impl From<StoreError> for CheckError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl CheckError {
    /// The metrics label: Tencent's `ErrorCode` or the kind of failure.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::Tencent(e) => e.error_code_label(),
            Self::Store(_) => "database",
        }
    }
}

/// Whether a check stores its corrections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    DryRun,
}

/// Tencent's member list of a room.
struct Observed {
    members: Vec<Id>,
    raw: Value,
    /// False when Tencent listed fewer members than it counts.
    complete: bool,
    /// The API it came from (the key of its answers in a correction's payload).
    api: &'static str,
}

/// What a check decided: the report, and each correction's event with the answer it stands on.
#[derive(Debug, Default)]
struct Plan {
    report: RoomReport,
    corrections: Vec<(Event, Value)>,
}

impl Reconciler {
    /// Compares one room with Tencent and (in [`Mode::Apply`]) stores the corrections, all in
    /// one transaction. An error changes nothing.
    pub async fn check_room(
        &self,
        app: SdkAppId,
        room: &Id,
        mode: Mode,
    ) -> Result<RoomReport, CheckError> {
        let view = store::checks::room_view(&self.pool, app, room).await?;
        if view.last_event_at.is_none() {
            // A room the view never saw (a mistyped --room, another app): never invent one.
            let report = RoomReport {
                unknown: true,
                ..RoomReport::default()
            };
            return Ok(report);
        }
        let live = view.product == Product::Live.as_str();
        let grace = grace_for(live, self.config.grace);
        let observed_at = Utc::now();
        let plan = match self.room_state(app, room, live).await? {
            None => gone(&view, observed_at, grace),
            Some((info, members)) => {
                let mut plan = compare_members(&view, &info, members, observed_at, grace);
                // Seats of Live rooms are not compared: their seat list is not in this API family.
                if !live && diff::has_seats(&view, info.data.is_seat_enabled) {
                    let seats = self.client.get_seat_list(app, room).await?;
                    plan.compare_seats(&view, seats);
                }
                plan
            }
        };
        let corrections = plan
            .corrections
            .into_iter()
            .map(|(event, answer)| correction_at(app, room, observed_at, event, &answer))
            .collect();
        self.finish(app, room, mode, corrections, plan.report).await
    }

    /// Tencent's room and member list (of the Room or the Live API); `None` when the room
    /// is gone.
    async fn room_state(
        &self,
        app: SdkAppId,
        room: &Id,
        live: bool,
    ) -> Result<Option<(Answer<RoomDetails>, Observed)>, CheckError> {
        let info = if live {
            self.client.get_live_room_info(app, room).await
        } else {
            self.client.get_room_info(app, room).await
        };
        let info = match info {
            Ok(info) => info,
            Err(TencentError::RoomNotFound) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let members = if live {
            self.client
                .get_live_member_list(app, room)
                .await
                .map(|answer| Observed {
                    complete: live_list_complete(
                        answer.data.member_count,
                        answer.data.members.len(),
                    ),
                    members: answer.data.members,
                    raw: answer.raw,
                    api: "get_member_list",
                })
        } else {
            self.client
                .get_room_member_list(app, room)
                .await
                .map(|answer| Observed {
                    members: answer.data,
                    raw: answer.raw,
                    complete: true,
                    api: "get_room_member_list",
                })
        };
        match members {
            Ok(members) => Ok(Some((info, members))),
            Err(TencentError::RoomNotFound) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    async fn finish(
        &self,
        app: SdkAppId,
        room: &Id,
        mode: Mode,
        corrections: Vec<Callback>,
        report: RoomReport,
    ) -> Result<RoomReport, CheckError> {
        if mode == Mode::Apply && !corrections.is_empty() {
            let kinds: Vec<&'static str> = corrections
                .iter()
                .map(|callback| correction_kind(&callback.event))
                .collect();
            for result in self.writer.submit_all(corrections).await {
                result?;
            }
            for kind in kinds {
                self.metrics
                    .reconcile_corrections
                    .with_label_values(&[kind])
                    .inc();
            }
        }
        self.metrics.reconcile_rooms_checked.inc();
        tracing::debug!(sdk_app_id = app.get(), room = %room.as_str(), %report, "room checked");
        Ok(report)
    }
}

/// The `kind` label of a stored correction (one of [`RECONCILE_CORRECTION_KINDS`]).
///
/// [`RECONCILE_CORRECTION_KINDS`]: crate::telemetry::RECONCILE_CORRECTION_KINDS
fn correction_kind(event: &Event) -> &'static str {
    match event {
        Event::MemberEnter(_) => "enter",
        Event::MemberLeave(_) => "leave",
        Event::DestroyRoom => "destroy",
        _ => "seats",
    }
}

/// The grace period of a room: the configured one, and for a Live room at least
/// [`LIVE_MIN_GRACE`].
fn grace_for(live: bool, configured: Duration) -> chrono::Duration {
    let grace = if live {
        configured.max(LIVE_MIN_GRACE)
    } else {
        configured
    };
    chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX)
}

/// Whether Tencent's Live member list is the whole room. Without Tencent's count, a list as
/// long as its cut may be cut.
fn live_list_complete(member_count: Option<i64>, listed: usize) -> bool {
    match member_count {
        Some(n) => n <= listed as i64,
        None => listed < LIVE_LIST_CUT,
    }
}

/// The room is gone at Tencent: a destroy, unless the view knows it or is too fresh.
fn gone(view: &RoomView, observed_at: DateTime<Utc>, grace: chrono::Duration) -> Plan {
    let mut plan = Plan::default();
    if view.destroyed {
        return plan;
    }
    if diff::too_recent(view, observed_at, grace) {
        plan.report.held_back.push("(room)".into());
        return plan;
    }
    // Written by roomsync, standing for the answer that said the room is gone.
    let answer = json!({
        "ActionStatus": "FAIL",
        "ErrorCode": ROOM_NOT_FOUND,
        "ErrorInfo": "the room does not exist",
    });
    plan.corrections.push((Event::DestroyRoom, answer));
    plan.report.destroyed = true;
    plan
}

/// Members present at Tencent but not here enter; members here but absent at Tencent leave,
/// unless Tencent's list was cut; either waits while its newest event is within the grace.
fn compare_members(
    view: &RoomView,
    info: &Answer<RoomDetails>,
    members: Observed,
    observed_at: DateTime<Utc>,
    grace: chrono::Duration,
) -> Plan {
    let mut plan = Plan::default();
    let member_count = info
        .data
        .member_count
        .and_then(|n| i32::try_from(n).ok())
        .filter(|n| *n >= 0);
    let mut found = diff::members(view, &members.members, observed_at, grace);
    if !members.complete && !found.leave.is_empty() {
        // Absent from a cut list proves nothing.
        found.leave.clear();
        plan.report.list_cut = true;
    }
    plan.report.held_back = found.held_back;
    let answer = json!({"get_room_info": info.raw, members.api: members.raw});
    for (list, enter) in [(found.enter, true), (found.leave, false)] {
        if list.is_empty() {
            continue;
        }
        let names: Vec<String> = list.iter().map(|m| m.as_str().to_owned()).collect();
        let change = MemberChange {
            members: list,
            member_count,
            kind: None,
            reason: (!enter).then(|| ABSENT.to_owned()),
        };
        let event = if enter {
            plan.report.enter = names;
            Event::MemberEnter(change)
        } else {
            plan.report.leave = names;
            Event::MemberLeave(change)
        };
        plan.corrections.push((event, answer.clone()));
    }
    plan
}

impl Plan {
    /// Tencent's seat list replaces the view's when they differ in anything.
    fn compare_seats(&mut self, view: &RoomView, seats: Answer<Vec<Seat>>) {
        if diff::seats_differ(&view.seats, &seats.data) {
            let event = Event::SeatInfoChanged { seats: seats.data };
            self.corrections.push((event, seats.raw));
            self.report.seats = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::checks::{ViewMember, ViewSeat};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn id(text: &str) -> Id {
        Id::parse(text).unwrap()
    }

    /// A live room whose newest event was at 0 s, with these members in it (each last seen at
    /// 0 s).
    fn view(members: &[&str]) -> RoomView {
        RoomView {
            last_event_at: Some(at(0)),
            destroyed: false,
            member_count: None,
            seats_enabled: false,
            product: "Room".into(),
            members: members
                .iter()
                .map(|m| ViewMember {
                    user_id: (*m).into(),
                    in_room: true,
                    last_event_at: at(0),
                })
                .collect(),
            seats: Vec::new(),
        }
    }

    fn info(member_count: Option<i64>) -> Answer<RoomDetails> {
        Answer {
            data: RoomDetails {
                member_count,
                is_seat_enabled: None,
                fields: Default::default(),
            },
            raw: json!({"Response": {"RoomInfo": {}}}),
        }
    }

    fn observed(members: &[&str], complete: bool) -> Observed {
        Observed {
            members: members.iter().map(|m| id(m)).collect(),
            raw: json!([{"page": 1}]),
            complete,
            api: "get_room_member_list",
        }
    }

    const GRACE: chrono::Duration = chrono::Duration::seconds(30);

    #[test]
    fn a_room_gone_at_tencent_is_destroyed_once_settled() {
        let plan = gone(&view(&["a"]), at(60), GRACE);
        assert!(plan.report.destroyed);
        let [(Event::DestroyRoom, answer)] = &plan.corrections[..] else {
            panic!("{:?}", plan.corrections);
        };
        assert_eq!(answer["ErrorCode"], ROOM_NOT_FOUND);
    }

    #[test]
    fn a_fresh_room_gone_at_tencent_is_held_back() {
        let plan = gone(&view(&["a"]), at(10), GRACE);
        assert!(plan.corrections.is_empty() && !plan.report.destroyed);
        assert_eq!(plan.report.held_back, ["(room)"]);
    }

    #[test]
    fn a_room_destroyed_here_and_gone_there_needs_nothing() {
        let mut destroyed = view(&[]);
        destroyed.destroyed = true;
        let plan = gone(&destroyed, at(60), GRACE);
        assert!(plan.corrections.is_empty());
        assert_eq!(plan.report, RoomReport::default());
    }

    #[test]
    fn members_enter_and_leave_with_tencents_count_and_answers() {
        let plan = compare_members(
            &view(&["a", "ghost"]),
            &info(Some(2)),
            observed(&["a", "new"], true),
            at(60),
            GRACE,
        );
        assert_eq!(plan.report.enter, ["new"]);
        assert_eq!(plan.report.leave, ["ghost"]);
        assert!(plan.report.held_back.is_empty() && !plan.report.list_cut);
        let [
            (Event::MemberEnter(enter), answer),
            (Event::MemberLeave(leave), _),
        ] = &plan.corrections[..]
        else {
            panic!("{:?}", plan.corrections);
        };
        assert_eq!(enter.members, [id("new")]);
        assert_eq!(
            (enter.member_count, enter.reason.as_deref()),
            (Some(2), None)
        );
        assert_eq!(leave.members, [id("ghost")]);
        assert_eq!(leave.reason.as_deref(), Some(ABSENT));
        assert_eq!(
            answer["get_room_info"],
            json!({"Response": {"RoomInfo": {}}})
        );
        assert_eq!(answer["get_room_member_list"], json!([{"page": 1}]));
    }

    #[test]
    fn a_cut_list_takes_no_one_for_gone() {
        let plan = compare_members(
            &view(&["a", "b"]),
            &info(Some(5000)),
            observed(&["a", "c"], false),
            at(60),
            GRACE,
        );
        assert!(plan.report.list_cut);
        assert!(plan.report.leave.is_empty());
        assert_eq!(plan.report.enter, ["c"]);
        assert_eq!(plan.corrections.len(), 1);
    }

    #[test]
    fn young_differences_are_held_back() {
        let plan = compare_members(
            &view(&["ghost"]),
            &info(None),
            observed(&["new"], true),
            at(20),
            GRACE,
        );
        // "new" is unknown here (no event at all), so it enters; "ghost" is too fresh to leave.
        assert_eq!(plan.report.enter, ["new"]);
        assert_eq!(plan.report.held_back, ["ghost"]);
        assert_eq!(plan.corrections.len(), 1);
    }

    #[test]
    fn an_impossible_member_count_is_left_out() {
        for count in [Some(-1), Some(i64::from(i32::MAX) + 1)] {
            let plan = compare_members(
                &view(&[]),
                &info(count),
                observed(&["a"], true),
                at(60),
                GRACE,
            );
            let [(Event::MemberEnter(change), _)] = &plan.corrections[..] else {
                panic!("{:?}", plan.corrections);
            };
            assert_eq!(change.member_count, None, "{count:?}");
        }
    }

    #[test]
    fn seats_take_tencents_list_only_when_it_differs() {
        let mut here = view(&["a"]);
        here.seats = vec![ViewSeat {
            seat_index: 0,
            member_account: Some("a".into()),
            is_taken_disabled: false,
            is_video_disabled: false,
            is_audio_disabled: false,
        }];
        let seat = |member: &str| Seat {
            index: 0,
            member: Some(id(member)),
            is_taken_disabled: false,
            is_video_disabled: false,
            is_audio_disabled: false,
        };
        let answer = |member| Answer {
            data: vec![seat(member)],
            raw: json!({"Response": {"SeatList": []}}),
        };
        let mut same = Plan::default();
        same.compare_seats(&here, answer("a"));
        assert!(same.corrections.is_empty() && !same.report.seats);
        let mut other = Plan::default();
        other.compare_seats(&here, answer("b"));
        assert!(other.report.seats);
        let [(Event::SeatInfoChanged { seats }, raw)] = &other.corrections[..] else {
            panic!("{:?}", other.corrections);
        };
        assert_eq!(seats, &[seat("b")]);
        assert_eq!(raw, &json!({"Response": {"SeatList": []}}));
    }

    /// The labels exported at 0 from the start are exactly the ones a check can give.
    #[test]
    fn the_metrics_labels_initialised_at_start_are_the_ones_given() {
        use std::collections::BTreeSet;

        use crate::{
            telemetry::{RECONCILE_CORRECTION_KINDS, RECONCILE_ERROR_CODES},
            tencent::BudgetError,
        };
        let change = MemberChange {
            members: vec![id("a")],
            member_count: None,
            kind: None,
            reason: None,
        };
        let kinds: BTreeSet<&str> = [
            Event::MemberEnter(change.clone()),
            Event::MemberLeave(change),
            Event::DestroyRoom,
            Event::SeatInfoChanged { seats: Vec::new() },
        ]
        .iter()
        .map(correction_kind)
        .collect();
        assert_eq!(kinds, BTreeSet::from(RECONCILE_CORRECTION_KINDS));

        let mut errors: Vec<CheckError> = (0..200_000)
            .map(|code| {
                TencentError::Api {
                    code,
                    info: String::new(),
                }
                .into()
            })
            .chain((0..1000).map(|status| TencentError::Http(status).into()))
            .collect();
        errors.extend(
            [
                TencentError::RoomNotFound,
                TencentError::Timeout,
                TencentError::Network(String::new()),
                TencentError::Malformed(String::new()),
                TencentError::NoKey(1),
                TencentError::Budget(BudgetError::Exhausted(Duration::ZERO)),
            ]
            .map(CheckError::from),
        );
        errors.push(sqlx::Error::PoolTimedOut.into());
        let codes: BTreeSet<&str> = errors.iter().map(CheckError::label).collect();
        assert_eq!(codes, BTreeSet::from(RECONCILE_ERROR_CODES));
    }

    #[test]
    fn live_rooms_wait_at_least_a_minute() {
        let thirty = Duration::from_secs(30);
        assert_eq!(grace_for(false, thirty), chrono::Duration::seconds(30));
        assert_eq!(grace_for(true, thirty), chrono::Duration::seconds(60));
        assert_eq!(
            grace_for(true, Duration::from_secs(90)),
            chrono::Duration::seconds(90)
        );
        assert_eq!(grace_for(false, Duration::MAX), chrono::Duration::MAX);
    }

    #[test]
    fn a_live_list_is_complete_when_tencent_counts_no_more() {
        assert!(live_list_complete(Some(3), 3));
        assert!(!live_list_complete(Some(1500), 1000));
        // Without a count, a list as long as the cut may be cut.
        assert!(live_list_complete(None, 999));
        assert!(!live_list_complete(None, 1000));
    }
}
