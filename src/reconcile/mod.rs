//! Drift repair (docs/drift-repair.md): compares the view of each live room with Tencent's REST
//! API and stores what differs as corrections, events of their own (`roomsync.Reconcile`) that
//! the ordering rules fold like callbacks.
//!
//! In `roomsync serve` a background task checks every live room once per interval, oldest-checked
//! first, sharing the rooms with other instances through leases in `room_checks` and the REST
//! budget through `reconcile_budget`. It holds no database connection while it waits for
//! Tencent, and never runs on the callback path. `roomsync reconcile` checks on demand.
//!
//! - `scheduler`: the background task: claims, leases, backoff.
//! - `check`: one room compared and corrected ([`Reconciler::check_room`]).
//! - [`diff`]: the comparison itself, pure.
//! - `report`: what a check found ([`RoomReport`]).
//! - `budget`: the REST rate bound shared by all instances.

mod budget;
mod check;
pub mod correction;
pub mod diff;
mod report;
mod scheduler;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use sqlx::PgPool;

pub use check::{CheckError, Mode};
pub use report::RoomReport;

use crate::{
    callback::{Id, SdkAppId},
    config::DriftRepairConfig,
    store::{self, Writer},
    telemetry::Metrics,
    tencent::TencentClient,
};
use budget::SharedBudget;

/// Checks rooms; cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    pool: PgPool,
    /// Corrections are written like callbacks, through the one writer.
    writer: Writer,
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
        writer: Writer,
        client: TencentClient,
        config: DriftRepairConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let gate = SharedBudget::new(pool.clone(), config.max_rps, metrics.clone());
        Self {
            pool,
            writer,
            client: client.with_gate(Arc::new(gate)),
            config: Arc::new(config),
            metrics,
            auth_logged: Arc::default(),
        }
    }

    fn apps(&self) -> Vec<i64> {
        self.config.keys.keys().map(|app| app.get()).collect()
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
