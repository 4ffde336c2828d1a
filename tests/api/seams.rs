//! Nothing acknowledged waits behind anything else (docs/durability.md#the-writer): each fault
//! made as it happens, where the journal, the drain and the writer meet. A journal disk that
//! fills and stays full, a record this version cannot decode, a room row held by a forgotten
//! session (during a drain, and as many of them as there are writers), and a database dropped
//! and created again under load.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::{
    failures::{SmallDisk, journal_until_full, journaling_on},
    helpers::*,
    rows::*,
};

/// A session of its own that holds `rooms`' rows (`SELECT … FOR UPDATE` left open), as a
/// forgotten psql session would.
async fn hold_rooms(pool: &PgPool, rooms: &[&str]) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut blocker = pool.begin().await.unwrap();
    for room in rooms {
        let held = sqlx::query("SELECT 1 FROM rooms WHERE room_id = $1 FOR UPDATE")
            .bind(room)
            .execute(&mut *blocker)
            .await
            .unwrap();
        assert_eq!(held.rows_affected(), 1, "room {room} exists and is held");
    }
    blocker
}

#[sqlx::test]
async fn a_journal_disk_that_stays_full_never_stops_the_drain(pool: PgPool) {
    let Some(disk) = SmallDisk::mount(12 << 20) else {
        return;
    };
    let (proxy, app) = journaling_on(&pool, &disk).await;
    proxy.cut();
    // Callbacks of about 2.5 KiB (an unknown field pads them: kept in the payload, no member
    // rows to write) until the disk is full (bounded): more than half a 4 KiB page each, so
    // every record fills a page of its own, and removing a drain step's worth frees (and must
    // note as freed) over a thousand pages: the removal needs more new pages than an append.
    let pad = "p".repeat(2200);
    let stored = journal_until_full(&app, 20_000, |n| {
        let room = format!("r-{n}");
        let mut body = enter(&room, &["u"], 100 + n);
        body["Pad"] = json!(pad);
        (room, body)
    })
    .await;
    assert!(
        stored.len() > 2 * 1024,
        "more than two drain steps' worth journaled: {}",
        stored.len()
    );
    // What the failed appends left free (less than a record, but maybe a few pages) is taken
    // by another file, as another writer on a shared disk would: not one page is left, so the
    // journal's first removal finds no room either (bounded: the disk is 12 MiB).
    let ballast = disk.path().join("ballast");
    let mut file = std::fs::File::create(&ballast).unwrap();
    let page = vec![7u8; 4096];
    let mut filled = false;
    for _ in 0..3072 {
        match std::io::Write::write(&mut file, &page) {
            Ok(0) => {
                filled = true;
                break;
            }
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => {
                filled = true;
                break;
            }
            Err(e) => panic!("ballast: {e}"),
        }
    }
    assert!(filled, "the ballast took every free byte of the disk");
    // PostgreSQL comes back; the disk stays full for good. Removal cannot happen, applying must.
    proxy.restore();
    let applied = eventually(Duration::from_secs(120), || async {
        count(&pool, "SELECT count(*) FROM room_events").await == stored.len() as i64
    })
    .await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM room_events").await,
        stored.len() as i64,
        "every journaled callback applied though the disk is still full"
    );
    assert!(applied);
    // Each moved once, however often the removal failed meanwhile.
    let drained = eventually(Duration::from_secs(5), || async {
        metric(&app, "roomsync_journal_drained_total").await == stored.len() as f64
    })
    .await;
    assert!(drained, "each journaled callback counted as moved once");
    for room in stored.iter().step_by(97) {
        assert_eq!(roster(&pool, room).await, vec!["u"]);
    }
    app.stop().await;
    drop(file);
}

/// Flips the layout version byte of the pending record with the given index (in key order) of
/// a journal file no process has open: the record of a newer version, after a downgrade.
fn make_unreadable(path: &std::path::Path, index: usize) -> u64 {
    let db = redb::Database::create(path).unwrap();
    let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("pending_callbacks");
    let tx = db.begin_write().unwrap();
    let key = {
        let mut pending = tx.open_table(table).unwrap();
        let (key, mut bytes) = {
            use redb::ReadableTable;
            let entry = pending.iter().unwrap().nth(index).unwrap().unwrap();
            (entry.0.value(), entry.1.value().to_vec())
        };
        bytes[0] += 1;
        pending.insert(key, bytes.as_slice()).unwrap();
        key
    };
    tx.commit().unwrap();
    key
}

