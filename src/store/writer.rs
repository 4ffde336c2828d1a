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
    collections::{HashMap, HashSet, VecDeque},
    ops::Range,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, pool::PoolConnection};
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot},
    task::JoinSet,
};

use super::layout::{Group, SharedLayout};
use super::{Dialect, Health, Outcome, StoreError, apply_batch};
use crate::{callback::Callback, telemetry::Metrics};

/// A writer task gives its connection back after this long without a batch...
const HOLD_IDLE: Duration = Duration::from_secs(1);
/// ...and after this long in all, so that the pool's connection lifetime still applies.
const HOLD_MAX: Duration = Duration::from_secs(60);
/// How long a held room's callbacks are given back before the room is tried again (alone),
/// doubling while it stays held, up to the cap.
const HELD_BACKOFF: Duration = Duration::from_millis(500);
const HELD_BACKOFF_MAX: Duration = Duration::from_secs(8);

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

#[derive(Default)]
struct State {
    live: VecDeque<Job>,
    background: VecDeque<Job>,
    busy: HashSet<u64>,
    /// Groups found held elsewhere: until when their callbacks are given back, the next wait,
    /// and what PostgreSQL said.
    held: HashMap<u64, HeldGroup>,
    closed: bool,
}

struct HeldGroup {
    until: Instant,
    backoff: Duration,
    error: StoreError,
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
}

/// What a task needs besides the queue.
struct Task {
    pool: PgPool,
    queue: Arc<Queue>,
    health: Health,
    metrics: Arc<Metrics>,
    layout: SharedLayout,
    max_batch: usize,
    /// How many tasks share the queue.
    tasks: usize,
    hold: bool,
    begin: Arc<str>,
    write_timeout: Duration,
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
                max_batch: options.max_batch,
                tasks: options.tasks,
                hold: options.hold,
                begin: begin.clone(),
                write_timeout: options.write_timeout,
            };
            tasks.spawn(task.run());
        }
        let writer = Self {
            queue: queue.clone(),
            _closer: Arc::new(Closer(queue.clone())),
            layout: layout.clone(),
            timeout: options.timeout,
            health,
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

    /// One transaction for `callbacks` as a batch of their own, through this queue (tests that
    /// need a given batch; a writer of one task keeps them together).
    pub async fn submit_batch(&self, callbacks: Vec<Callback>) -> Vec<Result<Outcome, StoreError>> {
        self.submit_all(callbacks).await
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
        let known = self.layout.get().dialect();
        let write = write_isolating(conn, known, &self.begin, &callbacks, &groups);
        let results = match tokio::time::timeout(self.write_timeout, write).await {
            Ok(results) => results,
            Err(_) => {
                // Whatever the connection was doing, it is not given back to the pool.
                conn.close();
                vec![Err(StoreError::Timeout); batch.len()]
            }
        };
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

/// The next batch ([`take_batch`]); `None` once the writer is closed and the queue is empty.
async fn next_batch(queue: &Queue, max_batch: usize, tasks: usize) -> Option<Vec<Job>> {
    loop {
        let changed = queue.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let wake_at = {
            let mut state = queue.state.lock().expect("writer queue");
            let batch = take_batch(&mut state, max_batch, tasks, Instant::now());
            if !batch.is_empty() {
                return Some(batch);
            }
            if state.closed && state.live.is_empty() && state.background.is_empty() {
                return None;
            }
            // A held group whose wait ends is tried then, even if nothing else happens.
            state.held.values().map(|h| h.until).min()
        };
        match wake_at {
            Some(at) => {
                let _ = tokio::time::timeout_at(at.into(), changed).await;
            }
            None => changed.await,
        }
    }
}

/// Queued jobs, oldest first, whose groups no other task is writing, all of the first one's
/// node, up to `max_batch`; their groups are marked busy. Live jobs first, but the background
/// lane keeps a quarter of the batch when it has work. Jobs of a group held elsewhere are
/// answered at once ([`StoreError::Held`]); once its wait ends, such a group is written in a
/// batch of its own. A live job whose request stopped waiting (it timed out, so the callback
/// went to the journal) is dropped: writing it here too would only add work when the database
/// is already slow. (One that started before its request gave up is written twice; the
/// history's dedup key makes the second a no-op.)
fn take_batch(state: &mut State, max_batch: usize, tasks: usize, now: Instant) -> Vec<Job> {
    let State {
        live,
        background,
        busy,
        held,
        ..
    } = state;
    live.retain(|job| !job.reply.is_closed());
    let floor = if background.is_empty() {
        0
    } else {
        (max_batch / 4).max(1)
    };
    let mut pick = Pick {
        node: None,
        mine: HashSet::new(),
        alone: None,
        batch: Vec::new(),
        busy,
        held,
        now,
    };
    pick.from(live, max_batch.saturating_sub(floor));
    // A backlog is shared among the tasks, so that it is written in parallel transactions.
    let share = pick.batch.len() + background.len().div_ceil(tasks.max(1));
    pick.from(background, max_batch.min(share.max(floor)));
    pick.from(live, max_batch);
    let Pick { mine, batch, .. } = pick;
    busy.extend(mine);
    batch
}

/// [`take_batch`]'s choice under way.
struct Pick<'a> {
    node: Option<i32>,
    mine: HashSet<u64>,
    /// A held group being retried: nothing else joins its batch.
    alone: Option<u64>,
    batch: Vec<Job>,
    busy: &'a HashSet<u64>,
    held: &'a mut HashMap<u64, HeldGroup>,
    now: Instant,
}

impl Pick<'_> {
    /// Takes jobs from `queue` while the batch has fewer than `limit`.
    fn from(&mut self, queue: &mut VecDeque<Job>, limit: usize) {
        let mut left = VecDeque::with_capacity(queue.len());
        for job in queue.drain(..) {
            let key = job.group.key;
            if let Some(h) = self.held.get(&key)
                && h.until > self.now
            {
                let _ = job.reply.send(Err(h.error.clone()));
                continue;
            }
            let retry = self.held.contains_key(&key);
            let fits = self.batch.len() < limit
                && self.alone.is_none_or(|g| g == key)
                && (!retry || self.batch.is_empty() || self.alone == Some(key))
                && self.node.is_none_or(|n| n == job.group.node)
                && (self.mine.contains(&key) || !self.busy.contains(&key));
            if fits {
                if retry {
                    self.alone = Some(key);
                }
                self.node = Some(job.group.node);
                self.mine.insert(key);
                self.batch.push(job);
            } else {
                left.push_back(job);
            }
        }
        *queue = left;
    }
}

