//! The journal's one consumer (docs/durability.md#draining): hands out batches of records, and
//! takes each back as applied (acknowledged) or parked. It owns the reading protocol: the
//! cursor, the records applied but not yet removed, the removal in the background, the
//! records this version cannot decode, and the due parked records.
//!
//! The protocol's promise: a record acknowledged is never handed out again by this reader,
//! whether or not its removal has reached the disk yet; a removal that fails (a full disk) is
//! retried later and never stops reading; a record that does not decode is set aside (kept in
//! the file for the operator and for a newer version) and never stops the others. After a
//! crash between a commit in PostgreSQL and the removal, the record is handed out again at the
//! next start, and the history's dedup key makes that a no-op.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use super::{Entry, Journal, JournalError};

/// A removal under way: the keys it removes, and its result.
type Removal = JoinHandle<(Vec<u64>, Result<(), JournalError>)>;

pub struct Reader {
    journal: Journal,
    /// The last key looked at: the next read starts after it. `None`: from the oldest.
    cursor: Option<u64>,
    /// Acknowledged, not yet removed from the file.
    applied: HashSet<u64>,
    /// The removal started last, if it has not been looked at since.
    removal: Option<Removal>,
    /// Records that do not decode: left where they are, never handed out.
    unreadable: BTreeSet<u64>,
    /// The last removal failed: the time to try again is the drain's.
    removal_failed: bool,
}

/// One batch, and what the read met besides.
#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<Entry>,
    /// Records found undecodable by this read (their keys; they are set aside).
    pub unreadable: Vec<u64>,
}

