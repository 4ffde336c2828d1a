//! What the operator sees when a command fails: one message with every cause, on standard
//! error and in the log, and exit status 1.

use std::process::ExitCode;

use crate::telemetry;

/// A command's result as the process's exit status.
pub(super) fn exit_code(result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(target: "roomsync", error = %e, "roomsync failed");
            eprintln!("roomsync: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Flattens an error and its sources into one message for the operator.
pub(super) fn chain(error: impl std::error::Error) -> Box<dyn std::error::Error> {
    telemetry::error_chain(&error).into()
}
