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

/// The service's pool plans each statement at each execution: a plan cached while the tables
/// were small must not keep scanning them whole as they grow.
#[sqlx::test]
async fn the_service_pool_plans_statements_at_each_execution(pool: PgPool) {
    let options = pool.connect_options().as_ref().clone();
    let service = roomsync::store::connect_lazy(options, 1, Duration::from_secs(5));
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(&service)
        .await
        .unwrap();
    assert_eq!(mode, "force_custom_plan");
    let default: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(default, "auto", "the test's own pool is untouched");
}
