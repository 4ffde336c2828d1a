//! Builds the application: pool, journal, migrations, writer, HTTP server; and runs it to a
//! clean stop.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_web::{App, HttpServer, dev::Server, middleware::from_fn, web};
use sqlx::{PgPool, postgres::PgConnectOptions};
use tokio::{
    sync::watch,
    task::{JoinHandle, JoinSet},
};
use tracing_actix_web::TracingLogger;

use crate::{
    config::Config,
    http::{self, AppContext},
    ingest::{Backlog, Drain, Ingest},
    journal::{Journal, JournalError, Reader},
    reconcile::Reconciler,
    store::{self, ReachError, Writer, WriterOptions},
    telemetry::{Metrics, RequestSpan},
    tencent::{TencentClient, TencentError},
};

/// See the server's settings in [`Application::build_with_pool`] (and docs/limits.md).
const HTTP_REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const HTTP_KEEP_ALIVE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("DATABASE_URL is invalid")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error("could not apply migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("cannot open the local journal")]
    Journal(#[source] JournalError),
    #[error("cannot set up the client of Tencent's REST API")]
    Tencent(#[source] TencentError),
    #[error("could not listen on {addr}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

pub struct Application {
    port: u16,
    server: Server,
    /// The read API's own server and port, when it listens apart (`API_LISTEN_ADDR`).
    api: Option<(u16, Server)>,
    pool: PgPool,
    writer_tasks: JoinSet<()>,
    shutdown: watch::Sender<bool>,
    drain: JoinHandle<()>,
    retention: JoinHandle<()>,
    backfill: JoinHandle<()>,
    reconciler: Option<JoinHandle<()>>,
    feed: Option<JoinHandle<()>>,
    setup: Option<JoinHandle<()>>,
    journal: Journal,
}

impl Application {
    /// Connects to `DATABASE_URL` (lazily: the service starts while the database is down).
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let pool = database_pool(&config)?;
        Self::build_with_pool(config, pool).await
    }

    /// Builds on an existing pool (tests pass one per test database).
    pub async fn build_with_pool(config: Config, pool: PgPool) -> Result<Self, StartupError> {
        let journal = Journal::open(&config.journal_path, config.journal_max_bytes)
            .map_err(StartupError::Journal)?;
        let listener =
            TcpListener::bind(config.listen_addr).map_err(|source| StartupError::Listen {
                addr: config.listen_addr.to_string(),
                source,
            })?;
        let port = listener
            .local_addr()
            .expect("bound socket has an address")
            .port();
        let api_listener = config
            .api_listen_addr
            .map(|addr| {
                TcpListener::bind(addr).map_err(|source| StartupError::Listen {
                    addr: addr.to_string(),
                    source,
                })
            })
            .transpose()?;
        let metrics = Arc::new(Metrics::new());
        metrics
            .callback_signing_enabled
            .set(i64::from(config.callback_token.is_some()));
        // The database may be down right now: then callbacks go to the journal, and the drain
        // applies the migrations once it reaches the database. A migration that fails on a
        // database that answers stops the start-up.
        let health = store::Health::new(&pool, config.run_migrations, metrics.clone());
        match health.reach(&pool).await {
            Ok(()) => {}
            Err(ReachError::Migrate(error)) => return Err(StartupError::Migrate(error)),
            Err(error) => {
                // A fresh connection names the cause the pool's timeout hides.
                let cause = store::connect_once(&pool.connect_options(), Duration::from_secs(3))
                    .await
                    .err()
                    .map_or_else(|| crate::telemetry::error_chain(&error), |e| e.to_string());
                tracing::warn!(%cause, journal_depth = journal.depth(), "database not ready at start; callbacks go to the local journal");
            }
        }
        let committed = Arc::new(tokio::sync::Notify::new());
        let options = WriterOptions {
            committed: committed.clone(),
            max_batch: config.batch_max_events,
            tasks: config.batch_writers,
            timeout: config.commit_timeout,
            // Readiness, the drain and the rest need a connection too.
            hold: config.batch_writers < config.database_max_connections as usize,
            lock_timeout: config.database_lock_timeout,
            write_timeout: config.database_write_timeout,
            layout_refresh: config.timings.layout_refresh,
            rules: config.rules(),
        };
        let (writer, writer_tasks) =
            Writer::spawn(pool.clone(), options, health.clone(), metrics.clone());
        let rejected = Arc::new(store::RejectedStore::new(pool.clone(), config.rejected));
        let backlog = Backlog::default();
        let ingest = Ingest::new(
            writer.clone(),
            journal.clone(),
            health.clone(),
            rejected.clone(),
            metrics.clone(),
            backlog.clone(),
        );
        // Background tasks stop at a safe point when this turns true (not by abort).
        let (shutdown, stopping) = watch::channel(false);
        let drain = Drain {
            reader: Reader::new(journal.clone()),
            writer: writer.clone(),
            health: health.clone(),
            pool: pool.clone(),
            rejected,
            metrics: metrics.clone(),
            timings: config.timings,
            backlog,
        }
        .spawn(stopping.clone());
        let retention = store::retention::spawn(
            pool.clone(),
            store::retention::Retention {
                history_days: config.event_retention_days,
                rejected_days: config.rejected.retention_days,
                attendance_days: config.attendance_retention_days,
                changes_hours: config.changes_retention_hours,
            },
            stopping.clone(),
        );
        let backfill = store::backfill::spawn(
            pool.clone(),
            config.attendance,
            config.database_lock_timeout,
            stopping.clone(),
        );
        // The feed's reader serves the read API: only when it is enabled.
        let feed = config.api_token.as_ref().map(|_| {
            crate::feed::Hub::spawn(
                pool.clone(),
                config.notify_mode,
                committed,
                config.feed_max_waiters,
                stopping.clone(),
            )
        });
        let (feed, feed_task) = feed.unzip();
        let reconciler = match &config.drift_repair {
            Some(drift) if !drift.interval.is_zero() => {
                let client = TencentClient::new(drift).map_err(StartupError::Tencent)?;
                let reconciler = Reconciler::new(
                    pool.clone(),
                    writer.clone(),
                    client,
                    drift.clone(),
                    metrics.clone(),
                );
                Some(reconciler.spawn(stopping.clone()))
            }
            _ => None,
        };
        // The console's setup check reads Tencent's configuration with the same credentials.
        let tencent_setup = match (&config.api_token, &config.drift_repair) {
            (Some(_), Some(drift)) => Some(crate::setup::Watch::spawn(
                TencentClient::new(drift).map_err(StartupError::Tencent)?,
                config.public_callback_url.clone(),
                config.callback_token.is_some(),
                stopping.clone(),
            )),
            _ => None,
        };
        let (tencent_setup, setup_task) = tencent_setup.unzip();
        let (workers, api_workers) = (config.http_workers, config.api_workers);
        // actix counts connections per worker; each listener has the bound.
        let http_max_connections = config.http_max_connections;
        let per_worker = http_max_connections.div_ceil(workers);
        let context = web::Data::new(AppContext {
            body_bytes: http::BodyBudget::new(config.http_max_inflight_body_bytes),
            config,
            pool: pool.clone(),
            db: store::DbRuntime::current(),
            ingest,
            health,
            metrics,
            feed,
            tencent_setup,
            console: http::SharedReads::default(),
        });
        let server = http_server(
            listener,
            &context,
            if api_listener.is_some() {
                http::callback_routes
            } else {
                http::routes
            },
            workers,
            per_worker,
            || {},
        )
        .map_err(|source| StartupError::Listen {
            addr: format!("port {port}"),
            source,
        })?;
        // The readers apart: their own threads, at a lower CPU priority than the callbacks',
        // the writers' and PostgreSQL's (docs/feed.md#readers-apart).
        let api = match api_listener {
            Some(listener) => {
                let api_port = listener
                    .local_addr()
                    .expect("bound socket has an address")
                    .port();
                let per_worker = http_max_connections.div_ceil(api_workers);
                let server = http_server(
                    listener,
                    &context,
                    http::apart_routes,
                    api_workers,
                    per_worker,
                    lower_this_threads_priority,
                )
                .map_err(|source| StartupError::Listen {
                    addr: format!("port {api_port}"),
                    source,
                })?;
                Some((api_port, server))
            }
            None => None,
        };
        Ok(Self {
            port,
            server,
            api,
            pool,
            writer_tasks,
            shutdown,
            drain,
            retention,
            backfill,
            reconciler,
            feed: feed_task,
            setup: setup_task,
            journal,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The read API's port when it listens apart (`API_LISTEN_ADDR`).
    pub fn api_port(&self) -> Option<u16> {
        self.api.as_ref().map(|(port, _)| *port)
    }

    /// Stops the server from elsewhere (tests); `run_until_stopped` then returns.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (or the server handle stops it); then lets in-flight
    /// requests finish, drains the writer queue and closes the pool.
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        // Both servers stop at SIGTERM/SIGINT by themselves; the readers' also when the
        // callbacks' is stopped by its handle.
        let api = self.api.take().map(|(_, server)| {
            let handle = server.handle();
            (handle, tokio::spawn(server))
        });
        let mut result = self.server.await;
        if let Some((handle, server)) = api {
            handle.stop(true).await;
            let api_result = server
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            result = result.and(api_result);
        }
        // Journal commits are durable when they return; what the journal still holds drains at
        // the next start. The background tasks finish what they are doing (the drain its batch,
        // a drift check its room and lease, retention its statement) and stop.
        let _ = self.shutdown.send(true);
        let tasks = [
            Some(&mut self.drain),
            Some(&mut self.retention),
            Some(&mut self.backfill),
            self.reconciler.as_mut(),
            self.feed.as_mut(),
            self.setup.as_mut(),
        ];
        for task in tasks.into_iter().flatten() {
            if tokio::time::timeout(Duration::from_secs(10), &mut *task)
                .await
                .is_err()
            {
                tracing::warn!("a background task did not stop within 10 s; aborting it");
                task.abort();
            }
        }
        // The server dropped its request handlers, so the writer queue closes once drained.
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while self.writer_tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("writer did not drain within 10 s");
        }
        self.pool.close().await;
        // The journal file is closed (and its lock released) when the last handle goes.
        if !self
            .journal
            .wait_until_sole_owner(Duration::from_secs(5))
            .await
        {
            tracing::warn!("the journal was still in use 5 s after the stop");
        }
        tracing::info!("stopped");
        result
    }
}

/// One HTTP server on `listener` with the limits of docs/limits.md; `on_thread` runs on each of
/// its `workers` threads as it starts.
fn http_server(
    listener: TcpListener,
    context: &web::Data<AppContext>,
    routes: fn(&mut web::ServiceConfig),
    workers: usize,
    per_worker: usize,
    on_thread: fn(),
) -> std::io::Result<Server> {
    let context = context.clone();
    // actix builds each worker's App on that worker's thread.
    Ok(HttpServer::new(move || {
        on_thread();
        App::new()
            .wrap(from_fn(http::record_latency))
            .wrap(TracingLogger::<RequestSpan>::new())
            .app_data(context.clone())
            .configure(routes)
    })
    .workers(workers)
    // Slow, idle or half-sent requests must not hold connections for long: the head must
    // arrive within 5 s (the body's first bytes within 1 s more, then at a minimum rate:
    // see http::callback), an idle keep-alive connection closes after 5 s, and a closing
    // one gets 1 s to go.
    .client_request_timeout(HTTP_REQUEST_HEAD_TIMEOUT)
    .keep_alive(HTTP_KEEP_ALIVE)
    .client_disconnect_timeout(Duration::from_secs(1))
    .max_connections(per_worker)
    .shutdown_timeout(10)
    .listen(listener)?
    .run())
}

/// How much lower the readers' threads run when they listen apart: at nice 10 a thread gets
/// about a tenth of what one at 0 gets when both want the CPU, and all of what is left idle.
pub const API_THREAD_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority by [`API_THREAD_NICE`] (on Linux each thread has
/// its own nice value); elsewhere, or if refused, the thread keeps its priority.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        thread_local!(static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        if LOWERED.replace(true) {
            return;
        }
        // SAFETY: plain system calls on the calling thread's own id, no memory passed.
        let refused = unsafe {
            let tid = libc::gettid();
            let now = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, now + API_THREAD_NICE) != 0
        };
        if refused {
            tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the read API's thread priority");
        }
    }
}

pub fn database_pool(config: &Config) -> Result<PgPool, StartupError> {
    let options: PgConnectOptions = config
        .database_url
        .expose()
        .parse()
        .map_err(StartupError::DatabaseUrl)?;
    Ok(store::connect_lazy(
        options,
        config.database_max_connections,
        config.database_acquire_timeout,
    ))
}

/// A writer for a one-shot command (`roomsync reconcile`): one task, the service's bounds, the
/// schema checked first. Drop the writer, then join the tasks, to finish.
pub async fn command_writer(
    config: &Config,
    pool: &PgPool,
    metrics: Arc<Metrics>,
) -> Result<(Writer, JoinSet<()>), store::ReachError> {
    let health = store::Health::new(pool, false, metrics.clone());
    health.reach(pool).await?;
    let options = WriterOptions {
        committed: Arc::default(),
        max_batch: config.batch_max_events,
        tasks: 1,
        timeout: config.commit_timeout,
        hold: false,
        lock_timeout: config.database_lock_timeout,
        write_timeout: config.database_write_timeout,
        layout_refresh: config.timings.layout_refresh,
        rules: config.rules(),
    };
    Ok(Writer::spawn(pool.clone(), options, health, metrics))
}
