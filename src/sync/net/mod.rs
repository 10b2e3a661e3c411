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
/// blocking pool).
const WORKER_THREADS: usize = 2;
/// Most threads an engine runs request handlers on at once, over all its listeners. Each
/// listener runs at most its `max_requests_in_flight` handlers at once (the slots taken
/// before a handler is started); threads are made as handlers need them and end after
/// [`HANDLER_THREAD_KEEP_ALIVE`] idle.
const MAX_HANDLER_THREADS: usize = 512;
/// How long a handler thread stays without work before it ends.
const HANDLER_THREAD_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The runtime that runs an engine's listeners and client requests. Its threads: two
/// workers, and up to [`MAX_HANDLER_THREADS`] for request handlers, made when needed.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(MAX_HANDLER_THREADS)
        .thread_keep_alive(HANDLER_THREAD_KEEP_ALIVE)
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
