//! The contract on a real Citus cluster (docs/scaling.md#citus): run when `ROOMSYNC_CITUS_URL`
//! names the coordinator's database (`scripts/citus-cluster start DIR` prints it), skipped with
//! a message otherwise. One test per scenario; each starts on emptied tables, so none depends on
//! another's rows. Citus registers its nodes per database, so `scripts/citus-cluster start`
//! makes a few databases with the cluster (the URL's, then `_2`, `_3`): a test takes one of them
//! for itself ([`Cluster::take`]), and up to that many run at once (the `citus` test group of
//! .config/nextest.toml). With `ROOMSYNC_CITUS_DIR` (the cluster's folder) three more stop a node
//! for real under load, or add one: those, and one that reconfigures the coordinator, take the
//! whole cluster ([`Cluster::take_alone`]). The one that adds a worker can run once per cluster.

use std::{
    fs::{File, TryLockError},
    path::PathBuf,
    time::{Duration, Instant},
};

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    accounting, attendance as ledger, attendance_model, batches, drift, feed, helpers::*,
    lifecycle, live, model, operations, rows::*,
};
use roomsync::store::Layout;

const ROOM_TABLES: [&str; 7] = [
    "room_checks",
    "room_events",
    "room_members",
    "room_seats",
    "room_sessions",
    "room_stays",
    "rooms",
];

/// The databases a cluster may hold for tests: the URL's own, then `{name}_2` … (those
/// `scripts/citus-cluster start` made; a cluster with the first alone runs the tests one by one).
const DATABASES: usize = 3;

/// A test's hold on the cluster, by file locks beside the system's temporary files (named by the
/// coordinator's port), so that it holds across test processes (nextest) and threads (`cargo
/// test`) alike: every test holds the cluster's lock shared and one database's lock; a test that
/// stops or adds nodes holds the cluster's lock alone. Released when the files close.
struct Hold {
    _cluster: File,
    _database: Option<File>,
}

