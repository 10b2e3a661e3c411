//! `mnemo_database`: one database, acting for the session that opened it.

use std::ffi::c_char;

use super::cursor::mnemo_cursor;
use super::guard::{guard, guard_void};
use super::handle::{out_param, Handle};
use super::status::mnemo_status;
use super::strings;
use super::subscription::{
    mnemo_change_cb, mnemo_destroy_cb, mnemo_subscription, register_c_callback,
};
use super::transaction::mnemo_txn;
use crate::crypto::PublicKey;
use crate::database::Permission;
use crate::error::Error;
use crate::Database;

/// A database handle. Safe to use from several threads at once.
///
/// Once the database is reclaimed by `mnemo_user_forget_db` (nobody on the instance keeps
/// it), every call that reads or writes it through a handle, cursor, transaction or watch
/// still open on it fails with MNEMO_STATUS_NOT_FOUND ("... was forgotten on this
/// instance"), whether or not that function lists the status; freeing them stays safe.
pub struct mnemo_database {
    inner: Database,
}

impl mnemo_database {
    pub(crate) fn new(inner: Database) -> Self {
        mnemo_database { inner }
    }

    /// The database this handle acts on.
    pub(crate) fn database(&self) -> &Database {
        &self.inner
    }
}

impl Handle for mnemo_database {
    const NAME: &'static str = "mnemo_database";
}

/// The database's id, "sha256:<64 hex digits>" (the id of its root entry).
///
/// - `out_id`: receives an owned string; free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK or MNEMO_STATUS_INVALID_ARGUMENT (NULL argument). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_id(
    db: *const mnemo_database,
    out_id: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_id, "out_id")?;
        *out = strings::to_c(mnemo_database::borrow(db)?.inner.id().to_text())?;
        Ok(())
    })
}

/// Sets `key` in `store` to a JSON value, as one signed commit.
///
/// - `store`: 1 to 255 bytes; names starting with '_' are reserved.
/// - `key`: 1 to 4096 bytes.
/// - `json`: any JSON value (object, array, string, number, true, false, null) nested at
///   most 127 levels deep, its strings Unicode (an escape of half a surrogate pair alone,
///   such as "\ud800", is refused); stored in canonical form (no white space, object keys
///   sorted, numbers with all their digits: no rounding, no 64-bit limit; only the integer
///   -0 is stored as 0). An object with a key twice is refused (never stored with one of its
///   values lost). The object key "$serde_json::private::Number" is reserved: an object
///   with it as first key, as written or once sorted, is refused (after a key that sorts
///   before it, such as "!", it is an ordinary key).
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad
/// store name or key, malformed JSON, a key twice in an object, the reserved key first, an
/// entry over 16 MiB: a value takes all but a few hundred bytes of it),
/// MNEMO_STATUS_LOGGED_OUT (the session ended), MNEMO_STATUS_PERMISSION_DENIED,
/// MNEMO_STATUS_STORAGE. Nothing is stored on failure. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_set(
    db: *mut mnemo_database,
    store: *const c_char,
    key: *const c_char,
    json: *const c_char,
) -> mnemo_status {
    guard(|| {
        let db = mnemo_database::borrow(db)?;
        let store = strings::arg(store, "store")?;
        let key = strings::arg(key, "key")?;
        let json = strings::arg(json, "json")?;
        db.inner.set(store, key, json).map(drop)
    })
}

/// Sets a new generated key of `store` to a JSON value, as one signed commit, and returns
/// the key: 32 lower-case hex digits, the first 12 the time in milliseconds, the rest random
/// (UUIDv7-like). Keys are unique, and those one process makes sort (bytewise, as
/// `mnemo_db_scan` orders keys) in the order it made them, even when the clock goes back.
///
/// - `store`: 1 to 255 bytes; names starting with '_' are reserved.
/// - `json`: any JSON value, as for `mnemo_db_set`.
/// - `out_key`: receives the new key, owned; free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad or
/// reserved store name, malformed JSON, an entry over 16 MiB), MNEMO_STATUS_LOGGED_OUT (the
/// session ended), MNEMO_STATUS_PERMISSION_DENIED, MNEMO_STATUS_STORAGE. Nothing is stored
/// on failure. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_insert(
    db: *mut mnemo_database,
    store: *const c_char,
    json: *const c_char,
    out_key: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_key, "out_key")?;
        let db = mnemo_database::borrow(db)?;
        let store = strings::arg(store, "store")?;
        let json = strings::arg(json, "json")?;
        let (key, _) = db.inner.insert(store, json)?;
        *out = strings::to_c(key)?;
        Ok(())
    })
}

