//! Group commit: callbacks that arrive together are written in one transaction, and each is
//! answered only after the commit that holds it.
//!
//! A few writer tasks share one queue. A task takes what is queued (up to a bound) as its
//! batch, so an idle server commits a lone callback at once and a busy one commits many per
//! transaction: batches grow with the queue. Each callback has a [`Group`] (its room, or on
//! Citus its shard and node): a task takes only callbacks whose group no other task is
//! writing, and on Citus only those of one node. So a process's transactions never wait on
//! each other's room locks, a room held elsewhere (another process, a drift-repair
//! correction) stalls only its own group, and Citus commits every batch in one phase.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::{PgConnection, PgPool, Postgres, pool::PoolConnection};
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot},
    task::JoinSet,
};

use super::layout::{Group, SharedLayout};
use super::{Dialect, Health, Outcome, StoreError, apply_batch};
use crate::{callback::Callback, telemetry::Metrics};

/// How often the writers reread the room tables' distribution (a rebalance moves shards).
const LAYOUT_REFRESH: Duration = Duration::from_secs(10);
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
    /// How long a request waits for its commit before it is answered 503.
    pub timeout: Duration,
    /// Whether a task keeps its connection from one batch to the next ([`Held`]); false when
    /// the tasks would hold every connection of the pool.
    pub hold: bool,
}

struct Job {
    callback: Callback,
    group: Group,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
    /// A place in the bounded queue, given back when the job is answered.
    _place: OwnedSemaphorePermit,
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
    jobs: VecDeque<Job>,
    busy: HashSet<u64>,
    closed: bool,
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

/// The handle requests use; the tasks stop once every handle is dropped and the queue is empty.
#[derive(Clone)]
pub struct Writer {
    queue: Arc<Queue>,
    _closer: Arc<Closer>,
    layout: SharedLayout,
    timeout: Duration,
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
        let mut tasks = JoinSet::new();
        for _ in 0..options.tasks {
            let (pool, queue, metrics) = (pool.clone(), queue.clone(), metrics.clone());
            let (max_batch, health, layout) = (options.max_batch, health.clone(), layout.clone());
            let hold = options.hold;
            tasks.spawn(async move {
                let mut conn = Held::new(&pool);
                loop {
                    let batch = match tokio::time::timeout(HOLD_IDLE, next_batch(&queue, max_batch))
                        .await
                    {
                        Ok(batch) => batch,
                        // Idle: the connection goes back to the pool for others.
                        Err(_) => {
                            conn.give_back();
                            next_batch(&queue, max_batch).await
                        }
                    };
                    let Some(batch) = batch else { break };
                    let groups: Vec<u64> = batch.iter().map(|job| job.group.key).collect();
                    let known = layout.get().dialect();
                    commit_batch(&mut conn, known, batch, &health, &metrics).await;
                    if !hold || conn.held_for() > HOLD_MAX {
                        conn.give_back();
                    }
                    release(&queue, &groups);
                }
            });
        }
        let writer = Self {
            queue: queue.clone(),
            _closer: Arc::new(Closer(queue.clone())),
            layout: layout.clone(),
            timeout: options.timeout,
        };
        // Reads the layout until the writer closes; it is only a hint, so callbacks do not
        // wait for the first read.
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
                    _ = tokio::time::sleep(LAYOUT_REFRESH) => {}
                }
            }
        });
        (writer, tasks)
    }

    /// The room tables' distribution as last read, for writers outside this queue (the drain).
    pub fn layout(&self) -> &SharedLayout {
        &self.layout
    }

    /// Stores one callback; returns once it is committed (or failed).
    pub async fn submit(&self, callback: Callback) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let group = self.layout.get().group(&callback);
        let wait = async {
            let place = (self.queue.places.clone().acquire_owned().await)
                .map_err(|_| StoreError::Closed)?;
            {
                let mut state = self.queue.state.lock().expect("writer queue");
                state.jobs.push_back(Job {
                    callback,
                    group,
                    reply,
                    _place: place,
                });
            }
            self.queue.changed.notify_waiters();
            answer.await.map_err(|_| StoreError::Closed)?
        };
        tokio::time::timeout(self.timeout, wait)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }
}

