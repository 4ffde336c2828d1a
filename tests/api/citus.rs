//! The contract on a real Citus cluster (docs/scaling.md#citus): run when `ROOMSYNC_CITUS_URL`
//! names the coordinator's database (`scripts/citus-cluster start DIR` prints it), skipped with
//! a message otherwise. The scenarios share that database, so one test runs them one after
//! another, each on emptied tables. With `ROOMSYNC_CITUS_DIR` (the cluster's folder) it also
//! stops the coordinator for real under load and checks the journal's drain.

use std::time::Duration;

use futures_util::{FutureExt, future::LocalBoxFuture};
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::{batches, drift, helpers::*, lifecycle, live, model, operations, rows::*};
use roomsync::store::Layout;

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
    let layout = the_layout_routes_rooms_as_citus_does(&pool).await;
    empty(&pool).await;
    one_node_a_transaction(&pool).await;

    type Scenario = fn(PgPool) -> LocalBoxFuture<'static, ()>;
    let scenarios: &[(&str, Scenario)] = &[
        ("model: two instances", |p| {
            model::two_instances_converge(p).boxed_local()
        }),
        ("model: rebuild", |p| {
            model::rebuild_reproduces_the_live_view(p).boxed_local()
        }),
        ("batches: a member named several times", |p| {
            batches::a_member_named_several_times_in_one_batch_scenario(p).boxed_local()
        }),
        ("batches: a destroy and enters", |p| {
            batches::a_destroy_and_enters_of_its_room_in_one_batch_scenario(p).boxed_local()
        }),
        ("batches: a newer row recomputed", |p| {
            batches::a_row_newer_than_an_event_of_the_batch_is_recomputed_scenario(p).boxed_local()
        }),
        ("lifecycle: destroy", |p| {
            lifecycle::destroy_ends_every_membership_and_clears_seats_scenario(p).boxed_local()
        }),
        ("lifecycle: room info", |p| {
            lifecycle::update_room_info_merges_fields_newest_first_scenario(p).boxed_local()
        }),
        ("lifecycle: seats", |p| {
            lifecycle::seats_follow_the_newest_change_scenario(p).boxed_local()
        }),
        ("lifecycle: LISTEN", |p| {
            lifecycle::listeners_are_told_of_enters_and_leaves_scenario(p).boxed_local()
        }),
        ("lifecycle: equal times", |p| {
            lifecycle::equal_times_apply_enters_then_leaves_then_destroys_scenario(p).boxed_local()
        }),
        ("lifecycle: late leave", |p| {
            lifecycle::late_leave_after_a_destroy_becomes_the_leave_scenario(p).boxed_local()
        }),
        ("live: create to destroy", |p| {
            live::a_live_room_from_create_to_destroy_scenario(p).boxed_local()
        }),
        ("live: member events", |p| {
            live::live_member_events_are_exactly_once_and_ordered_like_room_events_scenario(p)
                .boxed_local()
        }),
        ("drift: repairs", |p| {
            drift::a_lost_leave_a_lost_enter_and_a_lost_destroy_are_repaired_scenario(p)
                .boxed_local()
        }),
        ("drift: two instances", |p| {
            drift::two_instances_share_the_rooms_and_the_rate_bound_scenario(p).boxed_local()
        }),
        ("drift: rebuild", |p| {
            drift::rebuild_after_corrections_equals_the_live_view_scenario(p).boxed_local()
        }),
        ("retention: in batches", |p| {
            operations::pruning_works_in_batches_scenario(p).boxed_local()
        }),
        ("drift: live rooms", |p| {
            drift::live_rooms_are_repaired_through_the_live_api_scenario(p).boxed_local()
        }),
    ];
    for (name, scenario) in scenarios {
        empty(&pool).await;
        eprintln!("Citus: {name}");
        scenario(pool.clone()).await;
    }
    empty(&pool).await;
    without_a_room(&pool).await;
    if let Some(dir) = std::env::var("ROOMSYNC_CITUS_DIR")
        .ok()
        .filter(|d| !d.is_empty())
    {
        empty(&pool).await;
        coordinator_outage(&pool, &dir).await;
        empty(&pool).await;
        worker_outage(&pool, &dir, &layout).await;
        // Last: it adds a node to the cluster.
        empty(&pool).await;
        rebalance_under_load(&pool, &dir).await;
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

/// roomsync's own reading of the distribution (room_shards(), hashtext) puts every room on the
/// shard and node where Citus routes it.
async fn the_layout_routes_rooms_as_citus_does(pool: &PgPool) -> Layout {
    let layout = Layout::load(pool).await.unwrap();
    assert!(layout.is_distributed());
    let mut rooms: Vec<String> = (0..300).map(|i| format!("room-{i}")).collect();
    rooms.extend(["", "房间", "a", "room_with_a_long_identifier_0123456789"].map(String::from));
    let routed: Vec<(String, i64, i32)> = sqlx::query_as(
        "SELECT r, s.shard, (SELECT min(p.groupid) FROM pg_dist_placement p
                            WHERE p.shardid = s.shard)
         FROM unnest($1::text[]) r,
              LATERAL (SELECT get_shard_id_for_distribution_column('rooms', r) AS shard) s",
    )
    .bind(&rooms)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(routed.len(), rooms.len());
    for (room, shard, node) in routed {
        assert_eq!(layout.shard_of(&room), Some((shard, node)), "room {room:?}");
    }
    layout
}

