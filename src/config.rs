//! Configuration: every variable of docs/configuration.md, read once at start-up and validated.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use crate::{callback::SdkAppId, tencent::DriftRepairConfig};

/// Invalid or missing configuration; the message names the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required but not set")]
    Missing(&'static str),
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// A value that must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Holds the database password, hence a secret.
    pub database_url: Secret,
    pub sdk_app_ids: Vec<SdkAppId>,
    pub callback_token: Option<Secret>,
    pub signature_max_skew: Duration,
    /// How far an `EventTime` may be ahead of the arrival (docs/limits.md#the-callback).
    pub event_time_max_future: Duration,
    pub listen_addr: SocketAddr,
    pub run_migrations: bool,
    pub max_body_bytes: usize,
    pub log_format: LogFormat,
    pub database_max_connections: u32,
    /// How long a callback may wait for its commit before the journal takes it: with the
    /// journal write, well inside Tencent's 2 s.
    pub commit_timeout: Duration,
    /// How long a callback may wait for a database connection before it goes to the journal.
    pub database_acquire_timeout: Duration,
    pub http_workers: usize,
    pub batch_max_events: usize,
    /// The local journal file (docs/durability.md#the-local-journal).
    pub journal_path: PathBuf,
    /// Past this many bytes of pending callbacks the journal refuses more (503).
    pub journal_max_bytes: u64,
    /// Prune history received longer ago than this; `None` keeps it forever.
    pub event_retention_days: Option<i32>,
    /// Open HTTP connections at most, for the whole process.
    pub http_max_connections: usize,
    /// Bytes of callback bodies being received or handled at once, for the whole process
    /// (docs/limits.md#the-http-server).
    pub http_max_inflight_body_bytes: usize,
    /// Bounds of `rejected_callbacks`: bytes of a body kept, bytes written per second (a burst
    /// of ten seconds' worth) and in all, and days kept.
    pub rejected: RejectedLimits,
    /// Drift repair (docs/drift-repair.md); `None` without `TENCENT_SECRET_KEY`.
    pub drift_repair: Option<DriftRepairConfig>,
}

/// How much of what was refused is kept for an operator (see [`Config::rejected`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectedLimits {
    pub body_max_bytes: usize,
    /// Bytes of rows written per second for 4xx answers.
    pub max_bytes_per_sec: u64,
    /// Bytes the table may hold before rows for 4xx answers are no longer written.
    pub max_total_bytes: u64,
    pub retention_days: i32,
}

