//! The drain task: moves the journal into PostgreSQL once it is up, in batches at the speed of
//! the store, parks what PostgreSQL does not take, and removes what it committed
//! (docs/durability.md#draining).

use std::{collections::HashSet, sync::atomic::Ordering, time::Duration};

use chrono::Utc;
use sqlx::PgPool;
use tokio::{sync::watch, task::JoinHandle};

use super::{Ingest, UNPARSABLE_CODE};
use crate::{
    callback::{Callback, CallbackQuery, parse_stored},
    journal::{Entry, JournalError, PARK_BACKOFF_MAX},
    store::{self, Held, Outcome, RejectedCallback, StoreError, write_isolating},
};

/// How often the drain task probes a database that is down.
const DRAIN_RETRY: Duration = Duration::from_millis(500);
/// Records read from the journal per drain step, and the bytes that stop a step's read early.
const DRAIN_BATCH: usize = 1024;
const DRAIN_BATCH_BYTES: usize = 8 << 20;
/// Transactions a drain step writes at once, each with its own rooms (so they never wait on
/// each other's row locks).
const DRAIN_WRITERS: usize = 2;
/// How long the drain pauses between steps after live callbacks found PostgreSQL slow: its
/// batches would lock rooms that live batches wait for.
const SLOW_BACKOFF: Duration = Duration::from_secs(1);
/// How often the drain reads the parked records for those that are due.
const PARKED_LOOK: Duration = Duration::from_secs(1);

