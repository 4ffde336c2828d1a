//! Configuration: every variable of docs/configuration.md, read once at start-up and validated.
//!
//! This file holds what the configuration is: [`Config`], its parts and the defaults.
//! - `read`: [`Config::from_env`] and [`Config::from_lookup`], every variable read and checked.
//! - `values`: the error that names a variable, the parsers, and [`Secret`].
//! - `drift_repair`: the drift-repair variables ([`DriftRepairConfig`]).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

mod drift_repair;
mod read;
mod values;

pub use drift_repair::DriftRepairConfig;
pub use values::{ConfigError, Secret};

// Types the parts below own, re-exported: a setting is named here, its meaning there.
use crate::{
    callback::SdkAppId,
    store::{NotifyMode, Rules, attendance::Policy},
};
pub use crate::{
    store::RejectedLimits,
    telemetry::{DEFAULT_RUST_LOG, LogFormat},
};

#[derive(Debug, Clone)]
pub struct Config {
    /// Holds the database password, hence a secret.
    pub database_url: Secret,
    pub sdk_app_ids: Vec<SdkAppId>,
    pub callback_token: Option<Secret>,
    pub signature_max_skew: Duration,
    /// How far an `EventTime` may be ahead of the arrival (docs/limits.md#the-callback).
    pub event_time_max_future: Duration,
    pub listen_addr: SocketAddr,
    pub run_migrations: bool,
    pub max_body_bytes: usize,
    pub log_format: LogFormat,
    pub database_max_connections: u32,
    /// How long a callback may wait for its commit before the journal takes it: with the
    /// journal write, well inside Tencent's 2 s.
    pub commit_timeout: Duration,
    /// How long a callback may wait for a database connection before it goes to the journal.
    pub database_acquire_timeout: Duration,
    pub http_workers: usize,
    pub batch_max_events: usize,
    /// Transactions of callbacks in flight at once (the writer tasks).
    pub batch_writers: usize,
    /// `lock_timeout` of every write transaction: how long a room held by another session
    /// may stall a batch before that room's callbacks are given back (docs/durability.md).
    pub database_lock_timeout: Duration,
    /// The writer's own bound on one transaction, whatever it waits for.
    pub database_write_timeout: Duration,
    /// Intervals of the background tasks; not variables (tests shorten them).
    pub timings: Timings,
    /// The local journal file (docs/durability.md#the-local-journal).
    pub journal_path: PathBuf,
    /// Past this many bytes of pending callbacks the journal refuses more (503).
    pub journal_max_bytes: u64,
    /// Prune history received longer ago than this; `None` keeps it forever.
    pub event_retention_days: Option<i32>,
    /// The attendance ledger's merge gap and empty grace (docs/attendance.md#policies).
    pub attendance: Policy,
    /// Prune sessions that ended longer ago than this, with their stays; `None` keeps them.
    pub attendance_retention_days: Option<i32>,
    /// Open HTTP connections at most, for the whole process.
    pub http_max_connections: usize,
    /// Bytes of callback bodies being received or handled at once, for the whole process
    /// (docs/limits.md#the-http-server).
    pub http_max_inflight_body_bytes: usize,
    /// Bounds of `rejected_callbacks`: bytes of a body kept, bytes written per second (a burst
    /// of ten seconds' worth) and in all, and days kept.
    pub rejected: RejectedLimits,
    /// Drift repair (docs/drift-repair.md); `None` without `TENCENT_SECRET_KEY`.
    pub drift_repair: Option<DriftRepairConfig>,
    /// How transactions announce changes (docs/sql.md#listen).
    pub notify_mode: NotifyMode,
    /// The bearer token of the read API (docs/feed.md); `None`: its routes answer 404.
    pub api_token: Option<Secret>,
    /// Where the read API and the console listen when they are served apart from the callbacks
    /// (on threads of their own at a lower CPU priority, docs/feed.md#readers-apart); `None`:
    /// on `listen_addr`, beside the callbacks.
    pub api_listen_addr: Option<SocketAddr>,
    /// The threads serving the read API and the console when they listen apart.
    pub api_workers: usize,
    /// Changes older than this are deleted from the feed.
    pub changes_retention_hours: i32,
    /// Readers waiting on `/v1/changes` at once, at most; past it, 503.
    pub feed_max_waiters: usize,
    /// The URL Tencent should call (roomsync's `/callback` behind the TLS proxy), for
    /// `roomsync tencent check` and `configure`; `None`: not compared, and `configure` refuses.
    pub public_callback_url: Option<reqwest::Url>,
}

