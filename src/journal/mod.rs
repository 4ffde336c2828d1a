//! The local durable journal (docs/durability.md#the-local-journal): where callbacks go, fsync'd,
//! when PostgreSQL cannot take them, until the drain moves them there.
//!
//! Storage is [redb](https://docs.rs/redb): an embedded, crash-safe key-value store whose
//! commits are durable on return (`Durability::Immediate`, fsync). The journal is a queue of
//! records, each in one of two states (docs/durability.md#records-and-their-state):
//!
//! - **pending** (table `pending_callbacks`): waiting for the drain, oldest first;
//! - **parked** (table `parked_callbacks`): PostgreSQL did not take it when it was tried alone;
//!   kept with its error, attempt count and next attempt time, and tried again with backoff for
//!   as long as it takes.
//!
//! It hands out three faces: the appender ([`Journal::append`], group commit, `append.rs`), the
//! [`Reader`] (the drain's one consumer: cursor, acknowledgements, parking, removal,
//! `reader.rs`) and the [`operator`] inspector (`roomsync journal`). This file holds the file
//! and its tables.
//!
//! A record is the request as received (app id, query string, body, arrival time), so draining
//! re-parses it with the same code as the HTTP path. Keys increase for the life of the process.
//!
//! After an I/O error (a full disk) redb refuses every further operation until the file is
//! opened again: the journal notices, reopens it at the next operation (reading, which needs no
//! space), and counts again.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::DateTime;
use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition};

mod append;
pub mod operator;
mod reader;
mod record;
mod tables;

use tables::DueIndex;

pub use reader::Reader;
pub use record::{Entry, PARK_BACKOFF_MAX, Parked, Record};

const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending_callbacks");
const PARKED: TableDefinition<u64, &[u8]> = TableDefinition::new("parked_callbacks");

/// redb's page cache.
const JOURNAL_CACHE_BYTES: usize = 16 << 20;

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
    #[error("a journal record is damaged or of a layout this version does not know")]
    Damaged,
}

fn storage(error: impl std::error::Error + Send + Sync + 'static) -> JournalError {
    JournalError::Storage(Box::new(error))
}

/// The journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` only while it is being reopened, or after a reopen failed.
    db: RwLock<Option<Database>>,
    /// An operation failed in storage: reopen before the next one (redb refuses everything
    /// after an I/O error until then).
    broken: AtomicBool,
    max_bytes: u64,
    /// Bytes and records held (pending and parked); the bound applies to bytes.
    bytes: AtomicU64,
    depth: AtomicU64,
    parked: AtomicU64,
    /// The next key to give: above every key ever given in this process, so a reader that
    /// walks forward from a key never misses a later append.
    next_key: AtomicU64,
    /// Parked records by due time, so the due ones are found without reading the table.
    due: Mutex<DueIndex>,
    /// Appends waiting for the next commit (group commit: one fsync for all of them).
    queue: Mutex<append::Queue>,
    /// Woken by every append (the reader waits on it).
    appended: tokio::sync::Notify,
    /// Test hook: removals fail as on a full disk.
    #[cfg(test)]
    fail_removals: AtomicBool,
}

/// What a file holds, counted when it is opened.
struct Counts {
    bytes: u64,
    depth: u64,
    parked: u64,
    next_key: u64,
    due: DueIndex,
}

fn builder() -> redb::Builder {
    let mut builder = Database::builder();
    // The journal is written once and read once per record: a large page cache only costs
    // memory during a long outage. One writer process; `roomsync journal list` may read beside
    // it.
    builder
        .set_cache_size(JOURNAL_CACHE_BYTES)
        .set_concurrency_mode(ConcurrencyMode::SingleWriter);
    builder
}

/// Opens (or creates) the file with both tables, and counts what it holds. Creates the tables
/// only when they are missing: a reopen on a full disk must not need space.
fn open_file(path: &Path) -> Result<(Database, Counts), JournalError> {
    let open_error = |source: Box<dyn std::error::Error + Send + Sync>| JournalError::Open {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| open_error(Box::new(e)))?;
    }
    let db = builder()
        .create(path)
        .map_err(|e| open_error(Box::new(e)))?;
    let exist = {
        let read = db.begin_read().map_err(|e| open_error(Box::new(e)))?;
        read.open_table(PENDING).is_ok() && read.open_table(PARKED).is_ok()
    };
    if !exist {
        let tx = db.begin_write().map_err(|e| open_error(Box::new(e)))?;
        tx.open_table(PENDING)
            .map_err(|e| open_error(Box::new(e)))?;
        tx.open_table(PARKED).map_err(|e| open_error(Box::new(e)))?;
        tx.commit().map_err(|e| open_error(Box::new(e)))?;
    }
    let counts = count(&db).map_err(|e| open_error(Box::new(e)))?;
    Ok((db, counts))
}

