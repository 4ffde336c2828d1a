//! The HTTP layer (docs/http.md): routes, the callback receiver, and the error mapping.

mod api;
mod callback;
mod console;
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

pub use api::ApiError;
pub use console::SharedReads;
pub use error::CallbackError;

use crate::{config::Config, ingest::Ingest, telemetry::Metrics};

/// The bytes callback bodies may take while they are received and handled, taken as they
/// arrive: all of them share `all`; a small body (the usual callback) that has arrived in full
/// may also draw on `small`, a reserve that neither large bodies nor bodies still arriving can
/// take, so neither a wave of large bodies nor senders that send slowly hold it back
/// (docs/limits.md#memory).
/// Large bodies are also parsed apart, `parsing` at a time, off the threads that serve the
/// connections: a wave of them never holds a usual callback behind its CPU time.
#[derive(Clone)]
pub struct BodyBudget {
    pub all: Arc<tokio::sync::Semaphore>,
    pub small: Arc<tokio::sync::Semaphore>,
    pub parsing: Arc<tokio::sync::Semaphore>,
}

impl BodyBudget {
    /// Bodies of at most this many bytes may use the reserve.
    pub const SMALL_BODY: usize = 64 * 1024;
    /// The reserve: 64 small bodies at once, at their largest.
    const SMALL_RESERVE: usize = 64 * Self::SMALL_BODY;

    /// Large bodies parsed at once: every CPU but one, so one is always left for the
    /// connections, the usual callbacks and the writers.
    fn large_parses() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
    }

    pub fn new(bytes: usize) -> Self {
        Self {
            all: Arc::new(tokio::sync::Semaphore::new(bytes)),
            small: Arc::new(tokio::sync::Semaphore::new(Self::SMALL_RESERVE)),
            parsing: Arc::new(tokio::sync::Semaphore::new(Self::large_parses())),
        }
    }
}

/// Everything a request handler needs, shared by all workers.
pub struct AppContext {
    /// Bytes of callback bodies in flight (`HTTP_MAX_INFLIGHT_BODY_BYTES`), one permit a byte.
    pub body_bytes: BodyBudget,
    pub config: Config,
    pub pool: PgPool,
    /// Where handlers run their queries: the pool's runtime, not their worker's.
    pub db: crate::store::DbRuntime,
    pub ingest: Ingest,
    /// The database's verdict; `/readyz` answers from it.
    pub health: crate::store::Health,
    pub metrics: Arc<Metrics>,
    /// The change feed's reader; `None` without `API_TOKEN`.
    pub feed: Option<crate::feed::Hub>,
    /// The console's check of Tencent's callback configuration; `None` without the console
    /// or without drift-repair credentials.
    pub tencent_setup: Option<crate::setup::Watch>,
    /// The console's reads that one answer serves for every open console.
    pub console: console::SharedReads,
}

/// Every route on one listener: the callbacks' and the readers'.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(callback_routes).configure(read_routes);
}

/// The callbacks and the service's own routes (health, readiness, metrics).
pub fn callback_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/callback").route(web::post().to(callback::receive)))
        .service(web::resource("/healthz").route(web::get().to(health::healthz)))
        .service(web::resource("/readyz").route(web::get().to(health::readyz)))
        .service(web::resource("/metrics").route(web::get().to(metrics)));
}

/// The read API and the console: beside the callbacks, or on a listener of their own
/// (`API_LISTEN_ADDR`, with `/healthz` for a container's probe).
pub fn read_routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(api::routes).configure(console::routes);
}

/// What a listener of the readers' own serves.
pub fn apart_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").route(web::get().to(health::healthz)))
        .configure(read_routes);
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
