//! The real binary as an operator runs it: SIGTERM under load, and `kill -9` at any moment
//! (docs/durability.md). Nothing answered 200 may be lost.

use std::{
    collections::BTreeSet,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::{helpers::*, rows::*};

/// A running `roomsync` binary. Dropping it kills the process (a failed assertion leaves
/// nothing running) and removes its working directory.
struct Process {
    child: Child,
    address: String,
    _work_dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        // Errors mean it has already exited (and been waited for): nothing to clean up.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `roomsync` against `pool`'s database through `proxy`, with the journal file
/// `journal`, on a port of its own choosing (port 0, read from its log line, as bench/run does:
/// a port reserved here and freed could be taken before it binds), and waits until it answers
/// `/healthz`. Its logs go to this process's stderr with `TEST_LOG` (at that filter, plus
/// roomsync's `info` for the port), else nowhere.
async fn start(pool: &PgPool, proxy: &Proxy, journal: &std::path::Path) -> Process {
    let work_dir = tempfile::tempdir().unwrap();
    let log_filter = test_log_filter();
    let show = log_filter.is_some();
    let child = Command::new(env!("CARGO_BIN_EXE_roomsync"))
        // Away from any developer .env file.
        .current_dir(work_dir.path())
        .env("DATABASE_URL", database_url(pool, proxy.port))
        .env("SDK_APP_ID", APP_ID.to_string())
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("RUN_MIGRATIONS", "false")
        .env("JOURNAL_PATH", journal)
        .env("DATABASE_ACQUIRE_TIMEOUT_MS", "500")
        .env("LOG_FORMAT", "json")
        .env(
            "RUST_LOG",
            format!("{},roomsync=info", log_filter.as_deref().unwrap_or("warn")),
        )
        .stdout(Stdio::piped())
        .stderr(if show {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("roomsync starts");
    // Owned from here on, so an assertion below cannot leave it running.
    let mut process = Process {
        child,
        address: String::new(),
        _work_dir: work_dir,
    };
    let stdout = process.child.stdout.take().unwrap();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    // Reads the log to its end (a full pipe would stall the server): the port once, every
    // line to stderr with TEST_LOG.
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if show {
                eprintln!("{line}");
            }
            let port = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|entry| entry["port"].as_u64());
            if let Some(port) = port {
                let _ = port_tx.send(port);
            }
        }
    });
    let port = tokio::task::spawn_blocking(move || port_rx.recv_timeout(Duration::from_secs(15)))
        .await
        .unwrap()
        .expect("roomsync logs the port it listens on");
    process.address = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let up = eventually(Duration::from_secs(15), || {
        let request = client.get(format!("{}/healthz", process.address)).send();
        async move { request.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    assert!(up, "roomsync answered /healthz");
    process
}

/// Sends unique enters (EventTime from `first`) with 8 in flight until the server stops
/// answering or `limit` is reached; returns the EventTimes answered 200.
async fn stream(address: String, first: i64, limit: i64, acked: Arc<Mutex<BTreeSet<i64>>>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let next = Arc::new(std::sync::atomic::AtomicI64::new(first));
    let senders = (0..8).map(|_| {
        let (client, address, next, acked) = (client.clone(), address.clone(), next.clone(), acked.clone());
        async move {
            loop {
                let at = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if at >= first + limit {
                    return;
                }
                let body = enter(&format!("room{}", at % 7), &[&format!("user{at}")], at);
                let url = format!("{address}/callback?SdkAppid={APP_ID}&CallbackCommand=Room.CallbackAfterMemberEnter");
                match client.post(url).body(body.to_string()).send().await {
                    Ok(response) if response.status() == 200 => {
                        acked.lock().unwrap().insert(at);
                    }
                    Ok(_) => {}
                    // The server is gone.
                    Err(_) => return,
                }
            }
        }
    });
    futures_util::future::join_all(senders).await;
}

/// Waits (at most 20 s) until `count` callbacks have been answered 200.
async fn wait_until_acked(acked: &Mutex<BTreeSet<i64>>, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test]
async fn sigterm_under_load_exits_0_and_loses_nothing(pool: PgPool) {
    let proxy = Proxy::start(server_of(&pool)).await;
    let journal_dir = tempfile::tempdir().unwrap();
    let journal = journal_dir.path().join("journal.redb");
    let mut process = start(&pool, &proxy, &journal).await;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let load = tokio::spawn(stream(process.address.clone(), 1, 3000, acked.clone()));
    wait_until_acked(&acked, 100).await;
    let term = Command::new("kill")
        .args(["-TERM", &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "exited within a bounded time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    load.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 100);
    let stored = history_times(&pool).await;
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} answered 200 but not stored: {lost:?}",
        lost.len()
    );
}

#[sqlx::test]
async fn kill_9_at_any_moment_loses_nothing_answered_200(pool: PgPool) {
    let proxy = Proxy::start(server_of(&pool)).await;
    let journal_dir = tempfile::tempdir().unwrap();
    let journal = journal_dir.path().join("journal.redb");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    // Round 1 runs with the database away, so the kill lands while writing the journal.
    for round in 0..4_i64 {
        if round == 1 {
            proxy.cut()
        } else {
            proxy.restore()
        }
        let mut process = start(&pool, &proxy, &journal).await;
        let before = acked.lock().unwrap().len();
        let load = tokio::spawn(stream(
            process.address.clone(),
            round * 100_000 + 1,
            5000,
            acked.clone(),
        ));
        wait_until_acked(&acked, before + 50 + 40 * round as usize).await;
        process.child.kill().unwrap(); // SIGKILL
        process.child.wait().unwrap();
        load.await.unwrap();
    }
    // A last start with the database up drains whatever the journal holds.
    proxy.restore();
    let mut process = start(&pool, &proxy, &journal).await;
    let acked = acked.lock().unwrap().clone();
    let complete = eventually(Duration::from_secs(30), || async {
        acked.is_subset(&history_times(&pool).await)
    })
    .await;
    let stored = history_times(&pool).await;
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        complete && lost.is_empty(),
        "{} answered 200 but not stored: {lost:?}",
        lost.len()
    );
    assert_eq!(history(&pool).await, stored.len() as i64, "no duplicates");
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}

/// `roomsync journal …` with the service's configuration, in `dir`; exit status and output.
fn journal_command(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_roomsync"))
        .current_dir(dir)
        .env("DATABASE_URL", "postgres://unused@127.0.0.1/unused")
        .env("SDK_APP_ID", APP_ID.to_string())
        .env("JOURNAL_PATH", dir.join("journal.redb"))
        .env("RUST_LOG", "off")
        .arg("journal")
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test]
async fn the_journal_command_lists_exports_and_retries_parked_records() {
    use roomsync::journal::{Journal, Record};
    let dir = tempfile::tempdir().unwrap();
    let record = |n: i64| Record {
        sdk_app_id: APP_ID,
        received_at: chrono::Utc::now(),
        query: format!("SdkAppid={APP_ID}"),
        body: enter("r", &[&format!("u{n}")], n).to_string(),
    };
    // The running service holds the file.
    let journal = Journal::open(&dir.path().join("journal.redb"), 1 << 20).unwrap();
    journal.append(vec![record(1), record(2)]).await.unwrap();
    let pending = journal.pending_after(None, 10, usize::MAX).await.unwrap();
    let key = pending[0].key;
    journal
        .park(vec![(key, "not now (P0001)".into())], chrono::Utc::now())
        .await
        .unwrap();

    let (ok, listed) = journal_command(dir.path(), &["list"]);
    assert!(ok, "{listed}");
    assert!(listed.contains(&format!("{key}\tapp {APP_ID}")), "{listed}");
    assert!(
        listed.contains("attempts 1") && listed.contains("not now (P0001)"),
        "{listed}"
    );
    assert!(listed.contains("1 parked, 1 pending"), "{listed}");

    let (ok, exported) = journal_command(dir.path(), &["export", &key.to_string()]);
    assert!(ok, "{exported}");
    let exported: serde_json::Value = serde_json::from_str(exported.trim()).unwrap();
    assert_eq!(exported["body"], pending[0].record.body.as_str());
    assert_eq!(exported["parked"]["error"], "not now (P0001)");
    let (ok, missing) = journal_command(dir.path(), &["export", "999"]);
    assert!(!ok && missing.contains("no record 999"), "{missing}");

    let (ok, refused) = journal_command(dir.path(), &["retry"]);
    assert!(
        !ok && refused.contains("is the service running"),
        "{refused}"
    );
    drop(journal);
    let (ok, retried) = journal_command(dir.path(), &["retry"]);
    assert!(
        ok && retried.contains("1 parked records due now"),
        "{retried}"
    );
    let journal = Journal::open(&dir.path().join("journal.redb"), 1 << 20).unwrap();
    let due = journal
        .parked_entries(Some(chrono::Utc::now()), 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "due at once");
}

/// The `Commands:` section of `roomsync ARGS --help`: each command and its description (lines
/// that clap wraps joined again), in order.
fn commands_in_help(args: &[&str]) -> Vec<(String, String)> {
    let output = Command::new(env!("CARGO_BIN_EXE_roomsync"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{help}");
    let mut commands: Vec<(String, String)> = Vec::new();
    let section = help
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty());
    for line in section {
        let text = line.trim_start();
        // A command's line is indented by two spaces; a wrapped description's, by more.
        match (line.len() - text.len(), commands.last_mut()) {
            (2, _) => {
                let (name, description) = text.split_once(' ').unwrap_or((text, ""));
                commands.push((name.to_owned(), description.trim().to_owned()));
            }
            (_, Some((_, description))) => {
                description.push(' ');
                description.push_str(text);
            }
            _ => panic!("a description before any command: {help}"),
        }
    }
    commands
}

/// Each command's own description, and one for every command (the doc comments once sat one
/// variant off: `journal` had reconcile's text and `reconcile` none).
#[test]
fn help_describes_each_command() {
    let expected: [(&str, &[&str]); 9] = [
        ("serve", &["Run the HTTP server (the default)"]),
        ("migrate", &["Apply pending database migrations and exit"]),
        (
            "healthcheck",
            &["Exit 0 if the server on LISTEN_ADDR answers /healthz"],
        ),
        (
            "rebuild",
            &["Recompute rooms, room_members, room_seats and the attendance ledger"],
        ),
        (
            "journal",
            &[
                "Inspect the local journal (JOURNAL_PATH)",
                "Listing and exporting work",
            ],
        ),
        ("rejected", &["Refused callbacks (rejected_callbacks)"]),
        (
            "reconcile",
            &[
                "Compare live rooms with Tencent's REST API now",
                "needs TENCENT_SECRET_KEY",
                "Exit 0 when every room asked for could be checked",
            ],
        ),
        (
            "tencent",
            &[
                "Tencent's callback configuration of each app",
                "the database is not used",
            ],
        ),
        ("help", &["Print this message"]),
    ];
    let tencent: [(&str, &[&str]); 3] = [
        (
            "check",
            &[
                "Compare each app's callback configuration",
                "Exit 0: all right; 1: a finding; 2: Tencent could not be asked",
            ],
        ),
        (
            "configure",
            &[
                "Point the callbacks at PUBLIC_CALLBACK_URL",
                "commands already on stay on",
            ],
        ),
        ("help", &["Print this message"]),
    ];
    let journal: [(&str, &[&str]); 5] = [
        ("list", &["Print every parked record"]),
        ("export", &["Print one record (pending or parked) as JSON"]),
        (
            "retry",
            &["Make parked records due now", "the service must be stopped"],
        ),
        (
            "remove",
            &[
                "Remove one record this version cannot decode",
                "the service must be stopped",
            ],
        ),
        ("help", &["Print this message"]),
    ];
    let rejected: [(&str, &[&str]); 2] = [
        (
            "reapply",
            &[
                "Parse refused callbacks again with this version's parser",
                "Prints the counts",
            ],
        ),
        ("help", &["Print this message"]),
    ];
    for (args, expected) in [
        (&[][..], &expected[..]),
        (&["journal"][..], &journal[..]),
        (&["rejected"][..], &rejected[..]),
        (&["tencent"][..], &tencent[..]),
    ] {
        let commands = commands_in_help(args);
        let names: Vec<&str> = commands.iter().map(|(name, _)| name.as_str()).collect();
        let wanted: Vec<&str> = expected.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, wanted, "the commands of {args:?}");
        for ((name, description), (_, parts)) in commands.iter().zip(expected) {
            assert!(description.starts_with(parts[0]), "{name}: {description:?}");
            for part in *parts {
                assert!(description.contains(part), "{name}: {description:?}");
            }
            // Nothing of another command's text.
            for (other, other_parts) in expected.iter().filter(|(other, _)| other != name) {
                assert!(
                    !description.contains(other_parts[0]),
                    "{name} has {other}'s text: {description:?}"
                );
            }
        }
    }
}

#[test]
fn migrate_says_why_it_cannot_connect() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: the cause is named, not only a pool timeout.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let output = Command::new(env!("CARGO_BIN_EXE_roomsync"))
        .current_dir(dir.path())
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{port}/x"),
        )
        .env("SDK_APP_ID", APP_ID.to_string())
        .env("RUST_LOG", "off")
        .arg("migrate")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot connect to the database") && stderr.contains("refused"),
        "{stderr}"
    );
}
