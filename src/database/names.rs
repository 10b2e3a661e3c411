//! Rules for store names and keys.

use crate::entry::{MAX_KEY, MAX_STORE_NAME};
use crate::error::{Error, Result};

/// A store name a caller may read: 1 to 255 bytes, no NUL.
pub fn check_store(store: &str) -> Result<()> {
    if store.is_empty() || store.len() > MAX_STORE_NAME || store.contains('\0') {
        return Err(Error::invalid("a store name is 1 to 255 bytes without NUL"));
    }
    Ok(())
}

/// A store name a caller may write: readable, and not reserved (names starting with `_`).
pub fn check_user_store(store: &str) -> Result<()> {
    check_store(store)?;
    if store.starts_with('_') {
        return Err(Error::invalid(format!(
            "store names starting with '_' are reserved ('{store}')"
        )));
    }
    Ok(())
}

/// A key: 1 to 4096 bytes, no NUL.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY || key.contains('\0') {
        return Err(Error::invalid(format!(
            "a key is 1 to {MAX_KEY} bytes without NUL"
        )));
    }
    Ok(())
}

/// A key prefix for a scan: at most 4096 bytes (a key's maximum; a longer prefix could match
/// no key), no NUL; empty matches every key.
pub fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > MAX_KEY || prefix.contains('\0') {
        return Err(Error::invalid(format!(
            "a key prefix is 0 to {MAX_KEY} bytes without NUL"
        )));
    }
    Ok(())
}
