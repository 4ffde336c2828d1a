//! The console's event stream: server-sent events of the change feed, from the process's one
//! feed reader (docs/console.md#live).

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::stream;
use serde_json::json;
use tokio::time::Instant;

use super::{guarded, refused};
use crate::{feed::ReadError, http::AppContext, store::changes::FeedError};

/// How long one event stream waits for a change before a keep-alive comment.
const STREAM_WAIT: Duration = Duration::from_secs(15);
/// At most this often a stream is written to: what a burst changes goes in one write, so a
/// hundred open consoles cost a few writes a second each, whatever the callbacks' rate (the
/// page still moves within a second).
const STREAM_EVERY: Duration = Duration::from_millis(250);
/// Changes in one write at most: 20,000 a second for each console, above any rate here.
const STREAM_MAX: usize = 5_000;

/// Streams opened so far: each gets its own phase on the STREAM_EVERY grid.
static OPENED: AtomicU32 = AtomicU32::new(0);

/// Where this stream's writes fall within STREAM_EVERY. Consoles opened together would
/// otherwise write together, every 250 ms, and each such burst would delay the callbacks
/// that arrive during it; the golden ratio spreads any number of streams evenly.
fn phase() -> Duration {
    let n = OPENED.fetch_add(1, Ordering::Relaxed);
    STREAM_EVERY.mul_f64((f64::from(n) * 0.618_033_988_75).fract())
}

/// The first point of the grid (`grid` + k × STREAM_EVERY) after `now`: a stream that waited
/// long for a change keeps its phase instead of writing again at once.
fn next_slot(grid: Instant, now: Instant) -> Instant {
    if now < grid {
        return grid;
    }
    let every = STREAM_EVERY.as_nanos();
    let past = now.saturating_duration_since(grid).as_nanos();
    let steps = u64::try_from(past / every + 1).unwrap_or(u64::MAX / 2);
    grid + Duration::from_nanos(steps.saturating_mul(STREAM_EVERY.as_nanos() as u64))
}

/// Server-sent events: each change after `Last-Event-ID` (or `?after=`), from the process's
/// feed reader. A browser that reconnects sends the last id it saw: nothing is missed.
pub(super) async fn events(ctx: web::Data<AppContext>, req: HttpRequest) -> HttpResponse {
    if let Some(refusal) = refused(&ctx, &req) {
        return refusal;
    }
    let hub = ctx.feed.clone().expect("signed in: the console is on");
    let from_header = req
        .headers()
        .get("Last-Event-ID")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let from_query = req.query_string().split('&').find_map(|pair| {
        pair.strip_prefix("after=")
            .and_then(|v| v.parse::<i64>().ok())
    });
    let Some(after) = from_header.or(from_query).filter(|a| *a >= 0) else {
        return guarded(HttpResponse::BadRequest()).json(json!({"error": "after: a position"}));
    };
    let grid = Instant::now() + phase();
    let body = stream::unfold((hub, after, true), move |(hub, after, first)| async move {
        if after < 0 {
            return None;
        }
        if !first {
            tokio::time::sleep_until(next_slot(grid, Instant::now())).await;
        }
        let mut text = String::new();
        if first {
            // Reconnect after 2 s when the stream ends.
            text.push_str("retry: 2000\n\n");
        }
        let next = match hub.read(after, STREAM_MAX, STREAM_WAIT).await {
            Ok(page) => {
                text.reserve(page.changes.iter().map(|c| c.event().len()).sum());
                for change in &page.changes {
                    text.push_str(change.event());
                }
                if page.changes.is_empty() {
                    text.push_str(": waiting\n\n");
                }
                page.next
            }
            // The position is older than what the feed keeps: the page starts again from a
            // snapshot; the stream ends after saying so.
            Err(ReadError::Feed(FeedError::Gone { .. })) => {
                text.push_str("event: gone\ndata: {}\n\n");
                -1
            }
            // Too many waiting, or the database down: the browser reconnects.
            Err(error) => {
                tracing::debug!(error = %error, "console: event stream ends");
                return None;
            }
        };
        Some((
            Ok::<_, actix_web::Error>(web::Bytes::from(text)),
            (hub, next, false),
        ))
    });
    guarded(HttpResponse::Ok())
        .content_type("text/event-stream")
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_write_on_their_own_phase() {
        let phases: Vec<Duration> = (0..100).map(|_| phase()).collect();
        assert!(phases.iter().all(|p| *p < STREAM_EVERY));
        // Spread: no tenth of the period holds more than a fifth of the streams.
        let tenth = STREAM_EVERY / 10;
        for k in 0..10 {
            let inside = phases
                .iter()
                .filter(|p| **p >= tenth * k && **p < tenth * (k + 1))
                .count();
            assert!(inside <= 20, "{k}: {inside}");
        }
    }

    #[test]
    fn the_next_write_keeps_the_grid() {
        let grid = Instant::now();
        assert_eq!(next_slot(grid, grid), grid + STREAM_EVERY);
        let late = grid + STREAM_EVERY * 7 + Duration::from_millis(1);
        assert_eq!(next_slot(grid, late), grid + STREAM_EVERY * 8);
        // Before the grid's first point (a stream's own phase): that point.
        let before = grid.checked_sub(Duration::from_millis(100)).unwrap();
        assert_eq!(next_slot(before, before), before + STREAM_EVERY);
        assert_eq!(next_slot(grid, before), grid);
    }
}
