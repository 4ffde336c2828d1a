use std::process::ExitCode;

use clap::{Parser, Subcommand};
use roomsync::{
    config::Config,
    startup::{self, Application},
    store, telemetry,
};

/// Receiver for Tencent Cloud Room (TUIRoomKit) callbacks. Configuration comes from the
/// environment (and a .env file if present); see README.md.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Exit 0 if the server on LISTEN_ADDR answers /healthz (for container health checks).
    Healthcheck,
    /// Recompute rooms, room_members, room_seats and the attendance ledger (room_stays,
    /// room_sessions, under the configured policy) from the room_events history, then exit.
    Rebuild,
    /// Inspect the local journal (JOURNAL_PATH): list parked and unreadable records, export
    /// one, make parked records due now, or remove one this version cannot decode. Listing and
    /// exporting work while the service runs.
    Journal {
        #[command(subcommand)]
        action: JournalAction,
    },
    /// Refused callbacks (rejected_callbacks).
    Rejected {
        #[command(subcommand)]
        action: RejectedAction,
    },
    /// Compare live rooms with Tencent's REST API now, print what differs, and store the
    /// corrections (drift repair; needs TENCENT_SECRET_KEY). Exit 0 when every room asked for
    /// could be checked.
    Reconcile {
        /// Only this app (default: every app with a key).
        #[arg(long)]
        app: Option<i64>,
        /// Only this room (default: every live room).
        #[arg(long)]
        room: Option<String>,
        /// Print the differences, store nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Tencent's callback configuration of each app: check it, or set it up. Uses the drift
    /// repair credentials (TENCENT_SECRET_KEY, TENCENT_API_BASE, TENCENT_ADMIN_ACCOUNT); the
    /// database is not used.
    Tencent {
        #[command(subcommand)]
        action: TencentAction,
    },
}

#[derive(Subcommand)]
enum TencentAction {
    /// Compare each app's callback configuration with what roomsync handles and with
    /// PUBLIC_CALLBACK_URL; one line per finding. Exit 0: all right; 1: a finding; 2: Tencent
    /// could not be asked (network, key or UserSig), or no TENCENT_SECRET_KEY.
    Check {
        /// Only this app (default: every app with a key).
        #[arg(long)]
        app: Option<i64>,
        /// The products to check. A product without configuration is a finding when named
        /// here, or when the app has neither.
        #[arg(long, value_enum, default_value_t = ProductArg::Both)]
        product: ProductArg,
    },
    /// Point the callbacks at PUBLIC_CALLBACK_URL and switch on every command roomsync
    /// handles (set_callback when there is no configuration, else update_callback); commands
    /// already on stay on. Prints what changes. Exit 0: done; 1: Tencent refused the change;
    /// 2: Tencent could not be asked, or PUBLIC_CALLBACK_URL or TENCENT_SECRET_KEY is unset.
    Configure {
        /// Only this app (default: every app with a key).
        #[arg(long)]
        app: Option<i64>,
        /// The products to configure.
        #[arg(long, value_enum, default_value_t = ProductArg::Room)]
        product: ProductArg,
        /// Print what would change; send nothing but the reads.
        #[arg(long)]
        dry_run: bool,
    },
}

/// TUIRoomKit (`room`), TUILiveKit (`live`), or both.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ProductArg {
    Room,
    Live,
    Both,
}

impl From<ProductArg> for roomsync::setup::Selection {
    fn from(arg: ProductArg) -> Self {
        match arg {
            ProductArg::Room => Self::Room,
            ProductArg::Live => Self::Live,
            ProductArg::Both => Self::Both,
        }
    }
}

// jemalloc, with a background thread that returns pages unused for a second to the system
// (BENCHMARKS.md#hostile-bodies: glibc's malloc kept a wave's memory).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (the prefixed symbol of tikv-jemallocator's build).
#[cfg(not(target_env = "msvc"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8; 53] = b"background_thread:true,dirty_decay_ms:1000,narenas:4\0";

#[derive(Subcommand)]
enum JournalAction {
    /// Print every parked record (key, attempts, next attempt, error) and the pending count.
    List,
    /// Print one record (pending or parked) as JSON: the request as received.
    Export { key: u64 },
    /// Make parked records due now (all, or the keys given); the service must be stopped.
    Retry { keys: Vec<u64> },
    /// Remove one record this version cannot decode (export it first); the service must be
    /// stopped. A record that decodes is never removed: the service applies it.
    Remove { key: u64 },
}