/// Reads the JSON value of `key` in `store`.
///
/// - `out_json`: receives the value in canonical JSON text, owned; free it with
///   `mnemo_string_free`.
///
/// Reserved stores may be read: "_settings" holds the database's "name" and its
/// `"auth/<public key>"` grants.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad
/// store name or key), MNEMO_STATUS_NOT_FOUND (never set, or deleted),
/// MNEMO_STATUS_PERMISSION_DENIED (none of the session's keys may read the database any
/// more: read was revoked), MNEMO_STATUS_CORRUPT, MNEMO_STATUS_STORAGE. Reading works after
/// the session logged out. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_get(
    db: *const mnemo_database,
    store: *const c_char,
    key: *const c_char,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let db = mnemo_database::borrow(db)?;
        let store = strings::arg(store, "store")?;
        let key = strings::arg(key, "key")?;
        *out = strings::to_c(db.inner.get(store, key)?)?;
        Ok(())
    })
}

/// Reads the JSON value of `key` in `store` into a buffer the caller provides: the form of
/// `mnemo_db_get` that allocates nothing for the caller to free, like snprintf. On success
/// `buf` holds the value in canonical JSON text and a terminating NUL, and `*out_len` its
/// length without the NUL. When the value does not fit (it needs `*out_len + 1` bytes),
/// the call returns MNEMO_STATUS_BUFFER_TOO_SMALL with `*out_len` set to the value's
/// length and `buf` holding only "" (never a partial value): call again with a buffer of at
/// least `*out_len + 1` bytes (a value is at most 16 MiB). `buf` NULL with `cap` 0 asks for
/// the length only (MNEMO_STATUS_BUFFER_TOO_SMALL then, as a value is never empty).
///
/// - `store`: NUL-terminated UTF-8, 1 to 255 bytes.
/// - `key`: NUL-terminated UTF-8, 1 to 4096 bytes.
/// - `buf`: `cap` bytes owned by the caller, written only within them; optional: NULL
///   only with `cap` 0. Cleared on entry (`buf[0]` set to NUL when `cap` > 0), so it holds
///   "" after any failure; it must not overlap `store` or `key` (the clearing would change
///   them).
/// - `cap`: the size of `buf` in bytes, the NUL's byte included.
/// - `out_len`: required; set to 0 on entry, then to the value's length in bytes (without
///   the NUL) on success and with MNEMO_STATUS_BUFFER_TOO_SMALL; 0 after other failures.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_BUFFER_TOO_SMALL (the value is `cap` bytes or
/// longer), MNEMO_STATUS_INVALID_ARGUMENT (NULL db, store, key or out_len, NULL buf with a
/// `cap` other than 0, bad UTF-8, bad store name or key), MNEMO_STATUS_NOT_FOUND (never
/// set, or deleted), MNEMO_STATUS_PERMISSION_DENIED (read was revoked),
/// MNEMO_STATUS_CORRUPT, MNEMO_STATUS_STORAGE. Reading works after the session logged out.
/// Thread-safe (each thread with its own buffer).
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_get_into(
    db: *const mnemo_database,
    store: *const c_char,
    key: *const c_char,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> mnemo_status {
    guard(|| {
        // Both outputs are cleared before either is checked.
        let len = out_len.as_mut().map(|len| {
            *len = 0;
            len
        });
        let mut buf = strings::OutBuffer::new(buf, cap, "buf")?;
        let len = len.ok_or_else(|| Error::invalid("out-parameter 'out_len' is NULL"))?;
        let db = mnemo_database::borrow(db)?;
        let store = strings::arg(store, "store")?;
        let key = strings::arg(key, "key")?;
        let value = db.inner.get(store, key)?;
        *len = value.len();
        buf.write(&value)
    })
}

/// Deletes `key` from `store`, as one signed commit (a tombstone that merges like a write).
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad or
/// reserved store name, bad key), MNEMO_STATUS_NOT_FOUND (the key has no value),
/// MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_PERMISSION_DENIED, MNEMO_STATUS_STORAGE.
/// Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_delete(
    db: *mut mnemo_database,
    store: *const c_char,
    key: *const c_char,
) -> mnemo_status {
    guard(|| {
        let db = mnemo_database::borrow(db)?;
        let store = strings::arg(store, "store")?;
        let key = strings::arg(key, "key")?;
        db.inner.delete(store, key).map(drop)
    })
}

