//! The one door for every write (docs/durability.md#the-writer): live callbacks, the
//! journal's drain and drift-repair corrections all go through this queue, so group exclusion,
//! held connections, the dialect, the bounds and the batch metrics serve them all.
//!
//! A few writer tasks share one queue with two lanes. A task takes what is queued (up to a
//! bound) as its batch, live callbacks first and the background lane (the drain, corrections)
//! in what live traffic leaves, with a floor so that a backlog still drains while callbacks
//! keep arriving. An idle server commits a lone callback at once, a busy one many per
//! transaction: batches grow with the queue. Each callback has a [`Group`] (its room, or on
//! Citus its shard and node): a task takes only callbacks whose group no other task is
//! writing, and on Citus only those of one node. So a process's transactions never wait on
//! each other's room locks, and Citus commits every batch in one phase.
//!
//! A room held by another session (a forgotten `psql`, another process) holds up only its
//! own group: every transaction runs under `lock_timeout`, a batch that meets a held room is
//! split along its groups until the held one is alone, and that group's callbacks are given
//! back ([`StoreError::Held`]: journaled, or parked by the drain) without a database round
//! trip for a while, then retried alone. Every answer is a judged verdict ([`Health`]).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::PgPool;
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot},
    task::JoinSet,
};

mod queue;
mod transaction;

use queue::{State, next_batch, release};
use transaction::{Held, write_isolating};

pub use transaction::write_batch;

use super::layout::{Group, SharedLayout};
use super::{Health, Outcome, Rules, StoreError};
use crate::{callback::Callback, telemetry::Metrics};

/// A writer task gives its connection back after this long without a batch...
const HOLD_IDLE: Duration = Duration::from_secs(1);
/// ...and after this long in all, so that the pool's connection lifetime still applies.
const HOLD_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Most callbacks in one transaction.
    pub max_batch: usize,
    /// Transactions in flight at once.
    pub tasks: usize,
    /// How long a live callback waits for its commit before it is journaled.
    pub timeout: Duration,
    /// Whether a task keeps its connection from one batch to the next ([`Held`]); false when
    /// the tasks would hold every connection of the pool.
    pub hold: bool,
    /// `lock_timeout` of every write transaction: how long a room held elsewhere may stall it.
    pub lock_timeout: Duration,
    /// The writer's own bound on one transaction, whatever it waits for (a statement the lock
    /// timeout does not cover, such as a stopped Citus worker).
    pub write_timeout: Duration,
    /// How often the tasks reread the room tables' distribution (a rebalance moves shards).
    pub layout_refresh: Duration,
    /// The attendance ledger's policy (docs/attendance.md#policies) and `NOTIFY_MODE`.
    pub rules: Rules,
    /// Notified after each commit that stored something: the feed's reader looks at once.
    pub committed: Arc<Notify>,
}

/// Who submits: live callbacks go first; the drain and corrections take what they leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Live,
    Background,
}

struct Job {
    callback: Callback,
    group: Group,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
    /// A place in the bounded live queue, given back when the job is answered.
    _place: Option<OwnedSemaphorePermit>,
}

/// The queue the tasks share, and the groups being written.
struct Queue {
    state: Mutex<State>,
    /// Something changed: a job came, a group was released, or the writer closed.
    changed: Notify,
    /// The writer closed.
    closing: Notify,
    places: Arc<Semaphore>,
}

/// Closes the queue when the last [`Writer`] handle is dropped.
struct Closer(Arc<Queue>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.state.lock().expect("writer queue").closed = true;
        self.0.changed.notify_waiters();
        self.0.closing.notify_waiters();
    }
}

/// The handle every writer uses; the tasks stop once every handle is dropped and the queue is
/// empty.
#[derive(Clone)]
pub struct Writer {
    queue: Arc<Queue>,
    _closer: Arc<Closer>,
    layout: SharedLayout,
    timeout: Duration,
    health: Health,
    write_timeout: Duration,
    /// The most callbacks in transactions at once: the tasks times a batch.
    in_flight: usize,
}

