//! What a failure means (docs/durability.md#what-a-failure-means): the one place that tells
//! *PostgreSQL is down* from *slow* and from *this record cannot be applied now*, and that
//! holds the verdict the callback path and the drain act on.
//!
//! An error alone is weak evidence: sqlx reports a refused connection as the same pool timeout
//! as a pool whose connections are all busy, and a pool may hold connections to a server that
//! has gone. So when an error could hide an outage, [`Health::judge`] asks the server itself: a
//! fresh connection, outside the pool, with a short connect timeout. Concurrent callers share
//! one such probe.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};
use tokio::sync::Mutex;

use super::StoreError;

/// How long a fresh connection may take before the server counts as down. A server that is up
/// accepts a connection on loopback or a LAN in milliseconds, even when it is busy.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// A probe's answer is shared with the callers that ask within this time.
const PROBE_REUSE: Duration = Duration::from_millis(250);

/// A probe's answer: connected, or what the connection met.
type Probe = Result<(), Arc<sqlx::Error>>;

/// Whether callbacks go to PostgreSQL (up) or straight to the journal (down). Cheap to clone.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    up: AtomicBool,
    options: Arc<PgConnectOptions>,
    /// The last probe: when it ended and whether it connected.
    last_probe: Mutex<Option<(Instant, Probe)>>,
}

impl Health {
    /// `up`: whether the database answered at start.
    pub fn new(pool: &PgPool, up: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                up: AtomicBool::new(up),
                options: pool.connect_options(),
                last_probe: Mutex::new(None),
            }),
        }
    }

    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// Returns whether this changed the verdict.
    pub fn set_up(&self, up: bool) -> bool {
        self.inner.up.swap(up, Ordering::Relaxed) != up
    }

    /// The verdict on `error`: an outage when the error says so, or when it could hide one
    /// and a fresh connection fails; as it came otherwise. An outage also turns the service
    /// to journal-only until the drain task reaches the server again.
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
        if error.is_outage() && self.set_up(false) {
            tracing::warn!(error = %crate::telemetry::error_chain(&error), "database down; callbacks go to the local journal");
        }
        error
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
