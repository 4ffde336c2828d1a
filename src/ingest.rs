//! Where an accepted callback goes: PostgreSQL when it is reachable, else the local journal
//! (docs/durability.md); and the task that drains the journal into PostgreSQL.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::{
    callback::{Callback, CallbackQuery, parse_stored},
    journal::{Journal, JournalError, Record},
    store::{self, Budget, Outcome, RejectedCallback, RejectedStore, StoreError, Writer},
    telemetry::Metrics,
};

/// How often the drain task probes an unreachable database.
const DRAIN_RETRY: Duration = Duration::from_millis(500);
/// Records moved per drain transaction.
const DRAIN_BATCH: usize = 256;
/// How long the drain pauses between batches after PostgreSQL was found slow.
const SLOW_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Stored {
        id: i64,
    },
    Duplicate,
    /// In the local journal; PostgreSQL will get it when it is back.
    Journaled,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Journal(JournalError),
}

/// Why the drain task paused; it tries again after [`DRAIN_RETRY`].
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("the database is unreachable")]
    Unreachable(#[source] StoreError),
    #[error("could not apply the migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("the database did not take the batch")]
    Store(#[source] StoreError),
    #[error("could not keep a refused record in rejected_callbacks")]
    KeepRejected(#[source] StoreError),
    #[error("the journal failed")]
    Journal(#[source] JournalError),
}

/// Shared by request handlers and the drain task.
#[derive(Clone)]
pub struct Ingest {
    writer: Writer,
    journal: Journal,
    pool: PgPool,
    /// False after a write found PostgreSQL unreachable, until the drain task reaches it
    /// again: meanwhile callbacks go straight to the journal instead of waiting for timeouts.
    /// A slow or busy database does not clear it (overload is not an outage).
    database_up: Arc<AtomicBool>,
    /// False until the migrations are known to be applied (the database may be down at start).
    schema_ready: Arc<AtomicBool>,
    run_migrations: bool,
    metrics: Arc<Metrics>,
    /// Wakes the drain task when something was journaled.
    wake_drain: Arc<tokio::sync::Notify>,
    rejected: Arc<RejectedStore>,
    /// When a callback last went to the journal because PostgreSQL was slow (ms since the
    /// epoch): the drain then gives way to live callbacks.
    last_slow_ms: Arc<AtomicI64>,
}

impl Ingest {
    pub fn new(
        writer: Writer,
        journal: Journal,
        pool: PgPool,
        schema_ready: bool,
        run_migrations: bool,
        rejected: RejectedStore,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.journal_depth.set(journal.depth() as i64);
        Self {
            writer,
            journal,
            pool,
            database_up: Arc::new(AtomicBool::new(schema_ready)),
            schema_ready: Arc::new(AtomicBool::new(schema_ready)),
            run_migrations,
            metrics,
            wake_drain: Arc::new(tokio::sync::Notify::new()),
            rejected: Arc::new(rejected),
            last_slow_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Keeps a callback refused with a 4xx answer, within the budget of `rejected_callbacks`.
    pub async fn keep_rejected(&self, rejected: &RejectedCallback<'_>) -> Result<bool, StoreError> {
        self.rejected
            .keep(rejected, Budget::Counted, &self.metrics)
            .await
    }

    pub fn journal_depth(&self) -> u64 {
        self.journal.depth()
    }

    /// Makes `callback` durable: committed in PostgreSQL, or synced to the journal. `query`
    /// and `body` are the request as received (what the journal keeps). A callback that
    /// PostgreSQL refuses for good is kept in `rejected_callbacks` and answered with an error.
    pub async fn accept(
        &self,
        callback: Callback,
        query: &str,
        body: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<Accepted, IngestError> {
        let sdk_app_id = callback.sdk_app_id.get();
        if self.database_up.load(Ordering::Relaxed) {
            let command = callback.command.clone();
            match self.writer.submit(callback).await {
                Ok(Outcome::Stored { id }) => return Ok(Accepted::Stored { id }),
                Ok(Outcome::Duplicate) => return Ok(Accepted::Duplicate),
                Err(error) if error.is_refusal() => {
                    let refused = Refused {
                        sdk_app_id,
                        command: Some(command.as_str()),
                        query,
                        body,
                        error: &error,
                    };
                    if let Err(e) = self.keep_refused(&refused).await {
                        tracing::error!(error = %e, "could not keep a refused callback");
                    }
                    return Err(IngestError::Store(error));
                }
                Err(error) if error.is_outage() => {
                    tracing::warn!(error = ?error, "database unavailable; using the local journal");
                    self.database_up.store(false, Ordering::Relaxed);
                    // The drain task probes until the database is back.
                    self.wake_drain.notify_one();
                }
                Err(error) => {
                    // Slow or busy, but there: this one goes to the journal (it may also
                    // commit late; the history's dedup key makes the drain a no-op then).
                    tracing::debug!(error = ?error, "database slow; journaling this callback");
                    self.metrics.store_slow.inc();
                    self.last_slow_ms
                        .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
                }
            }
        }
        // Built only here, off the common path. The body parsed, so it is UTF-8.
        let record = Record {
            sdk_app_id,
            received_at,
            query: query.to_owned(),
            body: String::from_utf8_lossy(body).into_owned(),
        };
        self.journal
            .append(vec![record])
            .await
            .map_err(IngestError::Journal)?;
        self.metrics.journal_appended.inc();
        self.metrics.journal_depth.set(self.journal.depth() as i64);
        self.wake_drain.notify_one();
        Ok(Accepted::Journaled)
    }

    /// Drains the journal whenever PostgreSQL is reachable; runs until aborted. Idle (no timer,
    /// no polling) while the journal is empty and the database up.
    pub fn spawn_drain(&self) -> JoinHandle<()> {
        let ingest = self.clone();
        tokio::spawn(async move {
            loop {
                if ingest.database_up.load(Ordering::Relaxed) && ingest.journal.depth() == 0 {
                    ingest.wake_drain.notified().await;
                }
                if let Err(error) = ingest.drain_once().await {
                    tracing::warn!(error = %crate::telemetry::error_chain(&error), depth = ingest.journal.depth(), "journal drain paused");
                    tokio::time::sleep(DRAIN_RETRY).await;
                }
            }
        })
    }

    async fn drain_once(&self) -> Result<(), DrainError> {
        let up = self.database_up.load(Ordering::Relaxed);
        if up && self.journal.depth() == 0 {
            return Ok(());
        }
        if let Err(error) = store::ping(&self.pool).await {
            if error.is_outage() {
                self.database_up.store(false, Ordering::Relaxed);
            }
            return Err(DrainError::Unreachable(error));
        }
        if !self.schema_ready.load(Ordering::Relaxed) {
            if self.run_migrations {
                store::MIGRATOR
                    .run(&self.pool)
                    .await
                    .map_err(DrainError::Migrate)?;
                tracing::info!("migrations applied");
            }
            self.schema_ready.store(true, Ordering::Relaxed);
        }
        if !up {
            tracing::info!(depth = self.journal.depth(), "database reachable again");
        }
        // New callbacks go straight to the database again; order does not matter (docs/semantics.md#the-rule).
        self.database_up.store(true, Ordering::Relaxed);
        while self.journal.depth() > 0 {
            // While live callbacks find PostgreSQL slow, the drain takes a small share of it:
            // its batches lock rooms that live batches wait for.
            let since_slow =
                Utc::now().timestamp_millis() - self.last_slow_ms.load(Ordering::Relaxed);
            if since_slow < SLOW_BACKOFF.as_millis() as i64 {
                tokio::time::sleep(SLOW_BACKOFF).await;
            }
            self.drain_batch().await?;
        }
        Ok(())
    }

    /// Moves up to [`DRAIN_BATCH`] records into PostgreSQL in one transaction. When the
    /// database refuses the batch, each record is tried on its own, and one it refuses for good
    /// goes to `rejected_callbacks`: it must not hold back the others.
    async fn drain_batch(&self) -> Result<(), DrainError> {
        let pending = self
            .journal
            .peek(DRAIN_BATCH)
            .await
            .map_err(DrainError::Journal)?;
        let mut parsed = Vec::with_capacity(pending.len());
        let mut done = Vec::with_capacity(pending.len());
        for (key, record) in &pending {
            let query = CallbackQuery::parse(&record.query);
            match parse_stored(
                record.sdk_app_id,
                &query,
                record.body.as_bytes(),
                record.received_at,
            ) {
                Ok(callback) => parsed.push((*key, record, callback)),
                // It passed the same checks when it arrived (or an older version's checks).
                Err(rejection) => {
                    tracing::error!(
                        info = rejection.info,
                        "journal record no longer parses; keeping it in rejected_callbacks"
                    );
                    let rejected = RejectedCallback {
                        sdk_app_id: Some(record.sdk_app_id),
                        callback_command: query.command.as_deref(),
                        error_code: UNPARSABLE_CODE,
                        error_info: &rejection.info,
                        query: &record.query,
                        body: record.body.as_bytes(),
                    };
                    self.keep_exempt(&rejected)
                        .await
                        .map_err(DrainError::KeepRejected)?;
                    done.push(*key);
                }
            }
        }
        let all: Vec<&Callback> = parsed.iter().map(|(_, _, c)| c).collect();
        let result = match store::write_batch(&self.pool, &all).await {
            Ok(_) => {
                done.extend(parsed.iter().map(|(key, _, _)| *key));
                Ok(())
            }
            Err(error) if error.is_outage() => Err(DrainError::Store(error)),
            Err(_) => self.drain_one_by_one(&parsed, &mut done).await,
        };
        // Removed only after the commit: a crash in between re-applies them, and the history's
        // dedup key makes that a no-op.
        if !done.is_empty() {
            // Counted once committed, so an empty journal implies the count is complete.
            self.metrics.journal_drained.inc_by(done.len() as u64);
            self.journal
                .remove(done)
                .await
                .map_err(DrainError::Journal)?;
            self.metrics.journal_depth.set(self.journal.depth() as i64);
        }
        result
    }

    async fn drain_one_by_one(
        &self,
        parsed: &[(u64, &Record, Callback)],
        done: &mut Vec<u64>,
    ) -> Result<(), DrainError> {
        for (key, record, callback) in parsed {
            match store::write_batch(&self.pool, &[callback]).await {
                Ok(_) => done.push(*key),
                Err(error) if error.is_refusal() => {
                    tracing::error!(error = ?error, "the database refused a journal record; keeping it in rejected_callbacks");
                    let refused = Refused {
                        sdk_app_id: record.sdk_app_id,
                        command: Some(callback.command.as_str()),
                        query: &record.query,
                        body: record.body.as_bytes(),
                        error: &error,
                    };
                    self.keep_refused(&refused)
                        .await
                        .map_err(DrainError::KeepRejected)?;
                    done.push(*key);
                }
                // Transient: stop here and try again later.
                Err(error) => return Err(DrainError::Store(error)),
            }
        }
        Ok(())
    }

    async fn keep_refused(&self, refused: &Refused<'_>) -> Result<(), StoreError> {
        let info = refusal_info(refused.error);
        let rejected = RejectedCallback {
            sdk_app_id: Some(refused.sdk_app_id),
            callback_command: refused.command,
            error_code: REFUSED_CODE,
            error_info: &info,
            query: refused.query,
            body: refused.body,
        };
        self.keep_exempt(&rejected).await
    }

    /// Keeps a record whatever the budget: it was answered 200, or PostgreSQL refused it.
    async fn keep_exempt(&self, rejected: &RejectedCallback<'_>) -> Result<(), StoreError> {
        self.rejected
            .keep(rejected, Budget::Exempt, &self.metrics)
            .await
            .map(|_| ())
    }
}

/// `rejected_callbacks.error_code` of a record PostgreSQL refused for good (the HTTP answer's
/// code for it) and of a journal record that no longer parses.
const REFUSED_CODE: i32 = 50304;
const UNPARSABLE_CODE: i32 = 50307;

/// A callback PostgreSQL will not take, with what it said.
struct Refused<'a> {
    sdk_app_id: i64,
    command: Option<&'a str>,
    query: &'a str,
    body: &'a [u8],
    error: &'a StoreError,
}

/// What PostgreSQL said (SQLSTATE and message: no secrets, no data beyond the record's own).
fn refusal_info(error: &StoreError) -> String {
    let detail = match error {
        StoreError::Refused(e) => match e.as_ref() {
            sqlx::Error::Database(db) => {
                format!("{} ({})", db.message(), db.code().unwrap_or_default())
            }
            other => other.to_string(),
        },
        other => other.to_string(),
    };
    format!("the database refused the callback: {detail}")
}
