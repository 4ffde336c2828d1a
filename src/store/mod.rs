//! PostgreSQL storage: history, membership, rooms, seats, rejected callbacks.
//!
//! Writes go through [`Writer`], which commits callbacks that arrive together in one
//! transaction (group commit); every helper here takes a connection so callers compose
//! them into one transaction.

mod apply;
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

pub use apply::{Outcome, apply_batch};
pub use rejected::{RejectedCallback, insert_rejected};
pub use writer::{Writer, WriterOptions, write_batch};

/// Embedded copies of `migrations/`: the same files `sqlx migrate run` applies.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why the store could not take a callback. Everything maps to "not durable" (503).
/// Cloneable, because one failed batch answers every callback in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the database is unavailable")]
    Unavailable(#[source] Arc<sqlx::Error>),
    #[error("the database refused the write")]
    Database(#[source] Arc<sqlx::Error>),
    #[error("the writer is shutting down")]
    Closed,
    #[error("the write did not finish in time")]
    Timeout,
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_outage(&error) {
            Self::Unavailable(Arc::new(error))
        } else {
            Self::Database(Arc::new(error))
        }
    }
}

/// Errors that say "the database is not there right now", as opposed to "it refused this".
fn is_outage(error: &sqlx::Error) -> bool {
    match error {
        // Connection exceptions, operator intervention (shutdown, recovery), resources.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57") || c.starts_with("53")),
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
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

/// Readiness: the database answers a trivial query.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query_scalar!("SELECT 1 AS \"one!\"")
        .fetch_one(pool)
        .await?;
    Ok(())
}
