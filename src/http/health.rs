use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppContext;
use crate::store;

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: the database answers, within a second. The body also tells how many callbacks
/// wait in the local journal, and how many of those are parked (docs/durability.md).
pub async fn readyz(ctx: web::Data<AppContext>) -> HttpResponse {
    let depth = ctx.ingest.journal_depth();
    let parked = ctx.ingest.journal_parked();
    let database = match tokio::time::timeout(Duration::from_secs(1), store::ping(&ctx.pool)).await
    {
        Ok(Ok(())) => "up",
        Ok(Err(error)) => {
            tracing::warn!(error = ?error, "readiness check failed");
            "down"
        }
        Err(_) => "timeout",
    };
    let body = json!({"database": database, "journal_depth": depth, "journal_parked": parked});
    if database == "up" {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
