//! One batch's transactions: written whole, or split along what failed, each under the lock
//! timeout (docs/durability.md#the-writer).

use std::{
    ops::Range,
    time::{Duration, Instant},
};

use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, pool::PoolConnection};

use crate::{
    callback::Callback,
    store::{Dialect, Outcome, Rules, StoreError, apply_batch},
};

/// Writes callbacks (sorted by group, `groups[i]` the group of `callbacks[i]`) in as few
/// transactions as their failures allow: the whole batch first; when it fails because of what
/// is in it, each half on its own (split between groups while it holds several, so a held
/// room's callbacks stay together), and so on. So one callback PostgreSQL does not take fails
/// alone and its neighbours are stored (a few bad ones in a batch of n cost about 2·log2(n)
/// transactions each). A batch that meets a held room is written group by group, so only the
/// held groups wait out the lock timeout a second time. An error that
/// concerns the server, not the records, answers every callback not yet written. Raw errors,
/// in the order given.
pub(super) async fn write_isolating(
    conn: &mut Held,
    known: Option<Dialect>,
    rules: Rules,
    begin: &str,
    callbacks: &[&Callback],
    groups: &[u64],
) -> Vec<Result<Outcome, StoreError>> {
    let mut results: Vec<Option<Result<Outcome, StoreError>>> = vec![None; callbacks.len()];
    // Ranges still to write, the next one last.
    let mut todo: Vec<Range<usize>> = Vec::with_capacity(16);
    todo.push(0..callbacks.len());
    while let Some(range) = todo.pop() {
        if range.is_empty() {
            continue;
        }
        match write_batch_as(conn, known, rules, begin, &callbacks[range.clone()]).await {
            Ok(outcomes) => {
                for (slot, outcome) in results[range].iter_mut().zip(outcomes) {
                    *slot = Some(Ok(outcome));
                }
            }
            // A held room: each group on its own, so only the held ones wait out the lock
            // timeout again (halving would make them wait once per level).
            Err(StoreError::Held(_)) if groups[range.start] != groups[range.end - 1] => {
                let mut starts: Vec<usize> = (range.start + 1..range.end)
                    .filter(|&i| groups[i] != groups[i - 1])
                    .collect();
                starts.insert(0, range.start);
                let ends = starts.iter().skip(1).copied().chain([range.end]);
                let parts: Vec<Range<usize>> =
                    starts.iter().zip(ends).map(|(&a, b)| a..b).collect();
                todo.extend(parts.into_iter().rev());
            }
            Err(error)
                if error.is_about_the_records() && split(&range, groups, &error).is_some() =>
            {
                let middle = split(&range, groups, &error).expect("just checked");
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

/// Where to split a range that failed: between groups while it holds several (the group
/// boundary nearest the middle); within one group only for a failure that may be one
/// callback's (not a held room: every callback of the group would meet it). `None`: it stays
/// whole.
fn split(range: &Range<usize>, groups: &[u64], error: &StoreError) -> Option<usize> {
    let first = groups[range.start];
    if groups[range.end - 1] != first {
        let middle = range.start + range.len() / 2;
        let boundary = |i: &usize| groups[*i] != groups[*i - 1];
        let after = (middle..range.end).find(boundary);
        let before = (range.start + 1..=middle).rev().find(boundary);
        return match (before, after) {
            (Some(b), Some(a)) => Some(if middle - b <= a - middle { b } else { a }),
            (b, a) => b.or(a),
        };
    }
    (range.len() > 1 && !matches!(error, StoreError::Held(_)))
        .then(|| range.start + range.len() / 2)
}

/// Writes callbacks in one transaction outside the writer's queue (tests that build batches
/// of their own), in the statements' form `known` when given. Rooms are locked in one global
/// order, so concurrent batches (from any process) cannot deadlock.
pub async fn write_batch(
    pool: &PgPool,
    known: Option<Dialect>,
    rules: Rules,
    callbacks: &[&Callback],
) -> Result<Vec<Outcome>, StoreError> {
    write_batch_as(&mut Held::new(pool), known, rules, "BEGIN", callbacks).await
}

/// One transaction on `conn`, begun with `begin`, in the database's form when the caller knows
/// it; outcomes in the order given.
async fn write_batch_as(
    conn: &mut Held,
    known: Option<Dialect>,
    rules: Rules,
    begin: &str,
    callbacks: &[&Callback],
) -> Result<Vec<Outcome>, StoreError> {
    let mut order: Vec<usize> = (0..callbacks.len()).collect();
    order.sort_by(|&a, &b| lock_order(callbacks[a]).cmp(&lock_order(callbacks[b])));
    let sorted: Vec<&Callback> = order.iter().map(|&i| callbacks[i]).collect();
    let applied = async {
        let begin = AssertSqlSafe(begin.to_owned());
        let mut tx = sqlx::Connection::begin_with(conn.get().await?, begin).await?;
        let applied = apply_batch(&mut tx, &sorted, known, rules).await?;
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
/// writer tasks when idle or after `HOLD_MAX`.
pub(super) struct Held {
    pool: PgPool,
    conn: Option<(PoolConnection<Postgres>, Instant)>,
}

impl Held {
    pub(super) fn new(pool: &PgPool) -> Self {
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
    pub(super) fn held_for(&self) -> Duration {
        self.conn
            .as_ref()
            .map_or(Duration::ZERO, |(_, since)| since.elapsed())
    }

    /// Gives the connection back to the pool.
    pub(super) fn give_back(&mut self) {
        self.conn = None;
    }

    /// Closes the connection rather than giving it back: it was dropped mid-transaction.
    pub(super) fn close(&mut self) {
        if let Some((mut conn, _)) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}

fn lock_order(callback: &Callback) -> (bool, Option<(i64, &str)>, &[u8; 32]) {
    // Callbacks without a room lock no room; they go last, in dedup-key order (the order in
    // which their history rows' unique keys are taken).
    let room = callback.locked_room();
    (room.is_none(), room, callback.dedup_key())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_failed_range_splits_between_groups_and_a_held_group_stays_whole() {
        let groups = [1, 1, 1, 2, 2, 3, 3, 3];
        let held = StoreError::Held(Arc::new(sqlx::Error::PoolTimedOut));
        let refused = StoreError::Refused(Arc::new(sqlx::Error::PoolTimedOut));
        assert_eq!(split(&(0..8), &groups, &held), Some(3));
        assert_eq!(split(&(3..8), &groups, &held), Some(5));
        assert_eq!(split(&(5..8), &groups, &held), None);
        assert_eq!(split(&(5..8), &groups, &refused), Some(6));
        assert_eq!(split(&(6..7), &groups, &refused), None);
    }
}
