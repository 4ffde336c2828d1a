//! PostgreSQL storage: history, membership, rooms, seats, rejected callbacks.
//!
//! Writes go through [`Writer`], which commits callbacks that arrive together in one
//! transaction (group commit); every helper here takes a connection so callers compose
//! them into one transaction.

mod apply;
pub mod membership;
pub mod rebuild;
pub mod reconcile;
mod rejected;
pub mod retention;
mod writer;

use std::{sync::Arc, time::Duration};

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use apply::{Outcome, apply_batch};
pub use rejected::{Budget, RejectedCallback, RejectedStore, insert_rejected};
pub use writer::{Writer, WriterOptions, write_batch};

/// Embedded copies of `migrations/`: the same files `sqlx migrate run` applies.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why the store could not take a callback. Cloneable, because one failed batch answers every
/// callback in it. What follows from each is [`StoreError::is_outage`] and
/// [`StoreError::is_refusal`]; everything else is transient.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL cannot be reached: callbacks go to the journal until it can.
    #[error("the database is unavailable")]
    Unavailable(#[source] Arc<sqlx::Error>),
    /// PostgreSQL is there but busy (no free connection in time, a deadlock or serialization
    /// failure, a cancelled statement): this write may go to the journal, the next ones still
    /// try PostgreSQL.
    #[error("the database is busy")]
    Busy(#[source] Arc<sqlx::Error>),
    /// PostgreSQL refused this record and will refuse it again (a data or integrity error).
    #[error("the database refused the write")]
    Refused(#[source] Arc<sqlx::Error>),
    #[error("the writer is shutting down")]
    Closed,
    #[error("the write did not finish in time")]
    Timeout,
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        let class = match &error {
            sqlx::Error::Database(db) => db.code().map(|c| c[..2.min(c.len())].to_owned()),
            _ => None,
        };
        match (&error, class.as_deref()) {
            // Data exception, integrity constraint, program limit (e.g. a row too large).
            (_, Some("22" | "23" | "54")) => Self::Refused(Arc::new(error)),
            // Connection exception, shutdown or crash, insufficient resources (e.g. disk full).
            (sqlx::Error::Database(db), Some("08" | "53" | "57"))
                if db.code().as_deref() != Some("57014") =>
            {
                Self::Unavailable(Arc::new(error))
            }
            (
                sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed,
                _,
            ) => Self::Unavailable(Arc::new(error)),
            // A refused connection also ends as PoolTimedOut: see `StoreError::on_pool`.
            (sqlx::Error::PoolTimedOut, _) => Self::Unavailable(Arc::new(error)),
            _ => Self::Busy(Arc::new(error)),
        }
    }
}

impl StoreError {
    /// Classifies `error` from `pool`: a pool that timed out while it holds open connections
    /// is busy, not down (sqlx reports "connection refused" as the same timeout).
    pub fn on_pool(error: sqlx::Error, pool: &PgPool) -> Self {
        match Self::from(error) {
            Self::Unavailable(e) if matches!(*e, sqlx::Error::PoolTimedOut) && pool.size() > 0 => {
                Self::Busy(e)
            }
            other => other,
        }
    }

    /// PostgreSQL cannot be reached: stop trying it until the drain task can.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// This record will never be taken: keep it in `rejected_callbacks` instead.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_))
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
        .connect_lazy_with(options)
}

/// Readiness: the database answers a trivial query within `PING_TIMEOUT`.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    let query = sqlx::query_scalar!("SELECT 1 AS \"one!\"").fetch_one(pool);
    match tokio::time::timeout(PING_TIMEOUT, query).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(StoreError::on_pool(error, pool)),
        // No answer at all (a host that vanished without a reset) counts as down.
        Err(_) => Err(StoreError::Unavailable(Arc::new(sqlx::Error::PoolTimedOut))),
    }
}

/// How long a trivial query may take before the database counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
