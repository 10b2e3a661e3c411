//! `mnemo_user`: a logged-in user's session.

use std::ffi::c_char;

use super::database::mnemo_database;
use super::guard::guard;
use super::handle::{out_param, Handle};
use super::status::mnemo_status;
use super::strings;
use crate::crypto::PublicKey;
use crate::entry::EntryId;
use crate::User;

/// A logged-in user's session, holding decrypted keys until `mnemo_user_logout`.
/// Safe to use from several threads at once.
pub struct mnemo_user {
    inner: User,
}

impl mnemo_user {
    pub(crate) fn new(inner: User) -> Self {
        mnemo_user { inner }
    }

    pub(crate) fn inner(&self) -> &User {
        &self.inner
    }
}

impl Handle for mnemo_user {
    const NAME: &'static str = "mnemo_user";
}

/// Creates a database with this user's default key as its admin, and adds it to the user's
/// list. A creation that fails part-way (an error, a crash) leaves nothing stored outside
/// every list: the database is either listed or not stored.
///
/// - `name`: required, UTF-8, 1 to 255 bytes; names need not be unique.
/// - `out`: receives a new database handle, owned by the caller, freed with `mnemo_db_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, empty
/// name or one over 255 bytes), MNEMO_STATUS_PERMISSION_DENIED (the account was deleted),
/// MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_create_db(
    user: *mut mnemo_user,
    name: *const c_char,
    out: *mut *mut mnemo_database,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out, "out")?;
        let user = mnemo_user::borrow(user)?;
        let name = strings::arg(name, "name")?;
        *out = mnemo_database::new(user.inner.create_db(name)?).into_raw();
        Ok(())
    })
}

/// Opens a database stored on this instance by its id, and tracks it in the user's list.
/// The handle signs with the user's key of highest permission on the database. Only a
/// database one of the user's keys may at least read opens: system databases and other
/// users' private databases never do.
///
/// - `db_id`: "sha256:<64 hex digits>", e.g. from `mnemo_db_id` on another device.
/// - `out`: receives a new database handle, owned by the caller, freed with `mnemo_db_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
/// malformed id), MNEMO_STATUS_NOT_FOUND (not on this instance, or none of the user's keys
/// may read it: the same answer, so the user learns nothing of databases it may not open;
/// sync it first, or ask its owner for a grant), MNEMO_STATUS_PERMISSION_DENIED (the
/// account was deleted), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_load_db(
    user: *mut mnemo_user,
    db_id: *const c_char,
    out: *mut *mut mnemo_database,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out, "out")?;
        let user = mnemo_user::borrow(user)?;
        let id = EntryId::parse(strings::arg(db_id, "db_id")?)?;
        *out = mnemo_database::new(user.inner.load_db(&id)?).into_raw();
        Ok(())
    })
}

/// Opens the database named `name` among those the user tracks (created or loaded) and may
/// still read. When
/// several tracked databases share the name, the one tracked first is opened (ties: the
/// smallest id); use `mnemo_user_list_dbs` and `mnemo_user_load_db` to choose another.
///
/// - `out`: receives a new database handle, owned by the caller, freed with `mnemo_db_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8),
/// MNEMO_STATUS_NOT_FOUND (no tracked database has that name),
/// MNEMO_STATUS_PERMISSION_DENIED (the account was deleted), MNEMO_STATUS_LOGGED_OUT,
/// MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_find_db(
    user: *mut mnemo_user,
    name: *const c_char,
    out: *mut *mut mnemo_database,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out, "out")?;
        let user = mnemo_user::borrow(user)?;
        let name = strings::arg(name, "name")?;
        *out = mnemo_database::new(user.inner.find_db(name)?).into_raw();
        Ok(())
    })
}

/// The databases the user tracks and may still read (those `mnemo_user_load_db` opens), as
/// a JSON array sorted by name then id: [{"id":"sha256:…","name":"notes"}, …].
///
/// - `out_json`: receives an owned string; free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
/// MNEMO_STATUS_PERMISSION_DENIED (the account was deleted), MNEMO_STATUS_LOGGED_OUT,
/// MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_list_dbs(
    user: *mut mnemo_user,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let dbs = mnemo_user::borrow(user)?.inner.list_dbs()?;
        let list: Vec<serde_json::Value> = dbs
            .iter()
            .map(|d| serde_json::json!({"id": d.id.to_text(), "name": d.name}))
            .collect();
        *out = strings::json_to_c(&list.into())?;
        Ok(())
    })
}

