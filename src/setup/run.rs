//! Asking Tencent: `roomsync tencent check` and `configure`, and the reports they print.

use std::fmt;

use reqwest::Url;

use super::{
    EXIT_FINDINGS, EXIT_NOT_ASKED, Plan, ProductCheck, Selection, compare_app, plan, token_note,
};
use crate::{
    callback::{Product, SdkAppId},
    tencent::{CALLBACK_CONFIG_EXISTS, NO_CALLBACK_CONFIG, TencentClient, TencentError},
};

/// The apps to look at: `app` when given (it must have a key), else every app with one.
pub fn apps(client: &TencentClient, app: Option<i64>) -> Result<Vec<SdkAppId>, String> {
    match app {
        None => Ok(client.apps().collect()),
        Some(raw) => {
            let app = SdkAppId::from_i64(raw).ok_or("--app must be a positive integer")?;
            if client.apps().any(|a| a == app) {
                Ok(vec![app])
            } else {
                Err(format!("app {raw} has no key in TENCENT_SECRET_KEY"))
            }
        }
    }
}

/// A failed call, with what to look at. The error's text holds no key, UserSig or URL.
struct NotAsked<'a>(&'a TencentError);

impl fmt::Display for NotAsked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let error = self.0;
        write!(f, "{error}")?;
        if error.is_auth_error() {
            f.write_str(
                "; Tencent refused the credentials: check this app's key in TENCENT_SECRET_KEY and TENCENT_ADMIN_ACCOUNT",
            )
        } else if matches!(
            error,
            TencentError::Network(_) | TencentError::Timeout | TencentError::Http(_)
        ) {
            f.write_str("; Tencent could not be reached: check TENCENT_API_BASE and the network")
        } else {
            Ok(())
        }
    }
}

fn plural(n: usize, one: &str, more: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { more })
}

/// `check`'s outcome for one app.
#[derive(Debug)]
pub struct AppCheck {
    pub app: SdkAppId,
    pub checks: Vec<ProductCheck>,
    /// Products whose configuration could not be read.
    pub failed: Vec<(Product, TencentError)>,
}

/// What `roomsync tencent check` found; its `Display` is the command's output.
#[derive(Debug)]
pub struct CheckReport {
    /// `CALLBACK_TOKEN` is set.
    pub signed: bool,
    pub apps: Vec<AppCheck>,
}

impl CheckReport {
    pub fn findings(&self) -> usize {
        self.apps
            .iter()
            .flat_map(|a| &a.checks)
            .map(|c| c.findings.len())
            .sum()
    }

    fn failures(&self) -> usize {
        self.apps.iter().map(|a| a.failed.len()).sum()
    }

    /// 0: all right; [`EXIT_FINDINGS`]: a finding; [`EXIT_NOT_ASKED`]: some product of some app
    /// could not be read (the check is incomplete, whatever the rest found).
    pub fn exit_code(&self) -> u8 {
        if self.failures() > 0 {
            EXIT_NOT_ASKED
        } else if self.findings() > 0 {
            EXIT_FINDINGS
        } else {
            0
        }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", token_note(self.signed))?;
        for app in &self.apps {
            let id = app.app.get();
            for check in &app.checks {
                let label = format!("app {id} {}", check.product.as_str());
                if let Some(config) = &check.config {
                    writeln!(
                        f,
                        "{label}: Tencent calls {} with {} commands on",
                        config.url,
                        config.commands.len()
                    )?;
                }
                for finding in &check.findings {
                    writeln!(f, "{label}: {finding}")?;
                }
                for note in &check.notes {
                    writeln!(f, "{label}: note: {note}")?;
                }
                if check.findings.is_empty() && check.config.is_some() {
                    writeln!(f, "{label}: all right")?;
                }
            }
            for (product, error) in &app.failed {
                writeln!(
                    f,
                    "app {id} {}: not asked: {}",
                    product.as_str(),
                    NotAsked(error)
                )?;
            }
        }
        let (findings, failures) = (self.findings(), self.failures());
        let apps = plural(self.apps.len(), "app", "apps");
        match (findings, failures) {
            (0, 0) => write!(f, "{apps} checked: all right"),
            _ => write!(
                f,
                "{apps} checked: {}, {} not read",
                plural(findings, "finding", "findings"),
                plural(failures, "configuration", "configurations")
            ),
        }
    }
}

