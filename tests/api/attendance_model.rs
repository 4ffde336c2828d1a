//! Model-based randomized test of the attendance ledger (`room_stays`, `room_sessions`, the
//! `room_attendance` view) against a sequential oracle written from the contract (SPEC §10.1),
//! not from the implementation: enters, leaves, destroys and drift-repair corrections over a
//! few rooms and users, in bursts (many at one millisecond, seconds apart within a burst,
//! minutes between bursts, so that merge gaps and grace periods matter), with duplicates,
//! shuffled, delivered concurrently to two running instances sharing one database. The ledger
//! must equal the fold of the distinct events in EventTime order; `rebuild` must give it again,
//! and with another policy, the oracle's ledger for that policy.
//!
//! Replay a failure with `ROOMSYNC_MODEL_SEED=<seed printed by the failing run>`.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use rand::{RngExt, SeedableRng, rngs::StdRng, seq::SliceRandom};
use roomsync::store::attendance::Policy;
use serde_json::{Value, json};
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::{helpers::*, rows::*};

const ROOMS: usize = 4;
const LIVE_ROOMS: usize = 2;
const USERS: usize = 6;
const EVENTS: usize = 1300;
/// Bursts of activity per room, their starts on a 10 s grid over `SPAN_SECS`.
const BURSTS: usize = 6;
const SPAN_SECS: i64 = 2400;
const BASE: i64 = 1_700_000_000_000;
const FIX_REASON: &str = "absent from Tencent's member list";

/// The attendance policy, in seconds (`STAY_MERGE_GAP_SECS`, `SESSION_EMPTY_GRACE_SECS`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub gap_secs: i64,
    pub grace_secs: i64,
}

impl Settings {
    pub const DEFAULT: Settings = Settings {
        gap_secs: 0,
        grace_secs: 300,
    };
    fn policy(self) -> Policy {
        Policy {
            merge_gap: TimeDelta::seconds(self.gap_secs),
            empty_grace: TimeDelta::seconds(self.grace_secs),
        }
    }
    fn gap_ms(self) -> i64 {
        self.gap_secs * 1000
    }
    fn grace_ms(self) -> i64 {
        self.grace_secs * 1000
    }
}

#[derive(Debug, Clone)]
enum Ev {
    Enter {
        room: String,
        users: Vec<String>,
        at: i64,
    },
    Leave {
        room: String,
        users: Vec<String>,
        kind: String,
        at: i64,
    },
    Destroy {
        room: String,
        at: i64,
    },
    /// Not a ledger event; ordered with the enters.
    Create {
        room: String,
        at: i64,
    },
    FixEnter {
        room: String,
        users: Vec<String>,
        at: i64,
    },
    FixLeave {
        room: String,
        users: Vec<String>,
        at: i64,
    },
    FixDestroy {
        room: String,
        at: i64,
    },
    LiveOnline {
        room: String,
        users: Vec<String>,
        cause: String,
        at: i64,
    },
    LiveOffline {
        room: String,
        users: Vec<String>,
        cause: String,
        at: i64,
    },
    LiveDestroy {
        room: String,
        at: i64,
    },
}

