//! Strings across the boundary: borrowed UTF-8 in, owned `char *` out.

use std::ffi::{c_char, CStr, CString};

use crate::error::{quoted, Error, Result};

/// Borrows a required NUL-terminated UTF-8 argument.
///
/// `ptr` is NULL or points to a NUL-terminated string that outlives the call.
pub(crate) unsafe fn arg<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("argument '{name}' is NULL")));
    }
    CStr::from_ptr(ptr)
        .to_str()
        .map_err(|_| Error::invalid(format!("argument '{name}' is not valid UTF-8")))
}

/// Borrows an optional argument: NULL is `None`.
///
/// As for [`arg`].
pub(crate) unsafe fn optional_arg<'a>(ptr: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    arg(ptr, name).map(Some)
}

/// Hands an owned string to C, to be freed with `mnemo_string_free`.
pub(crate) fn to_c(s: String) -> Result<*mut c_char> {
    CString::new(s)
        .map(CString::into_raw)
        .map_err(|_| Error::Internal("result string contains NUL".into()))
}

/// `text` as a JSON string literal (quoted and escaped).
pub(crate) fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// A JSON array of items that are JSON text already (stored values are canonical JSON,
/// embedded as they are rather than parsed and printed again).
pub(crate) fn json_list(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().collect();
    format!("[{}]", items.join(","))
}

/// A JSON object of `(name, value)` members whose values are JSON text already.
pub(crate) fn json_object<'a>(members: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let members: Vec<String> = members
        .into_iter()
        .map(|(name, value)| format!("{}:{value}", json_string(name)))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// Named numbers (limits, counts) as a JSON object, in the order given.
pub(crate) fn named_numbers_json(limits: &[(&str, u64)]) -> String {
    let values: Vec<(&str, String)> = limits
        .iter()
        .map(|(name, value)| (*name, value.to_string()))
        .collect();
    json_object(values.iter().map(|(name, value)| (*name, value.as_str())))
}

/// The `(name, value)` pairs of argument `name`, a JSON object of whole numbers:
/// [`Error::InvalidArgument`] for anything else (NULL, bad UTF-8 included).
///
/// # Safety
/// `text` is NULL or a NUL-terminated string valid for the call.
pub(crate) unsafe fn limits_arg(text: *const c_char, name: &str) -> Result<Vec<(String, u64)>> {
    // Parsed as values are: a limit named twice is refused, not one of its values dropped.
    let serde_json::Value::Object(object) = crate::json::parse(arg(text, name)?)? else {
        return Err(Error::invalid(format!("{name} is not a JSON object")));
    };
    object
        .into_iter()
        .map(|(name, value)| match value.as_u64() {
            Some(number) => Ok((name, number)),
            None => Err(Error::invalid(format!(
                "limit {}: {} is not a whole number from 0 to {}",
                quoted(&name),
                quoted(&value.to_string()),
                u64::MAX
            ))),
        })
        .collect()
}

/// Serialises `value` as JSON text for C.
pub(crate) fn json_to_c(value: &serde_json::Value) -> Result<*mut c_char> {
    to_c(value.to_string())
}

/// Writes `value` to an optional out-parameter (NULL: the caller does not want it).
///
/// # Safety
/// `out` is NULL or valid for writes.
pub(crate) unsafe fn to_optional_out(out: *mut *mut c_char, value: String) -> Result<()> {
    if let Some(slot) = out.as_mut() {
        *slot = to_c(value)?;
    }
    Ok(())
}

/// A caller-provided output buffer: `cap` bytes at `ptr`, written as C strings are (text,
/// then a NUL), never past `cap`.
pub(crate) struct OutBuffer {
    ptr: *mut u8,
    cap: usize,
}

impl OutBuffer {
    /// Takes the buffer `buf` of `cap` bytes and clears it (its first byte becomes NUL) when
    /// it has a byte. NULL is allowed only with `cap` 0 (the caller asks for a length).
    ///
    /// # Safety
    /// `buf` is NULL or valid for writes of `cap` bytes until the buffer is dropped.
    pub(crate) unsafe fn new(buf: *mut c_char, cap: usize, name: &str) -> Result<OutBuffer> {
        if buf.is_null() && cap != 0 {
            return Err(Error::invalid(format!(
                "argument '{name}' is NULL but its capacity is {cap} bytes (NULL goes with 0)"
            )));
        }
        let ptr = buf.cast::<u8>();
        if cap != 0 {
            *ptr = 0;
        }
        Ok(OutBuffer { ptr, cap })
    }

    /// Copies `text` and a terminating NUL into the buffer if both fit (`text.len() < cap`);
    /// otherwise writes nothing more and returns [`Error::BufferTooSmall`].
    pub(crate) fn write(&mut self, text: &str) -> Result<()> {
        let len = text.len();
        if len >= self.cap {
            return Err(Error::BufferTooSmall(format!(
                "the result is {len} bytes and needs a buffer of {} bytes with its NUL; \
                 this one has {}",
                len + 1,
                self.cap
            )));
        }
        // SAFETY: `new`'s caller made `ptr` valid for `cap` bytes, and len + 1 <= cap.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), self.ptr, len);
            *self.ptr.add(len) = 0;
        }
        Ok(())
    }
}

/// Frees a string made by [`to_c`].
///
/// `ptr` is NULL or came from [`to_c`] and is not used again.
pub(crate) unsafe fn free(ptr: *mut c_char) {
    if !ptr.is_null() {
        drop(CString::from_raw(ptr));
    }
}
