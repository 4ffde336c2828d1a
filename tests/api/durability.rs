//! docs/durability.md: nothing answered 200 is lost when PostgreSQL goes away, across restarts, and the
//! journal's bound.

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;

use crate::{helpers::*, rows::*};

/// `n` enters into `room` of users `u0`, `u1`, ... at `from`, `from + 1`, ... ms.
fn enters(room: &str, n: i64, from: i64) -> Vec<Value> {
    (0..n)
        .map(|i| enter(room, &[&format!("u{i}")], from + i))
        .collect()
}

#[sqlx::test]
async fn outage_is_journaled_then_drained_exactly_once(pool: PgPool) {
    let proxy = Proxy::start(server_of(&pool)).await;
    let app = spawn_app(proxy.pool_for(&pool)).await;
    let before = enters("r", 5, 100);
    for body in &before {
        app.deliver(body).await;
    }
    // On a busy machine a slow commit is answered from the journal (and still commits): let
    // such a record drain before the outage, so that the journal holds the outage's alone.
    let settled = eventually(Duration::from_secs(15), || async {
        journal_depth(&app).await == 0
    })
    .await;
    assert!(settled);
    proxy.cut();
    let during = enters("r", 40, 1000);
    for body in &during {
        let started = Instant::now();
        app.deliver(body).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered inside Tencent's 2 s"
        );
    }
    // Also a callback already stored before the outage, and a leave of an early member.
    app.deliver(&before[0]).await;
    app.deliver(&leave("r", &["u0"], "Kicked", 5000)).await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["journal_depth"], 42);
    assert_eq!(history(&pool).await, 5);

    proxy.restore();
    assert!(
        eventually(Duration::from_secs(15), || async {
            history(&pool).await == 5 + 40 + 1
        })
        .await
    );
    // The journal forgets a record just after its commit: wait for that too.
    let emptied = eventually(Duration::from_secs(5), || async {
        let ready: Value = app.get("/readyz").await.json().await.unwrap();
        ready["journal_depth"] == 0
    })
    .await;
    assert!(emptied, "the journal is empty once drained");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("roomsync_journal_drained_total 42"),
        "{metrics}"
    );
    assert!(
        metrics.contains("roomsync_journal_appended_total 42"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"command="member_enter",outcome="journaled"} 41"#),
        "{metrics}"
    );
    let roster = roster(&pool, "r").await;
    assert_eq!(roster.len(), 39);
    assert!(!roster.contains(&"u0".to_string()));
    // The direct path is back.
    app.deliver(&enter("r", &["late"], 9000)).await;
    assert_eq!(history(&pool).await, 47);
    app.stop().await;
}

#[sqlx::test]
async fn a_restart_with_a_full_journal_drains_when_the_database_returns(pool: PgPool) {
    let proxy = Proxy::start(server_of(&pool)).await;
    let journal_dir = tempfile::tempdir().unwrap();
    let journal = journal_dir.path().join("shared.redb");
    let journal = journal.to_str().unwrap();
    let first = spawn_app_with(proxy.pool_for(&pool), &[("JOURNAL_PATH", journal)]).await;
    proxy.cut();
    for body in enters("r", 20, 1) {
        first.deliver(&body).await;
    }
    first.stop().await;
    // Started while the database is still away: it comes up, and holds the journal.
    let second = spawn_app_with(proxy.pool_for(&pool), &[("JOURNAL_PATH", journal)]).await;
    let ready: Value = second.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["journal_depth"], 20);
    second.deliver(&enter("r", &["during-restart"], 500)).await;
    assert_eq!(history(&pool).await, 0);
    proxy.restore();
    assert!(
        eventually(Duration::from_secs(15), || async {
            history(&pool).await == 21
        })
        .await
    );
    assert_eq!(roster(&pool, "r").await.len(), 21);
    second.stop().await;
}

#[sqlx::test]
async fn past_its_bound_the_journal_answers_503_and_keeps_what_it_took(pool: PgPool) {
    let proxy = Proxy::start(server_of(&pool)).await;
    let app = spawn_app_with(proxy.pool_for(&pool), &[("JOURNAL_MAX_BYTES", "3000")]).await;
    proxy.cut();
    let mut accepted = 0;
    let mut refused = None;
    for body in enters("r", 60, 1) {
        let (status, answer) = app.send(&body).await;
        match status {
            200 => accepted += 1,
            _ => {
                refused = Some((status, answer));
                break;
            }
        }
    }
    let (status, answer) = refused.expect("the bound was reached");
    assert_eq!((status, answer["ErrorCode"].as_u64()), (503, Some(50305)));
    assert!(accepted > 3, "{accepted} accepted before the bound");
    proxy.restore();
    assert!(
        eventually(Duration::from_secs(15), || async {
            history(&pool).await == accepted
        })
        .await
    );
    // Room again once drained.
    app.deliver(&enter("r", &["after"], 100_000)).await;
    assert_eq!(history(&pool).await, accepted + 1);
    app.stop().await;
}
