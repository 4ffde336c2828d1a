//! Running the application in-process and talking to it as Tencent does; the callback bodies
//! the tests send; a cuttable TCP proxy in front of PostgreSQL; polling.
//!
//! `TEST_LOG=1` (or a tracing filter such as `TEST_LOG=roomsync=debug`) shows the application's
//! logs for the tests that run (`scripts/test -- --nocapture` or a failure prints them).

use std::{collections::HashMap, sync::Once, time::Duration};

use roomsync::{callback::sign, config::Config, startup::Application};
use serde_json::{Value, json};
use sqlx::PgPool;

/// The app id the tests send as; `spawn_app` serves it and `1400000002`.
pub const APP_ID: i64 = 1_400_000_001;
/// A callback token for tests that switch signatures on (`CALLBACK_TOKEN`).
pub const TOKEN: &str = "test-token";

/// One running application (in this process) and a client for it.
pub struct TestApp {
    pub address: String,
    /// The read API's own address when it listens apart (`API_LISTEN_ADDR`).
    pub api_address: Option<String>,
    pub client: reqwest::Client,
    pub token: Option<String>,
    server: actix_web::dev::ServerHandle,
    /// `None` once [`TestApp::stop`] or the drop has taken it.
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Holds the default journal file; removed when the app is dropped.
    _journal_dir: tempfile::TempDir,
}

/// The tracing filter `TEST_LOG` asks for: `None` when unset, empty or `0`; `1`/`true` mean
/// `info`; anything else is a filter as in `RUST_LOG`.
pub fn test_log_filter() -> Option<String> {
    let value = std::env::var("TEST_LOG").ok()?;
    match value.trim() {
        "" | "0" | "false" | "no" | "off" => None,
        "1" | "true" | "yes" | "on" => Some("info".to_owned()),
        filter => Some(filter.to_owned()),
    }
}

/// With `TEST_LOG`, installs (once per process) a subscriber that writes to the test's
/// captured output; without it, the application logs nowhere, as before.
fn init_test_log() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Some(filter) = test_log_filter() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// Starts the real application on 127.0.0.1:0 with the test's database.
pub async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_app_with(pool, &[]).await
}

/// As [`spawn_app`], with `overrides` as extra or replaced environment variables (e.g.
/// `CALLBACK_TOKEN`, or a `JOURNAL_PATH` that two applications share on purpose).
pub async fn spawn_app_with(pool: PgPool, overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_tuned(pool, overrides, |_| {}).await
}

