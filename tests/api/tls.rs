//! TLS to PostgreSQL as a user meets it: a server with a self-signed X.509 v1 certificate (as
//! a stock Citus node turns on) is reached with the URL a user writes, as psql reaches it; and
//! `sslmode=verify-full` still verifies (docs/scaling.md#tls).

use sqlx::{Connection, PgConnection};

use crate::server::{PrivateServer, self_signed_v1};

async fn encrypted(url: &str) -> Result<bool, sqlx::Error> {
    let mut connection = PgConnection::connect(url).await?;
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut connection)
        .await?;
    connection.close().await?;
    Ok(ssl)
}

#[tokio::test]
async fn a_self_signed_v1_certificate_is_taken_as_psql_takes_it() {
    let Some(server) = PrivateServer::start_tls() else {
        return;
    };
    let port = server.port;
    // As a user writes it (no sslmode: prefer), and with sslmode=require: encrypted.
    for url in [
        format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require"),
    ] {
        assert!(
            encrypted(&url)
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}")),
            "{url}"
        );
    }
    // Verified against the certificate itself: taken.
    let cert = server.cert();
    let verified = format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        cert.display()
    );
    assert!(encrypted(&verified).await.unwrap());
    // Verified against another root: refused, and the error says it is the certificate.
    let other = tempfile::tempdir().unwrap();
    let other_root = other.path().join("other.crt");
    self_signed_v1(&other.path().join("other.key"), &other_root);
    let wrong = format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        other_root.display()
    );
    let error = encrypted(&wrong).await.unwrap_err().to_string();
    assert!(error.contains("certificate"), "{error}");
}
