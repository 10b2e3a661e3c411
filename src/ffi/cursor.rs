//! `mnemo_cursor`: the keys of a store in order, one at a time, read a page at a time.

use std::ffi::c_char;

use super::guard::{guard, guard_void};
use super::handle::{clear, out_param, Handle};
use super::status::mnemo_status;
use super::strings;
use crate::database::Cursor;

/// A cursor over the live keys of one store, made by `mnemo_db_cursor`. It holds its own
/// reference to the database (it stays usable after `mnemo_db_free` of the handle it came
/// from) and at most one page of cells. NOT safe to use from several threads at once.
pub struct mnemo_cursor {
    inner: Cursor,
}

impl mnemo_cursor {
    pub(crate) fn new(inner: Cursor) -> Self {
        mnemo_cursor { inner }
    }
}

impl Handle for mnemo_cursor {
    const NAME: &'static str = "mnemo_cursor";
}

/// The next key of the scan and its value, in bytewise key order. After the last key it
/// returns MNEMO_STATUS_OK with both out-parameters NULL (and keeps doing so).
///
/// - `out_key`: receives the key, an owned string without JSON quoting; free it with
///   `mnemo_string_free`. NULL after the last key.
/// - `out_value`: receives the value as canonical JSON text, owned; free it with
///   `mnemo_string_free`. NULL after the last key.
///
/// Every 256 keys (sooner when they average over 16 KiB: a page stops once it holds 4 MiB)
/// the cursor reads the next page from storage (after the last key it returned, so keys
/// committed meanwhile further on are seen); a read that fails leaves the cursor where it
/// was, and the call may be repeated.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
/// MNEMO_STATUS_PERMISSION_DENIED (read was revoked since the cursor was made),
/// MNEMO_STATUS_CORRUPT (a stored row is damaged), MNEMO_STATUS_STORAGE. Not thread-safe:
/// use a cursor from one thread at a time.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_cursor_next(
    cursor: *mut mnemo_cursor,
    out_key: *mut *mut c_char,
    out_value: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        // Both out-parameters are cleared first, whichever of them is NULL.
        clear(out_value);
        let key_slot = out_param(out_key, "out_key")?;
        let value_slot = out_param(out_value, "out_value")?;
        let cursor = mnemo_cursor::borrow_mut(cursor)?;
        if let Some((key, value)) = cursor.inner.next_cell()? {
            let key = strings::to_c(key)?;
            match strings::to_c(value) {
                Ok(value) => {
                    *key_slot = key;
                    *value_slot = value;
                }
                Err(e) => {
                    strings::free(key);
                    return Err(e);
                }
            }
        }
        Ok(())
    })
}

/// Frees a cursor. NULL is a no-op. The database stays open through its other handles.
/// Freed after `mnemo_instance_free` as the instance's last handle, it waits for queued
/// change callbacks as `mnemo_instance_free` says.
///
/// `cursor` is NULL or a live cursor that is not used again. Thread-safe, as long as no
/// other thread is using `cursor`.
#[no_mangle]
pub unsafe extern "C" fn mnemo_cursor_free(cursor: *mut mnemo_cursor) {
    guard_void(|| mnemo_cursor::free(cursor))
}
