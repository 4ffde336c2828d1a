//! The console (docs/console.md): a read-only page served by roomsync itself, enabled by
//! `API_TOKEN`. The token is entered once in a form; the session is then a signed cookie with
//! an expiry (`HttpOnly`, `SameSite=Strict`, `Secure` over TLS). Its assets are in the binary,
//! under a Content-Security-Policy that allows only this origin, and the page writes every value
//! as text. Live updates come from the process's one feed reader as server-sent events.

use std::time::{Duration, Instant};

use actix_web::{
    HttpRequest, HttpResponse,
    cookie::{Cookie, SameSite, time},
    http::header,
    web,
};
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

mod events;

use super::AppContext;
use crate::{
    callback::{Id, SdkAppId},
    feed::{Hub, ReadError},
    store::{changes, console},
    telemetry::RECONCILE_ERROR_CODES,
};

/// The session cookie's name and lifetime.
const COOKIE: &str = "roomsync_console";
const SESSION: Duration = Duration::from_secs(12 * 3600);

/// Only this origin, nothing inline, no frames (docs/console.md#safety).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const PAGE: &str = include_str!("assets/console.html");
const LOGIN: &str = include_str!("assets/login.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/console").route(web::get().to(page)))
        .service(web::resource("/console/login").route(web::post().to(login)))
        .service(web::resource("/console/logout").route(web::post().to(logout)))
        .service(web::resource("/console/console.js").route(web::get().to(script)))
        .service(web::resource("/console/console.css").route(web::get().to(style)))
        .service(web::resource("/console/api/overview").route(web::get().to(overview)))
        .service(web::resource("/console/api/rooms").route(web::get().to(rooms)))
        .service(web::resource("/console/api/room").route(web::get().to(room)))
        .service(web::resource("/console/api/refusal/{id}").route(web::get().to(refusal)))
        .service(web::resource("/console/events").route(web::get().to(events::events)));
}

/// Headers every answer of the console carries.
fn guarded(mut response: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    response
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    response
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound().finish()
}

/// The key that signs sessions: derived from the token, so a new token ends every session.
fn session_key(token: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"roomsync console session\0");
    hash.update(token.as_bytes());
    hash.finalize().into()
}

