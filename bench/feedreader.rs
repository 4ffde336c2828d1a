//! Feed readers for the "change feed" benchmark (`bench/run --feed-readers N`, BENCHMARKS.md):
//! N readers follow `GET /v1/changes` with long polls from the head, on loopback only, for a
//! bounded time, while the load generator sends callbacks. Each reader checks that it sees
//! every `seq` once and in order; the lag of a page is the time from its newest change's
//! `recorded_at` (written just before that transaction's commit) to the page's arrival.
//!
//! With `--console`, each reader is a console viewer instead (docs/console.md): it signs in
//! once with the token and follows `/console/events` with no room open (the page's room list:
//! `rooms` events, each covering the changes up to its id), as the page reads it, and reads
//! what the page reads besides: the room list at its start and the overview every 10 s.
//!
//! Output: one JSON summary line on stdout (lag percentiles over every page of every reader,
//! and of reader 0 alone), progress on stderr.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use clap::Parser;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;

/// One long poll at most this long; a run ends at most this long after its duration.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an open console reads its overview again (console.js).
const OVERVIEW_EVERY: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(about = "Follows roomsync's change feed with N readers (loopback only)")]
struct Args {
    /// roomsync base URL; only 127.0.0.1, ::1 or localhost are accepted.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API_TOKEN of the server.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    token: String,
    /// Readers following the feed at once (at most 2,000).
    #[arg(long, default_value_t = 1)]
    readers: usize,
    /// Seconds to follow (at most 600).
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// `limit` of each request.
    #[arg(long, default_value_t = 1000)]
    limit: u32,
    /// Follow the console's event stream (as N open consoles) instead of `/v1/changes`.
    #[arg(long)]
    console: bool,
}

#[derive(Default)]
struct Seen {
    pages: u64,
    changes: u64,
    /// Out of order or missing positions.
    gaps: u64,
    errors: u64,
    /// Lag of each non-empty page, ms.
    lags: Vec<f64>,
}

/// Signs in to the console; the session cookie (`name=value`).
async fn sign_in(url: &str, token: &str) -> Result<String, Box<dyn std::error::Error>> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let answer = client
        .post(format!("{url}/console/login"))
        .form(&[("token", token)])
        .send()
        .await?;
    let cookie = answer
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or("the console gave no session (is API_TOKEN set?)")?;
    Ok(cookie.to_owned())
}

/// A console read (`path`) answered 200 within the request timeout.
async fn read_ok(client: &reqwest::Client, url: &str, path: &str, cookie: &str) -> bool {
    let request = client
        .get(format!("{url}{path}"))
        .header("cookie", cookie)
        .send();
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(answer)) if answer.status().is_success() => answer.bytes().await.is_ok(),
        _ => false,
    }
}

/// The page's overview refresh (every 10 s, from `phase` on) until `deadline`; the failed reads.
async fn refresh_overview(
    client: reqwest::Client,
    url: String,
    cookie: String,
    phase: Duration,
    deadline: Instant,
) -> u64 {
    let mut failed = 0;
    let mut at = Instant::now() + phase;
    while at < deadline {
        tokio::time::sleep_until(at.into()).await;
        if !read_ok(&client, &url, "/console/api/overview", &cookie).await {
            failed += 1;
        }
        at += OVERVIEW_EVERY;
    }
    failed
}

