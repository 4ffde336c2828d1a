//! The journal's tables: reading pending and due parked records, removing what PostgreSQL
//! committed, parking what it did not take; and the index of parked records by due time.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    ops::Bound,
    sync::{Arc, atomic::Ordering},
};

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable};

use super::{Entry, Journal, JournalError, PARKED, PENDING, Parked, Record, storage};

/// Parked records' next attempt times (microseconds since the epoch), both ways.
#[derive(Default)]
pub(super) struct DueIndex {
    pub(super) by_time: BTreeSet<(i64, u64)>,
    by_key: HashMap<u64, i64>,
}

impl DueIndex {
    pub(super) fn set(&mut self, key: u64, due: DateTime<Utc>) {
        self.remove(key);
        let at = due.timestamp_micros();
        self.by_time.insert((at, key));
        self.by_key.insert(key, at);
    }

    pub(super) fn remove(&mut self, key: u64) {
        if let Some(at) = self.by_key.remove(&key) {
            self.by_time.remove(&(at, key));
        }
    }
}

/// What one read of pending records found.
#[derive(Debug, Default)]
pub(crate) struct PendingRead {
    pub entries: Vec<Entry>,
    /// Records this version cannot decode (a downgrade, a damaged value): key and bytes.
    pub unreadable: Vec<(u64, Vec<u8>)>,
    /// The last key looked at, skipped ones included: the next read starts after it.
    pub last: Option<u64>,
}

impl Journal {
    /// Pending records with keys above `after` (all when `None`), oldest first, leaving out
    /// `skip`: up to `limit` records, and no more once `max_bytes` are read (at least one). A
    /// record that does not decode is reported beside them, never an error for the whole read.
    pub(crate) async fn read_pending(
        &self,
        after: Option<u64>,
        limit: usize,
        max_bytes: usize,
        skip: Arc<HashSet<u64>>,
    ) -> Result<PendingRead, JournalError> {
        self.blocking(move |inner| {
            inner.with_db(|db| {
                let read = db.begin_read().map_err(storage)?;
                let table = read.open_table(PENDING).map_err(storage)?;
                let from = after.map_or(Bound::Unbounded, Bound::Excluded);
                let (mut out, mut bytes) = (PendingRead::default(), 0);
                for entry in table
                    .range::<u64>((from, Bound::Unbounded))
                    .map_err(storage)?
                {
                    if out.entries.len() >= limit || bytes >= max_bytes {
                        break;
                    }
                    let (key, value) = entry.map_err(storage)?;
                    let key = key.value();
                    out.last = Some(key);
                    if skip.contains(&key) {
                        continue;
                    }
                    bytes += value.value().len();
                    match Record::decode(value.value()) {
                        Ok(record) => out.entries.push(Entry {
                            key,
                            record,
                            parked: None,
                        }),
                        Err(_) => out.unreadable.push((key, value.value().to_vec())),
                    }
                }
                Ok(out)
            })
        })
        .await
    }

