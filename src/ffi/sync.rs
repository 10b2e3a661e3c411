//! `mnemo_sync`: a reference to an instance's sync engine.

use std::ffi::c_char;
use std::sync::Arc;
use std::time::Duration;

use super::guard::{guard, guard_void};
use super::handle::{out_param, Handle};
use super::status::mnemo_status;
use super::strings;
use super::user::mnemo_user;
use crate::entry::EntryId;
use crate::SyncEngine;

/// One reference to an instance's sync engine. Safe to use from several threads at once.
/// A call that takes a user acts only for a session of this engine's own instance (or of
/// another instance opened on the same storage, which has the same device identity): a
/// session of an instance with another identity fails with MNEMO_STATUS_INVALID_ARGUMENT.
pub struct mnemo_sync {
    inner: Arc<SyncEngine>,
}

impl mnemo_sync {
    pub(crate) fn new(inner: Arc<SyncEngine>) -> Self {
        mnemo_sync { inner }
    }

    /// The engine this handle refers to.
    pub(super) fn engine(&self) -> &SyncEngine {
        &self.inner
    }

    /// Borrows `user` for a call on this engine: [`crate::Error::InvalidArgument`] for a session
    /// of an instance with another device identity (another storage: its databases and keys
    /// are not this engine's). Instances opened on the same storage share the identity and
    /// are accepted, as processes sharing it are.
    pub(super) unsafe fn session<'a>(
        &self,
        user: *mut mnemo_user,
    ) -> crate::Result<&'a mnemo_user> {
        let user = mnemo_user::borrow(user)?;
        if user.inner().device_id() != self.inner.device_id() {
            return Err(crate::Error::invalid(
                "the user is logged in on another instance than this sync engine's",
            ));
        }
        Ok(user)
    }
}

impl Handle for mnemo_sync {
    const NAME: &'static str = "mnemo_sync";
}

/// Serves other instances over TLS 1.3 on `addr` (e.g. "127.0.0.1:0" for any free port),
/// from the engine's own threads, until `mnemo_sync_unlisten` or until the sync engine is
/// gone (the instance and every sync handle freed); once the instance is closed (see
/// `mnemo_instance_sync`) it still accepts connections but answers every request with an
/// error. Several listeners may run at once. Every connection proves this device's id
/// (its Ed25519 key) to the client, and the client must prove its own; there is no
/// plaintext mode. Anyone can connect; a database is served only to requests signed by a
/// key with at least read permission on it. Everything a connection can hold is bounded
/// (connections in all and per address, TLS handshakes, request size and rate, time to send
/// a request, memory for bodies; see SECURITY.md for each default): over a bound, a peer
/// gets MNEMO_STATUS_BUSY or its connection is closed, and the listener keeps serving
/// others.
///
/// - `out_bound_addr`: receives the address bound, e.g. "127.0.0.1:40123"; owned, free it
///   with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not a
/// "host:port" address), MNEMO_STATUS_NETWORK (cannot bind). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_listen(
    sync: *mut mnemo_sync,
    addr: *const c_char,
    out_bound_addr: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_bound_addr, "out_bound_addr")?;
        let sync = mnemo_sync::borrow(sync)?;
        *out = strings::to_c(sync.inner.listen(strings::arg(addr, "addr")?)?)?;
        Ok(())
    })
}

/// Stops the listener this engine started at `bound_addr` (the address `mnemo_sync_listen`
/// returned): its socket is closed before this returns, so new connections are refused and
/// the port may be bound again; TLS handshakes under way are dropped, watches held are
/// answered at once, and each open connection finishes the request it is handling, if
/// any, then closes. Other listeners, tracking and rounds this instance starts go on.
/// Tickets naming that address stop working until something listens there again.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not an
/// "ip:port" address), MNEMO_STATUS_NOT_FOUND (no listener of this engine is bound
/// there, e.g. already stopped). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_unlisten(
    sync: *mut mnemo_sync,
    bound_addr: *const c_char,
) -> mnemo_status {
    guard(|| {
        let sync = mnemo_sync::borrow(sync)?;
        sync.inner.unlisten(strings::arg(bound_addr, "bound_addr")?)
    })
}