#[derive(Subcommand)]
enum RejectedAction {
    /// Parse refused callbacks again with this version's parser and bounds: store those that
    /// parse now (exactly once, in EventTime order with the rest of the history) and record
    /// today's code and reason for the others. Prints the counts.
    Reapply {
        /// Only this app.
        #[arg(long)]
        app: Option<i64>,
        /// Only rows received at or after this time (RFC 3339, or a date: 2026-12-01).
        #[arg(long, value_parser = parse_time)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only rows received before this time (RFC 3339, or a date).
        #[arg(long, value_parser = parse_time)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Only rows refused with this ErrorCode.
        #[arg(long)]
        code: Option<i32>,
        /// Say what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// A time as RFC 3339, or a date (midnight UTC).
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.to_utc());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        .map_err(|_| {
            format!("{text:?}: an RFC 3339 time (2026-12-01T08:00:00Z) or a date (2026-12-01)")
        })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // A missing .env is normal; a broken one is not.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("roomsync: cannot read .env: {e}");
        return ExitCode::FAILURE;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("roomsync: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logging(config.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => migrate(&config).await,
        Command::Healthcheck => healthcheck::probe(config.listen_addr).await,
        Command::Rebuild => rebuild(&config).await,
        Command::Journal { action } => journal(&config, action),
        Command::Rejected {
            action:
                RejectedAction::Reapply {
                    app,
                    since,
                    until,
                    code,
                    dry_run,
                },
        } => {
            let filter = roomsync::reapply::Filter {
                app,
                since,
                until,
                code,
            };
            reapply(&config, &filter, dry_run).await
        }
        Command::Reconcile { app, room, dry_run } => {
            reconcile(config, app, room.as_deref(), dry_run).await
        }
        // Its own exit statuses: 1 is a finding, 2 a check that could not be made.
        Command::Tencent { action } => return tencent(&config, action).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "roomsync failed");
            eprintln!("roomsync: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let addr = config.listen_addr;
    let app = Application::build(config).await.map_err(chain)?;
    tracing::info!(%addr, port = app.port(), "roomsync listening");
    app.run_until_stopped().await?;
    Ok(())
}

mod healthcheck {
    use std::{net::SocketAddr, time::Duration};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One plain HTTP/1.0 GET on loopback: the image needs no curl, and the service no HTTP
    /// client library for this alone.
    pub async fn probe(listen: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
        let target = SocketAddr::new(
            if listen.ip().is_unspecified() {
                [127, 0, 0, 1].into()
            } else {
                listen.ip()
            },
            listen.port(),
        );
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(target).await?;
            stream
                .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .await?;
            let mut head = vec![0; 64];
            let n = stream.read(&mut head).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..n]).into_owned())
        };
        let head = tokio::time::timeout(Duration::from_secs(3), exchange).await??;
        match head.split_whitespace().nth(1) {
            Some("200") => Ok(()),
            other => Err(format!("/healthz on {target} answered {other:?}").into()),
        }
    }
}

async fn tencent(config: &Config, action: TencentAction) -> ExitCode {
    use roomsync::{setup, tencent::TencentClient};
    let not_asked = |message: &str| {
        eprintln!("roomsync: {message}");
        ExitCode::from(setup::EXIT_NOT_ASKED)
    };
    let Some(drift) = &config.drift_repair else {
        return not_asked(
            "Tencent's REST API needs credentials: set TENCENT_SECRET_KEY (and TENCENT_API_BASE for the app's region)",
        );
    };
    let client = match TencentClient::new(drift) {
        Ok(client) => client,
        Err(e) => return not_asked(&telemetry::error_chain(&e)),
    };
    let (app, selection) = match &action {
        TencentAction::Check { app, product } | TencentAction::Configure { app, product, .. } => {
            (*app, setup::Selection::from(*product))
        }
    };
    let apps = match setup::apps(&client, app) {
        Ok(apps) => apps,
        Err(message) => return not_asked(&message),
    };
    let ours = config.public_callback_url.as_ref();
    let code = match action {
        TencentAction::Check { .. } => {
            let signed = config.callback_token.is_some();
            let report = setup::check(&client, &apps, selection, ours, signed).await;
            println!("{report}");
            report.exit_code()
        }
        TencentAction::Configure { dry_run, .. } => {
            let Some(ours) = ours else {
                return not_asked(
                    "configure needs PUBLIC_CALLBACK_URL: the https:// URL at which Tencent reaches roomsync's /callback",
                );
            };
            let report = setup::configure(&client, &apps, selection, ours, dry_run).await;
            println!("{report}");
            report.exit_code()
        }
    };
    ExitCode::from(code)
}

