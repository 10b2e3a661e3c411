//! Sync between instances over HTTP/1.1 in TLS 1.3.
//!
//! Enabling sync gives the instance one [`SyncEngine`], shared by reference count. It can
//! listen (serve other instances), prove device identities to peers (every connection's
//! TLS handshake; [`SyncEngine::connect`]), bring one database up to date both ways
//! ([`SyncEngine::sync_db`]), and keep databases in sync in the background
//! ([`SyncEngine::track`]). Every entry received is verified (signature, then permission)
//! before it becomes visible; a database's entries are served only to requests signed,
//! freshly, by a key with at least read on it.
//!
//! This room never imports `instance` or `user`: it works on the instance's databases
//! ([`Registry`]), signs as the device through its key ring, and acts for whoever asks
//! through a [`Requester`].

mod address;
mod budget;
pub mod handlers;
pub mod holders;
mod limits;
mod net;
mod progress;
mod received;
mod replay;
mod requests;
mod round;
mod sharing;
mod state;
mod ticket;
mod track;
mod tracking;
mod watchers;
pub mod wire;

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::Duration;

use crate::crypto::{KeyRing, PublicKey};
use crate::database::{Database, Registry, WaitingBudget};
use crate::entry::EntryId;
use crate::error::{Error, Result};

pub use address::PeerAddr;
pub use holders::HolderProofs;
pub use limits::{
    Limits, HEADER_LIMITS, MAX_ACCESS_REQUESTS_LIMIT, MAX_BUFFERED_LIMIT, MAX_COUNT_LIMIT,
    MAX_TIME_LIMIT, MIN_MESSAGE_LIMIT, MIN_REMEMBERED_REQUESTS,
};
pub use net::tls::{peer_device, server_name, TlsIdentity};
pub use requests::{request_id, RequestRecord, RequestState, MAX_REQUEST_CHANGES};
pub use round::SyncReport;
pub use ticket::{Ticket, MAX_ADDRESSES};
pub use tracking::{forget_recorded, TrackStatus};

/// Who asks a peer for a database: a logged-in user, as far as sync needs to know one.
pub trait Requester {
    /// The keys requests are signed with. Sync keeps it for background tracking; it stops
    /// signing (and tracking ends) when the session logs out.
    fn key_ring(&self) -> Arc<dyn KeyRing>;

    /// Records that database `db`, now stored here, is kept in sync for this requester (a
    /// user adds it to the databases it tracks).
    fn keep(&self, db: &EntryId) -> Result<()>;

    /// A stable id of the requester (a user's account id): what it tracks is recorded
    /// under it and resumed for it.
    fn requester_id(&self) -> String;
}

/// How long dropping an engine waits for its handlers in progress to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// The most peer devices whose cursors `_sync` keeps (a record of about 300 bytes each, and
/// a cursor per database and direction): rounds with further devices start from the
/// beginning each time, slower, never wrong. Honest devices are few; a server presenting a
/// new device key at each connection is not. (Records earlier builds made of every device
/// met count too.)
const MAX_PEERS_WITH_CURSORS: usize = 16_384;

/// The instance's sync engine. Thread-safe; shared by `Arc`.
pub struct SyncEngine {
    registry: Weak<Registry>,
    /// The device's key: TLS handshakes prove it, as a listener and as a client; it signs
    /// tickets.
    device: Arc<dyn KeyRing>,
    device_key: PublicKey,
    identity: net::tls::TlsIdentity,
    /// `_sync`: cursors per peer and database, the peers seen, what users track.
    state: state::SyncState,
    /// `_sync` too: the proofs that this device holds copies for its users' keys.
    holders: HolderProofs,
    /// `_sync` too: access requests and auto-approve policies.
    requests: requests::Requests,
    /// Sessions that can sign auto-approved grants.
    approvers: Mutex<sharing::Approvers>,
    /// The addresses tickets name, if set ([`SyncEngine::advertise`]).
    advertised: Mutex<Vec<String>>,
    /// Runs listeners and client requests; `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    limits: RwLock<Limits>,
    /// Room for the entries rounds hold, as the limits in force allow (made again when
    /// they change).
    received: Mutex<Arc<received::ReceivedBudget>>,
    replay: replay::ReplayGuard,
    /// The databases a listener's watches wait on.
    watchers: watchers::Watchers,
    /// The peers recorded in `_sync` (read at first use).
    recorded_peers: Mutex<Option<HashSet<PublicKey>>>,
    listeners: Mutex<Vec<net::listener::Listener>>,
    /// What the listeners refused since the engine started.
    refusals: Arc<net::listener::Refusals>,
    tracks: Mutex<Vec<Arc<track::Track>>>,
    /// Signalled whenever a background round ends, for [`SyncEngine::flush`].
    progress: (Mutex<()>, Condvar),
    me: Weak<SyncEngine>,
}

