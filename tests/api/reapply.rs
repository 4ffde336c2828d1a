//! `roomsync rejected reapply` (docs/operations.md#reapplying-refused-callbacks): refusals an
//! older parser made, parsed again; exactly once, whoever runs it and however often.

use std::time::Duration;

use roomsync::{
    callback::SdkAppId,
    reapply::{Filter, Report, reapply},
};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::*;

/// Tencent's TUILiveKit create sample: no EventTime, CreateTime in seconds. Versions before
/// the fix refused it with 40002.
fn live_create_sample() -> Value {
    json!({
        "CallbackCommand": "Live.CallbackAfterCreateRoom",
        "Operator_Account": "@TIM#SYSTEM",
        "RoomInfo": {"RoomId": "live-1", "RoomName": "n", "Owner_Account": "host",
                     "CreateTime": 1_703_589_922}
    })
}

/// A refusal as an older version stored it.
async fn refused(pool: &PgPool, app: i64, body: &Value, code: i32, info: &str) -> i64 {
    let text = body.to_string();
    let command = body["CallbackCommand"].as_str().unwrap();
    sqlx::query_scalar(
        "INSERT INTO rejected_callbacks
             (sdk_app_id, callback_command, error_code, error_info, query, body, body_size)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(app)
    .bind(command)
    .bind(code)
    .bind(info)
    .bind(format!(
        "SdkAppid={app}&CallbackCommand={command}&contenttype=json"
    ))
    .bind(&text)
    .bind(text.len() as i32)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn run(pool: &PgPool, filter: &Filter, dry_run: bool) -> Report {
    let apps = [SdkAppId::from_i64(APP_ID).unwrap()];
    reapply(
        pool,
        &apps,
        Default::default(),
        Duration::from_secs(300),
        filter,
        dry_run,
    )
    .await
    .unwrap()
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test]
async fn a_refusal_of_an_older_parser_is_reapplied_once(pool: PgPool) {
    let live = refused(
        &pool,
        APP_ID,
        &live_create_sample(),
        40002,
        "EventTime is required",
    )
    .await;
    let mut still = live_create_sample();
    still["RoomInfo"]
        .as_object_mut()
        .unwrap()
        .remove("CreateTime");
    let bad = refused(&pool, APP_ID, &still, 40002, "EventTime is required").await;
    let stranger = refused(&pool, 1_400_000_999, &live_create_sample(), 40002, "x").await;
    // A dry run says what would happen and changes nothing.
    let dry = run(&pool, &Filter::default(), true).await;
    assert_eq!(
        dry,
        Report {
            reapplied: 1,
            duplicate: 0,
            still_refused: 1,
            not_ours: 1
        }
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM room_events").await, 0);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM rejected_callbacks WHERE reapply_checked_at IS NOT NULL"
        )
        .await,
        0
    );
    // Two operators at once: one history row, one room.
    let all = Filter::default();
    let (a, b) = tokio::join!(run(&pool, &all, false), run(&pool, &all, false));
    assert_eq!(a.reapplied + b.reapplied, 1, "{a:?} {b:?}");
    assert_eq!(count(&pool, "SELECT count(*) FROM room_events").await, 1);
    let created: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT created_at FROM rooms WHERE room_id = 'live-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(created, ms(1_703_589_922_000), "placed by its own time");
    let (event_id, outcome): (Option<i64>, Option<String>) = sqlx::query_as(
        "SELECT reapplied_event_id, reapply_outcome FROM rejected_callbacks WHERE id = $1",
    )
    .bind(live)
    .fetch_one(&pool)
    .await
    .unwrap();
    let stored: i64 = count(&pool, "SELECT id FROM room_events").await;
    assert_eq!(
        (event_id, outcome.as_deref()),
        (Some(stored), Some("reapplied"))
    );
    // Still refused: its body kept, today's code and reason beside the old ones.
    let (code, info, body): (Option<i32>, Option<String>, String) = sqlx::query_as(
        "SELECT reapply_code, reapply_info, body FROM rejected_callbacks WHERE id = $1",
    )
    .bind(bad)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(code, Some(40002));
    assert!(info.unwrap().contains("EventTime"));
    assert_eq!(body, still.to_string());
    // A stranger's refusal is never touched.
    let untouched: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT reapply_checked_at FROM rejected_callbacks WHERE id = $1")
            .bind(stranger)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(untouched, None);
    // Again: nothing new.
    let again = run(&pool, &Filter::default(), false).await;
    assert_eq!(again.reapplied + again.duplicate, 0, "{again:?}");
    assert_eq!(count(&pool, "SELECT count(*) FROM room_events").await, 1);
    // The feed told the creation once.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM room_changes WHERE kind = 'room.created'"
        )
        .await,
        1
    );
}

#[sqlx::test]
async fn a_refusal_already_in_the_history_is_a_duplicate(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let body = enter("r", &["a"], 100);
    app.deliver(&body).await;
    app.stop().await;
    let id = refused(&pool, APP_ID, &body, 50304, "PostgreSQL refused it").await;
    let report = run(
        &pool,
        &Filter {
            code: Some(50304),
            ..Filter::default()
        },
        false,
    )
    .await;
    assert_eq!(
        report,
        Report {
            duplicate: 1,
            ..Report::default()
        }
    );
    let (event_id, outcome): (Option<i64>, Option<String>) = sqlx::query_as(
        "SELECT reapplied_event_id, reapply_outcome FROM rejected_callbacks WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(outcome.as_deref(), Some("duplicate"));
    assert_eq!(
        event_id,
        Some(count(&pool, "SELECT id FROM room_events").await)
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM room_events").await, 1);
}

#[sqlx::test]
async fn filters_and_a_cut_body(pool: PgPool) {
    let sample = live_create_sample();
    let old = refused(&pool, APP_ID, &sample, 40002, "x").await;
    sqlx::query("UPDATE rejected_callbacks SET received_at = '2026-01-01' WHERE id = $1")
        .bind(old)
        .execute(&pool)
        .await
        .unwrap();
    // A body kept cut (REJECTED_BODY_MAX_BYTES) is never parsed again as if whole.
    let cut = refused(&pool, APP_ID, &enter("r", &["a"], 5), 40002, "x").await;
    sqlx::query("UPDATE rejected_callbacks SET body_size = body_size + 100 WHERE id = $1")
        .bind(cut)
        .execute(&pool)
        .await
        .unwrap();
    let since = chrono::DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let recent = run(
        &pool,
        &Filter {
            since: Some(since),
            ..Filter::default()
        },
        false,
    )
    .await;
    assert_eq!(
        recent,
        Report {
            still_refused: 1,
            ..Report::default()
        }
    );
    let info: Option<String> =
        sqlx::query_scalar("SELECT reapply_info FROM rejected_callbacks WHERE id = $1")
            .bind(cut)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(info.unwrap().contains("bytes of the body were kept"));
    let other_app = run(
        &pool,
        &Filter {
            app: Some(1_400_000_002),
            ..Filter::default()
        },
        false,
    )
    .await;
    assert_eq!(other_app, Report::default());
    let until = run(
        &pool,
        &Filter {
            until: Some(since),
            ..Filter::default()
        },
        false,
    )
    .await;
    assert_eq!(
        until,
        Report {
            reapplied: 1,
            ..Report::default()
        }
    );
}
