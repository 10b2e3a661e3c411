//! `mnemo_instance`: a device's identity, accounts and databases on one backend.

use std::ffi::c_char;

use super::backend::mnemo_backend;
use super::guard::{guard, guard_void};
use super::handle::{clear, out_param, Handle};
use super::status::mnemo_status;
use super::strings;
use super::sync::mnemo_sync;
use super::user::mnemo_user;
use crate::crypto::KdfParams;
use crate::instance::InstanceOptions;
use crate::Instance;

/// An open instance. Safe to use from several threads at once.
pub struct mnemo_instance {
    inner: Instance,
}

impl Handle for mnemo_instance {
    const NAME: &'static str = "mnemo_instance";
}

/// Opens an instance on `backend`, creating the device identity (an Ed25519 key) on first
/// open. Discards what user creations that stopped before claiming their name (a crash) at
/// least an hour ago left stored (see `mnemo_instance_create_user`).
///
/// - `backend`: required; consumed on success and on failure (do not use or free it after).
/// - `out`: receives a new instance handle, owned by the caller, freed with
///   `mnemo_instance_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
/// MNEMO_STATUS_STORAGE or MNEMO_STATUS_CORRUPT (the backend failed or holds bad data).
/// Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_instance_open(
    backend: *mut mnemo_backend,
    out: *mut *mut mnemo_instance,
) -> mnemo_status {
    guard(|| {
        // `out` is cleared first; the backend is consumed even when `out` is NULL.
        clear(out);
        let backend = mnemo_backend::take(backend)?;
        let out = out_param(out, "out")?;
        *out = mnemo_instance {
            inner: Instance::open(backend.inner)?,
        }
        .into_raw();
        Ok(())
    })
}

/// Opens an instance like `mnemo_instance_open`, choosing the Argon2id cost of passwords
/// when the instance is created: memory `m_kib` KiB, `t` passes, `p` lanes. Each must be at
/// least the default (19456 KiB, 2, 1), so passwords are never weaker by accident, and at
/// most 1048576 KiB (1 GiB), 64 passes, 16 lanes. The
/// parameters are recorded at creation; opening an existing instance with different ones
/// fails rather than change them.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, parameters out of
/// bounds or different from the recorded ones), MNEMO_STATUS_STORAGE,
/// MNEMO_STATUS_CORRUPT. Consumes `backend` on success and on failure. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_instance_open_with_argon2(
    backend: *mut mnemo_backend,
    m_kib: u32,
    t: u32,
    p: u32,
    out: *mut *mut mnemo_instance,
) -> mnemo_status {
    guard(|| {
        // `out` is cleared first; the backend is consumed even when `out` is NULL.
        clear(out);
        let backend = mnemo_backend::take(backend)?;
        let out = out_param(out, "out")?;
        let options = InstanceOptions {
            kdf: Some(KdfParams { m_kib, t, p }),
            ..InstanceOptions::default()
        };
        *out = mnemo_instance {
            inner: Instance::open_with(backend.inner, options)?,
        }
        .into_raw();
        Ok(())
    })
}

/// Closes an instance handle. NULL is a no-op. Users and databases opened through it stay
/// valid until they are freed themselves. The last of these handles to go (this one, or a
/// database, cursor, transaction or sync handle freed after it) waits until the change callbacks
/// (`mnemo_db_subscribe`) have run for every change already queued, the one running
/// included, so it takes as long as they do: never free it while holding a lock such a
/// callback waits for. From inside one of those callbacks it does not wait (it would wait
/// for itself); nor does it when freed by a callback of another instance while this
/// instance's callbacks are waiting for that other instance to go (each instance's last
/// handle freed by the other's callback): the callbacks still queued then run after it
/// returns.
///
/// `instance` is NULL or a live instance handle that is not used again. Thread-safe, as
/// long as no other thread is using `instance`.
#[no_mangle]
pub unsafe extern "C" fn mnemo_instance_free(instance: *mut mnemo_instance) {
    guard_void(|| mnemo_instance::free(instance))
}

