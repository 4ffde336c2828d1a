//! The feed's one reader in this process (docs/feed.md#http): it follows `room_changes`,
//! keeps the newest changes in memory and wakes the waiting HTTP readers, so that a hundred
//! readers waiting on `/v1/changes` cost one query per wake-up, not a hundred.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{Notify, Semaphore, watch};

mod told;

pub use told::{Page, Told};

use crate::store::{
    Dialect, NotifyMode,
    changes::{self, FeedError, Roster, changes_after, head},
};

/// Changes kept in memory: readers within this distance of the head are served from it.
const KEPT: usize = 10_000;
/// Changes read per query.
const READ: i32 = 1_000;
/// How often the reader looks without being woken (a commit of another process in
/// `NOTIFY_MODE=off`, a drift-repair correction).
const TICK: Duration = Duration::from_millis(1000);
/// The shortest time between two reads. Under load a commit lands every few milliseconds;
/// reading (and waking every waiting reader) at most this often bounds the work per reader
/// whatever the commit rate, while a commit after a quiet spell is still read at once.
const FOLLOW_EVERY: Duration = Duration::from_millis(40);

/// The window's end before the reader first reached the database.
const UNKNOWN: i64 = -1;

/// Where a position falls against the window.
enum Window {
    Page(Page),
    /// Newer than what the reader has read.
    Ahead,
    /// Older than the window: the table has it (or retention took it).
    Older,
}

/// The newest changes and the position they end at.
struct Recent {
    /// Changes with consecutive `seq`, ending at `last`.
    changes: VecDeque<Told>,
    /// The newest `seq` read.
    last: i64,
    /// When the oldest kept change was last read (retention deletes in the background,
    /// perhaps in another process): the window never serves what the table no longer has.
    oldest_read: Option<tokio::time::Instant>,
}

#[derive(Clone)]
pub struct Hub {
    pool: PgPool,
    window: Arc<Mutex<Recent>>,
    head: watch::Receiver<i64>,
    waiters: Arc<Semaphore>,
    /// The database's form, once known (a roster is read differently on Citus).
    dialect: Arc<OnceLock<Dialect>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// `after` is beyond the newest change.
    #[error("position {after} is past the newest change {head}")]
    Ahead { after: i64, head: i64 },
    /// Too many readers wait already.
    #[error("too many waiting readers")]
    Busy,
}

impl From<sqlx::Error> for ReadError {
    fn from(error: sqlx::Error) -> Self {
        Self::Feed(FeedError::Database(error))
    }
}

