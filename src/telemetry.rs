//! Logs (tracing, pretty or JSON) and Prometheus metrics.

use actix_web::{
    HttpMessage,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder, exponential_buckets,
};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// The log filter when `RUST_LOG` is unset.
pub const DEFAULT_RUST_LOG: &str = "info";

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl LogFormat {
    /// The default: pretty for a person at a terminal, JSON for a file or a log collector
    /// (and no colour codes in either).
    pub fn for_output(terminal: bool) -> Self {
        if terminal { Self::Pretty } else { Self::Json }
    }
}

/// Installs the global subscriber. `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_RUST_LOG));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_span_list(false),
            )
            .try_init(),
        // Colour only for a terminal: escape codes in a log file are noise.
        LogFormat::Pretty => registry
            .with(fmt::layer().with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())))
            .try_init(),
    };
}

/// The span around every request: method, route, path and a request id, but never the query
/// string, which carries `Sign` and `RequestTime` (a logged signature could be replayed with
/// another body within the allowed skew).
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string);
        let route = request.match_pattern().unwrap_or_default();
        tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.path(),
            route = %route,
            request_id = request_id.as_deref().unwrap_or(""),
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// An error and its sources in one line, for logs and for the operator.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    chain_after(error.to_string(), error.source())
}

/// `head`, then `source` and its own sources, in one line: the walk of [`error_chain`] for an
/// error whose own text must be replaced (a Tencent call's, which holds the UserSig).
pub fn chain_after(head: String, mut source: Option<&dyn std::error::Error>) -> String {
    let mut message = head;
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Every `kind` of `roomsync_reconcile_corrections_total`, and every `code` of
/// `roomsync_reconcile_rest_errors_total`: each series is exported at 0 from the start, as the
/// alert rules and the dashboard need (a series that first appears at 1 shows no increase).
/// reconcile/check.rs's tests check that these are exactly the labels it gives.
pub const RECONCILE_CORRECTION_KINDS: [&str; 4] = ["enter", "leave", "destroy", "seats"];
pub const RECONCILE_ERROR_CODES: [&str; 35] = [
    "100001",
    "100002",
    "100003",
    "100004",
    "60004",
    "60005",
    "60006",
    "60007",
    "60008",
    "60010",
    "60011",
    "60016",
    "60018",
    "60019",
    "60021",
    "70001",
    "70003",
    "70009",
    "70013",
    "70014",
    "70016",
    "70020",
    "70050",
    "70107",
    "common_other",
    "api_other",
    "http_5xx",
    "http_4xx",
    "http_other",
    "timeout",
    "network",
    "malformed",
    "no_key",
    "budget",
    "database",
];

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
    /// Journaled records that PostgreSQL did not take when tried alone, waiting for a retry.
    pub journal_parked: IntGauge,
    /// Times a record was parked (each failed attempt counts).
    pub journal_parked_total: IntCounter,
    /// Journal records this version cannot decode, set aside for the operator.
    pub journal_unreadable: IntGauge,
    /// 1 while callbacks go to PostgreSQL, 0 while it is down and they go to the journal.
    pub database_up: IntGauge,
    /// Callbacks journaled because PostgreSQL was up but did not take them now (slow, busy,
    /// or a failure that may pass).
    pub store_slow: IntCounter,
    /// Rejected callbacks not kept in `rejected_callbacks` (over the budget).
    pub rejected_dropped: IntCounter,
    /// Drift repair: rooms checked, corrections by kind, REST calls, REST errors by code,
    /// seconds since the last complete pass.
    pub reconcile_rooms_checked: IntCounter,
    pub reconcile_corrections: IntCounterVec,
    pub reconcile_rest_calls: IntCounter,
    pub reconcile_rest_errors: IntCounterVec,
    pub reconcile_since_last_pass: prometheus::Gauge,
    /// 1 when callbacks must be signed (`CALLBACK_TOKEN` set), 0 when anyone who knows the
    /// SdkAppid, which ships in every client app, can forge one. Set at start-up.
    pub callback_signing_enabled: IntGauge,
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
        let journal_parked = IntGauge::new(
            "journal_parked",
            "Journaled callbacks PostgreSQL did not take when tried alone, waiting for a retry",
        )
        .expect("valid metric");
        let journal_parked_total = IntCounter::new(
            "journal_parked_total",
            "Failed attempts to move a journaled callback into PostgreSQL (each parks it again)",
        )
        .expect("valid metric");
        let journal_unreadable = IntGauge::new(
            "journal_unreadable",
            "Journal records this version cannot decode, set aside for the operator (roomsync journal list)",
        )
        .expect("valid metric");
        let database_up = IntGauge::new(
            "database_up",
            "1 while callbacks go to PostgreSQL, 0 while it is down and they go to the journal",
        )
        .expect("valid metric");
        let store_slow = IntCounter::new(
            "store_slow_total",
            "Callbacks journaled while PostgreSQL was up but did not take them now (slow, busy, or a failure that may pass)",
        )
        .expect("valid metric");
        let rejected_dropped = IntCounter::new(
            "rejected_dropped_total",
            "Refused callbacks not kept in rejected_callbacks because of its budget",
        )
        .expect("valid metric");
        let reconcile_rooms_checked = IntCounter::new(
            "reconcile_rooms_checked_total",
            "Rooms compared with Tencent's REST API",
        )
        .expect("valid metric");
        let reconcile_corrections = IntCounterVec::new(
            Opts::new(
                "reconcile_corrections_total",
                "Corrections stored, by kind (enter, leave, destroy, seats)",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let reconcile_rest_calls = IntCounter::new(
            "reconcile_rest_calls_total",
            "Calls made to Tencent's REST API",
        )
        .expect("valid metric");
        let reconcile_rest_errors = IntCounterVec::new(
            Opts::new(
                "reconcile_rest_errors_total",
                "Failed checks of a room, by Tencent ErrorCode or failure",
            ),
            &["code"],
        )
        .expect("valid metric");
        let reconcile_since_last_pass = prometheus::Gauge::new(
            "reconcile_seconds_since_last_pass",
            "Seconds since every due room was last checked (since start, before the first pass)",
        )
        .expect("valid metric");
        let callback_signing_enabled = IntGauge::new(
            "callback_signing_enabled",
            "1 when callbacks must carry a valid signature (CALLBACK_TOKEN set), else 0",
        )
        .expect("valid metric");
        for collector in [
            Box::new(callbacks.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(batch_size.clone()),
            Box::new(journal_depth.clone()),
            Box::new(journal_appended.clone()),
            Box::new(journal_drained.clone()),
            Box::new(journal_parked.clone()),
            Box::new(journal_parked_total.clone()),
            Box::new(journal_unreadable.clone()),
            Box::new(database_up.clone()),
            Box::new(store_slow.clone()),
            Box::new(rejected_dropped.clone()),
            Box::new(reconcile_rooms_checked.clone()),
            Box::new(reconcile_corrections.clone()),
            Box::new(reconcile_rest_calls.clone()),
            Box::new(reconcile_rest_errors.clone()),
            Box::new(reconcile_since_last_pass.clone()),
            Box::new(callback_signing_enabled.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        for kind in RECONCILE_CORRECTION_KINDS {
            reconcile_corrections.with_label_values(&[kind]);
        }
        for code in RECONCILE_ERROR_CODES {
            reconcile_rest_errors.with_label_values(&[code]);
        }
        Self {
            registry,
            callbacks,
            request_duration,
            batch_size,
            journal_depth,
            journal_appended,
            journal_drained,
            journal_parked,
            journal_parked_total,
            journal_unreadable,
            database_up,
            store_slow,
            rejected_dropped,
            reconcile_rooms_checked,
            reconcile_corrections,
            reconcile_rest_calls,
            reconcile_rest_errors,
            reconcile_since_last_pass,
            callback_signing_enabled,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_walks_every_source() {
        let error = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&error), "outer: inner");
        // The head replaced, the causes kept.
        let source = std::error::Error::source(&error);
        assert_eq!(chain_after("hidden".into(), source), "hidden: inner");
        assert_eq!(chain_after("alone".into(), None), "alone");
    }
}
