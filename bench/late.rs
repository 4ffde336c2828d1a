//! "A late event in a long history" (BENCHMARKS.md): the cost of a callback older than what a
//! room's view and attendance ledger already hold, against the room's history length.
//!
//! For each history length (`--events`, default 100,000 and 1,000,000), a fresh database gets
//! one room whose history is that many one-member enters and leaves over sessions of
//! `--per-session` events (an hour apart, so each session empties beyond the grace), written
//! in order through the library's own write path (the view and the ledger exactly as live
//! ingestion makes them). Then, timed one transaction at a time through that same path:
//! - `in order`: a new enter after everything (the fold goes on from the rows);
//! - `late, newest session`: a leave inside the newest session, older than its events;
//! - `late, 10 sessions back`: the same ten sessions earlier (folded again from there on).
//!
//! Each figure is the median (and max) of `--repeat` transactions, each a distinct event.
//! The reference, measured in the same run: `pgbench` running the late path's one history
//! read (the window of the newest session) on the same tables.
//!
//! ```sh
//! bench/late                      # 100,000 and 1,000,000 events
//! bench/late --events 20000       # one length
//! ```
//! Loopback only: the database URL must name 127.0.0.1, ::1 or localhost.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use roomsync::{
    callback::{Callback, CallbackQuery, parse_stored},
    store::{attendance::Policy, write_batch},
};
use serde_json::json;
use sqlx::{Executor, PgPool, postgres::PgPoolOptions};

const APP: i64 = 1_400_000_001;
const ROOM: &str = "long-room";
/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000;
const HOUR: i64 = 3_600_000;

#[derive(Parser, Debug)]
struct Args {
    /// PostgreSQL server (its `postgres` database); the benchmark's database is made there.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// History lengths to measure, one database each.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    events: Vec<usize>,
    /// Events per session (half enters, half leaves).
    #[arg(long, default_value_t = 200)]
    per_session: usize,
    /// Timed transactions per figure.
    #[arg(long, default_value_t = 21)]
    repeat: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let host = args
        .database_url
        .split('@')
        .nth(1)
        .unwrap_or(&args.database_url);
    if !["127.0.0.1", "[::1]", "localhost"]
        .iter()
        .any(|h| host.starts_with(h))
    {
        return Err("the database must be on loopback".into());
    }
    assert!(args.per_session % 2 == 0 && args.per_session / 2 > args.repeat + 1);
    let mut report = Vec::new();
    for &events in &args.events {
        report.push(measure(&args, events).await?);
    }
    println!();
    println!(
        "history events | sessions | in order | late, newest session | late, 10 sessions back | pgbench: newest session's window"
    );
    for line in &report {
        println!("{line}");
    }
    Ok(())
}

async fn measure(args: &Args, events: usize) -> Result<String, Box<dyn std::error::Error>> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.database_url)
        .await?;
    admin
        .execute("DROP DATABASE IF EXISTS roomsync_late WITH (FORCE)")
        .await?;
    admin.execute("CREATE DATABASE roomsync_late").await?;
    let url = format!(
        "{}/roomsync_late",
        args.database_url.rsplit_once('/').expect("a URL").0
    );
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await?;
    roomsync::store::MIGRATOR.run(&pool).await?;
    let policy = Policy::default();

    let sessions = events / args.per_session;
    let half = args.per_session / 2;
    eprintln!("late: writing {events} events over {sessions} sessions");
    let started = Instant::now();
    let mut batch = Vec::with_capacity(256);
    for s in 0..sessions {
        for (i, user) in (0..half).map(|i| (i, user(s, i))) {
            batch.push(callback(enter_body(&user, at(s, i))));
            if batch.len() == 256 {
                write(&pool, policy, &mut batch).await?;
            }
        }
        for (i, user) in (0..half).map(|i| (i, user(s, i))) {
            batch.push(callback(leave_body(&user, at(s, half + i))));
            if batch.len() == 256 {
                write(&pool, policy, &mut batch).await?;
            }
        }
    }
    write(&pool, policy, &mut batch).await?;
    pool.execute("VACUUM ANALYZE").await?;
    eprintln!("late: written in {:.0?}", started.elapsed());

    assert!(sessions > 10, "at least 11 sessions");
    let last = sessions - 1;
    let mut in_order = Vec::new();
    let mut newest = Vec::new();
    let mut back = Vec::new();
    for k in 0..args.repeat {
        // A member of the newest session left earlier than its leave says: a late leave.
        let body = leave_body(&user(last, k), at(last, half - 1) - 1 - k as i64);
        newest.push(time(&pool, policy, body).await?);
        let s = last - 10;
        let body = leave_body(&user(s, k), at(s, half - 1) - 1 - k as i64);
        back.push(time(&pool, policy, body).await?);
    }
    for k in 0..args.repeat {
        // A new member enters after everything: the fold goes on from the rows.
        let body = enter_body(&format!("new-{k}"), at(sessions + 1, k));
        in_order.push(time(&pool, policy, body).await?);
    }
    // Check: the late leaves ended the stays where they said.
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM room_stays WHERE room_id = $1 AND leave_type = 'Early'",
    )
    .bind(ROOM)
    .fetch_one(&pool)
    .await?;
    assert_eq!(ended as usize, 2 * args.repeat, "every late leave applied");
    let window = pgbench_window(&url, at(last, 0)).await?;
    pool.close().await;
    Ok(format!(
        "{events} | {sessions} | {} | {} | {} | {window}",
        summary(&in_order),
        summary(&newest),
        summary(&back)
    ))
}

