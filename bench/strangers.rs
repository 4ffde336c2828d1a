//! The "Strangers and slow bodies" benchmark (BENCHMARKS.md), run by `bench/run --strangers`:
//! one attacker reconnecting as fast as it can, each connection declaring a `Content-Length`
//! and sending no body (with a wrong `SdkAppid`, then with the real one), while a legitimate
//! sender posts a callback every 50 ms; reports how many of those were answered 200 within
//! 2 s, for each declared size.
//!
//! Loopback only; every loop is bounded in count and in time.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use clap::Parser;
use tokio::{io::AsyncWriteExt, net::TcpStream};

#[derive(Parser)]
struct Args {
    /// roomsync's address (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Seconds of attack for each app id and size.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Declared body sizes, in bytes.
    #[arg(long, value_delimiter = ',', default_value = "1024,65536,1048576")]
    sizes: Vec<usize>,
    /// Most idle connections the attacker keeps open at once (its descriptors).
    #[arg(long, default_value_t = 3000)]
    max_open: usize,
    /// The legitimate sender opens a new connection for each callback (by default it keeps
    /// one alive, as an HTTP client does).
    #[arg(long)]
    fresh: bool,
}

const APP: &str = "1400000001";

/// One attacker: opens connections one after the other, each sending only a head that
/// declares `size` bytes, and keeps them until roomsync closes them. Returns the connections
/// opened and the most open at once.
async fn attack(
    addr: SocketAddr,
    app: &str,
    size: usize,
    until: Instant,
    max_open: usize,
) -> (u64, usize) {
    let head = format!(
        "POST /callback?SdkAppid={app}&CallbackCommand=Room.CallbackAfterMemberEnter HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"
    );
    let mut open: Vec<TcpStream> = Vec::new();
    let (mut opened, mut most) = (0u64, 0usize);
    let mut buf = [0u8; 4096];
    // At most ten million connection attempts, and never past `until`.
    for i in 0..10_000_000u64 {
        if Instant::now() >= until {
            break;
        }
        if i % 64 == 0 || open.len() >= max_open {
            // Those roomsync answered or closed are dropped: the attacker reconnects.
            open.retain(|s| would_block(s, &mut buf));
            if open.len() >= max_open {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        }
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
        else {
            continue;
        };
        if stream.write_all(head.as_bytes()).await.is_ok() {
            opened += 1;
            open.push(stream);
            most = most.max(open.len());
        }
    }
    (opened, most)
}

/// Whether the connection is still open with nothing to read.
fn would_block(stream: &TcpStream, buf: &mut [u8]) -> bool {
    matches!(stream.try_read(buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A callback every 50 ms until `until` (at most 2,000): the answer times, and those not 200.
async fn legitimate(
    addr: SocketAddr,
    until: Instant,
    first_event: u64,
    fresh: bool,
) -> (Vec<f64>, Vec<String>) {
    let mut client = reqwest::Client::builder();
    if fresh {
        client = client.pool_max_idle_per_host(0);
    }
    let client = client.build().expect("a client");
    let (mut times, mut failures) = (Vec::new(), Vec::new());
    for i in 0..2_000u64 {
        if Instant::now() >= until {
            break;
        }
        let body = format!(
            r#"{{"CallbackCommand":"Room.CallbackAfterMemberEnter","RoomId":"legit","MemberList_Account":["u{i}"],"EventTime":{}}}"#,
            first_event + i
        );
        let sent = Instant::now();
        let answer = client
            .post(format!(
                "http://{addr}/callback?SdkAppid={APP}&CallbackCommand=Room.CallbackAfterMemberEnter"
            ))
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let took = sent.elapsed().as_secs_f64();
        match answer {
            Ok(a) if a.status() == 200 => times.push(took),
            Ok(a) => {
                let status = a.status();
                let text = a.text().await.unwrap_or_default();
                failures.push(format!("{status} {text}"));
            }
            Err(e) => failures.push(format!("error: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (times, failures)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let args = Args::parse();
    assert!(args.addr.ip().is_loopback(), "loopback only");
    assert!(args.secs <= 600, "at most 600 s a phase");
    println!(
        "== one attacker reconnecting, each connection declaring a body and sending none; a callback every 50 ms, {} ({} s a phase)",
        if args.fresh {
            "each on a new connection"
        } else {
            "on a kept-alive connection"
        },
        args.secs
    );
    println!(
        "{:>10} {:>9} | {:>9} {:>9} | {:>5} {:>5} {:>7} {:>7} {:>7} {:>7}",
        "SdkAppid",
        "declared",
        "opened",
        "most open",
        "sent",
        "200",
        "<2s",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    let mut first_event = 1_700_000_000_000u64;
    for app in ["1", APP] {
        for &size in &args.sizes {
            let until = Instant::now() + Duration::from_secs(args.secs);
            // Each side has a thread and a runtime of its own, so neither times the other.
            let (addr, max_open, fresh) = (args.addr, args.max_open, args.fresh);
            let app_owned = app.to_owned();
            let attacker = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(attack(addr, &app_owned, size, until, max_open))
            });
            let sender = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(legitimate(addr, until, first_event, fresh))
            });
            let (opened, most) = attacker.join().expect("the attacker");
            let (mut times, failures) = sender.join().expect("the legitimate sender");
            first_event += 10_000;
            times.sort_by(f64::total_cmp);
            let sent = times.len() + failures.len();
            let fast = times.iter().filter(|t| **t < 2.0).count();
            println!(
                "{:>10} {:>9} | {:>9} {:>9} | {:>5} {:>5} {:>7} {:>7.1} {:>7.1} {:>7.1}",
                app,
                size,
                opened,
                most,
                sent,
                times.len(),
                fast,
                quantile(&times, 0.5) * 1000.0,
                quantile(&times, 0.99) * 1000.0,
                times.last().copied().unwrap_or(f64::NAN) * 1000.0,
            );
            for failure in failures.iter().take(3) {
                println!("    not 200: {failure}");
            }
            // The attacker's last connections close before the next phase.
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}