/// What a task needs besides the queue.
struct Task {
    pool: PgPool,
    queue: Arc<Queue>,
    health: Health,
    metrics: Arc<Metrics>,
    layout: SharedLayout,
    /// Whether this task has read the layout itself (see `commit_batch`).
    layout_read: AtomicBool,
    max_batch: usize,
    /// How many tasks share the queue.
    tasks: usize,
    hold: bool,
    begin: Arc<str>,
    write_timeout: Duration,
    rules: Rules,
    committed: Arc<Notify>,
}

impl Writer {
    pub fn spawn(
        pool: PgPool,
        options: WriterOptions,
        health: Health,
        metrics: Arc<Metrics>,
    ) -> (Self, JoinSet<()>) {
        let queue = Arc::new(Queue {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            closing: Notify::new(),
            places: Arc::new(Semaphore::new(options.max_batch * options.tasks * 4)),
        });
        let layout = SharedLayout::default();
        // `SET LOCAL` in the same simple query as `BEGIN`: no extra round trip. It leaves the
        // server's `statement_timeout` (the DBA's) alone.
        let begin: Arc<str> = format!(
            "BEGIN; SET LOCAL lock_timeout = {}",
            options.lock_timeout.as_millis().max(1)
        )
        .into();
        let mut tasks = JoinSet::new();
        for _ in 0..options.tasks {
            let task = Task {
                pool: pool.clone(),
                queue: queue.clone(),
                health: health.clone(),
                metrics: metrics.clone(),
                layout: layout.clone(),
                layout_read: AtomicBool::new(false),
                max_batch: options.max_batch,
                tasks: options.tasks,
                hold: options.hold,
                begin: begin.clone(),
                write_timeout: options.write_timeout,
                rules: options.rules,
                committed: options.committed.clone(),
            };
            tasks.spawn(task.run());
        }
        let writer = Self {
            queue: queue.clone(),
            _closer: Arc::new(Closer(queue.clone())),
            layout: layout.clone(),
            timeout: options.timeout,
            health,
            write_timeout: options.write_timeout,
            in_flight: options.max_batch * options.tasks,
        };
        // Reads the layout until the writer closes; it is only a hint, so callbacks do not
        // wait for the first read.
        let refresh = options.layout_refresh;
        tasks.spawn(async move {
            loop {
                let closing = queue.closing.notified();
                tokio::pin!(closing);
                closing.as_mut().enable();
                if queue.state.lock().expect("writer queue").closed {
                    return;
                }
                layout.refresh(&pool).await;
                tokio::select! {
                    _ = closing => return,
                    _ = tokio::time::sleep(refresh) => {}
                }
            }
        });
        (writer, tasks)
    }

    /// Stores one live callback; returns once it is committed, or with the verdict on why not
    /// (within the commit timeout).
    pub async fn submit(&self, callback: Callback) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let group = self.layout.get().group(&callback);
        let wait = async {
            let place = (self.queue.places.clone().acquire_owned().await)
                .map_err(|_| StoreError::Closed)?;
            self.enqueue(Lane::Live, vec![(callback, group, reply, Some(place))]);
            answer.await.map_err(|_| StoreError::Closed)?
        };
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(result) => result,
            // The job is dropped from the queue if not yet taken (its answer end is closed).
            Err(_) => Err(self.health.judge(StoreError::Timeout).await),
        }
    }

    /// The bound on one transaction (`DATABASE_WRITE_TIMEOUT_MS`).
    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// The most callbacks in transactions at once (the tasks times a batch): what a caller of
    /// [`Writer::submit_all`] halves to halve each transaction.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Stores callbacks in the background lane (the drain, corrections): no commit timeout,
    /// the bounds of every transaction apply. Results in the order given.
    pub async fn submit_all(&self, callbacks: Vec<Callback>) -> Vec<Result<Outcome, StoreError>> {
        let layout = self.layout.get();
        let (jobs, answers): (Vec<_>, Vec<_>) = callbacks
            .into_iter()
            .map(|callback| {
                let (reply, answer) = oneshot::channel();
                let group = layout.group(&callback);
                ((callback, group, reply, None), answer)
            })
            .unzip();
        self.enqueue(Lane::Background, jobs);
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            results.push(answer.await.unwrap_or(Err(StoreError::Closed)));
        }
        results
    }

    #[allow(clippy::type_complexity)]
    fn enqueue(
        &self,
        lane: Lane,
        jobs: Vec<(
            Callback,
            Group,
            oneshot::Sender<Result<Outcome, StoreError>>,
            Option<OwnedSemaphorePermit>,
        )>,
    ) {
        {
            let mut state = self.queue.state.lock().expect("writer queue");
            if lane == Lane::Live {
                state.last_live = Some(std::time::Instant::now());
            }
            let queue = match lane {
                Lane::Live => &mut state.live,
                Lane::Background => &mut state.background,
            };
            queue.extend(jobs.into_iter().map(|(callback, group, reply, place)| Job {
                callback,
                group,
                reply,
                _place: place,
            }));
        }
        self.queue.changed.notify_waiters();
    }
}

