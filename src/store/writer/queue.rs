//! The writer's queue: which jobs the next batch takes (lanes, groups, held rooms), and what a
//! finished batch gives back (docs/durability.md#the-writer).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use super::{Job, Queue};
use crate::store::StoreError;

/// How long a held room's callbacks are given back before the room is tried again (alone),
/// doubling while it stays held, up to the cap.
const HELD_BACKOFF: Duration = Duration::from_millis(500);
const HELD_BACKOFF_MAX: Duration = Duration::from_secs(8);
/// Live callbacks count as arriving for this long after the last one: meanwhile the background
/// lane takes only its floor of each batch, so that batches stay short and a live callback
/// never waits long for a task.
const LIVE_RECENT: Duration = Duration::from_millis(200);

#[derive(Default)]
pub(super) struct State {
    pub(super) live: VecDeque<Job>,
    pub(super) background: VecDeque<Job>,
    pub(super) busy: HashSet<u64>,
    /// Groups found held elsewhere: until when their callbacks are given back, the next wait,
    /// and what PostgreSQL said.
    pub(super) held: HashMap<u64, HeldGroup>,
    /// When a live callback was last queued.
    pub(super) last_live: Option<Instant>,
    pub(super) closed: bool,
}

pub(super) struct HeldGroup {
    until: Instant,
    backoff: Duration,
    error: StoreError,
}

/// The next batch ([`take_batch`]); `None` once the writer is closed and the queue is empty.
pub(super) async fn next_batch(queue: &Queue, max_batch: usize, tasks: usize) -> Option<Vec<Job>> {
    loop {
        let changed = queue.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let wake_at = {
            let mut state = queue.state.lock().expect("writer queue");
            let batch = take_batch(&mut state, max_batch, tasks, Instant::now());
            if !batch.is_empty() {
                return Some(batch);
            }
            if state.closed && state.live.is_empty() && state.background.is_empty() {
                return None;
            }
            // A held group whose wait ends is tried then, even if nothing else happens.
            state.held.values().map(|h| h.until).min()
        };
        match wake_at {
            Some(at) => {
                let _ = tokio::time::timeout_at(at.into(), changed).await;
            }
            None => changed.await,
        }
    }
}

/// Queued jobs, oldest first, whose groups no other task is writing, all of the first one's
/// node, up to `max_batch`; their groups are marked busy. Live jobs first, but the background
/// lane keeps a quarter of the batch when it has work; while live callbacks arrive it takes
/// no more than that, and otherwise its share of the tasks. Jobs of a group held elsewhere are
/// answered at once ([`StoreError::Held`]); once its wait ends, such a group is written in a
/// batch of its own. A live job whose request stopped waiting (it timed out, so the callback
/// went to the journal) is dropped: writing it here too would only add work when the database
/// is already slow. (One that started before its request gave up is written twice; the
/// history's dedup key makes the second a no-op.)
fn take_batch(state: &mut State, max_batch: usize, tasks: usize, now: Instant) -> Vec<Job> {
    let State {
        live,
        background,
        busy,
        held,
        last_live,
        ..
    } = state;
    live.retain(|job| !job.reply.is_closed());
    let floor = if background.is_empty() {
        0
    } else {
        (max_batch / 4).max(1)
    };
    let live_recent = last_live.is_some_and(|at| now.saturating_duration_since(at) < LIVE_RECENT);
    let mut pick = Pick {
        node: None,
        mine: HashSet::new(),
        alone: None,
        batch: Vec::new(),
        busy,
        held,
        now,
    };
    pick.from(live, max_batch.saturating_sub(floor));
    // Beside live traffic, the floor; alone, a backlog shared among the tasks, so that it is
    // written in parallel transactions.
    let share = if live_recent {
        pick.batch.len() + floor
    } else {
        pick.batch.len() + background.len().div_ceil(tasks.max(1)).max(floor)
    };
    pick.from(background, max_batch.min(share));
    pick.from(live, max_batch);
    let Pick { mine, batch, .. } = pick;
    busy.extend(mine);
    batch
}

/// [`take_batch`]'s choice under way.
struct Pick<'a> {
    node: Option<i32>,
    mine: HashSet<u64>,
    /// A held group being retried: nothing else joins its batch.
    alone: Option<u64>,
    batch: Vec<Job>,
    busy: &'a HashSet<u64>,
    held: &'a mut HashMap<u64, HeldGroup>,
    now: Instant,
}

