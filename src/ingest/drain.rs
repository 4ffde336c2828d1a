//! The drain (docs/durability.md#draining): read a batch from the journal, write it through the
//! writer's background lane, acknowledge what PostgreSQL committed and park what it did not
//! take. The reading protocol is the journal [`Reader`]'s; the write path, the bounds and the
//! verdicts are the writer's and [`Health`]'s.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use sqlx::PgPool;
use tokio::{sync::watch, task::JoinHandle};

use super::{Backlog, RoomKey, UNPARSABLE_CODE};
use crate::{
    callback::{Callback, CallbackQuery, parse_stored},
    config::Timings,
    journal::{Entry, PARK_BACKOFF_MAX, Reader},
    store::{Budget, Health, RejectedCallback, RejectedStore, StoreError, Writer},
    telemetry::Metrics,
};

/// The bytes that stop a drain step's read early ([`Timings::drain_step`] records otherwise).
const DRAIN_BATCH_BYTES: usize = 8 << 20;

/// The drain task's parts.
pub struct Drain {
    pub reader: Reader,
    pub writer: Writer,
    pub health: Health,
    pub pool: PgPool,
    pub rejected: Arc<RejectedStore>,
    pub metrics: Arc<Metrics>,
    pub timings: Timings,
    /// Rooms with journaled callbacks still to apply (shared with the router).
    pub backlog: Backlog,
}

/// What a step did.
enum Step {
    Worked,
    /// Nothing to do for this long (`None`: until woken).
    Idle(Option<Duration>),
    /// The database or the journal failed: try again after the retry interval.
    Failed,
}

impl Drain {
    /// Drains the journal while PostgreSQL is up, until `shutdown` turns true; a step under way
    /// then finishes (its batch committed and acknowledged, or left pending). Idle (no timer,
    /// no polling) while nothing is pending or parked and the database is up.
    pub fn spawn(mut self, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let mut size = StepSize::new(
            self.timings.drain_step,
            self.writer.write_timeout(),
            self.writer.in_flight(),
        );
        tokio::spawn(async move {
            self.show();
            while !*shutdown.borrow() {
                // Made before the step reads, so an append during the step wakes the next one.
                let journal = self.reader.journal().clone();
                let appended = journal.appended();
                tokio::pin!(appended);
                // After a failure, only the retry interval: an append must not turn a database
                // that is down into a busy loop.
                let (wait, on_append) = match self.step(&mut size).await {
                    Step::Worked => continue,
                    Step::Idle(wait) => (wait, true),
                    Step::Failed => (Some(self.timings.drain_retry), false),
                };
                tokio::select! {
                    _ = &mut appended, if on_append => {}
                    _ = shutdown.changed() => {}
                    _ = sleep_or_forever(wait) => {}
                }
            }
            self.reader.finish().await;
            self.show();
        })
    }

