//! The read API (docs/feed.md#http, docs/http.md#read-api): the change feed, a room's roster
//! with its cursor, a room's sessions. Enabled by `API_TOKEN`; without it every route answers
//! 404, as if it did not exist.

use std::time::Duration;

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    http::{StatusCode, header},
    web,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppContext;
use crate::{
    callback::{Id, SdkAppId},
    codes,
    feed::{Hub, ReadError},
    store::changes::{self, FeedError},
};

/// Most changes in one answer.
pub const CHANGES_MAX_LIMIT: u32 = 1000;
const CHANGES_DEFAULT_LIMIT: u32 = 100;
/// Longest long poll, in seconds.
pub const WAIT_MAX_SECS: u32 = 30;
/// Most sessions in one answer.
const SESSIONS_MAX_LIMIT: u32 = 100;
const SESSIONS_DEFAULT_LIMIT: u32 = 20;

/// The one error type of the read API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token is configured: the route does not exist.
    #[error("not found")]
    Disabled,
    #[error("an Authorization: Bearer header is required")]
    TokenMissing,
    #[error("the bearer token is wrong")]
    TokenWrong,
    #[error("`after` must be a non-negative integer")]
    After,
    #[error("`limit` must be an integer from 1 to {0}")]
    Limit(u32),
    #[error("`wait` must be an integer number of seconds from 0 to {WAIT_MAX_SECS}")]
    Wait,
    #[error("`{0}` is not a query parameter of this route")]
    Unknown(String),
    #[error("position {after} is past the newest change {head}: take a new snapshot")]
    Ahead { after: i64, head: i64 },
    #[error("the room's app id or id is not one roomsync could hold")]
    Room,
    #[error("the app is not one of this service's apps")]
    App,
    #[error("position older than the oldest kept change {oldest}: take a new snapshot")]
    Gone { oldest: i64 },
    #[error("too many readers are waiting; try again")]
    Busy,
    #[error("the database could not answer; try again")]
    Unavailable(#[source] sqlx::Error),
}

impl ApiError {
    pub fn code(&self) -> u32 {
        match self {
            Self::Disabled => 0,
            Self::TokenMissing => codes::TOKEN_MISSING,
            Self::TokenWrong => codes::TOKEN_WRONG,
            Self::After | Self::Unknown(_) => codes::AFTER_INVALID,
            Self::Limit(_) => codes::LIMIT_INVALID,
            Self::Wait => codes::WAIT_INVALID,
            Self::Ahead { .. } => codes::AFTER_AHEAD,
            Self::Room => codes::ROOM_INVALID,
            Self::App => codes::APP_NOT_SERVED,
            Self::Gone { .. } => codes::CHANGES_GONE,
            Self::Busy => codes::FEED_BUSY,
            Self::Unavailable(_) => codes::FEED_UNAVAILABLE,
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Feed(error) => error.into(),
            ReadError::Ahead { after, head } => Self::Ahead { after, head },
            ReadError::Busy => Self::Busy,
        }
    }
}

impl From<FeedError> for ApiError {
    fn from(error: FeedError) -> Self {
        match error {
            FeedError::Gone { oldest } => Self::Gone { oldest },
            FeedError::Database(error) => Self::Unavailable(error),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::Unavailable(error)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Disabled | Self::App => StatusCode::NOT_FOUND,
            Self::TokenMissing | Self::TokenWrong => StatusCode::UNAUTHORIZED,
            Self::Gone { .. } => StatusCode::GONE,
            Self::Ahead { .. } => StatusCode::CONFLICT,
            Self::Busy | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            // Exactly what an unknown route answers.
            Self::Disabled => return response.finish(),
            Self::TokenMissing | Self::TokenWrong => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::Busy | Self::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        if let Self::Unavailable(error) = self {
            tracing::warn!(error = %error, "read API: the database could not answer");
        }
        let mut body = json!({"code": self.code(), "error": self.to_string()});
        if let Self::Gone { oldest } = self {
            body["oldest"] = json!(oldest);
        }
        response.json(body)
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/changes").route(web::get().to(changes)))
        .service(
            web::resource("/v1/rooms/{sdk_app_id}/{room_id}/members").route(web::get().to(members)),
        )
        .service(
            web::resource("/v1/rooms/{sdk_app_id}/{room_id}/sessions")
                .route(web::get().to(sessions)),
        );
}

/// The feed's reader when the API is enabled and the request carries the token.
fn authorize<'a>(ctx: &'a AppContext, req: &HttpRequest) -> Result<&'a Hub, ApiError> {
    let (Some(token), Some(hub)) = (ctx.config.api_token.as_ref(), ctx.feed.as_ref()) else {
        return Err(ApiError::Disabled);
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .ok_or(ApiError::TokenMissing)?;
    // Digests of equal length, compared in constant time: neither the token's bytes nor its
    // length show in the timing.
    let expected = Sha256::digest(token.expose().as_bytes());
    let given = Sha256::digest(given.trim().as_bytes());
    if bool::from(expected.ct_eq(&given)) {
        Ok(hub)
    } else {
        Err(ApiError::TokenWrong)
    }
}

/// The query's parameters by name; one not in `known` is an error, as is one given twice.
fn query<'q>(
    req: &'q HttpRequest,
    known: &[&'static str],
) -> Result<Vec<(&'static str, &'q str)>, ApiError> {
    let mut found: Vec<(&'static str, &'q str)> = Vec::new();
    for pair in req.query_string().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(name) = known.iter().find(|k| **k == name) else {
            let shown: String = name.chars().take(64).collect();
            return Err(ApiError::Unknown(shown));
        };
        if found.iter().any(|(n, _)| n == name) {
            return Err(ApiError::Unknown(format!("{name} (twice)")));
        }
        found.push((name, value));
    }
    Ok(found)
}

