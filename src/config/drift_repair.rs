//! Drift-repair configuration: the `TENCENT_*` and `RECONCILE_*` variables
//! (docs/configuration.md#drift-repair).
//!
//! [`DriftRepairConfig::from_lookup`] reads the same kind of variable source as
//! [`Config::from_lookup`](super::Config::from_lookup), so that one can call it with its
//! own `lookup` and the SDK app ids it has already parsed:
//!
//! ```
//! # use roomsync::{callback::SdkAppId, config::DriftRepairConfig};
//! let apps = [SdkAppId::parse("1400000001").unwrap()];
//! let lookup = |name: &str| (name == "TENCENT_SECRET_KEY").then(|| "k3y".to_owned());
//! let drift = DriftRepairConfig::from_lookup(lookup, &apps).unwrap().expect("on");
//! assert_eq!(drift.interval.as_secs(), 300);
//! ```
//!
//! Rules:
//! - `TENCENT_SECRET_KEY` unset (or empty): drift repair is off (`Ok(None)`).
//! - `TENCENT_SECRET_KEY` is either one plain key, or `APPID=KEY,APPID=KEY,…`. A plain key is
//!   accepted only when exactly one app is configured: Tencent makes a separate key for each
//!   app, so one key for several apps can only be a mistake that would surface later as
//!   UserSig errors. In the list form every app id must be one of the configured ones, appear
//!   once, and every configured app must have a key.
//! - `RECONCILE_INTERVAL_SECS=0` turns the background checks off even with a key; the
//!   `reconcile` command still works.
//! - Every variable is validated whenever it is set, also while drift repair is off, so that a
//!   typo fails at start-up instead of when the key is added.
//! - No error text ever contains a key.

use std::{collections::BTreeMap, fmt, net::IpAddr, time::Duration};

use reqwest::Url;

use super::values::{ConfigError, Secret, invalid, parse_or};
use crate::callback::SdkAppId;

pub const DEFAULT_API_BASE: &str = "https://console.tim.qq.com";
pub const DEFAULT_ADMIN_ACCOUNT: &str = "administrator";
pub const DEFAULT_INTERVAL_SECS: u64 = 300;
pub const DEFAULT_GRACE_SECS: u64 = 30;
pub const DEFAULT_MAX_RPS: u32 = 20;
/// Tencent's limit for the Room REST API: 200 calls per second per app.
pub const MAX_RPS_LIMIT: u32 = 200;

/// Validated drift-repair settings; exists only while drift repair is on.
#[derive(Clone, PartialEq, Eq)]
pub struct DriftRepairConfig {
    /// Base URL of Tencent's REST API for the apps' region, without a trailing slash.
    pub api_base: Url,
    /// The app administrator account the UserSig is made for.
    pub admin_account: String,
    /// The secret key of every configured app.
    pub keys: BTreeMap<SdkAppId, Secret>,
    /// How often each live room is checked; zero: no checks in the background (the
    /// `reconcile` command still checks on demand).
    pub interval: Duration,
    /// A member whose newest event is younger than this is never corrected.
    pub grace: Duration,
    /// REST calls per second, per app, across all instances (1..=200).
    pub max_rps: u32,
}

impl fmt::Debug for DriftRepairConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriftRepairConfig")
            .field("api_base", &self.api_base.as_str())
            .field("admin_account", &self.admin_account)
            // `Secret`'s Debug is redacted; the app ids are not secret.
            .field("keys", &self.keys)
            .field("interval", &self.interval)
            .field("grace", &self.grace)
            .field("max_rps", &self.max_rps)
            .finish()
    }
}

