//! `ingest_daily` (docs/sql.md#ingest_daily): per app, day and command, what was accepted,
//! what came again, what was refused, reapplied and corrected; counted in the transactions
//! that did it, so the counts agree with `room_events` and `rejected_callbacks`.

use std::{collections::BTreeMap, time::Duration};

use roomsync::{
    callback::SdkAppId,
    reapply::{Filter, reapply},
};
use serde_json::json;
use sqlx::PgPool;

use crate::{
    fake_tencent::{FakeRoom, FakeTencent},
    helpers::*,
    rows::*,
};

const KEY: &str = "5e1f0a3c2b4d6e8f0a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f";
const ENTER: &str = "Room.CallbackAfterMemberEnter";
const CORRECTION: &str = "roomsync.Reconcile";

/// (accepted, duplicates, refused, reapplied, corrections) per (app, command), today.
type Counts = BTreeMap<(i64, String), (i64, i64, i64, i64, i64)>;

async fn today(pool: &PgPool) -> Counts {
    let rows: Vec<(i64, String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT sdk_app_id, callback_command, accepted, duplicates, refused, reapplied,
                corrections
         FROM ingest_daily WHERE day = (now() AT TIME ZONE 'UTC')::date",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(a, c, ac, du, re, rp, co)| ((a, c), (ac, du, re, rp, co)))
        .collect()
}

/// What `after` adds to `before`; pairs that did not change are left out.
fn added(before: &Counts, after: Counts) -> Counts {
    after
        .into_iter()
        .filter_map(|(key, (ac, du, re, rp, co))| {
            let (a, d, r, p, c) = before.get(&key).copied().unwrap_or_default();
            let delta = (ac - a, du - d, re - r, rp - p, co - c);
            (delta != (0, 0, 0, 0, 0)).then_some((key, delta))
        })
        .collect()
}

/// History rows per (app, command): what `accepted` + `corrections` must add up to.
async fn history(pool: &PgPool) -> BTreeMap<(i64, String), i64> {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT sdk_app_id, callback_command, count(*) FROM room_events GROUP BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().map(|(a, c, n)| ((a, c), n)).collect()
}

fn key(app: i64, command: &str) -> (i64, String) {
    (app, command.to_owned())
}

#[sqlx::test]
async fn every_outcome_is_counted_once_where_it_happened(pool: PgPool) {
    every_outcome_is_counted_once_where_it_happened_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn every_outcome_is_counted_once_where_it_happened_scenario(pool: PgPool) {
    // On Citus the scenarios share one database: what this one adds is the difference.
    let (counted_before, history_before) = (today(&pool).await, history(&pool).await);
    let fake = FakeTencent::start(&[(APP_ID, KEY), (1_400_000_002, KEY)]).await;
    let keys = format!("{APP_ID}={KEY},1400000002={KEY}");
    // Tencent says "new" is in and "ghost" is not: two corrections.
    fake.set_room(APP_ID, "r", FakeRoom::with_members(&["a", "new"]));
    let app = spawn_app_with(
        pool.clone(),
        &[
            ("TENCENT_API_BASE", fake.base_url.as_str()),
            ("TENCENT_SECRET_KEY", keys.as_str()),
            ("RECONCILE_INTERVAL_SECS", "1"),
            ("RECONCILE_GRACE_SECS", "0"),
        ],
    )
    .await;
    let first = enter("r", &["a", "ghost"], 100);
    app.deliver(&first).await;
    // Tencent's retry of the same callback, twice.
    app.deliver(&first).await;
    app.deliver(&first).await;
    app.deliver(&create("r", "name", 50)).await;
    // Refused after the app check: counted under the app and the command.
    let query = app.query_for(&enter("r", &["b"], 200));
    let not_json = app.post_raw(&query, "{\"RoomId\": ").await;
    assert_eq!(not_json.status().as_u16(), 400);
    // A stranger's.
    let stranger = app
        .post_raw(
            &format!("SdkAppid=1400000999&CallbackCommand={ENTER}&contenttype=json"),
            enter("r", &["c"], 300).to_string(),
        )
        .await;
    assert_eq!(stranger.status().as_u16(), 403);
    assert!(
        eventually(Duration::from_secs(15), || async {
            roster(&pool, "r").await == ["a", "new"]
        })
        .await,
        "drift repair corrected the room"
    );
    app.stop().await;
    fake.stop().await;
    // An older parser's refusal of Tencent's Live create sample, parsed again today.
    let live = json!({
        "CallbackCommand": "Live.CallbackAfterCreateRoom",
        "Operator_Account": "@TIM#SYSTEM",
        "RoomInfo": {"RoomId": "live-1", "RoomName": "n", "Owner_Account": "host",
                     "CreateTime": 1_703_589_922}
    });
    sqlx::query(
        "INSERT INTO rejected_callbacks
             (sdk_app_id, callback_command, error_code, error_info, query, body, body_size)
         VALUES ($1, 'Live.CallbackAfterCreateRoom', 40002, 'EventTime is required',
                 'contenttype=json', $2, $3)",
    )
    .bind(APP_ID)
    .bind(live.to_string())
    .bind(live.to_string().len() as i32)
    .execute(&pool)
    .await
    .unwrap();
    let apps = [SdkAppId::from_i64(APP_ID).unwrap()];
    for _ in 0..2 {
        reapply(
            &pool,
            &apps,
            Default::default(),
            Duration::from_secs(300),
            &Filter::default(),
            false,
        )
        .await
        .unwrap();
    }

    let counts = added(&counted_before, today(&pool).await);
    assert_eq!(counts[&key(APP_ID, ENTER)], (1, 2, 1, 0, 0), "{counts:?}");
    assert_eq!(
        counts[&key(APP_ID, "Room.CallbackAfterCreateRoom")],
        (1, 0, 0, 0, 0)
    );
    let (accepted, duplicates, refused, reapplied, corrections) = counts[&key(APP_ID, CORRECTION)];
    assert_eq!((accepted, duplicates, refused, reapplied), (0, 0, 0, 0));
    assert!(corrections >= 2, "{counts:?}");
    assert_eq!(
        counts[&key(APP_ID, "Live.CallbackAfterCreateRoom")],
        (1, 0, 0, 1, 0),
        "reapplied once though the command ran twice"
    );
    // A stranger's 403 stores nothing, so it counts nowhere (its metric counts it).
    assert_eq!(counts.keys().filter(|(app, _)| *app != APP_ID).count(), 0);
    // The counts agree with the history they were counted with.
    for ((app, command), rows) in history(&pool).await {
        let rows = rows - history_before.get(&(app, command.clone())).unwrap_or(&0);
        let (accepted, _, _, _, corrections) = counts
            .get(&(app, command.clone()))
            .copied()
            .unwrap_or_default();
        assert_eq!(accepted + corrections, rows, "{command}");
    }
}

#[sqlx::test]
async fn concurrent_deliveries_and_redeliveries_add_up(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    // 40 distinct callbacks over 8 rooms, each sent three times, all at once.
    let bodies: Vec<_> = (0..40)
        .map(|i| enter(&format!("room-{}", i % 8), &[&format!("u{i}")], 1_000 + i))
        .collect();
    let sends = bodies
        .iter()
        .chain(&bodies)
        .chain(&bodies)
        .map(|body| app.send(body));
    for (status, _) in futures_util::future::join_all(sends).await {
        assert_eq!(status, 200);
    }
    app.stop().await;
    let counts = today(&pool).await;
    assert_eq!(counts[&key(APP_ID, ENTER)], (40, 80, 0, 0, 0), "{counts:?}");
    assert_eq!(history(&pool).await[&key(APP_ID, ENTER)], 40);
}