/// Frees a batch's groups; those found held are given back for a while, the others forgotten
/// as held.
fn release(queue: &Queue, groups: &[u64], held: Vec<(u64, StoreError)>) {
    {
        let mut state = queue.state.lock().expect("writer queue");
        let now = Instant::now();
        for group in groups {
            state.busy.remove(group);
            if !held.iter().any(|(g, _)| g == group) {
                state.held.remove(group);
            }
        }
        for (group, error) in held {
            let backoff = state
                .held
                .get(&group)
                .map_or(HELD_BACKOFF, |h| (h.backoff * 2).min(HELD_BACKOFF_MAX));
            tracing::warn!(error = %error.detail(), wait_ms = backoff.as_millis() as u64, "a room is held by another session; its callbacks are given back meanwhile");
            state.held.insert(
                group,
                HeldGroup {
                    until: now + backoff,
                    backoff,
                    error,
                },
            );
        }
    }
    queue.changed.notify_waiters();
}

/// Writes callbacks (sorted by group, `groups[i]` the group of `callbacks[i]`) in as few
/// transactions as their failures allow: the whole batch first; when it fails because of what
/// is in it, each half on its own (split between groups while it holds several, so a held
/// room's callbacks stay together), and so on. So one callback PostgreSQL does not take fails
/// alone and its neighbours are stored (a few bad ones in a batch of n cost about 2·log2(n)
/// transactions each). A batch that meets a held room is written group by group, so only the
/// held groups wait out the lock timeout a second time. An error that
/// concerns the server, not the records, answers every callback not yet written. Raw errors,
/// in the order given.
async fn write_isolating(
    conn: &mut Held,
    known: Option<Dialect>,
    begin: &str,
    callbacks: &[&Callback],
    groups: &[u64],
) -> Vec<Result<Outcome, StoreError>> {
    let mut results: Vec<Option<Result<Outcome, StoreError>>> = vec![None; callbacks.len()];
    // Ranges still to write, the next one last.
    let mut todo: Vec<Range<usize>> = Vec::with_capacity(16);
    todo.push(0..callbacks.len());
    while let Some(range) = todo.pop() {
        if range.is_empty() {
            continue;
        }
        match write_batch_as(conn, known, begin, &callbacks[range.clone()]).await {
            Ok(outcomes) => {
                for (slot, outcome) in results[range].iter_mut().zip(outcomes) {
                    *slot = Some(Ok(outcome));
                }
            }
            // A held room: each group on its own, so only the held ones wait out the lock
            // timeout again (halving would make them wait once per level).
            Err(StoreError::Held(_)) if groups[range.start] != groups[range.end - 1] => {
                let mut starts: Vec<usize> = (range.start + 1..range.end)
                    .filter(|&i| groups[i] != groups[i - 1])
                    .collect();
                starts.insert(0, range.start);
                let ends = starts.iter().skip(1).copied().chain([range.end]);
                let parts: Vec<Range<usize>> =
                    starts.iter().zip(ends).map(|(&a, b)| a..b).collect();
                todo.extend(parts.into_iter().rev());
            }
            Err(error)
                if error.is_about_the_records() && split(&range, groups, &error).is_some() =>
            {
                let middle = split(&range, groups, &error).expect("just checked");
                todo.push(middle..range.end);
                todo.push(range.start..middle);
            }
            Err(error) => {
                let unwritten = if error.is_about_the_records() {
                    vec![range]
                } else {
                    // The server, not the records: nothing else would fare better now.
                    std::iter::once(range).chain(todo.drain(..)).collect()
                };
                for range in unwritten {
                    for slot in &mut results[range] {
                        *slot = Some(Err(error.clone()));
                    }
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every callback has a result"))
        .collect()
}

/// Where to split a range that failed: between groups while it holds several (the group
/// boundary nearest the middle); within one group only for a failure that may be one
/// callback's (not a held room: every callback of the group would meet it). `None`: it stays
/// whole.
fn split(range: &Range<usize>, groups: &[u64], error: &StoreError) -> Option<usize> {
    let first = groups[range.start];
    if groups[range.end - 1] != first {
        let middle = range.start + range.len() / 2;
        let boundary = |i: &usize| groups[*i] != groups[*i - 1];
        let after = (middle..range.end).find(boundary);
        let before = (range.start + 1..=middle).rev().find(boundary);
        return match (before, after) {
            (Some(b), Some(a)) => Some(if middle - b <= a - middle { b } else { a }),
            (b, a) => b.or(a),
        };
    }
    (range.len() > 1 && !matches!(error, StoreError::Held(_)))
        .then(|| range.start + range.len() / 2)
}

/// Writes callbacks in one transaction outside the writer's queue (tests that build batches
/// of their own), in the statements' form `known` when given. Rooms are locked in one global
/// order, so concurrent batches (from any process) cannot deadlock.
pub async fn write_batch(
    pool: &PgPool,
    known: Option<Dialect>,
    callbacks: &[&Callback],
) -> Result<Vec<Outcome>, StoreError> {
    write_batch_as(&mut Held::new(pool), known, "BEGIN", callbacks).await
}

/// One transaction on `conn`, begun with `begin`, in the database's form when the caller knows
/// it; outcomes in the order given.
async fn write_batch_as(
    conn: &mut Held,
    known: Option<Dialect>,
    begin: &str,
    callbacks: &[&Callback],
) -> Result<Vec<Outcome>, StoreError> {
    let mut order: Vec<usize> = (0..callbacks.len()).collect();
    order.sort_by(|&a, &b| lock_order(callbacks[a]).cmp(&lock_order(callbacks[b])));
    let sorted: Vec<&Callback> = order.iter().map(|&i| callbacks[i]).collect();
    let applied = async {
        let begin = AssertSqlSafe(begin.to_owned());
        let mut tx = sqlx::Connection::begin_with(conn.get().await?, begin).await?;
        let applied = apply_batch(&mut tx, &sorted, known).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(applied)
    }
    .await
    // The pool checks a connection it is given back, and closes a broken one.
    .inspect_err(|_| conn.give_back())?;
    let mut outcomes = vec![Outcome::Duplicate; callbacks.len()];
    for (i, outcome) in order.into_iter().zip(applied) {
        outcomes[i] = outcome;
    }
    Ok(outcomes)
}

/// A connection taken from the pool at the first batch and kept for the next ones. The pool
/// checks a connection with a round trip when it hands it out and another when it takes it
/// back: two of a batch's seven round trips (BENCHMARKS.md, "Nagle's delay and the number of
/// writers"). Given back after an error (the pool then closes it if it is broken), and by the
/// writer tasks when idle or after [`HOLD_MAX`].
struct Held {
    pool: PgPool,
    conn: Option<(PoolConnection<Postgres>, Instant)>,
}

impl Held {
    fn new(pool: &PgPool) -> Self {
        Self {
            pool: pool.clone(),
            conn: None,
        }
    }

    async fn get(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.conn.is_none() {
            self.conn = Some((self.pool.acquire().await?, Instant::now()));
        }
        Ok(&mut self.conn.as_mut().expect("just taken").0)
    }

    /// How long the connection has been held (zero when none is).
    fn held_for(&self) -> Duration {
        self.conn
            .as_ref()
            .map_or(Duration::ZERO, |(_, since)| since.elapsed())
    }

    /// Gives the connection back to the pool.
    fn give_back(&mut self) {
        self.conn = None;
    }

    /// Closes the connection rather than giving it back: it was dropped mid-transaction.
    fn close(&mut self) {
        if let Some((mut conn, _)) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}

fn lock_order(callback: &Callback) -> (bool, Option<(i64, &str)>, &[u8; 32]) {
    // Callbacks without a room lock no room; they go last, in dedup-key order (the order in
    // which their history rows' unique keys are taken).
    let room = callback.locked_room();
    (room.is_none(), room, &callback.dedup_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::{CallbackQuery, parse_stored};

    fn callback(room: &str, at: i64) -> Callback {
        let body = serde_json::json!({
            "CallbackCommand": "Room.CallbackAfterMemberEnter", "Operator_Account": "u",
            "RoomId": room, "MemberCount": 1, "Type": "Enter", "MemberList_Account": ["u"],
            "EventTime": at
        });
        let query = CallbackQuery {
            command: Some("Room.CallbackAfterMemberEnter".into()),
            ..CallbackQuery::default()
        };
        parse_stored(
            1400000000,
            &query,
            body.to_string().as_bytes(),
            chrono::Utc::now(),
        )
        .unwrap()
    }

    type Answer = oneshot::Receiver<Result<Outcome, StoreError>>;

    /// Queues jobs of the given (key, node) groups in a lane; returns the answer ends (drop
    /// one to make its request stop waiting).
    fn queue_in(state: &mut State, lane: Lane, groups: &[(u64, i32)]) -> Vec<Answer> {
        groups
            .iter()
            .enumerate()
            .map(|(i, &(key, node))| {
                let (reply, answer) = oneshot::channel();
                let job = Job {
                    callback: callback("r", i as i64 + 1),
                    group: Group { key, node },
                    reply,
                    _place: None,
                };
                match lane {
                    Lane::Live => state.live.push_back(job),
                    Lane::Background => state.background.push_back(job),
                }
                answer
            })
            .collect()
    }

    fn queue(state: &mut State, groups: &[(u64, i32)]) -> Vec<Answer> {
        queue_in(state, Lane::Live, groups)
    }

    fn keys(batch: &[Job]) -> Vec<u64> {
        batch.iter().map(|job| job.group.key).collect()
    }

    fn take(state: &mut State, max: usize) -> Vec<Job> {
        take_batch(state, max, 1, Instant::now())
    }

    #[test]
    fn a_batch_takes_what_is_queued_up_to_its_bound_oldest_first() {
        let mut state = State::default();
        let _answers = queue(&mut state, &[(1, 0), (2, 0), (1, 0), (3, 0), (4, 0)]);
        assert_eq!(keys(&take(&mut state, 3)), [1, 2, 1]);
        // The next task may not take groups 1 and 2 while they are written.
        assert_eq!(keys(&take(&mut state, 3)), [3, 4]);
        assert!(state.live.is_empty());
        assert_eq!(state.busy, HashSet::from([1, 2, 3, 4]));
    }

    #[test]
    fn a_group_being_written_waits_and_others_pass_it() {
        let mut state = State::default();
        let _answers = queue(&mut state, &[(1, 0)]);
        assert_eq!(keys(&take(&mut state, 8)), [1]);
        let _more = queue(&mut state, &[(1, 0), (2, 0), (1, 0)]);
        // Group 1 is busy (its room may be held by another server): group 2 goes on.
        assert_eq!(keys(&take(&mut state, 8)), [2]);
        assert!(take(&mut state, 8).is_empty());
        state.busy.remove(&1);
        assert_eq!(keys(&take(&mut state, 8)), [1, 1]);
    }

    #[test]
    fn a_batch_holds_the_groups_of_one_node() {
        let mut state = State::default();
        let _answers = queue(&mut state, &[(10, 1), (20, 2), (11, 1), (21, 2), (12, 1)]);
        assert_eq!(keys(&take(&mut state, 8)), [10, 11, 12]);
        assert_eq!(keys(&take(&mut state, 8)), [20, 21]);
    }

    #[test]
    fn jobs_whose_request_stopped_waiting_are_dropped() {
        let mut state = State::default();
        let mut answers = queue(&mut state, &[(1, 0), (2, 0), (3, 0)]);
        drop(answers.remove(1));
        assert_eq!(keys(&take(&mut state, 8)), [1, 3]);
        assert!(state.live.is_empty());
    }

    #[test]
    fn live_goes_first_and_the_background_keeps_a_floor() {
        let mut state = State::default();
        let live: Vec<(u64, i32)> = (0..10).map(|k| (k, 0)).collect();
        let background: Vec<(u64, i32)> = (100..110).map(|k| (k, 0)).collect();
        let _l = queue_in(&mut state, Lane::Live, &live);
        let _b = queue_in(&mut state, Lane::Background, &background);
        let batch = keys(&take(&mut state, 8));
        assert_eq!(batch, [0, 1, 2, 3, 4, 5, 100, 101]);
        // With no live traffic the background takes the whole batch...
        let mut state = State::default();
        let _b = queue_in(&mut state, Lane::Background, &background);
        assert_eq!(take(&mut state, 8).len(), 8);
        // ...or its share of the tasks, so that a backlog is written in parallel.
        let mut state = State::default();
        let _b = queue_in(&mut state, Lane::Background, &background);
        assert_eq!(take_batch(&mut state, 8, 2, Instant::now()).len(), 5);
        assert_eq!(take_batch(&mut state, 8, 2, Instant::now()).len(), 3);
    }

    #[test]
    fn a_held_group_is_answered_at_once_then_retried_alone() {
        let mut state = State::default();
        let now = Instant::now();
        let held = StoreError::Held(Arc::new(sqlx::Error::PoolTimedOut));
        state.held.insert(
            7,
            HeldGroup {
                until: now + Duration::from_secs(1),
                backoff: Duration::from_secs(1),
                error: held,
            },
        );
        let mut answers = queue(&mut state, &[(7, 0), (1, 0), (7, 0), (2, 0)]);
        assert_eq!(keys(&take_batch(&mut state, 8, 1, now)), [1, 2]);
        for i in [0, 2] {
            assert!(matches!(
                answers[i].try_recv(),
                Ok(Err(StoreError::Held(_)))
            ));
        }
        state.busy.clear();
        // Its wait over, the group is written in a batch of its own.
        let _more = queue(&mut state, &[(1, 0), (7, 0), (7, 0), (3, 0)]);
        let later = now + Duration::from_secs(2);
        assert_eq!(keys(&take_batch(&mut state, 8, 1, later)), [1, 3]);
        state.busy.clear();
        assert_eq!(keys(&take_batch(&mut state, 8, 1, later)), [7, 7]);
    }

    #[test]
    fn a_failed_range_splits_between_groups_and_a_held_group_stays_whole() {
        let groups = [1, 1, 1, 2, 2, 3, 3, 3];
        let held = StoreError::Held(Arc::new(sqlx::Error::PoolTimedOut));
        let refused = StoreError::Refused(Arc::new(sqlx::Error::PoolTimedOut));
        assert_eq!(split(&(0..8), &groups, &held), Some(3));
        assert_eq!(split(&(3..8), &groups, &held), Some(5));
        assert_eq!(split(&(5..8), &groups, &held), None);
        assert_eq!(split(&(5..8), &groups, &refused), Some(6));
        assert_eq!(split(&(6..7), &groups, &refused), None);
    }
}
