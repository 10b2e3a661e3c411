//! `mnemo_txn`: operations that commit together as one entry.

use std::ffi::c_char;

use super::guard::{guard, guard_void};
use super::handle::{clear, Handle};
use super::status::mnemo_status;
use super::strings;
use crate::database::Transaction;

/// An open transaction. NOT safe to use from several threads at once.
pub struct mnemo_txn {
    inner: Transaction,
}

impl mnemo_txn {
    pub(crate) fn new(inner: Transaction) -> Self {
        mnemo_txn { inner }
    }
}

impl Handle for mnemo_txn {
    const NAME: &'static str = "mnemo_txn";
}

/// Adds "set `key` in `store` to `json`" to the transaction; nothing is visible before
/// `mnemo_txn_commit`. A later operation on the same key replaces this one.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad or
/// reserved store name, bad key, malformed JSON, or the transaction would take more than an
/// entry's 16 MiB with it; the transaction is unchanged and stays usable). Not thread-safe:
/// use a transaction from one thread at a time.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_txn_set(
    txn: *mut mnemo_txn,
    store: *const c_char,
    key: *const c_char,
    json: *const c_char,
) -> mnemo_status {
    guard(|| {
        let txn = mnemo_txn::borrow_mut(txn)?;
        let store = strings::arg(store, "store")?;
        let key = strings::arg(key, "key")?;
        let json = strings::arg(json, "json")?;
        txn.inner.set(store, key, json)
    })
}

/// Adds "set the part of `key`'s value at `pointer` to `json`" to the transaction, as
/// `mnemo_db_set_path` describes. It builds on earlier operations on the same key in this
/// transaction, in the order they were added: on a value set here it edits that value; it
/// replaces earlier writes of the same path and of paths under it; a path into an array
/// writes that array as the database and this transaction's earlier writes leave it (the
/// key's value is read from the database for that, at its first path write here).
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (as for `mnemo_txn_set`: NULL
/// argument, bad UTF-8, over 16 MiB, which a whole array written may reach; or a bad
/// pointer, a token into an array that neither indexes nor appends to it, or a write nested
/// too deep, a whole array included; the transaction is unchanged
/// and stays usable), and, from reading the key's value at its first path write here, what
/// `mnemo_db_get` returns besides NOT_FOUND (MNEMO_STATUS_PERMISSION_DENIED,
/// MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_CORRUPT, MNEMO_STATUS_STORAGE). Not thread-safe:
/// use a transaction from one thread at a time.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_txn_set_path(
    txn: *mut mnemo_txn,
    store: *const c_char,
    key: *const c_char,
    pointer: *const c_char,
    json: *const c_char,
) -> mnemo_status {
    guard(|| {
        let txn = mnemo_txn::borrow_mut(txn)?;
        let store = strings::arg(store, "store")?;
        let key = strings::arg(key, "key")?;
        let pointer = strings::arg(pointer, "pointer")?;
        let json = strings::arg(json, "json")?;
        txn.inner.set_path(store, key, pointer, json)
    })
}

/// Adds "delete `key` from `store`" to the transaction.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (as for `mnemo_txn_set`: NULL
/// argument, bad UTF-8, bad or reserved store name, bad key, over 16 MiB),
/// MNEMO_STATUS_NOT_FOUND (the key has no value in the database or earlier in this
/// transaction), MNEMO_STATUS_STORAGE. Not thread-safe: use a transaction from one thread
/// at a time.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_txn_delete(
    txn: *mut mnemo_txn,
    store: *const c_char,
    key: *const c_char,
) -> mnemo_status {
    guard(|| {
        let txn = mnemo_txn::borrow_mut(txn)?;
        let store = strings::arg(store, "store")?;
        let key = strings::arg(key, "key")?;
        txn.inner.delete(store, key)
    })
}

/// Commits every operation of the transaction as one signed entry, across all the stores it
/// touches: all of it becomes visible, or none. Frees `txn`, on success and on failure.
///
/// - `out_entry_id`: optional; receives the new entry's id (owned, free with
///   `mnemo_string_free`).
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL txn, no operations, or an
/// entry over 16 MiB with the parents it has: each tip of the database takes 32 bytes),
/// MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_PERMISSION_DENIED, MNEMO_STATUS_STORAGE.
/// Not thread-safe: no other thread may use `txn` during or after the call.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_txn_commit(
    txn: *mut mnemo_txn,
    out_entry_id: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        clear(out_entry_id);
        let id = mnemo_txn::take(txn)?.inner.commit()?;
        strings::to_optional_out(out_entry_id, id.to_text())
    })
}

/// Discards the transaction and frees it. NULL is a no-op. Freed after
/// `mnemo_instance_free` as the instance's last handle, it waits for queued change
/// callbacks as `mnemo_instance_free` says (so does `mnemo_txn_commit`). Not thread-safe:
/// no other thread may use `txn` during or after the call.
#[no_mangle]
pub unsafe extern "C" fn mnemo_txn_abort(txn: *mut mnemo_txn) {
    guard_void(|| mnemo_txn::free(txn))
}
