//! The HTTP layer (docs/http.md): routes, the callback receiver, and the error mapping.

mod callback;
mod error;
mod health;

use std::{sync::Arc, time::Instant};

use actix_web::{
    HttpResponse,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web,
};
use sqlx::PgPool;

pub use error::CallbackError;

use crate::{config::Config, ingest::Ingest, telemetry::Metrics};

/// Everything a request handler needs, shared by all workers.
pub struct AppContext {
    /// Bytes of callback bodies in flight (`HTTP_MAX_INFLIGHT_BODY_BYTES`), one permit a byte.
    pub body_bytes: Arc<tokio::sync::Semaphore>,
    pub config: Config,
    pub pool: PgPool,
    pub ingest: Ingest,
    pub metrics: Arc<Metrics>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/callback").route(web::post().to(callback::receive)))
        .service(web::resource("/healthz").route(web::get().to(health::healthz)))
        .service(web::resource("/readyz").route(web::get().to(health::readyz)))
        .service(web::resource("/metrics").route(web::get().to(metrics)));
}

async fn metrics(ctx: web::Data<AppContext>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(ctx.metrics.render())
}

/// Records every request's latency by route pattern (bounded label values) and status.
pub async fn record_latency(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<AppContext>>()
        .map(|ctx| ctx.metrics.clone());
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        metrics
            .request_duration
            .with_label_values(&[route.as_str(), response.status().as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(response)
}