impl std::fmt::Debug for SyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("device", &self.device_key)
            .finish_non_exhaustive()
    }
}

/// How often the sweep of waiting entries looks whether its period (which follows the
/// time limit in force, changed at any moment) has passed.
const SWEEP_TICK: Duration = Duration::from_millis(100);

/// Lets the entries peers sent that waited past their time go in every database, also
/// those no entry arrives in again (each database otherwise drops its own only when it is
/// next used), until the instance or the engine's runtime is gone. Holds the budget, not
/// the registry: the instance is never let go on the runtime's threads; the sweep itself
/// (freeing many entries takes a while) runs on the blocking pool.
async fn sweep_waiting_entries(budget: Weak<WaitingBudget>) {
    let mut swept = std::time::Instant::now();
    loop {
        tokio::time::sleep(SWEEP_TICK).await;
        let Some(budget) = budget.upgrade() else {
            return;
        };
        if swept.elapsed() >= budget.sweep_period() {
            swept = std::time::Instant::now();
            let _ = tokio::task::spawn_blocking(move || budget.sweep_expired()).await;
        }
    }
}

impl SyncEngine {
    /// The sync engine of the instance whose databases `registry` holds, speaking for the
    /// device (`device_key`, held by `device`) and keeping its state in `state_db` (`_sync`).
    /// It holds the registry weakly: once the instance is gone, requests fail.
    pub(crate) fn new(
        registry: &Arc<Registry>,
        device: Arc<dyn KeyRing>,
        device_key: PublicKey,
        state_db: Database,
    ) -> Result<Arc<SyncEngine>> {
        let limits = Limits::default();
        let runtime = net::runtime()?;
        let identity = net::tls::TlsIdentity::new(device.clone(), device_key)?;
        let state = state::SyncState::new(state_db.clone());
        state.drop_records_of_earlier_builds()?;
        runtime.spawn(sweep_waiting_entries(Arc::downgrade(
            registry.waiting_budget(),
        )));
        Ok(Arc::new_cyclic(|me| SyncEngine {
            registry: Arc::downgrade(registry),
            device,
            device_key,
            identity,
            requests: requests::Requests::new(state_db.clone()),
            holders: HolderProofs::new(state_db.clone(), device_key),
            state,
            approvers: Mutex::new(Vec::new()),
            advertised: Mutex::new(Vec::new()),
            runtime: Some(runtime),
            received: Mutex::new(Arc::new(received::ReceivedBudget::new(
                limits.max_received_bytes,
            ))),
            limits: RwLock::new(limits),
            replay: replay::ReplayGuard::default(),
            watchers: watchers::Watchers::default(),
            recorded_peers: Mutex::new(None),
            listeners: Mutex::new(Vec::new()),
            refusals: Arc::default(),
            tracks: Mutex::new(Vec::new()),
            progress: (Mutex::new(()), Condvar::new()),
            me: me.clone(),
        }))
    }

    /// The device identity this sync engine speaks for.
    pub fn device_id(&self) -> PublicKey {
        self.device_key
    }

