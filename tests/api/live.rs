//! TUILiveKit rooms (docs/live.md): each Live command through HTTP, into the same tables as
//! Room rooms, with `rooms.product = 'Live'`.

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{helpers::*, rows::*};

const ROOM: &str = "live-room-1";

async fn product(pool: &PgPool, room: &str) -> String {
    sqlx::query_scalar("SELECT product FROM rooms WHERE room_id = $1")
        .bind(room)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn state(room: &str, kind: &str, cause: &str, members: &[&str], at: i64) -> Value {
    let list: Vec<Value> = members
        .iter()
        .map(|m| json!({"Member_Account": m}))
        .collect();
    json!({"CallbackCommand": "Live.CallbackAfterMemberStateChanged", "RoomId": room,
           "EventType": kind, "EventCause": cause, "MemberList": list, "EventTime": at})
}

#[sqlx::test]
async fn a_live_room_from_create_to_destroy(pool: PgPool) {
    a_live_room_from_create_to_destroy_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn a_live_room_from_create_to_destroy_scenario(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.deliver(&fixture("live_create_room.json")).await;
    assert_eq!(product(&pool, ROOM).await, "Live");
    let created = room(&pool, ROOM).await;
    assert_eq!(created.room_name.as_deref(), Some("Friday night live"));
    let info = created.room_info.unwrap();
    assert_eq!(info["CoverURL"], "https://example.com/cover.png");
    assert_eq!(info["Category"], json!([1, 7]));
    assert_eq!(
        created.created_at,
        Some(ms(1_703_589_922_780)),
        "EventTime from RoomInfo"
    );

    app.deliver(&fixture("live_member_online.json")).await;
    assert_eq!(roster(&pool, ROOM).await, ["144115212385832541", "jared"]);
    app.deliver(&fixture("live_member_offline.json")).await;
    let jared = member(&pool, ROOM, "jared").await.unwrap();
    assert!(!jared.in_room);
    assert_eq!(jared.leave_type.as_deref(), Some("HeartbeatInterrupt"));
    assert_eq!(jared.leave_reason, None);
    // Back after the heartbeat came back.
    app.deliver(&state(
        ROOM,
        "Online",
        "HeartbeatRecover",
        &["jared"],
        1_703_589_993_780,
    ))
    .await;
    assert!(member(&pool, ROOM, "jared").await.unwrap().in_room);

    app.deliver(&fixture("live_update_room_info.json")).await;
    let updated = room(&pool, ROOM).await;
    assert_eq!(
        updated.room_name.as_deref(),
        Some("Friday night live (encore)")
    );
    assert_eq!(updated.room_info.unwrap()["ActivityStatus"], 1);

    app.deliver(&fixture("live_destroy_room.json")).await;
    assert!(roster(&pool, ROOM).await.is_empty());
    let jared = member(&pool, ROOM, "jared").await.unwrap();
    assert_eq!(jared.leave_type.as_deref(), Some("RoomDestroyed"));
    assert!(room(&pool, ROOM).await.destroyed_at.is_some());

    // The history: EventType and EventCause of member events; the destroy's Statistic.
    let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT callback_command, event_type, reason FROM room_events ORDER BY event_at, id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(rows.contains(&(
        "Live.CallbackAfterMemberStateChanged".into(),
        Some("Offline".into()),
        Some("HeartbeatInterrupt".into())
    )));
    let statistic: Value = sqlx::query_scalar(
        "SELECT payload -> 'Statistic' FROM room_events WHERE callback_command = 'Live.CallbackAfterDestroyRoom'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(statistic["TotalViewers"], 2);
    app.stop().await;
}

#[sqlx::test]
async fn live_member_events_are_exactly_once_and_ordered_like_room_events(pool: PgPool) {
    live_member_events_are_exactly_once_and_ordered_like_room_events_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn live_member_events_are_exactly_once_and_ordered_like_room_events_scenario(
    pool: PgPool,
) {
    let app = spawn_app(pool.clone()).await;
    let online = state("l", "Online", "Enter", &["a", "b"], 100);
    app.deliver(&online).await;
    // The same event again, members reordered, under the older command name.
    let mut again = state("l", "Online", "Enter", &["b", "a"], 100);
    again["CallbackCommand"] = json!("Live.CallbackMemberStateChanged");
    let query = format!(
        "SdkAppid={APP_ID}&CallbackCommand=Live.CallbackMemberStateChanged&contenttype=json"
    );
    let (status, _) = answer(app.post_raw(&query, again.to_string()).await).await;
    assert_eq!(status, 200);
    assert_eq!(count(&pool, "SELECT count(*) FROM room_events").await, 1);
    // Two Offline events at one time with different causes are two events; the later one in
    // (cause) order is what the row shows, whatever the arrival order.
    app.deliver(&state("l", "Offline", "Leave", &["a"], 200))
        .await;
    app.deliver(&state("l", "Offline", "HeartbeatInterrupt", &["a"], 200))
        .await;
    assert_eq!(count(&pool, "SELECT count(*) FROM room_events").await, 3);
    assert_eq!(
        member(&pool, "l", "a").await.unwrap().leave_type.as_deref(),
        Some("Leave")
    );
    // A late Online older than the Offline changes nothing.
    app.deliver(&state("l", "Online", "HeartbeatRecover", &["a"], 150))
        .await;
    assert!(!member(&pool, "l", "a").await.unwrap().in_room);
    assert_eq!(roster(&pool, "l").await, ["b"]);
    app.stop().await;
}

#[sqlx::test]
async fn seats_and_other_live_commands(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.deliver(&fixture("live_create_room.json")).await;
    app.deliver(&json!({"CallbackCommand": "Mic.CallbackAfterSeatInfoChanged", "RoomId": ROOM, "EventTime": 1_703_589_930_000_i64,
        "SeatList": [{"Index": 0, "Member_Account": "host-1"}, {"Index": 1, "Member_Account": ""}]}))
        .await;
    assert_eq!(
        seats(&pool, ROOM).await,
        vec![
            (0, Some("host-1".into()), false, false, false),
            (1, None, false, false, false)
        ]
    );
    assert_eq!(
        product(&pool, ROOM).await,
        "Live",
        "a seat change keeps the product"
    );
    // A Live command roomsync does not know: history only.
    app.deliver(&json!({"CallbackCommand": "Live.CallbackAfterCreateRoomReachingThreshold", "RoomId": "other", "EventTime": 5}))
        .await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM rooms WHERE room_id = 'other'").await,
        0
    );
    // A seat change first, then the Live create: the room ends up Live.
    app.deliver(&json!({"CallbackCommand": "Mic.CallbackAfterSeatInfoChanged", "RoomId": "late", "EventTime": 5,
        "SeatList": [{"Index": 0, "Member_Account": "h"}]}))
        .await;
    assert_eq!(product(&pool, "late").await, "Room");
    let mut create = fixture("live_create_room.json");
    create["RoomInfo"]["RoomId"] = json!("late");
    app.deliver(&create).await;
    assert_eq!(product(&pool, "late").await, "Live");
    // Room rooms stay Room rooms.
    app.deliver(&enter("meeting", &["u"], 5)).await;
    assert_eq!(product(&pool, "meeting").await, "Room");
    app.stop().await;
}

#[sqlx::test]
async fn live_refusals_are_kept(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let bad = state("l", "Online", "Enter", &[], 100);
    let (status, answer) = app.send(&bad).await;
    assert_eq!((status, answer["ErrorCode"].clone()), (400, json!(40004)));
    assert!(answer["ErrorInfo"].as_str().unwrap().contains("MemberList"));
    let kept = count(
        &pool,
        "SELECT count(*) FROM rejected_callbacks WHERE error_code = 40004",
    )
    .await;
    assert_eq!(kept, 1);
    app.stop().await;
}
