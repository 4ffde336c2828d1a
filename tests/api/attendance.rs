//! The attendance ledger (docs/attendance.md), case by case through HTTP: each failure users of
//! other platforms report, and the rules at their bounds. The model-based test is
//! attendance_model.rs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{helpers::*, rows::*};

const T0: i64 = 1_700_000_000_000;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct StayRow {
    user_id: String,
    joined_at: DateTime<Utc>,
    session_no: i32,
    left_at: Option<DateTime<Utc>>,
    leave_type: Option<String>,
    merged_gaps: i32,
    gap_ms: i64,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct SessionRow {
    session_no: i32,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    end_cause: Option<String>,
    peak_members: i32,
    peak_at: DateTime<Utc>,
    unique_members: i32,
    member_ms: i64,
    open_stays: i32,
}

async fn stays(pool: &PgPool, room: &str) -> Vec<StayRow> {
    sqlx::query_as(
        "SELECT user_id, joined_at, session_no, left_at, leave_type, merged_gaps, gap_ms
         FROM room_stays WHERE room_id = $1 ORDER BY joined_at, user_id",
    )
    .bind(room)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn sessions(pool: &PgPool, room: &str) -> Vec<SessionRow> {
    sqlx::query_as(
        "SELECT session_no, started_at, ended_at, end_cause, peak_members, peak_at,
                unique_members, member_ms, open_stays
         FROM room_sessions WHERE room_id = $1 ORDER BY session_no",
    )
    .bind(room)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Sends each body in turn and asserts 200.
async fn send_all(app: &TestApp, bodies: &[Value]) {
    for body in bodies {
        assert_eq!(app.send(body).await, (200, ok()), "{body}");
    }
}

/// The invariant of docs/attendance.md: `in_room` exactly when the member has one open stay.
async fn assert_in_room_is_an_open_stay(pool: &PgPool) {
    let broken: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM room_members m
         WHERE m.in_room <> ((SELECT count(*) FROM room_stays s
                              WHERE s.sdk_app_id = m.sdk_app_id AND s.room_id = m.room_id
                                AND s.user_id = m.user_id AND s.left_at IS NULL) = 1)
            OR (SELECT count(*) FROM room_stays s
                WHERE s.sdk_app_id = m.sdk_app_id AND s.room_id = m.room_id
                  AND s.user_id = m.user_id AND s.left_at IS NULL) > 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(broken, 0, "in_room and open stays disagree");
}

#[sqlx::test]
async fn a_leave_redelivered_after_the_rejoin_does_not_mark_the_student_absent(pool: PgPool) {
    a_leave_redelivered_after_the_rejoin_does_not_mark_the_student_absent_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn a_leave_redelivered_after_the_rejoin_does_not_mark_the_student_absent_scenario(
    pool: PgPool,
) {
    let app = spawn_app(pool.clone()).await;
    let left = leave("class", &["student"], "Leave", T0 + 60_000);
    send_all(
        &app,
        &[
            enter("class", &["student"], T0),
            left.clone(),
            enter("class", &["student"], T0 + 120_000),
            left,
        ],
    )
    .await;
    let rows = stays(&pool, "class").await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].joined_at, ms(T0 + 120_000));
    assert_eq!(rows[1].left_at, None, "still present");
    let present: (i32, bool) = sqlx::query_as(
        "SELECT stays, last_left_at IS NULL FROM room_attendance
         WHERE room_id = 'class' AND user_id = 'student'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(present, (2, true));
    assert_in_room_is_an_open_stay(&pool).await;
    app.stop().await;
}

#[sqlx::test]
async fn reconnects_count_one_person_and_with_a_merge_gap_one_stay(pool: PgPool) {
    reconnects_count_one_person_and_with_a_merge_gap_one_stay_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn reconnects_count_one_person_and_with_a_merge_gap_one_stay_scenario(pool: PgPool) {
    // Without a merge gap: three stays, one person.
    let app = spawn_app(pool.clone()).await;
    let flaky = [
        enter("m", &["bob"], T0),
        leave("m", &["bob"], "Expired", T0 + 10_000),
        enter("m", &["bob"], T0 + 12_000),
        leave("m", &["bob"], "Expired", T0 + 20_000),
        enter("m", &["bob"], T0 + 21_000),
        enter("m", &["amy"], T0 + 1_000),
    ];
    send_all(&app, &flaky).await;
    let s = sessions(&pool, "m").await;
    assert_eq!((s.len(), s[0].unique_members, s[0].peak_members), (1, 2, 2));
    assert_eq!(stays(&pool, "m").await.len(), 4);
    app.stop().await;

    // With a 5 s gap: bob's reconnects are one stay, its gaps counted.
    let app = spawn_app_with(pool.clone(), &[("STAY_MERGE_GAP_SECS", "5")]).await;
    let other: Vec<Value> = flaky
        .iter()
        .map(|b| {
            let mut b = b.clone();
            b["RoomId"] = json!("m2");
            b
        })
        .collect();
    send_all(&app, &other).await;
    let bob: Vec<StayRow> = stays(&pool, "m2")
        .await
        .into_iter()
        .filter(|s| s.user_id == "bob")
        .collect();
    assert_eq!(bob.len(), 1);
    assert_eq!((bob[0].merged_gaps, bob[0].gap_ms), (2, 3_000));
    assert_eq!(bob[0].left_at, None);
    assert_in_room_is_an_open_stay(&pool).await;
    app.stop().await;
}

#[sqlx::test]
async fn a_leave_that_arrives_after_the_new_join_merges_and_no_counter_goes_negative(pool: PgPool) {
    a_leave_that_arrives_after_the_new_join_merges_and_no_counter_goes_negative_scenario(pool)
        .await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn a_leave_that_arrives_after_the_new_join_merges_and_no_counter_goes_negative_scenario(
    pool: PgPool,
) {
    let app = spawn_app_with(pool.clone(), &[("STAY_MERGE_GAP_SECS", "5")]).await;
    // A one-second reconnect whose leave arrives last; and a leave with no join at all.
    send_all(
        &app,
        &[
            enter("r", &["u"], T0),
            enter("r", &["u"], T0 + 2_000),
            leave("r", &["u"], "Leave", T0 + 1_000),
            leave("r", &["ghost"], "Leave", T0 + 500),
        ],
    )
    .await;
    let rows = stays(&pool, "r").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].merged_gaps, rows[0].gap_ms), (1, 1_000));
    let s = sessions(&pool, "r").await;
    assert_eq!(
        (s[0].open_stays, s[0].peak_members, s[0].unique_members),
        (1, 1, 1)
    );
    assert!(member(&pool, "r", "u").await.unwrap().in_room);
    assert_in_room_is_an_open_stay(&pool).await;
    app.stop().await;
}

#[sqlx::test]
async fn a_rejoin_after_the_meeting_ended_starts_a_new_session(pool: PgPool) {
    a_rejoin_after_the_meeting_ended_starts_a_new_session_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn a_rejoin_after_the_meeting_ended_starts_a_new_session_scenario(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    send_all(
        &app,
        &[
            enter("q", &["a", "b"], T0),
            destroy("q", T0 + 60_000),
            enter("q", &["a"], T0 + 61_000),
        ],
    )
    .await;
    let s = sessions(&pool, "q").await;
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].end_cause.as_deref(), Some("Destroyed"));
    assert_eq!(
        (s[0].ended_at, s[0].member_ms),
        (Some(ms(T0 + 60_000)), 120_000)
    );
    assert_eq!((s[1].started_at, s[1].unique_members), (ms(T0 + 61_000), 1));
    let ended: Vec<Option<String>> = stays(&pool, "q")
        .await
        .into_iter()
        .filter(|s| s.session_no == 1)
        .map(|s| s.leave_type)
        .collect();
    assert_eq!(
        ended,
        [Some("RoomDestroyed".into()), Some("RoomDestroyed".into())]
    );
    // The report of the first meeting is as it was.
    let first: i64 = sqlx::query_scalar(
        "SELECT sum(present_ms)::int8 FROM room_attendance WHERE room_id = 'q' AND session_no = 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(first, 120_000);
    assert_in_room_is_an_open_stay(&pool).await;
    app.stop().await;
}

#[sqlx::test]
async fn a_live_heartbeat_interrupt_and_recover_within_the_gap_is_one_stay(pool: PgPool) {
    a_live_heartbeat_interrupt_and_recover_within_the_gap_is_one_stay_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn a_live_heartbeat_interrupt_and_recover_within_the_gap_is_one_stay_scenario(
    pool: PgPool,
) {
    let app = spawn_app_with(pool.clone(), &[("STAY_MERGE_GAP_SECS", "60")]).await;
    let state = |kind: &str, cause: &str, at: i64| {
        json!({"CallbackCommand": "Live.CallbackAfterMemberStateChanged", "RoomId": "live",
               "EventType": kind, "EventCause": cause,
               "MemberList": [{"Member_Account": "viewer"}], "EventTime": at})
    };
    send_all(
        &app,
        &[
            state("Online", "Enter", T0),
            state("Offline", "HeartbeatInterrupt", T0 + 30_000),
            state("Online", "HeartbeatRecover", T0 + 50_000),
            state("Offline", "Leave", T0 + 90_000),
        ],
    )
    .await;
    let rows = stays(&pool, "live").await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].merged_gaps, rows[0].gap_ms), (1, 20_000));
    assert_eq!(rows[0].leave_type.as_deref(), Some("Leave"));
    let s = sessions(&pool, "live").await;
    assert_eq!(s[0].member_ms, 70_000);
    app.stop().await;
}

