//! The operator's view of a journal file (`roomsync journal`): reading works beside the running
//! service; retrying now needs the file to itself.

use std::path::Path;

use chrono::DateTime;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::{
    Entry, JournalError, PARKED, PENDING, Parked, Record, builder, open_file, parked_entries,
    storage,
};

fn read_only(path: &Path) -> Result<redb::ReadOnlyDatabase, JournalError> {
    builder()
        .open_read_only(path)
        .map_err(|e| JournalError::Open {
            path: path.to_owned(),
            source: Box::new(e),
        })
}

/// Every parked record, oldest first, and how many records are pending.
pub fn list(path: &Path) -> Result<(Vec<Entry>, u64), JournalError> {
    let db = read_only(path)?;
    let parked = parked_entries(&db, None, usize::MAX)?;
    let read = db.begin_read().map_err(storage)?;
    let pending = read
        .open_table(PENDING)
        .map_err(storage)?
        .len()
        .map_err(storage)?;
    Ok((parked, pending))
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