/// The device's public identity, `"ed25519:<base64url>"`, stable for the instance's life.
///
/// - `out_pubkey`: receives an owned string; free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK or MNEMO_STATUS_INVALID_ARGUMENT (NULL argument). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_instance_device_id(
    instance: *const mnemo_instance,
    out_pubkey: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_pubkey, "out_pubkey")?;
        let instance = mnemo_instance::borrow(instance)?;
        *out = strings::to_c(instance.inner.device_id().to_text())?;
        Ok(())
    })
}

/// Writes the limits on what this instance holds in memory for its databases, as a JSON
/// object of numbers. By default: {"idle_databases_kept":256,
/// "queued_notifications":65536, "waiting_entries_per_database":100000,
/// "waiting_bytes_per_database":16777216, "waiting_bytes":67108864,
/// "waiting_time_ms":600000, "other_processes_poll_ms":200, "watchers":1024}.
/// "idle_databases_kept": databases nothing refers to (no handle, subscription, event queue,
/// sync track or watch, no entry waiting for its parents) kept in memory for reuse; past
/// it, the least recently used are dropped and read from storage again when next used.
/// "queued_notifications": change notifications waiting for `mnemo_db_subscribe` callbacks
/// past which a commit or received entry of a database with callbacks waits for them (up
/// to 10 s each time, and never from inside a callback).
/// The "waiting_" limits bound the entries received from peers before their parents, which
/// wait, invisible, in memory until the parents come: at most so many entries and bytes in
/// one database, so many bytes across the instance (an entry counts its encoding plus 320
/// bytes, 32 per parent and 320 more per missing parent: at least the memory it holds, its
/// encoding and what the waiting area keeps of it), and so long each (while sync is
/// enabled, every database is swept for those that waited past their time a quarter of that
/// time apart, at most 10 s; otherwise a database drops its own when next used); past them,
/// entries are refused with MNEMO_STATUS_BUSY, and a later sync round brings them again.
/// "other_processes_poll_ms": how often each database with a subscription or watch
/// (`mnemo_db_subscribe`, `mnemo_db_watch`) is checked for entries other processes stored
/// in the same "sqlite:" file or PostgreSQL database, which its subscribers then hear: one
/// read of all their positions each time (one round trip on PostgreSQL), and the new
/// entries of those that moved.
/// "watchers": watchers (`mnemo_db_watch`) live at once across the instance's databases,
/// each holding two descriptors and a queue of up to 1024 changes (about 72 KiB when full);
/// past it, `mnemo_db_watch` fails with MNEMO_STATUS_BUSY until one is freed with
/// `mnemo_events_free`.
///
/// - `out_json`: receives the object; owned, free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_instance_limits(
    instance: *const mnemo_instance,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let limits = mnemo_instance::borrow(instance)?.inner.limits();
        *out = strings::to_c(strings::named_numbers_json(&limits.by_name()))?;
        Ok(())
    })
}

/// Changes some of the limits `mnemo_instance_limits` lists: `limits_json` is a JSON object
/// naming each limit to change with its new value, a whole number; the others keep theirs.
/// The change is all or nothing, and applies from now on: idle databases past a lowered
/// bound are dropped when the next database is opened, and entries already waiting past
/// a lowered "waiting_" bound stay until their parents come or their (new) time is up,
/// and watchers past a lowered "watchers" are kept, new ones refused until fewer are live.
/// "idle_databases_kept" must be from 0 to 1048576, "queued_notifications" from 1 to
/// 16777216 (each takes about 100 bytes while it waits), "waiting_entries_per_database"
/// from 0 to 16777216, "waiting_bytes_per_database" and "waiting_bytes" from 0 to
/// 1099511627776 (0: no entry waits), "waiting_time_ms" from 1 to 86400000 (a day),
/// "other_processes_poll_ms" from 10 to 3600000 (an hour; applies at once), "watchers"
/// from 0 to 1048576 (0: every watch is refused).
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not a
/// JSON object of whole numbers, an unknown name or one named twice, a value out of its
/// bounds; nothing changed). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_instance_set_limits(
    instance: *mut mnemo_instance,
    limits_json: *const c_char,
) -> mnemo_status {
    guard(|| {
        let instance = mnemo_instance::borrow(instance)?;
        let changes = strings::limits_arg(limits_json, "limits_json")?;
        instance.inner.set_limits_by_name(&changes).map(drop)
    })
}