/// Connects to the peer listening at `peer_addr` in TLS 1.3, in which each side proves its
/// device id (the handshake is signed with the device's Ed25519 key), and returns the
/// peer's. `peer_addr` is "host:port", or `"ed25519:<key>@host:port"` to accept only the
/// device with that id (a pinned address; tickets pin theirs): any other device at that
/// address is refused. Every other function taking a peer address accepts the same forms.
///
/// - `out_peer_device_id`: receives the peer's verified device id, "ed25519:…"; owned, free
///   it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not a
/// "host:port" address with a port from 1 to 65535, a malformed pinned id),
/// MNEMO_STATUS_NETWORK (unreachable, timeout, a TLS handshake that fails, a peer that does
/// not prove the pinned id, or that the listener closed because it is at its connection
/// limits). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_connect(
    sync: *mut mnemo_sync,
    peer_addr: *const c_char,
    out_peer_device_id: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_peer_device_id, "out_peer_device_id")?;
        let sync = mnemo_sync::borrow(sync)?;
        *out = strings::to_c(
            sync.inner
                .connect(strings::arg(peer_addr, "peer_addr")?)?
                .to_text(),
        )?;
        Ok(())
    })
}

/// One blocking, bidirectional round for database `db_id` with the peer at `peer_addr`,
/// as `user`: exchanges tips, pulls the entries this instance lacks (in bounded pages),
/// then pushes the entries the peer lacks. Requests are signed with the user's key of
/// highest permission on the local copy, and if the peer refuses it, with each of the
/// user's other keys in turn (a key rotated: granted anew, the old one revoked); for a
/// database not here yet, with each key in turn (default first) until the peer accepts
/// one. So the peer learns the public keys tried. Every entry received is verified before
/// it becomes visible; invalid ones are dropped. Afterwards `mnemo_user_load_db` opens a
/// database pulled for the first time. Rounds with a peer go on from where the last one
/// got in each direction. If a pull that rejected nothing (or stopped busy on entries
/// waiting for parents it did not send) leaves tips the peer named missing here, or a push
/// that had nothing to send leaves the peer's tips (asked again) all here but different
/// (its storage restored from a backup: what it lost, and what waits there for lost
/// parents), the pull or the push starts again from the beginning,
/// each at most once an hour for each database with each device (so a tip this side
/// rejects, or an entry the peer refuses, brings the same listing and error back hourly).
/// Before the first entry goes out, the peer must prove that its device holds copies for a
/// key that may read the database in this copy: a holder proof, signed by that key and
/// naming the device the peer proved in the TLS handshake. A device whose users' keys were
/// all revoked, one whose users were never granted read, and one answering at a bare
/// address in place of another are pushed nothing (they may still be pulled from). An
/// instance makes a holder proof with each key of a user when that user logs in with sync
/// enabled (or is logged in when sync is enabled), adds a key, or syncs, tracks or asks
/// for a database. Calling this also records that a user here asked for the database: from
/// then on this instance's listener takes it when a peer pushes it (a listener stores no
/// database nobody here asked for), even if this round failed.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
/// malformed id or address), MNEMO_STATUS_PERMISSION_DENIED (no key of the user has
/// permission on the peer's copy, the peer refused some of our entries, the peer does not
/// hold the database and nobody there asked for it, or the peer proved no key that may read
/// it here: nothing was pushed, what was pulled is kept), MNEMO_STATUS_NOT_FOUND (neither
/// side holds the database, or this process forgot it while the round pulled it: what came
/// after is not taken), MNEMO_STATUS_CORRUPT (the peer sent
/// entries that failed verification (past 1,024 the round stops), pages that make no
/// progress, or, pulling the database for the first time, no root entry; the valid entries
/// were applied), MNEMO_STATUS_NETWORK (unreachable, a request over 30 s, the round over 10 min),
/// MNEMO_STATUS_BUSY (the peer could not take some of our entries now: a limit, or its
/// storage failed; or this instance's room for entries waiting for their parents is at a
/// limit, or 1,024 entries the peer sent this round wait for parents it did not send, or
/// the database here is at its 1,024 tips, which a writer's commit merges (or
/// brings the refused entry in with it); retry later), MNEMO_STATUS_LOGGED_OUT,
/// MNEMO_STATUS_STORAGE. After BUSY or STORAGE nothing is skipped: the next round asks for
/// and offers again every entry that was not stored, but for entries left waiting for
/// parents the peer did not send (they wait here, until their parents come from anywhere
/// or they expire). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_db(
    sync: *mut mnemo_sync,
    user: *mut mnemo_user,
    peer_addr: *const c_char,
    db_id: *const c_char,
) -> mnemo_status {
    guard(|| {
        let (sync, user, addr, db) = database_args(sync, user, peer_addr, db_id)?;
        sync.inner.sync_db(user.inner(), addr, &db).map(drop)
    })
}

