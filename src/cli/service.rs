//! The service's own commands: `serve` (the default), `migrate`, `healthcheck` and `rebuild`.

use std::{net::SocketAddr, time::Duration};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::failure::chain;
use crate::{
    config::Config,
    startup::{self, Application},
    store,
};

pub(super) async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let addr = config.listen_addr;
    let app = Application::build(config).await.map_err(chain)?;
    tracing::info!(target: "roomsync", %addr, port = app.port(), "roomsync listening");
    if let Some(api_port) = app.api_port() {
        tracing::info!(target: "roomsync", api_port, "the read API and the console listening apart");
    }
    app.run_until_stopped().await?;
    Ok(())
}

pub(super) async fn migrate(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let pool = startup::database_pool(config).map_err(chain)?;
    // Say why the database cannot be reached (refused, certificate, password), not only that a
    // pool timed out.
    store::connect_once(&pool.connect_options(), Duration::from_secs(10))
        .await
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
    store::ensure_schema(&pool.connect_options(), true)
        .await
        .map_err(chain)?;
    Ok(())
}

/// One plain HTTP/1.0 GET on loopback: the image needs no curl, and the service no HTTP
/// client library for this alone.
pub(super) async fn healthcheck(listen: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
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

pub(super) async fn rebuild(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let pool = startup::database_pool(config).map_err(chain)?;
    let report = crate::rebuild::rebuild(&pool, config.rules()).await?;
    tracing::info!(
        target: "roomsync",
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