/// Why a drain step stopped; the task tries again after [`DRAIN_RETRY`].
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("the database is unreachable or too busy")]
    Unreachable(#[source] StoreError),
    #[error("could not apply the migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("could not keep an unparsable record in rejected_callbacks")]
    KeepRejected(#[source] StoreError),
    #[error("the journal failed")]
    Journal(#[source] JournalError),
}

impl Ingest {
    /// Drains the journal while PostgreSQL is up, until `shutdown` turns true; a step under way
    /// then finishes (its batch committed and removed, or left pending). Idle (no timer, no
    /// polling) while nothing is pending or parked and the database is up.
    pub fn spawn_drain(&self, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let ingest = self.clone();
        tokio::spawn(async move {
            let mut drain = Drain::default();
            while !*shutdown.borrow() {
                let wait = match ingest.drain_step(&mut drain).await {
                    Ok(Step::Worked) => continue,
                    Ok(Step::Idle(wait)) => wait,
                    Err(error) => {
                        drain.cursor = None;
                        ingest.show_journal();
                        // Its keys stay in `applied` if it failed: retried at the next step.
                        let _ = ingest.finish_removal(&mut drain).await;
                        tracing::warn!(error = %crate::telemetry::error_chain(&error), depth = ingest.journal.depth(), "journal drain paused");
                        Some(DRAIN_RETRY)
                    }
                };
                let woken = ingest.wake_drain.notified();
                tokio::select! {
                    _ = woken => {}
                    _ = shutdown.changed() => {}
                    _ = sleep_or_forever(wait) => {}
                }
            }
            if let Err(error) = ingest.finish_removal(&mut drain).await {
                tracing::warn!(error = %crate::telemetry::error_chain(&error), "journal removal failed at stop; the records drain again (a no-op) at the next start");
            }
        })
    }

    /// One step: makes sure the database is there, then moves one batch (pending records and
    /// parked ones that are due) into it.
    async fn drain_step(&self, drain: &mut Drain) -> Result<Step, DrainError> {
        if !self.health.is_up() || !self.schema_ready.load(Ordering::Relaxed) {
            self.reach_database().await?;
        }
        // Applied earlier, but their removal failed: remove them before anything else.
        if drain.removal.is_none() && !drain.applied.is_empty() {
            let keys: Vec<u64> = drain.applied.iter().copied().collect();
            self.journal
                .remove(keys)
                .await
                .map_err(DrainError::Journal)?;
            drain.applied.clear();
            self.show_journal();
        }
        if self.journal.depth() == 0 {
            drain.cursor = None;
            return Ok(Step::Idle(None));
        }
        // While live callbacks find PostgreSQL slow, the drain takes a small share of it.
        let since_slow = Utc::now().timestamp_millis() - self.last_slow_ms.load(Ordering::Relaxed);
        if since_slow < SLOW_BACKOFF.as_millis() as i64 {
            tokio::time::sleep(SLOW_BACKOFF).await;
        }
        let mut entries = match drain.read_ahead.take() {
            // Read while the previous step wrote, from where this step starts.
            Some((from, entries)) if from == drain.cursor => entries,
            _ => self
                .journal
                .pending_after(drain.cursor, DRAIN_BATCH, DRAIN_BATCH_BYTES)
                .await
                .map_err(DrainError::Journal)?,
        };
        if entries.is_empty() && drain.removal.is_some() {
            // The journal may be empty once the last removal is done.
            self.finish_removal(drain).await?;
            return Ok(Step::Worked);
        }
        let now = Utc::now();
        // Parked records are looked at once a second at most: their table is read whole.
        let look_at_parked = drain
            .parked_seen_at
            .is_none_or(|at| at.elapsed() >= PARKED_LOOK);
        if self.journal.parked() > 0 && entries.len() < DRAIN_BATCH && look_at_parked {
            drain.parked_seen_at = Some(std::time::Instant::now());
            let due = self
                .journal
                .parked_entries(Some(now), DRAIN_BATCH - entries.len())
                .await
                .map_err(DrainError::Journal)?;
            entries.extend(due);
        }
        if entries.is_empty() {
            if drain.cursor.take().is_some() {
                return Ok(Step::Worked); // read again from the oldest
            }
            // Only parked records, none due yet.
            let due = self
                .journal
                .next_parked_due()
                .await
                .map_err(DrainError::Journal)?;
            let until_due = due.map_or(PARK_BACKOFF_MAX, |at| {
                (at - now)
                    .to_std()
                    .unwrap_or_default()
                    .min(PARK_BACKOFF_MAX)
            });
            // Not before the next look at them is allowed (no spinning meanwhile).
            let until_look = drain.parked_seen_at.map_or(Duration::ZERO, |at| {
                PARKED_LOOK.saturating_sub(at.elapsed())
            });
            return Ok(Step::Idle(Some(until_due.max(until_look))));
        }
        if let Some(last) = entries
            .iter()
            .filter(|e| e.parked.is_none())
            .map(|e| e.key)
            .max()
        {
            drain.cursor = Some(last);
        }
        // The next step's records are read while this one writes.
        let from = drain.cursor;
        let next = self
            .journal
            .pending_after(from, DRAIN_BATCH, DRAIN_BATCH_BYTES);
        let (moved, next) = tokio::join!(self.move_batch(entries, drain), next);
        moved?;
        if let Ok(next) = next {
            drain.read_ahead = Some((from, next));
        }
        Ok(Step::Worked)
    }

    /// Waits for nothing: one probe of the server, then the migrations if they are pending.
    async fn reach_database(&self) -> Result<(), DrainError> {
        if let Err(error) = store::ping(&self.pool).await {
            return Err(DrainError::Unreachable(self.health.judge(error).await));
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
        if self.health.set_up(true) {
            tracing::info!(
                depth = self.journal.depth(),
                "database reachable again; callbacks go to it"
            );
        }
        self.show_journal();
        Ok(())
    }

    /// Writes one batch of records (with the one write path of live callbacks), then removes
    /// what PostgreSQL committed and parks what it did not take.
    async fn move_batch(&self, entries: Vec<Entry>, drain: &mut Drain) -> Result<(), DrainError> {
        let mut done = Vec::new();
        let mut parsed = Vec::with_capacity(entries.len());
        for entry in entries {
            let query = CallbackQuery::parse(&entry.record.query);
            let record = &entry.record;
            match parse_stored(
                record.sdk_app_id,
                &query,
                record.body.as_bytes(),
                record.received_at,
            ) {
                Ok(callback) => parsed.push((entry, callback)),
                // It passed the same checks when it arrived: only a record an older version
                // took can fail here, and no database will ever take it.
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
                    done.push(entry.key);
                }
            }
        }
        let callbacks: Vec<&Callback> = parsed.iter().map(|(_, c)| c).collect();
        let layout = self.writer.layout().get();
        // The previous step's removal (an fsync) runs while this step writes.
        let (results, removed) = tokio::join!(
            write_by_room(&self.pool, &layout, &callbacks),
            self.finish_removal(drain)
        );
        let mut parks = Vec::new();
        let mut stopped = None;
        for ((entry, _), result) in parsed.iter().zip(results) {
            match result {
                Ok(_) => done.push(entry.key),
                Err(error) => {
                    let error = self.health.judge(error).await;
                    if error.is_about_the_records() {
                        parks.push((entry.key, error.detail()));
                    } else {
                        // Down, or too busy to give a connection: not this record's doing. It
                        // stays pending, and the next step starts again from the oldest.
                        stopped.get_or_insert(error);
                    }
                }
            }
        }
        if !parks.is_empty() {
            tracing::warn!(records = parks.len(), error = %parks[0].1, "journal records not taken; parked, to be tried again");
            self.metrics.journal_parked_total.inc_by(parks.len() as u64);
            self.journal
                .park(parks, Utc::now())
                .await
                .map_err(DrainError::Journal)?;
        }
        // Counted once committed, so an empty journal implies the count is complete.
        self.metrics.journal_drained.inc_by(done.len() as u64);
        // Removed only after the commit, in the background. Until the removal is done they are
        // in `applied`, and this process does not write them again, even if the removal fails;
        // after a crash in between, the history's dedup key makes the second write a no-op.
        if !done.is_empty() {
            drain.applied.extend(done.iter().copied());
            let journal = self.journal.clone();
            drain.removal = Some(tokio::spawn(async move {
                let result = journal.remove(done.clone()).await;
                (done, result)
            }));
        }
        removed?;
        match stopped {
            Some(error) => Err(DrainError::Unreachable(error)),
            None => Ok(()),
        }
    }

    /// Waits for the removal started by the previous step, if any.
    async fn finish_removal(&self, drain: &mut Drain) -> Result<(), DrainError> {
        let Some(removal) = drain.removal.take() else {
            return Ok(());
        };
        let (keys, result) = removal
            .await
            .map_err(|e| DrainError::Journal(JournalError::Storage(Box::new(e))))?;
        result.map_err(DrainError::Journal)?;
        for key in keys {
            drain.applied.remove(&key);
        }
        self.show_journal();
        Ok(())
    }
}

/// The drain task's memory between steps.
#[derive(Default)]
struct Drain {
    /// The newest pending key handed to PostgreSQL: the next step reads after it. Reset after
    /// a failure, so the oldest pending record is read again.
    cursor: Option<u64>,
    /// Committed in PostgreSQL, not yet removed from the journal.
    applied: HashSet<u64>,
    /// The removal of the last step's committed records, under way: the keys and the result.
    removal: Option<Removal>,
    /// When the parked records were last read for the ones that are due.
    parked_seen_at: Option<std::time::Instant>,
    /// Pending records read ahead, and the cursor they were read after: used only if the next
    /// step starts from that cursor (a failure resets it).
    read_ahead: Option<(Option<u64>, Vec<Entry>)>,
}

/// A journal removal under way: the keys it removes, and its result.
type Removal = JoinHandle<(Vec<u64>, Result<(), JournalError>)>;

enum Step {
    Worked,
    /// Nothing to do for this long (`None`: until woken).
    Idle(Option<Duration>),
}

async fn sleep_or_forever(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

/// Writes callbacks in up to [`DRAIN_WRITERS`] concurrent transactions (one a node on Citus),
/// split as the live writers split them, so that they never wait on each other's locks;
/// results in the order given.
async fn write_by_room(
    pool: &PgPool,
    layout: &store::Layout,
    callbacks: &[&Callback],
) -> Vec<Result<Outcome, StoreError>> {
    let groups = layout.partition(callbacks, DRAIN_WRITERS);
    let writes = groups.iter().map(|group| {
        let batch: Vec<&Callback> = group.iter().map(|&i| callbacks[i]).collect();
        async move { write_isolating(&mut Held::new(pool), layout.dialect(), &batch).await }
    });
    let written = futures_util::future::join_all(writes).await;
    let mut results: Vec<Option<Result<Outcome, StoreError>>> = vec![None; callbacks.len()];
    for (group, group_results) in groups.iter().zip(written) {
        for (&i, result) in group.iter().zip(group_results) {
            results[i] = Some(result);
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every callback is in one group"))
        .collect()
}
