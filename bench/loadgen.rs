//! Load generator for roomsync (the "Throughput" benchmark; see BENCHMARKS.md and `bench/run`).
//!
//! Drives a running roomsync over loopback only: signed, unique member enter/leave callbacks
//! over a configurable set of rooms and users, at a fixed concurrency, bounded by a request
//! count and a duration (hard stop), optionally paced at a target rate. At the end it reports
//! accepted callbacks per second, latency percentiles, errors by status, the batch sizes seen
//! in roomsync's `/metrics`, and (with `--verify-db`) checks that every callback answered 200
//! is in `room_events`.
//!
//! Output: human-readable lines on stderr, one JSON summary line on stdout.
//!
//! ```sh
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080 --token secret \
//!     --duration 20 --concurrency 64 --verify-db "$DATABASE_URL"
//! ```

use std::{
    collections::BTreeMap,
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use rand::{RngExt, SeedableRng, rngs::SmallRng};
use roomsync::callback::sign;
use serde_json::{Value, json};
use tokio::task::JoinSet;

const ENTER: &str = "Room.CallbackAfterMemberEnter";
const LEAVE: &str = "Room.CallbackAfterMemberLeave";
/// Each request is bounded; a run ends at most this long after its duration.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Safety net beyond the duration: every worker has finished by then (requests are bounded).
const HARD_STOP_GRACE: Duration = Duration::from_secs(15);
/// How many entered members a worker remembers, so that leaves leave someone who is in.
const REMEMBERED: usize = 1024;

/// Load generator for roomsync's POST /callback (loopback only).
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// roomsync base URL; only 127.0.0.1, ::1 or localhost are accepted.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// CALLBACK_TOKEN of the server (unset: requests are not signed).
    #[arg(long, env = "CALLBACK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// SdkAppid sent with every callback.
    #[arg(long, default_value_t = 1_400_000_001)]
    app_id: i64,
    /// Rooms the events are spread over (ids `room-0` .. `room-{N-1}`).
    #[arg(long, default_value_t = 1000)]
    rooms: u64,
    /// Users the events are spread over (ids `user-0` .. `user-{N-1}`).
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Percentage of leaves (the rest are enters).
    #[arg(long, default_value_t = 20)]
    leave_pct: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of load; no request starts after this (hard stop).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Most requests sent.
    #[arg(long, default_value_t = 10_000_000)]
    max_requests: u64,
    /// Pace at this many requests per second (open loop; latency then counts from each
    /// request's scheduled time). Unset: as fast as the concurrency allows.
    #[arg(long)]
    rate: Option<f64>,
    /// EventTime of the first event in ms (each event gets the next millisecond, so every
    /// event is distinct). Default: an hour ago, so that a long run's times stay in the past
    /// (roomsync refuses times more than EVENT_TIME_MAX_FUTURE_SECS ahead of their arrival).
    #[arg(long)]
    event_time_base: Option<i64>,
    /// Tokio worker threads of the load generator (it shares the machine with the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seed of the random room/user choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Writes "event_time_ms,room_id" of every callback answered 200 to this file.
    #[arg(long)]
    acked_out: Option<std::path::PathBuf>,
    /// Writes "scheduled_ms,latency_us" of every completed request (ms from the start, in
    /// schedule order) to this file: when the slow requests were sent.
    #[arg(long)]
    timeline_out: Option<std::path::PathBuf>,
    /// PostgreSQL URL of roomsync's database (loopback): after the run, waits for the journal
    /// to drain and checks that every callback answered 200 is in room_events.
    #[arg(long)]
    verify_db: Option<String>,
    /// Instead of sending load: forward TCP from 127.0.0.1:<port> (printed as {"port":N} on
    /// stdout) to this loopback address, dropping every connection for the first
    /// `--closed-for` seconds. An outage of PostgreSQL for one roomsync, and its end.
    #[arg(long)]
    forward_to: Option<std::net::SocketAddr>,
    /// Most seconds to wait, after the load, for roomsync's journal to drain (bounded).
    #[arg(long, default_value_t = 60)]
    drain_timeout: u64,
    /// Seconds the forwarder drops connections before it forwards them.
    #[arg(long, default_value_t = 0.0)]
    closed_for: f64,
    /// Also report the requests sent from this many seconds after the start on their own
    /// (the "window": e.g. from a second after PostgreSQL was stopped).
    #[arg(long)]
    window_from: Option<f64>,
}

