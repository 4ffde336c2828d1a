use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppContext;
use crate::store;

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: the database answers, within a second.
pub async fn readyz(ctx: web::Data<AppContext>) -> HttpResponse {
    match tokio::time::timeout(Duration::from_secs(1), store::ping(&ctx.pool)).await {
        Ok(Ok(())) => HttpResponse::Ok().json(json!({"status": "ok", "database": "up"})),
        Ok(Err(error)) => {
            tracing::warn!(error = ?error, "readiness check failed");
            HttpResponse::ServiceUnavailable()
                .json(json!({"status": "unavailable", "database": "down"}))
        }
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "database": "timeout"})),
    }
}