/// How often the background tasks look again. Fixed in production; a test may shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How often the drain probes a database that is down, and waits after a failed step.
    pub drain_retry: Duration,
    /// How often the writers reread the room tables' distribution (Citus).
    pub layout_refresh: Duration,
    /// How long one read of the console's overview serves every open console.
    pub console_overview_fresh: Duration,
    /// How long one read of the live rooms (a snapshot and its cursor) serves every console
    /// that opens.
    pub console_rooms_fresh: Duration,
    /// Records the drain reads from the journal per step (a test that fills a small disk makes
    /// steps small, to see several).
    pub drain_step: usize,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            drain_retry: Duration::from_millis(500),
            layout_refresh: Duration::from_secs(10),
            console_overview_fresh: Duration::from_secs(5),
            console_rooms_fresh: Duration::from_secs(1),
            // 4,096 drained 6% faster than 1,024 (BENCHMARKS.md, "A longer drain step"): fewer
            // step ends, where a writer task can run out of rooms the other is not writing.
            drain_step: 4096,
        }
    }
}

impl Config {
    /// How the view is kept: the attendance policy and `NOTIFY_MODE`.
    pub fn rules(&self) -> Rules {
        Rules {
            attendance: self.attendance,
            notify: self.notify_mode,
        }
    }

    pub fn is_our_app(&self, id: SdkAppId) -> bool {
        self.sdk_app_ids.contains(&id)
    }
}

/// Room for 10,000 member ids of about 100 bytes in one callback: each id costs its JSON text
/// (quotes, escapes) plus a comma, so N ids of L plain bytes need about N * (L + 3) bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// The most callbacks a batch may hold: the history insert numbers the members of a whole
/// batch with `int4` offsets, so a batch of callbacks at the list bound must stay within
/// `i32::MAX` members (214,748 callbacks of 10,000 members each).
pub const BATCH_MAX_EVENTS_LIMIT: usize = i32::MAX as usize / crate::callback::MAX_LIST_ENTRIES;
/// 64 MiB: 64 bodies of the largest default size at once; what is waiting is held by the kernel
/// (docs/limits.md#the-http-server).
pub const DEFAULT_HTTP_MAX_INFLIGHT_BODY_BYTES: usize = 64 << 20;
/// 64 KiB a second (one full-size body, in bursts of ten): at most 5.3 GiB a day, and the total
/// bound below is reached first (docs/limits.md#rejected_callbacks).
pub const DEFAULT_REJECTED_MAX_BYTES_PER_SEC: u64 = 64 * 1024;
/// 1 GiB: a month of a few thousand refusals a day of full-size bodies.
pub const DEFAULT_REJECTED_MAX_TOTAL_BYTES: u64 = 1 << 30;
/// Five minutes: far more than the clock differences NTP-synced hosts show (and than the 60 s
/// a signed `RequestTime` may be off), small enough that a forged time holds a room for
/// minutes, not for ever.
pub const DEFAULT_EVENT_TIME_MAX_FUTURE_SECS: u64 = 300;

#[cfg(test)]
mod tests {
    use super::DEFAULT_MAX_BODY_BYTES;

    #[test]
    fn the_default_body_bound_holds_the_list_bound_at_about_100_byte_ids() {
        let id = format!("\"{}\",", "u".repeat(100));
        let list = id.repeat(crate::callback::MAX_LIST_ENTRIES);
        assert!(list.len() + 300 < DEFAULT_MAX_BODY_BYTES);
    }
}