    /// [`Journal::read_pending`] without skips, of the records that decode (tests, operator).
    pub async fn pending_after(
        &self,
        after: Option<u64>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, JournalError> {
        let read = self
            .read_pending(after, limit, max_bytes, Arc::default())
            .await?;
        Ok(read.entries)
    }

    /// Parked records due at `now`, up to `limit`, leaving out `skip`; found by the due index.
    /// Records that do not decode are reported as in [`Journal::read_pending`].
    pub(crate) async fn due_parked(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        skip: Arc<HashSet<u64>>,
    ) -> Result<PendingRead, JournalError> {
        let keys: Vec<u64> = {
            let due = self.inner.due.lock().expect("journal due index");
            due.by_time
                .range(..=(now.timestamp_micros(), u64::MAX))
                .map(|&(_, key)| key)
                .filter(|key| !skip.contains(key))
                .take(limit)
                .collect()
        };
        if keys.is_empty() {
            return Ok(PendingRead::default());
        }
        self.blocking(move |inner| {
            inner.with_db(|db| {
                let read = db.begin_read().map_err(storage)?;
                let table = read.open_table(PARKED).map_err(storage)?;
                let mut out = PendingRead::default();
                for key in keys {
                    let Some(value) = table.get(key).map_err(storage)? else {
                        continue;
                    };
                    let decoded = Parked::decode(value.value())
                        .and_then(|(parked, record)| Ok((parked, Record::decode(record)?)));
                    match decoded {
                        Ok((parked, record)) => out.entries.push(Entry {
                            key,
                            record,
                            parked: Some(parked),
                        }),
                        Err(_) => out.unreadable.push((key, value.value().to_vec())),
                    }
                }
                Ok(out)
            })
        })
        .await
    }

    /// Parked records: those due at `now` (up to `limit`), or all of them with `now = None`.
    pub async fn parked_entries(
        &self,
        now: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<Entry>, JournalError> {
        self.blocking(move |inner| inner.with_db(|db| parked_entries(db, now, limit)))
            .await
    }

    /// When the earliest parked record is due; `None` when nothing is parked.
    pub fn next_parked_due(&self) -> Option<DateTime<Utc>> {
        let due = self.inner.due.lock().expect("journal due index");
        let &(at, _) = due.by_time.first()?;
        DateTime::from_timestamp_micros(at)
    }

    /// Removes records (pending or parked) once PostgreSQL has committed them.
    pub async fn remove(&self, keys: Vec<u64>) -> Result<(), JournalError> {
        self.blocking(move |inner| {
            #[cfg(test)]
            if inner.fail_removals.load(Ordering::Relaxed) {
                return Err(JournalError::Storage(
                    "no space left on device (test)".into(),
                ));
            }
            inner.with_db(|db| {
                let tx = db.begin_write().map_err(storage)?;
                let (mut bytes, mut depth, mut parked) = (0, 0, 0);
                let mut removed_parked = Vec::new();
                {
                    let mut pending = tx.open_table(PENDING).map_err(storage)?;
                    let mut parked_table = tx.open_table(PARKED).map_err(storage)?;
                    for key in keys {
                        if let Some(value) = pending.remove(key).map_err(storage)? {
                            bytes += value.value().len() as u64;
                            depth += 1;
                        } else if let Some(value) = parked_table.remove(key).map_err(storage)? {
                            bytes += value.value().len() as u64;
                            depth += 1;
                            parked += 1;
                            removed_parked.push(key);
                        }
                    }
                }
                tx.commit().map_err(storage)?;
                inner.bytes.fetch_sub(bytes, Ordering::Relaxed);
                inner.depth.fetch_sub(depth, Ordering::Relaxed);
                inner.parked.fetch_sub(parked, Ordering::Relaxed);
                let mut due = inner.due.lock().expect("journal due index");
                for key in removed_parked {
                    due.remove(key);
                }
                Ok(())
            })
        })
        .await
    }

    /// Parks records that PostgreSQL did not take when tried alone (a pending one moves to the
    /// parked table; a parked one counts one more attempt), each with what PostgreSQL said.
    pub async fn park(
        &self,
        failures: Vec<(u64, String)>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.blocking(move |inner| {
            inner.with_db(|db| {
                let tx = db.begin_write().map_err(storage)?;
                let (mut added, mut removed, mut moved) = (0u64, 0u64, 0u64);
                let mut due_at = Vec::new();
                {
                    let mut pending = tx.open_table(PENDING).map_err(storage)?;
                    let mut parked = tx.open_table(PARKED).map_err(storage)?;
                    for (key, error) in failures {
                        let (old, state, value) =
                            if let Some(value) = pending.remove(key).map_err(storage)? {
                                moved += 1;
                                let record = value.value().to_vec();
                                let state = Parked::after_failure(None, error, now);
                                let encoded = state.encode(&record);
                                (record.len(), state, encoded)
                            } else if let Some(value) = parked.get(key).map_err(storage)? {
                                let bytes = value.value();
                                let (previous, record) = Parked::decode(bytes)?;
                                let state = Parked::after_failure(Some(&previous), error, now);
                                let encoded = state.encode(record);
                                (bytes.len(), state, encoded)
                            } else {
                                continue;
                            };
                        parked.insert(key, value.as_slice()).map_err(storage)?;
                        added += value.len() as u64;
                        removed += old as u64;
                        due_at.push((key, state.next_attempt_at));
                    }
                }
                tx.commit().map_err(storage)?;
                inner.bytes.fetch_add(added, Ordering::Relaxed);
                inner.bytes.fetch_sub(removed, Ordering::Relaxed);
                inner.parked.fetch_add(moved, Ordering::Relaxed);
                let mut due = inner.due.lock().expect("journal due index");
                for (key, at) in due_at {
                    due.set(key, at);
                }
                Ok(())
            })
        })
        .await
    }
}

pub(super) fn parked_entries(
    db: &impl ReadableDatabase,
    now: Option<DateTime<Utc>>,
    limit: usize,
) -> Result<Vec<Entry>, JournalError> {
    let read = db.begin_read().map_err(storage)?;
    let table = read.open_table(PARKED).map_err(storage)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(storage)? {
        if out.len() >= limit {
            break;
        }
        let (key, value) = entry.map_err(storage)?;
        let (parked, record) = Parked::decode(value.value())?;
        if now.is_some_and(|now| parked.next_attempt_at > now) {
            continue;
        }
        out.push(Entry {
            key: key.value(),
            record: Record::decode(record)?,
            parked: Some(parked),
        });
    }
    Ok(out)
}
