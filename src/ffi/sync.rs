//! `mnemo_sync`: a reference to an instance's sync engine.

use std::sync::Arc;

use super::guard::guard_void;
use super::handle::Handle;
use crate::Sync;

/// One reference to an instance's sync engine. Safe to use from several threads at once.
pub struct mnemo_sync {
    /// Held, not read: each handle is one reference that keeps the engine alive.
    _engine: Arc<Sync>,
}

impl mnemo_sync {
    pub(crate) fn new(inner: Arc<Sync>) -> Self {
        mnemo_sync { _engine: inner }
    }
}

impl Handle for mnemo_sync {
    const NAME: &'static str = "mnemo_sync";
}

/// Drops this reference to the sync engine. NULL is a no-op. Other references and the
/// instance keep the engine alive.
///
/// `sync` is NULL or a live sync handle that is not used again.
#[no_mangle]
pub unsafe extern "C" fn mnemo_sync_free(sync: *mut mnemo_sync) {
    guard_void(|| mnemo_sync::free(sync))
}
