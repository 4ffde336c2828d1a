//! Operations: history retention.

use std::time::Duration;

use sqlx::{PgPool, Row};

use crate::{helpers::*, rows::*};

#[sqlx::test]
async fn retention_prunes_old_history_and_keeps_the_view(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    for (i, user) in ["a", "b", "c"].iter().enumerate() {
        app.deliver(&enter("r", &[user], 100 + i as i64)).await;
    }
    app.stop().await;
    sqlx::raw_sql("UPDATE room_events SET received_at = now() - interval '3 days' WHERE event_at < to_timestamp(0.102)")
        .execute(&pool)
        .await
        .unwrap();
    let pruning = spawn_app_with(pool.clone(), &[("EVENT_RETENTION_DAYS", "2")]).await;
    let pruned = eventually(Duration::from_secs(10), || async {
        history(&pool).await == 1
    })
    .await;
    assert!(pruned, "the two old rows are gone, the recent one stays");
    assert_eq!(
        roster(&pool, "r").await,
        vec!["a", "b", "c"],
        "the view is not history"
    );
    pruning.stop().await;
}

#[sqlx::test]
async fn pruning_works_in_batches(pool: PgPool) {
    pruning_works_in_batches_scenario(pool).await;
}

/// Also run on a Citus cluster (citus.rs).
pub async fn pruning_works_in_batches_scenario(pool: PgPool) {
    sqlx::raw_sql(
        "INSERT INTO room_events (sdk_app_id, callback_command, room_id, event_at, payload, received_at, dedup_key)
         SELECT 1, 'X.Old', 'r', now(), '{}', now() - interval '10 days', sha256(convert_to(i::text, 'UTF8'))
         FROM generate_series(1, 2500) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();
    let deleted = roomsync::store::retention::prune(&pool, 7).await.unwrap();
    assert_eq!(deleted, 2500);
    assert_eq!(history(&pool).await, 0);
}

/// The batch's member read probes an index per member even under a plan made while the
/// tables were empty (a fresh deployment): PostgreSQL caches such a plan until an ANALYZE, and
/// a hash join planned then would scan `room_members` whole for every batch as it grows.
#[sqlx::test]
async fn the_member_read_uses_an_index_on_a_fresh_database(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    prepare_generic(
        &mut conn,
        "batch_insert",
        include_str!("../../src/store/apply/sql/insert_events.sql"),
    )
    .await;
    let nulls = vec!["NULL"; 22].join(", ");
    let plan = plan_of(&mut conn, format!("EXPLAIN EXECUTE batch_insert({nulls})")).await;
    assert!(!plan.contains("Seq Scan on room_members"), "{plan}");
    // The look-up of a first-version key probes the dedup index too.
    assert!(!plan.contains("Seq Scan on room_events"), "{plan}");
    assert!(plan.contains("Index Scan using room_members"), "{plan}");
}

/// A member's newest stay is one probe of `room_stays`' primary key even under a plan made
/// while the table was never analyzed: with plain equalities on the room, PostgreSQL took
/// `room_stays_session` at this size (60,000 stays: the primary key one level taller) and
/// sorted every stay of the room, for each member (a drain after an outage ran at 0.66× of
/// what it does with this form).
#[sqlx::test]
async fn the_stay_read_probes_the_primary_key_on_a_never_analyzed_table(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    // 60 stays in each of 1,000 rooms, one per member; u-7 of room-7 has a second, newer one.
    sqlx::raw_sql(
        "ALTER TABLE room_stays SET (autovacuum_enabled = false);
         INSERT INTO room_stays (sdk_app_id, room_id, user_id, joined_at, session_no)
         SELECT 1400000001, 'room-' || (i % 1000), 'u-' || i,
                timestamptz '2026-12-01' + i * interval '1 s', 1
         FROM generate_series(1, 60000) AS i;
         INSERT INTO room_stays (sdk_app_id, room_id, user_id, joined_at, session_no)
         VALUES (1400000001, 'room-7', 'u-7', timestamptz '2026-12-02', 2)",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    // The history statement reads the ledger (plain PostgreSQL): here with no history row and
    // no room, only the named members ($16..$18), whose newest stays it reads.
    prepare_generic(
        &mut conn,
        "stay_read",
        include_str!("../../src/store/apply/sql/insert_events.sql"),
    )
    .await;
    // 50 members of 50 rooms with stays, and one with none (the greatest key below it is
    // another member's of the same room).
    let mut users: Vec<(String, String)> = (1..=50)
        .map(|i| (format!("room-{i}"), format!("u-{i}")))
        .collect();
    users.push(("room-3".into(), "u-2".into()));
    let (rooms, names): (Vec<String>, Vec<String>) = users.into_iter().unzip();
    let args = format!(
        "{}, '{{{}}}', '{{{}}}', '{{{}}}', '{{}}', '{{}}', '{{}}', '{{}}'",
        vec!["'{}'"; 15].join(", "),
        vec!["1400000001"; rooms.len()].join(","),
        rooms.join(","),
        names.join(","),
    );
    let plan = plan_of(
        &mut conn,
        format!("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) EXECUTE stay_read({args})"),
    )
    .await;
    assert!(!plan.contains("room_stays_session"), "{plan}");
    assert!(plan.contains("room_stays_pkey"), "{plan}");
    // One descent of a three-level index a member: a few buffers each, not a room's stays.
    let hits: u64 = plan
        .lines()
        .find_map(|line| line.trim().strip_prefix("Buffers: shared hit="))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("buffers in the plan");
    assert!(hits < 51 * 8, "{hits} buffers for 51 members:\n{plan}");
    // And it finds each member's newest stay, and none for the member without one.
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXECUTE stay_read({args})")))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let mut found: Vec<(String, String, i32)> = rows
        .iter()
        .filter(|row| row.get::<String, _>("kind!") == "stay")
        .map(|row| {
            (
                row.get("room_id"),
                row.get("user_id"),
                row.get("session_no"),
            )
        })
        .collect();
    found.sort();
    let mut expected: Vec<(String, String, i32)> = (1..=50)
        .map(|i| {
            (
                format!("room-{i}"),
                format!("u-{i}"),
                if i == 7 { 2 } else { 1 },
            )
        })
        .collect();
    expected.sort();
    assert_eq!(found, expected);
}

/// The daily counts of a batch cost in proportion to the batch, under the plan a connection
/// caches: joined callback by callback with the stored rows, that plan merged on the app id
/// alone and compared every callback with every stored row (a drain's batch of 256: 65,536
/// comparisons, a sixth of the statement's time).
#[sqlx::test]
async fn the_daily_counts_of_a_batch_grow_with_it_not_with_its_square(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    prepare_generic(
        &mut conn,
        "batch_insert",
        include_str!("../../src/store/apply/sql/insert_events.sql"),
    )
    .await;
    // 200 callbacks: enters and leaves of 180 rooms, the last 20 sent again (Tencent's retries
    // in the same batch), each with its first's room, command and key.
    let first = |i: usize| (i - 1) % 180 + 1;
    let list = |cast: &str, item: &dyn Fn(usize) -> String| {
        let items: Vec<String> = (1..=200).map(item).collect();
        format!("ARRAY[{}]::{cast}[]", items.join(","))
    };
    let command = |i: usize| {
        if first(i) % 2 == 0 {
            "'Room.CallbackAfterMemberLeave'"
        } else {
            "'Room.CallbackAfterMemberEnter'"
        }
    };
    let args = [
        list("int8", &|_| "1400000001".into()),
        list("text", &|i| command(i).into()),
        list("text", &|i| format!("'room-{}'", first(i))),
        list("text", &|i| format!("'u-{}'", first(i))),
        list("text", &|i| {
            if first(i) % 2 == 0 {
                "'Leave'"
            } else {
                "'Enter'"
            }
            .into()
        }),
        list("text", &|i| format!("'u-{}'", first(i))),
        list("int4", &|i| i.to_string()),
        list("int4", &|i| i.to_string()),
        list("int4", &|_| "1".into()),
        list("text", &|_| "NULL".into()),
        list("timestamptz", &|i| {
            format!("timestamptz '2026-12-01' + interval '{} s'", first(i))
        }),
        list("text", &|_| "NULL".into()),
        list("text", &|_| "NULL".into()),
        list("text", &|i| format!("'{{\"n\":{}}}'", first(i))),
        list("bytea", &|i| format!("sha256('{}'::bytea)", first(i))),
        "'{}'".into(),
        "'{}'".into(),
        "'{}'".into(),
        list("bytea", &|_| "NULL".into()),
        "'{}'".into(),
        "'{}'".into(),
        "'{}'".into(),
    ]
    .join(", ");
    let plan = plan_of(
        &mut conn,
        format!("EXPLAIN (ANALYZE, TIMING OFF) EXECUTE batch_insert({args})"),
    )
    .await;
    // Every row a join looked at and let go: at most a few per callback, never one per pair.
    let removed: u64 = plan
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Rows Removed by Join Filter: "))
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert!(
        removed <= 200,
        "{removed} rows compared and dropped:\n{plan}"
    );
    // And the counts are right: 90 of each command stored, 10 of each a duplicate.
    let counts: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT callback_command, sum(accepted)::int8, sum(duplicates)::int8,
                sum(corrections)::int8
         FROM ingest_counts GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        counts,
        [
            ("Room.CallbackAfterMemberEnter".to_string(), 90, 10, 0),
            ("Room.CallbackAfterMemberLeave".to_string(), 90, 10, 0),
        ]
    );
}

/// Prepares the service's own statement text (from the repository) under a generic plan, as a
/// connection's cached plan is once made: what it does whatever the parameters.
async fn prepare_generic(conn: &mut sqlx::PgConnection, name: &str, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET plan_cache_mode = force_generic_plan; PREPARE {name} AS {sql}"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
}

/// What an `EXPLAIN` prints, as one text.
async fn plan_of(conn: &mut sqlx::PgConnection, explain: String) -> String {
    let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    lines.join("\n")
}
