//! The operator's view against the real thing: a real Prometheus (Debian's `prometheus`
//! package) scrapes a running roomsync on loopback with the rules of
//! `deploy/prometheus/alerts.yml` loaded. Traffic includes refused callbacks, drift repair
//! (a correction, then credential errors) and a PostgreSQL cut through the test proxy. Checked:
//! every metric name the rules and the Grafana dashboard use exists in Prometheus, every
//! dashboard query parses and returns data, every SQL panel runs, the journal alert is pending
//! or firing during the cut and gone once the journal drained, and each alert has its runbook
//! section and its promtool test.
//!
//! Without a `prometheus` binary the test says so and passes, unless
//! `ROOMSYNC_REQUIRE_PROMETHEUS` is set (as `.ci/run` does, after installing it): then it fails.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use sqlx::PgPool;

use crate::{
    fake_tencent::{Failure, FakeRoom, FakeTencent},
    helpers::*,
};

const KEY: &str = "5e1f0a3c2b4d6e8f0a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A Prometheus process with its own configuration and storage; killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Whether the binary is there; false (after saying why) when the test should pass
    /// without it.
    fn available() -> bool {
        let found = Command::new("prometheus")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var_os("ROOMSYNC_REQUIRE_PROMETHEUS").is_none(),
                "ROOMSYNC_REQUIRE_PROMETHEUS is set but there is no `prometheus` binary"
            );
            eprintln!(
                "SKIPPED: no `prometheus` binary on PATH (Debian: apt-get install prometheus); \
                 .ci/run installs it and sets ROOMSYNC_REQUIRE_PROMETHEUS"
            );
        }
        found
    }

    /// Starts Prometheus on a free loopback port, scraping `target` every second and
    /// evaluating the rules every second.
    async fn start(target: &str) -> Self {
        let mut dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: roomsync\n    static_configs:\n      - targets: [{target:?}]\n",
            rules = repo_file("deploy/prometheus/alerts.yml")
                .display()
                .to_string(),
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        // A port picked free can be taken before Prometheus binds it: then try another.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let child = Command::new("prometheus")
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("prometheus starts");
            let mut prometheus = Self {
                child,
                base: format!("http://127.0.0.1:{port}"),
                dir,
                client: client.clone(),
            };
            let ready = eventually(Duration::from_secs(30), || async {
                prometheus
                    .client
                    .get(format!("{}/-/ready", prometheus.base))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await;
            if ready {
                return prometheus;
            }
            let exited = prometheus.child.try_wait().unwrap().is_some();
            assert!(
                exited,
                "prometheus not ready within 30 s:\n{}",
                prometheus.log()
            );
            // It exited (the port was taken): keep the directory, drop the process.
            let _ = prometheus.child.wait();
            dir = std::mem::replace(&mut prometheus.dir, tempfile::tempdir().unwrap());
        }
        panic!("prometheus could not listen on a free port in three tries");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` of the HTTP API; the `data` of a successful answer, or the error text.
    async fn api(&self, path: &str) -> Result<Value, String> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    /// An instant query: its result vector, or Prometheus's error (a syntax error, say).
    async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let encoded = utf8_percent_encode(promql, NON_ALPHANUMERIC);
        let data = self.api(&format!("/api/v1/query?query={encoded}")).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Every metric name Prometheus holds a series of.
    async fn metric_names(&self) -> BTreeSet<String> {
        let data = self.api("/api/v1/label/__name__/values").await.unwrap();
        data.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    /// Alert name to state (`pending` or `firing`) of the active alerts.
    async fn alerts(&self) -> BTreeMap<String, String> {
        let data = self.api("/api/v1/alerts").await.unwrap_or_default();
        data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                    a["state"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// Waits (at most `limit`) until `alert` is pending or firing, or until it is not.
    async fn wait_alert(&self, alert: &str, active: bool, limit: Duration) -> bool {
        eventually(limit, || async {
            self.alerts().await.contains_key(alert) == active
        })
        .await
    }
}

/// The metric names a PromQL expression selects: identifiers outside label matchers, ranges
/// and strings that are neither functions, aggregations, keywords, numbers nor Grafana
/// variables (`$instance`, `$__rate_interval`).
fn promql_metric_names(expr: &str) -> Vec<String> {
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &[
        "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    // The index just past the string that starts at `i`.
    let skip_string = |mut i: usize| {
        let quote = chars[i];
        i += 1;
        while i < chars.len() && chars[i] != quote {
            i += if chars[i] == '\\' { 2 } else { 1 };
        }
        i + 1
    };
    // The index just past the bracket that closes the one at `i` (strings skipped).
    let close = |mut i: usize, open: char, shut: char| {
        let mut depth = 0;
        while i < chars.len() {
            match chars[i] {
                '"' | '\'' | '`' => {
                    i = skip_string(i);
                    continue;
                }
                c if c == open => depth += 1,
                c if c == shut => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '{' => i = close(i, '{', '}'),
            '[' => i = close(i, '[', ']'),
            '"' | '\'' | '`' => i = skip_string(i),
            '$' => {
                i += 1;
                while i < chars.len() && (ident(chars[i]) || chars[i] == '{' || chars[i] == '}') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if ident(c) => {
                let start = i;
                while i < chars.len() && ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let lower = word.to_ascii_lowercase();
                let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if next == Some('(') {
                        let open = i + chars[i..].iter().position(|&c| c == '(').unwrap();
                        i = close(open, '(', ')');
                    }
                } else if next == Some('(')
                    || AGGREGATIONS.contains(&lower.as_str())
                    || KEYWORDS.contains(&lower.as_str())
                {
                    // A function or an aggregation: its arguments follow.
                } else {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// A Grafana panel query as Prometheus can run it: the dashboard's variables replaced.
fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$instance", ".+")
}

/// A Grafana SQL panel query as PostgreSQL can run it: `$__timeFilter(col)` expanded.
fn grafana_to_sql(sql: &str) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find("$__timeFilter(") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "$__timeFilter(".len()..];
        let end = after.find(')').expect("$__timeFilter( is closed");
        let column = &after[..end];
        out.push_str(&format!(
            "{column} BETWEEN now() - interval '3 hours' AND now()"
        ));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// (panel title, datasource type, query) of every target of every panel.
fn dashboard_targets(dashboard: &Value) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let kind = target["datasource"]["type"]
                .as_str()
                .or(panel["datasource"]["type"].as_str())
                .unwrap_or("")
                .to_owned();
            let query = target["expr"]
                .as_str()
                .or(target["rawSql"].as_str())
                .unwrap_or("")
                .to_owned();
            found.push((panel["title"].as_str().unwrap().to_owned(), kind, query));
        }
    }
    found
}

