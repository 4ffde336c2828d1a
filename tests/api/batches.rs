//! What one transaction of the writer may hold together (docs/semantics.md): a member named
//! several times, a destroy with enters of its room, an event older than the member's row,
//! identical callbacks. The result is the sequential one however callbacks were grouped.

use std::time::Duration;

use serde_json::Value;
use sqlx::{PgPool, postgres::PgListener};

use crate::helpers::*;
use roomsync::{
    callback::{Callback, CallbackQuery, parse_stored},
    store::{Outcome, write_batch},
};

fn parse(body: &Value) -> Callback {
    let query = CallbackQuery {
        command: body["CallbackCommand"].as_str().map(str::to_owned),
        ..CallbackQuery::default()
    };
    parse_stored(
        APP_ID,
        &query,
        body.to_string().as_bytes(),
        chrono::Utc::now(),
    )
    .unwrap()
}

/// Writes `bodies` as one batch.
async fn write_one_batch(pool: &PgPool, bodies: &[Value]) -> Vec<Outcome> {
    let callbacks: Vec<Callback> = bodies.iter().map(parse).collect();
    let refs: Vec<&Callback> = callbacks.iter().collect();
    write_batch(pool, None, Default::default(), &refs)
        .await
        .unwrap()
}

type Row = (
    bool,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<String>,
);