/// `roomsync tencent check`: reads each app's configuration of the selected products and
/// compares it. Never fails as a whole: what could not be read is in the report.
pub async fn check(
    client: &TencentClient,
    apps: &[SdkAppId],
    selection: Selection,
    ours: Option<&Url>,
    signed: bool,
) -> CheckReport {
    let mut report = CheckReport {
        signed,
        apps: Vec::new(),
    };
    for &app in apps {
        let mut configs = Vec::new();
        let mut failed = Vec::new();
        for &product in selection.products() {
            match client.get_callback(app, product).await {
                Ok(answer) => configs.push((product, answer.map(|a| a.data))),
                Err(error) => failed.push((product, error)),
            }
        }
        report.apps.push(AppCheck {
            app,
            checks: compare_app(selection, &configs, ours),
            failed,
        });
    }
    report
}

/// `configure`'s outcome for one product of one app.
#[derive(Debug)]
pub enum Outcome {
    /// Done (or, in a dry run, what would be done).
    Planned(Plan),
    /// The configuration could not be read or written: Tencent unreachable, credentials.
    NotAsked(TencentError),
    /// Tencent refused the change (the plan, and why).
    Refused(Plan, TencentError),
}

/// What `roomsync tencent configure` did; its `Display` is the command's output.
#[derive(Debug)]
pub struct ConfigureReport {
    pub dry_run: bool,
    pub outcomes: Vec<(SdkAppId, Product, Outcome)>,
}

impl ConfigureReport {
    /// 0: done; [`EXIT_NOT_ASKED`]: Tencent could not be asked for some product; else
    /// [`EXIT_FINDINGS`] when Tencent refused a change.
    pub fn exit_code(&self) -> u8 {
        let any = |f: fn(&Outcome) -> bool| self.outcomes.iter().any(|(_, _, o)| f(o));
        if any(|o| matches!(o, Outcome::NotAsked(_))) {
            EXIT_NOT_ASKED
        } else if any(|o| matches!(o, Outcome::Refused(..))) {
            EXIT_FINDINGS
        } else {
            0
        }
    }
}

impl fmt::Display for ConfigureReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (app, product, outcome) in &self.outcomes {
            let label = format!("app {} {}", app.get(), product.as_str());
            match outcome {
                Outcome::Planned(plan) => writeln!(f, "{label}: {plan}")?,
                Outcome::NotAsked(error) => writeln!(f, "{label}: not asked: {}", NotAsked(error))?,
                Outcome::Refused(plan, error) => writeln!(
                    f,
                    "{label}: {plan}: refused by Tencent: {}",
                    NotAsked(error)
                )?,
            }
        }
        if self.dry_run {
            write!(f, "dry run: nothing was sent to Tencent")
        } else {
            write!(f, "done")
        }
    }
}

/// `roomsync tencent configure`: points each selected product of each app at `ours` with
/// every handled command on. `set_callback` when there is no configuration, `update_callback`
/// otherwise; with `dry_run` only `get_callback` is called.
pub async fn configure(
    client: &TencentClient,
    apps: &[SdkAppId],
    selection: Selection,
    ours: &Url,
    dry_run: bool,
) -> ConfigureReport {
    let mut report = ConfigureReport {
        dry_run,
        outcomes: Vec::new(),
    };
    for &app in apps {
        for &product in selection.products() {
            let outcome = configure_one(client, app, product, ours, dry_run).await;
            report.outcomes.push((app, product, outcome));
        }
    }
    report
}

async fn configure_one(
    client: &TencentClient,
    app: SdkAppId,
    product: Product,
    ours: &Url,
    dry_run: bool,
) -> Outcome {
    // A second round only when the configuration appeared or vanished between the read and
    // the write (another operator, the console): plan again from what is there now.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let theirs = match client.get_callback(app, product).await {
            Ok(answer) => answer.map(|a| a.data),
            Err(error) => return Outcome::NotAsked(error),
        };
        let plan = plan(product, theirs.as_ref(), ours);
        let written = match (&plan, dry_run) {
            (Plan::Nothing, _) | (_, true) => return Outcome::Planned(plan),
            (Plan::Set(target), false) => client.set_callback(app, product, target).await,
            (Plan::Update { target, .. }, false) => {
                client.update_callback(app, product, target).await
            }
        };
        return match written {
            Ok(_) => Outcome::Planned(plan),
            Err(TencentError::Api { code, .. })
                if attempts < 2
                    && (code == CALLBACK_CONFIG_EXISTS || code == NO_CALLBACK_CONFIG) =>
            {
                continue;
            }
            // A refusal of what was sent (100002, …), not a failure to reach Tencent.
            Err(error @ TencentError::Api { .. })
                if !error.is_auth_error() && !error.is_retryable() =>
            {
                Outcome::Refused(plan, error)
            }
            Err(error) => Outcome::NotAsked(error),
        };
    }
}
