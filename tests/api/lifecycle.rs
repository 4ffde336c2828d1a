//! docs/semantics.md: every command's effect, each ordering rule, and live notifications.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{PgPool, postgres::PgListener};

use crate::{helpers::*, rows::*};

/// A seat-change callback body with `seats` as its `SeatList`.
fn seat_change(room: &str, at: i64, seats: Value) -> Value {
    json!({"CallbackCommand": "Mic.CallbackAfterSeatInfoChanged", "Operator_Account": "op", "RoomId": room, "SeatList": seats, "EventTime": at})
}

#[sqlx::test]
async fn leave_of_every_type_is_kept_as_sent(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.deliver(&enter("r", &["a", "b", "c", "d"], 100)).await;
    for (user, kind) in [
        ("a", "Leave"),
        ("b", "Kicked"),
        ("c", "Expired"),
        ("d", "SomethingNew"),
    ] {
        app.deliver(&leave("r", &[user], kind, 200)).await;
        let m = member(&pool, "r", user).await.unwrap();
        assert!(!m.in_room);
        assert_eq!(m.left_at, Some(ms(200)));
        assert_eq!(m.leave_type.as_deref(), Some(kind));
        assert_eq!(m.leave_reason, Some(format!("reason-{kind}")));
        assert_eq!(m.entered_at, Some(ms(100)), "entered_at keeps the enter");
    }
    assert!(roster(&pool, "r").await.is_empty());
    let history: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT event_type, reason FROM room_events WHERE callback_command = 'Room.CallbackAfterMemberLeave' ORDER BY event_type",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(
        history[0],
        (Some("Expired".into()), Some("reason-Expired".into()))
    );
}

#[sqlx::test]
async fn fixture_leave_after_fixture_enter(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.deliver(&fixture("member_enter.json")).await;
    let mut leave = fixture("member_leave.json");
    leave["EventTime"] = json!(1670574414124_i64);
    app.deliver(&leave).await;
    let m = member(&pool, "rid-123", "user1").await.unwrap();
    assert_eq!(
        (
            m.in_room,
            m.leave_type.as_deref(),
            m.leave_reason.as_deref()
        ),
        (false, Some("Leave"), Some("xxxx"))
    );
}

