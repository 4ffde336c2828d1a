//! The `roomsync` binary: the process's allocator, and the command line of the library
//! (`roomsync::cli`).

use std::process::ExitCode;

// jemalloc, with a background thread that returns pages unused for a second to the system
// (BENCHMARKS.md#hostile-bodies: glibc's malloc kept a wave's memory).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (the prefixed symbol of tikv-jemallocator's build).
#[cfg(not(target_env = "msvc"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8; 53] = b"background_thread:true,dirty_decay_ms:1000,narenas:4\0";

#[tokio::main]
async fn main() -> ExitCode {
    roomsync::cli::run().await
}