/// Writes what this instance holds now, against its limits, as a JSON object of numbers:
/// {"databases_in_memory":n, "notifications_queued":n, "waiting_entry_bytes":n,
/// "databases_polled":n, "storage_connections":n, "password_derivations":n,
/// "scrubs_pending":n, "watchers":n}.
/// "databases_in_memory": databases whose state is held in memory (the system databases,
/// those in use and the idle ones kept; see `mnemo_instance_limits`).
/// "notifications_queued": change notifications not yet delivered to every
/// `mnemo_db_subscribe` callback. "waiting_entry_bytes": entries received from peers that
/// wait, invisible, for their parents (at most "waiting_bytes" of `mnemo_instance_limits`,
/// unless it was lowered since they came). "databases_polled": databases checked every
/// "other_processes_poll_ms" for entries other processes stored (those with a subscription
/// or watch, on a "sqlite:" file or PostgreSQL). "storage_connections": connections open
/// to the storage (on "sqlite:", the writer and up to 4 readers; on PostgreSQL, up to the
/// URL's "max_connections", those beyond one closed after "idle_timeout"; 0 for
/// "memory:"). "password_derivations": Argon2id derivations (logins, user creations and
/// password changes with a password) computing now in this process, of every instance: at
/// most one per core the process may use (16 at most), each holding its memory (19 MiB by
/// default); others wait for their turn up to 60 s, then fail with MNEMO_STATUS_BUSY.
/// "scrubs_pending": on "sqlite:", the steps of a scrub not finished yet, read from the file
/// (0 to 2: the file's rewrite after a forget, the checkpoint of the WAL after a forget or
/// a sealed secret replaced or removed, see `mnemo_user_forget_db`), left by this process or
/// another; while it is not 0, removed values or keys may still be in the file or its WAL.
/// The next open of the file, or forget that reclaims a database, tries both again; the next
/// change of sealed secrets (a key added or removed, a user created or deleted, a password
/// changed), the checkpoint. 0 for "memory:" and PostgreSQL (which keeps old row versions
/// until vacuumed).
/// "watchers": watchers (`mnemo_db_watch`) not yet freed, across the instance's databases
/// (at most "watchers" of `mnemo_instance_limits`, unless it was lowered since they
/// started).
/// Counts may change as soon as they are read: for monitoring, not for decisions.
///
/// - `out_json`: receives the object; owned, free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
/// MNEMO_STATUS_STORAGE, MNEMO_STATUS_CORRUPT or MNEMO_STATUS_BUSY (reading
/// "scrubs_pending" from a "sqlite:" file failed; BUSY after waiting up to 10 s for another
/// process that holds the file locked). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_instance_stats(
    instance: *const mnemo_instance,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let stats = mnemo_instance::borrow(instance)?.inner.stats()?;
        *out = strings::to_c(strings::named_numbers_json(&stats))?;
        Ok(())
    })
}

/// Creates a user account with a fresh Ed25519 key and a private user database (holding its
/// sealed keys and the databases it tracks). The first user created is the instance admin.
///
/// - `username`: required; 1 to 64 bytes of UTF-8 without control characters.
/// - `password`: NULL for a passwordless user, whose private keys are stored unsealed
///   (anyone who can read the storage can use them); otherwise 1 to 1024 bytes: the keys are
///   sealed with AES-256-GCM under a key derived from it with Argon2id. The password itself
///   is never stored.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL handle or username, bad
/// UTF-8, a name or password out of bounds), MNEMO_STATUS_ALREADY_EXISTS (the name is
/// taken), MNEMO_STATUS_STORAGE, MNEMO_STATUS_BUSY (the call took over an hour, as in a
/// process suspended part-way, and an open of the storage meanwhile discarded it as
/// abandoned: nothing of it is left; create the user again; or no turn to derive the
/// password within 60 s, see "password_derivations" in `mnemo_instance_stats`).
/// Thread-safe; concurrent creations of one name: one wins. Crash-safe: if the process dies
/// part-way (or the call fails), the name is either free again or belongs to the complete
/// account, which then logs in. What a creation that died before its name was claimed had
/// stored is discarded by the first open of the storage an hour or more later (a failed
/// call discards its own at once).
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_instance_create_user(
    instance: *mut mnemo_instance,
    username: *const c_char,
    password: *const c_char,
) -> mnemo_status {
    guard(|| {
        let instance = mnemo_instance::borrow(instance)?;
        let username = strings::arg(username, "username")?;
        let password = strings::optional_arg(password, "password")?;
        instance.inner.create_user(username, password)
    })
}

