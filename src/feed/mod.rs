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

pub(crate) mod told;

use told::Chunk;
pub use told::{Page, Told};

use crate::store::{
    DbRuntime, Dialect, NotifyMode,
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

/// Waiting long polls past which the feed is crowded: then a woken poll answers no sooner than
/// CROWD_LINGER after it began, so a crowd of followers sends answers (and gets asked again)
/// about every CROWD_LINGER each, not at every read of the feed: the work of serving them stays
/// off the callbacks' CPUs. Under CROWD a poll answers as soon as the feed is read.
const CROWD: usize = 32;
/// At most this late after the commit that wakes it (under 100 ms: docs/feed.md#http).
const CROWD_LINGER: Duration = Duration::from_millis(80);

/// Readers' own queries at once (a position older than the window, a roster, the console's
/// reads): the pool is the callbacks' too, and hundreds of readers behind must queue for these,
/// not take the connections the writers need.
const READER_QUERIES: usize = 2;
/// The longest a reader waits for its turn to query before it is told to come back (503).
const TURN_WAIT: Duration = Duration::from_secs(5);

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
    /// Changes with consecutive `seq`, ending at `last`, as the reader read them.
    chunks: VecDeque<Arc<Chunk>>,
    /// How many changes `chunks` holds.
    kept: usize,
    /// The newest `seq` read.
    last: i64,
    /// When the oldest kept change was last read (retention deletes in the background,
    /// perhaps in another process): the window never serves what the table no longer has.
    oldest_read: Option<tokio::time::Instant>,
}

impl Recent {
    /// A read's changes, kept whole; the oldest reads go past KEPT changes.
    fn push(&mut self, chunk: Chunk) {
        self.last = chunk.last();
        self.kept += chunk.len();
        self.chunks.push_back(Arc::new(chunk));
        while self.kept > KEPT
            && let Some(oldest) = self.chunks.pop_front()
        {
            self.kept -= oldest.len();
        }
    }

    /// Drops the changes older than `oldest` (retention deleted them from the table).
    fn forget_before(&mut self, oldest: i64) {
        while let Some(first) = self.chunks.front().cloned()
            && first.after() < oldest - 1
        {
            self.chunks.pop_front();
            self.kept -= first.len();
            if first.last() >= oldest {
                let rest = first.part(oldest - 1, first.len());
                self.kept += rest.len();
                self.chunks.push_front(Arc::new(rest));
            }
        }
    }

    /// The changes after `after`, at most `limit`: the window's own chunks where `after` is a
    /// chunk's start and the chunk fits, a part of one otherwise.
    fn page(&self, after: i64, limit: usize) -> Window {
        let first = self.chunks.front().map_or(self.last + 1, |c| c.after() + 1);
        if after > self.last {
            return Window::Ahead;
        }
        if after < first - 1 {
            return Window::Older;
        }
        let from = self.chunks.partition_point(|c| c.last() <= after);
        let mut page = Page::empty(after);
        let mut left = limit;
        for chunk in self.chunks.range(from..) {
            if left == 0 {
                break;
            }
            let chunk = if chunk.after() == page.next && chunk.len() <= left {
                chunk.clone()
            } else {
                Arc::new(chunk.part(page.next, left))
            };
            left -= chunk.len();
            page.next = chunk.last();
            page.chunks.push(chunk);
        }
        Window::Page(page)
    }
}

