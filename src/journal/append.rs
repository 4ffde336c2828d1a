//! The appender: group commit. Every append that arrives while a commit is under way shares the
//! next one (one fsync for all of them); each caller is answered when its commit returns.

use std::sync::{Arc, atomic::Ordering};

use tokio::sync::oneshot::{self, Sender};

use redb::Database;

use super::{Inner, Journal, JournalError, PENDING, Record, storage};

/// An append's waiting caller and what to tell it.
type Answer = (Sender<Result<(), JournalError>>, Result<(), JournalError>);

pub(super) struct Append {
    encoded: Vec<Vec<u8>>,
    done: oneshot::Sender<Result<(), JournalError>>,
}

/// Appends waiting for the next commit.
#[derive(Default)]
pub(super) struct Queue {
    waiting: Vec<Append>,
    /// A blocking task is committing; it takes whatever is waiting before it stops.
    committing: bool,
}

impl Journal {
    /// Appends records; returns once they are on disk. Appends that arrive while a commit is
    /// under way share the next one, so N concurrent callers cost one fsync, not N. Past the
    /// bound an append is refused whole, and the others in its commit still go in.
    pub async fn append(&self, records: Vec<Record>) -> Result<(), JournalError> {
        let (done, committed) = oneshot::channel();
        let append = Append {
            encoded: records.iter().map(Record::encode).collect(),
            done,
        };
        let start_committer = {
            let mut queue = self.inner.queue.lock().expect("journal queue");
            queue.waiting.push(append);
            !std::mem::replace(&mut queue.committing, true)
        };
        if start_committer {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || inner.commit_waiting());
        }
        committed.await.map_err(storage)?
    }
}

impl Inner {
    /// Commits what is waiting, again and again, until nothing is; then stops. The last
    /// answers go out after this task has let go of the journal, so a caller that drops the
    /// last handle on its answer closes the file.
    fn commit_waiting(self: Arc<Self>) {
        let mut answers = Vec::new();
        loop {
            let batch = {
                let mut queue = self.queue.lock().expect("journal queue");
                if queue.waiting.is_empty() {
                    queue.committing = false;
                    break;
                }
                std::mem::take(&mut queue.waiting)
            };
            for (done, result) in answers.drain(..) {
                let _ = Sender::send(done, result);
            }
            answers = self.commit(batch);
        }
        drop(self);
        for (done, result) in answers {
            let _ = Sender::send(done, result);
        }
    }

    /// Commits what fits under the bound; returns each append's answer.
    fn commit(&self, batch: Vec<Append>) -> Vec<Answer> {
        // Only this task appends, so the bound check and the write agree; removals only make
        // the count smaller meanwhile.
        let mut room = self
            .max_bytes
            .saturating_sub(self.bytes.load(Ordering::Relaxed));
        let mut answers = Vec::with_capacity(batch.len());
        let mut taken = Vec::new();
        for append in batch {
            let size: u64 = append.encoded.iter().map(|r| r.len() as u64).sum();
            if size <= room {
                room -= size;
                taken.push((append, size));
            } else {
                let full = JournalError::Full {
                    max: self.max_bytes,
                };
                answers.push((append.done, Err(full)));
            }
        }
        if taken.is_empty() {
            return answers;
        }
        let result = self.with_db(|db| self.write(db, &taken));
        for (append, _) in taken {
            let answer = result.as_ref().map(|_| ()).map_err(JournalError::again);
            answers.push((append.done, answer));
        }
        answers
    }

    /// One write transaction, one durable commit.
    fn write(&self, db: &Database, appends: &[(Append, u64)]) -> Result<(), JournalError> {
        let tx = db.begin_write().map_err(storage)?;
        let first = self.next_key.load(Ordering::Relaxed);
        let mut records = 0;
        {
            let mut table = tx.open_table(PENDING).map_err(storage)?;
            let encoded = appends.iter().flat_map(|(a, _)| &a.encoded);
            for (key, record) in (first..).zip(encoded) {
                table.insert(key, record.as_slice()).map_err(storage)?;
                records += 1;
            }
        }
        tx.commit().map_err(storage)?;
        // Only after the commit: a failed one is counted again by the reopen.
        self.next_key.fetch_add(records, Ordering::Relaxed);
        let size: u64 = appends.iter().map(|(_, size)| size).sum();
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.depth.fetch_add(records, Ordering::Relaxed);
        self.appended.notify_one();
        Ok(())
    }
}