/// Keeps database `db_id` in sync with the peer at `peer_addr`, as `user`, in the
/// background: first one round like `mnemo_sync_db` if the database is not here yet, then a
/// push soon after every local commit (or one another process stores in the same storage,
/// heard as `mnemo_db_subscribe` hears it), a pull soon after every commit of the peer's (a
/// pull every second as a fallback), and retries while rounds fail (the peer unreachable
/// or refusing), waiting twice as long after each failure, from 100 ms up to 5 s (and
/// sooner after a local commit); the watch backs off alike, from 0.5 s to 60 s. Rounds,
/// and the watches that hear the peer's commits, come at most every 250 ms: commits made
/// faster share one, so a track of a database written steadily sends
/// a few dozen signed requests a second at most (a peer refuses a key that sends more than
/// about 54 a second, over all its tracks and rounds, with MNEMO_STATUS_BUSY).
/// Subscriptions on the database see remote changes (remote = true). Tracking is recorded
/// in the instance: after a restart, it resumes by itself when the user logs in with sync
/// enabled (or when sync is enabled while the user is logged in), accepting only the device
/// that answered the first round that succeeded (or the one `peer_addr` pins); from that
/// round on it accepts only that device in this session too. It lasts until
/// `mnemo_sync_untrack`; it pauses while the sync engine is gone or the user is logged out.
/// Tracking the same database and peer again changes nothing. A database already here is
/// tracked even while the peer is unreachable; one not here yet must first be pulled
/// successfully. Each track keeps a connection and a watch of its own at its peer, within
/// the peer's limits per address ("max_watches_per_address" 16, "max_connections_per_address"
/// 32 and "max_requests_in_flight_per_address" 4 by default, see `mnemo_sync_limits`): past
/// about 16 tracks with one peer, rounds fail at those limits and changes arrive late (100
/// tracks with one peer, measured: 15 s for one change each to reach them all); for many
/// databases with one peer, `mnemo_sync_db` in a loop (or raising the peer's limits) does
/// better.
///
/// Returns the statuses of `mnemo_sync_db` (from the first round): MNEMO_STATUS_OK,
/// MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, …),
/// MNEMO_STATUS_PERMISSION_DENIED, MNEMO_STATUS_NOT_FOUND, MNEMO_STATUS_CORRUPT,
/// MNEMO_STATUS_NETWORK, MNEMO_STATUS_BUSY (also: as many tracks run as the sync limit
/// "max_tracks" allows, 256 by default), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE.
/// Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_track(
    sync: *mut mnemo_sync,
    user: *mut mnemo_user,
    peer_addr: *const c_char,
    db_id: *const c_char,
) -> mnemo_status {
    guard(|| {
        let (sync, user, addr, db) = database_args(sync, user, peer_addr, db_id)?;
        sync.inner.track(user.inner(), addr, &db)
    })
}

/// Stops keeping database `db_id` in sync with the peer at `peer_addr` (its host and port;
/// a pinned id is ignored) for `user`, and forgets it: it no longer resumes at login. A
/// round in progress sends no further request; this waits at most for the one in flight
/// (`request_timeout_ms`, see `mnemo_sync_limits`), also when the round is waiting for
/// change callbacks to catch up (it stops waiting), so it may be called from inside one.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
/// malformed id or address), MNEMO_STATUS_NOT_FOUND (the user does not track that database
/// with that peer), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_untrack(
    sync: *mut mnemo_sync,
    user: *mut mnemo_user,
    peer_addr: *const c_char,
    db_id: *const c_char,
) -> mnemo_status {
    guard(|| {
        let (sync, user, addr, db) = database_args(sync, user, peer_addr, db_id)?;
        sync.inner.untrack(user.inner(), addr, &db)
    })
}

/// Lists what `user` tracks (`mnemo_sync_track`), with how each is doing, as a JSON array of
/// objects ordered by database then peer: `{"db", "peer", "device", "running",
/// "last_synced_ms", "last_error"}`. "peer" is the `host:port` `mnemo_sync_untrack` takes;
/// "device" the peer's device id it accepts (pinned, or the one that answered its first
/// round that succeeded; null before any did); "running" whether it runs in this process
/// (a recorded track does not while its database is not here); "last_synced_ms" when its
/// last round succeeded, in milliseconds since the Unix epoch (null when none did since it
/// started in this process); "last_error" why its last round failed (null after a
/// success). For showing sync status: it may change as soon as it is read.
///
/// - `out_json`: receives the array; owned, free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, a session of
/// another instance), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_tracks(
    sync: *mut mnemo_sync,
    user: *mut mnemo_user,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let sync = mnemo_sync::borrow(sync)?;
        let user = sync.session(user)?;
        let list: Vec<serde_json::Value> = sync
            .inner
            .tracks(user.inner())?
            .into_iter()
            .map(|t| {
                serde_json::json!({
                    "db": t.db.to_text(),
                    "peer": t.peer,
                    "device": t.device.map(|d| d.to_text()),
                    "running": t.running,
                    "last_synced_ms": t.last_synced_ms,
                    "last_error": t.last_error,
                })
            })
            .collect();
        *out = strings::json_to_c(&serde_json::Value::Array(list))?;
        Ok(())
    })
}

