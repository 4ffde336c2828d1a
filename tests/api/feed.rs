//! docs/feed.md: the change feed (`room_changes`, `room_changes_after`), its HTTP routes, the
//! token, bad input, retention, `NOTIFY_MODE`, and the feed against the view under load.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sqlx::{PgPool, postgres::PgListener};

use crate::helpers::*;

const API: &str = "an-api-token-of-some-length";

async fn spawn_api(pool: &PgPool, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![("API_TOKEN", API)];
    vars.extend_from_slice(extra);
    spawn_app_with(pool.clone(), &vars).await
}

/// GETs an API path with the token; status and JSON body.
async fn api(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(API)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Every change after `after`, page by page, without waiting.
async fn all_after(app: &TestApp, mut after: i64) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let (status, body) = api(app, &format!("/v1/changes?after={after}&limit=1000")).await;
        assert_eq!(status, 200, "{body}");
        let changes = body["changes"].as_array().unwrap().clone();
        if changes.is_empty() {
            return out;
        }
        after = body["next"].as_i64().unwrap();
        out.extend(changes);
    }
}

fn kinds(changes: &[Value]) -> Vec<(String, Vec<String>)> {
    changes
        .iter()
        .map(|c| {
            let users = c["user_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap().to_owned())
                .collect();
            (c["kind"].as_str().unwrap().to_owned(), users)
        })
        .collect()
}

fn k(kind: &str, users: &[&str]) -> (String, Vec<String>) {
    (
        kind.to_owned(),
        users.iter().map(|u| (*u).to_owned()).collect(),
    )
}

#[sqlx::test]
async fn every_change_of_the_view_is_told_once_in_order(pool: PgPool) {
    every_change_of_the_view_is_told_once_in_order_scenario(pool).await;
}

/// On an empty feed (also on Citus).
pub async fn every_change_of_the_view_is_told_once_in_order_scenario(pool: PgPool) {
    let app = spawn_api(&pool, &[]).await;
    app.deliver(&create("r", "Daily", 100)).await;
    app.deliver(&enter("r", &["b", "a"], 200)).await;
    // A duplicate changes nothing, hence tells nothing.
    app.deliver(&enter("r", &["b", "a"], 200)).await;
    // Already in: no change of in_room.
    app.deliver(&enter("r", &["a"], 250)).await;
    app.deliver(&leave("r", &["a"], "Leave", 300)).await;
    app.deliver(&destroy("r", 400)).await;
    let changes = all_after(&app, 0).await;
    assert_eq!(
        kinds(&changes),
        vec![
            k("room.created", &[]),
            k("session.started", &[]),
            k("member.entered", &["a", "b"]),
            k("member.left", &["a"]),
            k("member.left", &["b"]),
            k("session.ended", &[]),
            k("room.destroyed", &[]),
        ]
    );
    let seqs: Vec<i64> = changes.iter().map(|c| c["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>(), "seq has no gaps");
    let room_seqs: Vec<i64> = changes
        .iter()
        .map(|c| c["room_seq"].as_i64().unwrap())
        .collect();
    assert_eq!(room_seqs, (1..=7).collect::<Vec<_>>());
    assert!(changes.iter().all(|c| c["cause"] == "callback"));
    assert!(changes.iter().all(|c| c["sdk_app_id"] == APP_ID));
    // Each change names the history row of the event that made it.
    let destroy_id: i64 = sqlx::query_scalar(
        "SELECT id FROM room_events WHERE callback_command = 'Room.CallbackAfterDestroyRoom'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(changes[6]["event_id"], json!(destroy_id));
    assert_eq!(changes[4]["event_at"], json!("1970-01-01T00:00:00.400Z"));
    // The SQL function gives the same rows.
    let sql: Vec<(i64, String)> = sqlx::query_as("SELECT seq, kind FROM room_changes_after(2, 3)")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        sql,
        vec![
            (3, "member.entered".into()),
            (4, "member.left".into()),
            (5, "member.left".into())
        ]
    );
    app.stop().await;
}

/// One call numbers each room on from its newest change, in the call's order, and gives each
/// change its own slice of the members.
#[sqlx::test]
async fn one_record_numbers_each_room_on_from_its_newest(pool: PgPool) {
    let record = "SELECT room_changes_record(ARRAY[1, 1, 1, 1, 1]::int8[], $1::text[], $2::text[],
                  $3::text[], $4::int4[], ARRAY[now(), now(), now(), now(), now()],
                  ARRAY[NULL, NULL, NULL, NULL, NULL]::int8[], ARRAY['callback', 'callback',
                  'callback', 'callback', 'callback'], false)";
    let first: i64 = sqlx::query_scalar(record)
        .bind(["a", "a", "x", "x", "x"])
        .bind(["room.created"; 5])
        .bind(Vec::<String>::new())
        .bind([0; 5])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(first, 5);
    let second: i64 = sqlx::query_scalar(record)
        .bind(["a", "b", "a", "a", "b"])
        .bind([
            "member.entered",
            "member.entered",
            "member.left",
            "room.updated",
            "member.entered",
        ])
        .bind(["u1", "u2", "u3", "u4", "u1", "u5"])
        .bind([2, 3, 1, 0, 0])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(second, 10);
    let rows: Vec<(i64, String, i64, Vec<String>)> = sqlx::query_as(
        "SELECT seq, room_id, room_seq, user_ids FROM room_changes WHERE seq > 5 ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let users = |list: &[&str]| list.iter().map(|u| u.to_string()).collect::<Vec<_>>();
    assert_eq!(
        rows,
        vec![
            (6, "a".into(), 3, users(&["u1", "u2"])),
            (7, "b".into(), 1, users(&["u3", "u4", "u1"])),
            (8, "a".into(), 4, users(&["u5"])),
            (9, "a".into(), 5, users(&[])),
            (10, "b".into(), 2, users(&[])),
        ]
    );
}

#[sqlx::test]
async fn a_reader_never_sees_past_a_transaction_still_open(pool: PgPool) {
    let record = "SELECT room_changes_record(ARRAY[1]::int8[], ARRAY[$1]::text[],
                  ARRAY['room.updated'], '{}'::text[], ARRAY[0], ARRAY[now()], ARRAY[NULL::int8],
                  ARRAY['callback'], false)";
    let mut held = pool.begin().await.unwrap();
    let first: i64 = sqlx::query_scalar(record)
        .bind("held")
        .fetch_one(&mut *held)
        .await
        .unwrap();
    assert_eq!(first, 1);
    // A later transaction: its record waits for the held one to end.
    let later = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let seq: i64 = sqlx::query_scalar(record)
                .bind("later")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            seq
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen: Vec<i64> = sqlx::query_scalar("SELECT seq FROM room_changes_after(0, 10)")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        seen.is_empty(),
        "nothing is readable while seq 1 may still commit"
    );
    assert!(
        !later.is_finished(),
        "the later transaction waits for the head"
    );
    held.commit().await.unwrap();
    assert_eq!(later.await.unwrap(), 2);
    let seen: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, room_id FROM room_changes_after(0, 10)")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(seen, vec![(1, "held".into()), (2, "later".into())]);
    // A transaction rolled back gives its seq back: no gap.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(record)
        .bind("rolled back")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let seq: i64 = sqlx::query_scalar(record)
        .bind("next")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(seq, 3);
}

#[sqlx::test]
async fn the_routes_exist_only_with_a_token_and_ask_for_it(pool: PgPool) {
    let without = spawn_app(pool.clone()).await;
    for path in [
        "/v1/changes",
        "/v1/rooms/1400000001/r/members",
        "/v1/rooms/1400000001/r/sessions",
    ] {
        let response = without
            .client
            .get(format!("{}{path}", without.address))
            .bearer_auth(API)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path} without API_TOKEN");
    }
    without.stop().await;
    let app = spawn_api(&pool, &[]).await;
    let response = app.get("/v1/changes").await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 40120);
    for wrong in ["x", &API[..API.len() - 1], &format!("{API}x")] {
        let response = app
            .client
            .get(format!("{}/v1/changes", app.address))
            .bearer_auth(wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], 40121);
        assert!(!body.to_string().contains(API), "the token is never echoed");
    }
    let (status, body) = api(&app, "/v1/changes").await;
    assert_eq!((status, &body["changes"]), (200, &json!([])));
    // A token too short to be a secret is refused at start.
    let error = roomsync::config::Config::from_lookup(|name| match name {
        "DATABASE_URL" => Some("postgres://x@127.0.0.1/x".into()),
        "SDK_APP_ID" => Some("1400000001".into()),
        "API_TOKEN" => Some("short".into()),
        _ => None,
    })
    .unwrap_err();
    assert!(error.to_string().contains("API_TOKEN"), "{error}");
    app.stop().await;
}