/// The next batch: queued jobs, oldest first, whose groups no other task is writing, all of
/// the first one's node, up to `max_batch`; their groups are marked busy. A job whose request
/// stopped waiting (it timed out, so the callback went to the journal) is dropped: writing it
/// here too would only add work when the database is already slow. (One that started before
/// its request gave up is written twice; the history's dedup key makes the second a no-op.)
/// `None` once the writer is closed and the queue is empty.
async fn next_batch(queue: &Queue, max_batch: usize) -> Option<Vec<Job>> {
    loop {
        let changed = queue.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        {
            let mut state = queue.state.lock().expect("writer queue");
            let batch = take_batch(&mut state, max_batch);
            if !batch.is_empty() {
                return Some(batch);
            }
            if state.closed && state.jobs.is_empty() {
                return None;
            }
        }
        changed.await;
    }
}

fn take_batch(state: &mut State, max_batch: usize) -> Vec<Job> {
    let State { jobs, busy, .. } = state;
    jobs.retain(|job| !job.reply.is_closed());
    let mut node = None;
    let mut mine: HashSet<u64> = HashSet::new();
    let mut batch = Vec::new();
    let mut left = VecDeque::with_capacity(jobs.len());
    for job in jobs.drain(..) {
        let group = job.group;
        let fits = batch.len() < max_batch
            && node.is_none_or(|n| n == group.node)
            && (mine.contains(&group.key) || !busy.contains(&group.key));
        if fits {
            node = Some(group.node);
            mine.insert(group.key);
            batch.push(job);
        } else {
            left.push_back(job);
        }
    }
    *jobs = left;
    busy.extend(mine);
    batch
}

fn release(queue: &Queue, groups: &[u64]) {
    {
        let mut state = queue.state.lock().expect("writer queue");
        for group in groups {
            state.busy.remove(group);
        }
    }
    queue.changed.notify_waiters();
}

async fn commit_batch(
    conn: &mut Held,
    known: Option<Dialect>,
    batch: Vec<Job>,
    health: &Health,
    metrics: &Metrics,
) {
    // Found down meanwhile: these go to the journal now, not after a connection timeout.
    if !health.is_up() {
        let down = StoreError::Unavailable(Arc::new(sqlx::Error::PoolClosed));
        for job in batch {
            let _ = job.reply.send(Err(down.clone()));
        }
        return;
    }
    let callbacks: Vec<&Callback> = batch.iter().map(|job| &job.callback).collect();
    metrics.batch_size.observe(batch.len() as f64);
    let results = write_isolating(conn, known, &callbacks).await;
    for (job, result) in batch.into_iter().zip(results) {
        let _ = job.reply.send(result);
    }
}

