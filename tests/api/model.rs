//! Model-based randomized test (docs/semantics.md): thousands of enter/leave/destroy/create,
//! room-info update and seat events over a few rooms and users (many at one millisecond in one
//! room: distinct callbacks at one EventTime all count), with duplicates, shuffled, delivered concurrently to two running
//! instances sharing one database. The result must equal an in-memory model that applies the
//! distinct events one by one in EventTime order.
//!
//! Replay a failure with `ROOMSYNC_MODEL_SEED=<seed printed by the failing run>`.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use rand::{RngExt, SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde_json::{Value, json};
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::{helpers::*, rows::*};

const ROOMS: usize = 25;
const LIVE_ROOMS: usize = 6;
const USERS: usize = 12;
const EVENTS: usize = 2500;
const BASE: i64 = 1_700_000_000_000;

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
    Create {
        room: String,
        name: String,
        at: i64,
    },
    /// A room-info update: `RoomName` when `name` is set, and `CustomInfo`.
    Update {
        room: String,
        name: Option<String>,
        custom: String,
        at: i64,
    },
    /// A seat change of one seat (`member` `None`: the seat is freed).
    Seat {
        room: String,
        index: i32,
        member: Option<String>,
        audio: bool,
        at: i64,
    },
    /// Drift-repair corrections (docs/drift-repair.md), stored by the library as the
    /// reconciler stores them.
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
    /// TUILiveKit member events and destroys, in rooms of their own (docs/live.md).
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

const FIX_REASON: &str = "absent from Tencent's member list";

