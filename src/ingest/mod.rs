//! Where an accepted callback goes (docs/durability.md): the router sends it to PostgreSQL
//! through the writer when the database is up, else to the local journal; the drain
//! ([`drain`]) moves the journal into PostgreSQL through the same writer. What a failure means
//! is decided by [`Health`] (the writer answers with its verdict); this module acts on it:
//!
//! | verdict | a live callback | a journaled record |
//! |---|---|---|
//! | down, or the schema missing | journal, 200 | stays pending; the drain waits for the server |
//! | slow, held, or not taken now | journal, 200 | parked, tried again with backoff |
//! | its data refused (22, 23) | 503 `50304`, kept in `rejected_callbacks` | parked, as above |
//!
//! Up, a callback for a room that still has callbacks in the journal joins them there
//! ([`Backlog`]): each room's callbacks reach PostgreSQL in arrival order.
//!
//! An acknowledged callback leaves the journal only once PostgreSQL has committed it, or, if it
//! no longer parses at all, once it is kept in `rejected_callbacks` (`50307`).

use std::sync::Arc;

use chrono::{DateTime, Utc};

mod backlog;
mod drain;

pub use backlog::{Backlog, RoomKey};
pub use drain::Drain;

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

/// Why a callback was not made durable: the only two ways `accept` can fail.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// PostgreSQL refuses its data (it would refuse it from the journal too): 503 `50304`.
    #[error("the database refused the callback")]
    Refused(#[source] StoreError),
    #[error(transparent)]
    Journal(JournalError),
}

/// The live router, shared by request handlers.
#[derive(Clone)]
pub struct Ingest {
    writer: Writer,
    journal: Journal,
    health: Health,
    metrics: Arc<Metrics>,
    rejected: Arc<RejectedStore>,
    backlog: Backlog,
}

impl Ingest {
    pub fn new(
        writer: Writer,
        journal: Journal,
        health: Health,
        rejected: Arc<RejectedStore>,
        metrics: Arc<Metrics>,
        backlog: Backlog,
    ) -> Self {
        Self {
            writer,
            journal,
            health,
            metrics,
            rejected,
            backlog,
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

    pub fn journal_parked(&self) -> u64 {
        self.journal.parked()
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
        let room = callback.locked_room().map(RoomKey::of);
        // A room with callbacks still in the journal: this one joins them (see `Backlog`). An
        // empty journal (the usual case) holds none: no lock taken.
        let behind = self.journal.depth() > 0 && room.is_some_and(|room| self.backlog.holds(room));
        if self.health.is_up() && !behind {
            let command = callback.command.clone();
            let error = match self.writer.submit(callback).await {
                Ok(Outcome::Stored { id }) => return Ok(Accepted::Stored { id }),
                Ok(Outcome::Duplicate) => return Ok(Accepted::Duplicate),
                Err(error) => error,
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
                return Err(IngestError::Refused(error));
            }
            if !error.is_outage() {
                // Up, but it did not take this one now (slow, busy, a held room, a failure
                // that may pass): the journal keeps it; the next callbacks still try
                // PostgreSQL. A slow commit may land as well; the history's dedup key makes
                // the drain a no-op then.
                tracing::debug!(error = %crate::telemetry::error_chain(&error), "callback not stored now; journaling it");
                self.metrics.store_slow.inc();
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
        if let Some(room) = room {
            self.backlog.add(room);
        }
        self.metrics.journal_appended.inc();
        self.metrics.journal_depth.set(self.journal.depth() as i64);
        Ok(Accepted::Journaled)
    }
}

/// `rejected_callbacks.error_code` of a callback whose data PostgreSQL refused (the HTTP
/// answer's code for it) and of a journal record that no longer parses.
const REFUSED_CODE: i32 = crate::codes::STORE_REFUSED as i32;
const UNPARSABLE_CODE: i32 = crate::codes::JOURNAL_UNPARSABLE as i32;
