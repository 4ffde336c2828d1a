//! The contract on a real Citus cluster (docs/scaling.md#citus): run when `ROOMSYNC_CITUS_URL`
//! names the coordinator's database (`scripts/citus-cluster start DIR` prints it), skipped with
//! a message otherwise. The scenarios share that database, so one test runs them one after
//! another, each on emptied tables. With `ROOMSYNC_CITUS_DIR` (the cluster's folder) it also
//! stops the coordinator for real under load and checks the journal's drain.

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::{helpers::*, model, rows::*};

const ROOM_TABLES: [&str; 5] = [
    "room_checks",
    "room_events",
    "room_members",
    "room_seats",
    "rooms",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_holds_on_a_citus_cluster() {
    let Some(url) = std::env::var("ROOMSYNC_CITUS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!(
            "Citus tests skipped: ROOMSYNC_CITUS_URL is not set (scripts/citus-cluster start DIR)"
        );
        return;
    };
    // With the settings of roomsync's own sessions: the app under test uses this pool.
    let options = roomsync::store::session_settings(url.parse().expect("a URL"));
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect_with(options)
        .await
        .expect("the Citus coordinator");
    roomsync::store::MIGRATOR.run(&pool).await.unwrap();

    // roomsync's own migrations distributed the room tables by room, co-located.
    let distributed: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT logicalrelid::text, column_to_column_name(logicalrelid, partkey), colocationid
         FROM pg_dist_partition ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let names: Vec<&str> = distributed.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(names, ROOM_TABLES);
    assert!(distributed.iter().all(|(_, column, _)| column == "room_id"));
    assert!(
        distributed
            .iter()
            .all(|(_, _, group)| *group == distributed[0].2)
    );
    let workers = count(
        &pool,
        "SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND groupid > 0",
    )
    .await;
    assert!(workers >= 2, "a cluster with workers: {workers}");

    empty(&pool).await;
    model::two_instances_converge(pool.clone()).await;
    empty(&pool).await;
    model::rebuild_reproduces_the_live_view(pool.clone()).await;
    empty(&pool).await;
    without_a_room(&pool).await;
    if let Some(dir) = std::env::var("ROOMSYNC_CITUS_DIR")
        .ok()
        .filter(|d| !d.is_empty())
    {
        empty(&pool).await;
        coordinator_outage(&pool, &dir).await;
    } else {
        eprintln!("Citus coordinator outage skipped: ROOMSYNC_CITUS_DIR is not set");
    }
}

async fn empty(pool: &PgPool) {
    sqlx::raw_sql(
        "TRUNCATE room_checks, room_events, room_members, room_seats, rooms, rejected_callbacks,
             reconcile_budget",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// A callback without a room is stored under '' and is still exactly once.
async fn without_a_room(pool: &PgPool) {
    let app = spawn_app(pool.clone()).await;
    let body = serde_json::json!({"CallbackCommand": "X.NoRoom", "EventTime": 5, "A": 1});
    let query = "SdkAppid=1400000001&CallbackCommand=X.NoRoom";
    for _ in 0..2 {
        let (status, _) = answer(app.post_raw(query, body.to_string()).await).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        count(pool, "SELECT count(*) FROM room_events WHERE room_id = ''").await,
        1
    );
    assert_eq!(
        metric(
            &app,
            r#"roomsync_callbacks_total{command="other",outcome="duplicate"}"#
        )
        .await,
        1.0
    );
    app.stop().await;
}

/// The coordinator stopped for real while callbacks arrive: every one is answered 200 from the
/// journal, and once it is back the drain applies each once.
async fn coordinator_outage(pool: &PgPool, dir: &str) {
    let app = spawn_app(pool.clone()).await;
    app.deliver(&enter("outage", &["before"], 100)).await;
    let cluster = |action: &str| {
        let status = std::process::Command::new("scripts/citus-cluster")
            .args(["coordinator", dir, action])
            .status()
            .expect("scripts/citus-cluster");
        assert!(status.success(), "coordinator {action}");
    };
    tokio::task::block_in_place(|| cluster("stop"));
    let users: Vec<String> = (0..200).map(|i| format!("u{i:03}")).collect();
    let sends = users.iter().enumerate().map(|(i, user)| {
        let app = &app;
        async move { app.send(&enter("outage", &[user], 200 + i as i64)).await }
    });
    for (status, answer) in futures_util::future::join_all(sends).await {
        assert_eq!(status, 200, "{answer}");
    }
    assert!(
        journal_depth(&app).await > 0,
        "journaled while the coordinator is down"
    );
    tokio::task::block_in_place(|| cluster("start"));
    let drained = eventually(Duration::from_secs(90), || async {
        journal_depth(&app).await == 0
    })
    .await;
    assert!(drained, "the journal drains once the coordinator is back");
    assert_eq!(roster(pool, "outage").await.len(), 201);
    assert_eq!(count(pool, "SELECT count(*) FROM room_events").await, 201);
    app.stop().await;
}
