//! The "Hostile bodies" benchmark (BENCHMARKS.md), run by `bench/bodies`: what a 1 MiB body of
//! small values costs against a 1 MiB body of one string, and roomsync's memory while hundreds
//! of connections send 1 MiB bodies, with legitimate callbacks sent meanwhile.
//!
//! Loopback only; every loop is bounded in count and in time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// roomsync's address (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// roomsync's process id, for its CPU time and RSS.
    #[arg(long)]
    pid: u32,
    /// Requests of each kind for the cost comparison.
    #[arg(long, default_value_t = 60)]
    requests: usize,
    /// Connections of the wave.
    #[arg(long, default_value_t = 800)]
    connections: usize,
    /// Bodies each connection of the wave sends.
    #[arg(long, default_value_t = 3)]
    bodies_per_connection: usize,
    /// Seconds to watch the RSS fall after the wave.
    #[arg(long, default_value_t = 60)]
    settle_secs: u64,
}

const MIB: usize = 1 << 20;
const QUERY: &str = "SdkAppid=1400000001&CallbackCommand=Room.CallbackAfterMemberEnter";

/// A member enter without its member list (refused with 40002 once the whole body is parsed
/// and checked), padded to 1 MiB by `junk` in a field roomsync does not read.
fn body(kind: &str) -> String {
    let head = r#"{"CallbackCommand":"Room.CallbackAfterMemberEnter","RoomId":"r","EventTime":1700000000000,"Junk":"#;
    let room = MIB - head.len() - 1;
    let junk = match kind {
        "string" => format!("\"{}\"", "x".repeat(room - 2)),
        "numbers" => format!("[{}0]", "0,".repeat((room - 3) / 2)),
        "objects" => format!("[{}{{}}]", "{},".repeat((room - 4) / 3)),
        _ => unreachable!(),
    };
    format!("{head}{junk}}}")
}

/// utime + stime of the process, in ms (clock ticks of 10 ms).
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("roomsync is running");
    let after = &stat[stat.rfind(')').expect("stat") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks * 10
}

