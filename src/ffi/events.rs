//! `mnemo_events`: a database's changes queued for the caller to read, without callbacks.

use std::ffi::{c_char, c_int};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::database::mnemo_database;
use super::guard::{guard, guard_void};
use super::handle::{out_param, Handle};
use super::status::mnemo_status;
use super::strings;
use crate::database::{Event, Events};
use crate::error::Error;

/// A watcher's queue of changes (see `mnemo_db_watch`). Thread-safe: several threads may
/// call `mnemo_events_next` on it at once (each event goes to exactly one of them); no call
/// may still be running on it when it is freed.
pub struct mnemo_events {
    inner: Events,
}

impl Handle for mnemo_events {
    const NAME: &'static str = "mnemo_events";
}

/// Starts watching a database without a callback: every change from now on, each local
/// commit and each entry applied from sync or stored by another process (as
/// `mnemo_db_subscribe` hears them), is queued in the returned handle, for the
/// caller to take with `mnemo_events_next` on a thread of its own choosing, or to wait for
/// through the descriptor of `mnemo_events_fd`. Changes are queued in the order they were
/// made to the database, also when several threads commit at once.
///
/// The queue holds at most 1024 changes. When it is full, later changes are not queued but
/// counted, and `mnemo_events_next` reports the count, in order, as `{"overflow":n}`: a
/// lost change is always reported, never silently dropped.
///
/// - `out`: receives a new handle, owned by the caller, freed with `mnemo_events_free`. As a
///   subscription, it goes on hearing changes (their ids) after read is revoked from the
///   keys of `db`'s session: free it when you revoke.
///
/// An instance keeps at most 1024 watchers at once by default, across its databases (the
/// "watchers" limit of `mnemo_instance_set_limits`; the count is "watchers" of
/// `mnemo_instance_stats`): free those you no longer read.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL db or out),
/// MNEMO_STATUS_PERMISSION_DENIED (read was revoked), MNEMO_STATUS_BUSY (the instance has
/// as many watchers as its "watchers" limit allows), MNEMO_STATUS_STORAGE,
/// MNEMO_STATUS_INTERNAL (the system could not make the descriptor, or the thread that
/// hears other processes). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_db_watch(
    db: *mut mnemo_database,
    out: *mut *mut mnemo_events,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out, "out")?;
        let events = mnemo_database::borrow(db)?.database().watch()?;
        *out = mnemo_events { inner: events }.into_raw();
        Ok(())
    })
}

/// Takes the oldest pending event, waiting up to `timeout_ms` milliseconds for one
/// (0: do not wait).
///
/// - `out_json`: receives an owned string (free it with `mnemo_string_free`), or NULL when
///   no event came within `timeout_ms`. An event is either a change,
///   `{"db":"sha256:…","entry":"sha256:…","origin":"local","remote":false}` (`origin`:
///   "local" for a commit through this instance, "sync" for an entry sync brought,
///   "other_process" for one another process stored in the same SQLite file or PostgreSQL
///   database; `remote` is false for "local", true otherwise), or `{"overflow":n}`: n
///   changes were dropped here because the queue was full.
///
/// Returns MNEMO_STATUS_OK (with an event, or NULL on timeout), MNEMO_STATUS_INVALID_ARGUMENT
/// (NULL events or out_json). Thread-safe: see `mnemo_events`.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_events_next(
    events: *mut mnemo_events,
    timeout_ms: u32,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let events = mnemo_events::borrow(events)?;
        let json = match events.inner.next(Duration::from_millis(timeout_ms.into())) {
            None => return Ok(()),
            Some(Event::Change(change)) => serde_json::json!({
                "db": change.db.to_text(),
                "entry": change.entry.to_text(),
                "origin": change.origin.as_str(),
                "remote": change.remote(),
            }),
            Some(Event::Overflow(n)) => serde_json::json!({ "overflow": n }),
        };
        *out = strings::json_to_c(&json)?;
        Ok(())
    })
}

/// A file descriptor that is readable exactly while events are pending, for poll, select,
/// epoll, asyncio or libuv to wait on (then call `mnemo_events_next`). It is a socket, not
/// an eventfd: only wait for it to be readable; never read from, write to or close it.
/// It stays valid until `mnemo_events_free`.
///
/// - `out_fd`: receives the descriptor; set to -1 on failure.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL events or out_fd).
/// Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_events_fd(
    events: *const mnemo_events,
    out_fd: *mut c_int,
) -> mnemo_status {
    guard(|| {
        let out = out_fd
            .as_mut()
            .ok_or_else(|| Error::invalid("out-parameter 'out_fd' is NULL"))?;
        *out = -1;
        *out = mnemo_events::borrow(events)?.inner.as_raw_fd();
        Ok(())
    })
}

/// Stops the watch and frees the handle, with any events still pending; its descriptor is
/// closed, and its place under the instance's "watchers" limit given back (also after the
/// database handle and the instance were freed). NULL is a no-op. Never waits for anything.
///
/// `events` is NULL or a live handle that is not used again. Thread-safe, as long as no
/// other thread is using `events`.
#[no_mangle]
pub unsafe extern "C" fn mnemo_events_free(events: *mut mnemo_events) {
    guard_void(|| mnemo_events::free(events))
}