/// What an event does to the ledger (SPEC §10.1).
enum Step<'a> {
    Enter(&'a [String]),
    Leave(&'a [String], String, Option<String>),
    Destroy(&'static str),
    Nothing,
}

impl Ev {
    fn at(&self) -> i64 {
        match self {
            Ev::Enter { at, .. }
            | Ev::Leave { at, .. }
            | Ev::Destroy { at, .. }
            | Ev::Create { at, .. }
            | Ev::FixEnter { at, .. }
            | Ev::FixLeave { at, .. }
            | Ev::FixDestroy { at, .. }
            | Ev::LiveOnline { at, .. }
            | Ev::LiveOffline { at, .. }
            | Ev::LiveDestroy { at, .. } => *at,
        }
    }
    fn room(&self) -> &str {
        match self {
            Ev::Enter { room, .. }
            | Ev::Leave { room, .. }
            | Ev::Destroy { room, .. }
            | Ev::Create { room, .. }
            | Ev::FixEnter { room, .. }
            | Ev::FixLeave { room, .. }
            | Ev::FixDestroy { room, .. }
            | Ev::LiveOnline { room, .. }
            | Ev::LiveOffline { room, .. }
            | Ev::LiveDestroy { room, .. } => room,
        }
    }
    // Fields the dedup key does not cover are derived from the ones it does, so two events
    // with one key are the same event.
    fn member_count(&self) -> i32 {
        match self {
            Ev::Enter { users, at, .. } | Ev::FixEnter { users, at, .. } => {
                (at % 50) as i32 + users.len() as i32
            }
            Ev::Leave { at, .. } | Ev::FixLeave { at, .. } => (at % 40) as i32,
            _ => 0,
        }
    }
    fn reason(kind: &str, at: i64) -> String {
        format!("{kind}:{}", at % 3)
    }
    fn name(at: i64) -> String {
        format!("n{}", at % 4)
    }
    /// Order of application: by EventTime; at one time enters (and creates), then leaves,
    /// then destroys; two leaves by (Type, Reason); two destroys: the callback, then the
    /// correction. Events equal in this key commute in the ledger.
    fn order(&self) -> (i64, u8, String, String) {
        match self {
            Ev::Enter { at, .. }
            | Ev::Create { at, .. }
            | Ev::FixEnter { at, .. }
            | Ev::LiveOnline { at, .. } => (*at, 0, String::new(), String::new()),
            Ev::Leave { at, kind, .. } => (*at, 1, kind.clone(), Ev::reason(kind, *at)),
            Ev::FixLeave { at, .. } => (*at, 1, "Reconciled".into(), FIX_REASON.into()),
            Ev::LiveOffline { at, cause, .. } => (*at, 1, cause.clone(), String::new()),
            Ev::Destroy { at, .. } | Ev::LiveDestroy { at, .. } => {
                (*at, 2, "0".into(), String::new())
            }
            Ev::FixDestroy { at, .. } => (*at, 2, "1".into(), String::new()),
        }
    }
    fn step(&self) -> Step<'_> {
        match self {
            Ev::Enter { users, .. } | Ev::FixEnter { users, .. } | Ev::LiveOnline { users, .. } => {
                Step::Enter(users)
            }
            Ev::Leave {
                users, kind, at, ..
            } => Step::Leave(users, kind.clone(), Some(Ev::reason(kind, *at))),
            Ev::FixLeave { users, .. } => {
                Step::Leave(users, "Reconciled".into(), Some(FIX_REASON.into()))
            }
            Ev::LiveOffline { users, cause, .. } => Step::Leave(users, cause.clone(), None),
            Ev::Destroy { .. } | Ev::LiveDestroy { .. } => Step::Destroy("RoomDestroyed"),
            Ev::FixDestroy { .. } => Step::Destroy("Reconciled"),
            Ev::Create { .. } => Step::Nothing,
        }
    }
    fn dedup_key(&self) -> String {
        let set = |users: &Vec<String>| {
            users
                .iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Ev::Enter { room, users, at } => format!("enter/{room}/{at}/{}", set(users)),
            Ev::Leave {
                room,
                users,
                kind,
                at,
            } => format!("leave/{room}/{at}/{kind}/{}", set(users)),
            Ev::Destroy { room, at } => format!("destroy/{room}/{at}"),
            Ev::Create { room, at } => format!("create/{room}/{at}"),
            Ev::FixEnter { room, users, at } => format!("fix-enter/{room}/{at}/{}", set(users)),
            Ev::FixLeave { room, users, at } => format!("fix-leave/{room}/{at}/{}", set(users)),
            Ev::FixDestroy { room, at } => format!("fix-destroy/{room}/{at}"),
            Ev::LiveOnline {
                room,
                users,
                cause,
                at,
            } => format!("live-online/{room}/{at}/{cause}/{}", set(users)),
            Ev::LiveOffline {
                room,
                users,
                cause,
                at,
            } => format!("live-offline/{room}/{at}/{cause}/{}", set(users)),
            Ev::LiveDestroy { room, at } => format!("live-destroy/{room}/{at}"),
        }
    }

    /// A callback over HTTP, or a correction stored as the reconciler stores it.
    fn delivery(&self) -> Delivery {
        use roomsync::callback::{Callback, Event, EventTime, Id, MemberChange, SdkAppId};
        let change = |users: &[String], reason: Option<&str>| MemberChange {
            members: users.iter().map(|u| Id::parse(u).unwrap()).collect(),
            member_count: Some(self.member_count()),
            kind: None,
            reason: reason.map(str::to_owned),
        };
        let event = match self {
            Ev::FixEnter { users, .. } => Event::MemberEnter(change(users, None)),
            Ev::FixLeave { users, .. } => Event::MemberLeave(change(users, Some(FIX_REASON))),
            Ev::FixDestroy { .. } => Event::DestroyRoom,
            _ => return Delivery::Http(self.to_json()),
        };
        Delivery::Fix(Box::new(Callback::correction(
            SdkAppId::from_i64(APP_ID).unwrap(),
            Id::parse(self.room()).unwrap(),
            EventTime::from_millis(self.at()).unwrap(),
            event,
            &json!({"attendance_model": true}),
        )))
    }
    fn to_json(&self) -> Value {
        match self {
            Ev::Enter { room, users, at } => {
                json!({"CallbackCommand": "Room.CallbackAfterMemberEnter", "Operator_Account": users[0],
                "RoomId": room, "MemberCount": self.member_count(), "Type": "Enter", "MemberList_Account": users, "EventTime": at})
            }
            Ev::Leave {
                room,
                users,
                kind,
                at,
            } => {
                json!({"CallbackCommand": "Room.CallbackAfterMemberLeave", "Operator_Account": users[0],
                "RoomId": room, "MemberCount": self.member_count(), "Type": kind, "MemberList_Account": users,
                "Reason": Ev::reason(kind, *at), "EventTime": at})
            }
            Ev::Destroy { room, at } => destroy(room, *at),
            Ev::Create { room, at } => create(room, &Ev::name(*at), *at),
            Ev::LiveOnline {
                room,
                users,
                cause,
                at,
            }
            | Ev::LiveOffline {
                room,
                users,
                cause,
                at,
            } => {
                let kind = if let Ev::LiveOnline { .. } = self {
                    "Online"
                } else {
                    "Offline"
                };
                // Accounts as objects; a numeric-looking one as a bare number.
                let list: Vec<Value> = users
                    .iter()
                    .map(|u| match u.parse::<u64>() {
                        Ok(n) => json!({"Member_Account": n}),
                        Err(_) => json!({"Member_Account": u}),
                    })
                    .collect();
                json!({"CallbackCommand": "Live.CallbackAfterMemberStateChanged", "RoomId": room,
                       "EventType": kind, "EventCause": cause, "MemberList": list, "EventTime": at})
            }
            Ev::LiveDestroy { room, at } => {
                json!({"CallbackCommand": "Live.CallbackAfterDestroyRoom", "RoomId": room, "EventType": "DestroyByUser",
                       "Statistic": {"TotalViewers": 3}, "EventTime": at})
            }
            Ev::FixEnter { .. } | Ev::FixLeave { .. } | Ev::FixDestroy { .. } => {
                unreachable!("corrections are not callbacks")
            }
        }
    }
}

#[derive(Clone)]
enum Delivery {
    Http(Value),
    Fix(Box<roomsync::callback::Callback>),
}

/// Delivers everything, 16 at a time, the i-th through instance i % n (its app for a
/// callback, its pool for a correction, stored with `settings`' policy).
async fn deliver_all(
    apps: &[TestApp],
    pools: &[PgPool],
    settings: Settings,
    deliveries: &[Delivery],
) -> Vec<(u16, Value)> {
    // The statements' form, as the service's writers know it (on Citus the plain form goes
    // through the coordinator and two phases: heavier, the same rows).
    let known = dialect_of(&pools[0]).await;
    futures_util::stream::iter(deliveries.iter().enumerate())
        .map(|(i, delivery)| {
            let (app, pool) = (&apps[i % apps.len()], &pools[i % pools.len()]);
            async move {
                match delivery {
                    Delivery::Http(body) => app.send(body).await,
                    Delivery::Fix(correction) => {
                        roomsync::store::write_batch(
                            pool,
                            known,
                            settings.policy().into(),
                            &[&**correction],
                        )
                        .await
                        .expect("a correction is stored");
                        (200, ok())
                    }
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Durations an enter after a room emptied probes: each policy's merge gap and grace, which
/// the tests use, exactly and one millisecond beyond.
const PROBES_SECS: [i64; 5] = [5, 10, 20, 30, 300];

/// Events in bursts: each room has `BURSTS` bursts starting on a 10 s grid (so that gaps of
/// exactly a grace or a merge gap occur), each 5 to 60 s long; within a burst, whole seconds
/// plus 0 to 2 ms, so that many events share a millisecond. Most bursts close: everyone leaves
/// at its end (the session empties; mostly an enter or a destroy follows exactly a probed
/// duration later or 1 ms beyond), or the room is destroyed there.
fn generate(rng: &mut StdRng) -> Vec<Ev> {
    let rooms: Vec<String> = (0..ROOMS)
        .map(|r| format!("aroom{r}"))
        .chain((0..LIVE_ROOMS).map(|r| format!("alive{r}")))
        .collect();
    let bursts: BTreeMap<String, Vec<(i64, i64)>> = rooms
        .iter()
        .map(|room| {
            let bursts = (0..BURSTS)
                .map(|_| {
                    (
                        rng.random_range(0..SPAN_SECS / 10) * 10,
                        rng.random_range(5..=60),
                    )
                })
                .collect();
            (room.clone(), bursts)
        })
        .collect();
    // Everyone, the numeric Live audience accounts too.
    let everyone: Vec<String> = (0..USERS)
        .map(|u| format!("u{u}"))
        .chain((0..3).map(|n| format!("14411521238583250{n}")))
        .collect();
    let mut closing = Vec::new();
    for (room, bursts) in &bursts {
        let live = room.starts_with("alive");
        let leave = |users: Vec<String>, at: i64, fix: bool| match (live, fix) {
            (true, _) => Ev::LiveOffline {
                room: room.clone(),
                users,
                cause: "Leave".into(),
                at,
            },
            (false, true) => Ev::FixLeave {
                room: room.clone(),
                users,
                at,
            },
            (false, false) => Ev::Leave {
                room: room.clone(),
                users,
                kind: "Leave".into(),
                at,
            },
        };
        let destroy = |at: i64, fix: bool| match (live, fix) {
            (true, _) => Ev::LiveDestroy {
                room: room.clone(),
                at,
            },
            (false, true) => Ev::FixDestroy {
                room: room.clone(),
                at,
            },
            (false, false) => Ev::Destroy {
                room: room.clone(),
                at,
            },
        };
        // The latest burst stays open: some sessions are still open at the end.
        let latest = bursts.iter().map(|&(start, _)| start).max();
        for &(start, length) in bursts.iter().filter(|(start, _)| Some(*start) != latest) {
            // Half a second after the burst's last events: nothing else in the room then.
            let at = BASE + (start + length) * 1000 + 500;
            match rng.random_range(0..100) {
                0..60 => {
                    closing.push(leave(everyone.clone(), at, rng.random_range(0..4) == 0));
                    // A probe exactly a merge gap or a grace later, or 1 ms beyond: an enter
                    // (leaving again a few seconds later) or a destroy.
                    let probe = at
                        + PROBES_SECS[rng.random_range(0..PROBES_SECS.len())] * 1000
                        + i64::from(rng.random_range(0..3) == 0);
                    match rng.random_range(0..6) {
                        0..4 => {
                            let users = vec![everyone[rng.random_range(0..USERS)].clone()];
                            let left = probe + rng.random_range(1..=3) * 1000;
                            closing.push(if live {
                                Ev::LiveOnline {
                                    room: room.clone(),
                                    users: users.clone(),
                                    cause: "Enter".into(),
                                    at: probe,
                                }
                            } else {
                                Ev::Enter {
                                    room: room.clone(),
                                    users: users.clone(),
                                    at: probe,
                                }
                            });
                            closing.push(leave(users, left, false));
                        }
                        4 => closing.push(destroy(probe, rng.random_range(0..3) == 0)),
                        _ => {}
                    }
                }
                60..80 => closing.push(destroy(at, rng.random_range(0..3) == 0)),
                _ => {}
            }
        }
    }
    let pick_users = |rng: &mut StdRng| {
        let mut all: Vec<String> = (0..USERS).map(|u| format!("u{u}")).collect();
        all.shuffle(rng);
        all.truncate(rng.random_range(1..=3));
        all
    };
    (0..EVENTS)
        .map(|_| {
            let room = rooms[rng.random_range(0..rooms.len())].clone();
            let (start, length) = bursts[&room][rng.random_range(0..BURSTS)];
            let at = BASE + (start + rng.random_range(0..=length)) * 1000 + rng.random_range(0..3);
            if room.starts_with("alive") {
                let mut users = pick_users(rng);
                // Now and then an audience account that is a number above 2^53.
                if rng.random_range(0..8) == 0 {
                    users.push(format!("14411521238583250{}", rng.random_range(0..3)));
                }
                let cause = |rng: &mut StdRng, causes: &[&str]| {
                    causes[rng.random_range(0..causes.len())].to_owned()
                };
                return match rng.random_range(0..100) {
                    0..46 => Ev::LiveOnline {
                        room,
                        users,
                        cause: cause(rng, &["Enter", "HeartbeatRecover"]),
                        at,
                    },
                    46..99 => Ev::LiveOffline {
                        room,
                        users,
                        cause: cause(rng, &["Leave", "HeartbeatInterrupt", "Kicked"]),
                        at,
                    },
                    _ => Ev::LiveDestroy { room, at },
                };
            }
            match rng.random_range(0..100) {
                0..36 => Ev::Enter {
                    room,
                    users: pick_users(rng),
                    at,
                },
                36..78 => Ev::Leave {
                    room,
                    users: pick_users(rng),
                    kind: ["Leave", "Kicked", "Expired"][rng.random_range(0..3)].to_owned(),
                    at,
                },
                78..79 => Ev::Destroy { room, at },
                79..84 => Ev::Create { room, at },
                84..93 => Ev::FixLeave {
                    room,
                    users: pick_users(rng),
                    at,
                },
                93..99 => Ev::FixEnter {
                    room,
                    users: pick_users(rng),
                    at,
                },
                _ => Ev::FixDestroy { room, at },
            }
        })
        .chain(closing)
        .collect()
}

/// The generated events, each distinct event once.
fn distinct_events(rng: &mut StdRng) -> Vec<Ev> {
    let mut distinct: BTreeMap<String, Ev> = BTreeMap::new();
    for ev in generate(rng) {
        distinct.entry(ev.dedup_key()).or_insert(ev);
    }
    distinct.into_values().collect()
}

/// Every event and a quarter again (some with the member list reversed), shuffled.
fn shuffled_with_repeats(rng: &mut StdRng, distinct: &[Ev]) -> Vec<Delivery> {
    let mut deliveries: Vec<Delivery> = distinct.iter().map(Ev::delivery).collect();
    for _ in 0..distinct.len() / 4 {
        let mut again = distinct[rng.random_range(0..distinct.len())].delivery();
        if let Delivery::Http(body) = &mut again {
            for list in ["MemberList_Account", "MemberList"] {
                if let Some(list) = body.get_mut(list).and_then(Value::as_array_mut) {
                    list.reverse();
                }
            }
        }
        deliveries.push(again);
    }
    deliveries.shuffle(rng);
    deliveries
}

/// A random seed, or the one in ROOMSYNC_MODEL_SEED to replay a failure; printed either way.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("ROOMSYNC_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("{test} seed: {seed} (replay with ROOMSYNC_MODEL_SEED={seed})");
    seed
}

// ---------------------------------------------------------------------------------------------
// The oracle: SPEC §10.1, folded event by event, one room at a time. Times in ms.

#[derive(Debug, Clone, PartialEq, Eq)]
struct StayRow {
    session_no: i32,
    left_at: Option<i64>,
    leave_type: Option<String>,
    leave_reason: Option<String>,
    merged_gaps: i32,
    gap_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SessionRow {
    started_at: i64,
    ended_at: Option<i64>,
    end_cause: Option<String>,
    peak_members: i32,
    peak_at: i64,
    unique_members: i32,
    member_ms: i64,
    open_stays: i32,
}

/// (room, user, joined_at)
type StayKey = (String, String, i64);
/// (room, session_no)
type SessionKey = (String, i32);

/// A `room_attendance` row of an ended session: (first_joined_at, last_left_at, present_ms,
/// stays, invited), keyed by (room, session_no, user).
type AttendanceRow = (i64, Option<i64>, i64, i32, bool);
type AttendanceKey = (String, i32, String);

#[derive(Debug, Default)]
struct Ledger {
    stays: BTreeMap<StayKey, StayRow>,
    sessions: BTreeMap<SessionKey, SessionRow>,
    /// The oracle's: how often each rule applied.
    coverage: BTreeMap<&'static str, usize>,
}

impl Ledger {
    /// The `room_attendance` rows of the ended sessions (no invitees in these histories).
    fn attendance(&self) -> BTreeMap<AttendanceKey, AttendanceRow> {
        let mut out: BTreeMap<AttendanceKey, AttendanceRow> = BTreeMap::new();
        for ((room, user, joined), stay) in &self.stays {
            let session = &self.sessions[&(room.clone(), stay.session_no)];
            if session.end_cause.is_none() {
                continue;
            }
            let left = stay.left_at.expect("an ended session has no open stay");
            let row = out
                .entry((room.clone(), stay.session_no, user.clone()))
                .or_insert((*joined, Some(left), 0, 0, false));
            row.0 = row.0.min(*joined);
            row.1 = row.1.max(Some(left));
            row.2 += left - joined - stay.gap_ms;
            row.3 += 1;
        }
        out
    }
}

/// One room's ledger as it folds.
#[derive(Default)]
struct RoomFold {
    /// (user, joined_at, row, ended by a destroy)
    stays: Vec<(String, i64, StayRow, bool)>,
    sessions: Vec<SessionRow>,
    /// Members with a stay in each session.
    members: Vec<BTreeSet<String>>,
    /// Each member's newest stay.
    newest: BTreeMap<String, usize>,
    /// How often each rule applied (printed, to see what a history exercised).
    coverage: BTreeMap<&'static str, usize>,
}

impl RoomFold {
    /// The newest session, if it is open or emptied no longer than the grace ago at `t`.
    fn live_session(&self, t: i64, grace: i64) -> bool {
        self.sessions
            .last()
            .is_some_and(|s| match s.end_cause.as_deref() {
                None => true,
                Some("Emptied") => t - s.ended_at.unwrap() <= grace,
                _ => false,
            })
    }

    fn count(&mut self, rule: &'static str) {
        *self.coverage.entry(rule).or_default() += 1;
    }

    /// Counts what an enter or a destroy at `t` finds of an emptied session.
    fn count_grace(&mut self, t: i64, grace: i64, within: &'static str, after: &'static str) {
        if let Some(s) = self.sessions.last()
            && s.end_cause.as_deref() == Some("Emptied")
        {
            let since = t - s.ended_at.unwrap();
            if since == grace {
                self.count("... exactly at the grace bound");
            } else if since == grace + 1 {
                self.count("... 1 ms beyond the grace");
            }
            self.count(if since <= grace { within } else { after });
        }
    }

    fn enter(&mut self, users: &[String], t: i64, settings: Settings) {
        let mut changed = false;
        for user in users {
            let newest = self.newest.get(user).copied();
            if newest.is_some_and(|i| self.stays[i].2.left_at.is_none()) {
                self.count("enter of a member in the room");
                continue;
            }
            self.count_grace(
                t,
                settings.grace_ms(),
                "enter re-opens an emptied session",
                "enter after the grace starts a new session",
            );
            if !self.live_session(t, settings.grace_ms()) {
                self.sessions.push(SessionRow {
                    started_at: t,
                    ended_at: None,
                    end_cause: None,
                    peak_members: 0,
                    peak_at: t,
                    unique_members: 0,
                    member_ms: 0,
                    open_stays: 0,
                });
                self.members.push(BTreeSet::new());
            }
            if let Some(i) = newest
                && settings.gap_ms() > 0
                && t - self.stays[i].2.left_at.unwrap() == settings.gap_ms() + 1
            {
                self.count("enter 1 ms beyond the merge gap");
            }
            let no = self.sessions.len() as i32;
            let session = self.sessions.last_mut().unwrap();
            // Open again (a no-op when it was open).
            session.ended_at = None;
            session.end_cause = None;
            session.open_stays += 1;
            match newest {
                Some(i)
                    if self.stays[i].2.session_no == no
                        && !self.stays[i].3
                        && t - self.stays[i].2.left_at.unwrap() <= settings.gap_ms() =>
                {
                    let (_, joined, stay, _) = &mut self.stays[i];
                    let left = stay.left_at.take().unwrap();
                    *self.coverage.entry("merge").or_default() += 1;
                    if t - left == settings.gap_ms() {
                        *self.coverage.entry("merge exactly at the gap").or_default() += 1;
                    }
                    session.member_ms -= left - *joined - stay.gap_ms;
                    stay.merged_gaps += 1;
                    stay.gap_ms += t - left;
                    stay.leave_type = None;
                    stay.leave_reason = None;
                }
                _ => {
                    self.stays.push((
                        user.clone(),
                        t,
                        StayRow {
                            session_no: no,
                            left_at: None,
                            leave_type: None,
                            leave_reason: None,
                            merged_gaps: 0,
                            gap_ms: 0,
                        },
                        false,
                    ));
                    self.newest.insert(user.clone(), self.stays.len() - 1);
                    self.members.last_mut().unwrap().insert(user.clone());
                }
            }
            changed = true;
        }
        if changed {
            let session = self.sessions.last_mut().unwrap();
            if session.open_stays > session.peak_members {
                session.peak_members = session.open_stays;
                session.peak_at = t;
            }
        }
    }

    fn end_stay(&mut self, i: usize, t: i64, kind: &str, reason: Option<&str>, destroy: bool) {
        let (_, joined, stay, by_destroy) = &mut self.stays[i];
        stay.left_at = Some(t);
        stay.leave_type = Some(kind.to_owned());
        stay.leave_reason = reason.map(str::to_owned);
        *by_destroy = destroy;
        let session = &mut self.sessions[stay.session_no as usize - 1];
        session.member_ms += t - *joined - stay.gap_ms;
        session.open_stays -= 1;
        if session.open_stays == 0 && !destroy {
            session.ended_at = Some(t);
            session.end_cause = Some("Emptied".into());
        }
    }

    fn leave(&mut self, users: &[String], t: i64, kind: &str, reason: Option<&str>) {
        for user in users {
            if let Some(&i) = self.newest.get(user)
                && self.stays[i].2.left_at.is_none()
            {
                self.end_stay(i, t, kind, reason, false);
            } else {
                self.count("leave of a member not in the room");
            }
        }
    }

    fn destroy(&mut self, t: i64, kind: &str, settings: Settings) {
        self.count_grace(
            t,
            settings.grace_ms(),
            "destroy of an emptied session inside its grace",
            "destroy after the grace (no change)",
        );
        if !self.live_session(t, settings.grace_ms()) {
            return;
        }
        let open: Vec<usize> = (0..self.stays.len())
            .filter(|&i| self.stays[i].2.left_at.is_none())
            .collect();
        for i in open {
            self.end_stay(i, t, kind, None, true);
        }
        let session = self.sessions.last_mut().unwrap();
        assert_eq!(session.open_stays, 0);
        session.ended_at = Some(t);
        session.end_cause = Some("Destroyed".into());
    }
}

/// The ledger the contract gives for these distinct events under `settings`.
fn oracle(distinct: &[Ev], settings: Settings) -> Ledger {
    let mut events: Vec<&Ev> = distinct.iter().collect();
    events.sort_by_key(|ev| ev.order());
    let mut rooms: BTreeMap<String, RoomFold> = BTreeMap::new();
    for ev in events {
        let room = rooms.entry(ev.room().to_owned()).or_default();
        let t = ev.at();
        match ev.step() {
            Step::Enter(users) => room.enter(users, t, settings),
            Step::Leave(users, kind, reason) => room.leave(users, t, &kind, reason.as_deref()),
            Step::Destroy(kind) => room.destroy(t, kind, settings),
            Step::Nothing => {}
        }
    }
    let mut ledger = Ledger::default();
    for (id, room) in rooms {
        for (rule, n) in room.coverage {
            *ledger.coverage.entry(rule).or_default() += n;
        }
        for (user, joined, stay, _) in room.stays {
            ledger.stays.insert((id.clone(), user, joined), stay);
        }
        for (n, (mut session, members)) in room.sessions.into_iter().zip(room.members).enumerate() {
            session.unique_members = members.len() as i32;
            ledger.sessions.insert((id.clone(), n as i32 + 1), session);
        }
    }
    ledger
}

// ---------------------------------------------------------------------------------------------
// Reading the ledger back.

type Time = DateTime<Utc>;

fn millis(t: Time) -> i64 {
    assert_eq!(t.timestamp_subsec_micros() % 1000, 0, "{t} is a whole ms");
    t.timestamp_millis()
}

async fn read_ledger(pool: &PgPool) -> Ledger {
    type Stay = (
        String,
        String,
        Time,
        i32,
        Option<Time>,
        Option<String>,
        Option<String>,
        i32,
        i64,
    );
    let stays: Vec<Stay> = sqlx::query_as(
        "SELECT room_id, user_id, joined_at, session_no, left_at, leave_type, leave_reason,
                merged_gaps, gap_ms
         FROM room_stays WHERE sdk_app_id = $1",
    )
    .bind(APP_ID)
    .fetch_all(pool)
    .await
    .unwrap();
    type Session = (
        String,
        i32,
        Time,
        Option<Time>,
        Option<String>,
        i32,
        Time,
        i32,
        i64,
        i32,
    );
    let sessions: Vec<Session> = sqlx::query_as(
        "SELECT room_id, session_no, started_at, ended_at, end_cause, peak_members, peak_at,
                unique_members, member_ms, open_stays
         FROM room_sessions WHERE sdk_app_id = $1",
    )
    .bind(APP_ID)
    .fetch_all(pool)
    .await
    .unwrap();
    Ledger {
        stays: stays
            .into_iter()
            .map(
                |(room, user, joined, no, left, kind, reason, gaps, gap_ms)| {
                    (
                        (room, user, millis(joined)),
                        StayRow {
                            session_no: no,
                            left_at: left.map(millis),
                            leave_type: kind,
                            leave_reason: reason,
                            merged_gaps: gaps,
                            gap_ms,
                        },
                    )
                },
            )
            .collect(),
        sessions: sessions
            .into_iter()
            .map(
                |(room, no, started, ended, cause, peak, peak_at, unique, member_ms, open)| {
                    (
                        (room, no),
                        SessionRow {
                            started_at: millis(started),
                            ended_at: ended.map(millis),
                            end_cause: cause,
                            peak_members: peak,
                            peak_at: millis(peak_at),
                            unique_members: unique,
                            member_ms,
                            open_stays: open,
                        },
                    )
                },
            )
            .collect(),
        coverage: BTreeMap::new(),
    }
}

/// `room_attendance` for the ended sessions.
async fn read_attendance(pool: &PgPool) -> BTreeMap<AttendanceKey, AttendanceRow> {
    type Row = (
        String,
        i32,
        String,
        Option<Time>,
        Option<Time>,
        i64,
        i32,
        bool,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT a.room_id, a.session_no, a.user_id, a.first_joined_at, a.last_left_at,
                a.present_ms, a.stays, a.invited
         FROM room_attendance a
         JOIN room_sessions s USING (sdk_app_id, room_id, session_no)
         WHERE a.sdk_app_id = $1 AND s.ended_at IS NOT NULL",
    )
    .bind(APP_ID)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(room, no, user, first, last, present, stays, invited)| {
            (
                (room, no, user),
                (
                    millis(first.expect("a member with a stay has a first join")),
                    last.map(millis),
                    present,
                    stays,
                    invited,
                ),
            )
        })
        .collect()
}

/// Every key whose rows differ, with both sides.
fn differences<K: Ord + Clone + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    want: &BTreeMap<K, V>,
    got: &BTreeMap<K, V>,
) -> Vec<String> {
    let keys: BTreeSet<&K> = want.keys().chain(got.keys()).collect();
    keys.into_iter()
        .filter(|k| want.get(k) != got.get(k))
        .map(|k| {
            format!(
                "{k:?}\n    want {:?}\n    got  {:?}",
                want.get(k),
                got.get(k)
            )
        })
        .collect()
}

/// The events of `room` in the order of application, one a line.
fn room_history(distinct: &[Ev], room: &str) -> String {
    let mut events: Vec<&Ev> = distinct.iter().filter(|ev| ev.room() == room).collect();
    events.sort_by_key(|ev| ev.order());
    events
        .iter()
        .map(|ev| format!("  +{}ms {:?}", ev.at() - BASE, ev))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that the ledger in the database is the oracle's for `settings`, that the view
/// agrees with it, and that `room_members.in_room` matches the open stays.
async fn check_ledger(pool: &PgPool, distinct: &[Ev], settings: Settings, what: &str) {
    let want = oracle(distinct, settings);
    let got = read_ledger(pool).await;
    let stays = differences(&want.stays, &got.stays);
    let sessions = differences(&want.sessions, &got.sessions);
    if !stays.is_empty() || !sessions.is_empty() {
        let rooms: BTreeSet<String> = want
            .stays
            .keys()
            .chain(got.stays.keys())
            .filter(|k| want.stays.get(*k) != got.stays.get(*k))
            .map(|(room, ..)| room.clone())
            .chain(
                want.sessions
                    .keys()
                    .chain(got.sessions.keys())
                    .filter(|k| want.sessions.get(*k) != got.sessions.get(*k))
                    .map(|(room, _)| room.clone()),
            )
            .collect();
        let first = rooms.first().unwrap();
        panic!(
            "{what}: the ledger differs from the oracle ({settings:?}) in rooms {rooms:?}\n\
             stays:\n{}\nsessions:\n{}\nhistory of {first}:\n{}",
            stays.join("\n"),
            sessions.join("\n"),
            room_history(distinct, first)
        );
    }

    let attendance = differences(&want.attendance(), &read_attendance(pool).await);
    assert!(
        attendance.is_empty(),
        "{what}: room_attendance differs ({settings:?}):\n{}",
        attendance.join("\n")
    );

    // Only this app's rows.
    assert_eq!(
        count(pool, "SELECT count(*) FROM room_stays").await,
        want.stays.len() as i64,
        "{what}"
    );
    assert_eq!(
        count(pool, "SELECT count(*) FROM room_sessions").await,
        want.sessions.len() as i64,
        "{what}"
    );

    // in_room ⇔ exactly one open stay; never two open stays; no open stay without a member
    // in the room; open_stays = the session's open stays. Counted here from plain reads (the
    // same on Citus).
    let members: Vec<(i64, String, String, bool)> =
        sqlx::query_as("SELECT sdk_app_id, room_id, user_id, in_room FROM room_members")
            .fetch_all(pool)
            .await
            .unwrap();
    let open_stays: Vec<(i64, String, String, i32)> = sqlx::query_as(
        "SELECT sdk_app_id, room_id, user_id, session_no FROM room_stays WHERE left_at IS NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut open_by_member: BTreeMap<(i64, &str, &str), i64> = BTreeMap::new();
    let mut open_by_session: BTreeMap<(i64, &str, i32), i32> = BTreeMap::new();
    for (app, room, user, no) in &open_stays {
        *open_by_member.entry((*app, room, user)).or_default() += 1;
        *open_by_session.entry((*app, room, *no)).or_default() += 1;
    }
    let in_room: BTreeSet<(i64, &str, &str)> = members
        .iter()
        .filter(|(.., in_room)| *in_room)
        .map(|(app, room, user, _)| (*app, room.as_str(), user.as_str()))
        .collect();
    for (app, room, user, in_room) in &members {
        let open = open_by_member
            .get(&(*app, room.as_str(), user.as_str()))
            .copied()
            .unwrap_or(0);
        assert!(
            open <= 1 && *in_room == (open == 1),
            "{what}: {room}/{user}: in_room {in_room} with {open} open stays"
        );
    }
    for key in open_by_member.keys() {
        assert!(
            in_room.contains(key),
            "{what}: an open stay of {key:?}, not in the room"
        );
    }
    let sessions: Vec<(i64, String, i32, i32)> =
        sqlx::query_as("SELECT sdk_app_id, room_id, session_no, open_stays FROM room_sessions")
            .fetch_all(pool)
            .await
            .unwrap();
    for (app, room, no, open) in &sessions {
        let counted = open_by_session
            .get(&(*app, room.as_str(), *no))
            .copied()
            .unwrap_or(0);
        assert_eq!(
            *open, counted,
            "{what}: open_stays of {room} session {no} is not its open stays"
        );
    }
    assert_eq!(
        open_by_session.values().sum::<i32>() as usize,
        open_stays.len(),
        "{what}: an open stay without its session"
    );

    let open = want.stays.values().filter(|s| s.left_at.is_none()).count();
    let merged: i32 = want.stays.values().map(|s| s.merged_gaps).sum();
    let causes: BTreeMap<Option<&str>, usize> =
        want.sessions
            .values()
            .fold(BTreeMap::new(), |mut causes, session| {
                *causes.entry(session.end_cause.as_deref()).or_default() += 1;
                causes
            });
    println!(
        "{what} ({settings:?}): {} stays ({open} open, {merged} merged gaps), {} sessions {causes:?}, {} members",
        want.stays.len(),
        want.sessions.len(),
        members.len()
    );
    println!("  rules applied: {:?}", want.coverage);
}

/// Both ledger tables as JSON text, every column, in key order.
async fn ledger_snapshot(pool: &PgPool) -> [String; 2] {
    let stays: String = sqlx::query_scalar(
        "SELECT coalesce(json_agg(to_jsonb(s) ORDER BY sdk_app_id, room_id, user_id, joined_at), '[]')::text FROM room_stays s",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let sessions: String = sqlx::query_scalar(
        "SELECT coalesce(json_agg(to_jsonb(s) ORDER BY sdk_app_id, room_id, session_no), '[]')::text FROM room_sessions s",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    [stays, sessions]
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[sqlx::test]
async fn the_ledger_equals_the_sequential_oracle_zero_policy(pool: PgPool) {
    two_instances_keep_the_ledger(pool, Settings::DEFAULT, &[]).await;
}

#[sqlx::test]
async fn the_ledger_equals_the_sequential_oracle_with_merges_and_a_short_grace(pool: PgPool) {
    with_merges_and_a_short_grace(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn with_merges_and_a_short_grace(pool: PgPool) {
    two_instances_keep_the_ledger(
        pool,
        Settings {
            gap_secs: 5,
            grace_secs: 30,
        },
        // Rebuilt with the same policy, then with others: a merge gap longer than the grace,
        // and the default.
        &[
            Settings {
                gap_secs: 5,
                grace_secs: 30,
            },
            Settings {
                gap_secs: 20,
                grace_secs: 10,
            },
            Settings::DEFAULT,
        ],
    )
    .await;
}

/// The incremental path alone: the same kind of history written in EventTime order through
/// the store, in small batches one after another (no late event, so no refold).
#[sqlx::test]
async fn the_ledger_equals_the_sequential_oracle_in_order(pool: PgPool) {
    in_order_batches_keep_the_ledger(
        pool,
        Settings {
            gap_secs: 5,
            grace_secs: 30,
        },
    )
    .await;
}

/// Distinct events in the order of application, in batches of 1 to 8, written one batch after
/// the other with `settings`' policy; the ledger must be the oracle's.
pub async fn in_order_batches_keep_the_ledger(pool: PgPool, settings: Settings) {
    let seed = seed("attendance in order");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut distinct = distinct_events(&mut rng);
    distinct.sort_by_key(Ev::order);
    let callbacks: Vec<roomsync::callback::Callback> = distinct
        .iter()
        .map(|ev| match ev.delivery() {
            Delivery::Fix(correction) => *correction,
            Delivery::Http(body) => {
                let query = roomsync::callback::CallbackQuery {
                    command: body["CallbackCommand"].as_str().map(str::to_owned),
                    ..Default::default()
                };
                roomsync::callback::parse_stored(
                    APP_ID,
                    &query,
                    body.to_string().as_bytes(),
                    Utc::now(),
                )
                .expect("the model's callbacks are valid")
            }
        })
        .collect();
    let mut rest = &callbacks[..];
    while !rest.is_empty() {
        let (batch, tail) = rest.split_at(rng.random_range(1..=8).min(rest.len()));
        let batch: Vec<&roomsync::callback::Callback> = batch.iter().collect();
        roomsync::store::write_batch(&pool, None, settings.policy().into(), &batch)
            .await
            .expect("a batch is stored");
        rest = tail;
    }
    check_ledger(
        &pool,
        &distinct,
        settings,
        &format!("in order, seed {seed}"),
    )
    .await;
}

/// Random histories delivered to two instances running with `settings`; the ledger must be
/// the oracle's. Then `rebuild` with each of `rebuilds` in turn: with the policy the ledger
/// was kept with, the same rows; with another, the oracle's for that one. Also run on a
/// Citus cluster if wanted.
pub async fn two_instances_keep_the_ledger(
    pool: PgPool,
    settings: Settings,
    rebuilds: &[Settings],
) {
    let seed = seed("attendance model");
    let mut rng = StdRng::seed_from_u64(seed);
    let distinct = distinct_events(&mut rng);
    let deliveries = shuffled_with_repeats(&mut rng, &distinct);

    let second_pool = PgPoolOptions::new()
        .max_connections(5)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap();
    let pools = [pool.clone(), second_pool.clone()];
    let gap = settings.gap_secs.to_string();
    let grace = settings.grace_secs.to_string();
    let env = [
        ("STAY_MERGE_GAP_SECS", gap.as_str()),
        ("SESSION_EMPTY_GRACE_SECS", grace.as_str()),
    ];
    let apps = [
        spawn_app_with(pool.clone(), &env).await,
        spawn_app_with(second_pool, &env).await,
    ];
    let answers = deliver_all(&apps, &pools, settings, &deliveries).await;
    for (status, answer) in &answers {
        assert_eq!((*status, answer), (200, &ok()), "seed {seed}");
    }
    // A callback that met a slow commit was answered from the journal: the drain applies it.
    let drained = eventually(Duration::from_secs(60), || async {
        journal_depth(&apps[0]).await == 0 && journal_depth(&apps[1]).await == 0
    })
    .await;
    assert!(drained, "the journals drain (seed {seed})");
    for app in apps {
        app.stop().await;
    }
    assert_eq!(
        history(&pool).await,
        distinct.len() as i64,
        "exactly once in history (seed {seed})"
    );
    println!(
        "{} deliveries, {} distinct events",
        deliveries.len(),
        distinct.len()
    );
    check_ledger(&pool, &distinct, settings, &format!("live, seed {seed}")).await;

    let mut kept = (settings, ledger_snapshot(&pool).await);
    for &again in rebuilds {
        roomsync::rebuild::rebuild(&pool, again.policy().into())
            .await
            .expect("rebuild");
        let rebuilt = ledger_snapshot(&pool).await;
        if again == kept.0 {
            assert!(
                rebuilt == kept.1,
                "rebuild with the same policy ({again:?}) changes the ledger (seed {seed})"
            );
        }
        check_ledger(&pool, &distinct, again, &format!("rebuilt, seed {seed}")).await;
        kept = (again, rebuilt);
    }
}