/// Citus keeps a record of every two-phase commit until its recovery clears it (each minute by
/// default): stopped here so that the count is exact.
async fn two_phase_recovery(pool: &PgPool, on: bool) {
    let setting = if on {
        "ALTER SYSTEM RESET citus.recover_2pc_interval"
    } else {
        "ALTER SYSTEM SET citus.recover_2pc_interval = -1"
    };
    sqlx::raw_sql(setting).execute(pool).await.unwrap();
    sqlx::raw_sql("SELECT pg_reload_conf()")
        .execute(pool)
        .await
        .unwrap();
    // The maintenance daemon reads it at its next round.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Many rooms on both workers at once: every batch holds the rooms of one node and writes
/// them with routed statements, so Citus commits each on that node in one phase. (Before the
/// writers took groups, most batches spanned both workers; with Citus's INSERT … SELECT from
/// arrays, which goes through COPY, every one took two phases.)
async fn one_node_a_transaction(pool: &PgPool) {
    two_phase_recovery(pool, false).await;
    let app = spawn_app(pool.clone()).await;
    app.deliver(&enter("warm-up", &["u"], 1)).await;
    // The writers read the layout at start; give that read time to land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sqlx::raw_sql("DELETE FROM pg_dist_transaction")
        .execute(pool)
        .await
        .unwrap();
    let bodies: Vec<serde_json::Value> = (0..600)
        .map(|i| enter(&format!("spread-{}", i % 60), &[&format!("u{i}")], 10 + i))
        .collect();
    for wave in bodies.chunks(60) {
        let sends = wave.iter().map(|body| app.send(body));
        for (status, answer) in futures_util::future::join_all(sends).await {
            assert_eq!(status, 200, "{answer}");
        }
    }
    let two_phase = count(pool, "SELECT count(*) FROM pg_dist_transaction").await;
    two_phase_recovery(pool, true).await;
    let batches = metric(&app, "roomsync_batch_size_count").await;
    assert_eq!(journal_depth(&app).await, 0, "every callback written live");
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM room_roster WHERE room_id LIKE 'spread-%'"
        )
        .await,
        600
    );
    assert_eq!(two_phase, 0, "two-phase commits in {batches} batches");
    assert!(batches < 600.0, "callbacks still share batches: {batches}");
    app.stop().await;
}

