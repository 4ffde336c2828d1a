//! What a failure means (docs/durability.md#what-a-failure-means): the one place that tells
//! *PostgreSQL is down* from *slow*, from *its schema is missing* and from *this record cannot
//! be applied now*; that holds the verdict every writer acts on, sets the `database_up` gauge
//! at each change, makes sure the schema is there (start-up, the drain, `roomsync migrate`),
//! and answers `/readyz`.
//!
//! An error alone is weak evidence: sqlx reports a refused connection as the same pool timeout
//! as a pool whose connections are all busy, and a pool may hold connections to a server that
//! has gone. So when an error could hide an outage, [`Health::judge`] asks the server itself: a
//! fresh connection, outside the pool, with a short connect timeout. Concurrent callers share
//! one such probe.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};
use tokio::sync::Mutex;

use super::schema::{ReachError, ensure_schema};
use crate::telemetry::Metrics;

/// How long a fresh connection may take before the server counts as down. A server that is up
/// accepts a connection on loopback or a LAN in milliseconds, even when it is busy.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// A probe's answer is shared with the callers that ask within this time.
const PROBE_REUSE: Duration = Duration::from_millis(250);
/// How long a trivial query may take before the database counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `/readyz` waits for its query.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// A probe's answer: connected, or what the connection met.
type Probe = Result<(), Arc<sqlx::Error>>;

/// Why the store could not take a callback: the verdict on one error. Cloneable, because one
/// failed batch answers every callback in it. The variant is decided here, from the SQLSTATE
/// (the table below) and, where the error could hide an outage, from a fresh connection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Known to be down before anything was tried: callbacks go to the journal at once.
    #[error("the database is down")]
    Down,
    /// PostgreSQL is down: callbacks go to the journal until the drain task reaches it again.
    #[error("the database is unavailable")]
    Unavailable(#[source] Arc<sqlx::Error>),
    /// A table or function of the schema is missing (a database dropped and created again):
    /// callbacks go to the journal until the schema is applied again.
    #[error("the database schema is missing")]
    SchemaMissing(#[source] Arc<sqlx::Error>),
    /// A room's row is locked by another session past the lock timeout: that room's callbacks
    /// are given back (journaled or parked) and the other rooms' are written.
    #[error("a room is held by another session")]
    Held(#[source] Arc<sqlx::Error>),
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
    /// No commit within the writer's time limit.
    #[error("the write did not finish in time")]
    Timeout,
}

/// The SQLSTATE table (docs/durability.md#what-a-failure-means).
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
            // The database does not exist (dropped, not yet created again): nothing can be
            // written until it is back.
            (_, Some("3D000"), _) => Self::Unavailable(Arc::new(error)),
            // Lock not available: `lock_timeout` passed while another session held a room.
            (_, Some("55P03"), _) => Self::Held(Arc::new(error)),
            // Undefined table, function, object, schema: the schema is not (or no longer) there.
            (_, Some("42P01" | "42883" | "42704" | "3F000"), _) => {
                Self::SchemaMissing(Arc::new(error))
            }
            // Cancelled (statement_timeout), serialization failure, deadlock.
            (_, Some("57014" | "40001" | "40P01"), _) => Self::Busy(Arc::new(error)),
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
    /// PostgreSQL cannot take anything now (down, or its schema missing): stop trying it until
    /// the drain task can. A journaled record stays pending, not parked.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            Self::Down | Self::Unavailable(_) | Self::SchemaMissing(_)
        )
    }

    /// This record's data will never be taken: a live callback is answered 503.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_))
    }

    /// The failure may concern some of the records written together (a refusal, a trigger, a
    /// statement timeout, a held room), so a smaller batch may fare better; not a connection,
    /// an outage or a timeout. A journaled record that fails so alone is parked.
    pub fn is_about_the_records(&self) -> bool {
        match self {
            Self::Refused(_) | Self::Failed(_) | Self::Held(_) => true,
            Self::Busy(e) => !matches!(**e, sqlx::Error::PoolTimedOut),
            Self::Down
            | Self::Unavailable(_)
            | Self::SchemaMissing(_)
            | Self::Closed
            | Self::Timeout => false,
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
            Self::Unavailable(e)
            | Self::SchemaMissing(e)
            | Self::Held(e)
            | Self::Busy(e)
            | Self::Refused(e)
            | Self::Failed(e) => match e.as_ref() {
                sqlx::Error::Database(db) => {
                    format!("{} ({})", db.message(), db.code().unwrap_or_default())
                }
                other => other.to_string(),
            },
            other => other.to_string(),
        }
    }
}