async fn member(pool: &PgPool, room: &str, user: &str) -> Row {
    sqlx::query_as(
        "SELECT in_room, entered_at, left_at, leave_type FROM room_members
         WHERE sdk_app_id = $1 AND room_id = $2 AND user_id = $3",
    )
    .bind(APP_ID)
    .bind(room)
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn kind(text: &str) -> Option<String> {
    Some(text.to_owned())
}

#[sqlx::test]
async fn a_member_named_several_times_in_one_batch(pool: PgPool) {
    a_member_named_several_times_in_one_batch_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn a_member_named_several_times_in_one_batch_scenario(pool: PgPool) {
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen("room_members").await.unwrap();
    // Newest last in time, given in reverse; u2's enter is older than its leave; the first
    // callback comes twice.
    let bodies = [
        enter("r", &["u1"], 300),
        enter("r", &["u2"], 120),
        leave("r", &["u2"], "Leave", 150),
        leave("r", &["u1"], "Kicked", 200),
        enter("r", &["u1", "u2", "u1"], 100),
        enter("r", &["u1"], 300),
    ];
    let outcomes = write_one_batch(&pool, &bodies).await;
    let stored = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Stored { .. }))
        .count();
    assert_eq!((stored, outcomes[5]), (5, Outcome::Duplicate));
    assert_eq!(
        member(&pool, "r", "u1").await,
        (true, Some(ms(300)), Some(ms(200)), kind("Kicked"))
    );
    assert_eq!(
        member(&pool, "r", "u2").await,
        (false, Some(ms(120)), Some(ms(150)), kind("Leave"))
    );
    let count: (Option<i32>,) =
        sqlx::query_as("SELECT member_count FROM rooms WHERE room_id = 'r'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(count.0, Some(1), "the newest member event's count");
    // One notice per member: its state now, at the EventTime that made it.
    let mut heard = Vec::new();
    while let Ok(Ok(note)) = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await
    {
        let note: Value = serde_json::from_str(note.payload()).unwrap();
        heard.push((
            note["user_ids"].clone(),
            note["in_room"].clone(),
            note["event_at"].clone(),
        ));
    }
    heard.sort_by_key(|h| h.0.to_string());
    assert_eq!(
        heard,
        [
            (
                serde_json::json!(["u1"]),
                Value::Bool(true),
                "1970-01-01T00:00:00.300Z".into()
            ),
            (
                serde_json::json!(["u2"]),
                Value::Bool(false),
                "1970-01-01T00:00:00.150Z".into()
            ),
        ]
    );
}

#[sqlx::test]
async fn a_destroy_and_enters_of_its_room_in_one_batch(pool: PgPool) {
    a_destroy_and_enters_of_its_room_in_one_batch_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn a_destroy_and_enters_of_its_room_in_one_batch_scenario(pool: PgPool) {
    write_one_batch(&pool, &[enter("r", &["a", "d"], 100)]).await;
    write_one_batch(
        &pool,
        &[
            enter("r", &["c"], 400),
            destroy("r", 300),
            enter("r", &["b"], 200),
            enter("r", &["a"], 400),
        ],
    )
    .await;
    let destroyed = (Some(ms(300)), kind("RoomDestroyed"));
    let d = member(&pool, "r", "d").await;
    assert_eq!((d.0, d.2, d.3), (false, destroyed.0, destroyed.1.clone()));
    // In again after the destroy, which is its latest exit.
    let a = member(&pool, "r", "a").await;
    assert_eq!(a, (true, Some(ms(400)), destroyed.0, destroyed.1.clone()));
    let b = member(&pool, "r", "b").await;
    assert_eq!(
        (b.0, b.1, b.2, b.3),
        (false, Some(ms(200)), destroyed.0, destroyed.1)
    );
    assert_eq!(
        member(&pool, "r", "c").await,
        (true, Some(ms(400)), None, None)
    );
    let room: (Option<chrono::DateTime<chrono::Utc>>,) =
        sqlx::query_as("SELECT destroyed_at FROM rooms WHERE room_id = 'r'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(room.0, None, "the enter at 400 revives the room");
}

#[sqlx::test]
async fn a_row_newer_than_an_event_of_the_batch_is_recomputed(pool: PgPool) {
    a_row_newer_than_an_event_of_the_batch_is_recomputed_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn a_row_newer_than_an_event_of_the_batch_is_recomputed_scenario(pool: PgPool) {
    write_one_batch(&pool, &[leave("r", &["u"], "Leave", 500)]).await;
    // 400 is older than the row, 600 newer: the row is recomputed from history.
    write_one_batch(&pool, &[enter("r", &["u"], 600), enter("r", &["u"], 400)]).await;
    assert_eq!(
        member(&pool, "r", "u").await,
        (true, Some(ms(600)), Some(ms(500)), kind("Leave"))
    );
    // And an old enter alone changes nothing but history.
    write_one_batch(&pool, &[enter("r", &["u"], 450)]).await;
    assert_eq!(
        member(&pool, "r", "u").await,
        (true, Some(ms(600)), Some(ms(500)), kind("Leave"))
    );
}

/// The history statement reads the ledger ahead for every callback of a batch, the ones already
/// stored included (docs/attendance.md): a destroy sent again beside a new enter of its room
/// must not make the room's open stays count as if it destroyed the room now.
#[sqlx::test]
async fn a_destroy_sent_again_beside_a_new_enter_leaves_the_open_stays_open(pool: PgPool) {
    write_one_batch(&pool, &[enter("r", &["a"], 100)]).await;
    write_one_batch(&pool, &[destroy("r", 200)]).await;
    write_one_batch(&pool, &[enter("r", &["b"], 300)]).await;
    let outcomes = write_one_batch(&pool, &[destroy("r", 200), enter("r", &["c"], 400)]).await;
    assert_eq!(outcomes[0], Outcome::Duplicate);
    assert!(matches!(outcomes[1], Outcome::Stored { .. }));
    let stays: Vec<(String, i32, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "SELECT user_id, session_no, left_at FROM room_stays WHERE room_id = 'r'
         ORDER BY joined_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        stays,
        [
            ("a".to_string(), 1, Some(ms(200))),
            ("b".to_string(), 2, None),
            ("c".to_string(), 2, None),
        ]
    );
    let session: (i32, i32, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "SELECT unique_members, open_stays, ended_at FROM room_sessions
         WHERE room_id = 'r' AND session_no = 2",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(session, (2, 2, None));
    for user in ["b", "c"] {
        assert!(member(&pool, "r", user).await.0, "{user} is in the room");
    }
}