impl Pick<'_> {
    /// Takes jobs from `queue` while the batch has fewer than `limit`.
    fn from(&mut self, queue: &mut VecDeque<Job>, limit: usize) {
        let mut left = VecDeque::with_capacity(queue.len());
        for job in queue.drain(..) {
            let key = job.group.key;
            if let Some(h) = self.held.get(&key)
                && h.until > self.now
            {
                let _ = job.reply.send(Err(h.error.clone()));
                continue;
            }
            let retry = self.held.contains_key(&key);
            let fits = self.batch.len() < limit
                && self.alone.is_none_or(|g| g == key)
                && (!retry || self.batch.is_empty() || self.alone == Some(key))
                && self.node.is_none_or(|n| n == job.group.node)
                && (self.mine.contains(&key) || !self.busy.contains(&key));
            if fits {
                if retry {
                    self.alone = Some(key);
                }
                self.node = Some(job.group.node);
                self.mine.insert(key);
                self.batch.push(job);
            } else {
                left.push_back(job);
            }
        }
        *queue = left;
    }
}

/// Frees a batch's groups; those found held are given back for a while, the others forgotten
/// as held.
pub(super) fn release(queue: &Queue, groups: &[u64], held: Vec<(u64, StoreError)>) {
    {
        let mut state = queue.state.lock().expect("writer queue");
        let now = Instant::now();
        for group in groups {
            state.busy.remove(group);
            if !held.iter().any(|(g, _)| g == group) {
                state.held.remove(group);
            }
        }
        for (group, error) in held {
            let backoff = state
                .held
                .get(&group)
                .map_or(HELD_BACKOFF, |h| (h.backoff * 2).min(HELD_BACKOFF_MAX));
            tracing::warn!(error = %error.detail(), wait_ms = backoff.as_millis() as u64, "a room is held by another session; its callbacks are given back meanwhile");
            state.held.insert(
                group,
                HeldGroup {
                    until: now + backoff,
                    backoff,
                    error,
                },
            );
        }
    }
    queue.changed.notify_waiters();
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::callback::Callback;
    use crate::callback::{CallbackQuery, parse_stored};
    use crate::store::{Outcome, layout::Group, writer::Lane};
    use tokio::sync::oneshot;

    fn callback(room: &str, at: i64) -> Callback {
        let body = serde_json::json!({
            "CallbackCommand": "Room.CallbackAfterMemberEnter", "Operator_Account": "u",
            "RoomId": room, "MemberCount": 1, "Type": "Enter", "MemberList_Account": ["u"],
            "EventTime": at
        });
        let query = CallbackQuery {
            command: Some("Room.CallbackAfterMemberEnter".into()),
            ..CallbackQuery::default()
        };
        parse_stored(
            1400000000,
            &query,
            body.to_string().as_bytes(),
            chrono::Utc::now(),
        )
        .unwrap()
    }

    type Answer = oneshot::Receiver<Result<Outcome, StoreError>>;

    /// Queues jobs of the given (key, node) groups in a lane; returns the answer ends (drop
    /// one to make its request stop waiting).
    fn queue_in(state: &mut State, lane: Lane, groups: &[(u64, i32)]) -> Vec<Answer> {
        groups
            .iter()
            .enumerate()
            .map(|(i, &(key, node))| {
                let (reply, answer) = oneshot::channel();
                let job = Job {
                    callback: callback("r", i as i64 + 1),
                    group: Group { key, node },
                    reply,
                    _place: None,
                };
                match lane {
                    Lane::Live => state.live.push_back(job),
                    Lane::Background => state.background.push_back(job),
                }
                answer
            })
            .collect()
    }

    fn queue(state: &mut State, groups: &[(u64, i32)]) -> Vec<Answer> {
        queue_in(state, Lane::Live, groups)
    }

    fn keys(batch: &[Job]) -> Vec<u64> {
        batch.iter().map(|job| job.group.key).collect()
    }

    fn take(state: &mut State, max: usize) -> Vec<Job> {
        take_batch(state, max, 1, Instant::now())
    }

    #[test]
    fn a_batch_takes_what_is_queued_up_to_its_bound_oldest_first() {
        let mut state = State::default();
        let _answers = queue(&mut state, &[(1, 0), (2, 0), (1, 0), (3, 0), (4, 0)]);
        assert_eq!(keys(&take(&mut state, 3)), [1, 2, 1]);
        // The next task may not take groups 1 and 2 while they are written.
        assert_eq!(keys(&take(&mut state, 3)), [3, 4]);
        assert!(state.live.is_empty());
        assert_eq!(state.busy, HashSet::from([1, 2, 3, 4]));
    }

    #[test]
    fn a_group_being_written_waits_and_others_pass_it() {
        let mut state = State::default();
        let _answers = queue(&mut state, &[(1, 0)]);
        assert_eq!(keys(&take(&mut state, 8)), [1]);
        let _more = queue(&mut state, &[(1, 0), (2, 0), (1, 0)]);
        // Group 1 is busy (its room may be held by another server): group 2 goes on.
        assert_eq!(keys(&take(&mut state, 8)), [2]);
        assert!(take(&mut state, 8).is_empty());
        state.busy.remove(&1);
        assert_eq!(keys(&take(&mut state, 8)), [1, 1]);
    }

    #[test]
    fn a_batch_holds_the_groups_of_one_node() {
        let mut state = State::default();
        let _answers = queue(&mut state, &[(10, 1), (20, 2), (11, 1), (21, 2), (12, 1)]);
        assert_eq!(keys(&take(&mut state, 8)), [10, 11, 12]);
        assert_eq!(keys(&take(&mut state, 8)), [20, 21]);
    }

    #[test]
    fn jobs_whose_request_stopped_waiting_are_dropped() {
        let mut state = State::default();
        let mut answers = queue(&mut state, &[(1, 0), (2, 0), (3, 0)]);
        drop(answers.remove(1));
        assert_eq!(keys(&take(&mut state, 8)), [1, 3]);
        assert!(state.live.is_empty());
    }

    #[test]
    fn live_goes_first_and_the_background_keeps_a_floor() {
        let mut state = State::default();
        let live: Vec<(u64, i32)> = (0..10).map(|k| (k, 0)).collect();
        let background: Vec<(u64, i32)> = (100..110).map(|k| (k, 0)).collect();
        let _l = queue_in(&mut state, Lane::Live, &live);
        let _b = queue_in(&mut state, Lane::Background, &background);
        state.last_live = Some(Instant::now());
        let batch = keys(&take(&mut state, 16));
        assert_eq!(batch, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 101, 102, 103]);
        // With no live traffic the background takes the whole batch...
        let mut state = State::default();
        let _b = queue_in(&mut state, Lane::Background, &background);
        assert_eq!(take(&mut state, 8).len(), 8);
        // ...or its share of the tasks, so that a backlog is written in parallel.
        let mut state = State::default();
        let _b = queue_in(&mut state, Lane::Background, &background);
        assert_eq!(take_batch(&mut state, 8, 2, Instant::now()).len(), 5);
        assert_eq!(take_batch(&mut state, 8, 2, Instant::now()).len(), 3);
    }

    #[test]
    fn a_held_group_is_answered_at_once_then_retried_alone() {
        let mut state = State::default();
        let now = Instant::now();
        let held = StoreError::Held(Arc::new(sqlx::Error::PoolTimedOut));
        state.held.insert(
            7,
            HeldGroup {
                until: now + Duration::from_secs(1),
                backoff: Duration::from_secs(1),
                error: held,
            },
        );
        let mut answers = queue(&mut state, &[(7, 0), (1, 0), (7, 0), (2, 0)]);
        assert_eq!(keys(&take_batch(&mut state, 8, 1, now)), [1, 2]);
        for i in [0, 2] {
            assert!(matches!(
                answers[i].try_recv(),
                Ok(Err(StoreError::Held(_)))
            ));
        }
        state.busy.clear();
        // Its wait over, the group is written in a batch of its own.
        let _more = queue(&mut state, &[(1, 0), (7, 0), (7, 0), (3, 0)]);
        let later = now + Duration::from_secs(2);
        assert_eq!(keys(&take_batch(&mut state, 8, 1, later)), [1, 3]);
        state.busy.clear();
        assert_eq!(keys(&take_batch(&mut state, 8, 1, later)), [7, 7]);
    }
}
