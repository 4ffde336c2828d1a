//! The REST rate bound of drift repair (docs/drift-repair.md#several-instances-leases-and-one-rate-bound):
//! `RECONCILE_MAX_RPS` calls per second and app, for all instances together. The count lives in
//! the database ([`store::checks::take_budget`]); waiting for the next second is decided here.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures_util::future::BoxFuture;
use sqlx::PgPool;

use crate::{
    callback::SdkAppId,
    store,
    telemetry::Metrics,
    tencent::{BudgetError, RateGate},
};

/// How long one call may wait for the budget before the check gives up on it.
const BUDGET_WAIT: Duration = Duration::from_secs(30);

/// The shared budget, counting every call it admits.
pub(super) struct SharedBudget {
    pool: PgPool,
    max_rps: i32,
    metrics: Arc<Metrics>,
}

impl SharedBudget {
    pub(super) fn new(pool: PgPool, max_rps: u32, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            max_rps: i32::try_from(max_rps).unwrap_or(i32::MAX),
            metrics,
        }
    }
}

impl RateGate for SharedBudget {
    fn admit(&self, app: SdkAppId) -> BoxFuture<'_, Result<(), BudgetError>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + BUDGET_WAIT;
            loop {
                match store::checks::take_budget(&self.pool, app, self.max_rps).await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(error) => return Err(BudgetError::Unavailable(error.to_string())),
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(BudgetError::Exhausted(BUDGET_WAIT));
                }
                tokio::time::sleep(until_next_second(
                    Utc::now().timestamp_subsec_millis(),
                    rand::random::<u8>(),
                ))
                .await;
            }
            self.metrics.reconcile_rest_calls.inc();
            Ok(())
        })
    }
}

/// The wait for the next second of the clock, `subsec_millis` into this one: the budget
/// renews then. A little jitter (from `noise`) spreads the instances that wait for it.
fn until_next_second(subsec_millis: u32, noise: u8) -> Duration {
    let to_next = 1000 - u64::from(subsec_millis).min(999);
    let jitter = u64::from(noise % 20);
    Duration::from_millis(to_next + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_reach_just_past_the_next_second() {
        assert_eq!(until_next_second(0, 0), Duration::from_millis(1000));
        assert_eq!(until_next_second(999, 0), Duration::from_millis(1));
        // A leap second's millis (up to 1999) still wait a little.
        assert_eq!(until_next_second(1500, 0), Duration::from_millis(1));
        assert_eq!(until_next_second(400, 19), Duration::from_millis(619));
        assert_eq!(until_next_second(400, 20), Duration::from_millis(600));
    }
}
