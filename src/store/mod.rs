//! PostgreSQL storage: history, membership, rooms, seats, rejected callbacks.
//!
//! Writes go through [`Writer`], which commits callbacks that arrive together in one
//! transaction (group commit); every helper here takes a connection so callers compose
//! them into one transaction.

mod apply;
pub mod attendance;
pub mod backfill;
pub mod changes;
pub mod checks;
pub mod console;
mod health;
pub mod layout;
pub mod membership;
mod rejected;
pub mod retention;
mod runtime;
mod schema;
mod writer;

use std::time::Duration;

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use apply::{
    ChangeKind, Dialect, NotifyMode, Outcome, Rules, apply_batch, backfill_ledger,
    record_rebuild_diff, replay_batch,
};
pub use health::{Health, State, StoreError, connect_once, ping};
pub use layout::{Layout, SharedLayout};
pub use rejected::{
    Budget, RejectedCallback, RejectedLimits, RejectedStore, StoredRow, insert_rejected,
};
pub use runtime::DbRuntime;
pub use schema::{ReachError, ensure_schema};
pub use writer::{Lane, Writer, WriterOptions, write_batch};

/// Embedded copies of `migrations/`: the same files `sqlx migrate run` applies.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A lazily connecting pool: the service starts, and answers 503, while the database is down.
pub fn connect_lazy(
    options: PgConnectOptions,
    max_connections: u32,
    acquire_timeout: Duration,
) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(session_settings(options))
}

/// The settings of every roomsync session, for Citus (docs/scaling.md#citus); plain
/// PostgreSQL keeps them as placeholders and ignores them.
/// - A statement over several shards visits them one after another, in shard order, rather
///   than all at once: two batches take their rooms' row locks in one order.
/// - Modifications commute: Citus takes no lock on a whole shard for a statement over several
///   shards (it would serialize every batch of a shard, and two batches whose statements reach
///   their shards in different orders would deadlock). The rooms' row locks, taken first and
///   in one global order, order the batches, as on plain PostgreSQL.
pub fn session_settings(options: PgConnectOptions) -> PgConnectOptions {
    options.options([
        ("citus.multi_shard_modify_mode", "sequential"),
        ("citus.all_modifications_commutative", "on"),
    ])
}