impl Reader {
    pub fn new(journal: Journal) -> Self {
        Self {
            journal,
            cursor: None,
            applied: HashSet::new(),
            removal: None,
            unreadable: BTreeSet::new(),
            removal_failed: false,
        }
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Records still to be handed out or waiting in the parked table: the journal's depth less
    /// what is applied (removal pending) and what cannot be decoded.
    pub fn outstanding(&self) -> u64 {
        let set_aside = (self.applied.len() + self.unreadable.len()) as u64;
        self.journal.depth().saturating_sub(set_aside)
    }

    /// Records this version cannot decode, set aside.
    pub fn unreadable(&self) -> u64 {
        self.unreadable.len() as u64
    }

    /// Applied records whose removal has not reached the file yet.
    pub fn awaiting_removal(&self) -> u64 {
        self.applied.len() as u64
    }

    /// Whether a failed removal waits to be tried again.
    pub fn removal_failed(&self) -> bool {
        self.removal_failed && !self.applied.is_empty()
    }

    /// The next batch: pending records after the cursor, then the parked ones due at `now`,
    /// up to `limit` records (or about `max_bytes`). Empty when nothing is to be done now: the
    /// cursor then starts again from the oldest. A storage error fails this read only; the
    /// next read tries again (the file is reopened).
    pub async fn next(
        &mut self,
        limit: usize,
        max_bytes: usize,
        now: DateTime<Utc>,
    ) -> Result<Batch, JournalError> {
        self.look_at_removal().await;
        let skip: Arc<HashSet<u64>> = Arc::new(
            self.applied
                .iter()
                .chain(self.unreadable.iter())
                .copied()
                .collect(),
        );
        let mut batch = Batch::default();
        let read = self
            .journal
            .read_pending(self.cursor, limit, max_bytes, skip.clone())
            .await?;
        if read.last.is_some() {
            self.cursor = read.last;
        }
        let reached_the_end = read.entries.len() + read.unreadable.len() < limit;
        batch.entries = read.entries;
        self.set_aside(read.unreadable, &mut batch);
        if batch.entries.len() < limit {
            let due = self
                .journal
                .due_parked(now, limit - batch.entries.len(), skip)
                .await?;
            batch.entries.extend(due.entries);
            self.set_aside(due.unreadable, &mut batch);
        }
        if reached_the_end {
            // Records appended since, and those a failed step left behind, are read again
            // from the oldest next time.
            self.cursor = None;
        }
        Ok(batch)
    }

    fn set_aside(&mut self, unreadable: Vec<(u64, Vec<u8>)>, batch: &mut Batch) {
        for (key, bytes) in unreadable {
            tracing::error!(
                key,
                bytes = bytes.len(),
                version = bytes.first().copied(),
                "a journal record this version cannot decode is set aside (roomsync journal list shows it; export or remove it there)"
            );
            self.unreadable.insert(key);
            batch.unreadable.push(key);
        }
    }

    /// These records are in PostgreSQL: never handed out again; removed from the file in the
    /// background.
    pub fn ack(&mut self, keys: impl IntoIterator<Item = u64>) {
        self.applied.extend(keys);
        if !self.removal_failed {
            self.start_removal();
        }
    }

    /// These records failed alone: parked with what PostgreSQL said, tried again with backoff.
    /// On failure (a full disk) they stay pending and come back when the cursor does.
    pub async fn park(
        &mut self,
        failures: Vec<(u64, String)>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.journal.park(failures, now).await
    }

    /// Reads from the oldest record at the next batch (after a step that left records behind).
    pub fn rewind(&mut self) {
        self.cursor = None;
    }

    /// Starts removing what is applied, unless a removal is under way.
    fn start_removal(&mut self) {
        if self.removal.is_some() || self.applied.is_empty() {
            return;
        }
        let keys: Vec<u64> = self.applied.iter().copied().collect();
        let journal = self.journal.clone();
        self.removal = Some(tokio::spawn(async move {
            let result = journal.remove(keys.clone()).await;
            (keys, result)
        }));
    }

    /// Takes the result of a finished removal, without waiting for one under way; starts the
    /// next (applied records left over) if none is.
    async fn look_at_removal(&mut self) {
        if self.removal.as_ref().is_some_and(|r| r.is_finished()) {
            self.finish_removal().await;
        }
        if !self.removal_failed {
            self.start_removal();
        }
    }

    /// Tries a failed removal again (the drain calls this after its retry interval).
    pub fn retry_removal(&mut self) {
        self.removal_failed = false;
        self.start_removal();
    }

    /// Waits for the removal under way, if any. Its keys leave `applied` once removed; on
    /// failure they stay (never handed out again) and are tried again later.
    async fn finish_removal(&mut self) {
        let Some(removal) = self.removal.take() else {
            return;
        };
        match removal.await {
            Ok((keys, Ok(()))) => {
                for key in keys {
                    self.applied.remove(&key);
                }
                self.removal_failed = false;
            }
            Ok((_, Err(error))) => {
                self.removal_failed = true;
                tracing::warn!(error = %crate::telemetry::error_chain(&error), applied = self.applied.len(), "removing applied records from the journal failed; they are not applied again, and their removal is tried again");
            }
            Err(error) => {
                self.removal_failed = true;
                tracing::warn!(%error, "the journal removal task failed");
            }
        }
    }

    /// Waits for the removal under way, then starts one for what was acknowledged meanwhile
    /// (unless the last one failed): before the drain goes idle, so nothing applied stays in
    /// the file while nothing else happens.
    pub async fn settle(&mut self) {
        self.finish_removal().await;
        if !self.removal_failed {
            self.start_removal();
            self.finish_removal().await;
        }
    }

    /// At a stop: waits for the removal under way, then tries once more what is left.
    pub async fn finish(&mut self) {
        self.finish_removal().await;
        if !self.applied.is_empty() {
            self.removal_failed = false;
            self.start_removal();
            self.finish_removal().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::test_record as record;

    fn keys(batch: &Batch) -> Vec<u64> {
        batch.entries.iter().map(|e| e.key).collect()
    }

    async fn journal_with(n: i64) -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j.redb"), 1 << 20).unwrap();
        journal.append((0..n).map(record).collect()).await.unwrap();
        (dir, journal)
    }

    #[tokio::test]
    async fn hands_out_in_order_and_never_twice_once_acknowledged() {
        let (_dir, journal) = journal_with(5).await;
        let mut reader = Reader::new(journal.clone());
        let now = Utc::now();
        let first = reader.next(2, usize::MAX, now).await.unwrap();
        assert_eq!(keys(&first), [0, 1]);
        reader.ack(keys(&first));
        let second = reader.next(10, usize::MAX, now).await.unwrap();
        assert_eq!(keys(&second), [2, 3, 4]);
        // Not acknowledged (the step failed): rewound, they come back; the first two do not.
        reader.rewind();
        assert_eq!(
            keys(&reader.next(10, usize::MAX, now).await.unwrap()),
            [2, 3, 4]
        );
        reader.finish().await;
        assert_eq!(journal.depth(), 3);
    }

    #[tokio::test]
    async fn a_failing_removal_stops_nothing_and_applies_nothing_twice() {
        let (_dir, journal) = journal_with(6).await;
        journal.fail_removals(true);
        let mut reader = Reader::new(journal.clone());
        let now = Utc::now();
        let mut handed_out = Vec::new();
        for _ in 0..4 {
            let batch = reader.next(2, usize::MAX, now).await.unwrap();
            handed_out.extend(keys(&batch));
            reader.ack(keys(&batch));
            // Let the removal fail before the next read looks at it.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            handed_out,
            [0, 1, 2, 3, 4, 5],
            "every record once, none twice"
        );
        assert_eq!(journal.depth(), 6, "nothing removed yet");
        assert_eq!(reader.outstanding(), 0);
        assert!(reader.removal_failed());
        // Space again: the retried removal empties the journal.
        journal.fail_removals(false);
        reader.retry_removal();
        reader.finish().await;
        assert_eq!((journal.depth(), reader.awaiting_removal()), (0, 0));
    }

    #[tokio::test]
    async fn what_is_acknowledged_while_a_removal_runs_is_removed_when_it_settles() {
        let (_dir, journal) = journal_with(4).await;
        let mut reader = Reader::new(journal.clone());
        let now = Utc::now();
        let first = reader.next(2, usize::MAX, now).await.unwrap();
        reader.ack(keys(&first));
        // Acknowledged while the first removal may still run: no second removal starts.
        let second = reader.next(2, usize::MAX, now).await.unwrap();
        reader.ack(keys(&second));
        assert!(
            reader
                .next(2, usize::MAX, now)
                .await
                .unwrap()
                .entries
                .is_empty()
        );
        reader.settle().await;
        assert_eq!((journal.depth(), reader.awaiting_removal()), (0, 0));
    }

    #[tokio::test]
    async fn a_crash_between_commit_and_removal_hands_the_record_out_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        {
            let journal = Journal::open(&path, 1 << 20).unwrap();
            journal.append(vec![record(1), record(2)]).await.unwrap();
            journal.fail_removals(true);
            let mut reader = Reader::new(journal.clone());
            let batch = reader.next(10, usize::MAX, Utc::now()).await.unwrap();
            reader.ack(keys(&batch));
            // The process dies here: the removal never reached the file.
            reader.finish().await;
        }
        let journal = Journal::open(&path, 1 << 20).unwrap();
        let mut reader = Reader::new(journal);
        let again = reader.next(10, usize::MAX, Utc::now()).await.unwrap();
        assert_eq!(
            keys(&again),
            [0, 1],
            "applied again; the dedup key makes it a no-op"
        );
    }

    #[tokio::test]
    async fn a_record_it_cannot_decode_is_set_aside_and_the_others_go_on() {
        let (_dir, journal) = journal_with(0).await;
        journal.append(vec![record(1)]).await.unwrap();
        // A record of the next layout version (a downgrade).
        journal
            .inner
            .with_db(|db| {
                let tx = db.begin_write().unwrap();
                {
                    let mut table = tx.open_table(super::super::PENDING).unwrap();
                    let mut bytes = record(2).encode();
                    bytes[0] += 1;
                    table.insert(1, bytes.as_slice()).unwrap();
                }
                tx.commit().unwrap();
                Ok(())
            })
            .unwrap();
        journal
            .inner
            .depth
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        journal
            .inner
            .next_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        journal.append(vec![record(3)]).await.unwrap();
        let mut reader = Reader::new(journal.clone());
        let batch = reader.next(10, usize::MAX, Utc::now()).await.unwrap();
        assert_eq!(keys(&batch), [0, 2]);
        assert_eq!(batch.unreadable, [1]);
        reader.ack(keys(&batch));
        reader.finish().await;
        assert_eq!(
            (journal.depth(), reader.unreadable(), reader.outstanding()),
            (1, 1, 0)
        );
        // Never handed out again.
        assert!(
            reader
                .next(10, usize::MAX, Utc::now())
                .await
                .unwrap()
                .entries
                .is_empty()
        );
    }

    #[tokio::test]
    async fn due_parked_records_come_from_the_index() {
        let (_dir, journal) = journal_with(3).await;
        let mut reader = Reader::new(journal.clone());
        let now = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
        let batch = reader.next(10, usize::MAX, now).await.unwrap();
        reader
            .park(vec![(1, "P0001: not now".into())], now)
            .await
            .unwrap();
        reader.ack([0, 2]);
        assert!(
            reader
                .next(10, usize::MAX, now)
                .await
                .unwrap()
                .entries
                .is_empty()
        );
        assert_eq!(batch.entries.len(), 3);
        assert_eq!(
            journal.next_parked_due(),
            Some(now + chrono::Duration::seconds(1))
        );
        let later = now + chrono::Duration::seconds(2);
        let due = reader.next(10, usize::MAX, later).await.unwrap();
        assert_eq!(keys(&due), [1]);
        assert_eq!(due.entries[0].parked.as_ref().unwrap().attempts, 1);
    }
}