    fn registry(&self) -> Result<Arc<Registry>> {
        self.registry
            .upgrade()
            .ok_or_else(|| Error::invalid("the instance behind this sync engine is closed"))
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime lives until the engine is dropped")
    }

    /// The limits in force (see [`Limits`] for the defaults).
    pub fn limits(&self) -> Limits {
        self.limits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The room for received entries that the limits in force allow (see
    /// [`received`]); rounds holding room of an earlier budget keep it until they let go.
    fn received_budget(&self) -> Arc<received::ReceivedBudget> {
        let bytes = self.limits().max_received_bytes;
        let mut budget = self.received.lock().unwrap_or_else(|p| p.into_inner());
        if budget.bytes() != bytes {
            *budget = Arc::new(received::ReceivedBudget::new(bytes));
        }
        budget.clone()
    }

    /// Replaces the limits: listeners started afterwards and every later round use them.
    /// [`Error::InvalidArgument`] unless [`Limits::validate`] accepts them.
    pub fn set_limits(&self, limits: Limits) -> Result<()> {
        limits.validate()?;
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = limits;
        Ok(())
    }

    /// Sets the limits named in `changes` (as [`Limits::by_name`] names them), keeping the
    /// others, as one change: none is set unless all are valid together. Returns the limits
    /// now in force.
    pub fn set_limits_by_name<S: AsRef<str>>(&self, changes: &[(S, u64)]) -> Result<Limits> {
        let mut limits = self.limits.write().unwrap_or_else(|p| p.into_inner());
        let mut changed = limits.clone();
        for (name, value) in changes {
            changed.set_by_name(name.as_ref(), *value)?;
        }
        changed.validate()?;
        *limits = changed.clone();
        Ok(changed)
    }

    /// Serves other instances on `addr` (e.g. "127.0.0.1:0") until [`SyncEngine::unlisten`]
    /// or until the engine is dropped; returns the address bound. Every resource a
    /// connection can hold is bounded by the engine's [`Limits`].
    pub fn listen(&self, addr: &str) -> Result<String> {
        address::check_host_port(addr, true)?;
        let listener = net::listener::Listener::start(
            self.runtime(),
            addr,
            &self.identity,
            self.me.clone(),
            self.limits(),
            self.refusals.clone(),
        )?;
        let bound = listener.addr();
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(listener);
        Ok(bound)
    }

    /// Stops the listener bound at `bound` (as [`SyncEngine::listen`] returned it): its
    /// socket is closed before this returns (its port may be bound again), handshakes under
    /// way are dropped, and each open connection finishes the request it is handling, if
    /// any, then closes. [`Error::NotFound`] if no listener of this engine is bound there;
    /// [`Error::InvalidArgument`] if `bound` is not an IP address and port.
    pub fn unlisten(&self, bound: &str) -> Result<()> {
        let wanted: std::net::SocketAddr = bound
            .parse()
            .map_err(|_| Error::invalid(format!("{bound:?} is not a bound address (ip:port)")))?;
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let at = listeners
            .iter()
            .position(|l| l.socket_addr() == wanted)
            .ok_or_else(|| {
                Error::NotFound(format!("no listener of this engine is bound at {bound}"))
            })?;
        let listener = listeners.remove(at);
        drop(listeners);
        listener.stop_and_wait();
        Ok(())
    }

    /// Ends a watch admitted by [`handlers::admit_watch`]: its database stops being followed
    /// if nothing else waits on it.
    pub fn end_watch(&self, watch: handlers::Watch) {
        let db = watch.db;
        drop(watch);
        self.watchers.release(&db);
    }

    /// What this engine runs now, by name: `listeners`, `open_connections` (on them all),
    /// `requests_in_flight` (being handled by them all), `watches` (held by them all),
    /// `tracks` (databases kept in sync in the background, per user and peer); and what its
    /// listeners refused since it started: `requests_refused_busy` (answered
    /// `MNEMO_STATUS_BUSY`: a limit reached, or storage another process kept locked past
    /// the wait) and `connections_refused` (closed at a connection or handshake
    /// limit).
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        use net::listener::Listener;
        let (listening, connections, in_flight, watches) = {
            let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            let sum = |count: fn(&Listener) -> usize| listeners.iter().map(count).sum::<usize>();
            (
                listeners.len(),
                sum(Listener::open_connections),
                sum(Listener::requests_in_flight),
                sum(Listener::watches),
            )
        };
        let tracks = self
            .tracks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|t| t.is_running())
            .count();
        vec![
            ("listeners", listening as u64),
            ("open_connections", connections as u64),
            ("requests_in_flight", in_flight as u64),
            ("watches", watches as u64),
            ("tracks", tracks as u64),
            ("requests_refused_busy", self.refusals.busy()),
            ("connections_refused", self.refusals.connections()),
        ]
    }

