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

/// Records `message` as this thread's last error. Late in a thread's exit (a `pthread_key`
/// destructor calling mnemo after Rust's thread-locals are gone) there is no slot: the
/// message is dropped rather than panicking outside the guard.
fn set_last_error(message: Option<String>) {
    let message =
        message.map(|m| CString::new(m.replace('\0', "\\0")).expect("NULs were replaced"));
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = message);
}

/// The last error message on this thread, or NULL (also once the thread's slot is gone).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| {
            slot.borrow()
                .as_ref()
                .map_or(std::ptr::null(), |m| m.as_ptr())
        })
        .unwrap_or(std::ptr::null())
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;
    use crate::ffi::{mnemo_last_error_message, mnemo_status_str, MNEMO_STATUS_INVALID_ARGUMENT};

    fn last_message() -> Option<String> {
        let ptr = mnemo_last_error_message();
        (!ptr.is_null()).then(|| {
            unsafe { CStr::from_ptr(ptr) }
                .to_string_lossy()
                .into_owned()
        })
    }

    #[test]
    fn a_panic_becomes_internal_with_its_message_and_the_library_goes_on() {
        let status = guard(|| panic!("forced for the test"));
        assert_eq!(status, MNEMO_STATUS_INTERNAL);
        assert!(last_message().unwrap().contains("forced for the test"));
        let formatted = guard(|| panic!("formatted {}", 42));
        assert_eq!(formatted, MNEMO_STATUS_INTERNAL);
        assert!(last_message().unwrap().contains("formatted 42"));
        // The next call succeeds and clears the message.
        assert_eq!(guard(|| Ok(())), MNEMO_STATUS_OK);
        assert_eq!(last_message(), None);
        assert_eq!(
            guard(|| Err(Error::invalid("x"))),
            MNEMO_STATUS_INVALID_ARGUMENT
        );
        let name = unsafe { CStr::from_ptr(mnemo_status_str(MNEMO_STATUS_INTERNAL)) };
        assert_eq!(name.to_str().unwrap(), "MNEMO_STATUS_INTERNAL");
        guard_void(|| panic!("a void function's panic is swallowed"));
    }

    #[test]
    fn a_panic_inside_a_real_exported_function_is_contained() {
        use crate::ffi::{mnemo_backend_free, mnemo_backend_open, mnemo_instance_open};
        // Every export runs its body in `guard`; a panic after real library work inside that
        // guard comes back as a status, and the library stays usable.
        let status = guard(|| {
            let mut backend = std::ptr::null_mut();
            let opened = unsafe { mnemo_backend_open(c"memory:".as_ptr(), &mut backend) };
            assert_eq!(opened, MNEMO_STATUS_OK);
            unsafe { mnemo_backend_free(backend) };
            panic!("after a real call");
        });
        assert_eq!(status, MNEMO_STATUS_INTERNAL);
        // The library keeps working on this thread.
        let mut backend = std::ptr::null_mut();
        assert_eq!(
            unsafe { mnemo_backend_open(c"memory:".as_ptr(), &mut backend) },
            MNEMO_STATUS_OK
        );
        let mut instance = std::ptr::null_mut();
        assert_eq!(
            unsafe { mnemo_instance_open(backend, &mut instance) },
            MNEMO_STATUS_OK
        );
        unsafe { crate::ffi::mnemo_instance_free(instance) };
    }
}