fn sign(token: &str, expires: i64) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&session_key(token))
        .expect("HMAC takes any key length");
    mac.update(expires.to_string().as_bytes());
    format!("v1.{expires}.{}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether a session cookie's value is ours and not expired.
fn session_valid(token: &str, value: &str, now: i64) -> bool {
    let mut parts = value.splitn(3, '.');
    let (Some("v1"), Some(expires), Some(given)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(expires) = expires.parse::<i64>() else {
        return false;
    };
    let expected = sign(token, expires);
    expires > now && bool::from(expected.as_bytes().ct_eq(value.as_bytes())) && !given.is_empty()
}

/// Whether the request is signed in; `None` when the console is off.
fn signed_in(ctx: &AppContext, req: &HttpRequest) -> Option<bool> {
    let token = ctx.config.api_token.as_ref()?;
    ctx.feed.as_ref()?;
    Some(
        req.cookie(COOKIE)
            .is_some_and(|c| session_valid(token.expose(), c.value(), Utc::now().timestamp())),
    )
}

/// Whether the browser reached us over TLS (directly, or through a proxy that says so).
fn over_tls(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

async fn page(ctx: web::Data<AppContext>, req: HttpRequest) -> HttpResponse {
    match signed_in(&ctx, &req) {
        None => not_found(),
        Some(true) => guarded(HttpResponse::Ok())
            .content_type("text/html; charset=utf-8")
            .body(PAGE),
        Some(false) => login_page(HttpResponse::Ok(), ""),
    }
}

fn login_page(status: actix_web::HttpResponseBuilder, message: &str) -> HttpResponse {
    // The message is one of ours, never input; escaped all the same.
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    guarded(status)
        .content_type("text/html; charset=utf-8")
        .body(LOGIN.replace("{message}", &escaped))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    let (Some(token), Some(_)) = (ctx.config.api_token.as_ref(), ctx.feed.as_ref()) else {
        return not_found();
    };
    let expected = Sha256::digest(token.expose().as_bytes());
    let given = Sha256::digest(form.token.trim().as_bytes());
    if !bool::from(expected.ct_eq(&given)) {
        tracing::info!("console: a sign-in with a wrong token");
        return login_page(HttpResponse::Unauthorized(), "That is not the token.");
    }
    let expires = Utc::now().timestamp() + SESSION.as_secs() as i64;
    let cookie = Cookie::build(COOKIE, sign(token.expose(), expires))
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(over_tls(&req))
        .max_age(time::Duration::seconds(SESSION.as_secs() as i64))
        .finish();
    guarded(HttpResponse::SeeOther())
        .cookie(cookie)
        .insert_header((header::LOCATION, "/console"))
        .finish()
}

async fn logout(ctx: web::Data<AppContext>, req: HttpRequest) -> HttpResponse {
    if signed_in(&ctx, &req).is_none() {
        return not_found();
    }
    let mut cookie = Cookie::build(COOKIE, "")
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(over_tls(&req))
        .finish();
    cookie.make_removal();
    guarded(HttpResponse::SeeOther())
        .cookie(cookie)
        .insert_header((header::LOCATION, "/console"))
        .finish()
}

async fn script(ctx: web::Data<AppContext>, req: HttpRequest) -> HttpResponse {
    match signed_in(&ctx, &req) {
        None => not_found(),
        Some(_) => guarded(HttpResponse::Ok())
            .content_type("text/javascript; charset=utf-8")
            .body(SCRIPT),
    }
}

async fn style(ctx: web::Data<AppContext>, req: HttpRequest) -> HttpResponse {
    match signed_in(&ctx, &req) {
        None => not_found(),
        Some(_) => guarded(HttpResponse::Ok())
            .content_type("text/css; charset=utf-8")
            .body(STYLE),
    }
}

/// The JSON routes' refusal: 404 when the console is off, 401 without a session; `None` when
/// the request may go on.
fn refused(ctx: &AppContext, req: &HttpRequest) -> Option<HttpResponse> {
    match signed_in(ctx, req) {
        None => Some(not_found()),
        Some(false) => {
            Some(guarded(HttpResponse::Unauthorized()).json(json!({"error": "sign in"})))
        }
        Some(true) => None,
    }
}

fn json_ok(value: serde_json::Value) -> HttpResponse {
    guarded(HttpResponse::Ok()).json(value)
}

fn unavailable(error: impl Into<ReadError>) -> HttpResponse {
    let error = error.into();
    let busy = matches!(error, ReadError::Busy);
    if !busy {
        tracing::warn!(error = %error, "console: the database could not answer");
    }
    not_read(busy)
}

/// 503: the readers' turns were all taken (`busy`), or the database could not answer.
fn not_read(busy: bool) -> HttpResponse {
    let error = if busy {
        "too many readers; try again"
    } else {
        "the database could not answer"
    };
    guarded(HttpResponse::ServiceUnavailable()).json(json!({ "error": error }))
}

/// The feed's reader: there whenever the console is (both need `API_TOKEN`). Its turns bound
/// the console's queries with the read API's (feed::Hub::turn).
fn hub(ctx: &AppContext) -> &Hub {
    ctx.feed.as_ref().expect("signed in: the console is on")
}

/// One read's answer, shared by every open console for a while. Every open page reads the
/// overview again every 10 s, and a hundred pages opened together read the live rooms at once:
/// one read serves them all, and those asking while it is being read wait for that read instead
/// of making their own (docs/console.md#how-it-stays-light).
/// A shared room list is still a snapshot with its cursor: the page follows the feed from there.
/// A read that fails answers every console that waited for it (503, `busy` or not), so a queue
/// of consoles never waits for one failed read after another.
#[derive(Default)]
pub struct Shared(tokio::sync::Mutex<Option<(Instant, Result<web::Bytes, bool>)>>);

impl Shared {
    async fn answer<R>(&self, fresh: Duration, read: R) -> HttpResponse
    where
        R: Future<Output = Result<serde_json::Value, ReadError>>,
    {
        let asked = Instant::now();
        let mut newest = self.0.lock().await;
        match &*newest {
            Some((at, Ok(body))) if at.elapsed() < fresh => return json_body(body.clone()),
            Some((at, Err(busy))) if *at >= asked => return not_read(*busy),
            _ => {}
        }
        match read.await {
            Ok(value) => {
                let body = web::Bytes::from(value.to_string());
                *newest = Some((Instant::now(), Ok(body.clone())));
                json_body(body)
            }
            Err(error) => {
                *newest = Some((Instant::now(), Err(matches!(error, ReadError::Busy))));
                unavailable(error)
            }
        }
    }
}

/// What the consoles share: the overview and the live rooms.
#[derive(Default)]
pub struct SharedReads {
    overview: Shared,
    rooms: Shared,
}

async fn overview(ctx: web::Data<AppContext>, req: HttpRequest) -> HttpResponse {
    if let Some(refusal) = refused(&ctx, &req) {
        return refusal;
    }
    let fresh = ctx.config.timings.console_overview_fresh;
    ctx.console
        .overview
        .answer(fresh, read_overview(&ctx))
        .await
}

fn json_body(body: web::Bytes) -> HttpResponse {
    guarded(HttpResponse::Ok())
        .content_type(header::ContentType::json())
        .body(body)
}

async fn read_overview(ctx: &AppContext) -> Result<serde_json::Value, ReadError> {
    let (_, database) = super::health::readiness(ctx).await;
    // One after another, in one turn: a console holds one connection at most.
    let (arrivals, refusals, corrections) = hub(ctx)
        .query(|pool| async move {
            Ok((
                console::arrivals(&pool).await?,
                console::refusals(&pool).await?,
                console::corrections(&pool).await?,
            ))
        })
        .await?;
    let rest_errors: u64 = RECONCILE_ERROR_CODES
        .iter()
        .map(|code| {
            ctx.metrics
                .reconcile_rest_errors
                .with_label_values(&[*code])
                .get()
        })
        .sum();
    Ok(json!({
        "database": database,
        "journal_depth": ctx.ingest.journal_depth(),
        "journal_parked": ctx.ingest.journal_parked(),
        "signed_callbacks": ctx.config.callback_token.is_some(),
        "apps": ctx.config.sdk_app_ids.iter().map(|a| a.get()).collect::<Vec<_>>(),
        "drift_repair": ctx.config.drift_repair.is_some(),
        "drift_rest_errors": rest_errors,
        "arrivals": arrivals,
        "refusals": refusals,
        "corrections": corrections,
        "tencent_check": ctx.tencent_setup.as_ref().map(|watch| match watch.latest() {
            Some(checked) => json!({
                "checked_at": checked.at,
                "status": checked.status,
                "lines": checked.lines,
            }),
            None => json!({"status": "checking"}),
        }),
    }))
}

async fn rooms(ctx: web::Data<AppContext>, req: HttpRequest) -> HttpResponse {
    if let Some(refusal) = refused(&ctx, &req) {
        return refusal;
    }
    let hub = hub(&ctx);
    let read = async {
        let (rooms, cursor) = hub
            .query(|pool| async move { console::live_rooms(&pool).await })
            .await?;
        Ok(json!({"rooms": rooms, "cursor": cursor}))
    };
    let fresh = ctx.config.timings.console_rooms_fresh;
    ctx.console.rooms.answer(fresh, read).await
}

#[derive(Deserialize)]
struct RoomQuery {
    app: String,
    room: String,
}

async fn room(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    query: web::Query<RoomQuery>,
) -> HttpResponse {
    if let Some(refusal) = refused(&ctx, &req) {
        return refusal;
    }
    let (Some(app), Ok(room)) = (SdkAppId::parse(&query.app), Id::parse(&query.room)) else {
        return guarded(HttpResponse::BadRequest()).json(json!({"error": "no such room"}));
    };
    let hub = hub(&ctx);
    let read = async {
        // The roster takes a turn of its own.
        let roster = hub.roster(app.get(), room.as_str()).await?;
        let (app, room) = (app.get(), room.as_str().to_owned());
        let (sessions, (info, history, seats)) = hub
            .query(|pool| async move {
                Ok((
                    changes::sessions(&pool, app, &room, 10).await?,
                    console::room(&pool, app, &room).await?,
                ))
            })
            .await?;
        Ok::<_, ReadError>((roster, sessions, info, history, seats))
    };
    match read.await {
        Ok((roster, sessions, info, history, seats)) => json_ok(json!({
            "sdk_app_id": app.get(),
            "room_id": room.as_str(),
            "info": info,
            "members": roster.members,
            "cursor": roster.cursor,
            "sessions": sessions,
            "history": history,
            "seats": seats,
        })),
        Err(error) => unavailable(error),
    }
}

async fn refusal(ctx: web::Data<AppContext>, req: HttpRequest, id: web::Path<i64>) -> HttpResponse {
    if let Some(refusal) = refused(&ctx, &req) {
        return refusal;
    }
    let id = id.into_inner();
    let read = hub(&ctx).query(move |pool| async move { console::refusal_body(&pool, id).await });
    match read.await {
        Ok(Some(body)) => json_ok(json!({"body": body})),
        Ok(None) => guarded(HttpResponse::NotFound()).json(json!({"error": "no such refusal"})),
        Err(error) => unavailable(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_ours_and_unexpired() {
        let token = "a-token-of-enough-length";
        let value = sign(token, 2_000);
        assert!(session_valid(token, &value, 1_999));
        assert!(!session_valid(token, &value, 2_000), "expired");
        assert!(
            !session_valid("another-token-of-length", &value, 1_000),
            "another key"
        );
        let later = value.replacen("2000", "9999", 1);
        assert!(!session_valid(token, &later, 1_000), "expiry changed");
        assert!(!session_valid(token, "v1.2000.", 1_000));
        assert!(!session_valid(token, "", 1_000));
    }
}
