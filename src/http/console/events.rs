//! The console's event stream: server-sent events of the change feed, from the process's one
//! feed reader (docs/console.md#live).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::stream;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::{guarded, refused};
use crate::{
    callback::{Id, SdkAppId},
    codes,
    feed::{Page, ReadError},
    http::AppContext,
    store::changes::FeedError,
};

/// How long one event stream waits for a change before a keep-alive comment.
const STREAM_WAIT: Duration = Duration::from_secs(15);
/// At most this often a stream is written to: what a burst changes goes in one write, so a
/// hundred open consoles cost a few writes a second each, whatever the callbacks' rate (the
/// page still moves within a second).
const STREAM_EVERY: Duration = Duration::from_millis(500);
/// Changes in one write at most: 20,000 a second for each console, above any rate here.
const STREAM_MAX: usize = 5_000;

/// Streams opened so far: each gets its own phase on the STREAM_EVERY grid.
static OPENED: AtomicU32 = AtomicU32::new(0);

/// Where this stream's writes fall within STREAM_EVERY. Consoles opened together would
/// otherwise write together, every STREAM_EVERY, and each such burst would delay the callbacks
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

/// `?after=` (or `Last-Event-ID`), and the room the console has open, if any.
#[derive(Deserialize)]
struct Params {
    after: Option<String>,
    app: Option<String>,
    room: Option<String>,
}

/// Server-sent events after `Last-Event-ID` (or `?after=`), from the process's feed reader.
/// Each write tells, as one `rooms` event, how the member count of every room that changed
/// moved, and, as `change` events, the open room's changes whole: a console shows counts for
/// a thousand rooms and one room's members, so it gets no more than that, and a hundred
/// consoles cost roomsync little more than one. Every event's id is a feed position: a
/// browser that reconnects sends the last one it saw, and nothing is missed or told twice.
pub(super) async fn events(ctx: web::Data<AppContext>, req: HttpRequest) -> HttpResponse {
    if let Some(refusal) = refused(&ctx, &req) {
        return refusal;
    }
    let hub = ctx.feed.clone().expect("signed in: the console is on");
    // The read API's codes (docs/http.md): the same mistakes, the same answers.
    let bad = |code: u32, error: &str| {
        guarded(HttpResponse::BadRequest()).json(json!({ "code": code, "error": error }))
    };
    let Ok(params) = web::Query::<Params>::from_query(req.query_string()) else {
        return bad(codes::AFTER_INVALID, "after, app, room: each at most once");
    };
    let from_header = req
        .headers()
        .get("Last-Event-ID")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(after) = from_header
        .or(params.after.clone())
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|a| *a >= 0)
    else {
        return bad(codes::AFTER_INVALID, "after: a position");
    };
    let open = match (&params.app, &params.room) {
        (None, None) => None,
        (Some(app), Some(room)) => match (SdkAppId::parse(app), Id::parse(room)) {
            (Some(app), Ok(room)) => Some((app.get(), Arc::<str>::from(room.as_str()))),
            _ => return bad(codes::ROOM_INVALID, "no such room"),
        },
        _ => return bad(codes::ROOM_INVALID, "app and room go together"),
    };
    let grid = Instant::now() + phase();
    let state = (hub, after, true, open);
    let body = stream::unfold(state, move |(hub, after, first, open)| async move {
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
                tell(
                    &page,
                    open.as_ref().map(|(app, room)| (*app, &**room)),
                    &mut text,
                );
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
            (hub, next, false, open),
        ))
    });
    guarded(HttpResponse::Ok())
        .content_type("text/event-stream")
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

/// One write: the open room's changes, then the `rooms` event whose id is the page's end:
/// `{"changes":N,"rooms":[[sdk_app_id,"room_id",moved],…],"recorded_at":…}`, N the changes it
/// covers (its id minus the previous event's id). The moves are the feed reader's, made once per
/// read for every console (a room appears once per read, its moves in order).
fn tell(page: &Page, open: Option<(i64, &str)>, text: &mut String) {
    let Some(recorded_at) = page.recorded_at() else {
        text.push_str(": waiting\n\n");
        return;
    };
    if let Some((app, room)) = open {
        for change in page
            .changes()
            .filter(|c| c.sdk_app_id == app && *c.room_id == *room)
        {
            text.push_str(change.event());
        }
    }
    text.push_str(&format!(
        "id: {}\nevent: rooms\ndata: {{\"changes\":{},\"rooms\":[",
        page.next,
        page.len()
    ));
    page.moves(text);
    text.push_str("],\"recorded_at\":");
    text.push_str(&serde_json::to_string(&recorded_at).expect("a time serializes"));
    text.push_str("}\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{Told, told};

    fn change(seq: i64, room: &str, kind: &str, users: &[&str]) -> Told {
        told::sample(seq, room, kind, users)
    }

    /// The events of one write: (id, event, data).
    fn events(text: &str) -> Vec<(Option<i64>, String, String)> {
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let field = |name: &str| e.lines().find_map(|l| l.strip_prefix(name));
                (
                    field("id: ").map(|id| id.parse().unwrap()),
                    field("event: ").unwrap_or("").to_owned(),
                    field("data: ").unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn a_write_tells_counts_for_every_room_and_the_open_room_whole() {
        let page = Page::of(
            6,
            vec![
                change(7, "a", "session.started", &[]),
                change(8, "a", "member.entered", &["x", "y"]),
                change(9, "<b>", "member.entered", &["z"]),
                change(10, "a", "member.left", &["x"]),
                change(11, "<b>", "seats.changed", &[]),
            ],
        );
        let mut text = String::new();
        tell(&page, Some((1, "<b>")), &mut text);
        let told = events(&text);
        // The open room's two changes, then the counts with the page's end as id.
        assert_eq!(told.len(), 3, "{text}");
        assert_eq!((told[0].0, told[0].1.as_str()), (Some(9), "change"));
        assert_eq!((told[1].0, told[1].1.as_str()), (Some(11), "change"));
        assert_eq!((told[2].0, told[2].1.as_str()), (Some(11), "rooms"));
        let rooms: serde_json::Value = serde_json::from_str(&told[2].2).unwrap();
        assert_eq!(rooms["changes"], 5);
        assert_eq!(rooms["rooms"], json!([[1, "a", 1], [1, "<b>", 1]]));
        // No room open: the counts alone.
        let mut text = String::new();
        tell(&page, None, &mut text);
        assert_eq!(events(&text).len(), 1);
        // Nothing new: a comment, no id.
        let mut text = String::new();
        tell(&Page::empty(11), None, &mut text);
        assert_eq!(text, ": waiting\n\n");
    }

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
