//! `roomsync journal`: the local journal's records for an operator (list, export, retry,
//! remove), through `journal::operator`.

use clap::Subcommand;

use super::failure::chain;
use crate::{
    config::Config,
    journal::{JournalError, operator},
    telemetry,
};

#[derive(Subcommand)]
pub(super) enum JournalAction {
    /// Print every parked record (key, attempts, next attempt, error) and the pending count.
    List,
    /// Print one record (pending or parked) as JSON: the request as received.
    Export { key: u64 },
    /// Make parked records due now (all, or the keys given); the service must be stopped.
    Retry { keys: Vec<u64> },
    /// Remove one record this version cannot decode (export it first); the service must be
    /// stopped. A record that decodes is never removed: the service applies it.
    Remove { key: u64 },
}

pub(super) fn journal(
    config: &Config,
    action: JournalAction,
) -> Result<(), Box<dyn std::error::Error>> {
    let path = &config.journal_path;
    if !path.exists() {
        return Err(format!("no journal at {}", path.display()).into());
    }
    match action {
        JournalAction::List => {
            let listing = operator::list(path).map_err(chain)?;
            for entry in &listing.parked {
                let state = entry.parked.as_ref().expect("parked entries have a state");
                println!(
                    "{}\tapp {}\treceived {}\tattempts {}\tnext {}\t{}",
                    entry.key,
                    entry.record.sdk_app_id,
                    entry.record.received_at.to_rfc3339(),
                    state.attempts,
                    state.next_attempt_at.to_rfc3339(),
                    state.error
                );
            }
            for (key, size, version) in &listing.unreadable {
                let version = version.map_or_else(|| "none".to_owned(), |v| v.to_string());
                println!(
                    "{key}\tunreadable: {size} bytes, layout version {version} (a newer roomsync reads it; export or remove it)"
                );
            }
            println!(
                "{} parked, {} pending, {} unreadable",
                listing.parked.len(),
                listing.pending,
                listing.unreadable.len()
            );
        }
        JournalAction::Export { key } => {
            let entry = match operator::get(path, key) {
                Ok(entry) => entry.ok_or_else(|| format!("no record {key} in the journal"))?,
                // One this version cannot decode: its bytes, for a newer version or a person.
                Err(JournalError::Damaged) => {
                    use base64::Engine as _;
                    let bytes = operator::raw(path, key)
                        .map_err(chain)?
                        .ok_or_else(|| format!("no record {key} in the journal"))?;
                    let record = serde_json::json!({
                        "key": key,
                        "unreadable": true,
                        "bytes_base64": base64::engine::general_purpose::STANDARD.encode(&bytes),
                    });
                    println!("{record}");
                    return Ok(());
                }
                Err(error) => return Err(chain(error)),
            };
            let parked = entry.parked.map(|p| {
                serde_json::json!({
                    "attempts": p.attempts,
                    "first_failed_at": p.first_failed_at.to_rfc3339(),
                    "next_attempt_at": p.next_attempt_at.to_rfc3339(),
                    "error": p.error,
                })
            });
            let record = serde_json::json!({
                "key": entry.key,
                "sdk_app_id": entry.record.sdk_app_id,
                "received_at": entry.record.received_at.to_rfc3339(),
                "query": entry.record.query,
                "body": entry.record.body,
                "parked": parked,
            });
            println!("{record}");
        }
        JournalAction::Retry { keys } => {
            let keys = (!keys.is_empty()).then_some(keys.as_slice());
            let changed = operator::retry_now(path, keys).map_err(|e| {
                format!(
                    "{} (is the service running? It retries parked records by itself, at least once a minute)",
                    telemetry::error_chain(&e)
                )
            })?;
            println!("{changed} parked records due now; the service tries them at its next start");
        }
        JournalAction::Remove { key } => {
            operator::remove_unreadable(path, key).map_err(|e| match e {
                operator::RemoveError::Journal(e) => format!(
                    "{} (is the service running? Stop it first)",
                    telemetry::error_chain(&e)
                ),
                other => other.to_string(),
            })?;
            println!("record {key} removed");
        }
    }
    Ok(())
}
