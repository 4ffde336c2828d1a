//! The `roomsync` command line: its arguments (clap), and [`run`], which reads the
//! configuration and hands each subcommand to its module. `main.rs` only calls [`run`].
//!
//! - `service`: `serve` (the default), `migrate`, `healthcheck`, `rebuild`.
//! - `journal`: `journal` (the local journal's records).
//! - `rejected`: `rejected reapply` (refused callbacks parsed again).
//! - `reconcile`: `reconcile` (drift repair, now).
//! - `tencent`: `tencent check` and `configure` (Tencent's callback configuration).
//! - `failure`: how a command's error reaches the operator.
//!
//! The commands log under the target `roomsync`, as they did when they lived in the binary.

mod failure;
mod journal;
mod reconcile;
mod rejected;
mod service;
mod tencent;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{config::Config, telemetry};
use journal::JournalAction;
use rejected::RejectedAction;
use tencent::TencentAction;

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

/// Parses the command line, reads `.env` and the configuration, starts logging and runs the
/// subcommand. Exit statuses: 0 done; 1 the command failed (`tencent` has its own, see its
/// help); 2 the configuration is invalid.
pub async fn run() -> ExitCode {
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
        Command::Serve => service::serve(config).await,
        Command::Migrate => service::migrate(&config).await,
        Command::Healthcheck => service::healthcheck(config.listen_addr).await,
        Command::Rebuild => service::rebuild(&config).await,
        Command::Journal { action } => journal::journal(&config, action),
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
            let filter = crate::reapply::Filter {
                app,
                since,
                until,
                code,
            };
            rejected::reapply(&config, &filter, dry_run).await
        }
        Command::Reconcile { app, room, dry_run } => {
            reconcile::reconcile(config, app, room.as_deref(), dry_run).await
        }
        // Its own exit statuses: 1 is a finding, 2 a check that could not be made.
        Command::Tencent { action } => return tencent::tencent(&config, action).await,
    };
    failure::exit_code(result)
}