fn lock_file(port: u16, what: &str) -> File {
    let path: PathBuf = std::env::temp_dir().join(format!("roomsync-citus-{port}-{what}.lock"));
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The coordinator's database for one test: migrated, its tables emptied, and this test's alone
/// until dropped.
struct Cluster {
    pool: PgPool,
    _hold: Hold,
}

impl Cluster {
    /// `ROOMSYNC_CITUS_URL`; `None` (after saying why) without it.
    fn url() -> Option<PgConnectOptions> {
        let url = std::env::var("ROOMSYNC_CITUS_URL")
            .ok()
            .filter(|u| !u.is_empty());
        if url.is_none() {
            eprintln!(
                "Citus tests skipped: ROOMSYNC_CITUS_URL is not set (scripts/citus-cluster start DIR)"
            );
        }
        // With the settings of roomsync's own sessions: the app under test uses this pool.
        Some(roomsync::store::session_settings(
            url?.parse().expect("a URL"),
        ))
    }

    /// One of the cluster's test databases, beside other tests; `None` (after saying why)
    /// without `ROOMSYNC_CITUS_URL`.
    async fn take() -> Option<Self> {
        let options = Self::url()?;
        let base = options.get_database().unwrap_or("postgres").to_owned();
        let port = options.get_port();
        let pool = connect(options.clone()).await;
        let names: Vec<String> = std::iter::once(base.clone())
            .chain((2..=DATABASES).map(|i| format!("{base}_{i}")))
            .collect();
        let present: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname = ANY($1)")
                .bind(&names)
                .fetch_all(&pool)
                .await
                .unwrap();
        pool.close().await;
        let (hold, name) = tokio::task::spawn_blocking(move || hold_one_of(port, &present))
            .await
            .unwrap();
        Some(Self::ready(options.database(&name), hold).await)
    }

    /// The URL's database, with the whole cluster to itself (no other Citus test runs until it
    /// is dropped): for the tests that stop, add or reconfigure nodes.
    async fn take_alone() -> Option<Self> {
        let options = Self::url()?;
        let port = options.get_port();
        let hold = tokio::task::spawn_blocking(move || {
            let cluster = lock_file(port, "cluster");
            cluster.lock().unwrap();
            Hold {
                _cluster: cluster,
                _database: None,
            }
        })
        .await
        .unwrap();
        Some(Self::ready(options, hold).await)
    }

    async fn ready(options: PgConnectOptions, hold: Hold) -> Self {
        let pool = connect(options).await;
        roomsync::store::MIGRATOR.run(&pool).await.unwrap();
        empty(&pool).await;
        Self { pool, _hold: hold }
    }

    /// As [`Cluster::take_alone`], with the cluster's folder (`ROOMSYNC_CITUS_DIR`), for the
    /// tests that stop or add nodes; `None` (after saying why) without it.
    async fn take_with_dir(test: &str) -> Option<(Self, String)> {
        Self::url()?;
        let Some(dir) = std::env::var("ROOMSYNC_CITUS_DIR")
            .ok()
            .filter(|d| !d.is_empty())
        else {
            eprintln!("Citus {test} skipped: ROOMSYNC_CITUS_DIR is not set");
            return None;
        };
        Some((Self::take_alone().await?, dir))
    }
}

/// The cluster's lock shared, and the lock of the first of `databases` that no other test holds
/// (blocking).
fn hold_one_of(port: u16, databases: &[String]) -> (Hold, String) {
    let cluster = lock_file(port, "cluster");
    cluster.lock_shared().unwrap();
    // The test group lets no more tests run than there are databases, so one is free or about
    // to be; bounded all the same, so that a mistake is named, not a hang.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        for name in databases {
            let file = lock_file(port, name);
            match file.try_lock() {
                Ok(()) => {
                    let hold = Hold {
                        _cluster: cluster,
                        _database: Some(file),
                    };
                    return (hold, name.clone());
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => panic!("locking {name}: {e}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "no Citus test database free in 10 min"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn connect(options: PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(10)
        .connect_with(options)
        .await
        .expect("the Citus coordinator")
}

/// One test on the cluster per scenario that the plain-PostgreSQL suite also runs.
macro_rules! on_citus {
    ($($test:ident => $scenario:path;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let Some(cluster) = Cluster::take().await else {
                return;
            };
            $scenario(cluster.pool.clone()).await;
        }
    )*};
}

on_citus! {
    model_two_instances => model::two_instances_converge;
    model_rebuild => model::rebuild_reproduces_the_live_view;
    batches_a_member_named_several_times =>
        batches::a_member_named_several_times_in_one_batch_scenario;
    batches_a_destroy_and_enters => batches::a_destroy_and_enters_of_its_room_in_one_batch_scenario;
    batches_a_newer_row_recomputed =>
        batches::a_row_newer_than_an_event_of_the_batch_is_recomputed_scenario;
    lifecycle_destroy => lifecycle::destroy_ends_every_membership_and_clears_seats_scenario;
    lifecycle_room_info => lifecycle::update_room_info_merges_fields_newest_first_scenario;
    lifecycle_seats => lifecycle::seats_follow_the_newest_change_scenario;
    lifecycle_listen => lifecycle::listeners_are_told_of_enters_and_leaves_scenario;
    lifecycle_equal_times => lifecycle::equal_times_apply_enters_then_leaves_then_destroys_scenario;
    lifecycle_late_leave => lifecycle::late_leave_after_a_destroy_becomes_the_leave_scenario;
    live_create_to_destroy => live::a_live_room_from_create_to_destroy_scenario;
    live_member_events =>
        live::live_member_events_are_exactly_once_and_ordered_like_room_events_scenario;
    drift_repairs => drift::a_lost_leave_a_lost_enter_and_a_lost_destroy_are_repaired_scenario;
    drift_two_instances => drift::two_instances_share_the_rooms_and_the_rate_bound_scenario;
    drift_rebuild => drift::rebuild_after_corrections_equals_the_live_view_scenario;
    retention_in_batches => operations::pruning_works_in_batches_scenario;
    drift_live_rooms => drift::live_rooms_are_repaired_through_the_live_api_scenario;
    ledger_redelivered_leave =>
        ledger::a_leave_redelivered_after_the_rejoin_does_not_mark_the_student_absent_scenario;
    ledger_reconnects =>
        ledger::reconnects_count_one_person_and_with_a_merge_gap_one_stay_scenario;
    ledger_late_leave_merges =>
        ledger::a_leave_that_arrives_after_the_new_join_merges_and_no_counter_goes_negative_scenario;
    ledger_rejoin_after_end =>
        ledger::a_rejoin_after_the_meeting_ended_starts_a_new_session_scenario;
    ledger_live_heartbeat =>
        ledger::a_live_heartbeat_interrupt_and_recover_within_the_gap_is_one_stay_scenario;
    ledger_grace =>
        ledger::an_enter_within_the_grace_re_opens_the_session_even_when_it_arrives_late_scenario;
    ledger_one_millisecond =>
        ledger::an_enter_and_a_leave_at_one_millisecond_count_the_enter_first_scenario;
    ledger_drift_repair => ledger::drift_repair_corrections_end_and_open_stays_scenario;
    ledger_invitees =>
        ledger::invitees_are_listed_and_those_who_never_came_have_no_stays_scenario;
    ledger_retention =>
        ledger::history_retention_never_touches_the_ledger_and_attendance_retention_keeps_the_newest_scenario;
    ledger_rebuild_policy => ledger::rebuild_under_another_policy_applies_it_to_the_past_scenario;
    ledger_model_two_instances => attendance_model::with_merges_and_a_short_grace;
    feed_every_change => feed::every_change_of_the_view_is_told_once_in_order_scenario;
    feed_under_load => feed::two_instances_under_load_the_feed_equals_the_view_scenario;
    feed_rebuild => feed::a_rebuild_that_changes_the_view_tells_it_scenario;
    ingest_daily_counts => accounting::every_outcome_is_counted_once_where_it_happened_scenario;
}

/// roomsync's own migrations distributed the room tables by room, co-located, on a cluster with
/// workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migrations_distribute_the_room_tables_by_room() {
    let Some(cluster) = Cluster::take().await else {
        return;
    };
    let pool = &cluster.pool;
    let distributed: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT logicalrelid::text, column_to_column_name(logicalrelid, partkey), colocationid
         FROM pg_dist_partition ORDER BY 1",
    )
    .fetch_all(pool)
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
        pool,
        "SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND groupid > 0",
    )
    .await;
    assert!(workers >= 2, "a cluster with workers: {workers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layout_routes_rooms_as_citus_does() {
    let Some(cluster) = Cluster::take().await else {
        return;
    };
    checked_layout(&cluster.pool).await;
}

/// Deletes, not `TRUNCATE`: on Citus a `TRUNCATE` replaces every shard's file (32 a table),
/// 0.4 s and 0.6 CPU-s of the cluster's per test even with the tables empty, where deleting
/// the few rows a test leaves takes 0.1 s (measured on a fresh cluster).
async fn empty(pool: &PgPool) {
    sqlx::raw_sql(
        "DELETE FROM room_checks; DELETE FROM room_events; DELETE FROM room_members;
         DELETE FROM room_seats; DELETE FROM room_stays; DELETE FROM room_sessions;
         DELETE FROM rooms; DELETE FROM rejected_callbacks; DELETE FROM reconcile_budget;
         DELETE FROM room_changes;
         UPDATE room_changes_head SET last_seq = 0; UPDATE room_changes_horizon SET deleted_upto = 0",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// A callback without a room is stored under '' and is still exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_room() {
    let Some(cluster) = Cluster::take().await else {
        return;
    };
    let pool = &cluster.pool;
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_outage() {
    let Some((cluster, dir)) = Cluster::take_with_dir("coordinator outage").await else {
        return;
    };
    let (pool, dir) = (&cluster.pool, dir.as_str());
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

/// roomsync's own reading of the distribution (room_shards(), hashtext), checked: it puts every
/// room on the shard and node where Citus routes it.
async fn checked_layout(pool: &PgPool) -> Layout {
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

/// Many rooms on both workers at once (enters, then room info and seats): every batch holds the
/// rooms of one node and writes them with routed statements, so Citus commits each on that node
/// in one phase. (Before the
/// writers took groups, most batches spanned both workers; with Citus's INSERT … SELECT from
/// arrays, which goes through COPY, every one took two phases.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_a_transaction() {
    // Alone: it turns two-phase recovery off for the whole coordinator.
    let Some(cluster) = Cluster::take_alone().await else {
        return;
    };
    let pool = &cluster.pool;
    two_phase_recovery(pool, false).await;
    // What is counted is the written transactions: a commit slower than the default 1.2 s (the
    // suite can keep both CPUs full) would answer from the journal instead, and the drain's
    // batches are made otherwise.
    let app = spawn_app_with(pool.clone(), &[("COMMIT_TIMEOUT_MS", "10000")]).await;
    // The warm-up's batch reads the layout (a writer's first batch does, if the background
    // read has not landed), so the batches below take the routed form.
    app.deliver(&enter("warm-up", &["u"], 1)).await;
    sqlx::raw_sql("DELETE FROM pg_dist_transaction")
        .execute(pool)
        .await
        .unwrap();
    let mut bodies: Vec<serde_json::Value> = (0..600)
        .map(|i| enter(&format!("spread-{}", i % 60), &[&format!("u{i}")], 10 + i))
        .collect();
    // Room info and seat lists too: their statements name lists of rooms, which on Citus
    // reached every shard (and so both workers) before they were routed per room.
    for i in 0..60 {
        let room = format!("spread-{i}");
        bodies.push(create(&room, &format!("name-{i}"), 700 + i));
        bodies.push(serde_json::json!({
            "CallbackCommand": "Mic.CallbackAfterSeatInfoChanged", "RoomId": room,
            "EventTime": 800 + i,
            "SeatList": [{"Index": 0, "Member_Account": format!("u{i}"), "IsAudioDisabled": true}]
        }));
    }
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
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM rooms r JOIN room_seats s USING (sdk_app_id, room_id)
             WHERE r.room_id LIKE 'spread-%' AND r.room_name = 'name-' || substr(r.room_id, 8)
               AND s.member_account = 'u' || substr(r.room_id, 8) AND s.is_audio_disabled"
        )
        .await,
        60,
        "each room's info and seat"
    );
    assert_eq!(two_phase, 0, "two-phase commits in {batches} batches");
    assert!(batches < 720.0, "callbacks still share batches: {batches}");
    app.stop().await;
}

/// One worker stopped for real under load: every callback is answered 200; the rooms of the
/// other worker keep being applied meanwhile; once the worker is back, the journal drains and
/// each callback is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_outage() {
    let Some((cluster, dir)) = Cluster::take_with_dir("worker outage").await else {
        return;
    };
    let (pool, dir) = (&cluster.pool, dir.as_str());
    let layout = &checked_layout(pool).await;
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
/// the new layout. It adds worker3 for good: once per cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_under_load() {
    let Some((cluster, dir)) = Cluster::take_with_dir("rebalance").await else {
        return;
    };
    let (pool, dir) = (&cluster.pool, dir.as_str());
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
    // Bounded: until the rebalance is done, at most 120 s and 1,000 waves. A wave can be
    // answered at once (a moving room's callbacks join its journaled ones), so waves are paced.
    loop {
        deliver_all(wave(at)).await;
        at += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state: String = sqlx::query_scalar("SELECT state::text FROM citus_rebalance_status()")
            .fetch_one(pool)
            .await
            .unwrap();
        if state == "finished" || started.elapsed() > Duration::from_secs(120) || at > 1_000 {
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
    let layout = checked_layout(pool).await;
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