#[derive(Clone)]
pub struct Hub {
    pool: PgPool,
    /// Where readers' queries run (the pool's runtime, not the HTTP worker's).
    runtime: DbRuntime,
    window: Arc<Mutex<Recent>>,
    head: watch::Receiver<i64>,
    waiters: Arc<Semaphore>,
    max_waiters: usize,
    /// Turns to query the database on a reader's behalf (READER_QUERIES).
    queries: Arc<Semaphore>,
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
    /// Too many readers wait already, or wait for a turn to query.
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
            runtime: DbRuntime::current(),
            window: Arc::new(Mutex::new(Recent {
                chunks: VecDeque::new(),
                kept: 0,
                last,
                oldest_read: None,
            })),
            head: rx,
            waiters: Arc::new(Semaphore::new(max_waiters)),
            max_waiters,
            queries: Arc::new(Semaphore::new(READER_QUERIES)),
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
            window.forget_before(oldest);
            window.oldest_read = Some(tokio::time::Instant::now());
        }
        loop {
            let last = self.window.lock().expect("not poisoned").last;
            let read = match changes_after(&self.pool, last, READ).await {
                Ok(read) => read,
                // Retention passed the window (it was not read for days): go on from the oldest.
                Err(FeedError::Gone { oldest }) => {
                    let mut window = self.window.lock().expect("not poisoned");
                    window.chunks.clear();
                    window.kept = 0;
                    window.last = oldest - 1;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let full = read.len() == READ as usize;
            // Made outside the lock: readers go on being served meanwhile.
            let told: Vec<Told> = read.iter().map(Told::from).collect();
            let newest = {
                let mut window = self.window.lock().expect("not poisoned");
                if !told.is_empty() {
                    window.push(Chunk::new(told));
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
        let began = tokio::time::Instant::now();
        let ahead = match self.in_window(after, limit) {
            Window::Page(page) if !page.is_empty() || wait.is_zero() => return Ok(page),
            Window::Page(_) => false,
            Window::Ahead => true,
            Window::Older => return self.read_table(after, limit).await,
        };
        if ahead {
            // Past what this reader has read: a position from the future is an error; one
            // this reader has not caught up with yet is waited for like the head.
            let newest = {
                let _turn = self.turn().await?;
                let pool = self.pool.clone();
                self.runtime.run(async move { head(&pool).await }).await?
            };
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
            return Ok(Page::empty(after));
        }
        if self.max_waiters - self.waiters.available_permits() > CROWD {
            tokio::time::sleep_until(began + CROWD_LINGER).await;
        }
        match self.in_window(after, limit) {
            Window::Page(page) => Ok(page),
            Window::Ahead | Window::Older => self.read_table(after, limit).await,
        }
    }

    async fn read_table(&self, after: i64, limit: usize) -> Result<Page, ReadError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let _turn = self.turn().await?;
        let pool = self.pool.clone();
        let changes: Vec<Told> = self
            .runtime
            .run(async move { changes_after(&pool, after, limit).await })
            .await?
            .iter()
            .map(Told::from)
            .collect();
        Ok(Page::of(after, changes))
    }

    /// Serves from the window when `after` is in it or at its end.
    fn in_window(&self, after: i64, limit: usize) -> Window {
        self.window.lock().expect("not poisoned").page(after, limit)
    }

    /// A turn to query the database for a reader: at most READER_QUERIES at once, the others
    /// wait (up to TURN_WAIT, then [`ReadError::Busy`]).
    pub async fn turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ReadError> {
        match tokio::time::timeout(TURN_WAIT, self.queries.acquire()).await {
            Ok(permit) => Ok(permit.expect("the semaphore is never closed")),
            Err(_) => Err(ReadError::Busy),
        }
    }

    /// A room's roster and the feed position it is valid at.
    pub async fn roster(&self, app: i64, room: &str) -> Result<Roster, ReadError> {
        let _turn = self.turn().await?;
        let (pool, known, room) = (self.pool.clone(), self.dialect.clone(), room.to_owned());
        let roster = self.runtime.run(async move {
            let dialect = match known.get() {
                Some(dialect) => *dialect,
                None => {
                    let citus = sqlx::query_scalar!(
                        r#"SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')
                       AS "citus!""#
                    )
                    .fetch_one(&pool)
                    .await?;
                    let dialect = if citus {
                        Dialect::Citus
                    } else {
                        Dialect::Postgres
                    };
                    *known.get_or_init(|| dialect)
                }
            };
            changes::roster(&pool, dialect, app, &room).await
        });
        Ok(roster.await?)
    }

    /// Runs a reader's query where the pool's connections belong (see [`DbRuntime`]), in its
    /// turn: the query gets its own clone of the pool.
    pub async fn query<T: Send + 'static, F>(
        &self,
        work: impl FnOnce(PgPool) -> F,
    ) -> Result<T, ReadError>
    where
        F: std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    {
        let _turn = self.turn().await?;
        Ok(self.runtime.run(work(self.pool.clone())).await?)
    }
}

async fn listen(pool: &PgPool, channel: &str) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(channel).await.ok()?;
    Some(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told(seq: i64, room: &str, kind: &str) -> Told {
        told::sample(seq, room, kind, &[&format!("u{seq}")])
    }

    /// A window that read changes 11..=30 in reads of 5, 10 and 5.
    fn window() -> Recent {
        let mut recent = Recent {
            chunks: VecDeque::new(),
            kept: 0,
            last: 10,
            oldest_read: None,
        };
        for (from, to) in [(11, 15), (16, 25), (26, 30)] {
            let room = if from == 16 { "b" } else { "a" };
            recent.push(Chunk::new(
                (from..=to)
                    .map(|s| told(s, room, "member.entered"))
                    .collect(),
            ));
        }
        recent
    }

    fn seqs(page: &Page) -> Vec<i64> {
        page.changes().map(|c| c.seq).collect()
    }

    #[test]
    fn a_page_is_the_same_changes_whatever_the_reads_were() {
        let recent = window();
        for after in 10..=30 {
            for limit in [1, 3, 5, 7, 10, 15, 100] {
                let Window::Page(page) = recent.page(after, limit) else {
                    panic!("{after} is in the window");
                };
                let want: Vec<i64> = (after + 1..=30).take(limit).collect();
                assert_eq!(seqs(&page), want, "after {after}, limit {limit}");
                assert_eq!(page.len(), want.len());
                assert_eq!(page.next, want.last().copied().unwrap_or(after));
                // The JSON is the changes' own, in order, once.
                let body: serde_json::Value = serde_json::from_str(&page.to_json()).unwrap();
                let got: Vec<i64> = body["changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["seq"].as_i64().unwrap())
                    .collect();
                assert_eq!(got, want);
                assert_eq!(body["next"], page.next);
                // The moves add up to one per change: each change here moves its room by one.
                let mut moves = String::from("[");
                page.moves(&mut moves);
                moves.push(']');
                let moves: Vec<(i64, String, i32)> = serde_json::from_str(&moves).unwrap();
                assert_eq!(
                    moves.iter().map(|m| m.2 as usize).sum::<usize>(),
                    want.len()
                );
            }
        }
        // A reader at a read's start gets that read itself, not a copy.
        let Window::Page(page) = recent.page(15, 100) else {
            panic!()
        };
        assert!(Arc::ptr_eq(&page.chunks[0], &recent.chunks[1]));
        assert_eq!(page.chunks.len(), 2);
        assert!(matches!(recent.page(31, 10), Window::Ahead));
        assert!(matches!(recent.page(9, 10), Window::Older));
    }

    #[test]
    fn the_window_keeps_whole_reads_and_forgets_what_retention_deleted() {
        let mut recent = window();
        recent.forget_before(18);
        assert_eq!(recent.kept, 13);
        assert_eq!(recent.chunks.front().unwrap().after(), 17);
        assert!(matches!(recent.page(16, 10), Window::Older));
        let Window::Page(page) = recent.page(17, 100) else {
            panic!()
        };
        assert_eq!(seqs(&page), (18..=30).collect::<Vec<_>>());
        // Past KEPT, the oldest reads go whole.
        let mut seq = 30;
        while seq < 30 + KEPT as i64 {
            recent.push(Chunk::new(
                (seq + 1..=seq + 500)
                    .map(|s| told(s, "c", "member.entered"))
                    .collect(),
            ));
            seq += 500;
        }
        assert!(recent.kept <= KEPT);
        assert_eq!(
            recent.kept,
            recent.chunks.iter().map(|c| c.len()).sum::<usize>()
        );
        assert_eq!(recent.last, seq);
        assert_eq!(
            recent.chunks.front().unwrap().after(),
            seq - recent.kept as i64
        );
    }
}
