//! `roomsync rejected reapply`: refused callbacks parsed again with this version's parser
//! (`reapply`), and the time filter of its options.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use clap::Subcommand;

use super::failure::chain;
use crate::{config::Config, reapply::Filter, startup};

#[derive(Subcommand)]
pub(super) enum RejectedAction {
    /// Parse refused callbacks again with this version's parser and bounds: store those that
    /// parse now (exactly once, in EventTime order with the rest of the history) and record
    /// today's code and reason for the others. Prints the counts.
    Reapply {
        /// Only this app.
        #[arg(long)]
        app: Option<i64>,
        /// Only rows received at or after this time (RFC 3339, or a date: 2026-12-01).
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Only rows received before this time (RFC 3339, or a date).
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Only rows refused with this ErrorCode.
        #[arg(long)]
        code: Option<i32>,
        /// Say what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// A time as RFC 3339, or a date (midnight UTC).
fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.to_utc());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.and_time(NaiveTime::MIN).and_utc())
        .map_err(|_| {
            format!("{text:?}: an RFC 3339 time (2026-12-01T08:00:00Z) or a date (2026-12-01)")
        })
}

pub(super) async fn reapply(
    config: &Config,
    filter: &Filter,
    dry_run: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let pool = startup::database_pool(config).map_err(chain)?;
    let report = crate::reapply::reapply(
        &pool,
        &config.sdk_app_ids,
        config.rules(),
        config.event_time_max_future,
        filter,
        dry_run,
    )
    .await?;
    tracing::info!(target: "roomsync", %report, dry_run, "refused callbacks parsed again");
    println!("{}{report}", if dry_run { "dry run: " } else { "" });
    Ok(())
}
