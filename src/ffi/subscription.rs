//! `mnemo_subscription`: a change callback registered on a database.

use std::ffi::{c_char, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::database::mnemo_database;
use super::guard::{guard, guard_void};
use super::handle::Handle;
use super::status::mnemo_status;
use crate::database::{Callback, Change, Subscription};
use crate::error::{Error, Result};

/// A change callback: `user_data` first, then the database id and the entry id (both
/// "sha256:…", valid only during the call), then `remote`: 1 when the change came from
/// sync, 0 for a local commit (an `int32_t`, not a C `bool`, so that every FFI maps it the
/// same way).
/// It must return normally: ending the thread from inside it (`pthread_exit`, `longjmp` out
/// of it, a C++ exception) aborts the process, since the thread is mnemo's.
pub type mnemo_change_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        db_id: *const c_char,
        entry_id: *const c_char,
        remote: i32,
    ),
>;

/// Releases `user_data` when a subscription ends.
pub type mnemo_destroy_cb = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// A live subscription. Safe to free from any thread, including from its own callback;
/// freeing never waits for a callback.
pub struct mnemo_subscription {
    inner: Subscription,
}

impl mnemo_subscription {
    pub(crate) fn new(inner: Subscription) -> Self {
        mnemo_subscription { inner }
    }
}

impl Handle for mnemo_subscription {
    const NAME: &'static str = "mnemo_subscription";
}

/// The C callback with its user data; dropping it calls `destroy` once mnemo has kept
/// `user_data` (the subscription started), never before.
struct CCallback {
    cb: unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char, i32),
    user_data: *mut c_void,
    destroy: mnemo_destroy_cb,
    kept: Arc<AtomicBool>,
}

// The caller hands `user_data` to a library thread by subscribing: the header says so.
unsafe impl Send for CCallback {}

impl CCallback {
    fn call(&self, change: &Change) {
        let db = CString::new(change.db.to_text()).expect("ids have no NUL");
        let entry = CString::new(change.entry.to_text()).expect("ids have no NUL");
        let remote = i32::from(change.remote());
        // SAFETY: the caller promised `cb` is callable with `user_data` until destroy.
        unsafe { (self.cb)(self.user_data, db.as_ptr(), entry.as_ptr(), remote) }
    }
}

impl Drop for CCallback {
    fn drop(&mut self) {
        // A subscription that failed to start leaves `user_data` with the caller.
        if !self.kept.load(Ordering::Acquire) {
            return;
        }
        if let Some(destroy) = self.destroy {
            // SAFETY: as above; called exactly once, after the last call of `cb`.
            unsafe { destroy(self.user_data) }
        }
    }
}

/// Registers a C callback through `register`. On success the callback's `destroy` runs
/// when the core drops it; on any failure (including a panic in `register`) it never runs,
/// so `user_data` stays the caller's.
pub(crate) fn register_c_callback<T>(
    cb: mnemo_change_cb,
    user_data: *mut c_void,
    destroy: mnemo_destroy_cb,
    register: impl FnOnce(Callback) -> Result<T>,
) -> Result<T> {
    let cb = cb.ok_or_else(|| Error::invalid("argument 'cb' is NULL"))?;
    let kept = Arc::new(AtomicBool::new(false));
    let c = CCallback {
        cb,
        user_data,
        destroy,
        kept: kept.clone(),
    };
    let registered = register(Box::new(move |change: &Change| c.call(change)))?;
    // Nobody can drop the callback before this: the caller has not got the handle yet.
    kept.store(true, Ordering::Release);
    Ok(registered)
}

/// Ends a subscription, without waiting: it never blocks on a callback that is queued or
/// running on the library thread, so it may be called from any thread, including one that a
/// callback is waiting for, and from the subscription's own callback.
///
/// - Changes committed after this call are not delivered to the subscription.
/// - Notifications already queued when it is called (changes committed before it) are still
///   delivered, on the library thread, after it returns: none is silently dropped.
///   `mnemo_db_flush_notifications` waits for them.
/// - `destroy(user_data)` runs exactly once, after the last call of `cb`: before this
///   function returns, on the calling thread, when no notification for the subscription is
///   queued or running; otherwise on the library thread, right after the last one returns
///   (so when freed from inside its own callback: on the library thread, once that callback
///   and any still queued have returned).
///
/// NULL is a no-op. Thread-safe: may be called from any thread.
#[no_mangle]
pub unsafe extern "C" fn mnemo_subscription_free(subscription: *mut mnemo_subscription) {
    guard_void(|| mnemo_subscription::free(subscription))
}

/// Ends a subscription as `mnemo_subscription_free` does, except that the notifications
/// still queued for it are dropped: `cb` runs at most once more (a call the library thread
/// has already begun, which this does not wait for), never for a change not yet being
/// delivered. `destroy(user_data)` runs exactly once, after that call if there is one (on
/// the library thread, right after it returns), else before this function returns, on the
/// calling thread. For a program, or a language runtime, that is shutting down and must not
/// be called back. `mnemo_db_flush_notifications` counts the dropped notifications as
/// delivered once the library thread has passed them, without calling `cb`.
///
/// NULL is a no-op. Thread-safe: may be called from any thread, including from the
/// subscription's own callback.
#[no_mangle]
pub unsafe extern "C" fn mnemo_subscription_cancel(subscription: *mut mnemo_subscription) {
    guard_void(|| {
        if let Ok(subscription) = mnemo_subscription::take(subscription) {
            subscription.inner.end_dropping_queued();
        }
    })
}

/// Waits until every subscription callback for the changes committed before this call has
/// run: those of every database of `db`'s instance, including notifications still queued
/// for subscriptions freed meanwhile (and their `destroy`, when it runs on the library
/// thread). Events queues (`mnemo_db_watch`) are not callbacks and are not waited for.
///
/// - `timeout_ms`: the longest wait, in milliseconds; 0 only checks.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL db), MNEMO_STATUS_BUSY
/// (`timeout_ms` passed first, the message says how many notifications are left; or called
/// from inside a callback, on the library thread, where it would wait for itself).
/// Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_flush_notifications(
    db: *mut mnemo_database,
    timeout_ms: u32,
) -> mnemo_status {
    guard(|| {
        mnemo_database::borrow(db)?
            .database()
            .flush_notifications(Duration::from_millis(timeout_ms.into()))
    })
}