/// The arguments `mnemo_sync_db`, `mnemo_sync_track` and `mnemo_sync_untrack` share,
/// checked.
unsafe fn database_args<'a>(
    sync: *mut mnemo_sync,
    user: *mut mnemo_user,
    peer_addr: *const c_char,
    db_id: *const c_char,
) -> crate::Result<(&'a mnemo_sync, &'a mnemo_user, &'a str, EntryId)> {
    let sync = mnemo_sync::borrow(sync)?;
    let user = sync.session(user)?;
    let addr = strings::arg(peer_addr, "peer_addr")?;
    let db = EntryId::parse(strings::arg(db_id, "db_id")?)?;
    Ok((sync, user, addr, db))
}

/// Waits until every local commit made before this call on a tracked database has been
/// pushed to its peer, or `timeout_ms` milliseconds pass.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL handle), MNEMO_STATUS_NETWORK
/// (timed out; the message says why the pushes are behind). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_flush(sync: *mut mnemo_sync, timeout_ms: u32) -> mnemo_status {
    guard(|| {
        mnemo_sync::borrow(sync)?
            .inner
            .flush(Duration::from_millis(timeout_ms.into()))
    })
}

/// Writes the sync engine's limits as a JSON object of numbers: each bound on what peers may
/// hold of a listener and on what rounds may take (time, memory), by name. Counts and sizes in bytes
/// are as they are; times are in milliseconds and their names end in "_ms". The defaults:
/// {"max_connections":256, "max_connections_per_address":32, "max_requests_in_flight":16,
/// "max_requests_in_flight_per_address":4, "requests_per_second_per_address":1000,
/// "request_burst_per_address":2000, "max_message_bytes":33554432,
/// "max_buffered_bytes":67108864, "max_header_bytes":16384, "idle_timeout_ms":20000,
/// "evict_idle_after_ms":1000, "body_timeout_ms":30000, "queue_timeout_ms":10000,
/// "max_tracked_addresses":4096, "max_watches":128, "max_watches_per_address":16,
/// "max_remembered_requests":262144, "max_access_requests_per_database":64, "max_access_requests":1024, "max_tracks":256,
/// "watch_timeout_ms":25000, "connect_timeout_ms":5000, "request_timeout_ms":30000,
/// "round_deadline_ms":600000, "max_received_bytes":134217728} (SECURITY.md says what each
/// stops).
/// "max_buffered_bytes": request bodies and unwritten replies counted in memory at once;
/// bodies being decoded and checked take more than they are counted for (up to about 4
/// times this at peak, measured: SECURITY.md).
/// "max_received_bytes": as a client, entries received from peers and not yet stored,
/// across all of the engine's rounds (tracks and `mnemo_sync_db` calls): each request for
/// entries takes room for the largest reply ("max_message_bytes") before it is sent and
/// gives back what the reply did not use; a round finding no room first stores what it
/// holds, then waits up to "queue_timeout_ms" and fails with MNEMO_STATUS_BUSY (a track
/// tries again at its next round). Entries being decoded and checked take about twice what
/// they are counted for.
/// "evict_idle_after_ms": a listener holding "max_connections" makes room for a new one by
/// closing an idle connection (no request being handled on it nor its reply being written,
/// or still in its handshake): the one idle longest of an address holding at least two
/// more than the newcomer's, or else the one idle longest of all if idle that long;
/// otherwise the new one is closed.
/// "max_remembered_requests": signed requests whose nonces the engine's listeners
/// remember, so that each is accepted once in its 5-minute window (about 48 bytes each; a
/// sixteenth per signing key; past it, MNEMO_STATUS_BUSY: at the least, 1024, a key may
/// sign 64 requests in 5 minutes, too few for a peer syncing every few seconds).
/// "max_access_requests_per_database"
/// and "max_access_requests": access requests (`mnemo_sync_request_access`) kept for one
/// database and in all, pending or rejected, each for 7 days; when full, a new request
/// takes the place of the oldest rejected one, or is refused with MNEMO_STATUS_BUSY.
/// "max_tracks": tracks (`mnemo_sync_track`) running at once, each on a thread of its own;
/// one more is refused with MNEMO_STATUS_BUSY, and a login resumes at most that many (the
/// others stay recorded, listed by `mnemo_sync_tracks` as not running).
///
/// - `out_json`: receives the object; owned, free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_limits(
    sync: *const mnemo_sync,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let limits = mnemo_sync::borrow(sync)?.inner.limits();
        *out = strings::to_c(strings::named_numbers_json(&limits.by_name()))?;
        Ok(())
    })
}