/// One worker stopped for real under load: every callback is answered 200; the rooms of the
/// other worker keep being applied meanwhile; once the worker is back, the journal drains and
/// each callback is applied once.
async fn worker_outage(pool: &PgPool, dir: &str, layout: &Layout) {
    let port: i32 = std::fs::read_to_string(format!("{dir}/worker2/port"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let down_node: i32 = sqlx::query_scalar("SELECT groupid FROM pg_dist_node WHERE nodeport = $1")
        .bind(port)
        .fetch_one(pool)
        .await
        .unwrap();
    let rooms_on = |down: bool| -> Vec<String> {
        (0..)
            .map(|i| format!("w-{i}"))
            .filter(|r| (layout.shard_of(r).unwrap().1 == down_node) == down)
            .take(5)
            .collect()
    };
    let (down_rooms, up_rooms) = (rooms_on(true), rooms_on(false));
    let app = spawn_app(pool.clone()).await;
    let worker = |action: &str| {
        let status = std::process::Command::new("scripts/citus-cluster")
            .args(["node", dir, "worker2", action])
            .status()
            .expect("scripts/citus-cluster");
        assert!(status.success(), "worker2 {action}");
    };
    tokio::task::block_in_place(|| worker("stop"));
    let bodies: Vec<serde_json::Value> = (0..20)
        .flat_map(|i| {
            down_rooms
                .iter()
                .chain(&up_rooms)
                .map(move |room| enter(room, &[&format!("u{i:02}")], 100 + i))
        })
        .collect();
    for wave in bodies.chunks(50) {
        let sends = wave.iter().map(|body| app.send(body));
        for (status, answer) in futures_util::future::join_all(sends).await {
            assert_eq!(status, 200, "{answer}");
        }
    }
    assert!(
        journal_depth(&app).await > 0,
        "the stopped worker's rooms are journaled"
    );
    // The other worker's rooms are not held up by it.
    let applied = eventually(Duration::from_secs(30), || async {
        let mut all = true;
        for room in &up_rooms {
            all &= roster(pool, room).await.len() == 20;
        }
        all
    })
    .await;
    assert!(
        applied,
        "the running worker's rooms are applied during the outage"
    );
    tokio::task::block_in_place(|| worker("start"));
    let drained = eventually(Duration::from_secs(120), || async {
        journal_depth(&app).await == 0
    })
    .await;
    assert!(drained, "the journal drains once the worker is back");
    for room in down_rooms.iter().chain(&up_rooms) {
        assert_eq!(roster(pool, room).await.len(), 20, "room {room}");
    }
    assert_eq!(count(pool, "SELECT count(*) FROM room_events").await, 200);
    app.stop().await;
}

/// A third worker added and the shards rebalanced onto it with Citus's own
/// `citus_rebalance_start` while callbacks keep arriving: every one is answered 200 (the ones
/// a moving shard blocks go through the journal), each is applied once, and the writers read
/// the new layout.
async fn rebalance_under_load(pool: &PgPool, dir: &str) {
    let app = spawn_app(pool.clone()).await;
    let rooms: Vec<String> = (0..40).map(|i| format!("moving-{i}")).collect();
    let mut sent = 0_i64;
    let mut wave = |at: i64| -> Vec<serde_json::Value> {
        rooms
            .iter()
            .map(|room| {
                sent += 1;
                enter(room, &[&format!("u{at:05}")], at)
            })
            .collect()
    };
    let app_ref = &app;
    let deliver_all = |bodies: Vec<serde_json::Value>| async move {
        let sends = bodies.iter().map(|body| app_ref.send(body));
        for (status, answer) in futures_util::future::join_all(sends).await {
            assert_eq!(status, 200, "{answer}");
        }
    };
    deliver_all(wave(1)).await;
    let status = tokio::task::block_in_place(|| {
        std::process::Command::new("scripts/citus-cluster")
            .args(["add-worker", dir])
            .status()
            .expect("scripts/citus-cluster")
    });
    assert!(status.success(), "add-worker");
    // Without logical replication (wal_level stays 'replica'): writes to a moving shard wait.
    sqlx::raw_sql("SELECT citus_rebalance_start(shard_transfer_mode => 'block_writes')")
        .execute(pool)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut at = 2;
    // Bounded: until the rebalance is done, at most 120 s and 100 waves.
    loop {
        deliver_all(wave(at)).await;
        at += 1;
        let state: String = sqlx::query_scalar("SELECT state::text FROM citus_rebalance_status()")
            .fetch_one(pool)
            .await
            .unwrap();
        if state == "finished" || started.elapsed() > Duration::from_secs(120) || at > 100 {
            assert_eq!(state, "finished", "the rebalance finished");
            break;
        }
    }
    deliver_all(wave(at)).await;
    let on_new: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid)
         WHERE n.nodeport = $1",
    )
    .bind(
        std::fs::read_to_string(format!("{dir}/worker3/port"))
            .unwrap()
            .trim()
            .parse::<i32>()
            .unwrap(),
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(on_new > 0, "shards moved to the new worker");
    let drained = eventually(Duration::from_secs(120), || async {
        journal_depth(&app).await == 0
    })
    .await;
    assert!(drained, "the journal drains after the rebalance");
    assert_eq!(count(pool, "SELECT count(*) FROM room_events").await, sent);
    for room in &rooms {
        assert_eq!(roster(pool, room).await.len() as i64, at, "room {room}");
    }
    // roomsync's reading of the layout follows the moves.
    let layout = the_layout_routes_rooms_as_citus_does(pool).await;
    let nodes: std::collections::HashSet<i32> = rooms
        .iter()
        .map(|room| layout.shard_of(room).unwrap().1)
        .collect();
    assert_eq!(nodes.len(), 3, "the rooms are on the three workers now");
    eprintln!(
        "rebalance: {sent} callbacks in {:.1?}, {} journaled",
        started.elapsed(),
        metric(&app, "roomsync_journal_appended_total").await
    );
    app.stop().await;
}
