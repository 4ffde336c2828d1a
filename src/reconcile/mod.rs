//! Drift repair (docs/drift-repair.md): compares the view of each live room with Tencent's REST
//! API and stores what differs as corrections, events of their own (`roomsync.Reconcile`) that
//! the ordering rules fold like callbacks.
//!
//! In `roomsync serve` a background task checks every live room once per interval, oldest-checked
//! first, sharing the rooms with other instances through leases in `room_checks` and the REST
//! budget through `reconcile_budget`. It holds no database connection while it waits for
//! Tencent, and never runs on the callback path. `roomsync reconcile` checks on demand.

mod budget;
pub mod diff;

use budget::SharedBudget;

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::{
    callback::{
        Callback, Event, Id, MemberChange, Product, SdkAppId, answer::RoomDetails, correction_at,
    },
    config::DriftRepairConfig,
    store::{self, StoreError, checks::RoomRef},
    telemetry::Metrics,
    tencent::{Answer, TencentClient, TencentError},
};

/// How long an instance holds a room it checks; a check that takes longer is cut.
const LEASE: Duration = Duration::from_secs(120);
/// Rooms claimed at a time: one, so that a lease starts when its check does.
const CLAIM: i64 = 1;
/// Pause when no room is due (and after a failure to claim).
const IDLE: Duration = Duration::from_secs(5);
/// Tencent refreshes a Live room's member list about every 40 s: a shorter grace would undo
/// callbacks that are right.
const LIVE_MIN_GRACE: Duration = Duration::from_secs(60);
/// Tencent lists at most this many members of a Live room.
const LIVE_LIST_CUT: usize = 1000;
/// Backoff after a failed check: this, doubled per failure in a row, at most the interval.
const BACKOFF_BASE: Duration = Duration::from_secs(10);

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
    fn label(&self) -> &'static str {
        match self {
            Self::Tencent(e) => e.error_code_label(),
            Self::Store(_) => "database",
        }
    }
}

/// What one check found (and, unless it was a dry run, stored).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoomReport {
    pub enter: Vec<String>,
    pub leave: Vec<String>,
    pub destroyed: bool,
    pub seats: bool,
    /// Differences left alone because of the grace period.
    pub held_back: Vec<String>,
    /// The view has no such room: nothing to compare, nothing stored.
    pub unknown: bool,
    /// Tencent's list was cut (a Live room of more than 1,000): members absent from it were
    /// not taken for gone.
    pub list_cut: bool,
}

impl RoomReport {
    pub fn differs(&self) -> bool {
        !self.enter.is_empty() || !self.leave.is_empty() || self.destroyed || self.seats
    }
}

impl fmt::Display for RoomReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unknown {
            return f.write_str("not a room of the view: nothing compared");
        }
        let mut parts = Vec::new();
        if self.destroyed {
            parts.push("gone at Tencent: destroy".to_owned());
        }
        if !self.enter.is_empty() {
            parts.push(format!("enter {:?}", self.enter));
        }
        if !self.leave.is_empty() {
            parts.push(format!("leave {:?}", self.leave));
        }
        if self.seats {
            parts.push("seats take Tencent's list".to_owned());
        }
        if !self.held_back.is_empty() {
            parts.push(format!(
                "held back by the grace period {:?}",
                self.held_back
            ));
        }
        if self.list_cut {
            parts.push("Tencent's member list was cut: no leaves taken from it".to_owned());
        }
        if parts.is_empty() {
            f.write_str("no difference")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// Whether a check stores its corrections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    DryRun,
}

/// Checks rooms; cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    pool: PgPool,
    client: TencentClient,
    config: Arc<DriftRepairConfig>,
    metrics: Arc<Metrics>,
    /// When each app's credentials were last reported broken (logged once per interval).
    auth_logged: Arc<Mutex<HashMap<SdkAppId, Instant>>>,
}

impl Reconciler {
    /// A reconciler whose REST calls stay within `RECONCILE_MAX_RPS` per app for all
    /// instances together.
    pub fn new(
        pool: PgPool,
        client: TencentClient,
        config: DriftRepairConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let gate = SharedBudget::new(pool.clone(), config.max_rps, metrics.clone());
        Self {
            pool,
            client: client.with_gate(Arc::new(gate)),
            config: Arc::new(config),
            metrics,
            auth_logged: Arc::default(),
        }
    }

    fn apps(&self) -> Vec<i64> {
        self.config.keys.keys().map(|app| app.get()).collect()
    }

