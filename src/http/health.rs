use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppContext;

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: the database's verdict ([`crate::store::Health::readiness`]): up and answering
/// within a second, or why not (`down`, `schema_missing`, `timeout`). The body also tells how
/// many callbacks wait in the local journal, and how many of those are parked
/// (docs/durability.md).
pub async fn readyz(ctx: web::Data<AppContext>) -> HttpResponse {
    let depth = ctx.ingest.journal_depth();
    let parked = ctx.ingest.journal_parked();
    let (ready, database) = readiness(&ctx).await;
    let body = json!({"database": database, "journal_depth": depth, "journal_parked": parked});
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// The database's verdict, its ping run where the pool's connections belong
/// ([`crate::store::DbRuntime`]).
pub(super) async fn readiness(ctx: &AppContext) -> (bool, &'static str) {
    let (health, pool) = (ctx.health.clone(), ctx.pool.clone());
    ctx.db
        .run(async move { health.readiness(&pool).await })
        .await
}