    /// One step: makes sure the database is there, then moves one batch (pending records and
    /// parked ones that are due) into it.
    async fn step(&mut self, size: &mut StepSize) -> Step {
        if self.reader.removal_failed() {
            self.reader.retry_removal();
        }
        if !self.health.is_up() {
            if self.reader.outstanding() == 0 && self.reader.unreadable() == 0 {
                // Nothing to move: the next callback finds out whether it is back.
                if let Err(error) = self.health.reach(&self.pool).await {
                    tracing::debug!(error = %crate::telemetry::error_chain(&error), "database still not reachable");
                    self.show();
                    return Step::Idle(Some(self.timings.drain_retry));
                }
            } else if let Err(error) = self.health.reach(&self.pool).await {
                tracing::warn!(error = %crate::telemetry::error_chain(&error), depth = self.reader.outstanding(), "journal drain paused");
                self.show();
                return Step::Failed;
            }
        }
        let now = Utc::now();
        let batch = match self
            .reader
            .next(size.records(), DRAIN_BATCH_BYTES, now)
            .await
        {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(error = %crate::telemetry::error_chain(&error), "journal read failed; trying again");
                return Step::Failed;
            }
        };
        if !batch.unreadable.is_empty() {
            self.metrics
                .journal_unreadable
                .set(self.reader.unreadable() as i64);
        }
        if batch.entries.is_empty() {
            if self.reader.awaiting_removal() > 0 && !self.reader.removal_failed() {
                // Idle only once what was applied has left the file (or its removal failed).
                self.reader.settle().await;
                self.show();
                return Step::Worked;
            }
            self.show();
            if self.reader.removal_failed() {
                return Step::Idle(Some(self.timings.drain_retry));
            }
            // Only parked records (or none): until the first is due, at most a backoff's cap.
            let until_due = self.reader.journal().next_parked_due().map(|at| {
                (at - now)
                    .to_std()
                    .unwrap_or_default()
                    .min(PARK_BACKOFF_MAX)
            });
            return Step::Idle(until_due);
        }
        let step = self.move_batch(batch.entries, size).await;
        self.show();
        step
    }

    /// Writes one batch through the writer, then acknowledges what PostgreSQL committed and
    /// parks what it did not take alone.
    async fn move_batch(&mut self, entries: Vec<Entry>, size: &mut StepSize) -> Step {
        let mut done = Vec::new();
        let mut keys = Vec::with_capacity(entries.len());
        let mut parsed: Vec<Callback> = Vec::with_capacity(entries.len());
        for entry in entries {
            let query = CallbackQuery::parse(&entry.record.query);
            let record = &entry.record;
            match parse_stored(
                record.sdk_app_id,
                &query,
                record.body.as_bytes(),
                record.received_at,
            ) {
                Ok(callback) => {
                    keys.push(entry.key);
                    parsed.push(callback);
                }
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
                    match self
                        .rejected
                        .keep(&rejected, Budget::Exempt, &self.metrics)
                        .await
                    {
                        Ok(_) => done.push(entry.key),
                        // Stays pending: tried again with the next pass.
                        Err(error) => {
                            tracing::warn!(error = %error.detail(), "could not keep an unparsable journal record in rejected_callbacks")
                        }
                    }
                }
            }
        }
        let started = Instant::now();
        let submitted = parsed.len();
        // Each record's room, to take it out of the backlog once applied or parked.
        let rooms: Vec<Option<RoomKey>> = parsed
            .iter()
            .map(|callback| callback.locked_room().map(RoomKey::of))
            .collect();
        let results = self.writer.submit_all(parsed).await;
        let took = started.elapsed();
        tracing::debug!(
            records = submitted,
            ms = took.as_millis() as u64,
            "drain step written"
        );
        let mut parks = Vec::new();
        let mut stopped: Option<StoreError> = None;
        let mut taken = Vec::new();
        for ((key, result), room) in keys.into_iter().zip(results).zip(rooms) {
            match result {
                Ok(_) => {
                    done.push(key);
                    taken.extend(room);
                }
                Err(error) if error.is_about_the_records() => {
                    parks.push((key, error.detail()));
                    taken.extend(room);
                }
                // Down, the schema missing, no connection in time, the writer stopping: not
                // this record's doing. It stays pending; the next step starts from the oldest.
                Err(error) => {
                    stopped.get_or_insert(error);
                }
            }
        }
        size.after(submitted, took, stopped.is_some());
        self.backlog.remove(taken);
        // Counted once committed, so an empty journal implies the count is complete.
        self.metrics.journal_drained.inc_by(done.len() as u64);
        self.reader.ack(done);
        let mut step = Step::Worked;
        if !parks.is_empty() {
            tracing::warn!(records = parks.len(), error = %parks[0].1, "journal records not taken; parked, to be tried again");
            self.metrics.journal_parked_total.inc_by(parks.len() as u64);
            if let Err(error) = self.reader.park(parks, Utc::now()).await {
                // They stay pending and come round again; not at once.
                tracing::warn!(error = %crate::telemetry::error_chain(&error), "parking journal records failed");
                step = Step::Failed;
            }
        }
        if let Some(error) = stopped {
            tracing::warn!(error = %crate::telemetry::error_chain(&error), depth = self.reader.outstanding(), "journal drain paused");
            self.reader.rewind();
            step = Step::Failed;
        }
        step
    }

    fn show(&self) {
        let journal = self.reader.journal();
        self.metrics.journal_depth.set(journal.depth() as i64);
        self.metrics.journal_parked.set(journal.parked() as i64);
        self.metrics
            .journal_unreadable
            .set(self.reader.unreadable() as i64);
    }
}