/// Every live key of `store` with its value, as one JSON object: {"key": value, ...}
/// ({} for an empty or unknown store).
///
/// - `out_json`: receives an owned string; free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad
/// store name), MNEMO_STATUS_PERMISSION_DENIED (read was revoked), MNEMO_STATUS_CORRUPT
/// (stored rows of the store are missing or damaged), MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_get_all(
    db: *const mnemo_database,
    store: *const c_char,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let db = mnemo_database::borrow(db)?;
        let store = strings::arg(store, "store")?;
        let values = db.inner.get_all(store)?;
        let json = strings::json_object(values.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        *out = strings::to_c(json)?;
        Ok(())
    })
}

/// A page of the live keys of `store` in bytewise key order (by UTF-8 bytes, whatever the
/// backend), as a JSON array of [key, value] pairs: [["a", 1], ["b", {"x": true}], ...]
/// ([] when none). Pass the last key of a page as `after` to get the next page. Reads through
/// the store's key index: a page costs O(page size), not O(store).
///
/// - `store`: 1 to 255 bytes. Reserved stores may be read.
/// - `prefix`: optional; only keys starting with these bytes (0 to 4096 bytes). NULL or ""
///   means every key.
/// - `after`: optional; only keys that sort after this key (which need not exist). NULL
///   means from the first key.
/// - `limit`: at most this many pairs; 0 means no limit (the whole store, or the rest of it:
///   page with a limit for large stores, or use `mnemo_db_cursor`).
/// - `out_json`: receives an owned string; free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL db, store or out_json, bad
/// UTF-8, bad store name, a prefix over 4096 bytes, a bad `after` key),
/// MNEMO_STATUS_PERMISSION_DENIED (read was revoked), MNEMO_STATUS_CORRUPT (a stored row is
/// damaged), MNEMO_STATUS_STORAGE. Reading works after the session logged out. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_scan(
    db: *const mnemo_database,
    store: *const c_char,
    prefix: *const c_char,
    after: *const c_char,
    limit: usize,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let db = mnemo_database::borrow(db)?;
        let store = strings::arg(store, "store")?;
        let prefix = strings::optional_arg(prefix, "prefix")?.unwrap_or("");
        let after = strings::optional_arg(after, "after")?;
        let pairs = db.inner.scan(store, prefix, after, limit)?;
        let json = strings::json_list(
            pairs
                .iter()
                .map(|(key, value)| format!("[{},{value}]", strings::json_string(key))),
        );
        *out = strings::to_c(json)?;
        Ok(())
    })
}

/// Opens a cursor over the live keys of `store` in bytewise key order, for
/// `mnemo_cursor_next`, which yields each key and value as plain strings. The cursor reads
/// 256 cells at a time, or fewer once they hold 4 MiB of keys and values (at least one), so
/// it never holds the whole store, and holds its own reference to the database: it stays
/// usable after `db` is freed.
///
/// - `store`: 1 to 255 bytes. Reserved stores may be read.
/// - `prefix`: optional; only keys starting with these bytes (0 to 4096 bytes). NULL or ""
///   means every key.
/// - `after`: optional; only keys that sort after this key. NULL means from the first key.
/// - `out`: receives a new cursor handle, owned by the caller; free it with
///   `mnemo_cursor_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL db, store or out, bad UTF-8,
/// bad store name, a prefix over 4096 bytes, a bad `after` key),
/// MNEMO_STATUS_PERMISSION_DENIED (read was revoked). Thread-safe; the cursor itself is not
/// (use it from one thread at a time).
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_cursor(
    db: *const mnemo_database,
    store: *const c_char,
    prefix: *const c_char,
    after: *const c_char,
    out: *mut *mut mnemo_cursor,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out, "out")?;
        let db = mnemo_database::borrow(db)?;
        let store = strings::arg(store, "store")?;
        let prefix = strings::optional_arg(prefix, "prefix")?.unwrap_or("");
        let after = strings::optional_arg(after, "after")?;
        *out = mnemo_cursor::new(db.inner.cursor(store, prefix, after)?).into_raw();
        Ok(())
    })
}