/// Writes what the sync engine runs now, and what its listeners refused, as a JSON object
/// of numbers: {"listeners":n, "open_connections":n, "requests_in_flight":n, "watches":n,
/// "tracks":n, "requests_refused_busy":n, "connections_refused":n}: listeners started and
/// not stopped, connections open on them (see "max_connections" in `mnemo_sync_limits`),
/// requests they are handling ("max_requests_in_flight") and watches they hold (a tracking
/// peer's wait for the next change; "max_watches"), databases kept in sync in the
/// background (one per user, database and peer; see `mnemo_sync_track`); then, counted
/// since sync was enabled over every listener, stopped ones too: requests answered
/// MNEMO_STATUS_BUSY (a limit reached: raise it with `mnemo_sync_set_limits` if these
/// grow under legitimate load; or storage that another process kept locked past the wait,
/// see "lock_timeout" in `mnemo_backend_open`) and connections closed at once because the listener or
/// their address was at its connection or request limit. Counts may change as soon as
/// they are read: for monitoring, not for decisions.
///
/// - `out_json`: receives the object; owned, free it with `mnemo_string_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_stats(
    sync: *const mnemo_sync,
    out_json: *mut *mut c_char,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out_json, "out_json")?;
        let stats = mnemo_sync::borrow(sync)?.inner.stats();
        *out = strings::to_c(strings::named_numbers_json(&stats))?;
        Ok(())
    })
}

/// Changes some of the sync engine's limits: `limits_json` is a JSON object naming each
/// limit to change (the names `mnemo_sync_limits` lists) with its new value, a whole
/// number; the others keep theirs. The change is all or nothing. Listeners started
/// afterwards and every round started afterwards use the new limits; listeners already
/// running keep theirs, except "max_remembered_requests", one memory shared by every
/// listener, which applies at once (lowered, what it holds beyond goes as it expires), and
/// the access-request limits, which apply to the next request (requests kept beyond a
/// lowered bound stay until approved, replaced or expired), and "max_tracks", which applies
/// to the next track and login (lowered, it stops no track running). Counts (connections,
/// requests in flight, watches, addresses and requests remembered, tracks) must be from 1
/// to 1048576
/// ("max_remembered_requests" from 1024), access requests from 1 to 65536, requests per
/// second and bursts from 1 to 4294967295, times from 1 ms to a day (86400000),
/// "max_message_bytes" from 22020096 (a batch holding the largest entry) to 33554432 (the
/// protocol's largest message), "max_buffered_bytes" and "max_received_bytes" at least
/// "max_message_bytes" and at most 1 TiB, "max_header_bytes" from 8192 to 1048576, and
/// "watch_timeout_ms" less than
/// "request_timeout_ms". A listener runs up to its "max_requests_in_flight" handlers at
/// once, on threads made as they are needed (at most 512 per engine, over all its
/// listeners) and ended after 10 s without work.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not a
/// JSON object of whole numbers, an unknown name or one named twice, a value out of its
/// bounds; nothing changed). Thread-safe.
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_sync_set_limits(
    sync: *mut mnemo_sync,
    limits_json: *const c_char,
) -> mnemo_status {
    guard(|| {
        let sync = mnemo_sync::borrow(sync)?;
        let changes = strings::limits_arg(limits_json, "limits_json")?;
        sync.inner.set_limits_by_name(&changes).map(drop)
    })
}

/// Drops this reference to the sync engine. NULL is a no-op. Other references and the
/// instance keep the engine alive; when the last goes, listeners and tracking stop. Freed
/// after `mnemo_instance_free` as the instance's last handle, it waits for queued change
/// callbacks as `mnemo_instance_free` says.
/// Thread-safe, as long as no other thread is using this handle.
#[no_mangle]
pub unsafe extern "C" fn mnemo_sync_free(sync: *mut mnemo_sync) {
    guard_void(|| mnemo_sync::free(sync))
}