/// What is wrong with the dashboard's Prometheus queries against what Prometheus holds: a
/// metric name that does not exist, a query that does not parse or returns nothing.
async fn dashboard_problems(
    dashboard: &Value,
    prometheus: &Prometheus,
    names: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut queries: Vec<(String, String)> = dashboard_targets(dashboard)
        .into_iter()
        .filter(|(_, kind, _)| kind == "prometheus")
        .map(|(title, _, query)| (title, query))
        .collect();
    // The instance variable: label_values(<metric>, instance).
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            let definition = variable["definition"].as_str().unwrap();
            let metric = definition
                .strip_prefix("label_values(")
                .and_then(|rest| rest.split(',').next())
                .unwrap_or(definition)
                .trim()
                .to_owned();
            queries.push((format!("variable {}", variable["name"]), metric));
        }
    }
    for (title, query) in queries {
        let used = promql_metric_names(&query);
        if used.is_empty() {
            problems.push(format!("{title}: no metric name in {query:?}"));
        }
        for name in used {
            if !names.contains(&name) {
                problems.push(format!("{title}: metric {name} does not exist"));
            }
        }
        match prometheus.query(&grafana_to_promql(&query)).await {
            Ok(result) if result.is_empty() => {
                problems.push(format!("{title}: {query:?} returns nothing"))
            }
            Ok(_) => {}
            Err(error) => problems.push(format!("{title}: {query:?}: {error}")),
        }
    }
    problems
}