/// Removes a database from the user's list: it no longer shows in `mnemo_user_list_dbs` or
/// opens through `mnemo_user_find_db`, and what this user tracks of it with sync stops (and
/// no longer resumes at login). When no user of the instance keeps it any more, its storage
/// is reclaimed: every row of it is deleted (SQLite zeroes them and rewrites the file, so no
/// copy stays in it: this takes time in proportion to the file's size, and this process's
/// writes to the file wait for it at most 10 s, then fail with MNEMO_STATUS_BUSY; if the
/// rewrite, or
/// the checkpoint of the WAL after it, is kept out (another process's lock on the file past
/// 1 s, or for the checkpoint its read snapshot; a full disk; a crash), the forget still
/// succeeds, the bytes stay meanwhile, and the next forget or open of the file finishes it,
/// taking that time then; PostgreSQL keeps old row versions until vacuumed, and a row of the database's id and
/// version, so that other processes still holding it see it changed), and database
/// handles still open on it fail with MNEMO_STATUS_NOT_FOUND (in other processes sharing the storage too). Forgetting is
/// local: grants in the database's settings stay as they are, also on other replicas; while
/// another user of the instance keeps it, `mnemo_user_load_db` adds it to the list again,
/// and once reclaimed, syncing it from a peer brings it back (at storage positions after
/// any it had here: the instance keeps one number, the last position any database it
/// forgot reached, so peers that pulled it from here before get all of the new copy from
/// where they were). Another user of this instance
/// loading it at the same moment either keeps it (it is not reclaimed) or waits and gets
/// MNEMO_STATUS_NOT_FOUND. A process sharing the storage that writes to the database after
/// this one found that nobody keeps it (a user there loaded it just then) keeps it stored:
/// the reclaiming then deletes nothing, and no write it acknowledged is lost (a handle
/// loaded there that has not written yet gets MNEMO_STATUS_NOT_FOUND). A write from a handle
/// whose user no longer keeps it (or a peer's push) landing at that moment makes it look
/// again, up to 4 times, whether anybody keeps it; then it stays stored. Writes that land
/// before that look, from this user's other handles too, go with the database: nobody
/// keeps it. The database leaves the list last: if forgetting stops part-way (an error, a
/// crash), it is still in the user's list, and forgetting it again finishes the job. (On a
/// full disk the rows can be deleted and the writes after fail: the call fails with
/// MNEMO_STATUS_STORAGE, the database no longer opens, nor shows in
/// `mnemo_user_list_dbs`, and a forget once there is room again succeeds.)
///
/// - `db_id`: "sha256:<64 hex digits>", a database in the user's list.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
/// malformed id), MNEMO_STATUS_NOT_FOUND (not in the user's list),
/// MNEMO_STATUS_PERMISSION_DENIED (a system database of the instance, or the account was
/// deleted), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_forget_db(
    user: *mut mnemo_user,
    db_id: *const c_char,
) -> mnemo_status {
    guard(|| {
        let user = mnemo_user::borrow(user)?;
        let id = EntryId::parse(strings::arg(db_id, "db_id")?)?;
        user.inner.forget_db(&id)
    })
}

/// Generates a new Ed25519 key for the user, stored like the others (sealed under the
/// password, or unsealed for a passwordless user). The private key never leaves mnemo. A
/// crash during the call may leave the new key stored but never listed: unused and granted
/// nothing, it stays sealed with the others until the account is deleted. With sync
/// enabled, the device also makes the key's holder proof (see `mnemo_sync_db`), so that
/// peers push it what the key may read; if that fails, the next login or sync makes it.
///
/// - `display_name`: optional (NULL: none), at most 255 bytes.
/// - `out_pubkey`: receives the new public key, `"ed25519:<base64url>"`; owned, free it with
///   `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL user or out, bad UTF-8, a
/// name too long), MNEMO_STATUS_PERMISSION_DENIED (the account was deleted),
/// MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_add_private_key(
    user: *mut mnemo_user,
    display_name: *const c_char,
    out_pubkey: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_pubkey, "out_pubkey")?;
        let user = mnemo_user::borrow(user)?;
        let name = strings::optional_arg(display_name, "display_name")?;
        *out = strings::to_c(user.inner.add_private_key(name)?.to_text())?;
        Ok(())
    })
}

