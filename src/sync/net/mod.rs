//! The network under sync: one small tokio runtime per engine, an HTTP/1.1 listener built
//! to bound everything a stranger can make it hold, and an HTTP client that no peer can
//! hang. Handlers and rounds above it are synchronous and see bytes in, bytes out.

mod addresses;
mod certificate;
pub(super) mod client;
pub(super) mod listener;
pub mod tls;

use std::time::Duration;

use crate::error::{Error, Result};

/// Worker threads of the engine's runtime (they only move bytes; handlers run on the
/// bounded blocking pool).
const WORKER_THREADS: usize = 2;
/// Threads kept for handlers beyond the in-flight limit (which bounds them in use).
const SPARE_BLOCKING_THREADS: usize = 2;

/// The runtime that runs an engine's listeners and client requests. Its threads: two
/// workers, and at most `in_flight` + 2 blocking threads for request handlers.
pub(super) fn runtime(in_flight: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(in_flight + SPARE_BLOCKING_THREADS)
        .thread_keep_alive(Duration::from_secs(10))
        .thread_name("mnemo-sync")
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the sync runtime: {e}")))
}

/// The HTTP path of a sync endpoint.
pub(super) fn path(endpoint: &str) -> String {
    format!("/mnemo/sync/v1/{endpoint}")
}
