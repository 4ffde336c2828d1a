//! Reading the configuration: each variable of docs/configuration.md parsed, defaulted and
//! checked, alone and against the others; an error names the variable, never a secret.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use chrono::TimeDelta;

use super::{
    BATCH_MAX_EVENTS_LIMIT, Config, DEFAULT_EVENT_TIME_MAX_FUTURE_SECS,
    DEFAULT_HTTP_MAX_INFLIGHT_BODY_BYTES, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_REJECTED_MAX_BYTES_PER_SEC, DEFAULT_REJECTED_MAX_TOTAL_BYTES, LogFormat,
    RejectedLimits, Timings,
    drift_repair::DriftRepairConfig,
    values::{ConfigError, Secret, invalid, parse_bool, parse_or},
};
use crate::{
    callback::SdkAppId,
    store::{NotifyMode, attendance::Policy},
};

impl Config {
    /// Reads the process environment (after `.env`, which the command line loads first).
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
                // The logs go to standard output.
                None => LogFormat::for_output(std::io::IsTerminal::is_terminal(&std::io::stdout())),
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
            batch_writers: parse_or(&get, "BATCH_WRITERS", 2)?,
            database_lock_timeout: Duration::from_millis(parse_or(
                &get,
                "DATABASE_LOCK_TIMEOUT_MS",
                200,
            )?),
            database_write_timeout: Duration::from_millis(parse_or(
                &get,
                "DATABASE_WRITE_TIMEOUT_MS",
                30_000,
            )?),
            timings: Timings::default(),
            journal_path: get("JOURNAL_PATH")
                .map_or_else(|| PathBuf::from("journal/roomsync.redb"), PathBuf::from),
            journal_max_bytes: parse_or(&get, "JOURNAL_MAX_BYTES", 256 * 1024 * 1024)?,
            event_retention_days: days(&get, "EVENT_RETENTION_DAYS")?,
            attendance: Policy {
                merge_gap: TimeDelta::seconds(policy_secs(&get, "STAY_MERGE_GAP_SECS", 0)?),
                empty_grace: TimeDelta::seconds(policy_secs(
                    &get,
                    "SESSION_EMPTY_GRACE_SECS",
                    300,
                )?),
            },
            attendance_retention_days: days(&get, "ATTENDANCE_RETENTION_DAYS")?,
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
            notify_mode: match get("NOTIFY_MODE").as_deref().map(str::trim) {
                None | Some("members") => NotifyMode::Members,
                Some("wakeup") => NotifyMode::Wakeup,
                Some("off") => NotifyMode::Off,
                Some(other) => {
                    return Err(invalid(
                        "NOTIFY_MODE",
                        format!("{other:?}: one of members, wakeup, off"),
                    ));
                }
            },
            api_token: get("API_TOKEN").map(Secret::new),
            api_listen_addr: get("API_LISTEN_ADDR")
                .map(|raw| {
                    raw.trim()
                        .parse()
                        .map_err(|_| invalid("API_LISTEN_ADDR", format!("{raw:?}: give ip:port")))
                })
                .transpose()?,
            api_workers: parse_or(&get, "API_WORKERS", 1)?,
            changes_retention_hours: parse_or(&get, "CHANGES_RETENTION_HOURS", 168)?,
            feed_max_waiters: parse_or(&get, "FEED_MAX_WAITERS", 1000)?,
            public_callback_url: get("PUBLIC_CALLBACK_URL")
                .map(|raw| parse_public_callback_url(&raw))
                .transpose()?,
        };
        if config
            .api_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            return Err(invalid("API_TOKEN", "must be at least 16 characters"));
        }
        // Apart from what? Without the token there is no read API to serve.
        if config.api_listen_addr.is_some() && config.api_token.is_none() {
            return Err(invalid(
                "API_LISTEN_ADDR",
                "serves the read API and the console, which are off without API_TOKEN: set both",
            ));
        }
        if config
            .api_listen_addr
            .is_some_and(|a| a.port() != 0 && a == config.listen_addr)
        {
            return Err(invalid(
                "API_LISTEN_ADDR",
                "is LISTEN_ADDR: give another port, or leave it unset to serve both there",
            ));
        }
        if !(1..=87_600).contains(&config.changes_retention_hours) {
            return Err(invalid(
                "CHANGES_RETENTION_HOURS",
                "must be in 1..=87600 (ten years)",
            ));
        }
        if config.max_body_bytes == 0 {
            return Err(invalid("MAX_BODY_BYTES", "must be positive"));
        }
        if !(1..=10_000).contains(&config.commit_timeout.as_millis()) {
            return Err(invalid("COMMIT_TIMEOUT_MS", "must be in 1..=10000"));
        }
        if !(1..=60_000).contains(&config.database_lock_timeout.as_millis()) {
            return Err(invalid("DATABASE_LOCK_TIMEOUT_MS", "must be in 1..=60000"));
        }
        // The lock timeout is what gives a held room back; the writer's own bound is the last
        // resort above it.
        if config.database_write_timeout <= config.database_lock_timeout
            || config.database_write_timeout > Duration::from_secs(600)
        {
            return Err(invalid(
                "DATABASE_WRITE_TIMEOUT_MS",
                "must be above DATABASE_LOCK_TIMEOUT_MS and at most 600000",
            ));
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
        if config.batch_max_events > BATCH_MAX_EVENTS_LIMIT {
            return Err(invalid(
                "BATCH_MAX_EVENTS",
                format!("must be at most {BATCH_MAX_EVENTS_LIMIT}"),
            ));
        }
        for (var, value) in [
            (
                "DATABASE_MAX_CONNECTIONS",
                config.database_max_connections as usize,
            ),
            ("HTTP_WORKERS", config.http_workers),
            ("BATCH_MAX_EVENTS", config.batch_max_events),
            ("BATCH_WRITERS", config.batch_writers),
            ("FEED_MAX_WAITERS", config.feed_max_waiters),
            ("API_WORKERS", config.api_workers),
            (
                "DATABASE_ACQUIRE_TIMEOUT_MS",
                config.database_acquire_timeout.as_millis() as usize,
            ),
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
}

/// An absolute `https://` URL with a host: Tencent calls it over the internet, and the body is
/// not covered by the signature. No query (Tencent appends its own), fragment or credentials.
fn parse_public_callback_url(raw: &str) -> Result<reqwest::Url, ConfigError> {
    const VAR: &str = "PUBLIC_CALLBACK_URL";
    let raw = raw.trim();
    let url = reqwest::Url::parse(raw).map_err(|e| {
        invalid(
            VAR,
            format!("{raw:?}: {e}: give the absolute URL, e.g. https://rooms.example.com/callback"),
        )
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoed: it may hold a password.
        return Err(invalid(VAR, "must not contain credentials"));
    }
    if url.scheme() != "https" {
        return Err(invalid(
            VAR,
            format!("{raw:?}: must be https:// (Tencent must reach /callback over TLS)"),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(VAR, format!("{raw:?}: no host")));
    }
    if url.fragment().is_some() {
        return Err(invalid(VAR, format!("{raw:?}: must not have a fragment")));
    }
    if url.query().is_some() {
        return Err(invalid(
            VAR,
            format!("{raw:?}: must not have a query: Tencent appends its own"),
        ));
    }
    Ok(url)
}

/// An optional retention in days: unset keeps for ever; set, a positive number.
fn days(
    get: &impl Fn(&'static str) -> Option<String>,
    var: &'static str,
) -> Result<Option<i32>, ConfigError> {
    let Some(raw) = get(var) else {
        return Ok(None);
    };
    raw.trim()
        .parse::<i32>()
        .ok()
        .filter(|d| *d > 0)
        .map(Some)
        .ok_or_else(|| invalid(var, format!("{raw:?}: a positive number of days")))
}

/// Longest merge gap or grace: a day. Longer would fold separate meetings into one.
const POLICY_MAX_SECS: i64 = 86_400;

/// A ledger policy in seconds, 0 to a day.
fn policy_secs(
    get: &impl Fn(&'static str) -> Option<String>,
    var: &'static str,
    default: i64,
) -> Result<i64, ConfigError> {
    let secs: i64 = parse_or(get, var, default)?;
    if !(0..=POLICY_MAX_SECS).contains(&secs) {
        return Err(invalid(
            var,
            format!("{secs}: from 0 to {POLICY_MAX_SECS} seconds"),
        ));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::Duration};

    use crate::{
        callback::SdkAppId,
        config::{BATCH_MAX_EVENTS_LIMIT, Config, ConfigError, DEFAULT_RUST_LOG, LogFormat},
        store::NotifyMode,
    };

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

    /// Each variable's default as docs/configuration.md states it: the first value in
    /// backticks of the default column, or `None` for "unset", "number of CPUs" and no default.
    fn documented_defaults() -> Vec<(String, Option<String>)> {
        include_str!("../../docs/configuration.md")
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let var = cells[1].trim_matches('`').to_owned();
                let default = cells[3].split('`').nth(1).map(str::to_owned);
                (var, default)
            })
            .filter(|(var, _)| var.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect()
    }

    #[test]
    fn defaults_follow_the_docs() {
        let drift_key = ("TENCENT_SECRET_KEY", "k3y");
        let c = config(&BASE).unwrap();
        let d = config(&[BASE[0], BASE[1], drift_key])
            .unwrap()
            .drift_repair
            .unwrap();
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        // What the configuration holds when a variable is unset; `None`: unset or no default.
        let actual = |var: &str| -> Option<String> {
            Some(match var {
                "DATABASE_URL" | "SDK_APP_ID" => return None,
                "CALLBACK_TOKEN" => return c.callback_token.as_ref().map(|_| "set".into()),
                "SIGNATURE_MAX_SKEW_SECS" => c.signature_max_skew.as_secs().to_string(),
                "EVENT_TIME_MAX_FUTURE_SECS" => c.event_time_max_future.as_secs().to_string(),
                "LISTEN_ADDR" => c.listen_addr.to_string(),
                "RUN_MIGRATIONS" => c.run_migrations.to_string(),
                "MAX_BODY_BYTES" => c.max_body_bytes.to_string(),
                // Documented as "pretty on a terminal, else json".
                "LOG_FORMAT" => {
                    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
                    assert_eq!(c.log_format, LogFormat::for_output(terminal));
                    return None;
                }
                // Read by `telemetry::init_logging`, with this fallback.
                "RUST_LOG" => DEFAULT_RUST_LOG.into(),
                "DATABASE_MAX_CONNECTIONS" => c.database_max_connections.to_string(),
                "DATABASE_ACQUIRE_TIMEOUT_MS" => c.database_acquire_timeout.as_millis().to_string(),
                "COMMIT_TIMEOUT_MS" => c.commit_timeout.as_millis().to_string(),
                // Documented as "number of CPUs".
                "HTTP_WORKERS" => {
                    assert_eq!(c.http_workers, cpus);
                    return None;
                }
                "BATCH_MAX_EVENTS" => c.batch_max_events.to_string(),
                "BATCH_WRITERS" => c.batch_writers.to_string(),
                "DATABASE_LOCK_TIMEOUT_MS" => c.database_lock_timeout.as_millis().to_string(),
                "DATABASE_WRITE_TIMEOUT_MS" => c.database_write_timeout.as_millis().to_string(),
                "JOURNAL_PATH" => c.journal_path.display().to_string(),
                "JOURNAL_MAX_BYTES" => c.journal_max_bytes.to_string(),
                "EVENT_RETENTION_DAYS" => return c.event_retention_days.map(|d| d.to_string()),
                "STAY_MERGE_GAP_SECS" => c.attendance.merge_gap.num_seconds().to_string(),
                "SESSION_EMPTY_GRACE_SECS" => c.attendance.empty_grace.num_seconds().to_string(),
                "ATTENDANCE_RETENTION_DAYS" => {
                    return c.attendance_retention_days.map(|d| d.to_string());
                }
                "HTTP_MAX_CONNECTIONS" => c.http_max_connections.to_string(),
                "REJECTED_BODY_MAX_BYTES" => c.rejected.body_max_bytes.to_string(),
                "REJECTED_MAX_BYTES_PER_SEC" => c.rejected.max_bytes_per_sec.to_string(),
                "REJECTED_MAX_TOTAL_BYTES" => c.rejected.max_total_bytes.to_string(),
                // No longer accepted (documented as such, without a default).
                "REJECTED_MAX_PER_SEC" => return None,
                "HTTP_MAX_INFLIGHT_BODY_BYTES" => c.http_max_inflight_body_bytes.to_string(),
                "REJECTED_RETENTION_DAYS" => c.rejected.retention_days.to_string(),
                "TENCENT_SECRET_KEY" => return c.drift_repair.as_ref().map(|_| "set".into()),
                // The URL type adds the root path's slash.
                "TENCENT_API_BASE" => d.api_base.as_str().trim_end_matches('/').to_owned(),
                "TENCENT_ADMIN_ACCOUNT" => d.admin_account.clone(),
                "RECONCILE_INTERVAL_SECS" => d.interval.as_secs().to_string(),
                "RECONCILE_GRACE_SECS" => d.grace.as_secs().to_string(),
                "RECONCILE_MAX_RPS" => d.max_rps.to_string(),
                "NOTIFY_MODE" => {
                    assert_eq!(c.notify_mode, NotifyMode::Members);
                    "members".into()
                }
                "API_TOKEN" => return c.api_token.as_ref().map(|_| "set".into()),
                "API_LISTEN_ADDR" => return c.api_listen_addr.map(|a| a.to_string()),
                "API_WORKERS" => c.api_workers.to_string(),
                "CHANGES_RETENTION_HOURS" => c.changes_retention_hours.to_string(),
                "FEED_MAX_WAITERS" => c.feed_max_waiters.to_string(),
                "PUBLIC_CALLBACK_URL" => {
                    return c.public_callback_url.as_ref().map(|u| u.to_string());
                }
                other => panic!("{other} is documented but this test does not know it"),
            })
        };
        let documented = documented_defaults();
        assert_eq!(
            documented.len(),
            44,
            "a row was added or lost: {documented:?}"
        );
        for (var, default) in documented {
            assert_eq!(actual(&var), default, "the default of {var}");
        }
        assert_eq!(c.sdk_app_ids, vec![SdkAppId::parse("1400000001").unwrap()]);
    }

    #[test]
    fn logs_are_json_unless_a_terminal_reads_them() {
        assert_eq!(LogFormat::for_output(true), LogFormat::Pretty);
        assert_eq!(LogFormat::for_output(false), LogFormat::Json);
        // The tests' output is captured, not a terminal, unless run by hand.
        if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            assert_eq!(config(&BASE).unwrap().log_format, LogFormat::Json);
        }
        let pretty = config(&[BASE[0], BASE[1], ("LOG_FORMAT", "Pretty")]).unwrap();
        assert_eq!(pretty.log_format, LogFormat::Pretty);
    }

    #[test]
    fn several_app_ids() {
        let c = config(&[BASE[0], ("SDK_APP_ID", "1400000001, 1400000002")]).unwrap();
        assert_eq!(c.sdk_app_ids.len(), 2);
        assert!(c.is_our_app(SdkAppId::parse("1400000002").unwrap()));
        assert!(!c.is_our_app(SdkAppId::parse("1400000003").unwrap()));
    }

    #[test]
    fn the_read_api_listens_apart_only_with_its_token_and_its_own_port() {
        let token = ("API_TOKEN", "0123456789abcdef");
        let apart = config(&[
            BASE[0],
            BASE[1],
            token,
            ("API_LISTEN_ADDR", "127.0.0.1:8081"),
        ])
        .unwrap();
        assert_eq!(
            apart.api_listen_addr,
            Some("127.0.0.1:8081".parse().unwrap())
        );
        assert_eq!(apart.api_workers, 1);
        // Port 0 on both: two ports the system picks, not one.
        let both_zero = [
            BASE[0],
            BASE[1],
            token,
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("API_LISTEN_ADDR", "127.0.0.1:0"),
        ];
        assert!(config(&both_zero).is_ok());
        // Apart and without the token: refused at start, not served in silence.
        let no_token = config(&[BASE[0], BASE[1], ("API_LISTEN_ADDR", "127.0.0.1:0")]);
        let error = no_token.unwrap_err().to_string();
        assert!(
            error.contains("API_LISTEN_ADDR") && error.contains("API_TOKEN"),
            "{error}"
        );
        let refused: &[&[(&str, &str)]] = &[
            &[BASE[0], BASE[1], token, ("API_LISTEN_ADDR", "8081")],
            &[BASE[0], BASE[1], token, ("API_LISTEN_ADDR", "0.0.0.0:8080")],
            &[BASE[0], BASE[1], token, ("API_WORKERS", "0")],
        ];
        for vars in refused {
            let err = config(vars).unwrap_err().to_string();
            assert!(err.contains("API_"), "{err:?} for {vars:?}");
        }
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
            (&[BASE[0], BASE[1], ("BATCH_WRITERS", "0")], "BATCH_WRITERS"),
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
    fn bounds_hold_just_past_them() {
        let with = |var, value: &str| config(&[BASE[0], BASE[1], (var, value)]);
        let limit = BATCH_MAX_EVENTS_LIMIT.to_string();
        let past = (BATCH_MAX_EVENTS_LIMIT + 1).to_string();
        assert_eq!(BATCH_MAX_EVENTS_LIMIT, 214_748);
        assert_eq!(
            with("BATCH_MAX_EVENTS", &limit).unwrap().batch_max_events,
            BATCH_MAX_EVENTS_LIMIT
        );
        let err = with("BATCH_MAX_EVENTS", &past).unwrap_err().to_string();
        assert!(err.contains("BATCH_MAX_EVENTS"), "{err}");
        // The largest batch's member offsets fit in i32; one callback more would not.
        let members = |events: usize| events * crate::callback::MAX_LIST_ENTRIES;
        assert!(i32::try_from(members(BATCH_MAX_EVENTS_LIMIT)).is_ok());
        assert!(i32::try_from(members(BATCH_MAX_EVENTS_LIMIT + 1)).is_err());

        let one = with("DATABASE_ACQUIRE_TIMEOUT_MS", "1").unwrap();
        assert_eq!(one.database_acquire_timeout, Duration::from_millis(1));
        let err = with("DATABASE_ACQUIRE_TIMEOUT_MS", "0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATABASE_ACQUIRE_TIMEOUT_MS"), "{err}");

        // The lock timeout in 1..=60000; the writer's bound above it, at most ten minutes.
        let lock = |v| with("DATABASE_LOCK_TIMEOUT_MS", v);
        assert_eq!(
            lock("1").unwrap().database_lock_timeout,
            Duration::from_millis(1)
        );
        let longest = config(&[
            BASE[0],
            BASE[1],
            ("DATABASE_LOCK_TIMEOUT_MS", "60000"),
            ("DATABASE_WRITE_TIMEOUT_MS", "60001"),
        ])
        .unwrap();
        assert_eq!(longest.database_lock_timeout, Duration::from_secs(60));
        for past in ["0", "60001"] {
            let err = lock(past).unwrap_err().to_string();
            assert!(err.contains("DATABASE_LOCK_TIMEOUT_MS"), "{err}");
        }
        // The ledger's policies: 0 to a day; retention a positive number of days.
        for var in ["STAY_MERGE_GAP_SECS", "SESSION_EMPTY_GRACE_SECS"] {
            let day = with(var, "86400").unwrap().attendance;
            assert!(
                day.merge_gap.num_seconds() == 86_400 || day.empty_grace.num_seconds() == 86_400
            );
            assert!(with(var, "0").is_ok());
            for past in ["-1", "86401", "1.5", "soon"] {
                let err = with(var, past).unwrap_err().to_string();
                assert!(err.contains(var), "{err}");
            }
        }
        assert_eq!(
            with("ATTENDANCE_RETENTION_DAYS", "1")
                .unwrap()
                .attendance_retention_days,
            Some(1)
        );
        for past in ["0", "-3", "x"] {
            let err = with("ATTENDANCE_RETENTION_DAYS", past)
                .unwrap_err()
                .to_string();
            assert!(err.contains("ATTENDANCE_RETENTION_DAYS"), "{err}");
        }
        let write = |v| with("DATABASE_WRITE_TIMEOUT_MS", v);
        assert_eq!(
            write("201").unwrap().database_write_timeout,
            Duration::from_millis(201)
        );
        assert!(write("600000").is_ok());
        for past in ["200", "600001"] {
            let err = write(past).unwrap_err().to_string();
            assert!(err.contains("DATABASE_WRITE_TIMEOUT_MS"), "{err}");
        }
    }

    #[test]
    fn the_public_callback_url_is_absolute_https_without_extras() {
        let with = |value: &str| config(&[BASE[0], BASE[1], ("PUBLIC_CALLBACK_URL", value)]);
        assert!(config(&BASE).unwrap().public_callback_url.is_none());
        for good in [
            "https://rooms.example.com/callback",
            " https://rooms.example.com:8443/tencent/callback ",
            "https://203.0.113.7/callback",
        ] {
            let url = with(good).unwrap().public_callback_url.unwrap();
            assert_eq!(url.as_str(), good.trim());
        }
        // Just past each rule.
        for (bad, why) in [
            ("http://rooms.example.com/callback", "must be https://"),
            ("/callback", "absolute URL"),
            ("rooms.example.com/callback", "absolute URL"),
            ("https://rooms.example.com/callback#x", "fragment"),
            ("https://rooms.example.com/callback#", "fragment"),
            ("https://rooms.example.com/callback?x=1", "query"),
            ("https://rooms.example.com/callback?", "query"),
            ("ftp://rooms.example.com/callback", "must be https://"),
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(
                err.contains("PUBLIC_CALLBACK_URL") && err.contains(why),
                "{bad}: {err}"
            );
        }
        for credentials in [
            "https://user:hunter3@rooms.example.com/callback",
            "https://user@rooms.example.com/callback",
        ] {
            let err = with(credentials).unwrap_err().to_string();
            assert!(err.contains("credentials"), "{err}");
            assert!(!err.contains("hunter3") && !err.contains("user@"), "{err}");
        }
    }

    #[test]
    fn an_empty_token_means_no_signature_checks() {
        let c = config(&[BASE[0], BASE[1], ("CALLBACK_TOKEN", "")]).unwrap();
        assert!(c.callback_token.is_none());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = config(&[BASE[0], BASE[1], ("CALLBACK_TOKEN", "s3cret-token")]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-token"));
        assert!(!shown.contains("hunter2"));
    }
}