async fn reapply(
    config: &Config,
    filter: &roomsync::reapply::Filter,
    dry_run: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let pool = startup::database_pool(config).map_err(chain)?;
    let report = roomsync::reapply::reapply(
        &pool,
        &config.sdk_app_ids,
        config.rules(),
        config.event_time_max_future,
        filter,
        dry_run,
    )
    .await?;
    tracing::info!(%report, dry_run, "refused callbacks parsed again");
    println!("{}{report}", if dry_run { "dry run: " } else { "" });
    Ok(())
}

async fn rebuild(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let pool = startup::database_pool(config).map_err(chain)?;
    let report = roomsync::rebuild::rebuild(&pool, config.rules()).await?;
    tracing::info!(
        replayed = report.replayed,
        skipped = report.skipped,
        changed_members = report.changed_members,
        "view rebuilt from history"
    );
    println!(
        "rebuilt from {} history rows ({} skipped); {} members changed",
        report.replayed, report.skipped, report.changed_members
    );
    Ok(())
}

async fn reconcile(
    config: Config,
    app: Option<i64>,
    room: Option<&str>,
    dry_run: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    use roomsync::{
        callback::{Id, SdkAppId},
        reconcile::{Mode, Reconciler},
        tencent::TencentClient,
    };
    let drift = config
        .drift_repair
        .clone()
        .ok_or("drift repair is not configured: set TENCENT_SECRET_KEY")?;
    let apps = match app {
        None => Vec::new(),
        Some(raw) => vec![SdkAppId::from_i64(raw).ok_or("--app must be a positive integer")?],
    };
    let room = room
        .map(Id::parse)
        .transpose()
        .map_err(|e| format!("--room {e}"))?;
    let pool = startup::database_pool(&config).map_err(chain)?;
    let client = TencentClient::new(&drift).map_err(chain)?;
    let metrics = std::sync::Arc::new(telemetry::Metrics::new());
    let (writer, mut writer_tasks) = startup::command_writer(&config, &pool, metrics.clone())
        .await
        .map_err(chain)?;
    let reconciler = Reconciler::new(pool.clone(), writer, client, drift, metrics);
    if let Some(app) = apps.first().filter(|a| !reconciler.knows(**a)) {
        return Err(format!("app {} has no key in TENCENT_SECRET_KEY", app.get()).into());
    }
    let mode = if dry_run { Mode::DryRun } else { Mode::Apply };
    let rooms = reconciler.rooms_to_check(&apps, room.as_ref()).await?;
    let (mut failed, mut unknown) = (0, 0);
    for (app, room) in &rooms {
        let label = format!("app {} room {:?}", app.get(), room.as_str());
        match reconciler.check_room(*app, room, mode).await {
            Ok(report) if report.unknown => {
                unknown += 1;
                println!("{label}: unknown room: {report}");
            }
            Ok(report) => println!("{label}: {report}"),
            Err(error) => {
                failed += 1;
                println!("{label}: not checked: {}", telemetry::error_chain(&error));
            }
        }
    }
    let stored = if dry_run {
        "dry run: nothing stored"
    } else {
        "corrections stored"
    };
    println!(
        "{} rooms checked, {failed} failed, {unknown} unknown ({stored})",
        rooms.len() - failed - unknown
    );
    drop(reconciler);
    while writer_tasks.join_next().await.is_some() {}
    pool.close().await;
    if failed > 0 {
        return Err(format!("{failed} of {} rooms could not be checked", rooms.len()).into());
    }
    // A room asked for by name that no app's view has is a typo, not a successful check
    // (with several apps, one that has it is enough).
    if let Some(room) = room.filter(|_| unknown > 0 && unknown == rooms.len()) {
        return Err(format!("room {:?} is unknown: not in the view", room.as_str()).into());
    }
    Ok(())
}

