//! A PostgreSQL server of the test's own, made with `initdb` in a temporary directory and run
//! on a loopback port: a test may stop it for real (`pg_ctl stop -m fast`) while load runs,
//! without touching the server the other tests share.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use sqlx::{PgPool, postgres::PgConnectOptions};

pub struct PrivateServer {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    /// More `-c` settings (TLS).
    extra: String,
    /// initdb and the server refuse to run as root: then they run as `postgres`.
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

/// The newest installed server's programs (Debian's layout), if any.
fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    found.sort_by_key(|p| {
        let version = p.parent().and_then(Path::file_name);
        version.and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl PrivateServer {
    /// Creates and starts a server; `None` (with the reason printed) where PostgreSQL's
    /// programs are not installed, so the test is skipped rather than failed.
    pub fn start() -> Option<Self> {
        Self::start_with(false)
    }

    /// As [`Self::start`], with TLS on and a self-signed X.509 **v1** certificate for
    /// `localhost` (`cert()`), as a stock Citus node presents: what libpq-based clients such as
    /// psql accept without verification, and verify against the certificate itself.
    pub fn start_tls() -> Option<Self> {
        Self::start_with(true)
    }

    /// The TLS server's certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.data.join("server.crt")
    }

    fn start_with(tls: bool) -> Option<Self> {
        let Some(bin) = server_bin() else {
            eprintln!("SKIPPED: no PostgreSQL server programs under /usr/lib/postgresql");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown the server's directory");
        }
        let data = dir.path().join("data");
        let mut server = Self {
            bin,
            data,
            port: 0,
            extra: String::new(),
            as_postgres,
            _dir: dir,
        };
        let mut initdb = server.program("initdb");
        let made = server.run(
            initdb
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"])
                .arg(&server.data),
            "initdb",
        );
        assert!(made, "initdb made the private server");
        if tls {
            server.make_certificate();
            server.extra =
                " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".into();
        }
        // A port the kernel has just given out; another process may take it before the server
        // does, so a few tries.
        for _ in 0..5 {
            server.port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if server.try_start() {
                return Some(server);
            }
        }
        panic!("the private PostgreSQL server did not start");
    }

    /// A key and a v1 certificate (no extensions: `openssl x509 -req` without an extension
    /// file), owned by the server's user.
    fn make_certificate(&self) {
        let key = self.data.join("server.key");
        self_signed_v1(&key, &self.cert());
        if self.as_postgres {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&key)
                .arg(self.cert())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let status = Command::new("chmod").arg("600").arg(&key).status().unwrap();
        assert!(status.success());
    }

    fn program(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn run(&self, command: &mut Command, what: &str) -> bool {
        let output = command.output().unwrap();
        if !output.status.success() {
            eprintln!(
                "{what} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output.status.success()
    }

    fn try_start(&self) -> bool {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c max_connections=40 -c shared_buffers=16MB -c fsync=off{}",
            self.port,
            self.data.display(),
            self.extra
        );
        let log = self.data.join("server.log");
        let mut command = self.program("pg_ctl");
        command
            .args(["start", "-w", "-t", "30", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(log)
            .args(["-o", &options]);
        self.run(&mut command, "pg_ctl start")
    }

    /// Stops the server as an operator does (`-m fast`: sessions are ended, then it exits).
    pub fn stop(&self) {
        let mut command = self.program("pg_ctl");
        command
            .args(["stop", "-w", "-m", "fast", "-D"])
            .arg(&self.data);
        assert!(self.run(&mut command, "pg_ctl stop"), "server stopped");
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        assert!(self.try_start(), "server started again");
    }

    pub fn options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .database("postgres")
    }

    /// A pool as the service makes one (lazy, short acquire timeout), with the schema applied.
    pub async fn migrated_pool(&self) -> PgPool {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_millis(1000))
            .connect_lazy_with(self.options());
        roomsync::store::MIGRATOR.run(&pool).await.unwrap();
        pool
    }
}

/// A key at `key` and a self-signed X.509 v1 certificate for `localhost` at `cert` (no
/// extensions: `openssl x509 -req` without an extension file).
pub fn self_signed_v1(key: &Path, cert: &Path) {
    let csr = key.with_extension("csr");
    let (key, csr, cert) = (
        key.to_str().unwrap(),
        csr.to_str().unwrap(),
        cert.to_str().unwrap(),
    );
    let steps: [&[&str]; 3] = [
        &["genrsa", "-out", key, "2048"],
        &[
            "req",
            "-new",
            "-key",
            key,
            "-subj",
            "/CN=localhost",
            "-out",
            csr,
        ],
        &[
            "x509", "-req", "-in", csr, "-signkey", key, "-days", "2", "-out", cert,
        ],
    ];
    for args in steps {
        let output = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let mut command = self.program("pg_ctl");
        command
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data);
        let _ = command.output();
    }
}