impl Ev {
    fn at(&self) -> i64 {
        match self {
            Ev::Enter { at, .. }
            | Ev::Leave { at, .. }
            | Ev::Destroy { at, .. }
            | Ev::Create { at, .. }
            | Ev::Update { at, .. }
            | Ev::Seat { at, .. }
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
            | Ev::Update { room, .. }
            | Ev::Seat { room, .. }
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
    /// Order of application (docs/semantics.md#equal-eventtime): at equal EventTime, enters
    /// and creates, then leaves, then destroys; two leaves by (Type, Reason).
    fn order(&self) -> (i64, u8, String, String) {
        match self {
            // Room info and seats at one time: their own rule on content (in the model below).
            Ev::Enter { at, .. }
            | Ev::Create { at, .. }
            | Ev::Update { at, .. }
            | Ev::Seat { at, .. }
            | Ev::FixEnter { at, .. }
            | Ev::LiveOnline { at, .. } => (*at, 0, String::new(), String::new()),
            Ev::LiveOffline { at, cause, .. } => (*at, 1, cause.clone(), String::new()),
            Ev::LiveDestroy { at, .. } => (*at, 2, "0".into(), String::new()),
            Ev::Leave { at, kind, .. } => (*at, 1, kind.clone(), Ev::reason(kind, *at)),
            Ev::FixLeave { at, .. } => (*at, 1, "Reconciled".into(), FIX_REASON.into()),
            // Two destroys at one time: the callback first, then the correction.
            Ev::Destroy { at, .. } => (*at, 2, "0".into(), String::new()),
            Ev::FixDestroy { at, .. } => (*at, 2, "1".into(), String::new()),
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
            Ev::Create { room, name, at } => format!("create/{room}/{at}/{name}"),
            Ev::Update {
                room,
                name,
                custom,
                at,
            } => format!("update/{room}/{at}/{name:?}/{custom}"),
            Ev::Seat {
                room,
                index,
                member,
                audio,
                at,
            } => format!("seat/{room}/{at}/{index}/{member:?}/{audio}"),
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

    /// How the event reaches roomsync: a callback over HTTP, or a correction the reconciler
    /// stores.
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
            &json!({"model": true}),
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
            Ev::Create { room, name, at } => create(room, name, *at),
            Ev::Update {
                room,
                name,
                custom,
                at,
            } => {
                let mut info = json!({"RoomId": room, "CustomInfo": custom});
                if let Some(name) = name {
                    info["RoomName"] = json!(name);
                }
                json!({"CallbackCommand": "Room.CallbackAfterUpdateRoomInfo", "EventTime": at, "RoomInfo": info})
            }
            Ev::Seat {
                room,
                index,
                member,
                audio,
                at,
            } => {
                json!({"CallbackCommand": "Mic.CallbackAfterSeatInfoChanged", "RoomId": room, "EventTime": at,
                       "SeatList": [{"Index": index, "Member_Account": member.clone().unwrap_or_default(),
                                     "IsAudioDisabled": audio}]})
            }
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
            _ => unreachable!("corrections are not callbacks"),
        }
    }
}

#[derive(Clone)]
enum Delivery {
    Http(Value),
    Fix(Box<roomsync::callback::Callback>),
}

/// Delivers everything, 16 at a time, the i-th through instance i % n (its app for a callback,
/// its pool for a correction); the answers in order.
async fn deliver_all(
    apps: &[TestApp],
    pools: &[PgPool],
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
                            Default::default(),
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

fn generate(rng: &mut StdRng) -> Vec<Ev> {
    let pick_users = |rng: &mut StdRng| {
        let mut all: Vec<String> = (0..USERS).map(|u| format!("u{u}")).collect();
        all.shuffle(rng);
        all.truncate(rng.random_range(1..=3));
        all
    };
    (0..EVENTS)
        .map(|_| {
            // One event in six sets room info or a seat, in a few rooms over a few
            // milliseconds: many distinct ones at one time in one room.
            if rng.random_range(0..6) == 0 {
                let room = format!("room{}", rng.random_range(0..4));
                let at = BASE + rng.random_range(0..20);
                let name = |rng: &mut StdRng| format!("n{}", rng.random_range(0..4));
                return match rng.random_range(0..10) {
                    0..3 => Ev::Create {
                        room,
                        name: name(rng),
                        at,
                    },
                    3..6 => Ev::Update {
                        room,
                        name: (rng.random_range(0..3) > 0).then(|| name(rng)),
                        custom: format!("c{}", rng.random_range(0..3)),
                        at,
                    },
                    _ => Ev::Seat {
                        room,
                        index: rng.random_range(0..3),
                        member: (rng.random_range(0..4) > 0)
                            .then(|| format!("u{}", rng.random_range(0..4))),
                        audio: rng.random_range(0..2) == 0,
                        at,
                    },
                };
            }
            let room = format!("room{}", rng.random_range(0..ROOMS));
            // A narrow time range, so equal EventTimes happen often.
            let at = BASE + rng.random_range(0..150);
            // One event in five is about a Live room.
            if rng.random_range(0..5) == 0 {
                let room = format!("live{}", rng.random_range(0..LIVE_ROOMS));
                let mut users = pick_users(rng);
                // Some audience accounts are numbers above 2^53.
                if rng.random_range(0..4) == 0 {
                    users.push(format!("1441152123858325{:02}", rng.random_range(0..10)));
                }
                let cause = |rng: &mut StdRng, causes: &[&str]| {
                    causes[rng.random_range(0..causes.len())].to_owned()
                };
                return match rng.random_range(0..10) {
                    0..5 => Ev::LiveOnline {
                        room,
                        users,
                        cause: cause(rng, &["Enter", "HeartbeatRecover"]),
                        at,
                    },
                    5..9 => Ev::LiveOffline {
                        room,
                        users,
                        cause: cause(rng, &["Leave", "HeartbeatInterrupt", "Kicked"]),
                        at,
                    },
                    _ => Ev::LiveDestroy { room, at },
                };
            }
            match rng.random_range(0..100) {
                0..40 => Ev::Enter {
                    room,
                    users: pick_users(rng),
                    at,
                },
                40..75 => {
                    let kind = ["Leave", "Kicked", "Expired"][rng.random_range(0..3)].to_owned();
                    Ev::Leave {
                        room,
                        users: pick_users(rng),
                        kind,
                        at,
                    }
                }
                75..84 => Ev::Destroy { room, at },
                84..92 => Ev::Create {
                    room,
                    name: format!("n{}", rng.random_range(0..4)),
                    at,
                },
                92..96 => Ev::FixLeave {
                    room,
                    users: pick_users(rng),
                    at,
                },
                96..99 => Ev::FixEnter {
                    room,
                    users: pick_users(rng),
                    at,
                },
                _ => Ev::FixDestroy { room, at },
            }
        })
        .collect()
}

type Time = DateTime<Utc>;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct Member {
    in_room: bool,
    entered_at: Option<Time>,
    left_at: Option<Time>,
    leave_type: Option<String>,
    leave_reason: Option<String>,
    last_event_at: Time,
}

#[derive(Debug, Clone, PartialEq, Default, sqlx::FromRow)]
struct Room {
    product: String,
    member_count: Option<i32>,
    room_name: Option<String>,
    custom: Option<String>,
    created_at: Option<Time>,
    destroyed_at: Option<Time>,
    last_event_at: Option<Time>,
}

#[derive(sqlx::FromRow)]
struct MemberInRoom {
    room_id: String,
    user_id: String,
    #[sqlx(flatten)]
    member: Member,
}

#[derive(sqlx::FromRow)]
struct RoomWithId {
    room_id: String,
    #[sqlx(flatten)]
    room: Room,
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

/// The sequential result, written straight from docs/semantics.md.
fn model(distinct: &[Ev]) -> Sequential {
    let mut events = distinct.to_vec();
    events.sort_by_key(Ev::order);
    let mut members: BTreeMap<(String, String), Member> = BTreeMap::new();
    let mut rooms: BTreeMap<String, Room> = BTreeMap::new();
    let mut seats: BTreeMap<(String, i32), SeatState> = BTreeMap::new();
    // Per room and field, the (EventTime, JSON text) that set it: at one time the larger
    // text wins (docs/semantics.md#create-and-update-room-info).
    let mut info_version: BTreeMap<(String, &str), (i64, String)> = BTreeMap::new();
    let mut set_field = |room: &str, field: &'static str, at: i64, value: &str| {
        let version = (at, Value::String(value.to_owned()).to_string());
        let slot = info_version.entry((room.to_owned(), field));
        let current = slot.or_insert((i64::MIN, String::new()));
        let newer = version >= *current;
        if newer {
            *current = version;
        }
        newer
    };
    let mut count_version: BTreeMap<String, (i64, u8, i32)> = BTreeMap::new();
    for ev in &events {
        let t = ms(ev.at());
        let room = rooms.entry(ev.room().to_owned()).or_default();
        room.last_event_at = room.last_event_at.max(Some(t));
        room.product = if ev.room().starts_with("live") {
            "Live"
        } else {
            "Room"
        }
        .into();
        match ev {
            Ev::Enter { users, .. }
            | Ev::Leave { users, .. }
            | Ev::FixEnter { users, .. }
            | Ev::FixLeave { users, .. } => {
                let (_, rank, ..) = ev.order();
                let version = (ev.at(), rank, ev.member_count());
                let current = count_version.entry(ev.room().to_owned()).or_insert(version);
                if version >= *current {
                    *current = version;
                    room.member_count = Some(ev.member_count());
                }
                if let Ev::Enter { .. } | Ev::FixEnter { .. } = ev {
                    room.destroyed_at = None;
                }
                for user in users {
                    let key = (ev.room().to_owned(), user.clone());
                    let m = members.entry(key).or_insert(Member {
                        in_room: false,
                        entered_at: None,
                        left_at: None,
                        leave_type: None,
                        leave_reason: None,
                        last_event_at: t,
                    });
                    m.last_event_at = t;
                    if let Ev::Leave { kind, at, .. } = ev {
                        m.in_room = false;
                        m.left_at = Some(t);
                        m.leave_type = Some(kind.clone());
                        m.leave_reason = Some(Ev::reason(kind, *at));
                    } else if let Ev::FixLeave { .. } = ev {
                        m.in_room = false;
                        m.left_at = Some(t);
                        m.leave_type = Some("Reconciled".into());
                        m.leave_reason = Some(FIX_REASON.into());
                    } else {
                        m.in_room = true;
                        m.entered_at = Some(t);
                    }
                }
            }
            Ev::LiveOnline { users, .. } | Ev::LiveOffline { users, .. } => {
                room.destroyed_at = room
                    .destroyed_at
                    .filter(|_| matches!(ev, Ev::LiveOffline { .. }));
                for user in users {
                    let m = members
                        .entry((ev.room().to_owned(), user.clone()))
                        .or_insert(Member {
                            in_room: false,
                            entered_at: None,
                            left_at: None,
                            leave_type: None,
                            leave_reason: None,
                            last_event_at: t,
                        });
                    m.last_event_at = t;
                    if let Ev::LiveOffline { cause, .. } = ev {
                        m.in_room = false;
                        m.left_at = Some(t);
                        m.leave_type = Some(cause.clone());
                        m.leave_reason = None;
                    } else {
                        m.in_room = true;
                        m.entered_at = Some(t);
                    }
                }
            }
            Ev::Destroy { room: id, .. }
            | Ev::FixDestroy { room: id, .. }
            | Ev::LiveDestroy { room: id, .. } => {
                let exit = if let Ev::FixDestroy { .. } = ev {
                    "Reconciled"
                } else {
                    "RoomDestroyed"
                };
                room.destroyed_at = Some(t);
                seats.retain(|(r, _), _| r != id);
                for ((r, _), m) in members.iter_mut() {
                    if r == id && m.in_room {
                        m.in_room = false;
                        m.left_at = Some(t);
                        m.leave_type = Some(exit.into());
                    }
                }
            }
            Ev::Create { room: id, name, at } => {
                if set_field(id, "RoomName", *at, name) {
                    room.room_name = Some(name.clone());
                }
                room.created_at = Some(t);
                room.destroyed_at = None;
            }
            Ev::Update {
                room: id,
                name,
                custom,
                at,
            } => {
                if let Some(name) = name
                    && set_field(id, "RoomName", *at, name)
                {
                    room.room_name = Some(name.clone());
                }
                if set_field(id, "CustomInfo", *at, custom) {
                    room.custom = Some(custom.clone());
                }
            }
            Ev::Seat {
                room: id,
                index,
                member,
                audio,
                at,
            } => {
                // Newest wins; at one time the larger (member, flags), a free seat smallest.
                let state = SeatState {
                    at: *at,
                    member: member.clone(),
                    audio: *audio,
                };
                let slot = seats.entry((id.clone(), *index)).or_insert(state.clone());
                if state.order() >= slot.order() {
                    *slot = state;
                }
            }
        }
    }
    Sequential {
        members,
        rooms,
        seats,
    }
}

/// The sequential result: members, rooms, seats.
struct Sequential {
    members: BTreeMap<(String, String), Member>,
    rooms: BTreeMap<String, Room>,
    seats: BTreeMap<(String, i32), SeatState>,
}

#[derive(Debug, Clone, PartialEq)]
struct SeatState {
    at: i64,
    member: Option<String>,
    audio: bool,
}

impl SeatState {
    fn order(&self) -> (i64, &str, bool) {
        (self.at, self.member.as_deref().unwrap_or(""), self.audio)
    }
}

#[sqlx::test]
async fn two_instances_converge_to_the_sequential_result(pool: PgPool) {
    two_instances_converge(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn two_instances_converge(pool: PgPool) {
    let seed = seed("model");
    let mut rng = StdRng::seed_from_u64(seed);

    let distinct = distinct_events(&mut rng);
    // Every event once, a quarter of them again (some with the member list reordered);
    // corrections interleaved with the callbacks.
    let deliveries = shuffled_with_repeats(&mut rng, &distinct);

    let second_pool = PgPoolOptions::new()
        .max_connections(5)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap();
    let pools = [pool.clone(), second_pool.clone()];
    let apps = [spawn_app(pool.clone()).await, spawn_app(second_pool).await];
    let answers = deliver_all(&apps, &pools, &deliveries).await;
    for (status, answer) in &answers {
        assert_eq!((*status, answer), (200, &ok()), "seed {seed}");
    }
    // A callback that met a slow commit was answered from the journal: it is applied by the
    // drain (on a busy machine, and on Citus where batches can meet a distributed deadlock).
    let drained = eventually(Duration::from_secs(60), || async {
        journal_depth(&apps[0]).await == 0 && journal_depth(&apps[1]).await == 0
    })
    .await;
    assert!(drained, "the journals drain (seed {seed})");

    assert_eq!(
        history(&pool).await,
        distinct.len() as i64,
        "exactly once in history (seed {seed})"
    );

    check_against_model(&pool, &distinct, seed).await;
    for app in apps {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        for line in metrics.lines().filter(|l| {
            l.starts_with("roomsync_callbacks_total")
                || l.starts_with("roomsync_batch_size_sum")
                || l.starts_with("roomsync_batch_size_count")
                || l.starts_with("roomsync_http_request_duration_seconds_sum")
                || l.starts_with("roomsync_http_request_duration_seconds_count")
        }) {
            println!("{line}");
        }
        app.stop().await;
    }
    println!(
        "{} deliveries, {} distinct events",
        deliveries.len(),
        distinct.len()
    );
}

/// Asserts that the view equals the model's sequential result for these distinct events.
async fn check_against_model(pool: &PgPool, distinct: &[Ev], seed: u64) {
    let Sequential {
        members: want_members,
        rooms: want_rooms,
        seats: want_seats,
    } = model(distinct);
    let rows: Vec<MemberInRoom> = sqlx::query_as(
        "SELECT room_id, user_id, in_room, entered_at, left_at, leave_type, leave_reason, last_event_at FROM room_members",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let got_members: BTreeMap<(String, String), Member> = rows
        .into_iter()
        .map(|row| ((row.room_id, row.user_id), row.member))
        .collect();
    for (key, want) in &want_members {
        assert_eq!(
            got_members.get(key),
            Some(want),
            "member {key:?} (seed {seed})"
        );
    }
    assert_eq!(got_members.len(), want_members.len(), "seed {seed}");

    let rows: Vec<RoomWithId> = sqlx::query_as(
        "SELECT room_id, product, member_count, room_name, room_info ->> 'CustomInfo' AS custom, created_at, destroyed_at, last_event_at FROM rooms",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let got_rooms: BTreeMap<String, Room> = rows
        .into_iter()
        .map(|row| (row.room_id, row.room))
        .collect();
    assert_eq!(got_rooms, want_rooms, "rooms (seed {seed})");
    let rows: Vec<(String, i32, Option<String>, bool, Time)> = sqlx::query_as(
        "SELECT room_id, seat_index, member_account, is_audio_disabled, last_event_at FROM room_seats",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let got_seats: BTreeMap<(String, i32), SeatState> = rows
        .into_iter()
        .map(|(room, index, member, audio, at)| {
            let at = at.timestamp_millis();
            ((room, index), SeatState { at, member, audio })
        })
        .collect();
    assert_eq!(got_seats, want_seats, "seats (seed {seed})");
    println!("{} members checked", want_members.len());
}

/// The generated events, each distinct event once.
fn distinct_events(rng: &mut StdRng) -> Vec<Ev> {
    let mut distinct: BTreeMap<String, Ev> = BTreeMap::new();
    for ev in generate(rng) {
        distinct.entry(ev.dedup_key()).or_insert(ev);
    }
    distinct.into_values().collect()
}

/// Every event and a quarter again, shuffled, as deliveries.
fn shuffled_with_repeats(rng: &mut StdRng, distinct: &[Ev]) -> Vec<Delivery> {
    let mut deliveries: Vec<Delivery> = distinct.iter().map(Ev::delivery).collect();
    for _ in 0..distinct.len() / 4 {
        let mut again = distinct[rng.random_range(0..distinct.len())].delivery();
        if let Delivery::Http(body) = &mut again
            && let Some(list) = body
                .get_mut("MemberList_Account")
                .and_then(Value::as_array_mut)
        {
            list.reverse();
        }
        deliveries.push(again);
    }
    deliveries.shuffle(rng);
    deliveries
}

/// The same events written straight through the store, in batches of random sizes (1 to
/// 256), two batches at a time: a member named several times in one batch, a destroy and
/// enters of its room in one batch, duplicates within one batch, all must give the
/// sequential result (docs/semantics.md).
#[sqlx::test]
async fn batches_of_any_size_give_the_sequential_result(pool: PgPool) {
    batches_of_any_size(pool, None).await;
}

/// The statements' Citus form (one routed statement a row, docs/scaling.md#citus) gives the
/// same results: checked here on plain PostgreSQL, where the functions behave alike.
#[sqlx::test]
async fn the_row_by_row_statements_give_the_sequential_result_too(pool: PgPool) {
    batches_of_any_size(pool, Some(roomsync::store::Dialect::Citus)).await;
}

async fn batches_of_any_size(pool: PgPool, known: Option<roomsync::store::Dialect>) {
    let seed = seed("batches");
    let mut rng = StdRng::seed_from_u64(seed);
    let distinct = distinct_events(&mut rng);
    let callbacks: Vec<roomsync::callback::Callback> = shuffled_with_repeats(&mut rng, &distinct)
        .into_iter()
        .map(|delivery| match delivery {
            Delivery::Fix(correction) => *correction,
            Delivery::Http(body) => {
                let query = roomsync::callback::CallbackQuery {
                    command: body["CallbackCommand"].as_str().map(str::to_owned),
                    ..Default::default()
                };
                let bytes = body.to_string();
                roomsync::callback::parse_stored(APP_ID, &query, bytes.as_bytes(), Utc::now())
                    .expect("the model's callbacks are valid")
            }
        })
        .collect();
    let mut batches: Vec<Vec<&roomsync::callback::Callback>> = Vec::new();
    let mut rest = &callbacks[..];
    while !rest.is_empty() {
        let size = rng.random_range(1..=256).min(rest.len());
        let (batch, tail) = rest.split_at(size);
        batches.push(batch.iter().collect());
        rest = tail;
    }
    let most = batches.iter().map(Vec::len).max().unwrap_or(0);
    futures_util::stream::iter(&batches)
        .map(|batch| {
            let pool = &pool;
            async move { roomsync::store::write_batch(pool, known, Default::default(), batch).await }
        })
        .buffer_unordered(2)
        .for_each(|written| async move {
            written.expect("a batch is stored");
        })
        .await;
    assert_eq!(
        history(&pool).await,
        distinct.len() as i64,
        "exactly once in history (seed {seed})"
    );
    check_against_model(&pool, &distinct, seed).await;
    println!(
        "{} callbacks in {} batches of up to {most}",
        callbacks.len(),
        batches.len()
    );
}

#[sqlx::test]
async fn rebuild_from_history_reproduces_the_live_view(pool: PgPool) {
    rebuild_reproduces_the_live_view(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn rebuild_reproduces_the_live_view(pool: PgPool) {
    let seed = seed("rebuild");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut deliveries: Vec<Delivery> = generate(&mut rng).iter().map(Ev::delivery).collect();
    // Seats and room updates too, which the sequential model above does not cover.
    for i in 0..300 {
        let room = format!("room{}", rng.random_range(0..ROOMS));
        let at = BASE + rng.random_range(0..150);
        deliveries.push(Delivery::Http(if i % 2 == 0 {
            let user = format!("u{}", rng.random_range(0..USERS));
            json!({"CallbackCommand": "Mic.CallbackAfterSeatInfoChanged", "RoomId": room, "EventTime": at,
                   "SeatList": [{"Index": rng.random_range(0..4), "Member_Account": if at % 3 == 0 { String::new() } else { user }, "IsAudioDisabled": at % 2 == 0}]})
        } else {
            json!({"CallbackCommand": "Room.CallbackAfterUpdateRoomInfo", "EventTime": at,
                   "RoomInfo": {"RoomId": room, "RoomName": format!("upd-{at}"), "CustomInfo": format!("c{}", at % 7)}})
        }));
    }
    deliveries.shuffle(&mut rng);
    let apps = [spawn_app(pool.clone()).await];
    let answers = deliver_all(&apps, std::slice::from_ref(&pool), &deliveries).await;
    let [app] = apps;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "seed {seed}"
    );
    app.stop().await;
    let live = view_snapshot(&pool).await;

    // Damage the view, then rebuild it from history.
    sqlx::raw_sql("DELETE FROM room_members WHERE user_id = 'u1'; UPDATE rooms SET room_name = 'damaged', member_count = -1; DELETE FROM room_seats;")
        .execute(&pool)
        .await
        .unwrap();
    assert_ne!(view_snapshot(&pool).await, live);
    let report = roomsync::rebuild::rebuild(&pool, Default::default())
        .await
        .unwrap();
    let with_room = count(
        &pool,
        // On Citus, callbacks without a room are stored under '' (docs/scaling.md#citus).
        "SELECT count(*) FROM room_events WHERE room_id <> ''",
    )
    .await;
    assert_eq!((report.replayed as i64, report.skipped), (with_room, 0));
    let rebuilt = view_snapshot(&pool).await;
    for (i, name) in ["rooms", "room_members", "room_seats"].iter().enumerate() {
        assert!(
            rebuilt[i] == live[i],
            "{name} differs after rebuild (seed {seed})"
        );
    }
}
