//! Group commit: callbacks that arrive together are written in one transaction, and each is
//! answered only after the commit that holds it.
//!
//! A few writer tasks share one queue. A task takes whatever is queued (up to a bound) as its
//! batch, so an idle server commits a lone callback at once and a busy one commits many per
//! transaction.

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio::{
    sync::{Mutex, mpsc, oneshot},
    task::JoinSet,
};

use super::{Health, Outcome, StoreError, apply_batch};
use crate::{callback::Callback, telemetry::Metrics};

#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Most callbacks in one transaction.
    pub max_batch: usize,
    /// Transactions in flight at once.
    pub tasks: usize,
    /// How long a request waits for its commit before it is answered 503.
    pub timeout: Duration,
}

struct Job {
    callback: Callback,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// The handle requests use; the tasks stop once every handle is dropped and the queue is empty.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
    timeout: Duration,
}

impl Writer {
    pub fn spawn(
        pool: PgPool,
        options: WriterOptions,
        health: Health,
        metrics: Arc<Metrics>,
    ) -> (Self, JoinSet<()>) {
        let (queue, receiver) = mpsc::channel(options.max_batch * options.tasks * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        let mut tasks = JoinSet::new();
        for _ in 0..options.tasks {
            let (pool, receiver, metrics) = (pool.clone(), receiver.clone(), metrics.clone());
            let (max_batch, health) = (options.max_batch, health.clone());
            tasks.spawn(async move {
                while let Some(batch) = next_batch(&receiver, max_batch).await {
                    commit_batch(&pool, batch, &health, &metrics).await;
                }
            });
        }
        (
            Self {
                queue,
                timeout: options.timeout,
            },
            tasks,
        )
    }

    /// Stores one callback; returns once it is committed (or failed).
    pub async fn submit(&self, callback: Callback) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { callback, reply };
        let wait = async {
            self.queue.send(job).await.map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        };
        tokio::time::timeout(self.timeout, wait)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }
}

/// The next batch: whatever is queued, up to `max_batch`. A job whose request stopped waiting
/// (it timed out, so the callback went to the journal) is left out: writing it here too would
/// only add work when the database is already slow. (One that started before its request gave
/// up is written twice; the history's dedup key makes the second a no-op.)
async fn next_batch(receiver: &Mutex<mpsc::Receiver<Job>>, max_batch: usize) -> Option<Vec<Job>> {
    let mut receiver = receiver.lock().await;
    let mut batch = Vec::new();
    while batch.is_empty() {
        let first = receiver.recv().await?;
        if !first.reply.is_closed() {
            batch.push(first);
        }
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(job) if job.reply.is_closed() => {}
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
    }
    Some(batch)
}

async fn commit_batch(pool: &PgPool, batch: Vec<Job>, health: &Health, metrics: &Metrics) {
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
    let results = write_isolating(pool, &callbacks).await;
    for (job, result) in batch.into_iter().zip(results) {
        let _ = job.reply.send(result);
    }
}

/// Writes callbacks, in as few transactions as their failures allow: the whole batch first;
/// when it fails because of what is in it, each half on its own, and so on, so that one
/// callback PostgreSQL does not take fails alone and its neighbours are stored (a few bad ones
/// in a batch of n cost about 2·log2(n) transactions each, not n). An error that concerns the
/// server, not the records, answers every callback not yet written. Results in the order given.
pub async fn write_isolating(
    pool: &PgPool,
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
        match write_batch(pool, &callbacks[range.clone()]).await {
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
    let mut order: Vec<usize> = (0..callbacks.len()).collect();
    order.sort_by(|&a, &b| lock_order(callbacks[a]).cmp(&lock_order(callbacks[b])));
    let sorted: Vec<&Callback> = order.iter().map(|&i| callbacks[i]).collect();
    let mut tx = pool.begin().await?;
    let applied = apply_batch(&mut tx, &sorted).await?;
    tx.commit().await?;
    let mut outcomes = vec![Outcome::Duplicate; callbacks.len()];
    for (i, outcome) in order.into_iter().zip(applied) {
        outcomes[i] = outcome;
    }
    Ok(outcomes)
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

/// Which of `groups` concurrent writers takes `callback`: all callbacks of one room (and every
/// copy of one callback) go to the same one, so concurrent transactions never wait on each
/// other's room locks or history keys.
pub fn room_group(callback: &Callback, groups: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match lock_order(callback) {
        (false, app, Some(room), _) => (app, room).hash(&mut hasher),
        (.., key) => key.hash(&mut hasher),
    }
    (hasher.finish() % groups as u64) as usize
}
