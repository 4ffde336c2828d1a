//! The database connection itself, as roomsync's pool opens it.

use std::{
    os::fd::{BorrowedFd, RawFd},
    time::Duration,
};

use sqlx::PgPool;

/// A statement larger than the socket's send buffer leaves in two writes; with Nagle's
/// algorithm the second waits for PostgreSQL's delayed ACK, 40 ms, on every such batch
/// (vendor/README.md). roomsync's connections must set TCP_NODELAY.
#[sqlx::test]
async fn the_database_connection_does_not_wait_for_nagle(pool: PgPool) {
    let options = (*pool.connect_options()).clone();
    assert!(
        options.get_socket().is_none(),
        "this test needs DATABASE_URL to name a TCP host, not a Unix socket"
    );
    let pool = roomsync::store::connect_lazy(options, 1, Duration::from_secs(10));
    let mut conn = pool.acquire().await.expect("a connection");
    let port = sqlx::query_scalar!(r#"SELECT inet_client_port() AS "port!""#)
        .fetch_one(&mut *conn)
        .await
        .expect("the client's port");
    let sockets = tcp_sockets();
    let nodelay = sockets
        .iter()
        .find(|(local, _)| i32::from(*local) == port)
        .map(|(_, nodelay)| *nodelay)
        .unwrap_or_else(|| panic!("no socket of this process on port {port}: {sockets:?}"));
    assert!(nodelay, "the connection to PostgreSQL waits for Nagle");
}

/// (local port, TCP_NODELAY) of this process's TCP sockets.
fn tcp_sockets() -> Vec<(u16, bool)> {
    let mut sockets = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let Ok(entry) = entry else { continue };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: only read from, while other tests may close it: at worst the options of
        // another descriptor (or an error) come back, and the port then does not match.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let local = socket.local_addr().ok().and_then(|a| a.as_socket());
        if let (Some(local), Ok(nodelay)) = (local, socket.tcp_nodelay()) {
            sockets.push((local.port(), nodelay));
        }
    }
    sockets
}