/// The forwarder stops by itself this long after it opened.
const FORWARD_LIFETIME: Duration = Duration::from_secs(1800);

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Err(e) = check_args(&args) {
        eprintln!("loadgen: {e}");
        return std::process::ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Some(target) = args.forward_to {
        return match runtime.block_on(forward(target, args.closed_for)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadgen: forwarder: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run(args)) {
        Ok(summary) => {
            let lost = summary["verify"]["lost"].as_i64().unwrap_or(0);
            println!("{summary}");
            if lost != 0 || summary["accepted"].as_u64() == Some(0) {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The outage forwarder (see `--forward-to`); bounded in time by [`FORWARD_LIFETIME`].
async fn forward(target: std::net::SocketAddr, closed_for: f64) -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", json!({"port": listener.local_addr()?.port()}));
    std::io::stdout().flush()?;
    let opens = tokio::time::Instant::now() + Duration::from_secs_f64(closed_for);
    let ends = opens + FORWARD_LIFETIME;
    let mut dropped = 0u64;
    let mut announced = false;
    while let Ok(accepted) = tokio::time::timeout_at(ends, listener.accept()).await {
        let (mut client, _) = accepted?;
        if tokio::time::Instant::now() < opens {
            dropped += 1;
            continue; // closed at once: the peer sees the connection reset
        }
        if !announced {
            eprintln!("loadgen: forwarder open after dropping {dropped} connections");
            announced = true;
        }
        tokio::spawn(async move {
            if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
    Ok(())
}

fn check_args(args: &Args) -> Result<(), String> {
    if let Some(target) = args.forward_to {
        if !target.ip().is_loopback() {
            return Err("--forward-to: only loopback addresses".into());
        }
        if !(0.0..=3600.0).contains(&args.closed_for) {
            return Err("--closed-for must be in [0, 3600] seconds".into());
        }
        return Ok(());
    }
    let url = reqwest::Url::parse(&args.url).map_err(|e| format!("--url: {e}"))?;
    if url.scheme() != "http" {
        return Err("--url must be http:// (loopback)".into());
    }
    if !is_loopback(url.host_str().unwrap_or("")) {
        return Err(format!(
            "--url {}: only 127.0.0.1, ::1 or localhost are allowed",
            args.url
        ));
    }
    if let Some(db) = &args.verify_db {
        let options: sqlx::postgres::PgConnectOptions =
            db.parse().map_err(|e| format!("--verify-db: {e}"))?;
        let host = options.get_host();
        if !(is_loopback(host) || host.starts_with('/')) {
            return Err(format!(
                "--verify-db host {host}: only 127.0.0.1, ::1, localhost or a socket"
            ));
        }
    }
    if args.rooms == 0 || args.users == 0 || args.concurrency == 0 {
        return Err("--rooms, --users and --concurrency must be positive".into());
    }
    if args.leave_pct > 100 {
        return Err("--leave-pct is a percentage".into());
    }
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        return Err("--duration must be in (0, 3600] seconds".into());
    }
    if let Some(rate) = args.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        return Err("--rate must be positive".into());
    }
    Ok(())
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "::1" | "[::1]" | "localhost")
}

/// What one worker saw.
#[derive(Default)]
struct WorkerStats {
    /// Latency of each completed request, in microseconds.
    latencies_us: Vec<u32>,
    /// (scheduled ms from the start, latency in microseconds) of each completed request.
    timeline: Vec<(u32, u32)>,
    /// (EventTime, room number) of each callback answered 200.
    acked: Vec<(i64, u64)>,
    errors: BTreeMap<String, u64>,
    sent: u64,
    enters: u64,
    leaves: u64,
    /// Largest delay behind the pacing schedule when a request was sent.
    max_behind: Duration,
    /// Latencies and acknowledgements of the requests sent inside the window.
    window_latencies_us: Vec<u32>,
    window_accepted: u64,
}

struct Plan {
    base: String,
    query_prefix: String,
    token: Option<String>,
    rooms: u64,
    users: u64,
    leave_pct: u32,
    event_time_base: i64,
    max_requests: u64,
    rate: Option<f64>,
    start: tokio::time::Instant,
    deadline: tokio::time::Instant,
    /// Requests scheduled from then on are also counted in the window.
    window_start: Option<tokio::time::Instant>,
    next: AtomicU64,
}

async fn run(args: Args) -> Result<Value, BoxError> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .build()?;
    let base = args.url.trim_end_matches('/').to_owned();
    let before = scrape_metrics(&client, &base).await?;

    let event_time_base = args
        .event_time_base
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis() - 3_600_000);
    let start = tokio::time::Instant::now();
    let duration = Duration::from_secs_f64(args.duration);
    let plan = Arc::new(Plan {
        query_prefix: format!(
            "SdkAppid={}&contenttype=json&ClientIP=127.0.0.1&OptPlatform=Web",
            args.app_id
        ),
        base: base.clone(),
        token: args.token.clone(),
        rooms: args.rooms,
        users: args.users,
        leave_pct: args.leave_pct,
        event_time_base,
        max_requests: args.max_requests,
        rate: args.rate,
        start,
        deadline: start + duration,
        window_start: args
            .window_from
            .map(|from| start + Duration::from_secs_f64(from)),
        next: AtomicU64::new(0),
    });
    let mut workers = JoinSet::new();
    for w in 0..args.concurrency {
        let (plan, client) = (plan.clone(), client.clone());
        let rng = SmallRng::seed_from_u64(args.seed.wrapping_mul(1_000_003).wrapping_add(w as u64));
        workers.spawn(worker(plan, client, rng));
    }
    let mut stats = WorkerStats::default();
    let mut aborted = 0usize;
    let hard_stop = plan.deadline + REQUEST_TIMEOUT.max(HARD_STOP_GRACE);
    loop {
        match tokio::time::timeout_at(hard_stop, workers.join_next()).await {
            Ok(Some(Ok(w))) => merge(&mut stats, w),
            Ok(Some(Err(e))) => return Err(format!("worker failed: {e}").into()),
            Ok(None) => break,
            Err(_) => {
                aborted = workers.len();
                workers.abort_all();
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    let stopped_by = if plan.next.load(Ordering::Relaxed) >= args.max_requests {
        "max_requests"
    } else {
        "duration"
    };

    // The journal takes callbacks whose commit is too slow: wait until it has drained.
    let drain_started = Instant::now();
    let limit = Duration::from_secs(args.drain_timeout.min(3600));
    let (drained, drain_rate) = wait_journal_drained(&client, &base, limit).await;
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let after = scrape_metrics(&client, &base).await?;

    if let Some(path) = &args.timeline_out {
        let mut timeline = stats.timeline.clone();
        timeline.sort_unstable();
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for (at, latency) in timeline {
            writeln!(out, "{at},{latency}")?;
        }
        out.flush()?;
    }
    if let Some(path) = &args.acked_out {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for (at, room) in &stats.acked {
            writeln!(out, "{at},room-{room}")?;
        }
        out.flush()?;
    }
    let verify = match &args.verify_db {
        Some(url) if drained => verify(url, args.app_id, &stats.acked).await?,
        Some(_) => {
            json!({"checked": false, "reason": format!("journal did not drain within {} s", limit.as_secs())})
        }
        None => json!({"checked": false}),
    };

    let accepted = stats.acked.len() as u64;
    let secs = elapsed.as_secs_f64();
    let mut latencies = std::mem::take(&mut stats.latencies_us);
    latencies.sort_unstable();
    let ms = |q: f64| percentile(&latencies, q) as f64 / 1000.0;
    let mean_ms = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().map(|&l| l as f64).sum::<f64>() / latencies.len() as f64 / 1000.0
    };
    let errors_total: u64 = stats.errors.values().sum();
    let window = match args.window_from {
        Some(from) => {
            let mut window = std::mem::take(&mut stats.window_latencies_us);
            window.sort_unstable();
            let wms = |q: f64| percentile(&window, q) as f64 / 1000.0;
            let span = (secs - from).max(f64::EPSILON);
            json!({
                "from_s": from, "sent": window.len(), "accepted": stats.window_accepted,
                "accepted_per_sec": round3(stats.window_accepted as f64 / span),
                "p50_ms": wms(0.50), "p99_ms": wms(0.99), "max_ms": wms(1.0),
            })
        }
        None => Value::Null,
    };
    let batch = batch_delta(&before, &after);
    let journaled = counter(&after, "roomsync_journal_appended_total")
        - counter(&before, "roomsync_journal_appended_total");
    let summary = json!({
        "mode": if args.rate.is_some() { "paced" } else { "max" },
        "target_rate": args.rate,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "elapsed_s": round3(secs),
        "stopped_by": stopped_by,
        "rooms": args.rooms,
        "users": args.users,
        "leave_pct": args.leave_pct,
        "sent": stats.sent,
        "enters": stats.enters,
        "leaves": stats.leaves,
        "accepted": accepted,
        "accepted_per_sec": round3(accepted as f64 / secs),
        "latency_ms": {
            "p50": ms(0.50), "p90": ms(0.90), "p99": ms(0.99), "p999": ms(0.999),
            "max": ms(1.0), "mean": round3(mean_ms),
            "from": if args.rate.is_some() { "scheduled send time" } else { "send" },
        },
        "max_behind_schedule_ms": args.rate.map(|_| round3(stats.max_behind.as_secs_f64() * 1000.0)),
        "errors": stats.errors,
        "errors_total": errors_total,
        "aborted_workers": aborted,
        "event_time_first": event_time_base,
        "event_time_last": event_time_base + plan.next.load(Ordering::Relaxed) as i64 - 1,
        "batch": batch,
        "journaled": journaled,
        "journal_drained": drained,
        // From the end of the load until the journal was empty.
        "journal_drain_s": round3(drain_secs),
        "verify": verify,
        // Flat copies for shell scripts (bench/run greps these unique keys).
        "latency_p50_ms": ms(0.50),
        "latency_p99_ms": ms(0.99),
        "latency_max_ms": ms(1.0),
        // Tencent waits 2 s for an answer.
        "over_2s": latencies.iter().filter(|&&l| l > 2_000_000).count(),
        "batch_mean": batch["mean"],
        "lost": verify["lost"],
        // Records removed per second while the journal emptied (its deepest point to empty).
        "journal_drain_per_sec": drain_rate.map(round3),
        "window": window,
        "window_per_sec": window["accepted_per_sec"],
        "window_p99_ms": window["p99_ms"],
        "window_max_ms": window["max_ms"],
    });
    eprintln!(
        "loadgen: {} {accepted} accepted in {secs:.2} s = {:.0} callbacks/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; errors {errors_total} {:?}; mean batch {}; journaled {journaled}; verify {}",
        if args.rate.is_some() {
            format!("paced at {:.0}/s:", args.rate.unwrap_or_default())
        } else {
            "max rate:".to_owned()
        },
        accepted as f64 / secs,
        ms(0.50),
        ms(0.99),
        ms(1.0),
        stats.errors,
        batch["mean"],
        verify,
    );
    Ok(summary)
}

fn merge(into: &mut WorkerStats, w: WorkerStats) {
    into.latencies_us.extend(w.latencies_us);
    into.acked.extend(w.acked);
    for (k, v) in w.errors {
        *into.errors.entry(k).or_default() += v;
    }
    into.sent += w.sent;
    into.enters += w.enters;
    into.leaves += w.leaves;
    into.max_behind = into.max_behind.max(w.max_behind);
    into.window_latencies_us.extend(w.window_latencies_us);
    into.timeline.extend(w.timeline);
    into.window_accepted += w.window_accepted;
}

async fn worker(plan: Arc<Plan>, client: reqwest::Client, mut rng: SmallRng) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut remembered: Vec<(u64, u64)> = Vec::with_capacity(REMEMBERED);
    let mut signed: Option<(i64, String)> = None;
    loop {
        let seq = plan.next.fetch_add(1, Ordering::Relaxed);
        if seq >= plan.max_requests {
            break;
        }
        let scheduled = match plan.rate {
            Some(rate) => plan.start + Duration::from_secs_f64(seq as f64 / rate),
            None => tokio::time::Instant::now(),
        };
        if scheduled >= plan.deadline || tokio::time::Instant::now() >= plan.deadline {
            break;
        }
        tokio::time::sleep_until(scheduled).await;
        let now = tokio::time::Instant::now();
        stats.max_behind = stats.max_behind.max(now - scheduled);

        let at = plan.event_time_base + seq as i64;
        let leave = rng.random_range(0..100u32) < plan.leave_pct;
        let (command, room, user, body);
        if leave {
            (room, user) = if remembered.is_empty() {
                (
                    rng.random_range(0..plan.rooms),
                    rng.random_range(0..plan.users),
                )
            } else {
                let i = rng.random_range(0..remembered.len());
                remembered.swap_remove(i)
            };
            command = LEAVE;
            body = format!(
                r#"{{"CallbackCommand":"{LEAVE}","Operator_Account":"user-{user}","RoomId":"room-{room}","MemberCount":{},"Type":"Leave","Reason":"bench","MemberList_Account":["user-{user}"],"EventTime":{at}}}"#,
                rng.random_range(0..100u32),
            );
            stats.leaves += 1;
        } else {
            room = rng.random_range(0..plan.rooms);
            user = rng.random_range(0..plan.users);
            command = ENTER;
            body = format!(
                r#"{{"CallbackCommand":"{ENTER}","Operator_Account":"user-{user}","RoomId":"room-{room}","MemberCount":{},"Type":"Enter","MemberList_Account":["user-{user}"],"EventTime":{at}}}"#,
                rng.random_range(1..100u32),
            );
            stats.enters += 1;
        }
        let mut url = format!(
            "{}/callback?{}&CallbackCommand={command}",
            plan.base, plan.query_prefix
        );
        if let Some(token) = &plan.token {
            let secs = chrono::Utc::now().timestamp();
            if signed.as_ref().is_none_or(|(s, _)| *s != secs) {
                signed = Some((secs, sign(token, &secs.to_string())));
            }
            if let Some((secs, sig)) = &signed {
                url.push_str(&format!("&RequestTime={secs}&Sign={sig}"));
            }
        }
        stats.sent += 1;
        let result = client.post(url).body(body).send().await;
        let outcome = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(bytes) if status == 200 => {
                        if contains(&bytes, br#""ErrorCode":0"#) {
                            Ok(())
                        } else {
                            Err("200 without ErrorCode 0".to_owned())
                        }
                    }
                    Ok(_) => Err(status.to_string()),
                    Err(e) => Err(transport_error(&e)),
                }
            }
            Err(e) => Err(transport_error(&e)),
        };
        // Paced: from the scheduled time, so a stall also counts for the requests it delayed.
        let latency = scheduled.elapsed();
        let latency_us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        stats.latencies_us.push(latency_us);
        let since_start = scheduled.saturating_duration_since(plan.start).as_millis();
        stats
            .timeline
            .push((u32::try_from(since_start).unwrap_or(u32::MAX), latency_us));
        let in_window = plan.window_start.is_some_and(|from| scheduled >= from);
        if in_window {
            stats.window_latencies_us.push(latency_us);
        }
        match outcome {
            Ok(()) => {
                stats.acked.push((at, room));
                stats.window_accepted += u64::from(in_window);
                if !leave {
                    if remembered.len() == REMEMBERED {
                        let i = rng.random_range(0..REMEMBERED);
                        remembered[i] = (room, user);
                    } else {
                        remembered.push((room, user));
                    }
                }
            }
            Err(kind) => *stats.errors.entry(kind).or_default() += 1,
        }
    }
    stats
}

fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Prometheus samples by full series name (`name{labels}`).
async fn scrape_metrics(
    client: &reqwest::Client,
    base: &str,
) -> Result<BTreeMap<String, f64>, BoxError> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect())
}

fn counter(samples: &BTreeMap<String, f64>, name: &str) -> i64 {
    samples.get(name).copied().unwrap_or(0.0) as i64
}

/// Callbacks per committed transaction during the run: count, mean, and how many batches fell
/// in each histogram bucket (non-cumulative, by upper bound).
fn batch_delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Value {
    let delta =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let count = delta("roomsync_batch_size_count");
    let sum = delta("roomsync_batch_size_sum");
    let mut buckets: Vec<(f64, String, f64)> = after
        .keys()
        .filter_map(|k| {
            let le = k.strip_prefix("roomsync_batch_size_bucket{le=\"")?;
            let le = le.strip_suffix("\"}")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, le.to_owned(), delta(k)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    // "upper bound:transactions" pairs in bucket order, e.g. "1:120 2:40 4:33".
    let mut below = 0.0;
    let mut distribution = Vec::new();
    for (_, le, cumulative) in buckets {
        let n = cumulative - below;
        below = cumulative;
        if n > 0.0 {
            distribution.push(format!("{le}:{}", n as i64));
        }
    }
    let distribution = distribution.join(" ");
    json!({
        "transactions": count as i64,
        "callbacks": sum as i64,
        "mean": if count > 0.0 { round3(sum / count) } else { 0.0 },
        "distribution": distribution,
    })
}

/// Waits until `/readyz` reports an empty journal (bounded). Also returns the drain's rate:
/// records from the deepest point seen to empty, over the time that took (`None` when the
/// journal was empty from the start or did not drain).
async fn wait_journal_drained(
    client: &reqwest::Client,
    base: &str,
    limit: Duration,
) -> (bool, Option<f64>) {
    let deadline = Instant::now() + limit;
    // The deepest point, and the last time it was seen.
    let mut peak: Option<(u64, Instant)> = None;
    loop {
        let depth = async {
            let body: Value = client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            body["journal_depth"].as_u64()
        }
        .await;
        let now = Instant::now();
        if depth == Some(0) {
            let rate = peak.map(|(n, at)| n as f64 / (now - at).as_secs_f64().max(1e-3));
            return (true, rate);
        }
        if let Some(depth) = depth
            && peak.is_none_or(|(n, _)| depth >= n)
        {
            peak = Some((depth, now));
        }
        if now >= deadline {
            return (false, None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every acknowledged (room, EventTime) must be in room_events: zero loss.
async fn verify(url: &str, app_id: i64, acked: &[(i64, u64)]) -> Result<Value, BoxError> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await?;
    let times: Vec<i64> = acked.iter().map(|(at, _)| *at).collect();
    let rooms: Vec<String> = acked.iter().map(|(_, r)| format!("room-{r}")).collect();
    let found: i64 = sqlx::query_scalar(
        // Not correlated: Citus runs it too (bench/run --citus).
        "SELECT count(*) FROM unnest($2::text[], $3::bigint[]) AS a(room_id, ms)
         WHERE (a.room_id, 'epoch'::timestamptz + a.ms * interval '1 millisecond') IN (
             SELECT e.room_id, e.event_at FROM room_events e
             WHERE e.sdk_app_id = $1 AND e.callback_command IN ($4, $5))",
    )
    .bind(app_id)
    .bind(&rooms)
    .bind(&times)
    .bind(ENTER)
    .bind(LEAVE)
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    let acked = acked.len() as i64;
    Ok(json!({"checked": true, "acked": acked, "found": found, "lost": acked - found}))
}