/// The verdict callbacks and the drain act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Writes go to PostgreSQL.
    Up = 0,
    /// Unreachable: writes go to the journal; the drain probes.
    Down = 1,
    /// Reachable, but the schema must be applied (again) before anything is written.
    SchemaMissing = 2,
}

impl State {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Up,
            1 => Self::Down,
            _ => Self::SchemaMissing,
        }
    }

    /// `/readyz`'s word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::SchemaMissing => "schema_missing",
        }
    }
}

/// The database's health. Cheap to clone.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    state: AtomicU8,
    options: Arc<PgConnectOptions>,
    run_migrations: bool,
    metrics: Arc<Metrics>,
    /// The last probe: when it ended and whether it connected.
    last_probe: Mutex<Option<(Instant, Probe)>>,
}

impl Health {
    /// Starts as down: [`Health::reach`] finds out.
    pub fn new(pool: &PgPool, run_migrations: bool, metrics: Arc<Metrics>) -> Self {
        metrics.database_up.set(0);
        Self {
            inner: Arc::new(Inner {
                state: AtomicU8::new(State::Down as u8),
                options: pool.connect_options(),
                run_migrations,
                metrics,
                last_probe: Mutex::new(None),
            }),
        }
    }

    pub fn state(&self) -> State {
        State::from_u8(self.inner.state.load(Ordering::Acquire))
    }

    /// Whether callbacks go to PostgreSQL now.
    pub fn is_up(&self) -> bool {
        self.state() == State::Up
    }

    /// Moves to `state`; the gauge follows. Returns whether it changed.
    fn set(&self, state: State) -> bool {
        let old = State::from_u8(self.inner.state.swap(state as u8, Ordering::AcqRel));
        self.inner
            .metrics
            .database_up
            .set(i64::from(state == State::Up));
        old != state
    }

    /// The verdict on a raw error ([`StoreError`]'s table, and a probe where the error could
    /// hide an outage). An outage or a missing schema also turns the service to journal-only
    /// until the drain task reaches the server again.
    pub async fn judge(&self, error: StoreError) -> StoreError {
        let error = if error.may_hide_an_outage() {
            match self.server_accepts().await {
                // What the fresh connection met names the cause (refused, TLS, password…).
                Err(cause) => StoreError::Unavailable(cause),
                Ok(()) => error,
            }
        } else {
            error
        };
        match &error {
            StoreError::Unavailable(_) if self.set(State::Down) => {
                tracing::warn!(error = %crate::telemetry::error_chain(&error), "database down; callbacks go to the local journal");
            }
            StoreError::SchemaMissing(_) if self.state() == State::Up => {
                self.set(State::SchemaMissing);
                tracing::warn!(error = %error.detail(), "the database's schema is missing; callbacks go to the local journal until it is applied again");
            }
            _ => {}
        }
        error
    }

    /// Makes the database ready for writes: one probe (no waiting), then the schema if it is
    /// not known to be there. Turns the verdict to up on success.
    pub async fn reach(&self, pool: &PgPool) -> Result<(), ReachError> {
        if let Err(error) = ping(pool).await {
            return Err(ReachError::Unreachable(self.judge(error).await));
        }
        if self.state() != State::Up {
            match ensure_schema(&self.inner.options, self.inner.run_migrations).await {
                Ok(()) => {}
                Err(ReachError::Unreachable(error)) => {
                    return Err(ReachError::Unreachable(self.judge(error).await));
                }
                Err(error) => {
                    self.set(State::SchemaMissing);
                    return Err(error);
                }
            }
            if self.set(State::Up) {
                tracing::info!("database reachable and its schema applied; callbacks go to it");
            }
        }
        Ok(())
    }

