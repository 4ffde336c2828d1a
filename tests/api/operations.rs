//! Operations: history retention.

use std::time::Duration;

use sqlx::PgPool;

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
    let sql = include_str!("../../src/store/apply/sql/insert_events.sql");
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    // The service's own statement text, from the repository.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PREPARE batch_insert AS {sql}"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let nulls = vec!["NULL"; 19].join(", ");
    let explain = format!("EXPLAIN EXECUTE batch_insert({nulls})");
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(!plan.contains("Seq Scan on room_members"), "{plan}");
    // The look-up of a first-version key probes the dedup index too.
    assert!(!plan.contains("Seq Scan on room_events"), "{plan}");
    assert!(plan.contains("Index Scan using room_members"), "{plan}");
}