/// Writes callbacks, in as few transactions as their failures allow: the whole batch first;
/// when it fails because of what is in it, each half on its own, and so on, so that one
/// callback PostgreSQL does not take fails alone and its neighbours are stored (a few bad ones
/// in a batch of n cost about 2·log2(n) transactions each, not n). An error that concerns the
/// server, not the records, answers every callback not yet written. Results in the order given.
/// `known`: the database's form, if known ([`apply_batch`]).
pub async fn write_isolating(
    conn: &mut Held,
    known: Option<Dialect>,
    callbacks: &[&Callback],
) -> Vec<Result<Outcome, StoreError>> {
    let mut results: Vec<Option<Result<Outcome, StoreError>>> = vec![None; callbacks.len()];
    // Ranges still to write, the next one last.
    let mut todo = Vec::with_capacity(16);
    todo.push(0..callbacks.len());
    while let Some(range) = todo.pop() {
        if range.is_empty() {
            continue;
        }
        match write_batch_as(conn, known, &callbacks[range.clone()]).await {
            Ok(outcomes) => {
                for (slot, outcome) in results[range].iter_mut().zip(outcomes) {
                    *slot = Some(Ok(outcome));
                }
            }
            Err(error) if range.len() > 1 && error.is_about_the_records() => {
                let middle = range.start + range.len() / 2;
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

/// Writes callbacks in one transaction; outcomes in the order given. Rooms are locked in one
/// global order, so concurrent batches (from any process) cannot deadlock.
pub async fn write_batch(
    pool: &PgPool,
    callbacks: &[&Callback],
) -> Result<Vec<Outcome>, StoreError> {
    write_batch_as(&mut Held::new(pool), None, callbacks).await
}

/// [`write_batch`], on `conn`, in the database's form when the caller knows it.
pub async fn write_batch_as(
    conn: &mut Held,
    known: Option<Dialect>,
    callbacks: &[&Callback],
) -> Result<Vec<Outcome>, StoreError> {
    let mut order: Vec<usize> = (0..callbacks.len()).collect();
    order.sort_by(|&a, &b| lock_order(callbacks[a]).cmp(&lock_order(callbacks[b])));
    let sorted: Vec<&Callback> = order.iter().map(|&i| callbacks[i]).collect();
    let applied = async {
        let mut tx = sqlx::Connection::begin(conn.get().await?).await?;
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
pub struct Held {
    pool: PgPool,
    conn: Option<(PoolConnection<Postgres>, Instant)>,
}

impl Held {
    pub fn new(pool: &PgPool) -> Self {
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
    pub fn give_back(&mut self) {
        self.conn = None;
    }
}

fn lock_order(callback: &Callback) -> (bool, i64, Option<&str>, &[u8; 32]) {
    // Callbacks without a room lock no room; they go last, in dedup-key order (the order in
    // which their history rows' unique keys are taken).
    let room = callback
        .room_id
        .as_ref()
        .filter(|_| callback.event.changes_state());
    (
        room.is_none(),
        callback.sdk_app_id.get(),
        room.map(|r| r.as_str()),
        &callback.dedup_key,
    )
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

    /// Queues jobs of the given (key, node) groups; returns the answer ends (drop one to make
    /// its request stop waiting).
    fn queue(
        state: &mut State,
        groups: &[(u64, i32)],
    ) -> Vec<oneshot::Receiver<Result<Outcome, StoreError>>> {
        let places = Arc::new(Semaphore::new(groups.len()));
        groups
            .iter()
            .enumerate()
            .map(|(i, &(key, node))| {
                let (reply, answer) = oneshot::channel();
                state.jobs.push_back(Job {
                    callback: callback("r", i as i64 + 1),
                    group: Group { key, node },
                    reply,
                    _place: places.clone().try_acquire_owned().unwrap(),
                });
                answer
            })
            .collect()
    }

    fn keys(batch: &[Job]) -> Vec<u64> {
        batch.iter().map(|job| job.group.key).collect()
    }

    #[test]
    fn a_batch_takes_what_is_queued_up_to_its_bound_oldest_first() {
        let mut state = State::default();
        let _answers = queue(&mut state, &[(1, 0), (2, 0), (1, 0), (3, 0), (4, 0)]);
        assert_eq!(keys(&take_batch(&mut state, 3)), [1, 2, 1]);
        // The next task may not take groups 1 and 2 while they are written.
        assert_eq!(keys(&take_batch(&mut state, 3)), [3, 4]);
        assert!(state.jobs.is_empty());
        assert_eq!(state.busy, HashSet::from([1, 2, 3, 4]));
    }

    #[test]
    fn a_group_being_written_waits_and_others_pass_it() {
        let mut state = State::default();
        let _answers = queue(&mut state, &[(1, 0)]);
        assert_eq!(keys(&take_batch(&mut state, 8)), [1]);
        let _more = queue(&mut state, &[(1, 0), (2, 0), (1, 0)]);
        // Group 1 is busy (its room may be held by another server): group 2 goes on.
        assert_eq!(keys(&take_batch(&mut state, 8)), [2]);
        assert!(take_batch(&mut state, 8).is_empty());
        state.busy.remove(&1);
        assert_eq!(keys(&take_batch(&mut state, 8)), [1, 1]);
    }

    #[test]
    fn a_batch_holds_the_groups_of_one_node() {
        let mut state = State::default();
        let _answers = queue(&mut state, &[(10, 1), (20, 2), (11, 1), (21, 2), (12, 1)]);
        assert_eq!(keys(&take_batch(&mut state, 8)), [10, 11, 12]);
        assert_eq!(keys(&take_batch(&mut state, 8)), [20, 21]);
    }

    #[test]
    fn jobs_whose_request_stopped_waiting_are_dropped() {
        let mut state = State::default();
        let mut answers = queue(&mut state, &[(1, 0), (2, 0), (3, 0)]);
        drop(answers.remove(1));
        assert_eq!(keys(&take_batch(&mut state, 8)), [1, 3]);
        assert!(state.jobs.is_empty());
    }
}
