//! `POST /callback`: size, app id, signature, body, then the store (docs/http.md#order-of-the-checks).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    body::{BodySize, BoxBody, MessageBody},
    http::header,
    web,
};
use futures_util::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

use super::{AppContext, BodyBudget, CallbackError};
use crate::{
    callback::{CallbackQuery, Command, SdkAppId, parse_body, verify_signature},
    ingest::Accepted,
    store::RejectedCallback,
};

/// Tencent's success answer (docs/http.md), the same bytes every time (as serde_json wrote
/// them before: keys in byte order).
const OK_ANSWER: &str = r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#;

/// How long the whole body may take to arrive, at most.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the first bytes of a body may take after the head, and the rate the rest must keep
/// (docs/limits.md#the-http-server): Tencent sends a body at once, and a body that trickles
/// holds a connection and what it has sent so far, so it is cut well before the 5 s.
const BODY_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
const BODY_MIN_BYTES_PER_SEC: u64 = 256 * 1024;
/// How long a body may wait for room in the in-flight budget before it is refused (503
/// `50310`): a short wait rides out a burst, a long one would only hold the connection.
const BODY_BYTES_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn receive(
    req: HttpRequest,
    mut payload: web::Payload,
    ctx: web::Data<AppContext>,
) -> Result<HttpResponse, CallbackError> {
    let query = CallbackQuery::parse(req.query_string());
    let mut command_label = query
        .command
        .as_deref()
        .map_or("unknown", |c| Command::parse(c).metric_label());
    let result = process(&req, &mut payload, &ctx, &query, &mut command_label).await;
    let outcome = match &result {
        Ok(Accepted::Stored { .. }) => "stored",
        Ok(Accepted::Duplicate) => "duplicate",
        Ok(Accepted::Journaled) => "journaled",
        Err(error) => error.outcome(),
    };
    ctx.metrics
        .callbacks
        .with_label_values(&[command_label, outcome])
        .inc();
    match result {
        Ok(stored) => {
            tracing::debug!(command = command_label, outcome = ?stored, "callback accepted");
            Ok(HttpResponse::Ok()
                .content_type(header::ContentType::json())
                .body(OK_ANSWER))
        }
        Err(error) => {
            if matches!(error, CallbackError::NotDurable(_)) {
                tracing::error!(error = ?error, code = error.code(), "callback not stored");
            } else {
                tracing::warn!(error = ?error, code = error.code(), "callback refused");
            }
            if error.body_unread() {
                return Ok(close_after(error.error_response(), payload));
            }
            Err(error)
        }
    }
}

/// An answer after which the connection closes, though the request body was not read to its
/// end. The request's payload must stay alive until the answer is sent: once it is dropped,
/// actix keeps the connection to drain a chunked body, with no timeout (a sender could hold
/// the connection for ever by sending nothing more).
fn close_after(response: HttpResponse, payload: web::Payload) -> HttpResponse {
    response
        .map_body(|_, body| HoldPayload {
            body,
            _payload: payload,
        })
        .map_into_boxed_body()
}

struct HoldPayload {
    body: BoxBody,
    _payload: web::Payload,
}