impl Config {
    /// Reads the process environment (after `.env`, which `main` loads first).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable source; tests pass a map.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        let database_url = get("DATABASE_URL").ok_or(ConfigError::Missing("DATABASE_URL"))?;
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(invalid(
                "DATABASE_URL",
                "must start with postgres:// or postgresql://",
            ));
        }
        let sdk_app_ids = get("SDK_APP_ID")
            .ok_or(ConfigError::Missing("SDK_APP_ID"))?
            .split(',')
            .map(|id| {
                SdkAppId::parse(id.trim()).ok_or_else(|| {
                    invalid("SDK_APP_ID", format!("{id:?} is not a positive integer"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Empty means "no token"; only whitespace is a mistake that would turn checks off.
        if lookup("CALLBACK_TOKEN").is_some_and(|t| !t.is_empty() && t.trim().is_empty()) {
            return Err(invalid(
                "CALLBACK_TOKEN",
                "is only whitespace: set the console's token, or leave it empty to turn signature checks off",
            ));
        }
        let callback_token = get("CALLBACK_TOKEN").map(Secret::new);
        let drift_repair = DriftRepairConfig::from_lookup(&lookup, &sdk_app_ids)?;
        let skew_secs: u64 = parse_or(&get, "SIGNATURE_MAX_SKEW_SECS", 60)?;
        let workers_default = std::thread::available_parallelism().map_or(2, |n| n.get());
        let config = Self {
            database_url: Secret::new(database_url),
            sdk_app_ids,
            callback_token,
            signature_max_skew: Duration::from_secs(skew_secs),
            event_time_max_future: Duration::from_secs(parse_or(
                &get,
                "EVENT_TIME_MAX_FUTURE_SECS",
                DEFAULT_EVENT_TIME_MAX_FUTURE_SECS,
            )?),
            listen_addr: parse_or(&get, "LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)))?,
            run_migrations: parse_bool(&get, "RUN_MIGRATIONS", true)?,
            max_body_bytes: parse_or(&get, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?,
            log_format: match get("LOG_FORMAT").as_deref().map(str::to_ascii_lowercase) {
                None => LogFormat::Pretty,
                Some(v) if v == "pretty" => LogFormat::Pretty,
                Some(v) if v == "json" => LogFormat::Json,
                Some(v) => return Err(invalid("LOG_FORMAT", format!("{v:?}: use pretty or json"))),
            },
            database_max_connections: parse_or(&get, "DATABASE_MAX_CONNECTIONS", 10)?,
            commit_timeout: Duration::from_millis(parse_or(&get, "COMMIT_TIMEOUT_MS", 1200)?),
            database_acquire_timeout: Duration::from_millis(parse_or(
                &get,
                "DATABASE_ACQUIRE_TIMEOUT_MS",
                1000,
            )?),
            http_workers: parse_or(&get, "HTTP_WORKERS", workers_default)?,
            batch_max_events: parse_or(&get, "BATCH_MAX_EVENTS", 256)?,
            journal_path: get("JOURNAL_PATH")
                .map_or_else(|| PathBuf::from("journal/roomsync.redb"), PathBuf::from),
            journal_max_bytes: parse_or(&get, "JOURNAL_MAX_BYTES", 256 * 1024 * 1024)?,
            event_retention_days: match get("EVENT_RETENTION_DAYS") {
                None => None,
                Some(raw) => Some(
                    raw.trim()
                        .parse::<i32>()
                        .ok()
                        .filter(|d| *d > 0)
                        .ok_or_else(|| {
                            invalid(
                                "EVENT_RETENTION_DAYS",
                                format!("{raw:?}: a positive number of days"),
                            )
                        })?,
                ),
            },
            http_max_connections: parse_or(&get, "HTTP_MAX_CONNECTIONS", 4096)?,
            http_max_inflight_body_bytes: parse_or(
                &get,
                "HTTP_MAX_INFLIGHT_BODY_BYTES",
                DEFAULT_HTTP_MAX_INFLIGHT_BODY_BYTES,
            )?,
            rejected: RejectedLimits {
                body_max_bytes: parse_or(&get, "REJECTED_BODY_MAX_BYTES", 65_536)?,
                max_bytes_per_sec: parse_or(
                    &get,
                    "REJECTED_MAX_BYTES_PER_SEC",
                    DEFAULT_REJECTED_MAX_BYTES_PER_SEC,
                )?,
                max_total_bytes: parse_or(
                    &get,
                    "REJECTED_MAX_TOTAL_BYTES",
                    DEFAULT_REJECTED_MAX_TOTAL_BYTES,
                )?,
                retention_days: parse_or(&get, "REJECTED_RETENTION_DAYS", 30)?,
            },
            drift_repair,
        };
        if config.max_body_bytes == 0 {
            return Err(invalid("MAX_BODY_BYTES", "must be positive"));
        }
        // A body the budget cannot hold would never be received.
        if config.http_max_inflight_body_bytes < config.max_body_bytes {
            return Err(invalid(
                "HTTP_MAX_INFLIGHT_BODY_BYTES",
                "must be at least MAX_BODY_BYTES",
            ));
        }
        // A row budget replaced by a byte budget: a value that no longer applies is not ignored
        // in silence.
        if get("REJECTED_MAX_PER_SEC").is_some() {
            return Err(invalid(
                "REJECTED_MAX_PER_SEC",
                "was replaced by REJECTED_MAX_BYTES_PER_SEC and REJECTED_MAX_TOTAL_BYTES",
            ));
        }
        for (var, value) in [
            (
                "DATABASE_MAX_CONNECTIONS",
                config.database_max_connections as usize,
            ),
            ("HTTP_WORKERS", config.http_workers),
            ("BATCH_MAX_EVENTS", config.batch_max_events),
            ("JOURNAL_MAX_BYTES", config.journal_max_bytes as usize),
            ("HTTP_MAX_CONNECTIONS", config.http_max_connections),
            (
                "REJECTED_MAX_BYTES_PER_SEC",
                config.rejected.max_bytes_per_sec as usize,
            ),
            (
                "REJECTED_MAX_TOTAL_BYTES",
                config.rejected.max_total_bytes as usize,
            ),
            (
                "REJECTED_RETENTION_DAYS",
                config.rejected.retention_days.max(0) as usize,
            ),
        ] {
            if value == 0 {
                return Err(invalid(var, "must be positive"));
            }
        }
        Ok(config)
    }

    pub fn is_our_app(&self, id: SdkAppId) -> bool {
        self.sdk_app_ids.contains(&id)
    }
}

/// Room for 10,000 member ids of about 100 bytes in one callback: each id costs its JSON text
/// (quotes, escapes) plus a comma, so N ids of L plain bytes need about N * (L + 3) bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// 64 MiB: 64 bodies of the largest default size at once; what is waiting is held by the kernel
/// (docs/limits.md#the-http-server).
pub const DEFAULT_HTTP_MAX_INFLIGHT_BODY_BYTES: usize = 64 << 20;
/// 64 KiB a second (one full-size body, in bursts of ten): at most 5.3 GiB a day, and the total
/// bound below is reached first (docs/limits.md#rejected_callbacks).
pub const DEFAULT_REJECTED_MAX_BYTES_PER_SEC: u64 = 64 * 1024;
/// 1 GiB: a month of a few thousand refusals a day of full-size bodies.
pub const DEFAULT_REJECTED_MAX_TOTAL_BYTES: u64 = 1 << 30;
/// Five minutes: far more than the clock differences NTP-synced hosts show (and than the 60 s
/// a signed `RequestTime` may be off), small enough that a forged time holds a room for
/// minutes, not for ever.
pub const DEFAULT_EVENT_TIME_MAX_FUTURE_SECS: u64 = 300;

/// The error for `var`, with why (never the value of a secret).
pub(crate) fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

/// `var` parsed, or `default` when it is not set.
pub(crate) fn parse_or<T>(
    get: &impl Fn(&'static str) -> Option<String>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match get(var) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e| invalid(var, format!("{raw:?}: {e}"))),
    }
}

fn parse_bool(
    get: &impl Fn(&'static str) -> Option<String>,
    var: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(var).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => Ok(false),
        Some(v) => Err(invalid(var, format!("{v:?}: use true or false"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const BASE: [(&str, &str); 2] = [
        ("DATABASE_URL", "postgres://u:hunter2@db/x"),
        ("SDK_APP_ID", "1400000001"),
    ];

    #[test]
    fn defaults_follow_the_spec() {
        let c = config(&BASE).unwrap();
        assert_eq!(c.sdk_app_ids, vec![SdkAppId::parse("1400000001").unwrap()]);
        assert!(c.callback_token.is_none());
        assert_eq!(c.signature_max_skew, Duration::from_secs(60));
        assert_eq!(c.event_time_max_future, Duration::from_secs(300));
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:8080");
        assert!(c.run_migrations);
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.http_max_inflight_body_bytes, 64 << 20);
        assert_eq!(
            c.rejected,
            RejectedLimits {
                body_max_bytes: 65_536,
                max_bytes_per_sec: 65_536,
                max_total_bytes: 1 << 30,
                retention_days: 30
            }
        );
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert_eq!(c.journal_path, PathBuf::from("journal/roomsync.redb"));
        assert_eq!(c.journal_max_bytes, 256 * 1024 * 1024);
    }

    #[test]
    fn several_app_ids() {
        let c = config(&[BASE[0], ("SDK_APP_ID", "1400000001, 1400000002")]).unwrap();
        assert_eq!(c.sdk_app_ids.len(), 2);
        assert!(c.is_our_app(SdkAppId::parse("1400000002").unwrap()));
        assert!(!c.is_our_app(SdkAppId::parse("1400000003").unwrap()));
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[BASE[1]], "DATABASE_URL"),
            (&[BASE[0]], "SDK_APP_ID"),
            (&[BASE[0], ("SDK_APP_ID", "abc")], "SDK_APP_ID"),
            (&[BASE[0], ("SDK_APP_ID", "0")], "SDK_APP_ID"),
            (
                &[BASE[0], BASE[1], ("LISTEN_ADDR", "nowhere")],
                "LISTEN_ADDR",
            ),
            (
                &[BASE[0], BASE[1], ("RUN_MIGRATIONS", "maybe")],
                "RUN_MIGRATIONS",
            ),
            (
                &[BASE[0], BASE[1], ("MAX_BODY_BYTES", "-1")],
                "MAX_BODY_BYTES",
            ),
            (&[BASE[0], BASE[1], ("LOG_FORMAT", "xml")], "LOG_FORMAT"),
            (
                &[BASE[0], BASE[1], ("EVENT_RETENTION_DAYS", "0")],
                "EVENT_RETENTION_DAYS",
            ),
            (
                &[BASE[0], BASE[1], ("JOURNAL_MAX_BYTES", "lots")],
                "JOURNAL_MAX_BYTES",
            ),
            (
                &[BASE[0], BASE[1], ("SIGNATURE_MAX_SKEW_SECS", "x")],
                "SIGNATURE_MAX_SKEW_SECS",
            ),
            (
                &[BASE[0], BASE[1], ("EVENT_TIME_MAX_FUTURE_SECS", "-5")],
                "EVENT_TIME_MAX_FUTURE_SECS",
            ),
            (&[("DATABASE_URL", "mysql://x"), BASE[1]], "DATABASE_URL"),
            (
                &[BASE[0], BASE[1], ("CALLBACK_TOKEN", " \t ")],
                "CALLBACK_TOKEN",
            ),
            (
                &[BASE[0], BASE[1], ("HTTP_MAX_CONNECTIONS", "0")],
                "HTTP_MAX_CONNECTIONS",
            ),
            (
                &[BASE[0], BASE[1], ("REJECTED_RETENTION_DAYS", "0")],
                "REJECTED_RETENTION_DAYS",
            ),
            // Just past the bound: one byte short of a full body.
            (
                &[
                    BASE[0],
                    BASE[1],
                    ("MAX_BODY_BYTES", "1000"),
                    ("HTTP_MAX_INFLIGHT_BODY_BYTES", "999"),
                ],
                "HTTP_MAX_INFLIGHT_BODY_BYTES",
            ),
            (
                &[BASE[0], BASE[1], ("REJECTED_MAX_PER_SEC", "10")],
                "REJECTED_MAX_PER_SEC",
            ),
            (
                &[BASE[0], BASE[1], ("REJECTED_MAX_BYTES_PER_SEC", "-3")],
                "REJECTED_MAX_BYTES_PER_SEC",
            ),
        ];
        for (vars, name) in cases {
            let err = config(vars).unwrap_err().to_string();
            assert!(err.contains(name), "{err:?} should name {name}");
        }
    }

    #[test]
    fn an_empty_token_means_no_signature_checks() {
        let c = config(&[BASE[0], BASE[1], ("CALLBACK_TOKEN", "")]).unwrap();
        assert!(c.callback_token.is_none());
    }

    #[test]
    fn the_default_body_bound_holds_the_list_bound_at_about_100_byte_ids() {
        let id = format!("\"{}\",", "u".repeat(100));
        let list = id.repeat(crate::callback::MAX_LIST_ENTRIES);
        assert!(list.len() + 300 < DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = config(&[BASE[0], BASE[1], ("CALLBACK_TOKEN", "s3cret-token")]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-token"));
        assert!(!shown.contains("hunter2"));
    }
}
