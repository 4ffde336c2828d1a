//! The local durable journal (docs/durability.md#the-local-journal): where callbacks go, fsync'd, when PostgreSQL cannot
//! take them, until the drain task moves them there.
//!
//! Storage is [redb](https://docs.rs/redb): an embedded, crash-safe key-value store whose
//! commits are durable on return (`Durability::Immediate`, fsync). One table maps an increasing
//! sequence number to one record; the record is the request as received (app id, query string,
//! body, arrival time), so draining re-parses it with the same code as the HTTP path.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot::{self, Sender};

const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending_callbacks");

/// redb's page cache.
const JOURNAL_CACHE_BYTES: usize = 16 << 20;

/// Record layout version, first byte of every record.
const RECORD_V1: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the journal is full ({max} bytes)")]
    Full { max: u64 },
    #[error("journal storage failed")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot open the journal at {path}")]
    Open {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("a journal record is damaged")]
    Damaged,
}

fn storage(error: impl std::error::Error + Send + Sync + 'static) -> JournalError {
    JournalError::Storage(Box::new(error))
}

/// A callback as it arrived: enough to parse it again, exactly as the HTTP path did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub sdk_app_id: i64,
    pub received_at: DateTime<Utc>,
    pub query: String,
    pub body: String,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 + 8 + 4 + self.query.len() + self.body.len());
        out.push(RECORD_V1);
        out.extend_from_slice(&self.sdk_app_id.to_le_bytes());
        out.extend_from_slice(&self.received_at.timestamp_micros().to_le_bytes());
        out.extend_from_slice(&(self.query.len() as u32).to_le_bytes());
        out.extend_from_slice(self.query.as_bytes());
        out.extend_from_slice(self.body.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, JournalError> {
        let take = |at: usize, n: usize| bytes.get(at..at + n).ok_or(JournalError::Damaged);
        if take(0, 1)? != [RECORD_V1] {
            return Err(JournalError::Damaged);
        }
        let int = |at| take(at, 8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")));
        let sdk_app_id = int(1)?;
        let received_at = DateTime::from_timestamp_micros(int(9)?).ok_or(JournalError::Damaged)?;
        let query_len = u32::from_le_bytes(take(17, 4)?.try_into().expect("4 bytes")) as usize;
        let query = take(21, query_len)?;
        let body = bytes.get(21 + query_len..).ok_or(JournalError::Damaged)?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| JournalError::Damaged);
        Ok(Self {
            sdk_app_id,
            received_at,
            query: text(query)?,
            body: text(body)?,
        })
    }
}

/// The journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    max_bytes: u64,
    /// Bytes and records pending; the bound applies to bytes.
    bytes: AtomicU64,
    depth: AtomicU64,
    /// Appends waiting for the next commit (group commit: one fsync for all of them).
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Append>,
    /// A blocking task is committing; it takes whatever is waiting before it stops.
    committing: bool,
}

/// An append's waiting caller and what to tell it.
type Answer = (Sender<Result<(), JournalError>>, Result<(), JournalError>);

struct Append {
    encoded: Vec<Vec<u8>>,
    done: oneshot::Sender<Result<(), JournalError>>,
}