/// Waits until the application's `/metrics` has a sample line starting with `sample` whose
/// value is at least `at_least`.
async fn metric_reaches(app: &TestApp, sample: &str, at_least: f64) -> bool {
    eventually(Duration::from_secs(20), || async {
        let text = app.get("/metrics").await.text().await.unwrap();
        text.lines()
            .filter_map(|line| line.strip_prefix(sample)?.trim().parse::<f64>().ok())
            .any(|v| v >= at_least)
    })
    .await
}

/// The drift repair counters that the alert rules and the dashboard read are exported at 0 by a
/// fresh application, drift repair off: a series that first appears at 1 shows no increase.
#[sqlx::test]
async fn the_drift_repair_counters_are_exported_at_zero_from_the_start(pool: PgPool) {
    use roomsync::telemetry::{RECONCILE_CORRECTION_KINDS, RECONCILE_ERROR_CODES};
    let app = spawn_app(pool).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    let kinds = RECONCILE_CORRECTION_KINDS
        .map(|kind| format!(r#"roomsync_reconcile_corrections_total{{kind="{kind}"}} 0"#));
    let codes = RECONCILE_ERROR_CODES
        .map(|code| format!(r#"roomsync_reconcile_rest_errors_total{{code="{code}"}} 0"#));
    for sample in kinds.iter().chain(&codes) {
        assert!(text.lines().any(|l| l == sample), "{sample} in:\n{text}");
    }
    // Among them, those the alert rules and the dashboard name.
    for kind in ["enter", "leave", "destroy", "seats"] {
        assert!(RECONCILE_CORRECTION_KINDS.contains(&kind), "{kind}");
    }
    for code in [
        "100001", "70001", "60004", "60006", "60021", "no_key", "timeout",
    ] {
        assert!(RECONCILE_ERROR_CODES.contains(&code), "{code}");
    }
    app.stop().await;
}

#[test]
fn metric_names_are_read_from_promql() {
    assert_eq!(
        promql_metric_names(
            r#"sum by (instance, job) (rate(roomsync_a_total{outcome=~"x|y}"}[5m]))
                 / on (instance, job) group_left () sum(rate(roomsync_b[$__rate_interval])) > 0.1"#
        ),
        ["roomsync_a_total", "roomsync_b"]
    );
    assert_eq!(
        promql_metric_names(r#"up{job="roomsync"} == 0 or absent(up{job="roomsync"})"#),
        ["up", "up"]
    );
    assert_eq!(
        promql_metric_names(
            r#"histogram_quantile(0.99, sum by (le) (rate(roomsync_h_bucket{instance=~"$instance"}[1m]))) > 1.5"#
        ),
        ["roomsync_h_bucket"]
    );
    assert_eq!(
        promql_metric_names("roomsync_d > 0 and delta(roomsync_d[5m] offset 1m) >= 0"),
        ["roomsync_d", "roomsync_d"]
    );
}

#[test]
fn grafana_macros_become_sql() {
    assert_eq!(
        grafana_to_sql("SELECT 1 FROM t WHERE $__timeFilter(received_at) GROUP BY 1"),
        "SELECT 1 FROM t WHERE received_at BETWEEN now() - interval '3 hours' AND now() GROUP BY 1"
    );
}

#[sqlx::test]
async fn rules_and_dashboard_hold_against_a_real_prometheus(pool: PgPool) {
    if !Prometheus::available() {
        return;
    }
    let fake = FakeTencent::start(&[(APP_ID, KEY)]).await;
    // Tencent knows a member the view has not heard of: drift repair stores a correction.
    fake.set_room(APP_ID, "r", FakeRoom::with_members(&["a", "b", "new"]));
    let proxy = Proxy::start(server_of(&pool)).await;
    let key = format!("{APP_ID}={KEY}");
    let app = spawn_app_with(
        proxy.pool_for(&pool),
        &[
            ("SDK_APP_ID", "1400000001"),
            ("TENCENT_API_BASE", fake.base_url.as_str()),
            ("TENCENT_SECRET_KEY", key.as_str()),
            ("RECONCILE_INTERVAL_SECS", "1"),
            ("RECONCILE_GRACE_SECS", "0"),
        ],
    )
    .await;
    let target = app.address.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&target).await;
    let scraped = eventually(Duration::from_secs(30), || async {
        prometheus
            .query(r#"up{job="roomsync"} == 1"#)
            .await
            .is_ok_and(|r| r.len() == 1)
    })
    .await;
    assert!(scraped, "roomsync scraped:\n{}", prometheus.log());

    // Accepted and refused callbacks, in two rounds with a scrape between them, so every
    // counter grows after Prometheus first saw it (a rate needs an increase it saw).
    let mut at = 1_000;
    for round in 0..2 {
        for user in ["a", "b"] {
            at += 1;
            app.deliver(&enter("r", &[user], at)).await;
        }
        let body = enter("r", &["x"], at);
        let (status, _) = answer(app.post_raw(&app.query_for(&body), "not json").await).await;
        assert_eq!(status, 400);
        let stranger = "SdkAppid=1&CallbackCommand=Room.CallbackAfterMemberEnter&contenttype=json";
        let (status, _) = answer(app.post_raw(stranger, body.to_string()).await).await;
        assert_eq!(status, 403);
        if round == 0 {
            let seen = eventually(Duration::from_secs(30), || async {
                let mut all = true;
                for outcome in ["stored", "invalid", "forbidden"] {
                    let selector = format!(r#"roomsync_callbacks_total{{outcome="{outcome}"}}"#);
                    all &= prometheus
                        .query(&selector)
                        .await
                        .is_ok_and(|r| !r.is_empty());
                }
                all
            })
            .await;
            assert!(seen, "the first round scraped:\n{}", prometheus.log());
        }
    }
    assert!(
        metric_reaches(
            &app,
            r#"roomsync_reconcile_corrections_total{kind="enter"}"#,
            1.0
        )
        .await,
        "drift repair stored a correction"
    );
    // Tencent refuses the credentials: counted by code, every second.
    fake.fail(Some(Failure::Code(70001, "UserSig expired")));
    assert!(
        metric_reaches(
            &app,
            r#"roomsync_reconcile_rest_errors_total{code="70001"}"#,
            3.0
        )
        .await,
        "credential errors counted"
    );
    fake.fail(None);

    // PostgreSQL goes away: callbacks are journaled and the journal alert becomes active.
    proxy.cut();
    for user in 0..10 {
        at += 1;
        app.deliver(&enter("r", &[&format!("cut{user}")], at)).await;
    }
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    // At least these ten (a commit slow before the cut may have journaled one more).
    assert!(ready["journal_depth"].as_u64() >= Some(10), "{ready}");
    assert!(
        prometheus
            .wait_alert("RoomsyncJournalNotDraining", true, Duration::from_secs(60))
            .await,
        "the journal alert is pending or firing during the cut: {:?}",
        prometheus.alerts().await
    );
    let during = prometheus.alerts().await;
    // No token configured, refusals well above 5%, credential errors: those are active too.
    for alert in [
        "RoomsyncCallbacksUnsigned",
        "RoomsyncCallbacksRefused",
        "RoomsyncDriftRepairCredentials",
    ] {
        assert!(during.contains_key(alert), "{alert} active: {during:?}");
    }
    // Back: the journal drains and the alert goes away.
    proxy.restore();
    let drained = eventually(Duration::from_secs(30), || async {
        let ready: Value = app.get("/readyz").await.json().await.unwrap();
        ready["journal_depth"] == 0
    })
    .await;
    assert!(drained, "the journal drained");
    assert!(
        prometheus
            .wait_alert("RoomsyncJournalNotDraining", false, Duration::from_secs(30))
            .await,
        "the journal alert ends once drained: {:?}",
        prometheus.alerts().await
    );

    let names = prometheus.metric_names().await;
    // Every metric a rule uses exists; every rule has its runbook section and its promtool
    // test, and its runbook_url names that section.
    let rules = prometheus.api("/api/v1/rules").await.unwrap();
    let operations = std::fs::read_to_string(repo_file("docs/operations.md")).unwrap();
    let unit_tests =
        std::fs::read_to_string(repo_file("deploy/prometheus/alerts.test.yml")).unwrap();
    let mut problems = Vec::new();
    let mut alerts = 0;
    let all_rules: Vec<&Value> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    // A recording rule's series is a metric the other rules may use.
    let recorded: BTreeSet<String> = all_rules
        .iter()
        .filter(|rule| rule["type"] == "recording")
        .map(|rule| rule["name"].as_str().unwrap().to_owned())
        .collect();
    for rule in all_rules {
        let alert = rule["name"].as_str().unwrap();
        let query = rule["query"].as_str().unwrap();
        let used = promql_metric_names(query);
        if used.is_empty() {
            problems.push(format!("{alert}: no metric name in {query:?}"));
        }
        for name in used {
            if !names.contains(&name) && !recorded.contains(&name) {
                problems.push(format!("{alert}: metric {name} does not exist"));
            }
        }
        if rule["type"] == "recording" {
            continue;
        }
        alerts += 1;
        let anchor = alert.to_ascii_lowercase();
        if rule["annotations"]["runbook_url"] != format!("docs/operations.md#{anchor}").as_str() {
            problems.push(format!(
                "{alert}: runbook_url is not docs/operations.md#{anchor}"
            ));
        }
        if !operations.lines().any(|l| l == format!("### {alert}")) {
            problems.push(format!(
                "{alert}: no `### {alert}` section in docs/operations.md"
            ));
        }
        if !unit_tests.contains(&format!(
            "alertname: {alert}\n        exp_alerts:\n          - exp_labels:"
        )) {
            problems.push(format!("{alert}: no promtool test where it fires"));
        }
        if rule["labels"]["severity"].as_str().is_none() {
            problems.push(format!("{alert}: no severity"));
        }
        if rule["annotations"]["threshold"].as_str().is_none() {
            problems.push(format!("{alert}: no threshold justification"));
        }
    }
    assert!(alerts >= 13, "the rules are loaded: {rules}");

    // Every Prometheus query of the dashboard: names exist, it parses, it returns data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("deploy/grafana/dashboards/roomsync.json")).unwrap(),
    )
    .unwrap();
    problems.extend(dashboard_problems(&dashboard, &prometheus, &names).await);
    // Every SQL panel runs on the schema and finds rows.
    for (title, _, sql) in dashboard_targets(&dashboard)
        .into_iter()
        .filter(|(_, kind, _)| kind == "grafana-postgresql-datasource")
    {
        match sqlx::query(sqlx::AssertSqlSafe(grafana_to_sql(&sql)))
            .fetch_all(&pool)
            .await
        {
            Ok(rows) if rows.is_empty() => problems.push(format!("{title}: no rows")),
            Ok(_) => {}
            Err(error) => problems.push(format!("{title}: {error}")),
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // The check has teeth: one misspelt metric in one panel is reported.
    let misspelt: Value =
        serde_json::from_str(&serde_json::to_string(&dashboard).unwrap().replacen(
            "roomsync_journal_drained_total",
            "roomsync_journal_drainde_total",
            1,
        ))
        .unwrap();
    let found = dashboard_problems(&misspelt, &prometheus, &names).await;
    assert!(
        found
            .iter()
            .any(|p| p.contains("roomsync_journal_drainde_total does not exist")),
        "{found:#?}"
    );

    drop(prometheus);
    app.stop().await;
    fake.stop().await;
}