/// How many records a step reads (docs/durability.md#draining). [`Timings::drain_step`], until
/// a step fails only after the writer's whole time limit (`DATABASE_WRITE_TIMEOUT_MS`): its
/// transactions were too big to commit in time that day (a loaded machine, a slow disk,
/// callbacks of thousands of members), and at the same size every later try would fail the
/// same way, the journal being read from its oldest record again. The next steps then take half
/// of what was in flight, down to one record; a step that commits within a quarter of the limit
/// doubles the size again, up to the configured step.
#[derive(Debug)]
struct StepSize {
    now: usize,
    most: usize,
    write_timeout: Duration,
    in_flight: usize,
}

impl StepSize {
    fn new(most: usize, write_timeout: Duration, in_flight: usize) -> Self {
        let most = most.max(1);
        Self {
            now: most,
            most,
            write_timeout,
            in_flight: in_flight.max(1),
        }
    }

    fn records(&self) -> usize {
        self.now
    }

    /// After the writer took `took` over a step of `records`, and `failed` (not for the records'
    /// sake: they stay pending) or not.
    fn after(&mut self, records: usize, took: Duration, failed: bool) {
        if failed && took >= self.write_timeout {
            let next = (records.min(self.in_flight) / 2).max(1);
            if next < self.now {
                self.now = next;
                tracing::warn!(
                    records = next,
                    "a drain step did not commit within DATABASE_WRITE_TIMEOUT_MS; the next steps take fewer records"
                );
            }
        } else if !failed && took * 4 < self.write_timeout && self.now < self.most {
            self.now = (self.now * 2).min(self.most);
        }
    }
}

async fn sleep_or_forever(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(30);

    #[test]
    fn a_step_that_outlives_the_write_timeout_halves_what_was_in_flight() {
        // Two tasks of 256: a step of 4,096 has 512 in flight.
        let mut size = StepSize::new(4096, LIMIT, 512);
        size.after(4096, LIMIT, true);
        assert_eq!(size.records(), 256);
        // A smaller step than the size (the journal held fewer): half of that.
        size.after(94, LIMIT + Duration::from_secs(1), true);
        assert_eq!(size.records(), 47);
        for _ in 0..10 {
            size.after(size.records(), LIMIT, true);
        }
        assert_eq!(size.records(), 1, "down to one record, never none");
    }

    #[test]
    fn only_a_failure_after_the_whole_limit_shrinks_it_and_only_a_quick_step_grows_it() {
        let mut size = StepSize::new(4096, LIMIT, 512);
        // Down at once (refused connection): not the step's size.
        size.after(4096, Duration::from_millis(20), true);
        assert_eq!(size.records(), 4096);
        size.after(4096, LIMIT, true);
        assert_eq!(size.records(), 256);
        // Committed, but in more than a quarter of the limit: doubling could not fit.
        size.after(256, LIMIT / 2, false);
        assert_eq!(size.records(), 256);
        size.after(256, LIMIT / 5, false);
        assert_eq!(size.records(), 512);
        for _ in 0..10 {
            size.after(size.records(), Duration::ZERO, false);
        }
        assert_eq!(size.records(), 4096, "never past the configured step");
    }
}