/// Logs a user in and returns a session holding the user's decrypted keys.
///
/// - `password`: NULL for a passwordless user.
/// - `out`: receives a new user handle, owned by the caller; end it with
///   `mnemo_user_logout`, which wipes the keys and frees the handle.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL handle, username or out,
/// bad UTF-8), MNEMO_STATUS_AUTH_FAILED (unknown user, wrong password, a password missing
/// or given where none is set: indistinguishable, in the same time),
/// MNEMO_STATUS_PERMISSION_DENIED (right password, but an admin disabled the account),
/// MNEMO_STATUS_STORAGE, MNEMO_STATUS_CORRUPT, MNEMO_STATUS_BUSY (no turn to derive the
/// password within 60 s, for a known user or not alike: see "password_derivations" in
/// `mnemo_instance_stats`).
/// Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_instance_login(
    instance: *mut mnemo_instance,
    username: *const c_char,
    password: *const c_char,
    out: *mut *mut mnemo_user,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out, "out")?;
        let instance = mnemo_instance::borrow(instance)?;
        let username = strings::arg(username, "username")?;
        let password = strings::optional_arg(password, "password")?;
        *out = mnemo_user::new(instance.inner.login(username, password)?).into_raw();
        Ok(())
    })
}

/// Every username, sorted, as a JSON array of strings: ["alice","bob"].
///
/// - `out_json`: receives an owned string; free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
/// MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_instance_list_users(
    instance: *const mnemo_instance,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let instance = mnemo_instance::borrow(instance)?;
        *out = strings::json_to_c(&instance.inner.list_users()?.into())?;
        Ok(())
    })
}

/// Enables sync on this instance: creates the `_sync` system database (cursors and peers)
/// and the instance's one sync engine. Idempotent: calling it again (from any thread)
/// makes nothing new and succeeds. What the users logged in now track resumes in the
/// background; if resuming it fails, sync stays enabled, the call returns the failure and
/// the next call resumes again.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL handle),
/// MNEMO_STATUS_STORAGE, or what resuming failed with (MNEMO_STATUS_BUSY,
/// MNEMO_STATUS_CORRUPT, …). Thread-safe.
///
/// `instance` is NULL or a live instance handle.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_instance_enable_sync(instance: *mut mnemo_instance) -> mnemo_status {
    guard(|| {
        mnemo_instance::borrow(instance)?.inner.enable_sync()?;
        Ok(())
    })
}

/// A new reference to the instance's sync engine.
///
/// - `out`: receives a new sync handle, owned by the caller, freed with `mnemo_sync_free`
///   (each handle is one reference; the engine lives while any handle or the instance does).
///   A handle stays safe to use and to free after `mnemo_instance_free`, but once the
///   instance is freed and each of its users logged out or freed (database handles still
///   open do not count), its calls that need the instance fail with
///   MNEMO_STATUS_INVALID_ARGUMENT ("the instance behind this sync engine is closed") and
///   its listeners answer requests with an error their peers see as MNEMO_STATUS_NETWORK.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
/// MNEMO_STATUS_SYNC_DISABLED (call `mnemo_instance_enable_sync` first). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_instance_sync(
    instance: *mut mnemo_instance,
    out: *mut *mut mnemo_sync,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out, "out")?;
        let instance = mnemo_instance::borrow(instance)?;
        *out = mnemo_sync::new(instance.inner.sync()?).into_raw();
        Ok(())
    })
}
