//! Hostile and unusual senders, and an overloaded database: nothing answered 200 gets stuck,
//! no valid callback is refused for ever, a slow database is not taken for a dead one, and
//! every bound holds at its worst case.

use std::time::{Duration, Instant};

use roomsync::journal::{Journal, Record};
use serde_json::{Value, json};
use sqlx::{PgPool, postgres::PgListener};
use tokio::io::AsyncWriteExt;

use crate::{helpers::*, rows::*};

/// An id of exactly 256 bytes whose every byte but a short prefix is escaped in JSON (\u0001).
fn worst_id(n: usize) -> String {
    let mut id = format!("{n:05}");
    id.extend(std::iter::repeat_n('\u{1}', 256 - id.len()));
    id
}

#[sqlx::test]
async fn numbers_postgresql_cannot_store_are_refused_and_kept(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    for (n, number) in ["1e999999", "1e-999999", "1e131072"].iter().enumerate() {
        let text = enter("r", &["a"], 100 + n as i64).to_string().replacen(
            '{',
            &format!(r#"{{"X":{number},"#),
            1,
        );
        let query = app.query_for(&enter("r", &["a"], 1));
        let (status, answer) = answer(app.post_raw(&query, text).await).await;
        assert_eq!(status, 400, "{number}: {answer}");
        assert_eq!(answer["ErrorCode"], 40004);
        assert!(answer["ErrorInfo"].as_str().unwrap().starts_with("X "));
    }
    // Inside RoomInfo too, where it would also reach rooms.room_info.
    let update = r#"{"CallbackCommand":"Room.CallbackAfterUpdateRoomInfo","EventTime":5,"RoomInfo":{"RoomId":"r","Deep":[1e131072]}}"#;
    let query = "SdkAppid=1400000001&CallbackCommand=Room.CallbackAfterUpdateRoomInfo";
    let (status, answer) = answer(app.post_raw(query, update).await).await;
    assert_eq!((status, answer["ErrorCode"].clone()), (400, json!(40004)));
    assert!(
        answer["ErrorInfo"]
            .as_str()
            .unwrap()
            .starts_with("RoomInfo.Deep[0]")
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM rejected_callbacks WHERE error_code = 40004"
        )
        .await,
        4
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM room_events").await, 0);
    app.stop().await;
}

/// The rule of the parser is PostgreSQL's own: check it against the server at the edges.
#[sqlx::test]
async fn the_numeric_rule_agrees_with_postgresql(pool: PgPool) {
    use roomsync::callback::numeric_fits;
    let edges = [
        "1e131071",
        "1e131072",
        "9.9e131071",
        "99e131070",
        "1e-16383",
        "1e-16384",
        "0e-16383",
        "0e-16384",
        "0.0e-16383",
        "1.5e-16382",
        "1.5e-16383",
        "0e1073741822",
        "1e1073741823",
        "-1e-1073741823",
        "0.000001e131077",
        "0.000001e131078",
        "123",
        "-0.5",
    ];
    for edge in edges {
        let accepted = sqlx::query_scalar::<_, Value>("SELECT $1::text::jsonb")
            .bind(format!(r#"{{"n":{edge}}}"#))
            .fetch_one(&pool)
            .await
            .is_ok();
        assert_eq!(numeric_fits(edge), accepted, "{edge}");
    }
}

#[sqlx::test]
async fn notifications_are_split_by_their_encoded_size(pool: PgPool) {
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen("room_members").await.unwrap();
    let app = spawn_app(pool.clone()).await;
    // Six 256-byte ids, every byte escaped: one payload would be ~9 kB.
    let room: String = std::iter::repeat_n('\u{1f}', 256).collect();
    let ids: Vec<String> = (0..30).map(worst_id).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    app.deliver(&enter(&room, &refs[..6], 100)).await;
    // Then 5 at a time, then the destroy that ends all 30 at once.
    for (i, chunk) in refs[6..].chunks(5).enumerate() {
        app.deliver(&enter(&room, chunk, 200 + i as i64)).await;
    }
    assert_eq!(roster(&pool, &room).await.len(), 30);
    app.deliver(&destroy(&room, 1000)).await;
    assert!(roster(&pool, &room).await.is_empty());

    let mut entered = Vec::new();
    let mut left = Vec::new();
    while entered.len() < 30 || left.len() < 30 {
        let note = tokio::time::timeout(Duration::from_secs(5), listener.recv())
            .await
            .expect("every member announced")
            .unwrap();
        assert!(note.payload().len() < 8000);
        let payload: Value = serde_json::from_str(note.payload()).unwrap();
        assert_eq!(payload["room_id"], json!(room));
        let users = payload["user_ids"].as_array().unwrap().iter();
        let users = users.map(|u| u.as_str().unwrap().to_owned());
        if payload["in_room"] == json!(true) {
            entered.extend(users);
        } else {
            left.extend(users);
        }
    }
    left.sort();
    assert_eq!(left, ids, "the destroy announced every member");

    // 1,000 ids with a quote each, in a 200-byte room.
    let room = "r".repeat(200);
    let quoted: Vec<String> = (0..1000).map(|i| format!("q\"{i:05}")).collect();
    let refs: Vec<&str> = quoted.iter().map(String::as_str).collect();
    app.deliver(&enter(&room, &refs, 100)).await;
    assert_eq!(roster(&pool, &room).await.len(), 1000);
    app.stop().await;
}

#[sqlx::test]
async fn a_journal_record_an_older_version_took_is_kept_when_it_no_longer_parses(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    {
        let journal = Journal::open(&path, 1 << 20).unwrap();
        let record = |body: String| Record {
            sdk_app_id: APP_ID,
            received_at: chrono::Utc::now(),
            query: "SdkAppid=1400000001&CallbackCommand=Room.CallbackAfterMemberEnter".into(),
            body,
        };
        let bad = r#"{"CallbackCommand":"Room.CallbackAfterMemberEnter","RoomId":"r","MemberList_Account":["x"],"EventTime":5,"X":1e999999}"#;
        journal
            .append(vec![
                record(enter("r", &["a"], 5).to_string()),
                record(bad.into()),
                record(enter("r", &["b"], 6).to_string()),
            ])
            .await
            .unwrap();
    }
    let journal_path = path.to_string_lossy().into_owned();
    let app = spawn_app_with(pool.clone(), &[("JOURNAL_PATH", &journal_path)]).await;
    let drained = eventually(Duration::from_secs(10), || async {
        journal_depth(&app).await == 0
    })
    .await;
    assert!(drained);
    assert_eq!(roster(&pool, "r").await, vec!["a", "b"]);
    let (code, info): (i32, String) =
        sqlx::query_as("SELECT error_code, error_info FROM rejected_callbacks")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(code, 50307);
    assert!(info.starts_with("X "), "{info}");
    app.stop().await;
}

#[sqlx::test]
async fn lists_in_the_fields_roomsync_reads_are_bounded_at_any_depth(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let list = |item: &str, n: usize| format!("[{}]", vec![item; n].join(","));
    let cases = [
        // An unknown command's SeatList was stored as it came (history only), whatever its size.
        (
            "X.Unknown",
            format!(
                r#"{{"RoomId":"r","EventTime":5,"SeatList":{}}}"#,
                list("{}", 10_001)
            ),
            "SeatList has more than 10000 entries",
        ),
        (
            "Room.CallbackAfterUpdateRoomInfo",
            format!(
                r#"{{"EventTime":5,"RoomInfo":{{"RoomId":"r","Deep":{{"L":{}}}}}}}"#,
                list("0", 10_001)
            ),
            "RoomInfo.Deep.L has more than 10000 entries",
        ),
        (
            "Room.CallbackAfterUpdateRoomInfo",
            format!(
                r#"{{"EventTime":5,"RoomInfo":{{"RoomId":"r","A":{l},"B":{l},"C":{l},"D":{l},"E":{l},"F":{l},"G":{l}}}}}"#,
                l = list("0", 10_000)
            ),
            "body has more than 70000 values in the fields roomsync reads",
        ),
    ];
    for (command, body, info) in cases {
        let query = format!("SdkAppid=1400000001&CallbackCommand={command}");
        let (status, answer) = answer(app.post_raw(&query, body).await).await;
        assert_eq!((status, answer["ErrorCode"].clone()), (400, json!(40004)));
        assert_eq!(answer["ErrorInfo"], info);
    }
    // At the bound: accepted, and the same list in a field roomsync does not read costs nothing.
    let at_bound = format!(
        r#"{{"RoomId":"r","EventTime":5,"SeatList":{},"Junk":{}}}"#,
        list("{}", 10_000),
        list("0", 100_000)
    );
    let (status, _) = answer(
        app.post_raw("SdkAppid=1400000001&CallbackCommand=X.Unknown", at_bound)
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(count(&pool, "SELECT count(*) FROM room_events").await, 1);
    app.stop().await;
}

#[sqlx::test]
async fn a_late_enter_of_10000_members_is_applied_in_one_go(pool: PgPool) {
    // A generous commit timeout, so a busy test machine cannot fail this: a recompute member
    // by member took 10-15 s here.
    let app = spawn_app_with(pool.clone(), &[("COMMIT_TIMEOUT_MS", "5000")]).await;
    let ids: Vec<String> = (0..10_000).map(|i| format!("m{i:05}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    app.deliver(&leave("r", &refs, "Leave", 200)).await;
    // Older than every member's newest event: each member is recomputed from history.
    let started = Instant::now();
    app.deliver(&enter("r", &refs, 100)).await;
    let took = started.elapsed();
    assert_eq!(
        metric(
            &app,
            r#"roomsync_callbacks_total{command="member_enter",outcome="stored"}"#
        )
        .await,
        1.0,
        "stored by PostgreSQL within the commit timeout, not journaled (took {took:?})"
    );
    let wrong = count(
        &pool,
        "SELECT count(*) FROM room_members WHERE in_room OR entered_at <> 'epoch'::timestamptz + interval '100 ms'
             OR left_at <> 'epoch'::timestamptz + interval '200 ms' OR leave_type <> 'Leave'",
    )
    .await;
    assert_eq!(wrong, 0);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM room_members").await,
        10_000
    );
    app.stop().await;
}

#[sqlx::test]
async fn the_default_body_bound_takes_10000_ids_of_100_bytes(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let ids: Vec<String> = (0..10_000).map(|i| format!("{i:0100}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let body = enter("r", &refs, 100);
    assert!(body.to_string().len() > 1_000_000);
    app.deliver(&body).await;
    assert_eq!(roster(&pool, "r").await.len(), 10_000);
    app.stop().await;
}

/// Sends `head` and the start of a body on a raw connection, then goes idle; returns what the
/// server sent and how long it took to close the connection (`None`: still open at `limit`).
async fn go_idle_after(app: &TestApp, head: &str, limit: Duration) -> (String, Option<Duration>) {
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    until_closed(&mut stream, limit).await
}

#[sqlx::test]
async fn an_unfinished_body_is_answered_and_its_connection_closed(pool: PgPool) {
    let app = spawn_app(pool).await;
    let target = "/callback?SdkAppid=1400000001&CallbackCommand=Room.CallbackAfterMemberEnter";
    let chunked = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{{\r\n"
    );
    let (answer, closed) = go_idle_after(&app, &chunked, Duration::from_secs(15)).await;
    assert!(answer.contains("40009"), "{answer}");
    let closed = closed.expect("the connection is closed after the body timeout");
    assert!(closed < Duration::from_secs(8), "closed after {closed:?}");

    let declared = format!("POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{");
    let (answer, closed) = go_idle_after(&app, &declared, Duration::from_secs(15)).await;
    assert!(answer.contains("40009"), "{answer}");
    assert!(closed.is_some());

    // A head that never ends is cut too.
    let (_, closed) = go_idle_after(
        &app,
        "POST /callback HTTP/1.1\r\nHost:",
        Duration::from_secs(15),
    )
    .await;
    assert!(closed.is_some());
    app.stop().await;
}

/// Requests the HTTP layer cannot take as HTTP (here a request target over its 65,534-byte
/// limit) are answered before roomsync sees them: a bare 4xx without a JSON body, and the
/// connection closed.
#[sqlx::test]
async fn a_head_too_large_for_http_gets_a_bare_4xx(pool: PgPool) {
    let app = spawn_app(pool).await;
    let long = "x".repeat(100_000);
    let head = format!(
        "POST /callback?SdkAppid=1400000001&Pad={long} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let (raw, closed) = go_idle_after(&app, &head, Duration::from_secs(10)).await;
    let status: u16 = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((400..500).contains(&status), "{raw}");
    assert!(closed.is_some());
    // Under the limit, a long query gets the JSON answer of a callback.
    let (status, answer) = answer(
        app.post_raw(&format!("Pad={}", "x".repeat(20_000)), "{}")
            .await,
    )
    .await;
    assert_eq!((status, answer["ErrorCode"].clone()), (403, json!(40301)));
    app.stop().await;
}

#[sqlx::test]
async fn a_slow_database_is_not_taken_for_a_dead_one(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.deliver(&enter("busy", &["a"], 100)).await;
    // Another session holds the room's row: the next write for it waits past the commit
    // timeout.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM rooms WHERE room_id = 'busy' FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let started = Instant::now();
    app.deliver(&enter("busy", &["b"], 200)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "answered inside Tencent's 2 s: {took:?}"
    );
    assert_eq!(metric(&app, "roomsync_store_slow_total").await, 1.0);
    // PostgreSQL answers: the next callback goes there, not to the journal.
    app.deliver(&enter("free", &["c"], 300)).await;
    assert_eq!(
        metric(
            &app,
            r#"roomsync_callbacks_total{command="member_enter",outcome="stored"}"#
        )
        .await,
        2.0
    );
    assert_eq!(roster(&pool, "free").await, vec!["c"]);
    blocker.commit().await.unwrap();
    let settled = eventually(Duration::from_secs(10), || async {
        journal_depth(&app).await == 0 && roster(&pool, "busy").await == ["a", "b"]
    })
    .await;
    assert!(settled);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM room_events").await,
        3,
        "stored once"
    );
    app.stop().await;
}

#[sqlx::test]
async fn unknown_commands_change_only_history(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let with_time = json!({"CallbackCommand": "Room.CallbackAfterSomethingNew", "RoomId": "ghost", "EventTime": 100});
    let without_time =
        json!({"CallbackCommand": "Room.CallbackAfterOther", "RoomId": "ghost2", "Value": 1});
    for body in [&with_time, &without_time, &without_time] {
        app.deliver(body).await;
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM rooms").await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM room_events").await, 2);
    // A known room is not touched by an unknown command either.
    app.deliver(&enter("r", &["a"], 100)).await;
    let before: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT last_event_at FROM rooms WHERE room_id = 'r'")
            .fetch_one(&pool)
            .await
            .unwrap();
    app.deliver(
        &json!({"CallbackCommand": "Room.CallbackAfterX", "RoomId": "r", "EventTime": 999}),
    )
    .await;
    let after: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT last_event_at FROM rooms WHERE room_id = 'r'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(before, after);
    app.stop().await;
}

#[sqlx::test]
async fn a_client_ip_that_is_not_utf8_is_refused_and_kept_as_sent(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let body = enter("r", &["a"], 100);
    let query = "SdkAppid=1400000001&CallbackCommand=Room.CallbackAfterMemberEnter&ClientIP=%C3%28";
    let (status, answer) = answer(app.post_raw(query, body.to_string()).await).await;
    assert_eq!((status, answer["ErrorCode"].clone()), (400, json!(40003)));
    let kept: String = sqlx::query_scalar("SELECT query FROM rejected_callbacks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, query, "the query is kept exactly as it came");
    app.stop().await;
}

#[sqlx::test]
async fn rejected_callbacks_are_bounded_in_size_rate_and_age(pool: PgPool) {
    let app = spawn_app_with(
        pool.clone(),
        &[
            ("REJECTED_BODY_MAX_BYTES", "1000"),
            // Rows of a little over 1,100 bytes: a burst of nine (ten seconds' worth, 10,000
            // bytes; the ninth takes the balance below zero), then about one a second.
            ("REJECTED_MAX_BYTES_PER_SEC", "1000"),
        ],
    )
    .await;
    let query = "SdkAppid=1400000001&CallbackCommand=Room.CallbackAfterMemberEnter";
    let invalid = format!(r#"{{"RoomId":"r","Pad":"{}"}}"#, "中".repeat(2000));
    for _ in 0..30 {
        let (status, _) = answer(app.post_raw(query, invalid.clone()).await).await;
        assert_eq!(status, 400);
    }
    let kept = count(&pool, "SELECT count(*) FROM rejected_callbacks").await;
    // Nine, and a tenth if the thirty requests take long enough for the balance to climb back
    // above zero (they took 1.2 s in one run, 0.6 s with nine kept in another).
    assert!(
        (9..=12).contains(&kept),
        "a burst of nine, then one a second: {kept}"
    );
    let dropped = metric(&app, "roomsync_rejected_dropped_total").await;
    assert_eq!(kept as f64 + dropped, 30.0);
    let (longest, size): (Option<i32>, i32) =
        sqlx::query_as("SELECT max(octet_length(body)), max(body_size) FROM rejected_callbacks")
            .fetch_one(&pool)
            .await
            .unwrap();
    let longest = longest.unwrap();
    assert!(
        longest <= 1000 && longest > 990,
        "cut on a character boundary: {longest}"
    );
    assert_eq!(size as usize, invalid.len());
    app.stop().await;

    sqlx::query(
        "UPDATE rejected_callbacks SET received_at = now() - interval '31 days' WHERE id % 2 = 0",
    )
    .execute(&pool)
    .await
    .unwrap();
    let old = count(
        &pool,
        "SELECT count(*) FROM rejected_callbacks WHERE id % 2 = 0",
    )
    .await;
    let pruned = roomsync::store::retention::prune_rejected(&pool, 30)
        .await
        .unwrap();
    assert_eq!(pruned as i64, old);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM rejected_callbacks").await,
        kept - old
    );
}

#[sqlx::test]
async fn the_rejected_budget_counts_bytes_just_past_each_bound(pool: PgPool) {
    use roomsync::{
        config::RejectedLimits,
        store::{Budget, RejectedCallback, RejectedStore, StoredRow},
        telemetry::Metrics,
    };
    let body = vec![b'x'; 500];
    let row = |body: &'static [u8]| RejectedCallback {
        sdk_app_id: Some(APP_ID),
        callback_command: Some("Room.CallbackAfterMemberEnter"),
        error_code: 40001,
        error_info: "body is not JSON",
        query: "SdkAppid=1400000001",
        body,
    };
    let body: &'static [u8] = body.leak();
    let bytes = StoredRow::of(&row(body), 1000).bytes() as u64;
    let metrics = Metrics::new();
    let total = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT bytes FROM rejected_callbacks_size")
            .fetch_one(&pool)
            .await
            .unwrap()
    };

    // Per second: a burst of ten seconds' worth, 2.5 rows: the third crosses it and is kept, the
    // fourth is not.
    let store = RejectedStore::new(
        pool.clone(),
        RejectedLimits {
            body_max_bytes: 1000,
            max_bytes_per_sec: bytes / 4,
            max_total_bytes: 1 << 30,
            retention_days: 30,
        },
    );
    let mut kept = Vec::new();
    for _ in 0..4 {
        kept.push(
            store
                .keep(&row(body), Budget::Counted, &metrics)
                .await
                .unwrap(),
        );
    }
    assert_eq!(kept, [true, true, true, false]);
    assert_eq!(metrics.rejected_dropped.get(), 1);
    // Exempt rows are kept whatever the budget.
    assert!(
        store
            .keep(&row(body), Budget::Exempt, &metrics)
            .await
            .unwrap()
    );
    assert_eq!(total(pool.clone()).await as u64, 4 * bytes);

    // In total: the table holds 4 rows; a cap one byte above that takes one more row, a cap
    // at the next row's end takes none after it.
    let store = RejectedStore::new(
        pool.clone(),
        RejectedLimits {
            body_max_bytes: 1000,
            max_bytes_per_sec: 1 << 30,
            max_total_bytes: 4 * bytes + 1,
            retention_days: 30,
        },
    );
    assert!(
        store
            .keep(&row(body), Budget::Counted, &metrics)
            .await
            .unwrap()
    );
    assert!(
        !store
            .keep(&row(body), Budget::Counted, &metrics)
            .await
            .unwrap()
    );
    assert_eq!(metrics.rejected_dropped.get(), 2);
    assert!(
        store
            .keep(&row(body), Budget::Exempt, &metrics)
            .await
            .unwrap()
    );
    assert_eq!(total(pool.clone()).await as u64, 6 * bytes);
    // The running total is what the rows hold, also after a delete.
    sqlx::query(
        "DELETE FROM rejected_callbacks WHERE id = (SELECT min(id) FROM rejected_callbacks)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let summed: i64 = sqlx::query_scalar(
        "SELECT sum(rejected_callbacks_row_bytes(r))::bigint FROM rejected_callbacks r",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(total(pool.clone()).await, summed);
    assert_eq!(summed as u64, 5 * bytes);
}

#[sqlx::test]
async fn bodies_in_flight_are_bounded_as_a_whole(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("MAX_BODY_BYTES", "400000"),
            ("HTTP_MAX_INFLIGHT_BODY_BYTES", "400001"),
        ],
    )
    .await;
    let query = "SdkAppid=1400000001&CallbackCommand=Room.CallbackAfterMemberEnter";
    // A body that has sent all but 2 of its 400,000 bytes holds what it sent (for as long as
    // its rate allows: about 2.5 s).
    let address = app.address.trim_start_matches("http://");
    let mut held = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /callback?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: 400000\r\n\r\n[{}",
        "0,".repeat(199_998) + "0"
    );
    held.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One byte still fits; a large body just past the bound is refused after a short wait.
    let (status, _) = answer(app.post_raw(query, "1").await).await;
    assert_eq!(status, 400, "not a JSON object, but received");
    let large = format!("[{}]", "0,".repeat(35_000) + "0");
    assert!(large.len() > 65_536, "not a small body");
    let started = Instant::now();
    let (status, body) = answer(app.post_raw(query, large.clone()).await).await;
    assert_eq!((status, body["ErrorCode"].as_u64()), (503, Some(50310)));
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A small body (the usual callback) draws on the reserve large bodies cannot take.
    let (status, _) = answer(app.post_raw(query, "{}").await).await;
    assert_eq!(status, 400, "received at once");
    // The held body's bytes come back when its connection goes.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = answer(app.post_raw(query, large).await).await;
    assert_eq!(status, 400);
    app.stop().await;
}

/// A sender can make PostgreSQL refuse a callback's data at will (here a trigger does): those
/// rows (`50304`) have a reserve of their own, a tenth of each budget, and cannot pass it.
#[sqlx::test]
async fn rows_postgresql_refused_are_bounded_too(pool: PgPool) {
    on_history_insert(
        &pool,
        "refuse",
        "NEW.room_id = 'refused'",
        "RAISE EXCEPTION 'refused' USING ERRCODE = '22023';",
    )
    .await;
    let app = spawn_app_with(
        pool.clone(),
        &[
            ("REJECTED_MAX_BYTES_PER_SEC", "10240"),
            ("REJECTED_MAX_TOTAL_BYTES", "1048576"),
        ],
    )
    .await;
    let pad = "x".repeat(60_000);
    let mut refused = 0;
    for n in 0..60 {
        let mut body = enter("refused", &["a"], 100 + n);
        body["Pad"] = json!(pad);
        let (status, answer) = app.send(&body).await;
        assert_eq!(status, 503, "{answer}");
        refused += usize::from(answer["ErrorCode"] == 50304);
    }
    assert_eq!(refused, 60);
    let bytes = |pool: PgPool, code: i32| async move {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT sum(rejected_callbacks_row_bytes(r))::bigint FROM rejected_callbacks r
             WHERE error_code = $1",
        )
        .bind(code)
        .fetch_one(&pool)
        .await
        .unwrap()
        .unwrap_or(0)
    };
    // A burst of ten seconds of a tenth of 10 KiB/s: one row of 60 KB crosses it.
    let kept = bytes(pool.clone(), 50304).await;
    assert!(
        kept > 0 && kept < 2 * 61_000,
        "{kept} bytes of 50304 rows kept"
    );
    // The 4xx budget is untouched: a real invalid callback is still kept.
    let query = "SdkAppid=1400000001&CallbackCommand=Room.CallbackAfterMemberEnter";
    let (status, _) = answer(app.post_raw(query, r#"{"RoomId":"r"}"#).await).await;
    assert_eq!(status, 400);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM rejected_callbacks WHERE error_code = 40002"
        )
        .await,
        1
    );
    app.stop().await;
}