#[sqlx::test]
async fn bad_input_gets_its_own_code(pool: PgPool) {
    let app = spawn_api(&pool, &[]).await;
    app.deliver(&enter("r", &["a"], 100)).await;
    let long_room = "r".repeat(300);
    let cases: Vec<(String, u16, i64)> = vec![
        ("/v1/changes?after=-1".into(), 400, 40020),
        ("/v1/changes?after=abc".into(), 400, 40020),
        ("/v1/changes?after=1e3".into(), 400, 40020),
        ("/v1/changes?after=".into(), 400, 40020),
        ("/v1/changes?after=99999999999999999999".into(), 400, 40020),
        ("/v1/changes?after=0&after=1".into(), 400, 40020),
        ("/v1/changes?since=0".into(), 400, 40020),
        ("/v1/changes?limit=0".into(), 400, 40021),
        ("/v1/changes?limit=1001".into(), 400, 40021),
        ("/v1/changes?limit=%2B5".into(), 400, 40021),
        ("/v1/changes?wait=31".into(), 400, 40022),
        ("/v1/changes?wait=-1".into(), 400, 40022),
        ("/v1/changes?wait=0.5".into(), 400, 40022),
        ("/v1/changes?after=1000000".into(), 409, 40901),
        ("/v1/rooms/1400000009/r/members".into(), 404, 40401),
        ("/v1/rooms/abc/r/members".into(), 400, 40024),
        (
            format!("/v1/rooms/1400000001/{long_room}/members"),
            400,
            40024,
        ),
        (
            "/v1/rooms/1400000001/r/sessions?limit=101".into(),
            400,
            40021,
        ),
        ("/v1/rooms/1400000001/r/members?x=1".into(), 400, 40020),
    ];
    for (path, status, code) in cases {
        let (got, body) = api(&app, &path).await;
        assert_eq!(
            (got, body["code"].as_i64()),
            (status, Some(code)),
            "{path}: {body}"
        );
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}"
        );
    }
    // The bounds themselves are fine.
    for path in [
        "/v1/changes?after=0&limit=1000&wait=0",
        "/v1/changes?limit=1",
        "/v1/changes?after=1",
        "/v1/rooms/1400000001/r/sessions?limit=100",
    ] {
        let (status, body) = api(&app, path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    app.stop().await;
}

/// docs/feed.md#http: past 32 waiting long polls, a woken poll answers no sooner than 80 ms
/// after it began (and still within 100 ms of the commit that woke it).
#[sqlx::test]
async fn a_crowd_of_long_polls_answers_at_most_every_80_ms_each(pool: PgPool) {
    let app = spawn_api(&pool, &[("NOTIFY_MODE", "wakeup")]).await;
    let head: i64 = sqlx::query_scalar("SELECT last_seq FROM room_changes_head")
        .fetch_one(&pool)
        .await
        .unwrap();
    const CROWD: usize = 60;
    // Each follower polls twice: once waiting for the first change, then again at once from
    // where it got to, timing the second poll from its sending to its answer.
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(CROWD);
    let followers: Vec<_> = (0..CROWD)
        .map(|_| {
            let client = app.client.clone();
            let address = app.address.clone();
            let first_tx = first_tx.clone();
            tokio::spawn(async move {
                let poll = |after: i64| {
                    client
                        .get(format!("{address}/v1/changes?after={after}&wait=10"))
                        .bearer_auth(API)
                        .send()
                };
                let body: Value = poll(head).await.unwrap().json().await.unwrap();
                let next = body["next"].as_i64().unwrap();
                first_tx.send(()).await.unwrap();
                let sent = Instant::now();
                let response = poll(next).await.unwrap();
                let answered = Instant::now();
                (sent, answered, response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.deliver(&enter("crowd-1", &["a"], 100)).await;
    for _ in 0..CROWD {
        first_rx.recv().await.unwrap();
    }
    // Every second poll is waiting (or about to): the next change wakes a crowd.
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.deliver(&enter("crowd-2", &["b"], 200)).await;
    let committed = Instant::now();
    let mut took = Vec::new();
    let mut late = Vec::new();
    for follower in followers {
        let (sent, answered, body) = follower.await.unwrap();
        assert_eq!(body["changes"][0]["room_id"], json!("crowd-2"), "{body}");
        took.push(answered - sent);
        late.push(answered.saturating_duration_since(committed));
    }
    took.sort();
    late.sort();
    assert!(took[0] >= Duration::from_millis(80), "{took:?}");
    assert!(late[0] < Duration::from_millis(100), "{late:?}");
    app.stop().await;
}

#[sqlx::test]
async fn a_long_poll_returns_at_the_commit_that_wakes_it(pool: PgPool) {
    for mode in ["members", "wakeup", "off"] {
        let app = spawn_api(&pool, &[("NOTIFY_MODE", mode)]).await;
        let head: i64 = sqlx::query_scalar("SELECT last_seq FROM room_changes_head")
            .fetch_one(&pool)
            .await
            .unwrap();
        // Woken by the commit, not by the reader's once-a-second look: the best of three
        // within 100 ms, none near a second (the suite loads both cores meanwhile).
        let mut lateness = Vec::new();
        let mut head = head;
        for i in 0..3 {
            let poll = {
                let client = app.client.clone();
                let url = format!("{}/v1/changes?after={head}&wait=10", app.address);
                tokio::spawn(async move {
                    let response = client.get(url).bearer_auth(API).send().await.unwrap();
                    let body: Value = response.json().await.unwrap();
                    (body, Instant::now())
                })
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!poll.is_finished(), "{mode}: the poll waits");
            let room = format!("r-{mode}-{i}");
            app.deliver(&enter(&room, &["a"], 100)).await;
            let answered = Instant::now();
            let (body, polled) = poll.await.unwrap();
            lateness.push(polled.saturating_duration_since(answered));
            assert_eq!(body["changes"][0]["room_id"], json!(room));
            head = body["next"].as_i64().unwrap();
        }
        lateness.sort();
        assert!(
            lateness[0] < Duration::from_millis(100),
            "{mode}: {lateness:?}"
        );
        assert!(
            lateness[2] < Duration::from_millis(500),
            "{mode}: {lateness:?}"
        );
        let body = json!({"next": head});
        // A poll with nothing to tell ends at its wait, empty, at the same position.
        let next = body["next"].as_i64().unwrap();
        let started = Instant::now();
        let (status, body) = api(&app, &format!("/v1/changes?after={next}&wait=1")).await;
        assert_eq!(
            (status, &body["changes"], &body["next"]),
            (200, &json!([]), &json!(next))
        );
        assert!(started.elapsed() >= Duration::from_millis(900));
        app.stop().await;
    }
}

#[sqlx::test]
async fn waiting_readers_are_bounded(pool: PgPool) {
    let app = spawn_api(&pool, &[("FEED_MAX_WAITERS", "3")]).await;
    let mut polls = Vec::new();
    for _ in 0..3 {
        let client = app.client.clone();
        let url = format!("{}/v1/changes?after=0&wait=5", app.address);
        polls.push(tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(API)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = api(&app, "/v1/changes?after=0&wait=5").await;
    assert_eq!((status, body["code"].as_i64()), (503, Some(50311)));
    // Reading without waiting is never refused, and callbacks go on.
    let (status, _) = api(&app, "/v1/changes?after=0").await;
    assert_eq!(status, 200);
    app.deliver(&enter("r", &["a"], 100)).await;
    for poll in polls {
        assert_eq!(poll.await.unwrap(), 200);
    }
    app.stop().await;
}

#[sqlx::test]
async fn a_position_retention_passed_is_gone(pool: PgPool) {
    let app = spawn_api(&pool, &[]).await;
    for i in 0..5 {
        app.deliver(&enter("r", &[&format!("u{i}")], 100 + i)).await;
    }
    // session.started, then five member.entered.
    sqlx::query("UPDATE room_changes SET recorded_at = now() - interval '2 hours'")
        .execute(&pool)
        .await
        .unwrap();
    let deleted = roomsync::store::retention::prune_changes(&pool, 1)
        .await
        .unwrap();
    // Retention never deletes the newest change.
    assert_eq!(deleted, 5);
    // The feed's reader learns within two seconds what retention deleted (perhaps in another
    // process), and serves none of it from memory after.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = api(&app, "/v1/changes?after=0").await;
    assert_eq!(
        (status, body["code"].as_i64(), &body["oldest"]),
        (410, Some(41001), &json!(6))
    );
    let (status, body) = api(&app, "/v1/changes?after=4").await;
    assert_eq!((status, &body["oldest"]), (410, &json!(6)));
    // Just at the edge: the oldest kept change follows.
    let (status, body) = api(&app, "/v1/changes?after=5").await;
    assert_eq!((status, body["changes"][0]["seq"].as_i64()), (200, Some(6)));
    // Once a newer change exists, the old newest goes too; the new one, younger, stays.
    app.deliver(&enter("r", &["late"], 200)).await;
    assert_eq!(
        roomsync::store::retention::prune_changes(&pool, 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        roomsync::store::retention::prune_changes(&pool, 1)
            .await
            .unwrap(),
        0
    );
    let error = sqlx::query("SELECT * FROM room_changes_after(3, 10)")
        .fetch_all(&pool)
        .await
        .unwrap_err();
    let db = error.as_database_error().unwrap();
    assert_eq!(db.code().as_deref(), Some("RF410"));
    assert!(db.message().contains("older than the oldest kept change 7"));
    app.stop().await;
}

#[sqlx::test]
async fn notify_mode_chooses_what_listeners_hear(pool: PgPool) {
    for (mode, members, wakeups) in [("members", 1, 0), ("wakeup", 0, 1), ("off", 0, 0)] {
        let mut listener = PgListener::connect_with(&pool).await.unwrap();
        listener
            .listen_all(["room_members", "room_changes"])
            .await
            .unwrap();
        let app = spawn_api(&pool, &[("NOTIFY_MODE", mode)]).await;
        app.deliver(&enter(&format!("n-{mode}"), &["a", "b"], 100))
            .await;
        let mut heard: HashMap<String, Vec<String>> = HashMap::new();
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(500), listener.recv()).await
        {
            heard
                .entry(n.channel().to_owned())
                .or_default()
                .push(n.payload().to_owned());
        }
        let count = |c: &str| heard.get(c).map_or(0, Vec::len);
        assert_eq!(count("room_members"), members, "{mode}: {heard:?}");
        assert_eq!(count("room_changes"), wakeups, "{mode}: {heard:?}");
        if wakeups == 1 {
            let head: i64 = sqlx::query_scalar("SELECT last_seq FROM room_changes_head")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(heard["room_changes"][0], head.to_string(), "the newest seq");
        }
        app.stop().await;
    }
}

#[sqlx::test]
async fn sessions_route_gives_attendance(pool: PgPool) {
    let app = spawn_api(&pool, &[]).await;
    app.deliver(&enter("r", &["a", "b"], 1_000)).await;
    app.deliver(&leave("r", &["a"], "Leave", 61_000)).await;
    let (status, body) = api(&app, "/v1/rooms/1400000001/r/sessions").await;
    assert_eq!(status, 200, "{body}");
    let session = &body["sessions"][0];
    assert_eq!(session["session_no"], 1);
    assert_eq!(session["unique_members"], 2);
    let a = &session["attendance"][0];
    assert_eq!(
        (&a["user_id"], &a["present_ms"]),
        (&json!("a"), &json!(60_000))
    );
    // An unknown room is an empty list, not an error.
    let (status, body) = api(&app, "/v1/rooms/1400000001/nobody/sessions").await;
    assert_eq!((status, &body["sessions"]), (200, &json!([])));
    app.stop().await;
}

#[sqlx::test]
async fn a_rebuild_that_changes_the_view_tells_it(pool: PgPool) {
    a_rebuild_that_changes_the_view_tells_it_scenario(pool).await;
}

pub async fn a_rebuild_that_changes_the_view_tells_it_scenario(pool: PgPool) {
    let app = spawn_api(&pool, &[]).await;
    app.deliver(&enter("r", &["a", "b"], 100)).await;
    app.stop().await;
    // The view damaged by hand: the rebuild puts it back, and says so.
    sqlx::query("DELETE FROM room_members WHERE user_id = 'a'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO room_members (sdk_app_id, room_id, user_id, in_room, last_event_at, last_event_rank)
                 VALUES ($1, 'r', 'ghost', true, now(), 1)")
        .bind(APP_ID)
        .execute(&pool)
        .await
        .unwrap();
    let report = roomsync::rebuild::rebuild(&pool, Default::default())
        .await
        .unwrap();
    assert_eq!(report.changed_members, 2);
    let rows: Vec<(String, Vec<String>, String)> = sqlx::query_as(
        "SELECT kind, user_ids, cause FROM room_changes WHERE cause = 'rebuild' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("member.entered".into(), vec!["a".into()], "rebuild".into()),
            ("member.left".into(), vec!["ghost".into()], "rebuild".into()),
        ]
    );
    // A rebuild of a sound view tells nothing.
    let report = roomsync::rebuild::rebuild(&pool, Default::default())
        .await
        .unwrap();
    assert_eq!(report.changed_members, 0);
}

/// Replays `member.*` changes onto rosters.
fn replay(rosters: &mut BTreeMap<String, BTreeSet<String>>, change: &Value) {
    let room = change["room_id"].as_str().unwrap().to_owned();
    let users = change["user_ids"].as_array().unwrap();
    let roster = rosters.entry(room).or_default();
    for user in users {
        let user = user.as_str().unwrap().to_owned();
        match change["kind"].as_str().unwrap() {
            "member.entered" => assert!(roster.insert(user), "entered twice: {change}"),
            "member.left" => assert!(roster.remove(&user), "left without being in: {change}"),
            _ => {}
        }
    }
}

#[sqlx::test]
async fn two_instances_under_load_the_feed_equals_the_view(pool: PgPool) {
    two_instances_under_load_the_feed_equals_the_view_scenario(pool).await;
}

/// On an empty feed (also on Citus, through the coordinator).
pub async fn two_instances_under_load_the_feed_equals_the_view_scenario(pool: PgPool) {
    let a = spawn_api(&pool, &[("NOTIFY_MODE", "wakeup")]).await;
    let b = spawn_api(&pool, &[("NOTIFY_MODE", "wakeup")]).await;
    let rooms = 6;
    // A reader following the feed with long polls while the load runs.
    let stop = tokio::sync::watch::channel(false);
    let follower = {
        let client = b.client.clone();
        let address = b.address.clone();
        let mut stop = stop.1.clone();
        tokio::spawn(async move {
            let mut after = 0;
            let mut seen: Vec<Value> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let url = format!("{address}/v1/changes?after={after}&limit=50&wait=1");
                let body: Value = client
                    .get(url)
                    .bearer_auth(API)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let changes = body["changes"].as_array().unwrap();
                seen.extend(changes.iter().cloned());
                after = body["next"].as_i64().unwrap();
                if (changes.is_empty() && *stop.borrow_and_update()) || Instant::now() > deadline {
                    return seen;
                }
            }
        })
    };
    // Snapshots taken while the load runs, each checked against the feed afterwards.
    let snapshots = {
        let client = a.client.clone();
        let address = a.address.clone();
        tokio::spawn(async move {
            let mut taken = Vec::new();
            for i in 0..20 {
                let room = format!("load-{}", i % rooms);
                let url = format!("{address}/v1/rooms/{APP_ID}/{room}/members");
                let body: Value = client
                    .get(url)
                    .bearer_auth(API)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                taken.push((room, body));
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            taken
        })
    };
    // Senders: enters and leaves in time order per room, over both instances, with
    // duplicates and a late event or two.
    let mut senders = Vec::new();
    for s in 0..4_i64 {
        let apps = [a.address.clone(), b.address.clone()];
        let client = a.client.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..60_i64 {
                let room = format!("load-{}", (s + i) % rooms as i64);
                let user = format!("u{}", (s * 7 + i) % 9);
                let at = 1_000 + i * 10 + s;
                let body = if i % 3 == 2 {
                    leave(&room, &[&user], "Leave", at)
                } else {
                    enter(&room, &[&user], at)
                };
                let address = &apps[(i % 2) as usize];
                for _ in 0..(1 + (i % 5 == 0) as usize) {
                    let query = format!(
                        "SdkAppid={APP_ID}&CallbackCommand={}&contenttype=json",
                        body["CallbackCommand"].as_str().unwrap()
                    );
                    let response = client
                        .post(format!("{address}/callback?{query}"))
                        .body(body.to_string())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                }
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let snapshots = snapshots.await.unwrap();
    stop.0.send(true).unwrap();
    let seen = follower.await.unwrap();
    // Exactly once, in order, without gaps.
    let seqs: Vec<i64> = seen.iter().map(|c| c["seq"].as_i64().unwrap()).collect();
    let head: i64 = sqlx::query_scalar("SELECT last_seq FROM room_changes_head")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
    // room_seq dense per room.
    let mut room_seqs: HashMap<String, Vec<i64>> = HashMap::new();
    for c in &seen {
        room_seqs
            .entry(c["room_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(c["room_seq"].as_i64().unwrap());
    }
    for (room, list) in &room_seqs {
        assert_eq!(list, &(1..=list.len() as i64).collect::<Vec<_>>(), "{room}");
    }
    // The feed replayed is the roster.
    let mut rosters: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in &seen {
        replay(&mut rosters, c);
    }
    let view: Vec<(String, String)> = sqlx::query_as(
        "SELECT room_id, user_id FROM room_members WHERE in_room ORDER BY room_id, user_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (room, user) in view {
        expected.entry(room).or_default().insert(user);
    }
    rosters.retain(|_, r| !r.is_empty());
    assert_eq!(rosters, expected);
    // Every snapshot plus the room's changes after its cursor is the final roster.
    for (room, snapshot) in snapshots {
        let cursor = snapshot["cursor"].as_i64().unwrap();
        let mut roster: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let members = roster.entry(room.clone()).or_default();
        for m in snapshot["members"].as_array().unwrap() {
            members.insert(m["user_id"].as_str().unwrap().to_owned());
        }
        for c in seen
            .iter()
            .filter(|c| c["seq"].as_i64().unwrap() > cursor && c["room_id"] == json!(room))
        {
            replay(&mut roster, c);
        }
        assert_eq!(
            roster[&room],
            expected.get(&room).cloned().unwrap_or_default(),
            "{room} from cursor {cursor}"
        );
    }
    a.stop().await;
    b.stop().await;
}

/// Hundreds of readers far behind (positions older than the feed reader's window, so each read
/// is a query of the table) queue for their turns to query; the callbacks keep the pool's
/// connections and their pace, and no reader is told the database could not answer.
#[sqlx::test]
async fn readers_behind_the_window_never_take_the_callbacks_connections(pool: PgPool) {
    let first = spawn_api(&pool, &[]).await;
    let users: Vec<String> = (0..50).map(|u| format!("u{u}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    for i in 0..20 {
        first
            .deliver(&enter(&format!("r{i}"), &users, 100 + i))
            .await;
    }
    first.stop().await;
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM room_changes")
        .fetch_one(&pool)
        .await
        .unwrap();
    // A new process: its window starts at the head, so position 0 is a query of the table.
    let app = spawn_api(&pool, &[("DATABASE_MAX_CONNECTIONS", "6")]).await;
    let readers: Vec<_> = (0..300)
        .map(|_| {
            let client = app.client.clone();
            let url = format!("{}/v1/changes?after=0&limit=1000", app.address);
            tokio::spawn(async move {
                let answer = client.get(url).bearer_auth(API).send().await.unwrap();
                let status = answer.status().as_u16();
                let body: Value = answer.json().await.unwrap_or(Value::Null);
                (
                    status,
                    body["code"].as_i64(),
                    body["changes"].as_array().map(Vec::len),
                )
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for i in 0..30 {
        let sent = Instant::now();
        app.deliver(&enter("busy", &[&format!("b{i}")], 10_000 + i))
            .await;
        slowest = slowest.max(sent.elapsed());
    }
    let mut served = 0;
    for reader in readers {
        match reader.await.unwrap() {
            // Every change written before, at least.
            (200, None, Some(n)) if n as i64 >= written => served += 1,
            // Told to come back: its turn did not come within the bound.
            (503, Some(50311), _) => {}
            other => panic!("a reader got {other:?}"),
        }
    }
    assert!(served > 0, "some readers were served");
    // Stored at once, not journaled after the commit timeout (1.2 s) for want of a connection.
    assert!(
        slowest < Duration::from_millis(1000),
        "slowest callback {slowest:?}"
    );
    let members: i64 =
        sqlx::query_scalar("SELECT count(*) FROM room_members WHERE room_id = 'busy'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(members, 30);
    app.stop().await;
}

/// The thread names and nice values of this process's HTTP workers.
fn worker_nice_values() -> Vec<i32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "tid (name) state ppid …": the name may hold spaces; nice is the 19th field.
        let (head, rest) = stat.rsplit_once(')').unwrap();
        if !head.contains("actix-server w") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        out.push(fields[16].parse().unwrap());
    }
    out
}

/// docs/feed.md#readers-apart: with `API_LISTEN_ADDR` the read API and the console answer there
/// only, the callbacks on `LISTEN_ADDR` only, and the readers' threads run at nice 10.
#[sqlx::test]
async fn the_readers_listen_apart_on_threads_of_lower_priority(pool: PgPool) {
    let app = spawn_api(
        &pool,
        &[("API_LISTEN_ADDR", "127.0.0.1:0"), ("API_WORKERS", "1")],
    )
    .await;
    let apart = app.api_address.clone().expect("a port of its own");
    assert_ne!(apart, app.address);
    let get = |base: &str, path: &str| {
        app.client
            .get(format!("{base}{path}"))
            .bearer_auth(API)
            .send()
    };
    // On the callbacks' port the readers' routes do not exist; /metrics and /readyz do.
    for path in ["/v1/changes", "/v1/rooms/1400000001/r/members", "/console"] {
        assert_eq!(
            get(&app.address, path).await.unwrap().status(),
            404,
            "{path}"
        );
    }
    assert_eq!(get(&app.address, "/metrics").await.unwrap().status(), 200);
    // On the readers' port: the API, the console's page and /healthz; no callbacks.
    let callback = app
        .client
        .post(format!("{apart}/callback?SdkAppid={APP_ID}"))
        .json(&create("r", "Daily", 100))
        .send()
        .await
        .unwrap();
    assert_eq!(callback.status(), 404);
    assert_eq!(get(&apart, "/healthz").await.unwrap().status(), 200);
    assert_eq!(get(&apart, "/console").await.unwrap().status(), 200);
    // A long poll apart is woken by a callback's commit on the other port.
    let poll = tokio::spawn(get(&apart, "/v1/changes?after=0&wait=10"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    app.deliver(&create("r", "Daily", 100)).await;
    let body: Value = poll.await.unwrap().unwrap().json().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(body["changes"][0]["kind"], "room.created", "{body}");
    // One worker apart at nice 10, the callbacks' two at the process's own priority.
    let deadline = Instant::now() + Duration::from_secs(5);
    let nice = loop {
        let nice = worker_nice_values();
        if nice.iter().filter(|n| **n == 10).count() == 1 || Instant::now() > deadline {
            break nice;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(nice.iter().filter(|n| **n == 10).count(), 1, "{nice:?}");
    assert!(nice.iter().filter(|n| **n == 0).count() >= 2, "{nice:?}");
    app.stop().await;
}
