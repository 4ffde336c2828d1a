//! PostgreSQL storage: history, membership, rooms, seats, rejected callbacks.
//!
//! Writes go through [`Writer`], which commits callbacks that arrive together in one
//! transaction (group commit); every helper here takes a connection so callers compose
//! them into one transaction.

mod apply;
pub mod checks;
mod health;
pub mod layout;
pub mod membership;
pub mod rebuild;
mod rejected;
pub mod retention;
mod writer;

use std::{sync::Arc, time::Duration};

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use apply::{Dialect, Outcome, apply_batch};
pub use health::{Health, connect_once};
pub use layout::{Layout, SharedLayout};
pub use rejected::{Budget, RejectedCallback, RejectedStore, StoredRow, insert_rejected};
pub use writer::{Held, Writer, WriterOptions, write_batch, write_batch_as, write_isolating};

/// Embedded copies of `migrations/`: the same files `sqlx migrate run` applies.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why the store could not take a callback. Cloneable, because one failed batch answers every
/// callback in it. What each means is decided in one place, [`health`]: the variant is the
/// evidence of one error; [`Health::judge`] adds the evidence of a fresh connection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL is down: callbacks go to the journal until the drain task reaches it again.
    #[error("the database is unavailable")]
    Unavailable(#[source] Arc<sqlx::Error>),
    /// PostgreSQL is there but slow or busy (no free connection in time while it still accepts
    /// new ones, a deadlock or serialization failure, a cancelled statement): this write goes to
    /// the journal, the next ones still try PostgreSQL.
    #[error("the database is busy")]
    Busy(#[source] Arc<sqlx::Error>),
    /// PostgreSQL refused this record's data (SQLSTATE classes 22 and 23): it will refuse it
    /// again, so a live callback is answered 503 rather than acknowledged.
    #[error("the database refused the write")]
    Refused(#[source] Arc<sqlx::Error>),
    /// PostgreSQL did not take this record now, for a reason that may pass (a trigger, a
    /// privilege, a program limit such as a full NOTIFY queue, a statement timeout): journaled
    /// and parked, never dropped.
    #[error("the database did not take the write")]
    Failed(#[source] Arc<sqlx::Error>),
    #[error("the writer is shutting down")]
    Closed,
    #[error("the write did not finish in time")]
    Timeout,
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        let code = match &error {
            sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
            _ => None,
        };
        let class = code.as_deref().map(|c| &c[..2.min(c.len())]);
        match (&error, code.as_deref(), class) {
            // Data exception, integrity constraint violation: this record, whenever it is tried.
            (_, _, Some("22" | "23")) => Self::Refused(Arc::new(error)),
            // Too many connections: the server is up and our pooled connections still work.
            (_, Some("53300"), _) => Self::Busy(Arc::new(error)),
            // Connection exception; the server shutting down, crashed or not accepting
            // connections (57P01–57P05); insufficient resources (disk full, out of memory).
            (_, Some(code), Some("08" | "53" | "57")) if code != "57014" => {
                Self::Unavailable(Arc::new(error))
            }
            // Cancelled (statement_timeout), serialization failure, deadlock, lock not available.
            (_, Some("57014" | "40001" | "40P01" | "55P03"), _) => Self::Busy(Arc::new(error)),
            (
                sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed,
                _,
                _,
            ) => Self::Unavailable(Arc::new(error)),
            // sqlx reports a refused connection as this timeout too: `Health::judge` tells.
            (sqlx::Error::PoolTimedOut, _, _) => Self::Busy(Arc::new(error)),
            _ => Self::Failed(Arc::new(error)),
        }
    }
}

impl StoreError {
    /// PostgreSQL cannot be reached: stop trying it until the drain task can.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// This record's data will never be taken: a live callback is answered 503.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_))
    }

    /// The failure may concern some of the records written together (a refusal, a trigger, a
    /// statement timeout), so a smaller batch may fare better; not a connection or a timeout.
    pub fn is_about_the_records(&self) -> bool {
        match self {
            Self::Refused(_) | Self::Failed(_) => true,
            Self::Busy(e) => !matches!(**e, sqlx::Error::PoolTimedOut),
            Self::Unavailable(_) | Self::Closed | Self::Timeout => false,
        }
    }

    /// Evidence that calls for a look at the server itself: the pool gave no connection in
    /// time, or the commit did not come back in time.
    fn may_hide_an_outage(&self) -> bool {
        match self {
            Self::Busy(e) => matches!(**e, sqlx::Error::PoolTimedOut),
            Self::Timeout => true,
            _ => false,
        }
    }

    /// The SQLSTATE and message PostgreSQL gave, or the error's text: what an operator needs,
    /// no secrets.
    pub fn detail(&self) -> String {
        match self {
            Self::Unavailable(e) | Self::Busy(e) | Self::Refused(e) | Self::Failed(e) => {
                match e.as_ref() {
                    sqlx::Error::Database(db) => {
                        format!("{} ({})", db.message(), db.code().unwrap_or_default())
                    }
                    other => other.to_string(),
                }
            }
            other => other.to_string(),
        }
    }
}

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

/// Readiness: the database answers a trivial query within `PING_TIMEOUT`.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    let query = sqlx::query_scalar!("SELECT 1 AS \"one!\"").fetch_one(pool);
    match tokio::time::timeout(PING_TIMEOUT, query).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(StoreError::from(error)),
        // No answer at all (a host that vanished without a reset) counts as down.
        Err(_) => Err(StoreError::Unavailable(Arc::new(sqlx::Error::PoolTimedOut))),
    }
}

/// How long a trivial query may take before the database counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