impl MessageBody for HoldPayload {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

async fn process(
    req: &HttpRequest,
    payload: &mut web::Payload,
    ctx: &AppContext,
    query: &CallbackQuery,
    command_label: &mut &'static str,
) -> Result<Accepted, CallbackError> {
    let received_at = chrono::Utc::now();
    let config = &ctx.config;
    // Who is asking comes first, from the query string alone: a stranger (a wrong app id, a bad
    // signature) is answered before a byte of its body is read or reserved.
    let app = query
        .sdk_app_id
        .as_deref()
        .ok_or(CallbackError::AppIdMissing)?;
    let app = SdkAppId::parse(app)
        .filter(|id| config.is_our_app(*id))
        .ok_or(CallbackError::AppIdUnknown)?;
    if let Some(token) = &config.callback_token {
        let now = received_at.timestamp();
        verify_signature(
            token.expose(),
            query.sign.as_deref(),
            query.request_time.as_deref(),
            now,
            config.signature_max_skew,
        )
        .map_err(CallbackError::Signature)?;
    }
    // The permits are held until the callback is answered: the body and its stored copy live
    // until then.
    let (body, _permits) = read_body(req, payload, config.max_body_bytes, &ctx.body_bytes).await?;
    let max_future = Some(config.event_time_max_future);
    let parsed = if body.len() <= BodyBudget::SMALL_BODY {
        parse_body(&body, query, app, received_at, max_future)
    } else {
        // A large body's parse takes milliseconds of CPU: on a thread of its own, so the
        // worker goes on serving its other connections meanwhile.
        let _lane = ctx
            .body_bytes
            .parsing
            .acquire()
            .await
            .expect("the parsing lane is never closed");
        let (body, query) = (body.clone(), query.clone());
        tokio::task::spawn_blocking(move || parse_body(&body, &query, app, received_at, max_future))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    };
    let callback = match parsed {
        Ok(callback) => callback,
        Err(rejection) => {
            let error = CallbackError::Invalid(rejection);
            keep_rejected(ctx, req, app, query, &body, &error).await;
            return Err(error);
        }
    };
    *command_label = callback.command.metric_label();
    ctx.ingest
        .accept(callback, req.query_string(), &body, received_at)
        .await
        .map_err(CallbackError::NotDurable)
}

/// Reads the body, refusing more than `limit` bytes without buffering them, and taking its
/// bytes from the in-flight budget as they arrive, never for a length only declared: a sender
/// holds what it has sent, for as long as it keeps [`BODY_MIN_BYTES_PER_SEC`].
async fn read_body(
    req: &HttpRequest,
    payload: &mut web::Payload,
    limit: usize,
    budgets: &BodyBudget,
) -> Result<(web::Bytes, Held), CallbackError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(CallbackError::TooLarge(limit));
    }
    let started = tokio::time::Instant::now();
    let read = async {
        let mut held = Held::default();
        let mut body = web::BytesMut::new();
        loop {
            let next =
                tokio::time::timeout_at(arrival_deadline(started, body.len()), payload.next());
            let Some(chunk) = next.await.map_err(|_| CallbackError::BodyTimeout)? else {
                break;
            };
            let chunk = chunk.map_err(CallbackError::BodyRead)?;
            let total = body.len() + chunk.len();
            if total > limit {
                return Err(CallbackError::TooLarge(limit));
            }
            // A small body that is all here (every usual callback) may draw on the reserve:
            // it is handled at once, so no sender can hold the reserve by sending slowly.
            let complete_small = declared == Some(total) && total <= BodyBudget::SMALL_BODY;
            held.grow(budgets, total, complete_small).await?;
            body.extend_from_slice(&chunk);
        }
        Ok((body.freeze(), held))
    };
    tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .unwrap_or(Err(CallbackError::BodyTimeout))
}

/// When the bytes after the first `received` must have arrived: [`BODY_GRACE`], then
/// [`BODY_MIN_BYTES_PER_SEC`], within [`BODY_READ_TIMEOUT`] in all.
fn arrival_deadline(started: tokio::time::Instant, received: usize) -> tokio::time::Instant {
    let at_rate =
        std::time::Duration::from_secs_f64(received as f64 / BODY_MIN_BYTES_PER_SEC as f64);
    started + (BODY_GRACE + at_rate).min(BODY_READ_TIMEOUT)
}

/// The bytes a body holds of the in-flight budget, from the shared bound and the reserve.
#[derive(Default)]
struct Held {
    permits: Vec<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Held {
    /// Grows to `total` bytes: from the shared bound if they are free now; else, for a small
    /// body that has arrived in full, from the reserve; else from the shared bound after a
    /// wait of at most [`BODY_BYTES_WAIT`].
    async fn grow(
        &mut self,
        budgets: &BodyBudget,
        total: usize,
        complete_small: bool,
    ) -> Result<(), CallbackError> {
        let Some(more) = total.checked_sub(self.bytes).filter(|n| *n > 0) else {
            return Ok(());
        };
        let n = u32::try_from(more).map_err(|_| CallbackError::BodiesInFlight)?;
        let taken = match budgets.all.clone().try_acquire_many_owned(n) {
            Ok(taken) => taken,
            Err(_) => {
                let from = if complete_small {
                    &budgets.small
                } else {
                    &budgets.all
                };
                tokio::time::timeout(BODY_BYTES_WAIT, from.clone().acquire_many_owned(n))
                    .await
                    .map_err(|_| CallbackError::BodiesInFlight)?
                    .expect("the body budget is never closed")
            }
        };
        self.permits.push(taken);
        self.bytes = total;
        Ok(())
    }
}

/// Keeps an authenticated but invalid callback for an operator. Best effort: the answer is
/// 400 either way, and a failure here is logged.
async fn keep_rejected(
    ctx: &AppContext,
    req: &HttpRequest,
    app: SdkAppId,
    query: &CallbackQuery,
    body: &[u8],
    error: &CallbackError,
) {
    let info = error.to_string();
    let rejected = RejectedCallback {
        sdk_app_id: Some(app.get()),
        callback_command: query.command.as_deref(),
        error_code: error.code() as i32,
        error_info: &info,
        query: req.query_string(),
        body,
    };
    if let Err(e) = ctx.ingest.keep_rejected(&rejected).await {
        tracing::error!(error = ?e, "could not keep a rejected callback");
    }
}