    /// The background task of `roomsync serve`; runs until `stop` turns true. A check under
    /// way then finishes and records its result, which releases its room's lease.
    pub fn spawn(self, stop: tokio::sync::watch::Receiver<bool>) -> JoinHandle<()> {
        let owner = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        tokio::spawn(async move {
            let mut last_pass = Instant::now();
            let waker = stop.clone();
            let pause = |wait| {
                let mut stop = waker.clone();
                async move {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => {}
                    }
                }
            };
            while !*stop.borrow() {
                self.metrics
                    .reconcile_since_last_pass
                    .set(last_pass.elapsed().as_secs_f64());
                let due = store::checks::claim_due(
                    &self.pool,
                    &self.apps(),
                    &owner,
                    self.config.interval,
                    LEASE,
                    CLAIM,
                )
                .await;
                let rooms = match due {
                    Ok(rooms) => rooms,
                    Err(error) => {
                        tracing::warn!(error = %error, "drift repair: cannot claim rooms; will retry");
                        pause(IDLE).await;
                        continue;
                    }
                };
                if rooms.is_empty() {
                    // Every due room has been checked: a complete pass, unless some live room
                    // is waiting out a failure (then the gauge keeps growing).
                    let failing = store::checks::failing(&self.pool, &self.apps()).await;
                    if failing.is_ok_and(|n| n == 0) {
                        last_pass = Instant::now();
                        self.metrics.reconcile_since_last_pass.set(0.0);
                    }
                    pause(IDLE.min(self.config.interval)).await;
                    continue;
                }
                for room in rooms {
                    // Claimed rooms are checked; unclaimed ones wait for the next instance.
                    self.check_claimed(&room, &owner).await;
                }
            }
        })
    }

    async fn check_claimed(&self, room: &RoomRef, owner: &str) {
        let (Some(app), Ok(id)) = (
            SdkAppId::from_i64(room.sdk_app_id),
            Id::parse(&room.room_id),
        ) else {
            // Not a room a callback could have made; let it rest for an interval.
            let failure = Some(("not a valid app or room id", self.config.interval));
            let _ = store::checks::finish_check(&self.pool, room, owner, failure).await;
            return;
        };
        let checked = tokio::time::timeout(LEASE - IDLE, self.check_room(app, &id, Mode::Apply))
            .await
            .unwrap_or(Err(CheckError::Tencent(TencentError::Timeout)));
        let failure = match &checked {
            Ok(report) => {
                if report.differs() {
                    tracing::info!(sdk_app_id = app.get(), room = %id.as_str(), corrections = %report, "drift repaired");
                }
                None
            }
            Err(error) => {
                self.report_failure(app, &id, error);
                let failures = store::checks::failures(&self.pool, room).await.unwrap_or(0);
                // Doubling from BACKOFF_BASE, but never longer than the interval.
                let backoff = BACKOFF_BASE
                    .saturating_mul(1 << failures.clamp(0, 16))
                    .min(self.config.interval);
                Some((crate::telemetry::error_chain(error), backoff))
            }
        };
        let failure = failure
            .as_ref()
            .map(|(text, backoff)| (text.as_str(), *backoff));
        if let Err(error) = store::checks::finish_check(&self.pool, room, owner, failure).await {
            tracing::warn!(error = %error, "drift repair: cannot record a check; the lease expires instead");
        }
    }

    fn report_failure(&self, app: SdkAppId, room: &Id, error: &CheckError) {
        self.metrics
            .reconcile_rest_errors
            .with_label_values(&[error.label()])
            .inc();
        if let CheckError::Tencent(e) = error
            && e.is_auth_error()
        {
            // Every room fails the same way until the key is fixed: say it once per interval.
            let mut logged = self.auth_logged.lock().expect("auth log");
            let due = logged
                .get(&app)
                .is_none_or(|at| at.elapsed() >= self.config.interval.max(IDLE));
            if due {
                logged.insert(app, Instant::now());
                tracing::error!(sdk_app_id = app.get(), error = %e, "drift repair: Tencent refuses our credentials; check TENCENT_SECRET_KEY and TENCENT_ADMIN_ACCOUNT");
            }
            return;
        }
        tracing::warn!(sdk_app_id = app.get(), room = %room.as_str(), error = %crate::telemetry::error_chain(error), "drift repair: room skipped until its next turn");
    }

    /// Compares one room with Tencent and (in [`Mode::Apply`]) stores the corrections, all in
    /// one transaction. An error changes nothing.
    pub async fn check_room(
        &self,
        app: SdkAppId,
        room: &Id,
        mode: Mode,
    ) -> Result<RoomReport, CheckError> {
        let mut report = RoomReport::default();
        let mut corrections = Vec::new();
        let view = store::checks::room_view(&self.pool, app, room).await?;
        if view.last_event_at.is_none() {
            // A room the view never saw (a mistyped --room, another app): never invent one.
            report.unknown = true;
            return Ok(report);
        }
        let live = view.product == Product::Live.as_str();
        let grace = if live {
            self.config.grace.max(LIVE_MIN_GRACE)
        } else {
            self.config.grace
        };
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let observed_at = Utc::now();
        let (info, members) = match self.room_state(app, room, live).await? {
            Some(state) => state,
            None => {
                // Gone at Tencent: a destroy, unless the view knows it or is too fresh.
                if !view.destroyed && !diff::too_recent(&view, observed_at, grace) {
                    let payload = json!({
                        "ActionStatus": "FAIL",
                        "ErrorCode": crate::tencent::ROOM_NOT_FOUND,
                        "ErrorInfo": "the room does not exist",
                    });
                    corrections.push(correction_at(
                        app,
                        room,
                        observed_at,
                        Event::DestroyRoom,
                        &payload,
                    ));
                    report.destroyed = true;
                } else if !view.destroyed {
                    report.held_back.push("(room)".into());
                }
                return self.finish(app, room, mode, corrections, report).await;
            }
        };
        let member_count = info
            .data
            .member_count
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| *n >= 0);
        let mut found = diff::members(&view, &members.members, observed_at, grace);
        if !members.complete && !found.leave.is_empty() {
            // Absent from a cut list proves nothing.
            found.leave.clear();
            report.list_cut = true;
        }
        report.held_back = found.held_back;
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
                reason: (!enter).then(|| "absent from Tencent's member list".to_owned()),
            };
            let event = if enter {
                report.enter = names;
                Event::MemberEnter(change)
            } else {
                report.leave = names;
                Event::MemberLeave(change)
            };
            corrections.push(correction_at(app, room, observed_at, event, &answer));
        }
        // Seats of Live rooms are not compared: their seat list is not in this API family.
        if !live && diff::has_seats(&view, info.data.is_seat_enabled) {
            let seats = self.client.get_seat_list(app, room).await?;
            if diff::seats_differ(&view.seats, &seats.data) {
                let event = Event::SeatInfoChanged { seats: seats.data };
                corrections.push(correction_at(app, room, observed_at, event, &seats.raw));
                report.seats = true;
            }
        }
        self.finish(app, room, mode, corrections, report).await
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
                    // Without Tencent's count, a list as long as its cut may be cut.
                    complete: match answer.data.member_count {
                        Some(n) => n <= answer.data.members.len() as i64,
                        None => answer.data.members.len() < LIVE_LIST_CUT,
                    },
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
            let refs: Vec<&Callback> = corrections.iter().collect();
            store::write_batch(&self.pool, &refs).await?;
            for callback in &corrections {
                let kind = match callback.event {
                    Event::MemberEnter(_) => "enter",
                    Event::MemberLeave(_) => "leave",
                    Event::DestroyRoom => "destroy",
                    _ => "seats",
                };
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

    /// Every live room of `apps` (all configured apps when empty), or only `room`.
    pub async fn rooms_to_check(
        &self,
        apps: &[SdkAppId],
        room: Option<&Id>,
    ) -> Result<Vec<(SdkAppId, Id)>, sqlx::Error> {
        let apps: Vec<i64> = if apps.is_empty() {
            self.apps()
        } else {
            apps.iter().map(|a| a.get()).collect()
        };
        if let Some(room) = room {
            return Ok(apps
                .iter()
                .filter_map(|a| SdkAppId::from_i64(*a))
                .map(|a| (a, room.clone()))
                .collect());
        }
        let rooms = store::checks::live_rooms(&self.pool, &apps).await?;
        Ok(rooms
            .into_iter()
            .filter_map(|r| {
                Some((
                    SdkAppId::from_i64(r.sdk_app_id)?,
                    Id::parse(&r.room_id).ok()?,
                ))
            })
            .collect())
    }

    /// Whether this app has a key (can be checked).
    pub fn knows(&self, app: SdkAppId) -> bool {
        self.config.keys.contains_key(&app)
    }
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