#[sqlx::test]
async fn a_record_this_version_cannot_decode_blocks_nothing(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let journal = path.to_str().unwrap();
    let proxy = Proxy::start(server_of(&pool)).await;
    let app = spawn_app_with(proxy.pool_for(&pool), &[("JOURNAL_PATH", journal)]).await;
    proxy.cut();
    for n in 0..31 {
        app.deliver(&enter(&format!("r-{n}"), &["u"], 100 + n))
            .await;
    }
    assert_eq!(journal_depth(&app).await, 31);
    app.stop().await;
    let key = make_unreadable(&path, 7);
    proxy.restore();
    let app = spawn_app_with(proxy.pool_for(&pool), &[("JOURNAL_PATH", journal)]).await;
    let stored = eventually(Duration::from_secs(15), || async {
        count(&pool, "SELECT count(*) FROM room_events").await == 30
    })
    .await;
    assert!(stored, "the 30 others are stored");
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&app, "roomsync_journal_unreadable").await == 1.0
        })
        .await
    );
    // Kept for the operator (and for the newer version), not lost; nothing else waits.
    let removed = eventually(Duration::from_secs(5), || async {
        journal_depth(&app).await == 1
    })
    .await;
    assert!(removed, "the others removed, it is kept");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM rejected_callbacks").await,
        0
    );
    // A new callback is not held up by it either.
    app.deliver(&enter("after", &["u"], 5_000)).await;
    assert_eq!(roster(&pool, "after").await, vec!["u"]);
    app.stop().await;
    // The operator sees it, exports its bytes, and removes it.
    let listing = roomsync::journal::operator::list(&path).unwrap();
    assert_eq!(listing.unreadable.len(), 1);
    assert_eq!(listing.unreadable[0].0, key);
    let raw = roomsync::journal::operator::raw(&path, key)
        .unwrap()
        .unwrap();
    assert_eq!(raw[0], 2, "the newer layout version");
    assert!(matches!(
        roomsync::journal::operator::remove_unreadable(&path, key + 100),
        Err(roomsync::journal::operator::RemoveError::Missing(_))
    ));
    roomsync::journal::operator::remove_unreadable(&path, key).unwrap();
    assert!(
        roomsync::journal::operator::list(&path)
            .unwrap()
            .unreadable
            .is_empty()
    );
}

#[sqlx::test]
async fn a_room_held_elsewhere_holds_up_only_its_own_room_in_the_drain(pool: PgPool) {
    let proxy = Proxy::start(server_of(&pool)).await;
    let app = spawn_app(proxy.pool_for(&pool)).await;
    app.deliver(&enter("held", &["a"], 1)).await;
    proxy.cut();
    // 30 other rooms and the held one, journaled while PostgreSQL is unreachable.
    let mut sent = 0;
    for n in 0..600 {
        let room = if n % 20 == 0 {
            "held".to_owned()
        } else {
            format!("free-{}", n % 30)
        };
        app.deliver(&enter(&room, &[&format!("u{n}")], 100 + n))
            .await;
        sent += 1;
    }
    assert_eq!(journal_depth(&app).await, sent);
    let blocker = hold_rooms(&pool, &["held"]).await;
    proxy.restore();
    let held_count = 600 / 20;
    let others = eventually(Duration::from_secs(15), || async {
        count(
            &pool,
            "SELECT count(*) FROM room_events WHERE room_id <> 'held'",
        )
        .await
            == sent - held_count
    })
    .await;
    assert!(
        others,
        "every other room's records applied while one room is held: {} of {}",
        count(
            &pool,
            "SELECT count(*) FROM room_events WHERE room_id <> 'held'"
        )
        .await,
        sent - held_count
    );
    // Live callbacks for free rooms are stored directly meanwhile.
    let started = Instant::now();
    app.deliver(&enter("live", &["x"], 10_000)).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(roster(&pool, "live").await, vec!["x"]);
    // The held room's own records wait in the journal (parked, or pending again), none applied.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM room_events WHERE room_id = 'held'"
        )
        .await,
        1
    );
    assert!(journal_depth(&app).await >= 1);
    // Released: the held room's records are applied too (parked ones at their next try).
    blocker.rollback().await.unwrap();
    let all = eventually(Duration::from_secs(30), || async {
        journal_depth(&app).await == 0
    })
    .await;
    assert!(all, "the held room's records are applied once it is free");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM room_events").await,
        sent + 2,
        "each once"
    );
    assert_eq!(roster(&pool, "held").await.len(), held_count as usize + 1);
    app.stop().await;
}

