//! Where an accepted callback goes: PostgreSQL when it is reachable, else the local journal
//! (SPEC §6); and the task that drains the journal into PostgreSQL.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::{
    callback::{Callback, CallbackQuery, SdkAppId, parse_body},
    journal::{Journal, JournalError, Record},
    store::{self, Outcome, RejectedCallback, StoreError, Writer},
    telemetry::Metrics,
};

/// How often the drain task probes an unreachable database.
const DRAIN_RETRY: Duration = Duration::from_millis(500);
/// Records moved per drain transaction.
const DRAIN_BATCH: usize = 256;

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

/// Shared by request handlers and the drain task.
#[derive(Clone)]
pub struct Ingest {
    writer: Writer,
    journal: Journal,
    pool: PgPool,
    /// False after a write found PostgreSQL unreachable, until the drain task reaches it
    /// again: meanwhile callbacks go straight to the journal instead of waiting for timeouts.
    database_up: Arc<AtomicBool>,
    /// False until the migrations are known to be applied (the database may be down at start).
    schema_ready: Arc<AtomicBool>,
    run_migrations: bool,
    metrics: Arc<Metrics>,
    /// Wakes the drain task when something was journaled.
    wake_drain: Arc<tokio::sync::Notify>,
}

impl Ingest {
    pub fn new(
        writer: Writer,
        journal: Journal,
        pool: PgPool,
        schema_ready: bool,
        run_migrations: bool,
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
        }
    }

    pub fn journal_depth(&self) -> u64 {
        self.journal.depth()
    }

    /// Makes `callback` durable: committed in PostgreSQL, or synced to the journal. `query`
    /// and `body` are the request as received (what the journal keeps).
    pub async fn accept(
        &self,
        callback: Callback,
        query: &str,
        body: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<Accepted, IngestError> {
        let sdk_app_id = callback.sdk_app_id.get();
        if self.database_up.load(Ordering::Relaxed) {
            match self.writer.submit(callback).await {
                Ok(Outcome::Stored { id }) => return Ok(Accepted::Stored { id }),
                Ok(Outcome::Duplicate) => return Ok(Accepted::Duplicate),
                // The database answered and refused this write: not an outage.
                Err(error @ StoreError::Database(_)) => return Err(IngestError::Store(error)),
                Err(error) => {
                    tracing::warn!(error = ?error, "database unavailable; using the local journal");
                    self.database_up.store(false, Ordering::Relaxed);
                    // The drain task probes until the database is back.
                    self.wake_drain.notify_one();
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
                    tracing::warn!(error = %error, depth = ingest.journal.depth(), "journal drain paused");
                    tokio::time::sleep(DRAIN_RETRY).await;
                }
            }
        })
    }

    async fn drain_once(&self) -> Result<(), String> {
        let up = self.database_up.load(Ordering::Relaxed);
        if up && self.journal.depth() == 0 {
            return Ok(());
        }
        if let Err(error) = store::ping(&self.pool).await {
            self.database_up.store(false, Ordering::Relaxed);
            return Err(format!("database unreachable: {error}"));
        }
        if !self.schema_ready.load(Ordering::Relaxed) {
            if self.run_migrations {
                store::MIGRATOR
                    .run(&self.pool)
                    .await
                    .map_err(|e| format!("migrations: {e}"))?;
                tracing::info!("migrations applied");
            }
            self.schema_ready.store(true, Ordering::Relaxed);
        }
        if !up {
            tracing::info!(depth = self.journal.depth(), "database reachable again");
        }
        // New callbacks go straight to the database again; order does not matter (SPEC §5).
        self.database_up.store(true, Ordering::Relaxed);
        while self.journal.depth() > 0 {
            self.drain_batch().await?;
        }
        Ok(())
    }

    async fn drain_batch(&self) -> Result<(), String> {
        let pending = self
            .journal
            .peek(DRAIN_BATCH)
            .await
            .map_err(|e| e.to_string())?;
        let mut callbacks = Vec::with_capacity(pending.len());
        for (_, record) in &pending {
            match reparse(record) {
                Ok(callback) => callbacks.push(callback),
                // It passed the same checks when it arrived; keep it for an operator anyway.
                Err(info) => self.keep_unparsable(record, &info).await?,
            }
        }
        let refs: Vec<&Callback> = callbacks.iter().collect();
        if !refs.is_empty() {
            store::write_batch(&self.pool, &refs)
                .await
                .map_err(|e| format!("{e:?}"))?;
        }
        // Removed only after the commit: a crash in between re-applies them, and the history's
        // dedup key makes that a no-op.
        let keys = pending.iter().map(|(key, _)| *key).collect::<Vec<_>>();
        // Counted once committed, so an empty journal implies the count is complete.
        self.metrics.journal_drained.inc_by(keys.len() as u64);
        self.journal.remove(keys).await.map_err(|e| e.to_string())?;
        self.metrics.journal_depth.set(self.journal.depth() as i64);
        Ok(())
    }

    async fn keep_unparsable(&self, record: &Record, info: &str) -> Result<(), String> {
        tracing::error!(
            info,
            "journal record no longer parses; keeping it in rejected_callbacks"
        );
        let rejected = RejectedCallback {
            sdk_app_id: Some(record.sdk_app_id),
            callback_command: None,
            error_code: 50307,
            error_info: info,
            query: &record.query,
            body: record.body.as_bytes(),
        };
        let mut conn = self.pool.acquire().await.map_err(|e| e.to_string())?;
        store::insert_rejected(&mut conn, &rejected)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn reparse(record: &Record) -> Result<Callback, String> {
    let app = SdkAppId::parse(&record.sdk_app_id.to_string()).ok_or("bad SdkAppid")?;
    parse_body(
        record.body.as_bytes(),
        &CallbackQuery::parse(&record.query),
        app,
        record.received_at,
    )
    .map_err(|rejection| rejection.info)
}