/// The user's keys as a JSON array sorted by public key:
/// [{"pubkey":"ed25519:…","name":"default","default":true}, …] ("name" may be null).
///
/// - `out_json`: receives an owned string; free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
/// MNEMO_STATUS_PERMISSION_DENIED (the account was deleted), MNEMO_STATUS_LOGGED_OUT,
/// MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_list_keys(
    user: *mut mnemo_user,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let keys = mnemo_user::borrow(user)?.inner.list_keys()?;
        let list: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| serde_json::json!({"pubkey": k.public.to_text(), "name": k.name, "default": k.default}))
            .collect();
        *out = strings::json_to_c(&list.into())?;
        Ok(())
    })
}

/// Removes one of the user's keys: its record goes, and its sealed private key is erased
/// from storage (as `mnemo_user_change_password` erases a replaced secret). This session
/// stops signing with it at once; other sessions of the same user hold it until they log
/// out. Database handles that sign with it then fail to write. Grants the key holds in
/// databases' settings stay (revoke them with `mnemo_db_revoke` first if they matter). The
/// device's holder proof by the key is marked gone (see `mnemo_sync_db`): peers stop
/// pushing to this device what only that key may read (a device that kept a copy of the
/// proof can still show it: revoke the key's read to cut a device off). If it fails after the record went (MNEMO_STATUS_STORAGE),
/// calling it again erases the sealed key that was left.
///
/// - `pubkey`: `"ed25519:<base64url>"`, one of the user's keys other than the default.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
/// malformed key, the default key: make another the default first), MNEMO_STATUS_NOT_FOUND
/// (the user has no such key), MNEMO_STATUS_PERMISSION_DENIED (the account was deleted),
/// MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_remove_key(
    user: *mut mnemo_user,
    pubkey: *const c_char,
) -> mnemo_status {
    guard(|| {
        let user = mnemo_user::borrow(user)?;
        let key = PublicKey::parse(strings::arg(pubkey, "pubkey")?)?;
        user.inner.remove_key(&key)
    })
}

/// Makes one of the user's keys the default: it signs the databases the user creates from
/// now on and comes first among equals when a signing key is chosen. Stored: it holds at
/// the next login.
///
/// - `pubkey`: `"ed25519:<base64url>"`, one of the user's keys.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
/// malformed key), MNEMO_STATUS_NOT_FOUND (the user has no such key, or another session
/// added it since this one logged in: log in again), MNEMO_STATUS_PERMISSION_DENIED (the
/// account was deleted), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_set_default_key(
    user: *mut mnemo_user,
    pubkey: *const c_char,
) -> mnemo_status {
    guard(|| {
        let user = mnemo_user::borrow(user)?;
        let key = PublicKey::parse(strings::arg(pubkey, "pubkey")?)?;
        user.inner.set_default_key(&key)
    })
}

/// The public key the user signs database `db_id` with: the user's key with the highest
/// permission on it (the default key first among equals). Give it to a database's admin to
/// be granted access (`mnemo_db_grant`).
///
/// - `out_pubkey`: receives `"ed25519:<base64url>"`; owned, free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
/// malformed id), MNEMO_STATUS_NOT_FOUND (the database is not on this instance, or none of
/// the user's keys has a permission on it), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE.
/// Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_get_signing_key(
    user: *mut mnemo_user,
    db_id: *const c_char,
    out_pubkey: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_pubkey, "out_pubkey")?;
        let user = mnemo_user::borrow(user)?;
        let id = EntryId::parse(strings::arg(db_id, "db_id")?)?;
        *out = strings::to_c(user.inner.signing_key(&id)?.to_text())?;
        Ok(())
    })
}

/// Changes the user's password; the old password stops working at once. The sealed
/// secret it locked is overwritten in place (not kept in any history), so the file holds
/// no copy that the old password, or no password, opens (on PostgreSQL old row versions
/// stay until vacuumed: see docs/security-model.md).
///
/// - `old_pw`: the current password; NULL for a passwordless user.
/// - `new_pw`: the new password (1 to 1024 bytes); NULL makes the user passwordless (its
///   keys are then as good as unsealed to anyone holding the file).
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL user, bad UTF-8, a new
/// password out of bounds), MNEMO_STATUS_AUTH_FAILED (`old_pw` is wrong),
/// MNEMO_STATUS_PERMISSION_DENIED (the account was deleted), MNEMO_STATUS_LOGGED_OUT,
/// MNEMO_STATUS_STORAGE, MNEMO_STATUS_BUSY (no turn to derive a password within 60 s: see
/// "password_derivations" in `mnemo_instance_stats`). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_change_password(
    user: *mut mnemo_user,
    old_pw: *const c_char,
    new_pw: *const c_char,
) -> mnemo_status {
    guard(|| {
        let user = mnemo_user::borrow(user)?;
        let old = strings::optional_arg(old_pw, "old_pw")?;
        let new = strings::optional_arg(new_pw, "new_pw")?;
        user.inner.change_password(old, new)
    })
}