#[sqlx::test]
async fn as_many_held_rooms_as_writers_stop_no_direct_write(pool: PgPool) {
    let app = spawn_app_with(pool.clone(), &[("BATCH_WRITERS", "2")]).await;
    app.deliver(&enter("held-1", &["a"], 1)).await;
    app.deliver(&enter("held-2", &["a"], 1)).await;
    let blocker = hold_rooms(&pool, &["held-1", "held-2"]).await;
    // Callbacks for the held rooms and for free ones, at once.
    let sends = (0..48).map(|n| {
        let app = &app;
        async move {
            let room = match n % 8 {
                0 => "held-1".to_owned(),
                4 => "held-2".to_owned(),
                _ => format!("free-{n}"),
            };
            let started = Instant::now();
            let (status, _) = app.send(&enter(&room, &[&format!("u{n}")], 100 + n)).await;
            (room, status, started.elapsed())
        }
    });
    let answers = futures_util::future::join_all(sends).await;
    let mut free: Vec<Duration> = Vec::new();
    for (room, status, took) in &answers {
        assert_eq!(*status, 200, "{room}");
        assert!(
            *took < Duration::from_secs(2),
            "{room} answered in {took:?}"
        );
        if room.starts_with("free") {
            free.push(*took);
        }
    }
    free.sort();
    // The free rooms' callbacks reached PostgreSQL directly, not through the journal.
    let direct = count(
        &pool,
        "SELECT count(*) FROM room_events WHERE room_id LIKE 'free-%'",
    )
    .await;
    assert_eq!(
        direct, 36,
        "every free room's callback stored while two rooms are held"
    );
    assert!(
        free[free.len() / 2] < Duration::from_millis(1200),
        "median {:?}",
        free[free.len() / 2]
    );
    blocker.rollback().await.unwrap();
    let settled = eventually(Duration::from_secs(30), || async {
        journal_depth(&app).await == 0
    })
    .await;
    assert!(settled);
    assert_eq!(roster(&pool, "held-1").await.len(), 7);
    assert_eq!(roster(&pool, "held-2").await.len(), 7);
    app.stop().await;
}

#[sqlx::test]
async fn a_database_dropped_and_created_again_is_migrated_while_running(pool: PgPool) {
    let options = pool.connect_options().as_ref().clone();
    let name = options.get_database().unwrap().to_owned();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone().database("postgres"))
        .await
        .unwrap();
    let app = spawn_app_with(pool.clone(), &[("RUN_MIGRATIONS", "true")]).await;
    app.deliver(&enter("before", &["a"], 1)).await;
    // Load from beside: callbacks keep coming while the database goes and comes back.
    let load = {
        let (client, url) = (app.client.clone(), app.address.clone());
        let query = app.query_for(&enter("r", &["u"], 1));
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for n in 0..400 {
                let body = enter(&format!("load-{}", n % 25), &[&format!("u{n}")], 1_000 + n);
                let sent = Instant::now();
                let response = client
                    .post(format!("{url}/callback?{query}"))
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                answers.push((n, sent, response.status().as_u16()));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"DROP DATABASE "{name}" WITH (FORCE)"#
    )))
    .execute(&admin)
    .await
    .unwrap();
    let dropped = Instant::now();
    sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(&admin)
        .await
        .unwrap();
    let answers = load.await.unwrap();
    assert!(
        answers.iter().all(|(_, _, s)| *s == 200),
        "every answer 200"
    );
    let after_drop: Vec<i64> = answers
        .iter()
        .filter(|(_, sent, _)| *sent > dropped)
        .map(|(n, _, _)| *n)
        .collect();
    assert!(after_drop.len() > 100, "load went on after the drop");
    // A new pool: the test's old connections went with the old database.
    let fresh = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let settled = eventually(Duration::from_secs(30), || async {
        journal_depth(&app).await == 0
            && app.get("/readyz").await.status() == 200
            && sqlx::query_scalar::<_, i64>("SELECT count(*) FROM room_events")
                .fetch_one(&fresh)
                .await
                .is_ok()
    })
    .await;
    assert!(settled, "migrated and drained while running");
    assert_eq!(metric(&app, "roomsync_journal_parked").await, 0.0);
    // Every callback sent after the drop is in the new database (those before it went with
    // the old one), none twice.
    let events: Vec<(String, i64)> = sqlx::query_as(
        "SELECT room_id, (extract(epoch FROM event_at) * 1000)::int8 FROM room_events WHERE room_id LIKE 'load-%'",
    )
    .fetch_all(&fresh)
    .await
    .unwrap();
    let times: std::collections::HashSet<i64> = events.iter().map(|(_, at)| *at).collect();
    assert_eq!(times.len(), events.len(), "none twice");
    let missing: Vec<i64> = after_drop
        .iter()
        .filter(|n| !times.contains(&(1_000 + **n)))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "sent after the drop, answered 200, not stored: {missing:?}"
    );
    // And the service writes there directly again.
    app.deliver(&enter("after", &["z"], 9_000)).await;
    assert_eq!(roster(&fresh, "after").await, vec!["z"]);
    app.stop().await;
    fresh.close().await;
}
