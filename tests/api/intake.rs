//! Before a body is read: strangers are answered from the query string alone, a body holds
//! only the bytes it has sent, and one that does not keep a minimum rate is cut early.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::*;

/// Opens a connection and sends `head` (and whatever body bytes it holds).
async fn open(app: &TestApp, head: &str) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// The answer's head and JSON body, and how long it took to come.
async fn first_answer(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("\"ErrorInfo\"") {
        match tokio::time::timeout(Duration::from_secs(6), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

fn declared(query: &str, length: usize) -> String {
    format!("POST /callback?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n")
}

const ENTER_QUERY: &str = "SdkAppid=1400000001&CallbackCommand=Room.CallbackAfterMemberEnter";

#[sqlx::test]
async fn strangers_are_answered_before_their_body_is_read_or_reserved(pool: PgPool) {
    let app = spawn_app_with(
        pool.clone(),
        &[
            ("MAX_BODY_BYTES", "100000"),
            ("HTTP_MAX_INFLIGHT_BODY_BYTES", "100001"),
        ],
    )
    .await;
    // Many strangers declaring the whole budget and sending nothing: each answered 403 at once,
    // its connection closed, nothing held.
    let mut strangers = Vec::new();
    for query in ["SdkAppid=1", "CallbackCommand=X", "SdkAppid=+1400000001"] {
        for _ in 0..10 {
            strangers.push(open(&app, &declared(query, 100_000)).await);
        }
    }
    for stream in &mut strangers {
        let (answer, took) = first_answer(stream).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        assert!(answer.contains("4030"), "{answer}");
        assert!(took < Duration::from_millis(500), "answered after {took:?}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        let (_, closed) = until_closed(stream, Duration::from_secs(3)).await;
        assert!(closed.is_some(), "closed after the answer");
    }
    // The whole budget is still free for a real callback.
    let body = enter("r", &["a"], 1);
    let padded =
        body.to_string()
            .replacen('{', &format!(r#"{{"Pad":"{}","#, "x".repeat(99_000)), 1);
    let (status, answer) = answer(app.post_raw(&app.query_for(&body), padded).await).await;
    assert_eq!(status, 200, "{answer}");
    app.stop().await;

    // With a token, an unsigned request is a stranger too.
    let app = spawn_app_with(pool, &[("CALLBACK_TOKEN", "s3cret")]).await;
    let mut unsigned = open(&app, &declared(ENTER_QUERY, 1000)).await;
    let (answer, took) = first_answer(&mut unsigned).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(took < Duration::from_millis(500), "answered after {took:?}");
    app.stop().await;
}

#[sqlx::test]
async fn a_body_holds_only_what_it_sent_and_must_keep_a_rate(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        &[
            ("MAX_BODY_BYTES", "100000"),
            ("HTTP_MAX_INFLIGHT_BODY_BYTES", "100001"),
        ],
    )
    .await;
    // The real app id, a declared body of the whole budget, nothing sent (unsigned mode: anyone
    // who knows the app id can do this).
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(open(&app, &declared(ENTER_QUERY, 100_000)).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A real callback of almost the whole budget is received at once.
    let body = enter("r", &["a"], 1);
    let padded =
        body.to_string()
            .replacen('{', &format!(r#"{{"Pad":"{}","#, "x".repeat(99_000)), 1);
    let started = Instant::now();
    let (status, answer) = answer(app.post_raw(&app.query_for(&body), padded).await).await;
    assert_eq!(status, 200, "{answer}");
    assert!(started.elapsed() < Duration::from_millis(500));
    // The idle ones are cut after the grace for the first bytes, long before the 5 s.
    for stream in &mut idle {
        let (answer, closed) = until_closed(stream, Duration::from_secs(4)).await;
        assert!(answer.contains("40009"), "{answer}");
        assert!(closed.is_some(), "cut before 4 s");
    }
    // A body that trickles (a byte every 100 ms) is cut once it falls behind the rate: after
    // the grace, long before the 5 s.
    let (mut read, mut write) = open(&app, &declared(ENTER_QUERY, 1000)).await.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..50 {
            if write.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (answer, closed) = until_closed(&mut read, Duration::from_secs(4)).await;
    trickle.abort();
    assert!(answer.contains("40009"), "{answer}");
    let closed = closed.expect("cut before 4 s");
    // Well before the 5 s bound (a loaded machine has taken 2.0 s: the margin is for it).
    assert!(closed < Duration::from_millis(3000), "cut after {closed:?}");
    app.stop().await;
}