/// Every user of the instance with status and role, as a JSON array sorted by name:
/// [{"username":"alice","status":"active","admin":true}, …] (status "active" or
/// "disabled"). Admin only: the first user created is the instance admin.
///
/// - `out_json`: receives an owned string; free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
/// MNEMO_STATUS_PERMISSION_DENIED (not the admin), MNEMO_STATUS_LOGGED_OUT,
/// MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_admin_list_users(
    user: *mut mnemo_user,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let users = mnemo_user::borrow(user)?.inner.admin_list_users()?;
        let list: Vec<serde_json::Value> = users
            .iter()
            .map(|u| {
                let status = if u.active { "active" } else { "disabled" };
                serde_json::json!({"username": u.username, "status": status, "admin": u.admin})
            })
            .collect();
        *out = strings::json_to_c(&list.into())?;
        Ok(())
    })
}

/// Disables another user's account (admin only): it can no longer log in (a right password
/// then gives MNEMO_STATUS_PERMISSION_DENIED). Sessions already open go on until logout.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, the
/// admin's own name), MNEMO_STATUS_NOT_FOUND (no such user), MNEMO_STATUS_PERMISSION_DENIED
/// (not the admin), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_admin_disable(
    user: *mut mnemo_user,
    username: *const c_char,
) -> mnemo_status {
    guard(|| {
        let user = mnemo_user::borrow(user)?;
        user.inner
            .admin_set_active(strings::arg(username, "username")?, false)
    })
}

/// Re-enables a disabled account (admin only). Enabling an active account changes nothing.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
/// malformed username), MNEMO_STATUS_NOT_FOUND (no such user),
/// MNEMO_STATUS_PERMISSION_DENIED (not the admin), MNEMO_STATUS_LOGGED_OUT,
/// MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_admin_enable(
    user: *mut mnemo_user,
    username: *const c_char,
) -> mnemo_status {
    guard(|| {
        let user = mnemo_user::borrow(user)?;
        user.inner
            .admin_set_active(strings::arg(username, "username")?, true)
    })
}

/// Deletes another user's account (admin only): it can no longer log in and its name can be
/// reused. Its sealed keys and private records (its key and database lists) are erased,
/// and the device's holder proofs by its keys are marked gone (see `mnemo_sync_db`); the
/// databases it created or kept stay.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, the
/// admin's own name), MNEMO_STATUS_NOT_FOUND (no such user), MNEMO_STATUS_PERMISSION_DENIED
/// (not the admin), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE, MNEMO_STATUS_BUSY (a
/// session of that user changed its account meanwhile: delete it again). Thread-safe.
/// A deletion stopped part-way (an error, a crash) leaves the user either there, as before,
/// or gone (not listed, no login, the name free): never in between. Repeating it, or, for a
/// user gone, the next `mnemo_instance_open` of the storage, erases what it left.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_admin_delete(
    user: *mut mnemo_user,
    username: *const c_char,
) -> mnemo_status {
    guard(|| {
        let user = mnemo_user::borrow(user)?;
        user.inner
            .admin_delete_user(strings::arg(username, "username")?)
    })
}

/// Logs the user out: wipes the session's decrypted keys and frees the handle (on success
/// and on failure; do not use `user` afterwards). Databases opened through this session stay
/// readable but refuse writes with MNEMO_STATUS_LOGGED_OUT.
///
/// Returns MNEMO_STATUS_OK or MNEMO_STATUS_INVALID_ARGUMENT (NULL handle). Not to be called
/// while another thread uses the same handle.
///
/// `user` is NULL or a live user handle that is not used again.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_user_logout(user: *mut mnemo_user) -> mnemo_status {
    guard(|| {
        mnemo_user::take(user)?.inner.logout();
        Ok(())
    })
}
