//! Library-wide functions: version, status names, last error, string ownership.

use std::ffi::c_char;

use super::guard::{guard_void, last_error_ptr};
use super::status::{mnemo_status, status_name};
use super::strings;

const fn parse_u32(s: &str) -> u32 {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut n = 0;
    while i < bytes.len() {
        n = n * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    n
}

const VERSION_NUMBER: u32 = parse_u32(env!("CARGO_PKG_VERSION_MAJOR")) * 1_000_000
    + parse_u32(env!("CARGO_PKG_VERSION_MINOR")) * 1_000
    + parse_u32(env!("CARGO_PKG_VERSION_PATCH"));

/// The library's version as a static string, e.g. "0.1.0". Never NULL; do not free.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn mnemo_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The library's version as MAJOR*1000000 + MINOR*1000 + PATCH, to compare with
/// MNEMO_VERSION_NUMBER from the header the program was compiled against. Thread-safe.
#[no_mangle]
pub extern "C" fn mnemo_version_number() -> u32 {
    VERSION_NUMBER
}

/// The message of the last failed mnemo call on this thread, or NULL if the last call
/// succeeded. Every function returning mnemo_status clears it when it starts and sets it
/// when it fails; no other function changes it (so strings may be freed first). Borrowed:
/// valid until this thread's next call of a function returning mnemo_status; do not free.
/// UTF-8. Never contains passwords or private keys. Thread-safe (the message is per thread:
/// read it on the thread that made the failing call).
#[no_mangle]
pub extern "C" fn mnemo_last_error_message() -> *const c_char {
    last_error_ptr()
}

/// The static name of a status code, e.g. "MNEMO_STATUS_NOT_FOUND"; unknown codes give
/// "MNEMO_STATUS_UNKNOWN". Never NULL, never fails; do not free. Thread-safe.
#[no_mangle]
pub extern "C" fn mnemo_status_str(status: mnemo_status) -> *const c_char {
    status_name(status).as_ptr().cast()
}

/// Frees a string that mnemo returned through a `char **` out-parameter.
/// `s` may be NULL (no-op). Passing any other pointer is undefined behaviour. Thread-safe.
///
/// `s` is NULL or a string returned by mnemo that is not used again.
#[no_mangle]
pub unsafe extern "C" fn mnemo_string_free(s: *mut c_char) {
    guard_void(|| strings::free(s))
}
