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

use super::{Outcome, StoreError, apply_batch};
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
        metrics: Arc<Metrics>,
    ) -> (Self, JoinSet<()>) {
        let (queue, receiver) = mpsc::channel(options.max_batch * options.tasks * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        let mut tasks = JoinSet::new();
        for _ in 0..options.tasks {
            let (pool, receiver, metrics) = (pool.clone(), receiver.clone(), metrics.clone());
            let max_batch = options.max_batch;
            tasks.spawn(async move {
                while let Some(batch) = next_batch(&receiver, max_batch).await {
                    commit_batch(&pool, batch, &metrics).await;
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

async fn commit_batch(pool: &PgPool, batch: Vec<Job>, metrics: &Metrics) {
    let callbacks: Vec<&Callback> = batch.iter().map(|job| &job.callback).collect();
    metrics.batch_size.observe(batch.len() as f64);
    match write_batch(pool, &callbacks).await {
        Ok(outcomes) => {
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                let _ = job.reply.send(Ok(outcome));
            }
        }
        // One bad callback must not fail the others: retry each on its own. When the database
        // is unreachable that would only multiply the wait.
        Err(error) if batch.len() > 1 && !error.is_outage() => {
            tracing::warn!(error = ?error, size = batch.len(), "batch failed, retrying one by one");
            for job in batch {
                let result = write_batch(pool, &[&job.callback])
                    .await
                    .map(|mut o| o.remove(0));
                let _ = job.reply.send(result);
            }
        }
        Err(error) => {
            for job in batch {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
    }
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
    let classify = |error| StoreError::on_pool(error, pool);
    let mut tx = pool.begin().await.map_err(classify)?;
    let applied = apply_batch(&mut tx, &sorted).await.map_err(classify)?;
    tx.commit().await.map_err(classify)?;
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
