//! Logs (tracing, pretty or JSON) and Prometheus metrics.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder, exponential_buckets,
};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer()).try_init(),
    };
}

/// The metrics the service exports on `/metrics`. One registry per application, so tests
/// that run several applications in one process do not share counters.
pub struct Metrics {
    registry: Registry,
    /// Callbacks by command and outcome.
    pub callbacks: IntCounterVec,
    /// HTTP request latency by route and status.
    pub request_duration: HistogramVec,
    /// Callbacks per committed transaction.
    pub batch_size: prometheus::Histogram,
    /// Callbacks waiting in the local journal.
    pub journal_depth: IntGauge,
    /// Callbacks written to the journal.
    pub journal_appended: IntCounter,
    /// Callbacks moved from the journal into PostgreSQL.
    pub journal_drained: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("roomsync".into()), None).expect("valid prefix");
        let callbacks = IntCounterVec::new(
            Opts::new(
                "callbacks_total",
                "Callbacks received, by command and outcome",
            ),
            &["command", "outcome"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                .buckets(exponential_buckets(0.0005, 2.0, 14).expect("valid buckets")),
            &["route", "status"],
        )
        .expect("valid metric");
        let batch_size = prometheus::Histogram::with_opts(
            HistogramOpts::new("batch_size", "Callbacks committed per database transaction")
                .buckets(exponential_buckets(1.0, 2.0, 10).expect("valid buckets")),
        )
        .expect("valid metric");
        let journal_depth =
            IntGauge::new("journal_depth", "Callbacks waiting in the local journal")
                .expect("valid metric");
        let journal_appended = IntCounter::new(
            "journal_appended_total",
            "Callbacks written to the local journal",
        )
        .expect("valid metric");
        let journal_drained = IntCounter::new(
            "journal_drained_total",
            "Callbacks moved from the local journal into PostgreSQL",
        )
        .expect("valid metric");
        for collector in [
            Box::new(callbacks.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(batch_size.clone()),
            Box::new(journal_depth.clone()),
            Box::new(journal_appended.clone()),
            Box::new(journal_drained.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        Self {
            registry,
            callbacks,
            request_duration,
            batch_size,
            journal_depth,
            journal_appended,
            journal_drained,
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
