//! The one boundary helper: panic guard, thread-local last error, status conversion.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::status::{mnemo_status, status_of, MNEMO_STATUS_INTERNAL, MNEMO_STATUS_OK};
use crate::error::{Error, Result};

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Runs an exported function's body: clears the last error, catches any panic, and turns
/// the result into a status, recording the error's message on failure.
pub(crate) fn guard(body: impl FnOnce() -> Result<()>) -> mnemo_status {
    set_last_error(None);
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => MNEMO_STATUS_OK,
        Ok(Err(error)) => {
            set_last_error(Some(error.to_string()));
            status_of(&error)
        }
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            set_last_error(Some(
                Error::Internal(format!("panic: {detail}")).to_string(),
            ));
            MNEMO_STATUS_INTERNAL
        }
    }
}

/// Runs the body of an exported function that returns nothing (the `_free` family):
/// a panic is swallowed, never unwound into C.
pub(crate) fn guard_void(body: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(body));
}

fn set_last_error(message: Option<String>) {
    let message =
        message.map(|m| CString::new(m.replace('\0', "\\0")).expect("NULs were replaced"));
    LAST_ERROR.with(|slot| *slot.borrow_mut() = message);
}

/// The last error message on this thread, or NULL.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|slot| {
        slot.borrow()
            .as_ref()
            .map_or(std::ptr::null(), |m| m.as_ptr())
    })
}