    /// `/readyz`: while up, whether a trivial query answers within a second (a failure is
    /// judged, so readiness and the callback path never disagree for long); otherwise the
    /// verdict as it stands (the drain probes).
    pub async fn readiness(&self, pool: &PgPool) -> (bool, &'static str) {
        if !self.is_up() {
            return (false, self.state().as_str());
        }
        match tokio::time::timeout(READY_TIMEOUT, ping(pool)).await {
            Ok(Ok(())) => (true, State::Up.as_str()),
            Ok(Err(error)) => {
                let error = self.judge(error).await;
                tracing::warn!(error = %error.detail(), "readiness check failed");
                (false, self.state().as_str())
            }
            Err(_) => (false, "timeout"),
        }
    }

    /// Whether the server accepts a fresh connection within [`PROBE_CONNECT_TIMEOUT`], and if
    /// not, why. A server that is shutting down or starting up refuses it too (SQLSTATE 57P03).
    pub async fn server_accepts(&self) -> Probe {
        let mut last = self.inner.last_probe.lock().await;
        if let Some((at, accepted)) = &*last
            && at.elapsed() < PROBE_REUSE
        {
            return accepted.clone();
        }
        let accepted = connect_once(&self.inner.options, PROBE_CONNECT_TIMEOUT)
            .await
            .map_err(Arc::new);
        *last = Some((Instant::now(), accepted.clone()));
        accepted
    }
}

/// A trivial query within [`PING_TIMEOUT`]: the raw error, for [`Health::judge`].
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    let query = sqlx::query_scalar!("SELECT 1 AS \"one!\"").fetch_one(pool);
    match tokio::time::timeout(PING_TIMEOUT, query).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(StoreError::from(error)),
        // No answer at all (a host that vanished without a reset) counts as down.
        Err(_) => Err(StoreError::Down),
    }
}

/// Opens one connection (outside any pool) and closes it: the error, if any, says what is
/// wrong (refused, a certificate, a password, a timeout) where a pool only says it timed out.
pub async fn connect_once(options: &PgConnectOptions, limit: Duration) -> Result<(), sqlx::Error> {
    match tokio::time::timeout(limit, PgConnection::connect_with(options)).await {
        Ok(Ok(connection)) => {
            // Said goodbye off this path: the answer is already known.
            tokio::spawn(connection.close());
            Ok(())
        }
        Ok(Err(error)) => Err(error),
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no connection within {} ms", limit.as_millis()),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_error(code: &'static str) -> sqlx::Error {
        #[derive(Debug)]
        struct Fake(&'static str);
        impl std::fmt::Display for Fake {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "fake {}", self.0)
            }
        }
        impl std::error::Error for Fake {}
        impl sqlx::error::DatabaseError for Fake {
            fn message(&self) -> &str {
                "fake"
            }
            fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
                Some(self.0.into())
            }
            fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
                self
            }
            fn kind(&self) -> sqlx::error::ErrorKind {
                sqlx::error::ErrorKind::Other
            }
        }
        sqlx::Error::Database(Box::new(Fake(code)))
    }

    #[test]
    fn the_sqlstate_table() {
        let verdict = |code| StoreError::from(db_error(code));
        assert!(matches!(verdict("22P05"), StoreError::Refused(_)));
        assert!(matches!(verdict("23505"), StoreError::Refused(_)));
        assert!(matches!(verdict("53300"), StoreError::Busy(_)));
        assert!(matches!(verdict("57P01"), StoreError::Unavailable(_)));
        assert!(matches!(verdict("08006"), StoreError::Unavailable(_)));
        assert!(matches!(verdict("57014"), StoreError::Busy(_)));
        assert!(matches!(verdict("55P03"), StoreError::Held(_)));
        assert!(matches!(verdict("42P01"), StoreError::SchemaMissing(_)));
        assert!(matches!(verdict("P0001"), StoreError::Failed(_)));
        assert!(matches!(verdict("3D000"), StoreError::Unavailable(_)));
        assert!(verdict("42P01").is_outage());
        assert!(!verdict("42P01").is_about_the_records());
        assert!(verdict("55P03").is_about_the_records());
        assert!(!verdict("55P03").is_outage());
        assert!(StoreError::Down.is_outage());
    }
}
