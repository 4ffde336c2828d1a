//! Where an accepted callback goes: PostgreSQL when it is up, else the local journal; and the
//! task that drains the journal into PostgreSQL (docs/durability.md). What a failure means is
//! decided by [`Health`]; this module acts on the verdict:
//!
//! | verdict | a live callback | a journaled record |
//! |---|---|---|
//! | down | journal, 200 | stays pending; the drain waits for the server |
//! | slow, or not taken now | journal, 200 | parked, tried again with backoff |
//! | its data refused (22, 23) | 503 `50304`, kept in `rejected_callbacks` | parked, as above |
//!
//! An acknowledged callback leaves the journal only once PostgreSQL has committed it, or, if it
//! no longer parses at all, once it is kept in `rejected_callbacks` (`50307`).

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicI64, Ordering},
};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

mod drain;

pub use drain::DrainError;

use crate::{
    callback::Callback,
    journal::{Journal, JournalError, Record},
    store::{Budget, Health, Outcome, RejectedCallback, RejectedStore, StoreError, Writer},
    telemetry::Metrics,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Stored {
        id: i64,
    },
    Duplicate,
    /// In the local journal; PostgreSQL will get it.
    Journaled,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Journal(JournalError),
}

/// Shared by request handlers and the drain task.
#[derive(Clone)]
pub struct Ingest {
    writer: Writer,
    journal: Journal,
    pool: PgPool,
    health: Health,
    /// False until the migrations are known to be applied (the database may be down at start).
    schema_ready: Arc<AtomicBool>,
    run_migrations: bool,
    metrics: Arc<Metrics>,
    /// Wakes the drain task when something was journaled.
    wake_drain: Arc<tokio::sync::Notify>,
    rejected: Arc<RejectedStore>,
    /// When a callback last went to the journal while PostgreSQL was up (ms since the epoch):
    /// the drain then gives way to live callbacks.
    last_slow_ms: Arc<AtomicI64>,
}

impl Ingest {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        writer: Writer,
        journal: Journal,
        pool: PgPool,
        health: Health,
        schema_ready: bool,
        run_migrations: bool,
        rejected: RejectedStore,
        metrics: Arc<Metrics>,
    ) -> Self {
        let ingest = Self {
            writer,
            journal,
            pool,
            health,
            schema_ready: Arc::new(AtomicBool::new(schema_ready)),
            run_migrations,
            metrics,
            wake_drain: Arc::new(tokio::sync::Notify::new()),
            rejected: Arc::new(rejected),
            last_slow_ms: Arc::new(AtomicI64::new(0)),
        };
        ingest.show_journal();
        ingest
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

    pub fn journal_parked(&self) -> u64 {
        self.journal.parked()
    }

    fn show_journal(&self) {
        self.metrics.journal_depth.set(self.journal.depth() as i64);
        self.metrics
            .journal_parked
            .set(self.journal.parked() as i64);
        self.metrics.database_up.set(i64::from(self.health.is_up()));
    }

    /// Makes `callback` durable: committed in PostgreSQL, or synced to the journal. `query`
    /// and `body` are the request as received (what the journal keeps). A callback whose data
    /// PostgreSQL refuses is kept in `rejected_callbacks` and answered with an error.
    pub async fn accept(
        &self,
        callback: Callback,
        query: &str,
        body: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<Accepted, IngestError> {
        let sdk_app_id = callback.sdk_app_id.get();
        if self.health.is_up() {
            let command = callback.command.clone();
            let error = match self.writer.submit(callback).await {
                Ok(Outcome::Stored { id }) => return Ok(Accepted::Stored { id }),
                Ok(Outcome::Duplicate) => return Ok(Accepted::Duplicate),
                Err(error) => self.health.judge(error).await,
            };
            if error.is_refusal() {
                let info = format!("the database refused the callback: {}", error.detail());
                let rejected = RejectedCallback {
                    sdk_app_id: Some(sdk_app_id),
                    callback_command: Some(command.as_str()),
                    error_code: REFUSED_CODE,
                    error_info: &info,
                    query,
                    body,
                };
                let kept = self
                    .rejected
                    .keep(&rejected, Budget::Refused, &self.metrics);
                if let Err(e) = kept.await {
                    tracing::error!(error = %e, "could not keep a refused callback");
                }
                return Err(IngestError::Store(error));
            }
            if error.is_outage() {
                self.metrics.database_up.set(0);
                // The drain task probes until the database is back.
                self.wake_drain.notify_one();
            } else {
                // Up, but it did not take this one now (slow, busy, or a failure that may
                // pass): the journal keeps it; the next callbacks still try PostgreSQL. A slow
                // commit may land as well; the history's dedup key makes the drain a no-op then.
                tracing::debug!(error = %crate::telemetry::error_chain(&error), "callback not stored now; journaling it");
                self.metrics.store_slow.inc();
                self.last_slow_ms
                    .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
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
        self.show_journal();
        self.wake_drain.notify_one();
        Ok(Accepted::Journaled)
    }

    /// Keeps a record whatever the budget: PostgreSQL refused it, or it no longer parses.
    async fn keep_exempt(&self, rejected: &RejectedCallback<'_>) -> Result<(), StoreError> {
        self.rejected
            .keep(rejected, Budget::Exempt, &self.metrics)
            .await
            .map(|_| ())
    }
}

/// `rejected_callbacks.error_code` of a callback whose data PostgreSQL refused (the HTTP
/// answer's code for it) and of a journal record that no longer parses.
const REFUSED_CODE: i32 = crate::codes::STORE_REFUSED as i32;
const UNPARSABLE_CODE: i32 = crate::codes::JOURNAL_UNPARSABLE as i32;
