//! The failure model (docs/durability.md#what-a-failure-means), each fault made the way it
//! happens: a real PostgreSQL stopped under concurrent load, a record PostgreSQL will not take
//! now (a trigger, a privilege, a full NOTIFY queue, a statement timeout) then will, and a real
//! small filesystem that fills up under the journal and is then freed. In every case nothing
//! answered 200 is lost, stuck, or applied twice.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::json;
use sqlx::PgPool;

use crate::{helpers::*, rows::*, server::PrivateServer};

/// One answered callback of the load.
struct Answered {
    sent: Instant,
    took: Duration,
    status: u16,
    room: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_stop_under_load_turns_to_the_journal_within_a_second() {
    let Some(server) = PrivateServer::start() else {
        return;
    };
    let pool = server.migrated_pool().await;
    let app = Arc::new(spawn_app(pool.clone()).await);
    let answers: Arc<Mutex<Vec<Answered>>> = Arc::default();
    // A lull just before the stop: the pool's connections are idle when the server ends them,
    // so no query in flight reports the outage, only the pool (connections refused).
    let lull = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    // 64 senders, each with a room of its own; bounded in count and in time.
    let senders: Vec<_> = (0..64)
        .map(|sender| {
            let (app, answers, lull) = (app.clone(), answers.clone(), lull.clone());
            tokio::spawn(async move {
                let room = format!("load-{sender}");
                for n in 0..400i64 {
                    if started.elapsed() > Duration::from_secs(6) {
                        break;
                    }
                    while lull.load(std::sync::atomic::Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let user = format!("u{n}");
                    let sent = Instant::now();
                    let (status, _) = app.send(&enter(&room, &[&user], 1_000 + n)).await;
                    let took = sent.elapsed();
                    answers.lock().unwrap().push(Answered {
                        sent,
                        took,
                        status,
                        room: room.clone(),
                    });
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    lull.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = Instant::now();
    tokio::task::block_in_place(|| server.stop());
    lull.store(false, std::sync::atomic::Ordering::SeqCst);
    let down_seen = eventually(Duration::from_secs(5), || async {
        metric(&app, "roomsync_database_up").await == 0.0
    })
    .await;
    for sender in senders {
        sender.await.unwrap();
    }
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    assert!(down_seen, "the outage was recognised");
    assert!(
        answers.iter().all(|a| a.status == 200),
        "every callback answered 200"
    );
    let slowest = answers.iter().map(|a| a.took).max().unwrap();
    assert!(
        slowest < Duration::from_secs(2),
        "inside Tencent's 2 s: {slowest:?}"
    );
    // From a second after the stop, the journal takes every callback at once (before, each
    // waited for a pool timeout: 1.2 s).
    let late: Vec<Duration> = answers
        .iter()
        .filter(|a| a.sent > stopped_at + Duration::from_secs(1))
        .map(|a| a.took)
        .collect();
    assert!(
        late.len() > 100,
        "load went on after the stop: {}",
        late.len()
    );
    let slowest_late = late.iter().max().unwrap();
    assert!(
        *slowest_late < Duration::from_millis(500),
        "journaled without waiting on the database: {slowest_late:?}"
    );
    assert!(metric(&app, "roomsync_journal_appended_total").await >= late.len() as f64);

    // The server comes back: everything answered 200 is stored, once.
    tokio::task::block_in_place(|| server.restart());
    let drained = eventually(Duration::from_secs(60), || async {
        journal_depth(&app).await == 0
    })
    .await;
    assert!(drained, "the journal drains once the server is back");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM room_events").await,
        answers.len() as i64,
        "every acknowledged callback once"
    );
    for sender in 0..64 {
        let room = format!("load-{sender}");
        let sent = answers.iter().filter(|a| a.room == room).count();
        assert_eq!(roster(&pool, &room).await.len(), sent, "{room}");
    }
    assert_eq!(metric(&app, "roomsync_database_up").await, 1.0);
    Arc::into_inner(app).unwrap().stop().await;
    pool.close().await;
    drop(server);
}

/// What makes PostgreSQL refuse the enter of room `stuck` at 100 ms for now.
#[derive(Clone, Copy)]
enum Cause {
    /// A trigger raises this SQLSTATE.
    Raise(&'static str),
    /// The statement runs past the database's `statement_timeout`.
    Timeout,
}

async fn block(pool: &PgPool, cause: Cause) {
    let action = match cause {
        Cause::Raise(code) => format!("RAISE EXCEPTION 'not now' USING ERRCODE = '{code}';"),
        Cause::Timeout => "PERFORM pg_sleep(5);".to_owned(),
    };
    if let Cause::Timeout = cause {
        sqlx::raw_sql(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET statement_timeout = 300', current_database()); END $$",
        )
        .execute(pool)
        .await
        .unwrap();
    }
    on_history_insert(
        pool,
        "not_now",
        "NEW.room_id = 'stuck' AND NEW.event_type = 'Enter'",
        &action,
    )
    .await;
}

async fn unblock(pool: &PgPool) {
    sqlx::raw_sql("DROP TRIGGER not_now ON room_events")
        .execute(pool)
        .await
        .unwrap();
}

/// Journaled callbacks for rooms `a`, `stuck` and `b`; the one PostgreSQL will not take now is
/// parked, the others drain; a live one of the same kind is journaled (or, for a data error,
/// answered 503 and kept); once the cause passes, the parked ones are applied and the view is
/// the sequential result, as if nothing had been held back.
async fn parked_then_applied(pool: PgPool, cause: Cause) {
    block(&pool, cause).await;
    let proxy = Proxy::start(server_of(&pool)).await;
    let app = spawn_app(proxy.pool_for(&pool)).await;
    proxy.cut();
    app.deliver(&enter("a", &["u1"], 100)).await;
    app.deliver(&enter("stuck", &["u2"], 100)).await;
    app.deliver(&leave("stuck", &["u2"], "Leave", 200)).await;
    app.deliver(&enter("b", &["u3"], 100)).await;
    assert_eq!(journal_depth(&app).await, 4);
    proxy.restore();
    let held = eventually(Duration::from_secs(20), || async {
        journal_depth(&app).await == 1 && readyz_count(&app, "journal_parked").await == 1
    })
    .await;
    assert!(held, "the others drain past the record that is held back");
    assert_eq!(roster(&pool, "a").await, vec!["u1"]);
    assert_eq!(roster(&pool, "b").await, vec!["u3"]);
    assert_eq!(metric(&app, "roomsync_journal_parked").await, 1.0);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM rejected_callbacks").await,
        0,
        "an acknowledged callback is never moved out of the journal"
    );

    // Live: a data error is refused (not acknowledged); anything else is journaled.
    let (status, answer) = app.send(&enter("stuck", &["u9"], 300)).await;
    let refused = matches!(cause, Cause::Raise(code) if code.starts_with("22"));
    if refused {
        assert_eq!((status, answer["ErrorCode"].clone()), (503, json!(50304)));
    } else {
        assert_eq!((status, answer), (200, ok()));
    }
    app.deliver(&enter("a", &["u5"], 200)).await;
    assert_eq!(roster(&pool, "a").await, vec!["u1", "u5"]);

    unblock(&pool).await;
    let applied = eventually(Duration::from_secs(30), || async {
        journal_depth(&app).await == 0
    })
    .await;
    assert!(
        applied,
        "the parked records are applied once the cause passes"
    );
    // The sequential result: the enter at 100 is older than the leave at 200.
    let u2 = member(&pool, "stuck", "u2").await.unwrap();
    assert!(!u2.in_room);
    assert_eq!((u2.entered_at, u2.left_at), (Some(ms(100)), Some(ms(200))));
    assert_eq!(
        roster(&pool, "stuck").await,
        if refused { vec![] } else { vec!["u9"] }
    );
    assert_eq!(metric(&app, "roomsync_journal_parked").await, 0.0);
    app.stop().await;
}

#[sqlx::test]
async fn a_record_a_trigger_refuses_for_now_is_parked_then_applied(pool: PgPool) {
    parked_then_applied(pool, Cause::Raise("P0001")).await;
}

#[sqlx::test]
async fn a_record_without_privilege_for_now_is_parked_then_applied(pool: PgPool) {
    parked_then_applied(pool, Cause::Raise("42501")).await;
}

#[sqlx::test]
async fn a_full_notify_queue_parks_records_and_never_discards_them(pool: PgPool) {
    // What PostgreSQL raises while an idle listener holds the NOTIFY queue.
    parked_then_applied(pool, Cause::Raise("54000")).await;
}

#[sqlx::test]
async fn a_data_error_from_the_journal_is_parked_not_discarded(pool: PgPool) {
    parked_then_applied(pool, Cause::Raise("22003")).await;
}

#[sqlx::test]
async fn a_record_past_the_statement_timeout_is_parked_then_applied(pool: PgPool) {
    parked_then_applied(pool, Cause::Timeout).await;
}

/// Sends the callbacks `body(n)` for n = 0, 1, … (at most `most`) while PostgreSQL is cut, until
/// the journal's disk is full: three answers 503 `50306`. Returns the rooms answered 200.
pub async fn journal_until_full(
    app: &TestApp,
    most: i64,
    body: impl Fn(i64) -> (String, serde_json::Value),
) -> Vec<String> {
    let (mut stored, mut full) = (Vec::new(), 0);
    for n in 0..most {
        let (room, body) = body(n);
        let (status, answer) = app.send(&body).await;
        match status {
            200 => stored.push(room),
            503 => {
                assert_eq!(answer["ErrorCode"], json!(50306), "{answer}");
                full += 1;
                if full >= 3 {
                    break;
                }
            }
            other => panic!("unexpected answer {other}: {answer}"),
        }
    }
    assert!(full >= 3, "the disk filled up");
    stored
}

/// A real small filesystem (tmpfs) in a temporary directory, unmounted when dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (with the reason printed: the test then skips) where mounting is not permitted.
    pub fn mount(bytes: u64) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        mount_small_disk(dir.path(), bytes).then_some(Self { dir })
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Mounts a tmpfs of `bytes` at `dir`; false (with the reason printed) where that is not
/// permitted.
fn mount_small_disk(dir: &std::path::Path, bytes: u64) -> bool {
    let output = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(dir)
        .output();
    match output {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "SKIPPED: cannot mount a small filesystem: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            false
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot run mount: {e}");
            false
        }
    }
}

/// An application whose journal is on `disk` (unbounded by `JOURNAL_MAX_BYTES`, so the disk is
/// the bound), reaching PostgreSQL through a proxy the test can cut.
pub async fn journaling_on(pool: &PgPool, disk: &SmallDisk) -> (Proxy, TestApp) {
    let journal = disk.path().join("journal.redb");
    let proxy = Proxy::start(server_of(pool)).await;
    let app = spawn_app_tuned(
        proxy.pool_for(pool),
        &[
            ("JOURNAL_PATH", journal.to_str().unwrap()),
            ("JOURNAL_MAX_BYTES", "1073741824"),
        ],
        // Steps of 1,024 records, so that what fills the small disk takes several.
        |config| config.timings.drain_step = 1024,
    )
    .await;
    (proxy, app)
}

#[sqlx::test]
async fn a_full_journal_disk_recovers_without_a_restart(pool: PgPool) {
    let Some(disk) = SmallDisk::mount(4 << 20) else {
        return;
    };
    // Ballast to free later, as an operator frees space.
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![7u8; 1 << 20]).unwrap();
    let (proxy, app) = journaling_on(&pool, &disk).await;
    proxy.cut();
    // Large callbacks until the disk is full (bounded): their bytes in long ids rather than in
    // many members, so that what fills the disk is a few seconds of PostgreSQL's work beside
    // the suite, not a minute.
    let users: Vec<String> = (0..160)
        .map(|i| format!("user-{i:03}-{}", "x".repeat(190)))
        .collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let stored = journal_until_full(&app, 400, |n| {
        let room = format!("big-{n}");
        let body = enter(&room, &users, 100 + n);
        (room, body)
    })
    .await;
    assert!(!stored.is_empty());
    // PostgreSQL comes back while the disk is still full: what was journaled is applied, once.
    proxy.restore();
    // Bounded well above the few seconds this takes alone: the suite runs Citus load beside it,
    // and a stuck drain stays stuck however long it is given.
    let applied = eventually(Duration::from_secs(60), || async {
        count(&pool, "SELECT count(*) FROM room_events").await == stored.len() as i64
    })
    .await;
    assert!(
        applied,
        "the journaled callbacks are applied: {} of {} after 60 s, journal depth {}",
        count(&pool, "SELECT count(*) FROM room_events").await,
        stored.len(),
        journal_depth(&app).await
    );
    // Space is freed: the journal empties without a restart, nothing applied twice.
    std::fs::remove_file(&ballast).unwrap();
    let emptied = eventually(Duration::from_secs(30), || async {
        journal_depth(&app).await == 0
    })
    .await;
    assert!(emptied, "the journal empties once there is space");
    assert_eq!(
        metric(&app, "roomsync_journal_drained_total").await,
        stored.len() as f64,
        "each journaled callback moved once"
    );
    for room in &stored {
        assert_eq!(roster(&pool, room).await.len(), users.len());
    }
    // A new outage: the journal works again.
    proxy.cut();
    app.deliver(&enter("after", &["u1"], 5_000)).await;
    assert_eq!(journal_depth(&app).await, 1);
    proxy.restore();
    let drained = eventually(Duration::from_secs(20), || async {
        journal_depth(&app).await == 0
    })
    .await;
    assert!(drained);
    assert_eq!(roster(&pool, "after").await, vec!["u1"]);
    app.stop().await;
}

/// A drain step too big to commit within `DATABASE_WRITE_TIMEOUT_MS` (a loaded day: here each
/// history row costs 0.1 s) is not tried again at the same size, which would fail the same way
/// for ever: the next steps take half as many records, and everything is applied, once
/// (docs/durability.md#draining).
#[sqlx::test]
async fn a_drain_step_that_cannot_commit_in_time_is_halved_until_it_does(pool: PgPool) {
    on_history_insert(
        &pool,
        "slow_rows",
        "NEW.room_id LIKE 'slow-%'",
        "PERFORM pg_sleep(0.1);",
    )
    .await;
    let proxy = Proxy::start(server_of(&pool)).await;
    let app = spawn_app_tuned(
        proxy.pool_for(&pool),
        &[("DATABASE_WRITE_TIMEOUT_MS", "2000")],
        |_| {},
    )
    .await;
    proxy.cut();
    // Fifty rooms: the two writer tasks take 25 each, 2.5 s, past the limit; 12 or 13 fit.
    for n in 0..50 {
        app.deliver(&enter(&format!("slow-{n}"), &["u1"], 100))
            .await;
    }
    assert_eq!(journal_depth(&app).await, 50);
    proxy.restore();
    let drained = eventually(Duration::from_secs(60), || async {
        journal_depth(&app).await == 0
    })
    .await;
    assert!(
        drained,
        "the journal drains: {} of 50 applied, journal depth {}",
        count(&pool, "SELECT count(*) FROM room_events").await,
        journal_depth(&app).await
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM room_events").await, 50);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM room_members WHERE in_room").await,
        50
    );
    assert_eq!(metric(&app, "roomsync_journal_drained_total").await, 50.0);
    app.stop().await;
}

/// A room with a callback in the journal still to apply: its next callbacks join it there (at
/// once, in arrival order) rather than overtake it, and the other rooms' callbacks still go to
/// PostgreSQL (docs/durability.md#draining-beside-live-traffic).
#[sqlx::test]
async fn a_room_with_journaled_callbacks_keeps_its_order_and_holds_up_no_other(pool: PgPool) {
    // The first enter of room `slow` takes 3 s in PostgreSQL: past the commit timeout.
    on_history_insert(
        &pool,
        "slow_once",
        "NEW.room_id = 'slow' AND 'u1' = ANY(NEW.member_list)",
        "PERFORM pg_sleep(3);",
    )
    .await;
    let app = spawn_app(pool.clone()).await;
    app.deliver(&enter("slow", &["u1"], 100)).await;
    assert_eq!(metric(&app, "roomsync_store_slow_total").await, 1.0);
    assert_eq!(metric(&app, "roomsync_journal_appended_total").await, 1.0);

    // Room `slow` now has a journaled enter (PostgreSQL is still on it): the leave joins it
    // at once, without trying the database and waiting the commit timeout again.
    let started = Instant::now();
    app.deliver(&leave("slow", &["u1"], "Leave", 200)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "joined the journal at once: {took:?}"
    );
    assert_eq!(
        metric(&app, "roomsync_store_slow_total").await,
        1.0,
        "not tried"
    );
    assert_eq!(metric(&app, "roomsync_journal_appended_total").await, 2.0);

    // Another room is not held up: straight to PostgreSQL.
    app.deliver(&enter("free", &["u3"], 300)).await;
    assert_eq!(
        roster(&pool, "free").await,
        vec!["u3"],
        "stored before the answer"
    );
    assert_eq!(metric(&app, "roomsync_journal_appended_total").await, 2.0);

    let drained = eventually(Duration::from_secs(20), || async {
        journal_depth(&app).await == 0
    })
    .await;
    assert!(drained, "the journal drains");
    let u1 = member(&pool, "slow", "u1").await.unwrap();
    assert!(!u1.in_room, "the enter then the leave");
    assert_eq!((u1.entered_at, u1.left_at), (Some(ms(100)), Some(ms(200))));
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM room_events WHERE room_id = 'slow'"
        )
        .await,
        2,
        "each once"
    );
    // Both applied: the room is free again, and its next callback goes to PostgreSQL.
    app.deliver(&enter("slow", &["u4"], 400)).await;
    assert_eq!(roster(&pool, "slow").await, vec!["u4"]);
    assert_eq!(metric(&app, "roomsync_journal_appended_total").await, 2.0);
    app.stop().await;
}