/// Gives `pubkey` a permission on this database, as a signed change to its settings.
/// Needs an admin more senior than `pubkey`: admins are ordered by priority (the creator is
/// 0, the most senior), an admin grant is one step junior to the admin making it, and no
/// admin changes its own grant (so the creator is never demoted, and a database always keeps
/// an admin). Granting again replaces the permission (and re-activates a revoked key). A
/// demotion discards the key's entries this change had not seen (docs/security-model.md).
///
/// - `pubkey`: `"ed25519:<base64url>"`, e.g. from `mnemo_user_get_signing_key`.
/// - `permission`: "admin", "write" or "read".
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
/// malformed key or permission), MNEMO_STATUS_PERMISSION_DENIED (this handle's key is not an
/// admin, or not one senior to `pubkey`, or `pubkey` is its own key), MNEMO_STATUS_LOGGED_OUT,
/// MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_grant(
    db: *mut mnemo_database,
    pubkey: *const c_char,
    permission: *const c_char,
) -> mnemo_status {
    guard(|| {
        let db = mnemo_database::borrow(db)?;
        let key = PublicKey::parse(strings::arg(pubkey, "pubkey")?)?;
        let permission = Permission::parse(strings::arg(permission, "permission")?)?;
        db.inner.grant(&key, permission).map(drop)
    })
}

/// Revokes `pubkey`: entries it signs on top of this change are rejected everywhere, and
/// its entries this change had not seen (written concurrently, e.g. offline) are discarded
/// wherever this change arrives: they stay stored, with no effect (docs/security-model.md).
/// Needs an admin more senior than `pubkey` (see `mnemo_db_grant`; the creator cannot be
/// revoked).
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
/// malformed key), MNEMO_STATUS_PERMISSION_DENIED (this handle's key is not an admin senior
/// to `pubkey`; checked first), MNEMO_STATUS_NOT_FOUND (the key holds no active grant),
/// MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_revoke(
    db: *mut mnemo_database,
    pubkey: *const c_char,
) -> mnemo_status {
    guard(|| {
        let db = mnemo_database::borrow(db)?;
        let key = PublicKey::parse(strings::arg(pubkey, "pubkey")?)?;
        db.inner.revoke(&key).map(drop)
    })
}

/// Checks everything stored of the database against its entries: every entry's bytes hash
/// to its id and its signature verifies, what is stored beside each entry agrees with it,
/// and the whole state (every store's values, the tips, the entries discarded by
/// revocations) is exactly what the entries make of it, each key found by a read of its
/// whole store and when looked up by itself (as `mnemo_db_get` does). Damage that removed,
/// altered or added rows is reported, never passed over. Reads every entry of the database: its cost
/// grows with the history (ordinary reads check each row, and full-store reads the row
/// count, as they go).
///
/// Returns MNEMO_STATUS_OK (all agrees), MNEMO_STATUS_INVALID_ARGUMENT (NULL handle),
/// MNEMO_STATUS_CORRUPT (something differs; the message says what), MNEMO_STATUS_PERMISSION_DENIED
/// (read was revoked), MNEMO_STATUS_BUSY (commits kept changing the database during the
/// check; retry), MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_verify(db: *const mnemo_database) -> mnemo_status {
    guard(|| mnemo_database::borrow(db)?.inner.verify())
}