impl Task {
    async fn run(self) {
        let mut conn = Held::new(&self.pool);
        loop {
            let batch = match tokio::time::timeout(
                HOLD_IDLE,
                next_batch(&self.queue, self.max_batch, self.tasks),
            )
            .await
            {
                Ok(batch) => batch,
                // Idle: the connection goes back to the pool for others.
                Err(_) => {
                    conn.give_back();
                    next_batch(&self.queue, self.max_batch, self.tasks).await
                }
            };
            let Some(batch) = batch else { break };
            let groups: Vec<u64> = batch.iter().map(|job| job.group.key).collect();
            let held = self.commit_batch(&mut conn, batch).await;
            if !self.hold || conn.held_for() > HOLD_MAX {
                conn.give_back();
            }
            release(&self.queue, &groups, held);
        }
    }

    /// Writes a batch and answers each job with its judged result; returns the groups found
    /// held elsewhere.
    async fn commit_batch(&self, conn: &mut Held, mut batch: Vec<Job>) -> Vec<(u64, StoreError)> {
        // Found down meanwhile: these go to the journal (or stay pending) now, not after a
        // connection timeout.
        if !self.health.is_up() {
            for job in batch {
                let _ = job.reply.send(Err(StoreError::Down));
            }
            return Vec::new();
        }
        // A group's callbacks side by side, so a split along groups keeps them together.
        batch.sort_by_key(|job| job.group.key);
        let callbacks: Vec<&Callback> = batch.iter().map(|job| &job.callback).collect();
        let groups: Vec<u64> = batch.iter().map(|job| job.group.key).collect();
        self.metrics.batch_size.observe(batch.len() as f64);
        // Before the background task's first read lands, a task's first batch reads the layout
        // itself (once: an unreachable database must not cost every batch a failed read): on
        // Citus, a batch in the plain form goes through the coordinator (INSERT … SELECT, two
        // phases) at several times the cost of the routed form.
        if !self.layout.get().is_loaded() && !self.layout_read.swap(true, Ordering::Relaxed) {
            self.layout.refresh(&self.pool).await;
        }
        let known = self.layout.get().dialect();
        let write = write_isolating(conn, known, self.rules, &self.begin, &callbacks, &groups);
        let results = match tokio::time::timeout(self.write_timeout, write).await {
            Ok(results) => results,
            Err(_) => {
                // Whatever the connection was doing, it is not given back to the pool.
                conn.close();
                vec![Err(StoreError::Timeout); batch.len()]
            }
        };
        if results
            .iter()
            .any(|r| matches!(r, Ok(Outcome::Stored { .. })))
        {
            self.committed.notify_one();
        }
        let mut held = Vec::new();
        for (job, result) in batch.into_iter().zip(results) {
            let result = match result {
                Ok(outcome) => Ok(outcome),
                Err(error) => Err(self.health.judge(error).await),
            };
            if let Err(error @ StoreError::Held(_)) = &result
                && held.last().is_none_or(|(g, _)| *g != job.group.key)
            {
                held.push((job.group.key, error.clone()));
            }
            let _ = job.reply.send(result);
        }
        held
    }
}