fn journal(config: &Config, action: JournalAction) -> Result<(), Box<dyn std::error::Error>> {
    use roomsync::journal::operator;
    let path = &config.journal_path;
    if !path.exists() {
        return Err(format!("no journal at {}", path.display()).into());
    }
    match action {
        JournalAction::List => {
            let listing = operator::list(path).map_err(chain)?;
            for entry in &listing.parked {
                let state = entry.parked.as_ref().expect("parked entries have a state");
                println!(
                    "{}\tapp {}\treceived {}\tattempts {}\tnext {}\t{}",
                    entry.key,
                    entry.record.sdk_app_id,
                    entry.record.received_at.to_rfc3339(),
                    state.attempts,
                    state.next_attempt_at.to_rfc3339(),
                    state.error
                );
            }
            for (key, size, version) in &listing.unreadable {
                let version = version.map_or_else(|| "none".to_owned(), |v| v.to_string());
                println!(
                    "{key}\tunreadable: {size} bytes, layout version {version} (a newer roomsync reads it; export or remove it)"
                );
            }
            println!(
                "{} parked, {} pending, {} unreadable",
                listing.parked.len(),
                listing.pending,
                listing.unreadable.len()
            );
        }
        JournalAction::Export { key } => {
            let entry = match operator::get(path, key) {
                Ok(entry) => entry.ok_or_else(|| format!("no record {key} in the journal"))?,
                // One this version cannot decode: its bytes, for a newer version or a person.
                Err(roomsync::journal::JournalError::Damaged) => {
                    use base64::Engine as _;
                    let bytes = operator::raw(path, key)
                        .map_err(chain)?
                        .ok_or_else(|| format!("no record {key} in the journal"))?;
                    let record = serde_json::json!({
                        "key": key,
                        "unreadable": true,
                        "bytes_base64": base64::engine::general_purpose::STANDARD.encode(&bytes),
                    });
                    println!("{record}");
                    return Ok(());
                }
                Err(error) => return Err(chain(error)),
            };
            let parked = entry.parked.map(|p| {
                serde_json::json!({
                    "attempts": p.attempts,
                    "first_failed_at": p.first_failed_at.to_rfc3339(),
                    "next_attempt_at": p.next_attempt_at.to_rfc3339(),
                    "error": p.error,
                })
            });
            let record = serde_json::json!({
                "key": entry.key,
                "sdk_app_id": entry.record.sdk_app_id,
                "received_at": entry.record.received_at.to_rfc3339(),
                "query": entry.record.query,
                "body": entry.record.body,
                "parked": parked,
            });
            println!("{record}");
        }
        JournalAction::Retry { keys } => {
            let keys = (!keys.is_empty()).then_some(keys.as_slice());
            let changed = operator::retry_now(path, keys).map_err(|e| {
                format!(
                    "{} (is the service running? It retries parked records by itself, at least once a minute)",
                    telemetry::error_chain(&e)
                )
            })?;
            println!("{changed} parked records due now; the service tries them at its next start");
        }
        JournalAction::Remove { key } => {
            operator::remove_unreadable(path, key).map_err(|e| match e {
                operator::RemoveError::Journal(e) => format!(
                    "{} (is the service running? Stop it first)",
                    telemetry::error_chain(&e)
                ),
                other => other.to_string(),
            })?;
            println!("record {key} removed");
        }
    }
    Ok(())
}

async fn migrate(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let pool = startup::database_pool(config).map_err(chain)?;
    // Say why the database cannot be reached (refused, certificate, password), not only that a
    // pool timed out.
    store::connect_once(&pool.connect_options(), std::time::Duration::from_secs(10))
        .await
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
    store::ensure_schema(&pool.connect_options(), true)
        .await
        .map_err(chain)?;
    Ok(())
}

/// Flattens an error and its sources into one message for the operator.
fn chain(error: impl std::error::Error) -> Box<dyn std::error::Error> {
    telemetry::error_chain(&error).into()
}