impl Journal {
    /// Opens (or creates) the journal file; counts what a previous run left in it.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, JournalError> {
        let open_error = |source: Box<dyn std::error::Error + Send + Sync>| JournalError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_error(Box::new(e)))?;
        }
        // The journal is written once and read once per record: a large page cache only
        // costs memory during a long outage.
        let db = Database::builder()
            .set_cache_size(JOURNAL_CACHE_BYTES)
            .create(path)
            .map_err(|e| open_error(Box::new(e)))?;
        // Make sure the table exists, then measure it.
        let tx = db.begin_write().map_err(|e| open_error(Box::new(e)))?;
        tx.open_table(PENDING)
            .map_err(|e| open_error(Box::new(e)))?;
        tx.commit().map_err(|e| open_error(Box::new(e)))?;
        let (mut bytes, mut depth) = (0, 0);
        {
            let read = db.begin_read().map_err(|e| open_error(Box::new(e)))?;
            let table = read
                .open_table(PENDING)
                .map_err(|e| open_error(Box::new(e)))?;
            for entry in table.iter().map_err(|e| open_error(Box::new(e)))? {
                let (_, value) = entry.map_err(|e| open_error(Box::new(e)))?;
                bytes += value.value().len() as u64;
                depth += 1;
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                max_bytes,
                bytes: AtomicU64::new(bytes),
                depth: AtomicU64::new(depth),
                queue: Mutex::default(),
            }),
        })
    }

    /// Waits (bounded) until this is the last handle, so the file is closed when it is dropped:
    /// request handlers on other threads may still be letting go of theirs after a stop.
    pub async fn wait_until_sole_owner(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while Arc::strong_count(&self.inner) > 1 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }

    /// Records pending.
    pub fn depth(&self) -> u64 {
        self.inner.depth.load(Ordering::Relaxed)
    }

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

    /// Up to `limit` records, oldest first.
    pub async fn peek(&self, limit: usize) -> Result<Vec<(u64, Record)>, JournalError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let read = inner.db.begin_read().map_err(storage)?;
            let table = read.open_table(PENDING).map_err(storage)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(storage)?.take(limit) {
                let (key, value) = entry.map_err(storage)?;
                out.push((key.value(), Record::decode(value.value())?));
            }
            Ok(out)
        })
        .await
        .map_err(storage)?
    }

    /// Removes drained records (after their commit in PostgreSQL).
    pub async fn remove(&self, keys: Vec<u64>) -> Result<(), JournalError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let tx = inner.db.begin_write().map_err(storage)?;
            let (mut bytes, mut depth) = (0, 0);
            {
                let mut table = tx.open_table(PENDING).map_err(storage)?;
                for key in keys {
                    if let Some(value) = table.remove(key).map_err(storage)? {
                        bytes += value.value().len() as u64;
                        depth += 1;
                    }
                }
            }
            tx.commit().map_err(storage)?;
            inner.bytes.fetch_sub(bytes, Ordering::Relaxed);
            inner.depth.fetch_sub(depth, Ordering::Relaxed);
            Ok(())
        })
        .await
        .map_err(storage)?
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
        let result = self.write(&taken);
        for (append, _) in taken {
            let answer = result.as_ref().map(|_| ()).map_err(JournalError::again);
            answers.push((append.done, answer));
        }
        answers
    }

    /// One write transaction, one durable commit.
    fn write(&self, appends: &[(Append, u64)]) -> Result<(), JournalError> {
        let tx = self.db.begin_write().map_err(storage)?;
        let mut records = 0;
        {
            let mut table = tx.open_table(PENDING).map_err(storage)?;
            let first = table
                .last()
                .map_err(storage)?
                .map_or(0, |(k, _)| k.value() + 1);
            let encoded = appends.iter().flat_map(|(a, _)| &a.encoded);
            for (key, record) in (first..).zip(encoded) {
                table.insert(key, record.as_slice()).map_err(storage)?;
                records += 1;
            }
        }
        tx.commit().map_err(storage)?;
        let size: u64 = appends.iter().map(|(_, size)| size).sum();
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.depth.fetch_add(records, Ordering::Relaxed);
        Ok(())
    }
}

impl JournalError {
    /// The same failure, for each caller of one shared commit.
    fn again(&self) -> Self {
        match self {
            Self::Full { max } => Self::Full { max: *max },
            Self::Damaged => Self::Damaged,
            other => Self::Storage(other.to_string().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i64) -> Record {
        Record {
            sdk_app_id: 1400000001,
            received_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            query: format!("SdkAppid=1400000001&n={n}"),
            body: format!(r#"{{"n":{n},"text":"房间"}}"#),
        }
    }

    #[test]
    fn records_round_trip() {
        let r = record(7);
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        assert!(Record::decode(&[9, 9]).is_err());
        assert!(Record::decode(&r.encode()[..10]).is_err());
    }

    #[tokio::test]
    async fn survives_reopen_and_drains_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        {
            let journal = Journal::open(&path, 1 << 20).unwrap();
            journal.append(vec![record(1), record(2)]).await.unwrap();
            journal.append(vec![record(3)]).await.unwrap();
            assert_eq!(journal.depth(), 3);
        }
        let journal = Journal::open(&path, 1 << 20).unwrap();
        assert_eq!(journal.depth(), 3, "counted again after reopening");
        let pending = journal.peek(2).await.unwrap();
        assert_eq!(
            pending.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
            vec![record(1), record(2)]
        );
        journal
            .remove(pending.iter().map(|(k, _)| *k).collect())
            .await
            .unwrap();
        assert_eq!(journal.depth(), 1);
        assert_eq!(journal.peek(10).await.unwrap()[0].1, record(3));
    }

    #[tokio::test]
    async fn refuses_past_its_bound_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let one = record(1).encode().len() as u64;
        let journal = Journal::open(&dir.path().join("j.redb"), one * 2).unwrap();
        journal.append(vec![record(1)]).await.unwrap();
        journal.append(vec![record(2)]).await.unwrap();
        assert!(matches!(
            journal.append(vec![record(3)]).await,
            Err(JournalError::Full { .. })
        ));
        assert_eq!(journal.depth(), 2);
        assert_eq!(journal.peek(10).await.unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_commits_and_respect_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        // Records of equal size (three-digit numbers), so the bound is a count.
        let one = record(100).encode().len() as u64;
        let journal = Journal::open(&dir.path().join("j.redb"), one * 150).unwrap();
        let tasks: Vec<_> = (100..300)
            .map(|n| {
                let journal = journal.clone();
                tokio::spawn(async move { journal.append(vec![record(n)]).await })
            })
            .collect();
        let (mut ok, mut full) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => ok += 1,
                Err(JournalError::Full { .. }) => full += 1,
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!((ok, full), (150, 50), "exactly up to the bound");
        assert_eq!(journal.depth(), 150);
        let kept = journal.peek(1000).await.unwrap();
        assert_eq!(kept.len(), 150);
        let mut keys: Vec<u64> = kept.iter().map(|(k, _)| *k).collect();
        keys.dedup();
        assert_eq!(keys.len(), 150, "every record has its own key");
    }
}