fn user(session: usize, i: usize) -> String {
    format!("u{session}-{i}")
}

/// The i-th event of session `s`: sessions an hour apart, events a second apart.
fn at(s: usize, i: usize) -> i64 {
    T0 + s as i64 * HOUR + i as i64 * 1000
}

fn enter_body(user: &str, at: i64) -> serde_json::Value {
    json!({"CallbackCommand": "Room.CallbackAfterMemberEnter", "Operator_Account": user,
           "RoomId": ROOM, "MemberCount": 1, "Type": "Enter", "MemberList_Account": [user],
           "EventTime": at})
}

fn leave_body(user: &str, at: i64) -> serde_json::Value {
    let kind = if at % 1000 == 0 { "Leave" } else { "Early" };
    json!({"CallbackCommand": "Room.CallbackAfterMemberLeave", "Operator_Account": user,
           "RoomId": ROOM, "MemberCount": 0, "Type": kind, "Reason": "bench",
           "MemberList_Account": [user], "EventTime": at})
}

fn callback(body: serde_json::Value) -> Callback {
    let query = CallbackQuery {
        command: body["CallbackCommand"].as_str().map(str::to_owned),
        ..CallbackQuery::default()
    };
    parse_stored(APP, &query, body.to_string().as_bytes(), Utc::now()).expect("a valid callback")
}

async fn write(
    pool: &PgPool,
    policy: Policy,
    batch: &mut Vec<Callback>,
) -> Result<(), Box<dyn std::error::Error>> {
    let refs: Vec<&Callback> = batch.iter().collect();
    write_batch(pool, None, policy.into(), &refs).await?;
    batch.clear();
    Ok(())
}

async fn time(
    pool: &PgPool,
    policy: Policy,
    body: serde_json::Value,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let callback = callback(body);
    let started = Instant::now();
    write_batch(pool, None, policy.into(), &[&callback]).await?;
    Ok(started.elapsed())
}

fn summary(times: &[Duration]) -> String {
    let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    format!(
        "{:.1} ms (max {:.1})",
        ms[ms.len() / 2],
        ms.last().copied().unwrap_or(0.0)
    )
}

/// pgbench, one client, 5 s: the late path's history read of the newest session's window.
async fn pgbench_window(url: &str, from_ms: i64) -> Result<String, Box<dyn std::error::Error>> {
    let from = DateTime::from_timestamp_millis(from_ms).expect("a time");
    let script = format!(
        "SELECT count(*) FROM (SELECT callback_command, event_at, event_type, reason, member_list \
         FROM room_events WHERE sdk_app_id = {APP} AND room_id = '{ROOM}' \
         AND event_at >= '{}' AND callback_command = ANY(ARRAY['Room.CallbackAfterMemberEnter', \
         'Room.CallbackAfterMemberLeave', 'Live.CallbackAfterMemberStateChanged', \
         'Room.CallbackAfterDestroyRoom', 'Live.CallbackAfterDestroyRoom', 'roomsync.Reconcile'])) w;\n",
        from.to_rfc3339()
    );
    let path = std::env::temp_dir().join(format!("roomsync-late-{}.sql", std::process::id()));
    std::fs::write(&path, script)?;
    let out = std::process::Command::new("pgbench")
        .args(["-n", "-c", "1", "-T", "5", "-f"])
        .arg(&path)
        .arg(url)
        .output()?;
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    let latency = text
        .lines()
        .find(|l| l.starts_with("latency average"))
        .and_then(|l| l.split('=').nth(1))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| format!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr)));
    Ok(latency)
}
