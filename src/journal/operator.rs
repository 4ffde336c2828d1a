//! The operator's view of a journal file (`roomsync journal`): reading works beside the running
//! service; retrying now needs the file to itself.

use std::path::Path;

use chrono::DateTime;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::{Entry, JournalError, PARKED, PENDING, Parked, Record, builder, open_file, storage};

fn read_only(path: &Path) -> Result<redb::ReadOnlyDatabase, JournalError> {
    builder()
        .open_read_only(path)
        .map_err(|e| JournalError::Open {
            path: path.to_owned(),
            source: Box::new(e),
        })
}

/// What `roomsync journal list` shows.
#[derive(Debug, Default)]
pub struct Listing {
    /// Every parked record that decodes, oldest first.
    pub parked: Vec<Entry>,
    /// Pending records.
    pub pending: u64,
    /// Records this version cannot decode (key, size, layout version byte), pending or parked.
    pub unreadable: Vec<(u64, usize, Option<u8>)>,
}

/// Every parked record, the pending count, and the records this version cannot decode.
pub fn list(path: &Path) -> Result<Listing, JournalError> {
    let db = read_only(path)?;
    let read = db.begin_read().map_err(storage)?;
    let mut listing = Listing::default();
    let pending = read.open_table(PENDING).map_err(storage)?;
    listing.pending = pending.len().map_err(storage)?;
    for entry in pending.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        if Record::decode(value.value()).is_err() {
            let bytes = value.value();
            listing
                .unreadable
                .push((key.value(), bytes.len(), bytes.first().copied()));
        }
    }
    let parked = read.open_table(PARKED).map_err(storage)?;
    for entry in parked.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        let bytes = value.value();
        let decoded = Parked::decode(bytes)
            .and_then(|(parked, record)| Ok((parked, Record::decode(record)?)));
        match decoded {
            Ok((parked, record)) => listing.parked.push(Entry {
                key: key.value(),
                record,
                parked: Some(parked),
            }),
            Err(_) => listing
                .unreadable
                .push((key.value(), bytes.len(), bytes.first().copied())),
        }
    }
    Ok(listing)
}

/// One record's stored bytes, pending or parked, whether or not this version decodes them
/// (for exporting a record it cannot read).
pub fn raw(path: &Path, key: u64) -> Result<Option<Vec<u8>>, JournalError> {
    let db = read_only(path)?;
    let read = db.begin_read().map_err(storage)?;
    for table in [PENDING, PARKED] {
        if let Some(value) = read
            .open_table(table)
            .map_err(storage)?
            .get(key)
            .map_err(storage)?
        {
            return Ok(Some(value.value().to_vec()));
        }
    }
    Ok(None)
}

/// Why a record was not removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("no record {0} in the journal")]
    Missing(u64),
    #[error("record {0} decodes: it will be applied, so it is not removed (export it to see it)")]
    Readable(u64),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Removes a record this version cannot decode (pending or parked); the service must be
/// stopped. A record that decodes is refused: the service will apply it.
pub fn remove_unreadable(path: &Path, key: u64) -> Result<(), RemoveError> {
    let (db, _) = open_file(path)?;
    let tx = db.begin_write().map_err(storage)?;
    {
        let mut pending = tx.open_table(PENDING).map_err(storage)?;
        let mut parked = tx.open_table(PARKED).map_err(storage)?;
        let readable = if let Some(value) = pending.get(key).map_err(storage)? {
            Record::decode(value.value()).is_ok()
        } else if let Some(value) = parked.get(key).map_err(storage)? {
            Parked::decode(value.value())
                .and_then(|(_, record)| Record::decode(record))
                .is_ok()
        } else {
            return Err(RemoveError::Missing(key));
        };
        if readable {
            return Err(RemoveError::Readable(key));
        }
        pending.remove(key).map_err(storage)?;
        parked.remove(key).map_err(storage)?;
    }
    tx.commit().map_err(storage)?;
    Ok(())
}

/// One record, pending or parked.
pub fn get(path: &Path, key: u64) -> Result<Option<Entry>, JournalError> {
    let db = read_only(path)?;
    let read = db.begin_read().map_err(storage)?;
    if let Some(value) = read
        .open_table(PENDING)
        .map_err(storage)?
        .get(key)
        .map_err(storage)?
    {
        let record = Record::decode(value.value())?;
        return Ok(Some(Entry {
            key,
            record,
            parked: None,
        }));
    }
    let table = read.open_table(PARKED).map_err(storage)?;
    let Some(value) = table.get(key).map_err(storage)? else {
        return Ok(None);
    };
    let (parked, record) = Parked::decode(value.value())?;
    Ok(Some(Entry {
        key,
        record: Record::decode(record)?,
        parked: Some(parked),
    }))
}

/// Makes parked records due now (`keys`, or all with `None`); returns how many. The service
/// tries them at its next start (or, running, within [`PARK_BACKOFF_MAX`] anyway).
pub fn retry_now(path: &Path, keys: Option<&[u64]>) -> Result<usize, JournalError> {
    let (db, _) = open_file(path)?;
    let tx = db.begin_write().map_err(storage)?;
    let mut changed = 0;
    {
        let mut table = tx.open_table(PARKED).map_err(storage)?;
        let wanted: Vec<u64> = match keys {
            Some(keys) => keys.to_vec(),
            None => {
                let mut all = Vec::new();
                for entry in table.iter().map_err(storage)? {
                    all.push(entry.map_err(storage)?.0.value());
                }
                all
            }
        };
        for key in wanted {
            let Some(value) = table.get(key).map_err(storage)?.map(|v| v.value().to_vec()) else {
                continue;
            };
            let (mut parked, record) = Parked::decode(&value)?;
            parked.next_attempt_at = DateTime::UNIX_EPOCH;
            table
                .insert(key, parked.encode(record).as_slice())
                .map_err(storage)?;
            changed += 1;
        }
    }
    tx.commit().map_err(storage)?;
    Ok(changed)
}