#[sqlx::test]
async fn an_enter_within_the_grace_re_opens_the_session_even_when_it_arrives_late(pool: PgPool) {
    an_enter_within_the_grace_re_opens_the_session_even_when_it_arrives_late_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn an_enter_within_the_grace_re_opens_the_session_even_when_it_arrives_late_scenario(
    pool: PgPool,
) {
    let app = spawn_app_with(pool.clone(), &[("SESSION_EMPTY_GRACE_SECS", "60")]).await;
    send_all(
        &app,
        &[
            enter("g", &["a"], T0),
            leave("g", &["a"], "Leave", T0 + 10_000),
            enter("g", &["c"], T0 + 200_000),
        ],
    )
    .await;
    let s = sessions(&pool, "g").await;
    assert_eq!(s.len(), 2, "empty beyond the grace: two sessions");
    assert_eq!(s[0].end_cause.as_deref(), Some("Emptied"));
    // b came back 60 s after the room emptied (the bound is included): one session again.
    send_all(
        &app,
        &[
            enter("g", &["b"], T0 + 70_000),
            leave("g", &["b"], "Leave", T0 + 80_000),
        ],
    )
    .await;
    let s = sessions(&pool, "g").await;
    assert_eq!(s.len(), 2);
    assert_eq!(
        (s[0].ended_at, s[0].unique_members),
        (Some(ms(T0 + 80_000)), 2)
    );
    assert_eq!((s[1].session_no, s[1].started_at), (2, ms(T0 + 200_000)));
    assert_in_room_is_an_open_stay(&pool).await;
    app.stop().await;
}

#[sqlx::test]
async fn an_enter_and_a_leave_at_one_millisecond_count_the_enter_first(pool: PgPool) {
    an_enter_and_a_leave_at_one_millisecond_count_the_enter_first_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn an_enter_and_a_leave_at_one_millisecond_count_the_enter_first_scenario(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    // The leave arrives first; the fold still applies the enter first at equal times.
    send_all(
        &app,
        &[
            enter("p", &["a"], T0),
            leave("p", &["a"], "Leave", T0 + 5),
            enter("p", &["b"], T0 + 5),
        ],
    )
    .await;
    let s = sessions(&pool, "p").await;
    assert_eq!((s[0].peak_members, s[0].peak_at), (2, ms(T0 + 5)));
    app.stop().await;
}

#[sqlx::test]
async fn drift_repair_corrections_end_and_open_stays(pool: PgPool) {
    drift_repair_corrections_end_and_open_stays_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn drift_repair_corrections_end_and_open_stays_scenario(pool: PgPool) {
    use roomsync::callback::{Callback, Event, EventTime, Id, MemberChange, SdkAppId};
    let app = spawn_app(pool.clone()).await;
    send_all(&app, &[enter("d", &["ghost"], T0)]).await;
    app.stop().await;
    let correction = |event: Event, at: i64| {
        Callback::correction(
            SdkAppId::from_i64(APP_ID).unwrap(),
            Id::parse("d").unwrap(),
            EventTime::from_millis(at).unwrap(),
            event,
            &json!({"test": true}),
        )
    };
    let change = |user: &str| MemberChange {
        members: vec![Id::parse(user).unwrap()],
        member_count: Some(1),
        kind: None,
        reason: Some("absent from Tencent's member list".into()),
    };
    let out = correction(Event::MemberLeave(change("ghost")), T0 + 600_000);
    let inn = correction(Event::MemberEnter(change("missing")), T0 + 600_000);
    roomsync::store::write_batch(&pool, None, Default::default(), &[&out, &inn])
        .await
        .unwrap();
    let rows = stays(&pool, "d").await;
    assert_eq!(rows[0].user_id, "ghost");
    assert_eq!(rows[0].leave_type.as_deref(), Some("Reconciled"));
    assert_eq!(rows[0].left_at, Some(ms(T0 + 600_000)));
    assert_eq!(
        (rows[1].user_id.as_str(), rows[1].joined_at),
        ("missing", ms(T0 + 600_000))
    );
    // A late real leave, older than the correction, ends the stay where it happened.
    let app = spawn_app(pool.clone()).await;
    send_all(&app, &[leave("d", &["ghost"], "Leave", T0 + 30_000)]).await;
    let rows = stays(&pool, "d").await;
    assert_eq!(
        (rows[0].left_at, rows[0].leave_type.as_deref()),
        (Some(ms(T0 + 30_000)), Some("Leave"))
    );
    assert_in_room_is_an_open_stay(&pool).await;
    app.stop().await;
}

#[sqlx::test]
async fn invitees_are_listed_and_those_who_never_came_have_no_stays(pool: PgPool) {
    invitees_are_listed_and_those_who_never_came_have_no_stays_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn invitees_are_listed_and_those_who_never_came_have_no_stays_scenario(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let mut scheduled = create("conf", "weekly", T0);
    scheduled["ScheduleInviteeList_Account"] = json!(["amy", "bob", "bob", "o\"dd\\one"]);
    send_all(
        &app,
        &[
            scheduled,
            enter("conf", &["amy", "walk-in"], T0 + 1_000),
            leave("conf", &["amy", "walk-in"], "Leave", T0 + 61_000),
        ],
    )
    .await;
    let rows: Vec<(String, bool, i32, i64)> = sqlx::query_as(
        "SELECT user_id, invited, stays, present_ms FROM room_attendance
         WHERE room_id = 'conf' AND session_no = 1 ORDER BY user_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("amy".into(), true, 1, 60_000),
            ("bob".into(), true, 0, 0),
            ("o\"dd\\one".into(), true, 0, 0),
            ("walk-in".into(), false, 1, 60_000),
        ]
    );
    app.stop().await;
}

#[sqlx::test]
async fn history_retention_never_touches_the_ledger_and_attendance_retention_keeps_the_newest(
    pool: PgPool,
) {
    history_retention_never_touches_the_ledger_and_attendance_retention_keeps_the_newest_scenario(
        pool,
    )
    .await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn history_retention_never_touches_the_ledger_and_attendance_retention_keeps_the_newest_scenario(
    pool: PgPool,
) {
    let app = spawn_app(pool.clone()).await;
    send_all(
        &app,
        &[
            enter("old", &["a"], T0),
            destroy("old", T0 + 1_000),
            enter("old", &["a"], T0 + 2_000),
            destroy("old", T0 + 3_000),
        ],
    )
    .await;
    app.stop().await;
    let before = (stays(&pool, "old").await, sessions(&pool, "old").await);
    sqlx::query("UPDATE room_events SET received_at = now() - interval '30 days'")
        .execute(&pool)
        .await
        .unwrap();
    let pruned = roomsync::store::retention::prune(&pool, 7).await.unwrap();
    assert_eq!(pruned, 4);
    assert_eq!(
        (stays(&pool, "old").await, sessions(&pool, "old").await),
        before
    );
    // A rebuild with no history left keeps the sessions that ended before it.
    roomsync::rebuild::rebuild(&pool, Default::default())
        .await
        .unwrap();
    assert_eq!(sessions(&pool, "old").await, before.1);
    // T0 is in 2023: both sessions ended long ago; the newest stays, numbering goes on.
    let deleted = roomsync::store::retention::prune_attendance(&pool, 7)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let left = sessions(&pool, "old").await;
    assert_eq!(left.iter().map(|s| s.session_no).collect::<Vec<_>>(), [2]);
    assert!(stays(&pool, "old").await.iter().all(|s| s.session_no == 2));
    let app = spawn_app(pool.clone()).await;
    send_all(&app, &[enter("old", &["b"], T0 + 5_000)]).await;
    assert_eq!(sessions(&pool, "old").await.last().unwrap().session_no, 3);
    app.stop().await;
}

#[sqlx::test]
async fn rebuild_under_another_policy_applies_it_to_the_past(pool: PgPool) {
    rebuild_under_another_policy_applies_it_to_the_past_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn rebuild_under_another_policy_applies_it_to_the_past_scenario(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    send_all(
        &app,
        &[
            enter("x", &["a"], T0),
            leave("x", &["a"], "Expired", T0 + 10_000),
            enter("x", &["a"], T0 + 13_000),
        ],
    )
    .await;
    app.stop().await;
    assert_eq!(stays(&pool, "x").await.len(), 2);
    let policy = roomsync::store::attendance::Policy {
        merge_gap: chrono::TimeDelta::seconds(5),
        ..Default::default()
    };
    roomsync::rebuild::rebuild(&pool, policy.into())
        .await
        .unwrap();
    let rows = stays(&pool, "x").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].gap_ms, 3_000);
    roomsync::rebuild::rebuild(&pool, Default::default())
        .await
        .unwrap();
    assert_eq!(stays(&pool, "x").await.len(), 2);
}

/// A database upgraded from the version before the ledger: the migration adds the tables
/// empty, and the ledger is made from the history already there, room by room in the
/// background; a callback for such a room meanwhile is folded by that pass with the rest.
#[sqlx::test]
async fn an_upgraded_database_gets_its_ledger_from_its_history(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let mut bodies = Vec::new();
    for room in 0..20 {
        let room = format!("up{room}");
        bodies.push(enter(&room, &["a", "b"], T0));
        bodies.push(leave(&room, &["a"], "Leave", T0 + 5_000));
        bodies.push(destroy(&room, T0 + 9_000));
        bodies.push(enter(&room, &["c"], T0 + 20_000));
    }
    let mut invited = create("up0", "scheduled", T0 - 1_000);
    invited["ScheduleInviteeList_Account"] = json!(["zed"]);
    bodies.push(invited);
    send_all(&app, &bodies).await;
    app.stop().await;
    let want = ledger_snapshot(&pool).await;
    assert!(want.0.len() >= 60);

    // The state before the ledger: its tables, columns and migration gone.
    sqlx::raw_sql(
        "DROP VIEW room_attendance; DROP TABLE room_stays, room_sessions;
         DROP FUNCTION ledger_read, ledger_write, prune_attendance;
         ALTER TABLE rooms DROP COLUMN ledger_at, DROP COLUMN ledger_rank,
             DROP COLUMN ledger_backfill, DROP COLUMN invitees, DROP COLUMN invitees_at;
         DELETE FROM _sqlx_migrations WHERE description = 'attendance';",
    )
    .execute(&pool)
    .await
    .unwrap();
    roomsync::store::MIGRATOR.run(&pool).await.unwrap();
    let waiting: i64 = count(&pool, "SELECT count(*) FROM rooms WHERE ledger_backfill").await;
    assert_eq!(waiting, 20);

    // A late callback for one room before its ledger is made: the pass folds it with the rest.
    let late = leave("up3", &["b"], "Kicked", T0 + 7_000);
    let app = spawn_app(pool.clone()).await;
    send_all(&app, &[late]).await;
    let done = eventually(Duration::from_secs(30), || async {
        count(&pool, "SELECT count(*) FROM rooms WHERE ledger_backfill").await == 0
    })
    .await;
    assert!(done, "the background backfill makes every room's ledger");
    app.stop().await;
    let got = ledger_snapshot(&pool).await;
    // Every other room's ledger is what live ingestion had made.
    let others = |rows: &[String]| -> Vec<String> {
        rows.iter()
            .filter(|r| !r.contains(",up3,"))
            .cloned()
            .collect()
    };
    assert_eq!(others(&got.0), others(&want.0), "stays");
    assert_eq!(others(&got.1), others(&want.1), "sessions");
    assert_eq!(got.2, want.2, "invitees");
    // up3's: b was kicked at +7 s, before the destroy at +9 s.
    let b = stays(&pool, "up3").await;
    let b = b.iter().find(|s| s.user_id == "b").unwrap();
    assert_eq!(
        (b.left_at, b.leave_type.as_deref()),
        (Some(ms(T0 + 7_000)), Some("Kicked"))
    );
    assert_eq!(sessions(&pool, "up3").await[0].member_ms, 12_000);
}

/// Stays, sessions and invitees as text rows, sorted.
async fn ledger_snapshot(pool: &PgPool) -> (Vec<String>, Vec<String>, Vec<String>) {
    let rows = |sql: &'static str| async move {
        sqlx::query_scalar::<_, String>(sql)
            .fetch_all(pool)
            .await
            .unwrap()
    };
    (
        rows("SELECT s::text FROM room_stays s ORDER BY 1").await,
        rows("SELECT s::text FROM room_sessions s ORDER BY 1").await,
        rows("SELECT room_id || ':' || invitees::text FROM rooms WHERE invitees IS NOT NULL ORDER BY 1")
            .await,
    )
}
