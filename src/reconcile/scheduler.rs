//! The background checks of `roomsync serve` (docs/drift-repair.md#which-rooms-and-when): claim
//! the next due room under a lease, check it, record the result, and back off a failing room.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{CheckError, Mode, Reconciler};
use crate::{
    callback::{Id, SdkAppId},
    store::{self, checks::RoomRef},
    tencent::TencentError,
};

/// How long an instance holds a room it checks; a check that takes longer is cut.
const LEASE: Duration = Duration::from_secs(120);
/// Rooms claimed at a time: one, so that a lease starts when its check does.
const CLAIM: i64 = 1;
/// Pause when no room is due (and after a failure to claim).
const IDLE: Duration = Duration::from_secs(5);
/// Backoff after a failed check: this, doubled per failure in a row, at most the interval.
const BACKOFF_BASE: Duration = Duration::from_secs(10);

impl Reconciler {
    /// The background task of `roomsync serve`; runs until `stop` turns true. A check under
    /// way then finishes and records its result, which releases its room's lease.
    pub fn spawn(self, stop: tokio::sync::watch::Receiver<bool>) -> JoinHandle<()> {
        let owner = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        tokio::spawn(async move {
            let mut last_pass = Instant::now();
            let waker = stop.clone();
            let pause = |wait| {
                let mut stop = waker.clone();
                async move {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => {}
                    }
                }
            };
            while !*stop.borrow() {
                self.metrics
                    .reconcile_since_last_pass
                    .set(last_pass.elapsed().as_secs_f64());
                let due = store::checks::claim_due(
                    &self.pool,
                    &self.apps(),
                    &owner,
                    self.config.interval,
                    LEASE,
                    CLAIM,
                )
                .await;
                let rooms = match due {
                    Ok(rooms) => rooms,
                    Err(error) => {
                        tracing::warn!(error = %error, "drift repair: cannot claim rooms; will retry");
                        pause(IDLE).await;
                        continue;
                    }
                };
                if rooms.is_empty() {
                    // Every due room has been checked: a complete pass, unless some live room
                    // is waiting out a failure (then the gauge keeps growing).
                    let failing = store::checks::failing(&self.pool, &self.apps()).await;
                    if failing.is_ok_and(|n| n == 0) {
                        last_pass = Instant::now();
                        self.metrics.reconcile_since_last_pass.set(0.0);
                    }
                    pause(IDLE.min(self.config.interval)).await;
                    continue;
                }
                for room in rooms {
                    // Claimed rooms are checked; unclaimed ones wait for the next instance.
                    self.check_claimed(&room, &owner).await;
                }
            }
        })
    }

    async fn check_claimed(&self, room: &RoomRef, owner: &str) {
        let (Some(app), Ok(id)) = (
            SdkAppId::from_i64(room.sdk_app_id),
            Id::parse(&room.room_id),
        ) else {
            // Not a room a callback could have made; let it rest for an interval.
            let failure = Some(("not a valid app or room id", self.config.interval));
            let _ = store::checks::finish_check(&self.pool, room, owner, failure).await;
            return;
        };
        let checked = tokio::time::timeout(LEASE - IDLE, self.check_room(app, &id, Mode::Apply))
            .await
            .unwrap_or(Err(CheckError::Tencent(TencentError::Timeout)));
        let failure = match &checked {
            Ok(report) => {
                if report.differs() {
                    tracing::info!(sdk_app_id = app.get(), room = %id.as_str(), corrections = %report, "drift repaired");
                }
                None
            }
            Err(error) => {
                self.report_failure(app, &id, error);
                let failures = store::checks::failures(&self.pool, room).await.unwrap_or(0);
                let backoff = backoff(failures, self.config.interval);
                Some((crate::telemetry::error_chain(error), backoff))
            }
        };
        let failure = failure
            .as_ref()
            .map(|(text, backoff)| (text.as_str(), *backoff));
        if let Err(error) = store::checks::finish_check(&self.pool, room, owner, failure).await {
            tracing::warn!(error = %error, "drift repair: cannot record a check; the lease expires instead");
        }
    }

    fn report_failure(&self, app: SdkAppId, room: &Id, error: &CheckError) {
        self.metrics
            .reconcile_rest_errors
            .with_label_values(&[error.label()])
            .inc();
        if let CheckError::Tencent(e) = error
            && e.is_auth_error()
        {
            // Every room fails the same way until the key is fixed: say it once per interval.
            let mut logged = self.auth_logged.lock().expect("auth log");
            let due = logged
                .get(&app)
                .is_none_or(|at| at.elapsed() >= self.config.interval.max(IDLE));
            if due {
                logged.insert(app, Instant::now());
                tracing::error!(sdk_app_id = app.get(), error = %e, "drift repair: Tencent refuses our credentials; check TENCENT_SECRET_KEY and TENCENT_ADMIN_ACCOUNT");
            }
            return;
        }
        tracing::warn!(sdk_app_id = app.get(), room = %room.as_str(), error = %crate::telemetry::error_chain(error), "drift repair: room skipped until its next turn");
    }
}

/// The wait before a room that failed `failures` times in a row (this one not counted) is tried
/// again: doubling from [`BACKOFF_BASE`], but never longer than the interval.
fn backoff(failures: i32, interval: Duration) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << failures.clamp(0, 16))
        .min(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_interval() {
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff(0, hour), Duration::from_secs(10));
        assert_eq!(backoff(1, hour), Duration::from_secs(20));
        assert_eq!(backoff(3, hour), Duration::from_secs(80));
        assert_eq!(backoff(9, hour), hour);
        assert_eq!(backoff(i32::MAX, hour), hour);
        assert_eq!(backoff(-1, hour), Duration::from_secs(10));
        assert_eq!(backoff(2, Duration::from_secs(15)), Duration::from_secs(15));
    }
}
