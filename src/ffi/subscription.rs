//! `mnemo_subscription`: a change callback registered on a database.

use std::ffi::{c_char, c_void, CString};

use super::guard::guard_void;
use super::handle::Handle;
use crate::database::{Callback, Change, Subscription};
use crate::error::{Error, Result};

/// A change callback: `user_data` first, then the database id and the entry id (both
/// "sha256:…", valid only during the call), then whether the change came from sync.
/// It must return normally: ending the thread from inside it (`pthread_exit`, `longjmp` out
/// of it, a C++ exception) aborts the process, since the thread is mnemo's.
pub type mnemo_change_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        db_id: *const c_char,
        entry_id: *const c_char,
        remote: bool,
    ),
>;

/// Releases `user_data` when a subscription ends.
pub type mnemo_destroy_cb = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// A live subscription. Safe to free from any thread, including from its own callback.
pub struct mnemo_subscription {
    _inner: Subscription,
}

impl mnemo_subscription {
    pub(crate) fn new(inner: Subscription) -> Self {
        mnemo_subscription { _inner: inner }
    }
}

impl Handle for mnemo_subscription {
    const NAME: &'static str = "mnemo_subscription";
}

/// The C callback with its user data; dropping it calls `destroy`.
struct CCallback {
    cb: unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char, bool),
    user_data: *mut c_void,
    destroy: mnemo_destroy_cb,
}

// The caller hands `user_data` to a library thread by subscribing: the header says so.
unsafe impl Send for CCallback {}

impl CCallback {
    fn call(&self, change: &Change) {
        let db = CString::new(change.db.to_text()).expect("ids have no NUL");
        let entry = CString::new(change.entry.to_text()).expect("ids have no NUL");
        // SAFETY: the caller promised `cb` is callable with `user_data` until destroy.
        unsafe { (self.cb)(self.user_data, db.as_ptr(), entry.as_ptr(), change.remote) }
    }
}

impl Drop for CCallback {
    fn drop(&mut self) {
        if let Some(destroy) = self.destroy {
            // SAFETY: as above; called exactly once, after the last call of `cb`.
            unsafe { destroy(self.user_data) }
        }
    }
}

/// Wraps a C callback as a core [`Callback`].
pub(crate) fn callback_from_c(
    cb: mnemo_change_cb,
    user_data: *mut c_void,
    destroy: mnemo_destroy_cb,
) -> Result<Callback> {
    let cb = cb.ok_or_else(|| Error::invalid("argument 'cb' is NULL"))?;
    let c = CCallback {
        cb,
        user_data,
        destroy,
    };
    Ok(Box::new(move |change: &Change| c.call(change)))
}

/// Ends a subscription: after it returns, the callback is not running and will not be called
/// again, and `destroy(user_data)` has been called. From inside the subscription's own
/// callback, the end (and `destroy`) happen when the callback returns. NULL is a no-op.
/// Thread-safe: may be called from any thread, including the callback's own.
#[no_mangle]
pub unsafe extern "C" fn mnemo_subscription_free(subscription: *mut mnemo_subscription) {
    guard_void(|| mnemo_subscription::free(subscription))
}
