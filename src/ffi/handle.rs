//! How C owns each handle: every handle is a `Box` that C holds and frees exactly once.
//! Shared objects (an instance, a sync engine) are shared *inside* the box by `Arc`.

use crate::error::{Error, Result};

/// An opaque handle type given to C as a `Box` pointer.
pub(crate) trait Handle: Sized {
    /// The name C sees in messages, e.g. "mnemo_instance".
    const NAME: &'static str;

    /// Gives ownership to C.
    fn into_raw(self) -> *mut Self {
        Box::into_raw(Box::new(self))
    }

    /// Borrows a handle C passed in; NULL gives [`Error::InvalidArgument`].
    ///
    /// # Safety
    /// `ptr` is NULL or a live handle of this type.
    unsafe fn borrow<'a>(ptr: *const Self) -> Result<&'a Self> {
        ptr.as_ref().ok_or_else(|| null(Self::NAME))
    }

    /// Borrows a handle mutably, for handle types documented as single-threaded.
    ///
    /// # Safety
    /// `ptr` is NULL or a live handle of this type that no other thread uses meanwhile.
    unsafe fn borrow_mut<'a>(ptr: *mut Self) -> Result<&'a mut Self> {
        ptr.as_mut().ok_or_else(|| null(Self::NAME))
    }

    /// Takes ownership back from C (the handle is gone afterwards).
    ///
    /// # Safety
    /// `ptr` is NULL or a live handle of this type that C will not use again.
    unsafe fn take(ptr: *mut Self) -> Result<Self> {
        if ptr.is_null() {
            return Err(null(Self::NAME));
        }
        Ok(*Box::from_raw(ptr))
    }

    /// Frees a handle; NULL is a no-op.
    ///
    /// # Safety
    /// `ptr` is NULL or a live handle of this type that C will not use again.
    unsafe fn free(ptr: *mut Self) {
        if !ptr.is_null() {
            drop(Box::from_raw(ptr));
        }
    }
}

fn null(name: &str) -> Error {
    Error::invalid(format!("the {name} handle is NULL"))
}

/// Clears an out-parameter and returns it for writing on success; NULL is an error.
///
/// `out` is NULL or valid for writes.
pub(crate) unsafe fn out_param<'a, T>(out: *mut *mut T, name: &str) -> Result<&'a mut *mut T> {
    let slot = out
        .as_mut()
        .ok_or_else(|| Error::invalid(format!("out-parameter '{name}' is NULL")))?;
    *slot = std::ptr::null_mut();
    Ok(slot)
}

/// Sets an out-parameter to NULL if it is not NULL itself.
///
/// # Safety
/// `out` is NULL or valid for writes.
pub(crate) unsafe fn clear<T>(out: *mut *mut T) {
    if let Some(slot) = out.as_mut() {
        *slot = std::ptr::null_mut();
    }
}