    /// Opens a TLS connection to the peer at `addr` (`host:port`, or
    /// `ed25519:<key>@host:port` to accept only that device), in which each side proves
    /// its device key, and returns the peer's device id.
    pub fn connect(&self, addr: &str) -> Result<PublicKey> {
        let addr = PeerAddr::parse(addr)?;
        let limits = self.limits();
        let peer = net::client::PeerConnection::new(self.runtime(), &addr, &self.identity, &limits)
            .peer()?;
        Ok(peer)
    }

    /// Moves the cursor of `peer`, `db`, `direction` to `position`, recording the peer in
    /// `_sync` first if it is not yet: unless [`MAX_PEERS_WITH_CURSORS`] are, then nothing
    /// is kept (the next round with that device starts from the beginning). Nothing is
    /// recorded of a device before a round with it made progress: a server that presented a
    /// new device key at each connection and failed every round added a record each time.
    fn save_cursor(
        &self,
        peer: &PublicKey,
        db: &EntryId,
        direction: state::Direction,
        position: u64,
    ) -> Result<()> {
        if self.peer_recorded(peer)? {
            self.state.save_cursor(peer, db, direction, position)?;
        }
        Ok(())
    }

    /// Whether `peer` is recorded in `_sync`, recording it unless the records are full.
    /// (The set is read once; its lock is not held while a record is written, so that
    /// rounds with known devices do not wait for it.)
    fn peer_recorded(&self, peer: &PublicKey) -> Result<bool> {
        let recorded = || {
            self.recorded_peers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        };
        {
            let mut recorded = recorded();
            let known = match recorded.as_mut() {
                Some(known) => known,
                None => recorded.insert(self.state.peers()?.into_iter().collect()),
            };
            if known.contains(peer) {
                return Ok(true);
            }
            if known.len() >= MAX_PEERS_WITH_CURSORS {
                return Ok(false);
            }
        }
        self.state.peer_seen(peer)?;
        if let Some(known) = recorded().as_mut() {
            known.insert(*peer);
        }
        Ok(true)
    }

    /// One round with the peer at `addr` for database `db`, as `requester`: pull what the
    /// peer has and this instance lacks, then push the reverse. Entries arrive verified; the
    /// peer's rejections and entries that fail verification are reported as errors after
    /// everything valid was applied.
    pub fn sync_db(
        &self,
        requester: &dyn Requester,
        addr: &str,
        db: &EntryId,
    ) -> Result<SyncReport> {
        self.sync_db_at(requester, &PeerAddr::parse(addr)?, db)
    }

    /// [`SyncEngine::sync_db`] with an address already parsed.
    fn sync_db_at(
        &self,
        requester: &dyn Requester,
        addr: &PeerAddr,
        db: &EntryId,
    ) -> Result<SyncReport> {
        self.asked_for(db, requester)?;
        let keys = requester.key_ring();
        let candidates = self.request_keys(&*keys, db)?;
        self.round(&*keys, &candidates, addr, db, None)?
            .into_result()
    }

    /// Records that a local user, `requester`, asked for database `db`: it may then arrive
    /// by push, and this device shows proofs by each of the user's keys that it holds
    /// copies for them (see [`holders`]).
    fn asked_for(&self, db: &EntryId, requester: &dyn Requester) -> Result<()> {
        self.state.want(db)?;
        self.prove_holding(&requester.requester_id(), &*requester.key_ring())
    }

