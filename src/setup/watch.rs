//! The console's setup check (docs/console.md): `roomsync tencent check`, made in the
//! background at start-up and every [`EVERY`] after, so that opening the page never waits for
//! Tencent and many viewers make no more REST calls than one.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use reqwest::Url;
use tokio::{sync::watch, task::JoinHandle};

use super::{EXIT_FINDINGS, Selection, check};
use crate::tencent::TencentClient;

/// How often the configuration is read again: two calls per app each time, far below
/// Tencent's 200 a second, and soon enough after someone fixes a switch.
pub const EVERY: Duration = Duration::from_secs(300);

/// The newest check: when, its verdict, and the lines `roomsync tencent check` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub at: DateTime<Utc>,
    /// `all right`, `findings`, or `not asked` (Tencent could not be read).
    pub status: &'static str,
    pub lines: Vec<String>,
}

/// Shares the newest check; cheap to clone.
#[derive(Clone, Default)]
pub struct Watch {
    latest: Arc<RwLock<Option<Arc<Checked>>>>,
}

impl Watch {
    /// Checks every app with a key, both products, now and every [`EVERY`] until `stop`.
    pub fn spawn(
        client: TencentClient,
        ours: Option<Url>,
        signed: bool,
        mut stop: watch::Receiver<bool>,
    ) -> (Self, JoinHandle<()>) {
        let watch = Self::default();
        let latest = watch.latest.clone();
        let task = tokio::spawn(async move {
            let apps: Vec<_> = client.apps().collect();
            while !*stop.borrow() {
                let report = check(&client, &apps, Selection::Both, ours.as_ref(), signed).await;
                let status = match report.exit_code() {
                    0 => "all right",
                    EXIT_FINDINGS => "findings",
                    _ => "not asked",
                };
                let checked = Checked {
                    at: Utc::now(),
                    status,
                    lines: report.to_string().lines().map(str::to_owned).collect(),
                };
                *latest.write().expect("setup check") = Some(Arc::new(checked));
                tokio::select! {
                    _ = tokio::time::sleep(EVERY) => {}
                    _ = stop.changed() => {}
                }
            }
        });
        (watch, task)
    }

    /// The newest check; `None` until the first has ended.
    pub fn latest(&self) -> Option<Arc<Checked>> {
        self.latest.read().expect("setup check").clone()
    }
}