fn count(db: &Database) -> Result<Counts, JournalError> {
    let read = db.begin_read().map_err(storage)?;
    let mut counts = Counts {
        bytes: 0,
        depth: 0,
        parked: 0,
        next_key: 0,
        due: DueIndex::default(),
    };
    for (definition, parked) in [(PENDING, false), (PARKED, true)] {
        let table = read.open_table(definition).map_err(storage)?;
        for entry in table.iter().map_err(storage)? {
            let (key, value) = entry.map_err(storage)?;
            counts.bytes += value.value().len() as u64;
            counts.depth += 1;
            counts.parked += u64::from(parked);
            counts.next_key = counts.next_key.max(key.value() + 1);
            if parked {
                // One it cannot decode is due at once: the reader reports it.
                let due = Parked::decode(value.value())
                    .map_or(DateTime::UNIX_EPOCH, |(p, _)| p.next_attempt_at);
                counts.due.set(key.value(), due);
            }
        }
    }
    Ok(counts)
}

impl Journal {
    /// Opens (or creates) the journal file; counts what a previous run left in it.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, JournalError> {
        let (db, counts) = open_file(path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                db: RwLock::new(Some(db)),
                broken: AtomicBool::new(false),
                max_bytes,
                bytes: AtomicU64::new(counts.bytes),
                depth: AtomicU64::new(counts.depth),
                parked: AtomicU64::new(counts.parked),
                next_key: AtomicU64::new(counts.next_key),
                due: Mutex::new(counts.due),
                queue: Mutex::default(),
                appended: tokio::sync::Notify::new(),
                #[cfg(test)]
                fail_removals: AtomicBool::new(false),
            }),
        })
    }

    /// Waits (bounded) until this is the last handle, so the file is closed when it is dropped:
    /// request handlers on other threads may still be letting go of theirs after a stop.
    pub async fn wait_until_sole_owner(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while Arc::strong_count(&self.inner) > 1 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Records held, pending and parked.
    pub fn depth(&self) -> u64 {
        self.inner.depth.load(Ordering::Relaxed)
    }

    /// Records parked.
    pub fn parked(&self) -> u64 {
        self.inner.parked.load(Ordering::Relaxed)
    }

    /// Resolves at the next append after it is called (a future made before a read misses
    /// none: `Notify` keeps one permit).
    pub(crate) async fn appended(&self) {
        self.inner.appended.notified().await;
    }

    #[cfg(test)]
    fn fail_removals(&self, fail: bool) {
        self.inner.fail_removals.store(fail, Ordering::Relaxed);
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(storage)?
    }
}

