//! The runtime that owns the pool's connections.
//!
//! actix serves each HTTP worker on a runtime of its own (one thread). A connection is driven
//! by the runtime it was opened on: opened by a query in a request handler, it would stay bound
//! to that worker's thread, and a writer that later takes it from the pool would wait for that
//! thread to turn its I/O driver (for a reader's thread at nice 10, when the CPU is short; and
//! the connection fails once that worker stops). Handlers therefore run their queries here, on
//! the service's main runtime, where the writers, the drain and the feed reader run theirs.

use std::future::Future;

use tokio::runtime::Handle;

#[derive(Clone, Debug)]
pub struct DbRuntime(Handle);

impl DbRuntime {
    /// The runtime this is called on: the service's main one, at start-up.
    pub fn current() -> Self {
        Self(Handle::current())
    }

    /// Runs `work` on this runtime and waits for it. `work` runs to its end even if the caller
    /// goes away (a reader that hangs up): a query is never cut half-way.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> T {
        match self.0.spawn(work).await {
            Ok(value) => value,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Only when the main runtime shuts down, which ends the process.
            Err(error) => panic!("the service's runtime stopped under a query: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DbRuntime;

    /// A worker's own single-thread runtime, as actix makes them: the work runs on the runtime
    /// given, not on the caller's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn work_runs_on_the_given_runtime_not_the_callers() {
        let main = DbRuntime::current();
        let main_id = tokio::runtime::Handle::current().id();
        let on_worker = std::thread::spawn(move || {
            let worker = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let worker_id = worker.handle().id();
            let ran_on =
                worker.block_on(main.run(async { tokio::runtime::Handle::current().id() }));
            (worker_id, ran_on)
        })
        .join()
        .unwrap();
        assert_ne!(on_worker.0, main_id);
        assert_eq!(on_worker.1, main_id);
    }
}
