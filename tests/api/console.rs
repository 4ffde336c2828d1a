//! docs/console.md, from outside the browser (tests/browser/ runs the page itself): the console
//! exists only with a token, its session cookie, its headers, its event stream.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::*;

const API: &str = "a-console-token-of-length";

/// A client that keeps cookies, and an app with the console on.
async fn console_app(pool: &PgPool) -> (TestApp, reqwest::Client) {
    let app = spawn_app_with(pool.clone(), &[("API_TOKEN", API)]).await;
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    (app, client)
}

/// Signs in; the session cookie's `Set-Cookie` line.
async fn sign_in(app: &TestApp, client: &reqwest::Client, headers: &[(&str, &str)]) -> String {
    let mut request = client
        .post(format!("{}/console/login", app.address))
        .form(&[("token", API)]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/console");
    response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[sqlx::test]
async fn without_a_token_there_is_no_console(pool: PgPool) {
    let app = spawn_app(pool).await;
    for path in [
        "/console",
        "/console/console.js",
        "/console/api/overview",
        "/console/events?after=0",
    ] {
        assert_eq!(app.get(path).await.status(), 404, "{path}");
    }
    let response = app
        .client
        .post(format!("{}/console/login", app.address))
        .form(&[("token", API)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    app.stop().await;
}

#[sqlx::test]
async fn the_session_cookie_and_the_headers(pool: PgPool) {
    let (app, client) = console_app(&pool).await;
    // Before signing in: the form, and no data.
    let page = client
        .get(format!("{}/console", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(page.text().await.unwrap().contains("name=\"token\""));
    let api = client
        .get(format!("{}/console/api/rooms", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    // A wrong token: the form again, no cookie.
    let wrong = client
        .post(format!("{}/console/login", app.address))
        .form(&[("token", "not-it-at-all-no")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    // Plain HTTP: no Secure; through a TLS proxy: Secure.
    let cookie = sign_in(&app, &client, &[]).await;
    for part in [
        "roomsync_console=v1.",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(part), "{part} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert!(!cookie.contains(API));
    let proxied = sign_in(&app, &client, &[("X-Forwarded-Proto", "https")]).await;
    assert!(proxied.contains("Secure"), "{proxied}");
    let rooms: Value = client
        .get(format!("{}/console/api/rooms", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rooms["rooms"], serde_json::json!([]));
    // A forged or altered cookie is no session.
    let forged = reqwest::Client::new()
        .get(format!("{}/console/api/rooms", app.address))
        .header("cookie", "roomsync_console=v1.99999999999.00")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // Signing out removes it.
    let out = client
        .post(format!("{}/console/logout", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    app.stop().await;
}

/// The events of a console stream until the last id reaches `upto` or `limit` passes:
/// (id, event name, data).
async fn read_events(
    response: reqwest::Response,
    upto: i64,
    limit: Duration,
) -> Vec<(Option<i64>, String, Value)> {
    let mut seen = Vec::new();
    let mut text = String::new();
    let mut body = response.bytes_stream();
    let deadline = Instant::now() + limit;
    let mut last = -1;
    while last < upto {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(Ok(chunk))) = tokio::time::timeout(left, body.next()).await else {
            break;
        };
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let field = |name: &str| event.lines().find_map(|l| l.strip_prefix(name));
            let (Some(name), Some(data)) = (field("event: "), field("data: ")) else {
                continue;
            };
            let id = field("id: ").map(|id| id.parse().unwrap());
            last = id.unwrap_or(last);
            seen.push((id, name.to_owned(), serde_json::from_str(data).unwrap()));
        }
    }
    seen
}

/// What `rooms` events tell: the changes they cover, and each room's count move.
fn counted(events: &[(Option<i64>, String, Value)]) -> (u64, Vec<(String, i64)>) {
    let mut changes = 0;
    let mut rooms: Vec<(String, i64)> = Vec::new();
    for (_, name, data) in events.iter().filter(|(_, name, _)| name == "rooms") {
        assert_eq!(name, "rooms");
        changes += data["changes"].as_u64().unwrap();
        for room in data["rooms"].as_array().unwrap() {
            let id = room[1].as_str().unwrap().to_owned();
            let moved = room[2].as_i64().unwrap();
            match rooms.iter_mut().find(|(r, _)| *r == id) {
                Some((_, total)) => *total += moved,
                None => rooms.push((id, moved)),
            }
        }
    }
    (changes, rooms)
}

#[sqlx::test]
async fn a_hundred_viewers_each_get_every_change_and_resume_by_id(pool: PgPool) {
    let (app, client) = console_app(&pool).await;
    sign_in(&app, &client, &[]).await;
    let mut viewers = Vec::new();
    for i in 0..100 {
        // One in ten has the room open: it gets that room's changes whole as well.
        let open = if i % 10 == 0 {
            format!("&app={APP_ID}&room=watched")
        } else {
            String::new()
        };
        let response = client
            .get(format!("{}/console/events?after=0{open}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        viewers.push((
            !open.is_empty(),
            tokio::spawn(read_events(response, 5, Duration::from_secs(10))),
        ));
    }
    let started = Instant::now();
    for i in 0..4 {
        app.deliver(&enter("watched", &[&format!("u{i}")], 100 + i))
            .await;
    }
    let callbacks = started.elapsed();
    // session.started, then four member.entered: five changes, the room's count up by 4.
    for (open, viewer) in viewers {
        let events = viewer.await.unwrap();
        assert_eq!(counted(&events), (5, vec![("watched".to_owned(), 4)]));
        let ids: Vec<i64> = events.iter().filter_map(|(id, _, _)| *id).collect();
        assert!(ids.is_sorted() && ids.last() == Some(&5), "{ids:?}");
        let whole: Vec<i64> = events
            .iter()
            .filter(|(_, name, _)| name == "change")
            .map(|(_, _, data)| data["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(whole, if open { vec![1, 2, 3, 4, 5] } else { vec![] });
    }
    assert!(
        callbacks < Duration::from_secs(2),
        "{callbacks:?} for four callbacks"
    );
    // A browser that reconnects sends the last id it saw: it gets what followed, once.
    let resumed = client
        .get(format!(
            "{}/console/events?app={APP_ID}&room=watched",
            app.address
        ))
        .header("Last-Event-ID", "3")
        .send()
        .await
        .unwrap();
    let events = read_events(resumed, 5, Duration::from_secs(2)).await;
    assert_eq!(counted(&events), (2, vec![("watched".to_owned(), 2)]));
    let whole: Vec<i64> = events
        .iter()
        .filter(|(_, name, _)| name == "change")
        .map(|(_, _, data)| data["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(whole, vec![4, 5]);
    // Bad input: a clear error.
    for (query, code) in [
        ("after=x", 40020),
        ("after=0&after=1", 40020),
        ("after=0&app=1", 40024),
        ("after=0&app=x&room=r", 40024),
    ] {
        let response = client
            .get(format!("{}/console/events?{query}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], code, "{query}: {body}");
    }
    app.stop().await;
}

/// The overview as a signed-in viewer reads it.
async fn overview(app: &TestApp, client: &reqwest::Client) -> Value {
    let response = client
        .get(format!("{}/console/api/overview", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Overview reads of `rejected_callbacks` waiting for a lock (the test holds one), in this
/// test's database only: tests run side by side, each in a database of its own on one server,
/// and two of them hold the lock.
async fn overview_reads_waiting(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'
           AND query LIKE '%FROM rejected_callbacks ORDER BY id DESC%'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A signed-in console whose shared overview stays fresh for `fresh`.
async fn signed_in_sharing(pool: &PgPool, fresh: Duration) -> (TestApp, reqwest::Client) {
    let app = spawn_app_tuned(pool.clone(), &[("API_TOKEN", API)], |config| {
        config.timings.console_overview_fresh = fresh;
    })
    .await;
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    sign_in(&app, &client, &[]).await;
    (app, client)
}

/// A transaction holding `rejected_callbacks`: the overview's read waits for it.
async fn hold_refusals(pool: &PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE rejected_callbacks IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    holder
}

#[sqlx::test]
async fn consoles_asking_together_share_one_read_of_the_overview(pool: PgPool) {
    // Every open console asks for the overview every 10 s: a hundred of them must not read
    // the day's history ten times a second (docs/console.md#how-it-stays-light).
    let fresh = Duration::from_secs(3);
    let (app, client) = signed_in_sharing(&pool, fresh).await;

    // While one read waits for the database, twenty more consoles ask: they wait for that read
    // instead of making their own (readers' turns would let a second one in).
    let holder = hold_refusals(&pool).await;
    let asks: Vec<_> = (0..20)
        .map(|_| tokio::spawn(overview_once(app.address.clone(), client.clone())))
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || async {
            overview_reads_waiting(&pool).await == 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(overview_reads_waiting(&pool).await, 1, "one read for all");
    // A refusal while they wait is not in the answer they share.
    holder.commit().await.unwrap();
    let mut bodies = Vec::new();
    for ask in asks {
        bodies.push(ask.await.unwrap());
    }
    let read_at = Instant::now();
    assert!(bodies.iter().all(|b| b == &bodies[0]));

    // Within the freshness, the answer is the one read, even after a refusal...
    let unlisted = serde_json::json!({
        "CallbackCommand": "Room.CallbackAfterMemberEnter", "RoomId": "r", "EventTime": 1
    });
    let (status, _) = app.send(&unlisted).await;
    assert_eq!(status, 400);
    let again = overview_once(app.address.clone(), client.clone()).await;
    if read_at.elapsed() < fresh {
        assert_eq!(again, bodies[0]);
    }
    // ...and after it, a new read shows it.
    tokio::time::sleep(fresh.saturating_sub(read_at.elapsed())).await;
    let later = overview(&app, &client).await;
    assert_eq!(later["refusals"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[sqlx::test]
async fn a_shared_read_that_fails_answers_every_console_that_waited(pool: PgPool) {
    // A hundred consoles queued behind one read that fails must not then wait for one failed
    // read after another (docs/console.md#how-it-stays-light): the failure answers them all.
    let (app, client) = signed_in_sharing(&pool, Duration::from_secs(3)).await;
    let holder = hold_refusals(&pool).await;
    let status = |address: String, client: reqwest::Client| async move {
        client
            .get(format!("{address}/console/api/overview"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let asks: Vec<_> = (0..20)
        .map(|_| tokio::spawn(status(app.address.clone(), client.clone())))
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || async {
            overview_reads_waiting(&pool).await == 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The one read fails (its statement cancelled, as an operator or a timeout would) while the
    // lock is still held: every console that waited gets the 503 at once, and none makes a
    // read of its own that would wait behind the lock again.
    let cancelled: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'
           AND query LIKE '%FROM rejected_callbacks ORDER BY id DESC%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(cancelled, vec![true]);
    let failed_at = Instant::now();
    for ask in asks {
        let left = Duration::from_secs(2).saturating_sub(failed_at.elapsed());
        let answer = tokio::time::timeout(left, ask)
            .await
            .expect("every console answered within 2 s of the failure, the lock still held");
        assert_eq!(answer.unwrap(), 503);
    }
    assert_eq!(overview_reads_waiting(&pool).await, 0);
    holder.commit().await.unwrap();
    // The failure is not kept: a console asking after it gets a read of its own.
    assert_eq!(status(app.address.clone(), client.clone()).await, 200);
    app.stop().await;
}

async fn overview_once(address: String, client: reqwest::Client) -> String {
    let response = client
        .get(format!("{address}/console/api/overview"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[sqlx::test]
async fn the_setup_check_shows_what_tencent_check_finds(pool: PgPool) {
    use roomsync::callback::Product;

    use crate::fake_tencent::FakeTencent;

    const KEY: &str = "5e1f0a3c2b4d6e8f0a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f";
    const OURS: &str = "https://rooms.example.com/callback";
    // Without credentials: the page says how to turn it on.
    let (app, client) = console_app(&pool).await;
    sign_in(&app, &client, &[]).await;
    assert_eq!(overview(&app, &client).await["tencent_check"], Value::Null);
    app.stop().await;

    let fake = FakeTencent::start(&[(APP_ID, KEY), (1_400_000_002, KEY)]).await;
    // App 1: leave switched off; app 2: all right.
    let room = [
        "Room.CallbackAfterCreateRoom",
        "Room.CallbackAfterDestroyRoom",
        "Room.CallbackAfterUpdateRoomInfo",
        "Room.CallbackAfterMemberEnter",
        "Mic.CallbackAfterSeatInfoChanged",
    ];
    fake.set_callback_config(APP_ID, Product::Room, Some((OURS, &room)));
    let all: Vec<&str> = room
        .iter()
        .copied()
        .chain(["Room.CallbackAfterMemberLeave"])
        .collect();
    fake.set_callback_config(1_400_000_002, Product::Room, Some((OURS, &all)));
    let keys = format!("{APP_ID}={KEY},1400000002={KEY}");
    let app = spawn_app_with(
        pool.clone(),
        &[
            ("API_TOKEN", API),
            ("TENCENT_API_BASE", fake.base_url.as_str()),
            ("TENCENT_SECRET_KEY", keys.as_str()),
            ("PUBLIC_CALLBACK_URL", OURS),
            ("RECONCILE_INTERVAL_SECS", "0"),
        ],
    )
    .await;
    sign_in(&app, &client, &[]).await;
    let checked = eventually(Duration::from_secs(10), || async {
        overview(&app, &client).await["tencent_check"]["status"] != "checking"
    })
    .await;
    let check = overview(&app, &client).await["tencent_check"].clone();
    assert!(checked, "{check}");
    assert_eq!(check["status"], "findings", "{check}");
    let lines: Vec<&str> = check["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lines.contains(&"app 1400000001 Room: commands off: Room.CallbackAfterMemberLeave (roomsync handles them: switch them on)"),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"app 1400000002 Room: all right"),
        "{lines:?}"
    );
    // Many viewers, one reading: the page never asks Tencent itself.
    let calls = fake.requests().len();
    for _ in 0..5 {
        overview(&app, &client).await;
    }
    assert_eq!(fake.requests().len(), calls);
    assert!(!check.to_string().contains(KEY));
    app.stop().await;
    fake.stop().await;
}

#[sqlx::test]
async fn the_setup_check_counts_today_and_marks_a_command_quiet_for_a_day(pool: PgPool) {
    let (app, client) = console_app(&pool).await;
    sign_in(&app, &client, &[]).await;
    // Today: one enter stored, then Tencent's retry of it (already stored: it arrived too).
    let entered = enter("setup", &["a"], 100);
    app.deliver(&entered).await;
    app.deliver(&entered).await;
    // A leave that last arrived two days ago, counted then (a row the upsert would have left).
    sqlx::query(
        "INSERT INTO ingest_counts (sdk_app_id, day, callback_command, slot, accepted, last_at)
         VALUES ($1, (now() AT TIME ZONE 'UTC')::date - 2, 'Room.CallbackAfterMemberLeave', 0,
                 7, now() - interval '2 days')",
    )
    .bind(APP_ID)
    .execute(&pool)
    .await
    .unwrap();
    let overview = overview(&app, &client).await;
    let arrival = |command: &str| {
        overview["arrivals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["command"] == command)
            .unwrap_or_else(|| panic!("{command} in {overview}"))
            .clone()
    };
    let enters = arrival("Room.CallbackAfterMemberEnter");
    assert_eq!(enters["today"], 2, "{enters}");
    assert_eq!(enters["quiet"], false, "{enters}");
    let stored: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(received_at) FROM room_events")
            .fetch_one(&pool)
            .await
            .unwrap();
    let last_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(enters["last_at"].clone()).unwrap();
    assert!(last_at >= stored, "{last_at} after the first ({stored})");
    let leaves = arrival("Room.CallbackAfterMemberLeave");
    assert_eq!(leaves["today"], 0, "{leaves}");
    assert_eq!(leaves["quiet"], true, "{leaves}");
    assert!(leaves["last_at"].is_string(), "{leaves}");
    let never = arrival("Live.CallbackAfterCreateRoom");
    assert_eq!(
        (&never["today"], &never["last_at"], &never["quiet"]),
        (&Value::from(0), &Value::Null, &Value::Bool(true))
    );
    // ingest_daily shows the same newest arrival.
    let daily: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT max(last_at) FROM ingest_daily WHERE callback_command = 'Room.CallbackAfterMemberEnter'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(daily, Some(last_at));
    app.stop().await;
}
