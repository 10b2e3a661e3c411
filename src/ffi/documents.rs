//! Nested documents and a key's history, through a `mnemo_database` handle.

use std::ffi::c_char;

use super::database::mnemo_database;
use super::guard::guard;
use super::handle::{out_param, Handle};
use super::status::mnemo_status;
use super::strings;
use crate::database::{ChangeKind, KeyChange};

/// Sets the part of `key`'s JSON value at `pointer` to `json`, as one signed commit.
/// Concurrent writes of different paths of one value (on other devices) both survive the
/// merge; writes of the same path: the last writer wins, by (height, entry id). A whole-value
/// `mnemo_db_set` replaces every path write older than it and none newer. Arrays merge
/// whole: a path into an array (an index, or "-") is written as that whole array as it is
/// here, so of two concurrent appends to one array, one wins. The key's merged value is
/// read and stored whole by each write, so a write costs time in proportion to the value's
/// size: keep a large collection (thousands of fields) in separate keys, not in one value.
///
/// - `pointer`: a JSON Pointer (RFC 6901), e.g. "/address/city" ("~1" is '/', "~0" is '~');
///   at most 32 tokens and 4096 bytes. "" is the whole value (like `mnemo_db_set`).
/// - `json`: the JSON value to put there. Missing objects on the way are created; a value on
///   the way that is neither an object nor an array is replaced by an object. Array
///   elements are addressed by index; the array's length or "-" appends; any other token
///   into an array (a name, an index past the length) is refused, as it would replace the
///   array.
///   The pointer's tokens plus the value's nesting are at most 100 levels. The key
///   reserved in `mnemo_db_set`'s values may not be a token of `pointer` either.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad
/// store name or key, malformed pointer or JSON, a token into an array that neither indexes
/// nor appends to it, nested too deep, the reserved key), MNEMO_STATUS_LOGGED_OUT,
/// MNEMO_STATUS_PERMISSION_DENIED, MNEMO_STATUS_STORAGE. Nothing is stored on failure.
/// Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_set_path(
    db: *mut mnemo_database,
    store: *const c_char,
    key: *const c_char,
    pointer: *const c_char,
    json: *const c_char,
) -> mnemo_status {
    guard(|| {
        let db = mnemo_database::borrow(db)?;
        let store = strings::arg(store, "store")?;
        let key = strings::arg(key, "key")?;
        let pointer = strings::arg(pointer, "pointer")?;
        let json = strings::arg(json, "json")?;
        db.database().set_path(store, key, pointer, json).map(drop)
    })
}

/// Reads the part of `key`'s JSON value at `pointer` (RFC 6901; "" is the whole value).
///
/// - `out_json`: receives that part in canonical JSON text, owned; free it with
///   `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad
/// store name, key or pointer), MNEMO_STATUS_NOT_FOUND (the key has no value, or nothing is
/// at `pointer`), MNEMO_STATUS_PERMISSION_DENIED (read was revoked), MNEMO_STATUS_CORRUPT,
/// MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_get_path(
    db: *const mnemo_database,
    store: *const c_char,
    key: *const c_char,
    pointer: *const c_char,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let db = mnemo_database::borrow(db)?;
        let store = strings::arg(store, "store")?;
        let key = strings::arg(key, "key")?;
        let pointer = strings::arg(pointer, "pointer")?;
        *out = strings::to_c(db.database().get_path(store, key, pointer)?)?;
        Ok(())
    })
}

/// Every change of `key` in `store`, newest first (by height, then entry id), as a JSON
/// array of objects: {"entry": id, "key": signing public key, "height": n} with
/// "value": the whole value set, or "deleted": true, or "patch": {pointer: value, ...} for
/// path writes. Changes that lost a merge are listed too; entries discarded by a
/// revocation made no change and are not. A key never written gives [].
///
/// - `limit`: at most this many changes, the newest; 0 for all.
/// - `out_json`: receives an owned string; free it with `mnemo_string_free`.
///
/// Costs one read per change of the key. Returns MNEMO_STATUS_OK,
/// MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad store name or key),
/// MNEMO_STATUS_PERMISSION_DENIED (read was revoked), MNEMO_STATUS_CORRUPT,
/// MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_history(
    db: *const mnemo_database,
    store: *const c_char,
    key: *const c_char,
    limit: usize,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let db = mnemo_database::borrow(db)?;
        let store = strings::arg(store, "store")?;
        let key = strings::arg(key, "key")?;
        let changes = db.database().history(store, key, limit)?;
        *out = strings::to_c(strings::json_list(changes.iter().map(change_json)))?;
        Ok(())
    })
}

/// One change as a JSON object, stored values embedded as they are (canonical JSON text).
fn change_json(change: &KeyChange) -> String {
    let entry = strings::json_string(&change.entry.to_text());
    let author = strings::json_string(&change.author.to_text());
    let height = change.height.to_string();
    let (name, what) = match &change.kind {
        ChangeKind::Set(value) => ("value", value.clone()),
        ChangeKind::Delete => ("deleted", "true".to_string()),
        ChangeKind::Patch(paths) => (
            "patch",
            strings::json_object(paths.iter().map(|(p, v)| (p.as_str(), v.as_str()))),
        ),
    };
    strings::json_object([
        ("entry", entry.as_str()),
        ("key", author.as_str()),
        ("height", height.as_str()),
        (name, what.as_str()),
    ])
}
