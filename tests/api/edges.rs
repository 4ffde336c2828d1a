//! The edges of what a callback may say (issue 18): a time far ahead, a Live create that only
//! says when the room was created, app ids in other spellings, heads HTTP cannot parse.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{helpers::*, rows::*};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[sqlx::test]
async fn an_event_time_beyond_the_skew_is_refused_and_kept(pool: PgPool) {
    let app = spawn_app_with(pool.clone(), &[("EVENT_TIME_MAX_FUTURE_SECS", "60")]).await;
    // Within the bound (the clock of the sender a little ahead): taken.
    app.deliver(&enter("r", &["a"], now_ms() + 30_000)).await;
    // Just past it (a second of slack for the request's own travel), and the year 262142.
    for at in [now_ms() + 61_000, 8_210_266_876_799_999] {
        let (status, answer) = app.send(&leave("r", &["a"], "Kicked", at)).await;
        assert_eq!((status, answer["ErrorCode"].clone()), (400, json!(40010)));
        assert!(
            answer["ErrorInfo"]
                .as_str()
                .unwrap()
                .starts_with("EventTime"),
            "{answer}"
        );
    }
    assert_eq!(
        roster(&pool, "r").await,
        ["a"],
        "the member is not frozen out"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM rejected_callbacks WHERE error_code = 40010"
        )
        .await,
        2
    );
    app.stop().await;
}

#[sqlx::test]
async fn tencents_live_create_sample_without_event_time_is_taken(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    // As in Tencent's TUILiveKit documentation: CreateTime in seconds, no EventTime.
    let sample = json!({
        "CallbackCommand": "Live.CallbackAfterCreateRoom",
        "Operator_Account": "@TIM#SYSTEM",
        "RoomInfo": {"RoomId": "live-1", "RoomName": "n", "Owner_Account": "host",
                     "CreateTime": 1_703_589_922}
    });
    app.deliver(&sample).await;
    let created: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT created_at FROM rooms WHERE room_id = 'live-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(created, ms(1_703_589_922_000));
    let mut neither = sample.clone();
    neither["RoomInfo"]
        .as_object_mut()
        .unwrap()
        .remove("CreateTime");
    let (status, answer) = app.send(&neither).await;
    assert_eq!((status, answer["ErrorCode"].clone()), (400, json!(40002)));
    app.stop().await;
}

#[sqlx::test]
async fn an_app_id_in_another_spelling_is_not_the_app(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let body = enter("r", &["a"], 100).to_string();
    let tail = "CallbackCommand=Room.CallbackAfterMemberEnter";
    for spelling in [
        "%2B1400000001",
        "01400000001",
        "%201400000001",
        "1400000001%20",
    ] {
        let (status, answer) = answer(
            app.post_raw(&format!("SdkAppid={spelling}&{tail}"), body.clone())
                .await,
        )
        .await;
        assert_eq!(
            (status, answer["ErrorCode"].clone()),
            (403, json!(40302)),
            "{spelling}"
        );
    }
    let (status, _) = answer(
        app.post_raw(&format!("SdkAppid=1400000001&{tail}"), body)
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(count(&pool, "SELECT count(*) FROM room_events").await, 1);
    app.stop().await;
}

/// A head whose body framing HTTP cannot read is answered by the HTTP layer, as docs/http.md
/// says: a bare 400 without a JSON body, and the connection closed.
#[sqlx::test]
async fn a_malformed_content_length_or_transfer_encoding_gets_a_bare_400(pool: PgPool) {
    let app = spawn_app(pool).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let target = "/callback?SdkAppid=1400000001&CallbackCommand=Room.CallbackAfterMemberEnter";
    for framing in [
        "Content-Length: abc",
        "Content-Length: -1",
        "Content-Length: 5\r\nContent-Length: 6",
        "Transfer-Encoding: gzip",
        "Transfer-Encoding: chunked\r\nContent-Length: 2",
    ] {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!("POST {target} HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n{{}}");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        let raw = String::from_utf8_lossy(&received);
        assert!(closed.is_ok(), "{framing:?}: the connection is closed");
        assert!(raw.starts_with("HTTP/1.1 400"), "{framing:?}: {raw}");
        assert!(!raw.contains("ErrorCode"), "{framing:?}: bare, {raw}");
    }
    app.stop().await;
}

fn seat_change(at: i64, index: i32, member: &str) -> serde_json::Value {
    json!({"CallbackCommand": "Mic.CallbackAfterSeatInfoChanged", "RoomId": "r", "EventTime": at,
           "SeatList": [{"Index": index, "Member_Account": member}]})
}

/// Three different seat changes at one millisecond are three callbacks, and where two set one
/// seat, the content decides (the taken seat over the free one), whatever came first.
#[sqlx::test]
async fn distinct_seat_changes_at_one_millisecond_all_count(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let changes = [
        seat_change(100, 0, "alice"),
        seat_change(100, 1, "bob"),
        seat_change(100, 0, ""),
    ];
    for order in [[0, 1, 2], [2, 1, 0]] {
        sqlx::raw_sql("TRUNCATE room_events, room_seats, rooms")
            .execute(&pool)
            .await
            .unwrap();
        for i in order {
            app.deliver(&changes[i]).await;
        }
        assert_eq!(history(&pool).await, 3, "{order:?}");
        let seats: Vec<(i32, Option<String>)> = seats(&pool, "r")
            .await
            .into_iter()
            .map(|(index, member, ..)| (index, member))
            .collect();
        assert_eq!(
            seats,
            [(0, Some("alice".into())), (1, Some("bob".into()))],
            "{order:?}"
        );
    }
    app.stop().await;
}

/// A callback stored by a version whose key left the content out is still a duplicate when
/// it comes again; a different one at that time is not.
#[sqlx::test]
async fn a_redelivery_of_a_callback_stored_under_the_old_key_is_a_duplicate(pool: PgPool) {
    let old = seat_change(100, 0, "alice");
    let query = roomsync::callback::CallbackQuery::default();
    let text = old.to_string();
    let parsed =
        roomsync::callback::parse_stored(APP_ID, &query, text.as_bytes(), chrono::Utc::now())
            .unwrap();
    let legacy = *parsed.legacy_key().expect("a seat change's key changed");
    sqlx::query(
        "INSERT INTO room_events (sdk_app_id, callback_command, room_id, event_at, payload, dedup_key)
         VALUES ($1, 'Mic.CallbackAfterSeatInfoChanged', 'r', $2, $3::jsonb, $4)",
    )
    .bind(APP_ID)
    .bind(ms(100))
    .bind(&text)
    .bind(&legacy[..])
    .execute(&pool)
    .await
    .unwrap();
    let app = spawn_app(pool.clone()).await;
    app.deliver(&old).await;
    assert_eq!(history(&pool).await, 1, "the redelivery adds no row");
    assert!(seats(&pool, "r").await.is_empty(), "and changes nothing");
    app.deliver(&seat_change(100, 1, "bob")).await;
    assert_eq!(history(&pool).await, 2);
    assert_eq!(seats(&pool, "r").await.len(), 1);
    app.stop().await;
}