impl DriftRepairConfig {
    /// Reads the drift-repair variables. `sdk_app_ids` are the apps of `SDK_APP_ID`.
    /// `Ok(None)`: drift repair is off.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        sdk_app_ids: &[SdkAppId],
    ) -> Result<Option<Self>, ConfigError> {
        let get = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());

        let api_base = parse_api_base(get("TENCENT_API_BASE").as_deref())?;
        let admin_account = match get("TENCENT_ADMIN_ACCOUNT") {
            None => DEFAULT_ADMIN_ACCOUNT.to_owned(),
            Some(raw) => {
                let account = raw.trim();
                if account.len() > 256 || account.chars().any(char::is_control) {
                    return Err(invalid(
                        "TENCENT_ADMIN_ACCOUNT",
                        "must be at most 256 bytes without control characters",
                    ));
                }
                account.to_owned()
            }
        };
        let keys = match get("TENCENT_SECRET_KEY") {
            None => None,
            Some(raw) => Some(parse_keys(&raw, sdk_app_ids)?),
        };
        let interval_secs: u64 = parse_or(&get, "RECONCILE_INTERVAL_SECS", DEFAULT_INTERVAL_SECS)?;
        let grace_secs: u64 = parse_or(&get, "RECONCILE_GRACE_SECS", DEFAULT_GRACE_SECS)?;
        let max_rps: u32 = parse_or(&get, "RECONCILE_MAX_RPS", DEFAULT_MAX_RPS)?;
        if !(1..=MAX_RPS_LIMIT).contains(&max_rps) {
            return Err(invalid(
                "RECONCILE_MAX_RPS",
                format!("{max_rps}: must be in 1..={MAX_RPS_LIMIT} (Tencent's limit per app)"),
            ));
        }
        // Durations far beyond any sensible value would overflow timestamp arithmetic later.
        for (var, secs) in [
            ("RECONCILE_INTERVAL_SECS", interval_secs),
            ("RECONCILE_GRACE_SECS", grace_secs),
        ] {
            if secs > 366 * 24 * 60 * 60 {
                return Err(invalid(var, "must be at most a year"));
            }
        }
        let Some(keys) = keys else {
            return Ok(None);
        };
        Ok(Some(Self {
            api_base,
            admin_account,
            keys,
            interval: Duration::from_secs(interval_secs),
            grace: Duration::from_secs(grace_secs),
            max_rps,
        }))
    }

    /// The key of `app`, if it is one of ours.
    pub fn key(&self, app: SdkAppId) -> Option<&Secret> {
        self.keys.get(&app)
    }
}

