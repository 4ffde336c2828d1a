//! docs/http.md: every answer of POST /callback, and what each one leaves in the database.

use std::time::{Duration, Instant};

use roomsync::callback::sign;
use serde_json::{Value, json};
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::{helpers::*, rows::*};

#[sqlx::test]
async fn fixture_enter_is_stored_and_shows_in_the_roster(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let body = fixture("member_enter.json");
    // The exact request of the fixture README: no Content-Type header.
    let query = "SdkAppid=1400000001&CallbackCommand=Room.CallbackAfterMemberEnter&contenttype=json&ClientIP=127.0.0.1&OptPlatform=Web";
    let (status, answer) = answer(app.post_raw(query, body.to_string()).await).await;
    assert_eq!((status, answer), (200, ok()));

    #[derive(sqlx::FromRow)]
    struct Stored {
        callback_command: String,
        room_id: String,
        member_list: Vec<String>,
        member_count: Option<i32>,
        opt_platform: Option<String>,
        client_ip: Option<String>,
        payload: Value,
    }
    let row: Stored = sqlx::query_as(
        "SELECT callback_command, room_id, member_list, member_count, opt_platform, client_ip, payload FROM room_events",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let Stored {
        callback_command: command,
        room_id: room,
        member_list: members,
        member_count: count,
        opt_platform: platform,
        client_ip: ip,
        payload,
    } = row;
    assert_eq!(command, "Room.CallbackAfterMemberEnter");
    assert_eq!(room, "rid-123");
    assert_eq!(members, vec!["user1"]);
    assert_eq!(count, Some(20));
    assert_eq!(platform.as_deref(), Some("Web"));
    assert_eq!(ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(payload, body);

    assert_eq!(roster(&pool, "rid-123").await, vec!["user1"]);
    let m = member(&pool, "rid-123", "user1").await.unwrap();
    assert!(m.in_room);
    assert_eq!(m.entered_at, Some(ms(1670574414123)));
    assert_eq!(m.last_event_at, ms(1670574414123));
    let member_count: Option<i32> =
        sqlx::query_scalar("SELECT member_count FROM rooms WHERE room_id = 'rid-123'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(member_count, Some(20));
}

#[sqlx::test]
async fn query_keys_in_any_case_and_command_only_in_the_query(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let mut body = enter("r", &["u"], 10);
    body.as_object_mut().unwrap().remove("CallbackCommand");
    let query = "SDKAPPID=1400000001&callbackcommand=Room.CallbackAfterMemberEnter&CONTENTTYPE=JSON&clientip=&optplatform=RESTAPI";
    let (status, _) = answer(app.post_raw(query, body.to_string()).await).await;
    assert_eq!(status, 200);
    let platform: Option<String> = sqlx::query_scalar("SELECT opt_platform FROM room_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(platform.as_deref(), Some("RESTAPI"));
    assert_eq!(roster(&pool, "r").await, vec!["u"]);
}

#[sqlx::test]
async fn app_id_missing_or_foreign_is_403_and_keeps_nothing(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let body = enter("r", &["u"], 10).to_string();
    for (query, code) in [
        ("CallbackCommand=Room.CallbackAfterMemberEnter", 40301),
        (
            "SdkAppid=999&CallbackCommand=Room.CallbackAfterMemberEnter",
            40302,
        ),
        ("SdkAppid=abc", 40302),
    ] {
        let (status, answer) = answer(app.post_raw(query, body.clone()).await).await;
        assert_eq!(status, 403, "{query}");
        assert_eq!(answer["ActionStatus"], "FAIL");
        assert_eq!(answer["ErrorCode"], code);
    }
    assert_eq!(history(&pool).await, 0);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM rejected_callbacks").await,
        0
    );
}

#[sqlx::test]
async fn signature_is_required_when_a_token_is_set(pool: PgPool) {
    let app = spawn_app_with(pool.clone(), &[("CALLBACK_TOKEN", TOKEN)]).await;
    let body = enter("r", &["u"], 10).to_string();
    let base = "SdkAppid=1400000001&CallbackCommand=Room.CallbackAfterMemberEnter";
    let now = chrono::Utc::now().timestamp();
    let old = (now - 120).to_string();
    let now = now.to_string();
    let cases = [
        (base.to_owned(), 40101),
        (format!("{base}&RequestTime={now}"), 40101),
        (
            format!("{base}&RequestTime=soon&Sign={}", sign(TOKEN, "soon")),
            40102,
        ),
        (
            format!("{base}&RequestTime={old}&Sign={}", sign(TOKEN, &old)),
            40103,
        ),
        (
            format!("{base}&RequestTime={now}&Sign={}", sign("wrong", &now)),
            40104,
        ),
    ];
    for (query, code) in cases {
        let (status, answer) = answer(app.post_raw(&query, body.clone()).await).await;
        assert_eq!(
            (status, answer["ErrorCode"].as_u64()),
            (401, Some(code)),
            "{query}"
        );
    }
    assert_eq!(history(&pool).await, 0);
    // Correctly signed: accepted.
    app.deliver(&enter("r", &["u"], 10)).await;
    assert_eq!(history(&pool).await, 1);
}

#[sqlx::test]
async fn oversized_body_is_413(pool: PgPool) {
    let app = spawn_app_with(pool.clone(), &[("MAX_BODY_BYTES", "1024")]).await;
    let mut body = enter("r", &["u"], 10);
    body["Padding"] = json!("x".repeat(2000));
    let (status, reply) = app.send(&body).await;
    assert_eq!((status, reply["ErrorCode"].as_u64()), (413, Some(41301)));
    // Exactly at the limit is fine.
    let small = enter("r", &["u"], 10);
    let mut text = small.to_string();
    text.insert_str(1, &" ".repeat(1024 - text.len()));
    assert_eq!(text.len(), 1024);
    let (status, _) = answer(app.post_raw(&app.query_for(&small), text).await).await;
    assert_eq!(status, 200);
    // A chunked body without Content-Length is counted too.
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..20).map(|_| Ok("x".repeat(100))).collect();
    let stream = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let (status, _) = answer(app.post_raw(&app.query_for(&small), stream).await).await;
    assert_eq!(status, 413);
}

#[sqlx::test]
async fn invalid_bodies_are_400_and_kept_as_rejected(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let q = "SdkAppid=1400000001&CallbackCommand=Room.CallbackAfterMemberEnter";
    let cases: Vec<(String, String, u64, &str)> = vec![
        (q.into(), "{not json".into(), 40001, "JSON"),
        (
            q.into(),
            json!({"RoomId": "r", "EventTime": 1}).to_string(),
            40002,
            "MemberList_Account",
        ),
        (
            q.into(),
            json!({"RoomId": "r", "MemberList_Account": ["u"], "EventTime": "1"}).to_string(),
            40003,
            "EventTime",
        ),
        (
            q.into(),
            json!({"RoomId": "r".repeat(300), "MemberList_Account": ["u"], "EventTime": 1})
                .to_string(),
            40004,
            "RoomId",
        ),
        (
            q.into(),
            r#"{"RoomId":"r\u0000","MemberList_Account":["u"],"EventTime":1}"#.into(),
            40005,
            "RoomId",
        ),
        (
            q.into(),
            leave("r", &["u"], "Leave", 1).to_string(),
            40006,
            "CallbackCommand",
        ),
        (
            "SdkAppid=1400000001".into(),
            json!({"RoomId": "r"}).to_string(),
            40007,
            "CallbackCommand",
        ),
    ];
    for (query, body, code, field) in &cases {
        let (status, answer) = answer(app.post_raw(query, body.clone()).await).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(answer["ActionStatus"], "FAIL");
        assert_eq!(answer["ErrorCode"].as_u64(), Some(*code), "{body}");
        assert!(
            answer["ErrorInfo"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    assert_eq!(history(&pool).await, 0);
    let kept: Vec<(i64, i32, String, String)> = sqlx::query_as(
        "SELECT sdk_app_id, error_code, query, body FROM rejected_callbacks ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(kept.len(), cases.len());
    for ((app_id, code, query, body), (sent_query, sent_body, sent_code, _)) in
        kept.iter().zip(&cases)
    {
        assert_eq!((*app_id, *code as u64), (APP_ID, *sent_code));
        assert_eq!((query, body), (sent_query, sent_body), "kept losslessly");
    }
    // Bytes that are not UTF-8 are kept exactly, and once: no lossy text beside them.
    let (status, _) = answer(app.post_raw(q, b"\xff\x00 raw".to_vec()).await).await;
    assert_eq!(status, 400);
    let (text, bytes): (Option<String>, Option<Vec<u8>>) =
        sqlx::query_as("SELECT body, body_bytes FROM rejected_callbacks ORDER BY id DESC LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(bytes.as_deref(), Some(&b"\xff\x00 raw"[..]));
    assert_eq!(text, None);
    // The UTF-8 bodies above are text only.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM rejected_callbacks WHERE body_bytes IS NOT NULL"
        )
        .await,
        1
    );
}

#[sqlx::test]
async fn duplicate_delivery_is_stored_once(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let first = enter("r", &["a", "b"], 100);
    app.deliver(&first).await;
    app.deliver(&first).await;
    // Same callback with the member list in another order, and concurrently many times.
    let reordered = enter("r", &["b", "a"], 100);
    let sends: Vec<_> = (0..8).map(|_| app.send(&reordered)).collect();
    for (status, answer) in futures_util::future::join_all(sends).await {
        assert_eq!((status, answer), (200, ok()));
    }
    assert_eq!(history(&pool).await, 1);
    // A later leave then the old enter again: the duplicate must not undo the leave.
    app.deliver(&leave("r", &["a"], "Leave", 200)).await;
    app.deliver(&first).await;
    assert_eq!(roster(&pool, "r").await, vec!["b"]);
    assert_eq!(history(&pool).await, 2);
}

#[sqlx::test]
async fn out_of_order_enters_keep_the_newest(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.deliver(&enter("r", &["u"], 300)).await;
    app.deliver(&enter("r", &["u"], 100)).await;
    let m = member(&pool, "r", "u").await.unwrap();
    assert_eq!(
        (m.in_room, m.entered_at, m.last_event_at),
        (true, Some(ms(300)), ms(300))
    );
    let mut older = enter("r", &["u"], 50);
    older["MemberCount"] = json!(99);
    app.deliver(&older).await;
    let member_count: Option<i32> = sqlx::query_scalar("SELECT member_count FROM rooms")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        member_count,
        Some(1),
        "MemberCount of the newest member event"
    );
}

#[sqlx::test]
async fn hostile_strings_are_stored_verbatim(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let hostile = [
        "'; DROP TABLE room_members; --",
        "\"quoted\" \\ back\\slash",
        "Robert'); DELETE FROM rooms WHERE ('1'='1",
        "房间-😀-שלום-\u{202e}",
        "$1 %s {{}} \n\t",
        "\u{feff}bom",
    ];
    for (i, text) in hostile.iter().enumerate() {
        let mut body = enter(text, &[text, "plain"], 10 + i as i64);
        body["Reason"] = json!(text);
        app.deliver(&body).await;
        assert_eq!(roster(&pool, text).await, {
            let mut v = vec![text.to_string(), "plain".to_string()];
            v.sort();
            v
        });
        let payload: Value =
            sqlx::query_scalar("SELECT payload FROM room_events WHERE room_id = $1")
                .bind(text)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(payload, body);
    }
    assert_eq!(
        count(&pool, "SELECT count(*) FROM rooms").await,
        hostile.len() as i64
    );
}

#[sqlx::test]
async fn unknown_commands_are_stored_and_change_no_membership(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let body = json!({"CallbackCommand": "Room.CallbackAfterSomethingNew", "RoomId": "r", "MemberList_Account": ["u"], "EventTime": 5, "New": {"a": [1, 2]}});
    app.deliver(&body).await;
    app.deliver(&body).await;
    let payload: Value = sqlx::query_scalar(
        "SELECT payload FROM room_events WHERE callback_command = 'Room.CallbackAfterSomethingNew'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(payload, body);
    assert_eq!(count(&pool, "SELECT count(*) FROM room_members").await, 0);
}

#[sqlx::test]
async fn database_gone_is_answered_quickly(pool: PgPool) {
    // A pool whose server is not there (nothing listens on port 1).
    let dead = || {
        PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(500))
            .connect_lazy("postgres://postgres@127.0.0.1:1/none")
            .unwrap()
    };
    drop(pool);
    // With room in the journal: 200, durable there.
    let app = spawn_app(dead()).await;
    let started = Instant::now();
    app.deliver(&enter("r", &["u"], 1)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered within Tencent's 2 s"
    );
    // The mechanism: the 200 stands on the journal.
    assert_eq!(journal_depth(&app).await, 1);
    assert_eq!(app.get("/readyz").await.status(), 503);
    assert_eq!(app.get("/healthz").await.status(), 200);
    // Without room in the journal either: a quick 503 that tells nothing internal.
    let full = spawn_app_with(dead(), &[("JOURNAL_MAX_BYTES", "1")]).await;
    let started = Instant::now();
    let (status, answer) = full.send(&enter("r", &["u"], 1)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered within Tencent's 2 s"
    );
    assert_eq!(status, 503);
    assert_eq!(answer["ActionStatus"], "FAIL");
    assert_eq!(answer["ErrorCode"], 50305);
    assert!(
        !answer["ErrorInfo"].as_str().unwrap().contains("127.0.0.1"),
        "no internals"
    );
}

#[sqlx::test]
async fn health_readiness_and_metrics(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.deliver(&enter("r", &["u"], 1)).await;
    app.deliver(&enter("r", &["u"], 1)).await;
    let _ = app.post_raw("SdkAppid=1", "{}").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for line in [
        r#"roomsync_callbacks_total{command="member_enter",outcome="stored"} 1"#,
        r#"roomsync_callbacks_total{command="member_enter",outcome="duplicate"} 1"#,
        r#"roomsync_callbacks_total{command="unknown",outcome="forbidden"} 1"#,
        r#"roomsync_http_request_duration_seconds_count{route="/callback",status="200"} 2"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    // Wrong method on the callback route.
    assert_eq!(app.get("/callback").await.status(), 405);
}

/// The success answer is JSON with the same bytes as ever (scripts compare it as text).
#[sqlx::test]
async fn the_success_answer_is_always_the_same_json(pool: PgPool) {
    let app = spawn_app(pool).await;
    let body = enter("r", &["u"], 100);
    let response = app.post_raw(&app.query_for(&body), body.to_string()).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/json");
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#
    );
}