    /// Makes this device's holder proof with each key of `keys`, a session of account
    /// `owner`, that has none yet (and is not gone): peers push a device only what a key
    /// with a proof may read there.
    pub fn prove_holding(&self, owner: &str, keys: &dyn KeyRing) -> Result<()> {
        self.holders.make(owner, keys)
    }

    /// How far this instance's storage of `db` goes (the newest local position).
    fn local_position(&self, db: &EntryId) -> Result<u64> {
        self.registry()?.backend().last_position(db)
    }

    fn notify_progress(&self) {
        let (lock, signal) = &self.progress;
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        signal.notify_all();
    }

    /// The keys to sign requests on `db` with, of those `keys` holds, in the order to try
    /// them. For a database here: first the one with the highest permission on the local
    /// copy (or the default key if none has any), then the others, default first: the copy
    /// may not know yet of a grant to another key, nor the peer of this one's (a key
    /// rotated: granted anew, the old one revoked). For a database not here yet: every key,
    /// default first, since this side cannot know which one its owner granted. A round
    /// tries them in turn until the peer accepts one, so the peer sees the keys tried.
    pub(super) fn request_keys(&self, keys: &dyn KeyRing, db: &EntryId) -> Result<Vec<PublicKey>> {
        let mut held = keys.public_keys()?;
        let default = *held
            .first()
            .ok_or_else(|| Error::Internal("a key ring holds no key".into()))?;
        let registry = self.registry()?;
        if !registry.exists(db)? {
            return Ok(held);
        }
        let best = registry.core(*db).best_key(&held)?;
        let first = best.map_or(default, |(key, _)| key);
        held.retain(|k| *k != first);
        held.insert(0, first);
        Ok(held)
    }
}

impl Drop for SyncEngine {
    fn drop(&mut self) {
        let tracks = std::mem::take(&mut *self.tracks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tracks {
            t.stop();
        }
        let listeners =
            std::mem::take(&mut *self.listeners.lock().unwrap_or_else(|p| p.into_inner()));
        for l in &listeners {
            l.stop();
        }
        if let Some(runtime) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // On one of a runtime's own threads (a handler held the last reference):
                // waiting for the runtime's threads here would wait for this one.
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(SHUTDOWN_WAIT);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::crypto::PrivateKey;
    use state::Direction;

    #[test]
    fn cursors_are_kept_for_a_bounded_number_of_peer_devices() {
        let registry = Arc::new(Registry::new(Arc::new(MemoryBackend::new())));
        let device = Arc::new(PrivateKey::generate().unwrap());
        let device_key = device.public_key();
        let state_db = registry
            .create("_sync", device.clone(), device_key)
            .unwrap();
        let engine = SyncEngine::new(&registry, device, device_key, state_db).unwrap();
        let db = EntryId::of_bytes(b"a database");
        let peers: Vec<PublicKey> = (0..=MAX_PEERS_WITH_CURSORS)
            .map(|_| PrivateKey::generate().unwrap().public_key())
            .collect();
        for peer in &peers {
            engine.save_cursor(peer, &db, Direction::Pull, 7).unwrap();
        }
        let cursor = |peer: &PublicKey| engine.state.cursor(peer, &db, Direction::Pull).unwrap();
        let (kept, beyond) = peers.split_at(MAX_PEERS_WITH_CURSORS);
        assert!(kept.iter().all(|peer| cursor(peer) == 7));
        assert_eq!(cursor(&beyond[0]), 0);
        assert_eq!(engine.state.peers().unwrap().len(), MAX_PEERS_WITH_CURSORS);
        // A device recorded before still moves its cursor.
        engine
            .save_cursor(&kept[0], &db, Direction::Pull, 9)
            .unwrap();
        assert_eq!(cursor(&kept[0]), 9);
    }
}