/// As [`spawn_app_with`], with `tune` changing the configuration last (e.g. a timing).
pub async fn spawn_app_tuned(
    pool: PgPool,
    overrides: &[(&str, &str)],
    tune: impl FnOnce(&mut Config),
) -> TestApp {
    init_test_log();
    let mut vars: HashMap<String, String> = [
        // The pool is passed in; this URL is only validated.
        ("DATABASE_URL", "postgres://unused@127.0.0.1/unused"),
        ("SDK_APP_ID", "1400000001,1400000002"),
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("RUN_MIGRATIONS", "false"),
        ("HTTP_WORKERS", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    // Each application its own journal, unless the test shares one on purpose.
    let journal_dir = tempfile::tempdir().unwrap();
    vars.insert(
        "JOURNAL_PATH".into(),
        journal_dir
            .path()
            .join("journal.redb")
            .to_string_lossy()
            .into_owned(),
    );
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let mut config = Config::from_lookup(|k| vars.get(k).cloned()).expect("test configuration");
    // The background tasks look again sooner than in production: the same behaviour, less
    // waiting (a drain notices a database that is back within 0.1 s instead of 0.5 s).
    config.timings = roomsync::config::Timings {
        drain_retry: Duration::from_millis(100),
        layout_refresh: Duration::from_secs(1),
        console_overview_fresh: Duration::from_millis(100),
        console_rooms_fresh: Duration::ZERO,
        ..Default::default()
    };
    tune(&mut config);
    let token = config
        .callback_token
        .as_ref()
        .map(|t| t.expose().to_owned());
    // A pool of the application's own (same server and settings): stopping the application
    // closes it, and the test keeps using its own.
    let app_pool = pool
        .options()
        .clone()
        .connect_lazy_with(pool.connect_options().as_ref().clone());
    let app = Application::build_with_pool(config, app_pool)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let api_address = app.api_port().map(|p| format!("http://127.0.0.1:{p}"));
    let server = app.handle();
    let running = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        // Under the server's keep-alive (5 s): a connection idle that long may be closing on the
        // server's side as the client reuses it, and the request fails (IncompleteMessage).
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    TestApp {
        address,
        api_address,
        client,
        token,
        server,
        running: Some(running),
        _journal_dir: journal_dir,
    }
}

impl Drop for TestApp {
    /// A test that ends without [`TestApp::stop`] still stops its application, in the
    /// background: otherwise the application's pool keeps its sessions, and the harness's `DROP
    /// DATABASE` waits 5 s for them, then fails and leaves the test database behind. It runs
    /// while the harness waits on that statement.
    fn drop(&mut self) {
        let (Some(running), Ok(runtime)) =
            (self.running.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let server = self.server.clone();
        runtime.spawn(async move {
            server.stop(true).await;
            let _ = running.await;
        });
    }
}

impl TestApp {
    /// Graceful stop, as on SIGTERM: in-flight requests finish, the writer drains, the pool
    /// closes (so the test database can be dropped).
    pub async fn stop(mut self) {
        let running = self.running.take().expect("stopped once");
        self.server.stop(true).await;
        running
            .await
            .expect("server task")
            .expect("server stopped cleanly");
    }

    /// POSTs a raw body with a raw query string, no Content-Type (as Tencent does).
    pub async fn post_raw(&self, query: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(format!("{}/callback?{query}", self.address))
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// The query string Tencent would append for this body, signed when a token is set.
    pub fn query_for(&self, body: &Value) -> String {
        let command = body["CallbackCommand"].as_str().unwrap_or("");
        let mut query = format!(
            "SdkAppid={APP_ID}&CallbackCommand={command}&contenttype=json&ClientIP=127.0.0.1&OptPlatform=Web"
        );
        if let Some(token) = &self.token {
            let now = chrono::Utc::now().timestamp().to_string();
            query.push_str(&format!("&RequestTime={now}&Sign={}", sign(token, &now)));
        }
        query
    }

    /// Sends a callback the way Tencent does; returns status and JSON answer.
    pub async fn send(&self, body: &Value) -> (u16, Value) {
        let response = self.post_raw(&self.query_for(body), body.to_string()).await;
        answer(response).await
    }

    /// Sends and insists on 200 OK.
    pub async fn deliver(&self, body: &Value) {
        let (status, answer) = self.send(body).await;
        assert_eq!((status, &answer), (200, &ok()), "delivering {body}");
    }

    /// GETs `path` (e.g. `/readyz`) on the application.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent")
    }
}

/// The value of one sample of `/metrics` (name and labels as exposed), 0 when absent.
pub async fn metric(app: &TestApp, sample: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A number from `/readyz` (`journal_depth`, `journal_parked`).
pub async fn readyz_count(app: &TestApp, field: &str) -> i64 {
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    ready[field].as_i64().unwrap()
}

pub async fn journal_depth(app: &TestApp) -> i64 {
    readyz_count(app, "journal_depth").await
}

/// Status and JSON body of a callback answer; asserts the JSON content type every answer has.
pub async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(
        content_type, "application/json",
        "every callback answer is JSON"
    );
    (status, response.json().await.expect("JSON answer"))
}

/// The body of a 200 answer.
pub fn ok() -> Value {
    json!({"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0})
}

/// A member-enter callback body: `users` enter `room` at `at` ms (the first user operates).
pub fn enter(room: &str, users: &[&str], at: i64) -> Value {
    json!({
        "CallbackCommand": "Room.CallbackAfterMemberEnter", "Operator_Account": users.first().copied().unwrap_or("op"),
        "RoomId": room, "MemberCount": users.len(), "Type": "Enter", "MemberList_Account": users, "EventTime": at
    })
}

/// A member-leave callback body with `Type` = `kind` and `Reason` = `reason-<kind>`.
pub fn leave(room: &str, users: &[&str], kind: &str, at: i64) -> Value {
    json!({
        "CallbackCommand": "Room.CallbackAfterMemberLeave", "Operator_Account": "op", "RoomId": room,
        "MemberCount": 0, "Type": kind, "MemberList_Account": users, "Reason": format!("reason-{kind}"), "EventTime": at
    })
}

/// A destroy-room callback body.
pub fn destroy(room: &str, at: i64) -> Value {
    json!({"CallbackCommand": "Room.CallbackAfterDestroyRoom", "Operator_Account": "admin", "RoomId": room, "EventTime": at})
}

/// A create-room callback body: a `Meeting` named `name`, owned by `owner`, for 50.
pub fn create(room: &str, name: &str, at: i64) -> Value {
    json!({
        "CallbackCommand": "Room.CallbackAfterCreateRoom", "Operator_Account": "admin",
        "RoomInfo": {"RoomId": room, "RoomName": name, "RoomType": "Meeting", "Owner_Account": "owner", "MaxMemberCount": 50},
        "ScheduleInviteeList_Account": [], "EventTime": at
    })
}

/// A callback body from `tests/fixtures/`.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The timestamp the tables hold for an `EventTime` of `at` ms.
pub fn ms(at: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(at).unwrap()
}

/// A TCP forwarder in front of PostgreSQL that a test can cut and restore: the database
/// "goes away" for one application without stopping the server other tests use.
pub struct Proxy {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `target`.
    pub async fn start(target: std::net::SocketAddr) -> Self {
        use std::sync::{
            Arc, Mutex,
            atomic::{AtomicBool, Ordering},
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (accept_open, accept_links) = (open.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                // Checked under the same lock as `cut`, so no link escapes a cut.
                let mut links = accept_links.lock().unwrap();
                if !accept_open.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused, in effect
                }
                links.push(tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        Self { port, open, links }
    }

    /// Every connection through the proxy breaks, and new ones are refused.
    pub fn cut(&self) {
        let mut links = self.links.lock().unwrap();
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for link in links.drain(..) {
            link.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// A pool for `pool`'s database that goes through this proxy.
    pub fn pool_for(&self, pool: &PgPool) -> PgPool {
        let options = pool
            .connect_options()
            .as_ref()
            .clone()
            .host("127.0.0.1")
            .port(self.port);
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_millis(500))
            .connect_lazy_with(options)
    }
}

/// Where `pool` connects (the real server behind a proxy).
pub fn server_of(pool: &PgPool) -> std::net::SocketAddr {
    let options = pool.connect_options();
    let host = match options.get_host() {
        "localhost" => "127.0.0.1",
        other => other,
    };
    format!("{host}:{}", options.get_port()).parse().unwrap()
}

/// The statements' form of the database behind `pool`, as a writer that has read the layout
/// passes it: Citus's where the extension is installed.
pub async fn dialect_of(pool: &PgPool) -> Option<roomsync::store::Dialect> {
    let citus: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
            .fetch_one(pool)
            .await
            .unwrap();
    citus.then_some(roomsync::store::Dialect::Citus)
}

/// Polls `probe` until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    probe().await
}

/// The test database's URL on `port` (the server's, or a proxy's), with the credentials and
/// the parameters (`sslmode`, scripts/test) the tests use.
pub fn database_url(pool: &PgPool, port: u16) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for the tests");
    let credentials = base
        .rsplit_once('@')
        .map_or("postgres://postgres", |(c, _)| c);
    let parameters = base.split_once('?').map_or("", |(_, p)| p);
    let database = pool
        .connect_options()
        .get_database()
        .unwrap_or("postgres")
        .to_owned();
    let url = format!("{credentials}@127.0.0.1:{port}/{database}");
    if parameters.is_empty() {
        url
    } else {
        format!("{url}?{parameters}")
    }
}

/// What the server sends until it closes the connection, and when it closed (`None`: still
/// open after `limit`).
pub async fn until_closed(
    stream: &mut (impl tokio::io::AsyncReadExt + Unpin),
    limit: Duration,
) -> (String, Option<Duration>) {
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (
        String::from_utf8_lossy(&received).into_owned(),
        closed.then(|| started.elapsed()),
    )
}

/// A trigger `name` on `room_events`' inserts: where `when` holds for `NEW`, it runs `then` (a
/// sleep, an exception), as a slow or refusing database would. The SQL is the test's own.
pub async fn on_history_insert(pool: &PgPool, name: &str, when: &str, then: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        r#"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               IF {when} THEN {then} END IF;
               RETURN NEW;
           END $$;
           CREATE TRIGGER {name} BEFORE INSERT ON room_events
               FOR EACH ROW EXECUTE FUNCTION {name}();"#
    )))
    .execute(pool)
    .await
    .unwrap();
}