/// `https://` anywhere; `http://` only for loopback IP literals (a test server). No query or
/// fragment: the client appends the path and its own query.
fn parse_api_base(raw: Option<&str>) -> Result<Url, ConfigError> {
    const VAR: &str = "TENCENT_API_BASE";
    let raw = raw.map_or(DEFAULT_API_BASE, str::trim);
    let url = Url::parse(raw).map_err(|e| invalid(VAR, format!("{raw:?}: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            // IP literals only: a name could resolve anywhere.
            let loopback = url
                .host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                .and_then(|h| h.parse::<IpAddr>().ok())
                .is_some_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(invalid(
                    VAR,
                    format!(
                        "{raw:?}: http:// is allowed only for 127.0.0.0/8 and [::1]; use https://"
                    ),
                ));
            }
        }
        other => {
            return Err(invalid(
                VAR,
                format!("{raw:?}: scheme {other} is not https"),
            ));
        }
    }
    if url.host().is_none() {
        return Err(invalid(VAR, format!("{raw:?}: no host")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            VAR,
            format!("{raw:?}: must not have a query or fragment"),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Do not echo it: it may hold a password.
        return Err(invalid(VAR, "must not contain credentials"));
    }
    Ok(url)
}

/// One plain key (a single app), or `APPID=KEY,…`. Never puts the text into an error.
fn parse_keys(raw: &str, apps: &[SdkAppId]) -> Result<BTreeMap<SdkAppId, Secret>, ConfigError> {
    const VAR: &str = "TENCENT_SECRET_KEY";
    let raw = raw.trim();
    let mut keys = BTreeMap::new();
    if !raw.contains('=') {
        if raw.contains(',') || raw.chars().any(char::is_whitespace) {
            return Err(invalid(
                VAR,
                "a plain key has no ',' or spaces; with several apps use APPID=KEY,APPID=KEY",
            ));
        }
        match apps {
            [app] => {
                keys.insert(*app, Secret::new(raw));
                return Ok(keys);
            }
            _ => {
                return Err(invalid(
                    VAR,
                    format!(
                        "SDK_APP_ID lists {} apps: give each its key as APPID=KEY,APPID=KEY",
                        apps.len()
                    ),
                ));
            }
        }
    }
    for (n, entry) in raw.split(',').enumerate() {
        let position = n + 1;
        let Some((app, key)) = entry.split_once('=') else {
            return Err(invalid(VAR, format!("entry {position} is not APPID=KEY")));
        };
        let app = SdkAppId::parse(app.trim()).ok_or_else(|| {
            invalid(
                VAR,
                format!("entry {position}: the app id is not a positive integer"),
            )
        })?;
        if !apps.contains(&app) {
            return Err(invalid(
                VAR,
                format!("entry {position}: app {} is not in SDK_APP_ID", app.get()),
            ));
        }
        let key = key.trim();
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(invalid(
                VAR,
                format!(
                    "entry {position} (app {}): the key is empty or has spaces",
                    app.get()
                ),
            ));
        }
        if keys.insert(app, Secret::new(key)).is_some() {
            return Err(invalid(VAR, format!("app {} is listed twice", app.get())));
        }
    }
    let missing: Vec<String> = apps
        .iter()
        .filter(|app| !keys.contains_key(app))
        .map(|app| app.get().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(invalid(
            VAR,
            format!("no key for app {} of SDK_APP_ID", missing.join(", ")),
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY_A: &str = "aaaa1111secret";
    const KEY_B: &str = "bbbb2222secret";

    fn app(id: i64) -> SdkAppId {
        SdkAppId::parse(&id.to_string()).unwrap()
    }

    fn parse(
        vars: &[(&str, &str)],
        apps: &[i64],
    ) -> Result<Option<DriftRepairConfig>, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let apps: Vec<SdkAppId> = apps.iter().map(|id| app(*id)).collect();
        DriftRepairConfig::from_lookup(|k| map.get(k).cloned(), &apps)
    }

    fn error(vars: &[(&str, &str)], apps: &[i64]) -> String {
        let err = parse(vars, apps)
            .expect_err("should be refused")
            .to_string();
        assert!(
            !err.contains(KEY_A) && !err.contains(KEY_B),
            "{err} shows a key"
        );
        err
    }

    #[test]
    fn off_without_a_key() {
        assert_eq!(parse(&[], &[1]).unwrap(), None);
        assert_eq!(parse(&[("TENCENT_SECRET_KEY", "  ")], &[1]).unwrap(), None);
    }

    #[test]
    fn defaults_with_one_key() {
        let c = parse(&[("TENCENT_SECRET_KEY", KEY_A)], &[1])
            .unwrap()
            .unwrap();
        assert_eq!(c.api_base.as_str(), "https://console.tim.qq.com/");
        assert_eq!(c.admin_account, "administrator");
        assert_eq!(c.key(app(1)).unwrap().expose(), KEY_A);
        assert_eq!(c.interval, Duration::from_secs(300));
        assert_eq!(c.grace, Duration::from_secs(30));
        assert_eq!(c.max_rps, 20);
    }

    #[test]
    fn every_variable_is_read() {
        let c = parse(
            &[
                ("TENCENT_SECRET_KEY", KEY_A),
                ("TENCENT_API_BASE", "https://adminapisgp.im.qcloud.com"),
                ("TENCENT_ADMIN_ACCOUNT", "ops-admin"),
                ("RECONCILE_INTERVAL_SECS", "60"),
                ("RECONCILE_GRACE_SECS", "0"),
                ("RECONCILE_MAX_RPS", "200"),
            ],
            &[1],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.api_base.host_str(), Some("adminapisgp.im.qcloud.com"));
        assert_eq!(c.admin_account, "ops-admin");
        assert_eq!(c.interval, Duration::from_secs(60));
        assert_eq!(c.grace, Duration::ZERO);
        assert_eq!(c.max_rps, 200);
    }

    #[test]
    fn interval_zero_turns_the_background_checks_off() {
        let vars = [
            ("TENCENT_SECRET_KEY", KEY_A),
            ("RECONCILE_INTERVAL_SECS", "0"),
        ];
        assert!(parse(&vars, &[1]).unwrap().unwrap().interval.is_zero());
    }

    #[test]
    fn one_key_per_app() {
        let c = parse(
            &[("TENCENT_SECRET_KEY", &format!(" 2={KEY_B} , 1={KEY_A}"))],
            &[1, 2],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.key(app(1)).unwrap().expose(), KEY_A);
        assert_eq!(c.key(app(2)).unwrap().expose(), KEY_B);
        assert!(c.key(app(3)).is_none());
        // The list form also works with a single app.
        let c = parse(&[("TENCENT_SECRET_KEY", &format!("1={KEY_A}"))], &[1])
            .unwrap()
            .unwrap();
        assert_eq!(c.keys.len(), 1);
    }

    #[test]
    fn key_errors_name_the_variable_and_never_the_key() {
        let cases: Vec<(String, &[i64], &str)> = vec![
            (KEY_A.into(), &[1, 2], "APPID=KEY"),
            (format!("{KEY_A},{KEY_B}"), &[1, 2], "APPID=KEY"),
            (format!("1={KEY_A}"), &[1, 2], "no key for app 2"),
            (
                format!("1={KEY_A},3={KEY_B}"),
                &[1, 2],
                "app 3 is not in SDK_APP_ID",
            ),
            (format!("1={KEY_A},1={KEY_B}"), &[1], "listed twice"),
            (format!("x={KEY_A}"), &[1], "not a positive integer"),
            (
                format!("1={KEY_A},{KEY_B}"),
                &[1],
                "entry 2 is not APPID=KEY",
            ),
            ("1=".into(), &[1], "empty"),
            (format!("1={KEY_A} {KEY_B}"), &[1], "spaces"),
        ];
        for (value, apps, problem) in cases {
            let err = error(&[("TENCENT_SECRET_KEY", &value)], apps);
            assert!(err.contains("TENCENT_SECRET_KEY"), "{err}");
            assert!(err.contains(problem), "{err} should say {problem}");
        }
    }

    #[test]
    fn api_base_rules() {
        let ok = |base: &str| {
            parse(
                &[("TENCENT_SECRET_KEY", KEY_A), ("TENCENT_API_BASE", base)],
                &[1],
            )
            .unwrap()
            .unwrap()
            .api_base
        };
        assert_eq!(ok("http://127.0.0.1:8080").port(), Some(8080));
        assert_eq!(ok("http://127.1.2.3").host_str(), Some("127.1.2.3"));
        assert_eq!(ok("http://[::1]:9").host_str(), Some("[::1]"));
        assert_eq!(ok("https://example.com/prefix/").path(), "/prefix/");
        for bad in [
            "console.tim.qq.com",
            "http://console.tim.qq.com",
            "http://localhost:8080",
            "http://10.0.0.1",
            "ftp://127.0.0.1",
            "https://example.com/?x=1",
            "https://user:pw@example.com",
            "not a url",
        ] {
            let err = error(
                &[("TENCENT_SECRET_KEY", KEY_A), ("TENCENT_API_BASE", bad)],
                &[1],
            );
            assert!(err.contains("TENCENT_API_BASE"), "{bad}: {err}");
            assert!(!err.contains(":pw@"), "{err}");
        }
    }

    #[test]
    fn numbers_are_checked() {
        for (var, value) in [
            ("RECONCILE_INTERVAL_SECS", "-1"),
            ("RECONCILE_INTERVAL_SECS", "soon"),
            ("RECONCILE_INTERVAL_SECS", "99999999999"),
            ("RECONCILE_GRACE_SECS", "x"),
            ("RECONCILE_MAX_RPS", "0"),
            ("RECONCILE_MAX_RPS", "201"),
            ("RECONCILE_MAX_RPS", "1.5"),
        ] {
            let err = error(&[("TENCENT_SECRET_KEY", KEY_A), (var, value)], &[1]);
            assert!(err.contains(var), "{err}");
            // Checked also while drift repair is off.
            let err = error(&[(var, value)], &[1]);
            assert!(err.contains(var), "{err}");
        }
    }

    #[test]
    fn admin_account_is_checked() {
        let err = error(
            &[
                ("TENCENT_SECRET_KEY", KEY_A),
                ("TENCENT_ADMIN_ACCOUNT", "a\nb"),
            ],
            &[1],
        );
        assert!(err.contains("TENCENT_ADMIN_ACCOUNT"));
    }

    #[test]
    fn keys_stay_out_of_debug_output() {
        let c = parse(
            &[("TENCENT_SECRET_KEY", &format!("1={KEY_A},2={KEY_B}"))],
            &[1, 2],
        )
        .unwrap()
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains(KEY_A) && !shown.contains(KEY_B), "{shown}");
    }
}