fn param<'q>(params: &[(&'static str, &'q str)], name: &str) -> Option<&'q str> {
    params.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// A bounded unsigned integer in plain digits (no sign, no spaces, no exponent).
fn bounded(raw: Option<&str>, default: u32, range: std::ops::RangeInclusive<u32>) -> Option<u32> {
    let Some(raw) = raw else {
        return Some(default);
    };
    if raw.is_empty() || raw.len() > 10 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok().filter(|n| range.contains(n))
}

async fn changes(ctx: web::Data<AppContext>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let hub = authorize(&ctx, &req)?;
    let params = query(&req, &["after", "limit", "wait"])?;
    let after = match param(&params, "after") {
        None => 0,
        Some(raw)
            if !raw.is_empty() && raw.len() <= 19 && raw.bytes().all(|b| b.is_ascii_digit()) =>
        {
            raw.parse::<i64>().map_err(|_| ApiError::After)?
        }
        Some(_) => return Err(ApiError::After),
    };
    let limit = bounded(
        param(&params, "limit"),
        CHANGES_DEFAULT_LIMIT,
        1..=CHANGES_MAX_LIMIT,
    )
    .ok_or(ApiError::Limit(CHANGES_MAX_LIMIT))?;
    let wait = bounded(param(&params, "wait"), 0, 0..=WAIT_MAX_SECS).ok_or(ApiError::Wait)?;
    let page = hub
        .read(after, limit as usize, Duration::from_secs(wait.into()))
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(page.to_json()))
}

/// The room of the path: an app this service serves, an id roomsync could hold.
fn room_of(ctx: &AppContext, req: &HttpRequest) -> Result<(i64, String), ApiError> {
    let app = req.match_info().get("sdk_app_id").unwrap_or_default();
    let room = req.match_info().get("room_id").unwrap_or_default();
    let app = SdkAppId::parse(app).ok_or(ApiError::Room)?;
    let room = Id::parse(room).map_err(|_| ApiError::Room)?;
    if !ctx.config.sdk_app_ids.contains(&app) {
        return Err(ApiError::App);
    }
    Ok((app.get(), room.as_str().to_owned()))
}

async fn members(ctx: web::Data<AppContext>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let hub = authorize(&ctx, &req)?;
    query(&req, &[])?;
    let (app, room) = room_of(&ctx, &req)?;
    let roster = hub.roster(app, &room).await?;
    Ok(HttpResponse::Ok().json(roster))
}

async fn sessions(ctx: web::Data<AppContext>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let hub = authorize(&ctx, &req)?;
    let params = query(&req, &["limit"])?;
    let limit = bounded(
        param(&params, "limit"),
        SESSIONS_DEFAULT_LIMIT,
        1..=SESSIONS_MAX_LIMIT,
    )
    .ok_or(ApiError::Limit(SESSIONS_MAX_LIMIT))?;
    let (app, room) = room_of(&ctx, &req)?;
    let sessions = hub
        .query(|pool| async move { changes::sessions(&pool, app, &room, limit.into()).await })
        .await?;
    Ok(HttpResponse::Ok().json(json!({"sessions": sessions})))
}