impl Inner {
    /// Runs `f` on the open file; reopens it first if an earlier operation broke it. A storage
    /// failure in `f` marks it broken.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        if self.broken.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let guard = self.db.read().expect("journal lock");
        let db = guard
            .as_ref()
            .ok_or_else(|| JournalError::Storage("the journal file is not open".into()))?;
        let result = f(db);
        if matches!(result, Err(JournalError::Storage(_))) {
            self.broken.store(true, Ordering::Release);
        }
        result
    }

    /// Closes and opens the file again (redb repairs it if needed), and counts what it holds:
    /// a commit that failed may or may not have reached the disk.
    fn reopen(&self) -> Result<(), JournalError> {
        let mut guard = self.db.write().expect("journal lock");
        if !self.broken.load(Ordering::Acquire) {
            return Ok(()); // another thread did it meanwhile
        }
        if let Some(old) = guard.take() {
            // It failed already; what matters is that the file and its lock are let go.
            let _ = old.close();
        }
        let (db, counts) = open_file(&self.path)?;
        self.bytes.store(counts.bytes, Ordering::Relaxed);
        self.depth.store(counts.depth, Ordering::Relaxed);
        self.parked.store(counts.parked, Ordering::Relaxed);
        self.next_key.fetch_max(counts.next_key, Ordering::Relaxed);
        *self.due.lock().expect("journal due index") = counts.due;
        *guard = Some(db);
        self.broken.store(false, Ordering::Release);
        tracing::info!(path = %self.path.display(), depth = counts.depth, "journal reopened after a storage error");
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
    use chrono::Utc;

    use record::test_record as record;

    fn keys(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.key).collect()
    }

    #[test]
    fn records_round_trip() {
        let r = record(7);
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        assert!(Record::decode(&[9, 9]).is_err());
        assert!(Record::decode(&r.encode()[..10]).is_err());
    }

    #[test]
    fn parked_state_round_trips_and_backs_off_to_its_cap() {
        let now = DateTime::from_timestamp_micros(1_700_000_000_000_000).unwrap();
        let first = Parked::after_failure(None, "P0001: no".into(), now);
        assert_eq!(first.attempts, 1);
        assert_eq!(first.next_attempt_at - now, chrono::Duration::seconds(1));
        let second = Parked::after_failure(Some(&first), "again".into(), now);
        assert_eq!((second.attempts, second.first_failed_at), (2, now));
        assert_eq!(second.next_attempt_at - now, chrono::Duration::seconds(2));
        let mut late = second.clone();
        for _ in 0..40 {
            late = Parked::after_failure(Some(&late), "still".into(), now);
        }
        assert_eq!(late.next_attempt_at - now, chrono::Duration::seconds(60));
        let encoded = late.encode(&record(3).encode());
        let (decoded, inner) = Parked::decode(&encoded).unwrap();
        assert_eq!(decoded, late);
        assert_eq!(Record::decode(inner).unwrap(), record(3));
        assert!(Parked::decode(&encoded[..20]).is_err());
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
        let pending = journal.pending_after(None, 2, usize::MAX).await.unwrap();
        assert_eq!(
            pending.iter().map(|e| e.record.clone()).collect::<Vec<_>>(),
            vec![record(1), record(2)]
        );
        journal.remove(keys(&pending)).await.unwrap();
        assert_eq!(journal.depth(), 1);
        assert_eq!(
            journal.pending_after(None, 10, usize::MAX).await.unwrap()[0].record,
            record(3)
        );
    }

    #[tokio::test]
    async fn keys_keep_growing_after_the_journal_empties() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j.redb"), 1 << 20).unwrap();
        journal.append(vec![record(1)]).await.unwrap();
        let first = journal.pending_after(None, 10, usize::MAX).await.unwrap();
        journal.remove(keys(&first)).await.unwrap();
        journal.append(vec![record(2)]).await.unwrap();
        // A reader that walked past the first key still finds the second record.
        let next = journal
            .pending_after(Some(first[0].key), 10, usize::MAX)
            .await
            .unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].record, record(2));
    }

    #[tokio::test]
    async fn parked_records_leave_the_pending_queue_and_keep_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let journal = Journal::open(&path, 1 << 20).unwrap();
        journal
            .append(vec![record(1), record(2), record(3)])
            .await
            .unwrap();
        let all = journal.pending_after(None, 10, usize::MAX).await.unwrap();
        // Whole microseconds: what the journal stores.
        let now = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
        journal
            .park(vec![(all[1].key, "P0001: not now".into())], now)
            .await
            .unwrap();
        assert_eq!((journal.depth(), journal.parked()), (3, 1));
        assert_eq!(
            keys(&journal.pending_after(None, 10, usize::MAX).await.unwrap()),
            vec![all[0].key, all[2].key]
        );
        assert!(
            journal
                .parked_entries(Some(now), 10)
                .await
                .unwrap()
                .is_empty()
        );
        let later = now + chrono::Duration::seconds(2);
        let due = journal.parked_entries(Some(later), 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].record, record(2));
        assert_eq!(due[0].parked.as_ref().unwrap().error, "P0001: not now");
        // A second failure counts one more attempt.
        journal
            .park(vec![(all[1].key, "P0001: still".into())], later)
            .await
            .unwrap();
        let again = journal.parked_entries(None, 10).await.unwrap();
        assert_eq!(again[0].parked.as_ref().unwrap().attempts, 2);
        assert_eq!(
            journal.next_parked_due(),
            Some(later + chrono::Duration::seconds(2))
        );
        // Counted the same after a reopen.
        let bytes = journal.inner.bytes.load(Ordering::Relaxed);
        drop(journal);
        let journal = Journal::open(&path, 1 << 20).unwrap();
        assert_eq!((journal.depth(), journal.parked()), (3, 1));
        assert_eq!(journal.inner.bytes.load(Ordering::Relaxed), bytes);
        journal.remove(vec![all[1].key]).await.unwrap();
        assert_eq!((journal.depth(), journal.parked()), (2, 0));
    }

    #[tokio::test]
    async fn the_operator_reads_beside_the_service_and_retries_once_it_has_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let journal = Journal::open(&path, 1 << 20).unwrap();
        journal.append(vec![record(1), record(2)]).await.unwrap();
        let all = journal.pending_after(None, 10, usize::MAX).await.unwrap();
        journal
            .park(
                vec![(all[0].key, "42501: permission denied".into())],
                Utc::now(),
            )
            .await
            .unwrap();
        let listing = operator::list(&path).unwrap();
        assert_eq!(
            (keys(&listing.parked), listing.pending),
            (vec![all[0].key], 1)
        );
        assert!(listing.unreadable.is_empty());
        let one = operator::get(&path, all[0].key).unwrap().unwrap();
        assert_eq!(one.record, record(1));
        assert!(operator::get(&path, 999).unwrap().is_none());
        assert!(
            operator::retry_now(&path, None).is_err(),
            "the running service has the file"
        );
        drop(journal);
        assert_eq!(operator::retry_now(&path, None).unwrap(), 1);
        let journal = Journal::open(&path, 1 << 20).unwrap();
        assert_eq!(
            journal
                .parked_entries(Some(Utc::now()), 10)
                .await
                .unwrap()
                .len(),
            1,
            "due now"
        );
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
        assert_eq!(
            journal
                .pending_after(None, 10, usize::MAX)
                .await
                .unwrap()
                .len(),
            2
        );
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
        let kept = journal.pending_after(None, 1000, usize::MAX).await.unwrap();
        assert_eq!(kept.len(), 150);
        let mut keys = keys(&kept);
        keys.dedup();
        assert_eq!(keys.len(), 150, "every record has its own key");
    }
}