impl Hub {
    /// Starts following the feed from its head (once the database answers); `committed` is
    /// notified by this process's writers after each commit.
    pub fn spawn(
        pool: PgPool,
        mode: NotifyMode,
        committed: Arc<Notify>,
        max_waiters: usize,
        mut stop: watch::Receiver<bool>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let last = UNKNOWN;
        let (tx, rx) = watch::channel(last);
        let hub = Self {
            pool: pool.clone(),
            window: Arc::new(Mutex::new(Recent {
                changes: VecDeque::new(),
                last,
                oldest_read: None,
            })),
            head: rx,
            waiters: Arc::new(Semaphore::new(max_waiters)),
            dialect: Arc::new(OnceLock::new()),
        };
        let follower = hub.clone();
        let task = tokio::spawn(async move {
            // Other processes' commits, when they announce them.
            let channel = match mode {
                NotifyMode::Wakeup => Some("room_changes"),
                NotifyMode::Members => Some("room_members"),
                NotifyMode::Off => None,
            };
            let mut listener = None;
            let mut read_at: Option<tokio::time::Instant> = None;
            loop {
                if listener.is_none()
                    && let Some(channel) = channel
                {
                    listener = listen(&follower.pool, channel).await;
                }
                let heard = async {
                    match listener.as_mut() {
                        Some(l) => l.recv().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = committed.notified() => {}
                    ok = heard => if !ok { listener = None; },
                    _ = tokio::time::sleep(TICK) => {}
                }
                if let Some(wait) = read_at.and_then(|at| FOLLOW_EVERY.checked_sub(at.elapsed())) {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                read_at = Some(tokio::time::Instant::now());
                // One read for every notification already here (`members` sends several per
                // transaction).
                if let Some(listener) = listener.as_mut() {
                    while listener.next_buffered().is_some() {}
                }
                if let Err(error) = follower.follow(&tx).await {
                    tracing::debug!(error = %error, "feed reader: read failed; will retry");
                }
            }
        });
        (hub, task)
    }

    /// Reads what was committed since the last read into the window.
    async fn follow(&self, tx: &watch::Sender<i64>) -> Result<(), FeedError> {
        if self.window.lock().expect("not poisoned").last == UNKNOWN {
            let newest = head(&self.pool).await?;
            self.window.lock().expect("not poisoned").last = newest;
            tx.send_replace(newest);
        }
        let due = self
            .window
            .lock()
            .expect("not poisoned")
            .oldest_read
            .is_none_or(|at| at.elapsed() >= TICK);
        if due {
            let oldest = changes::oldest(&self.pool).await?;
            let mut window = self.window.lock().expect("not poisoned");
            while window.changes.front().is_some_and(|c| c.seq < oldest) {
                window.changes.pop_front();
            }
            window.oldest_read = Some(tokio::time::Instant::now());
        }
        loop {
            let last = self.window.lock().expect("not poisoned").last;
            let read = match changes_after(&self.pool, last, READ).await {
                Ok(read) => read,
                // Retention passed the window (it was not read for days): go on from the oldest.
                Err(FeedError::Gone { oldest }) => {
                    let mut window = self.window.lock().expect("not poisoned");
                    window.changes.clear();
                    window.last = oldest - 1;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let full = read.len() == READ as usize;
            let newest = {
                let mut window = self.window.lock().expect("not poisoned");
                for change in &read {
                    window.last = change.seq;
                    window.changes.push_back(Told::from(change));
                }
                while window.changes.len() > KEPT {
                    window.changes.pop_front();
                }
                window.last
            };
            tx.send_if_modified(|head| {
                let moved = *head != newest;
                *head = newest;
                moved
            });
            if !full {
                return Ok(());
            }
        }
    }

    /// The changes after `after`, at most `limit`; waits up to `wait` for a first one.
    pub async fn read(&self, after: i64, limit: usize, wait: Duration) -> Result<Page, ReadError> {
        let ahead = match self.in_window(after, limit) {
            Window::Page(page) if !page.changes.is_empty() || wait.is_zero() => return Ok(page),
            Window::Page(_) => false,
            Window::Ahead => true,
            Window::Older => return self.read_table(after, limit).await,
        };
        if ahead {
            // Past what this reader has read: a position from the future is an error; one
            // this reader has not caught up with yet is waited for like the head.
            let newest = head(&self.pool).await?;
            if after > newest {
                return Err(ReadError::Ahead {
                    after,
                    head: newest,
                });
            }
            if wait.is_zero() {
                return self.read_table(after, limit).await;
            }
        }
        // Nothing yet: wait for the head to move past `after`, a bounded number at once.
        let _permit = self
            .waiters
            .clone()
            .try_acquire_owned()
            .map_err(|_| ReadError::Busy)?;
        let mut head = self.head.clone();
        if tokio::time::timeout(wait, head.wait_for(|h| *h > after))
            .await
            .is_err()
        {
            return Ok(Page {
                changes: Vec::new(),
                next: after,
            });
        }
        match self.in_window(after, limit) {
            Window::Page(page) => Ok(page),
            Window::Ahead | Window::Older => self.read_table(after, limit).await,
        }
    }

    async fn read_table(&self, after: i64, limit: usize) -> Result<Page, ReadError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let changes: Vec<Told> = changes_after(&self.pool, after, limit)
            .await?
            .iter()
            .map(Told::from)
            .collect();
        let next = changes.last().map_or(after, |c| c.seq);
        Ok(Page { changes, next })
    }

    /// Serves from the window when `after` is in it or at its end.
    fn in_window(&self, after: i64, limit: usize) -> Window {
        let window = self.window.lock().expect("not poisoned");
        let first = window.changes.front().map_or(window.last + 1, |c| c.seq);
        if after > window.last {
            return Window::Ahead;
        }
        if after < first - 1 {
            return Window::Older;
        }
        let skip = usize::try_from(after - (first - 1)).expect("after is in the window");
        let changes: Vec<Told> = window
            .changes
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect();
        let next = changes.last().map_or(after, |c| c.seq);
        Window::Page(Page { changes, next })
    }

    /// A room's roster and the feed position it is valid at.
    pub async fn roster(&self, app: i64, room: &str) -> Result<Roster, sqlx::Error> {
        let dialect = match self.dialect.get() {
            Some(dialect) => *dialect,
            None => {
                let citus = sqlx::query_scalar!(
                    r#"SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')
                       AS "citus!""#
                )
                .fetch_one(&self.pool)
                .await?;
                let dialect = if citus {
                    Dialect::Citus
                } else {
                    Dialect::Postgres
                };
                *self.dialect.get_or_init(|| dialect)
            }
        };
        changes::roster(&self.pool, dialect, app, room).await
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

async fn listen(pool: &PgPool, channel: &str) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(channel).await.ok()?;
    Some(listener)
}