/// The database's current tips (entries without children), as a sorted JSON array of ids:
/// ["sha256:…", …]. At most 1,024, the most parents an entry has: an entry from elsewhere
/// that would add one more is refused (MNEMO_STATUS_BUSY; sync asks for it again later) until
/// a writer's commit merges them.
///
/// - `out_json`: receives an owned string; free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
/// MNEMO_STATUS_PERMISSION_DENIED (read was revoked), MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_tips(
    db: *const mnemo_database,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let tips: Vec<String> = mnemo_database::borrow(db)?
            .inner
            .tips()?
            .iter()
            .map(|t| t.to_text())
            .collect();
        *out = strings::json_to_c(&tips.into())?;
        Ok(())
    })
}

/// Starts a transaction: its operations commit together as one entry, or not at all.
///
/// - `out`: receives a new transaction handle, owned by the caller; end it with
///   `mnemo_txn_commit` or `mnemo_txn_abort` (each frees it).
///
/// Returns MNEMO_STATUS_OK or MNEMO_STATUS_INVALID_ARGUMENT (NULL argument). Thread-safe;
/// the transaction itself is not (use it from one thread at a time).
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_begin(
    db: *mut mnemo_database,
    out: *mut *mut mnemo_txn,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out, "out")?;
        *out = mnemo_txn::new(mnemo_database::borrow(db)?.inner.begin()).into_raw();
        Ok(())
    })
}

/// Calls `cb` after every change to this database: each local commit (remote = false), and
/// each entry applied from sync or stored by another process in the same "sqlite:" file or
/// PostgreSQL database (remote = true; those are heard within "other_processes_poll_ms" of
/// `mnemo_instance_limits`, 200 ms by default, from when the subscription began).
///
/// - `cb`: required. It runs on a library thread (one per instance, in commit order), never
///   while mnemo holds a lock, so it may call mnemo functions; its string arguments are
///   valid only during the call. Changes wait for callbacks that fall behind: while 65,536
///   notifications are queued (`mnemo_instance_set_limits` changes that number), a commit
///   or received entry of a database with callbacks first waits for them, up to 10 s, and
///   then goes on, the queue past that number (changes made from inside a callback, of
///   any instance, never wait). The last handle of the instance to be freed
///   (`mnemo_instance_free` says which) waits until the callbacks have run for every change
///   already queued.
/// - `user_data`: passed to `cb` and `destroy` unchanged; may be NULL.
/// - `destroy`: optional; called exactly once with `user_data` when the subscription ends
///   (`mnemo_subscription_free`, which says on which thread), after the last call of `cb`.
///   If this function fails, whatever the status, mnemo has not kept `user_data` and never
///   calls `destroy` or `cb`: `user_data` is still the caller's to release.
/// - `out`: receives a new subscription handle, owned by the caller, freed with
///   `mnemo_subscription_free`. It lasts until then, also once `db` is freed: changes
///   made through any handle on the database are announced, also after read is revoked
///   from the keys of `db`'s session (their ids, not their values, which reads then
///   refuse): free it when you revoke.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL db, cb or out),
/// MNEMO_STATUS_NOT_FOUND (the database was forgotten on this instance),
/// MNEMO_STATUS_PERMISSION_DENIED (read was revoked), MNEMO_STATUS_STORAGE,
/// MNEMO_STATUS_INTERNAL (the notification thread, or the one that hears other processes,
/// could not start). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_subscribe(
    db: *mut mnemo_database,
    cb: mnemo_change_cb,
    user_data: *mut std::ffi::c_void,
    destroy: mnemo_destroy_cb,
    out: *mut *mut mnemo_subscription,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out, "out")?;
        let db = mnemo_database::borrow(db)?;
        let subscription = register_c_callback(cb, user_data, destroy, |callback| {
            db.inner.subscribe(callback)
        })?;
        *out = mnemo_subscription::new(subscription).into_raw();
        Ok(())
    })
}

/// Frees a database handle. NULL is a no-op. The database itself stays stored. Freed after
/// `mnemo_instance_free` as the instance's last handle, it waits for queued change
/// callbacks as `mnemo_instance_free` says.
///
/// `db` is NULL or a live database handle that is not used again. Thread-safe, as long as
/// no other thread is using `db`.
#[no_mangle]
pub unsafe extern "C" fn mnemo_db_free(db: *mut mnemo_database) {
    guard_void(|| mnemo_database::free(db))
}
