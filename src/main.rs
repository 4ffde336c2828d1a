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
    /// Recompute rooms, room_members and room_seats from the room_events history, then exit.
    Rebuild,
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

async fn rebuild(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let pool = startup::database_pool(config).map_err(chain)?;
    let report = store::rebuild::rebuild(&pool).await?;
    tracing::info!(
        replayed = report.replayed,
        skipped = report.skipped,
        "view rebuilt from history"
    );
    println!(
        "rebuilt from {} history rows ({} skipped)",
        report.replayed, report.skipped
    );
    Ok(())
}

async fn migrate(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let pool = startup::database_pool(config).map_err(chain)?;
    store::MIGRATOR.run(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Flattens an error and its sources into one message for the operator.
fn chain(error: impl std::error::Error) -> Box<dyn std::error::Error> {
    telemetry::error_chain(&error).into()
}