/// One console viewer, reading what the page reads: the room list (again every 2 s while it is
/// refused, as the page), the overview every 10 s from `phase` on, and the event stream from
/// `start`, reconnecting with the last id seen. Every read not answered 200 is an error.
async fn follow_events(
    url: String,
    cookie: String,
    start: i64,
    phase: Duration,
    deadline: Instant,
    opening: Arc<AtomicUsize>,
) -> Seen {
    let client = reqwest::Client::new();
    let mut seen = Seen::default();
    let overview = tokio::spawn(refresh_overview(
        client.clone(),
        url.clone(),
        cookie.clone(),
        phase,
        deadline,
    ));
    while !read_ok(&client, &url, "/console/api/rooms", &cookie).await {
        seen.errors += 1;
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if opening.fetch_sub(1, Ordering::AcqRel) == 1 {
        eprintln!("feedreader: ready (every console has its room list)");
    }
    let mut after = start;
    while Instant::now() < deadline {
        let request = client
            .get(format!("{url}/console/events?after={after}"))
            .header("cookie", &cookie)
            .send();
        let Ok(Ok(answer)) = tokio::time::timeout(REQUEST_TIMEOUT, request).await else {
            seen.errors += 1;
            continue;
        };
        if !answer.status().is_success() {
            seen.errors += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let mut body = answer.bytes_stream();
        // Bytes not yet making a whole event; events are cut at "\n\n" without copying the
        // rest again (a reader on the same CPUs as roomsync should cost it little).
        let mut text: Vec<u8> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(Ok(chunk))) = tokio::time::timeout(left, body.next()).await else {
                break;
            };
            let arrived = Utc::now();
            text.extend_from_slice(&chunk);
            let mut newest = None;
            let mut start = 0;
            while let Some(end) = find(&text[start..], b"\n\n") {
                let event = &text[start..start + end];
                start += end + 2;
                // A console without a room open gets `rooms` events only: each covers
                // `changes` changes and its id is the position after them.
                if line(event, b"event: ") != Some("rooms") {
                    continue;
                }
                let (Some(id), Some(rooms)) = (
                    line(event, b"id: ").and_then(|id| id.parse::<i64>().ok()),
                    line(event, b"data: ").and_then(|d| serde_json::from_str::<Rooms>(d).ok()),
                ) else {
                    seen.errors += 1;
                    continue;
                };
                if id != after + rooms.changes {
                    seen.gaps += 1;
                }
                after = id;
                seen.changes += rooms.changes as u64;
                newest = rooms.recorded_at.parse::<DateTime<Utc>>().ok();
            }
            text.drain(..start);
            seen.pages += 1;
            if let Some(at) = newest {
                seen.lags
                    .push((arrived - at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
        }
    }
    seen.errors += overview.await.unwrap_or(1);
    seen
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The rest of the event's line that starts with `prefix`.
fn line<'a>(event: &'a [u8], prefix: &[u8]) -> Option<&'a str> {
    event
        .split(|b| *b == b'\n')
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|l| std::str::from_utf8(l).ok())
}

/// What a console viewer checks of a `rooms` event; the rest is skipped, not built.
#[derive(Deserialize)]
struct Rooms<'a> {
    changes: i64,
    #[serde(borrow)]
    recorded_at: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct Told<'a> {
    seq: i64,
    #[serde(borrow)]
    recorded_at: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    changes: Vec<Told<'a>>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let host = reqwest::Url::parse(&args.url)?
        .host_str()
        .unwrap_or_default()
        .to_owned();
    if !matches!(host.as_str(), "127.0.0.1" | "[::1]" | "::1" | "localhost") {
        return Err(format!("{host}: loopback only").into());
    }
    if args.readers == 0 || args.readers > 2000 || args.secs == 0 || args.secs > 600 {
        return Err("--readers 1..=2000, --secs 1..=600".into());
    }
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT + Duration::from_secs(30))
        .pool_max_idle_per_host(args.readers)
        .build()?;
    // The head: a roster's cursor.
    let head: Value = client
        .get(format!(
            "{}/v1/rooms/1400000001/feedreader-head/members",
            args.url
        ))
        .bearer_auth(&args.token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let start = head["cursor"].as_i64().ok_or("no cursor")?;
    let deadline = Instant::now() + Duration::from_secs(args.secs);
    let mut readers = JoinSet::new();
    let cookie = if args.console {
        Some(sign_in(&args.url, &args.token).await?)
    } else {
        None
    };
    // Consoles still reading their room list; bench/run starts the load once none is.
    let opening = Arc::new(AtomicUsize::new(args.readers));
    if cookie.is_none() {
        eprintln!("feedreader: ready");
    }
    for i in 0..args.readers {
        if let Some(cookie) = &cookie {
            // Pages opened one after another refresh their overviews at phases spread out.
            let phase = OVERVIEW_EVERY * i as u32 / args.readers as u32;
            readers.spawn(follow_events(
                args.url.clone(),
                cookie.clone(),
                start,
                phase,
                deadline,
                opening.clone(),
            ));
            continue;
        }
        let (client, url, token, limit) = (
            client.clone(),
            args.url.clone(),
            args.token.clone(),
            args.limit,
        );
        readers.spawn(async move {
            let mut seen = Seen::default();
            let mut after = start;
            while Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now()).as_secs();
                let wait = left.clamp(1, REQUEST_TIMEOUT.as_secs());
                let request = client
                    .get(format!(
                        "{url}/v1/changes?after={after}&limit={limit}&wait={wait}"
                    ))
                    .bearer_auth(&token)
                    .send();
                let body = match request.await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(body) => body,
                        Err(_) => {
                            seen.errors += 1;
                            continue;
                        }
                    },
                    _ => {
                        seen.errors += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(page) = serde_json::from_slice::<Page>(&body) else {
                    seen.errors += 1;
                    continue;
                };
                let arrived = Utc::now();
                seen.pages += 1;
                for change in &page.changes {
                    if change.seq != after + 1 {
                        seen.gaps += 1;
                    }
                    after = change.seq;
                    seen.changes += 1;
                }
                if let Some(at) = page
                    .changes
                    .last()
                    .and_then(|newest| newest.recorded_at.parse::<DateTime<Utc>>().ok())
                {
                    seen.lags
                        .push((arrived - at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                }
            }
            seen
        });
    }
    let mut all = Seen::default();
    let mut first: Option<Vec<f64>> = None;
    while let Some(seen) = readers.join_next().await {
        let seen = seen?;
        all.pages += seen.pages;
        all.changes += seen.changes;
        all.gaps += seen.gaps;
        all.errors += seen.errors;
        if first.is_none() {
            first = Some(seen.lags.clone());
        }
        all.lags.extend(seen.lags);
    }
    all.lags.sort_by(f64::total_cmp);
    let mut one = first.unwrap_or_default();
    one.sort_by(f64::total_cmp);
    let summary = json!({
        "readers": args.readers,
        "secs": args.secs,
        "pages": all.pages,
        "changes": all.changes,
        "changes_per_reader": all.changes / args.readers as u64,
        "gaps": all.gaps,
        "errors": all.errors,
        "lag_p50_ms": percentile(&all.lags, 50.0),
        "lag_p99_ms": percentile(&all.lags, 99.0),
        "lag_max_ms": all.lags.last().copied().unwrap_or(0.0),
        "reader0_lag_p99_ms": percentile(&one, 99.0),
    });
    eprintln!(
        "feedreader: {} readers, {} changes each, {} gaps, {} errors; lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.readers,
        summary["changes_per_reader"],
        all.gaps,
        all.errors,
        summary["lag_p50_ms"].as_f64().unwrap_or(0.0),
        summary["lag_p99_ms"].as_f64().unwrap_or(0.0),
        summary["lag_max_ms"].as_f64().unwrap_or(0.0),
    );
    println!("{summary}");
    Ok(())
}