#[sqlx::test]
async fn destroy_ends_every_membership_and_clears_seats(pool: PgPool) {
    destroy_ends_every_membership_and_clears_seats_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn destroy_ends_every_membership_and_clears_seats_scenario(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.deliver(&enter("r", &["a", "b", "c"], 100)).await;
    app.deliver(&leave("r", &["c"], "Leave", 150)).await;
    app.deliver(&seat_change(
        "r",
        160,
        json!([{"Index": 0, "Member_Account": "a", "IsAudioDisabled": true}]),
    ))
    .await;
    app.deliver(&destroy("r", 200)).await;
    assert!(roster(&pool, "r").await.is_empty());
    for user in ["a", "b"] {
        let m = member(&pool, "r", user).await.unwrap();
        assert_eq!(
            (m.in_room, m.left_at, m.leave_type.as_deref()),
            (false, Some(ms(200)), Some("RoomDestroyed"))
        );
        assert_eq!(
            m.last_event_at,
            ms(100),
            "last_event_at keeps the member's own last event"
        );
    }
    let c = member(&pool, "r", "c").await.unwrap();
    assert_eq!(
        (c.left_at, c.leave_type.as_deref()),
        (Some(ms(150)), Some("Leave")),
        "already gone"
    );
    assert!(
        seats(&pool, "r").await.is_empty(),
        "seats end with the room"
    );
    let r = room(&pool, "r").await;
    assert_eq!((r.destroyed_at, r.last_event_at), (Some(ms(200)), ms(200)));
}

#[sqlx::test]
async fn fixture_create_then_destroy_then_create_revives(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let create = fixture("create_room.json");
    app.deliver(&create).await;
    let r = room(&pool, "tandy-test-rest").await;
    assert_eq!(r.room_name.as_deref(), Some("tandy-test-rest"));
    assert_eq!(r.room_type.as_deref(), Some("Meeting"));
    assert_eq!(r.owner_account.as_deref(), Some("user3"));
    assert_eq!(r.max_member_count, Some(300));
    assert_eq!(r.room_info.as_ref().unwrap()["TakeSeatMode"], "ApplyToTake");
    assert_eq!(r.created_at, Some(ms(1703589922780)));
    assert_eq!(r.destroyed_at, None);
    // The fixtures destroy at the very same time: a destroy applies after a create.
    app.deliver(&fixture("destroy_room.json")).await;
    assert_eq!(
        room(&pool, "tandy-test-rest").await.destroyed_at,
        Some(ms(1703589922780))
    );
    let mut again = create.clone();
    again["EventTime"] = json!(1703589999000_i64);
    app.deliver(&again).await;
    let r = room(&pool, "tandy-test-rest").await;
    assert_eq!(
        (r.destroyed_at, r.created_at),
        (None, Some(ms(1703589999000)))
    );
}

#[sqlx::test]
async fn enter_after_destroy_revives_the_room(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.deliver(&enter("r", &["a"], 100)).await;
    app.deliver(&destroy("r", 200)).await;
    app.deliver(&enter("r", &["b"], 300)).await;
    assert_eq!(room(&pool, "r").await.destroyed_at, None);
    assert_eq!(roster(&pool, "r").await, vec!["b"]);
}

#[sqlx::test]
async fn update_room_info_merges_fields_newest_first(pool: PgPool) {
    update_room_info_merges_fields_newest_first_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn update_room_info_merges_fields_newest_first_scenario(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.deliver(&create("rid-123", "first", 100)).await;
    // The fixture (old spelling of the command below) at a later time, with a string boolean.
    let update = fixture("update_room_info.json");
    app.deliver(&update).await;
    let r = room(&pool, "rid-123").await;
    assert_eq!(r.room_name.as_deref(), Some("rname-123"));
    assert_eq!(r.owner_account.as_deref(), Some("jack"));
    assert_eq!(
        r.room_type.as_deref(),
        Some("Meeting"),
        "absent means unchanged"
    );
    let info = r.room_info.unwrap();
    assert_eq!(
        info["IsCloudRecordingDisabled"],
        json!(false),
        "string boolean became a boolean"
    );
    assert_eq!(info["CustomInfo"], "123");
    // An older update arriving late changes only what nobody newer set.
    let late = json!({"CallbackCommand": "Room.CallbackUpdateRoomInfo", "Operator_Account": "x",
        "RoomInfo": {"RoomId": "rid-123", "RoomName": "stale", "RoomStatus": "Running"}, "EventTime": 200});
    app.deliver(&late).await;
    let r = room(&pool, "rid-123").await;
    assert_eq!(r.room_name.as_deref(), Some("rname-123"));
    assert_eq!(r.room_info.unwrap()["RoomStatus"], "Running");
    let stored: String =
        sqlx::query_scalar("SELECT callback_command FROM room_events WHERE event_at = $1")
            .bind(ms(200))
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        stored, "Room.CallbackAfterUpdateRoomInfo",
        "the old name is the same event"
    );
}

#[sqlx::test]
async fn seats_follow_the_newest_change(pool: PgPool) {
    seats_follow_the_newest_change_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn seats_follow_the_newest_change_scenario(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.deliver(&fixture("seat_info_changed.json")).await;
    let t = 1670574414123_i64;
    assert_eq!(
        seats(&pool, "rid-123").await,
        vec![(1, Some("144115233775727695".into()), false, false, false)]
    );
    app.deliver(&seat_change("rid-123", t + 10, json!([{"Index": 1, "Member_Account": "", "IsTakenDisabled": "true"}, {"Index": 2, "Member_Account": "u"}]))).await;
    app.deliver(&seat_change(
        "rid-123",
        t + 5,
        json!([{"Index": 1, "Member_Account": "older"}]),
    ))
    .await;
    assert_eq!(
        seats(&pool, "rid-123").await,
        vec![
            (1, None, true, false, false),
            (2, Some("u".into()), false, false, false)
        ]
    );
    // A seat change older than a destroy is cleared by it, whenever it arrives.
    app.deliver(&destroy("rid-123", t + 100)).await;
    app.deliver(&seat_change(
        "rid-123",
        t + 50,
        json!([{"Index": 3, "Member_Account": "late"}]),
    ))
    .await;
    assert!(seats(&pool, "rid-123").await.is_empty());
    app.deliver(&seat_change(
        "rid-123",
        t + 200,
        json!([{"Index": 3, "Member_Account": "new"}]),
    ))
    .await;
    assert_eq!(
        seats(&pool, "rid-123").await.last().unwrap().1.as_deref(),
        Some("new")
    );
}

#[sqlx::test]
async fn late_enter_after_a_destroy_stays_out(pool: PgPool) {
    // docs/semantics.md#late-enter-after-a-destroy
    let app = spawn_app(pool.clone()).await;
    app.deliver(&destroy("r", 200)).await;
    app.deliver(&enter("r", &["u"], 100)).await;
    let m = member(&pool, "r", "u").await.unwrap();
    assert_eq!(
        (m.in_room, m.left_at, m.leave_type.as_deref()),
        (false, Some(ms(200)), Some("RoomDestroyed"))
    );
    assert_eq!((m.entered_at, m.last_event_at), (Some(ms(100)), ms(100)));
    assert_eq!(room(&pool, "r").await.destroyed_at, Some(ms(200)));
}

#[sqlx::test]
async fn late_leave_after_a_destroy_becomes_the_leave(pool: PgPool) {
    late_leave_after_a_destroy_becomes_the_leave_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn late_leave_after_a_destroy_becomes_the_leave_scenario(pool: PgPool) {
    // docs/semantics.md#late-leave-after-a-destroy
    let app = spawn_app(pool.clone()).await;
    app.deliver(&enter("r", &["u"], 100)).await;
    app.deliver(&destroy("r", 200)).await;
    app.deliver(&leave("r", &["u"], "Leave", 150)).await;
    let m = member(&pool, "r", "u").await.unwrap();
    assert_eq!(
        (m.in_room, m.left_at, m.leave_type.as_deref()),
        (false, Some(ms(150)), Some("Leave"))
    );
    assert_eq!(m.last_event_at, ms(150));
}

#[sqlx::test]
async fn late_destroy_does_not_end_a_later_enter(pool: PgPool) {
    // docs/semantics.md#destroy-older-than-an-enter; the destroy still becomes the member's
    // latest exit.
    let app = spawn_app(pool.clone()).await;
    app.deliver(&enter("r", &["u"], 100)).await;
    app.deliver(&enter("r", &["u"], 300)).await;
    app.deliver(&destroy("r", 200)).await;
    let m = member(&pool, "r", "u").await.unwrap();
    assert!(m.in_room);
    assert_eq!(
        (m.entered_at, m.left_at, m.leave_type.as_deref()),
        (Some(ms(300)), Some(ms(200)), Some("RoomDestroyed"))
    );
    assert_eq!(room(&pool, "r").await.destroyed_at, None);
    assert_eq!(roster(&pool, "r").await, vec!["u"]);
}

#[sqlx::test]
async fn equal_times_apply_enters_then_leaves_then_destroys(pool: PgPool) {
    equal_times_apply_enters_then_leaves_then_destroys_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn equal_times_apply_enters_then_leaves_then_destroys_scenario(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.deliver(&leave("r", &["a"], "Kicked", 100)).await;
    app.deliver(&enter("r", &["a", "b"], 100)).await;
    app.deliver(&destroy("s", 100)).await;
    app.deliver(&enter("s", &["c"], 100)).await;
    let a = member(&pool, "r", "a").await.unwrap();
    assert_eq!(
        (a.in_room, a.leave_type.as_deref()),
        (false, Some("Kicked"))
    );
    assert_eq!(roster(&pool, "r").await, vec!["b"]);
    let c = member(&pool, "s", "c").await.unwrap();
    assert_eq!(
        (c.in_room, c.leave_type.as_deref()),
        (false, Some("RoomDestroyed"))
    );
    assert_eq!(room(&pool, "s").await.destroyed_at, Some(ms(100)));
}

#[sqlx::test]
async fn member_count_is_the_newest_member_events(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let mut e = enter("r", &["a"], 300);
    e["MemberCount"] = json!(7);
    app.deliver(&e).await;
    let mut l = leave("r", &["b"], "Leave", 200);
    l["MemberCount"] = json!(3);
    app.deliver(&l).await;
    assert_eq!(room(&pool, "r").await.member_count, Some(7));
}

#[sqlx::test]
async fn listeners_are_told_of_enters_and_leaves(pool: PgPool) {
    listeners_are_told_of_enters_and_leaves_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn listeners_are_told_of_enters_and_leaves_scenario(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen("room_members").await.unwrap();
    app.deliver(&enter("r", &["a", "b"], 100)).await;
    let entered = next_notification(&mut listener).await;
    assert_eq!(
        entered,
        json!({"sdk_app_id": APP_ID, "room_id": "r", "user_ids": ["a", "b"], "in_room": true, "event_at": "1970-01-01T00:00:00.100Z"})
    );
    app.deliver(&leave("r", &["b"], "Kicked", 200)).await;
    let left = next_notification(&mut listener).await;
    assert_eq!(
        (left["user_ids"].clone(), left["in_room"].clone()),
        (json!(["b"]), json!(false))
    );
    // A duplicate changes nothing, so it notifies nothing.
    app.deliver(&leave("r", &["b"], "Kicked", 200)).await;
    app.deliver(&destroy("r", 300)).await;
    let destroyed = next_notification(&mut listener).await;
    assert_eq!(
        (destroyed["user_ids"].clone(), destroyed["in_room"].clone()),
        (json!(["a"]), json!(false))
    );
}

async fn next_notification(listener: &mut PgListener) -> Value {
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("notified")
        .unwrap();
    serde_json::from_str(n.payload()).unwrap()
}

#[sqlx::test]
async fn an_earlier_late_destroy_supersedes_a_later_one_as_the_exit(pool: PgPool) {
    // Found by the model test: the destroy at 113 ends the membership first, so the one at
    // 118 ends nothing; the member's latest exit before entering again at 147 is 113.
    let app = spawn_app(pool.clone()).await;
    app.deliver(&enter("r", &["u"], 110)).await;
    app.deliver(&destroy("r", 118)).await;
    app.deliver(&enter("r", &["u"], 147)).await;
    app.deliver(&destroy("r", 113)).await;
    let m = member(&pool, "r", "u").await.unwrap();
    assert!(m.in_room);
    assert_eq!(
        (m.left_at, m.leave_type.as_deref()),
        (Some(ms(113)), Some("RoomDestroyed"))
    );
}