fn rss_mib(pid: u32) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("roomsync is running");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!(
        args.url.starts_with("http://127.0.0.1:") || args.url.starts_with("http://[::1]:"),
        "loopback only"
    );
    let client = reqwest::Client::new();
    let post = |client: &reqwest::Client, body: String| {
        client
            .post(format!("{}/callback?{QUERY}", args.url))
            .body(body)
            .timeout(Duration::from_secs(30))
            .send()
    };

    println!(
        "== cost of a 1 MiB body, {} requests each, one at a time",
        args.requests
    );
    // The kinds take turns, so that each meets the same conditions (the rejected_callbacks
    // budget: the first bodies of a run are kept there, later ones mostly not).
    let kinds = ["string", "numbers", "objects"];
    let bodies: Vec<String> = kinds.iter().map(|kind| body(kind)).collect();
    let mut cpu_ms_total = [0u64; 3];
    let mut times: [Vec<f64>; 3] = Default::default();
    for _ in 0..args.requests {
        for (k, kind) in kinds.iter().enumerate() {
            let cpu_before = cpu_ms(args.pid);
            let started = Instant::now();
            let answer = post(&client, bodies[k].clone()).await.expect("answered");
            let status = answer.status();
            answer.bytes().await.ok();
            assert_eq!(status, 400, "{kind}: refused after parsing");
            times[k].push(started.elapsed().as_secs_f64() * 1000.0);
            cpu_ms_total[k] += cpu_ms(args.pid) - cpu_before;
        }
    }
    let mut per_kind = Vec::new();
    for (k, kind) in kinds.iter().enumerate() {
        let cpu = cpu_ms_total[k] as f64 / args.requests as f64;
        let answer = median(std::mem::take(&mut times[k]));
        println!("{kind:>8}: roomsync CPU {cpu:6.1} ms a body, median answer {answer:6.1} ms");
        per_kind.push((kind, cpu, answer));
    }
    let (_, cpu_string, answer_string) = per_kind[0];
    for (kind, cpu, answer) in &per_kind[1..] {
        println!(
            "{kind:>8} / string: CPU {:.1}x, answer time {:.1}x",
            cpu / cpu_string.max(1.0),
            answer / answer_string
        );
    }

    println!(
        "== wave: {} connections, {} bodies of 1 MiB each; legitimate callbacks meanwhile",
        args.connections, args.bodies_per_connection
    );
    let rss_idle = rss_mib(args.pid);
    let junk = Arc::new(body("numbers"));
    let statuses: Arc<[AtomicU64; 6]> = Arc::new(Default::default());
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..args.connections {
        let junk = junk.clone();
        let statuses = statuses.clone();
        let url = args.url.clone();
        let bodies = args.bodies_per_connection.min(64);
        senders.push(tokio::spawn(async move {
            // One client each: a connection of its own.
            let client = reqwest::Client::new();
            for _ in 0..bodies {
                let answer = client
                    .post(format!("{url}/callback?{QUERY}"))
                    .body(junk.as_str().to_owned())
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                let slot = match answer.as_ref().map(|a| a.status().as_u16()) {
                    Ok(400) => 0,
                    Ok(503) => 1,
                    Ok(_) => 2,
                    Err(_) => 3,
                };
                statuses[slot].fetch_add(1, Ordering::Relaxed);
                if let Ok(answer) = answer {
                    answer.bytes().await.ok();
                }
            }
        }));
    }
    let wave = futures_util::future::join_all(senders);
    // The legitimate sender has a thread and a runtime of its own: queued behind the wave's
    // 800 tasks in this process, it would time the load generator, not roomsync.
    let legit = {
        let url = args.url.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the legitimate sender");
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
            let client = reqwest::Client::new();
            let mut times = Vec::new();
            // At most 120 callbacks, one every 250 ms, while the wave lasts.
            for i in 0..120u64 {
                let body = format!(
                    r#"{{"CallbackCommand":"Room.CallbackAfterMemberEnter","RoomId":"legit","MemberList_Account":["u{i}"],"EventTime":{}}}"#,
                    1_700_000_000_000u64 + i
                );
                let sent = Instant::now();
                let ok = client
                    .post(format!("{url}/callback?{QUERY}"))
                    .body(body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .is_ok_and(|a| a.status() == 200);
                times.push((sent.elapsed().as_secs_f64(), ok));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            times
        })
        });
        async move {
            tokio::task::spawn_blocking(move || thread.join().expect("the legitimate sender"))
                .await
                .expect("joined")
        }
    };
    // The peak RSS, sampled every 50 ms while the wave lasts (at most 10 minutes).
    let peak_kib = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak_kib = peak_kib.clone();
        let pid = args.pid;
        tokio::spawn(async move {
            for _ in 0..12_000 {
                peak_kib.fetch_max((rss_mib(pid) * 1024.0) as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let (_, legit) = tokio::join!(wave, legit);
    sampler.abort();
    let peak = peak_kib.load(Ordering::Relaxed) as f64 / 1024.0;
    let wave_secs = started.elapsed().as_secs_f64();
    let s: Vec<u64> = statuses.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    println!(
        "wave done in {wave_secs:.1} s: {} answered 400 (parsed), {} answered 503, {} other, {} failed",
        s[0], s[1], s[2], s[3]
    );
    let slow = legit.iter().filter(|(t, _)| *t >= 2.0).count();
    let failed = legit.iter().filter(|(_, ok)| !ok).count();
    let worst = legit.iter().map(|(t, _)| *t).fold(0.0, f64::max);
    println!(
        "legitimate callbacks: {} sent, {} not answered 200, {} took 2 s or more, slowest {:.3} s",
        legit.len(),
        failed,
        slow,
        worst
    );
    println!("RSS: {rss_idle:.0} MiB before the wave, peak {peak:.0} MiB during it");
    let settled = Instant::now();
    let mut under = None;
    let mut last = rss_mib(args.pid);
    for _ in 0..args.settle_secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = rss_mib(args.pid);
        if under.is_none() && last < 128.0 {
            under = Some(settled.elapsed().as_secs_f64());
        }
    }
    match under {
        Some(t) => println!(
            "RSS under 128 MiB {t:.0} s after the wave; {last:.0} MiB after {} s",
            args.settle_secs
        ),
        None => println!(
            "RSS not under 128 MiB within {} s: {last:.0} MiB",
            args.settle_secs
        ),
    }
}
