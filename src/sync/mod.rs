//! Sync between instances over HTTP/1.1.
//!
//! Enabling sync gives the instance one [`Sync`], shared by reference count. It can listen
//! (serve other instances), prove device identities to peers ([`Sync::connect`]), bring one
//! database up to date both ways ([`Sync::sync_db`]), and keep databases in sync in the
//! background ([`Sync::track`]). Every entry received is verified (signature, then
//! permission) before it becomes visible; a database's entries are served only to requests
//! signed, freshly, by a key with at least read on it.

mod client;
mod replay;
mod server;
mod track;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use crate::crypto::PublicKey;
use crate::database::Database;
use crate::entry::EntryId;
use crate::error::{Error, Result};
use crate::instance::Shared;
use crate::user::User;

pub use client::SyncReport;

/// The instance's sync engine. Thread-safe; shared by `Arc`.
pub struct Sync {
    instance: Weak<Shared>,
    device: PublicKey,
    /// `_sync`: cursors per peer and database, and the peers seen.
    state_db: Database,
    agent: ureq::Agent,
    replay: replay::ReplayGuard,
    challenges: Mutex<HashMap<[u8; 32], u64>>,
    peers: Mutex<HashMap<String, PublicKey>>,
    servers: Mutex<Vec<server::Listener>>,
    tracks: Mutex<Vec<Arc<track::Track>>>,
    /// Signalled whenever a background round ends, for [`Sync::flush`].
    progress: (Mutex<()>, Condvar),
    me: Weak<Sync>,
}

impl std::fmt::Debug for Sync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sync")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Sync {
    pub(crate) fn new(instance: &Arc<Shared>, state_db: Database) -> Arc<Sync> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        Arc::new_cyclic(|me| Sync {
            instance: Arc::downgrade(instance),
            device: instance.system.device_key,
            state_db,
            agent,
            replay: replay::ReplayGuard::default(),
            challenges: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            servers: Mutex::new(Vec::new()),
            tracks: Mutex::new(Vec::new()),
            progress: (Mutex::new(()), Condvar::new()),
            me: me.clone(),
        })
    }

    /// The device identity this sync engine speaks for.
    pub fn device_id(&self) -> PublicKey {
        self.device
    }

    fn instance(&self) -> Result<Arc<Shared>> {
        self.instance
            .upgrade()
            .ok_or_else(|| Error::invalid("the instance behind this sync engine is closed"))
    }

    /// Serves other instances on `addr` (e.g. "127.0.0.1:0") from background threads until
    /// the engine is dropped; returns the address bound.
    pub fn listen(&self, addr: &str) -> Result<String> {
        check_addr(addr, true)?;
        let listener = server::Listener::start(addr, self.me.clone())?;
        let bound = listener.addr();
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(listener);
        Ok(bound)
    }

    /// Proves identities with the peer at `addr` (each side signs the other's challenge with
    /// its device key) and returns the peer's device id.
    pub fn connect(&self, addr: &str) -> Result<PublicKey> {
        check_addr(addr, false)?;
        self.handshake(addr)
    }

    /// One round with the peer at `addr` for database `db`, as `user`: pull what the peer
    /// has and this instance lacks, then push the reverse. Entries arrive verified; the
    /// peer's rejections and entries that fail verification are reported as errors after
    /// everything valid was applied.
    pub fn sync_db(&self, user: &User, addr: &str, db: &EntryId) -> Result<SyncReport> {
        check_addr(addr, false)?;
        let key = self.key_for(user, db)?;
        self.round(&user.session_handle(), &key, addr, db)?
            .into_result()
    }

    /// Keeps database `db` in sync with the peer at `addr` in the background, as `user`:
    /// pushes soon after every local commit, pulls every second, retries with backoff while
    /// the peer is down. Lasts until the engine is dropped or the session logs out. Tracking
    /// the same database and peer again changes nothing. A database not here yet is first
    /// pulled (that round must succeed); one already here is tracked even while the peer
    /// is down.
    pub fn track(&self, user: &User, addr: &str, db: &EntryId) -> Result<()> {
        check_addr(addr, false)?;
        let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        if tracks.iter().any(|t| t.is_for(addr, db)) {
            return Ok(());
        }
        let key = self.key_for(user, db)?;
        if !self.instance()?.has_database(*db)? {
            // Bring the database here first, so it can be opened and watched.
            self.round(&user.session_handle(), &key, addr, db)?
                .into_result()?;
        }
        let handle = user.load_db(db)?;
        tracks.push(track::Track::start(
            self.me.clone(),
            user.session_handle(),
            key,
            addr,
            &handle,
        )?);
        Ok(())
    }

    /// Waits until every local commit made before this call has been pushed by the
    /// background tracking, or `timeout` passes ([`Error::Network`]).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        let tracks: Vec<Arc<track::Track>> = self
            .tracks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut targets = Vec::with_capacity(tracks.len());
        for t in tracks {
            let target = self.local_position(t.db())?;
            t.poke();
            targets.push((t, target));
        }
        let (lock, signal) = &self.progress;
        let mut guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let behind: Vec<&Arc<track::Track>> = targets
                .iter()
                .filter(|(t, target)| t.pushed() < *target)
                .map(|(t, _)| t)
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                let reason = behind
                    .iter()
                    .find_map(|t| t.last_error())
                    .unwrap_or_else(|| "still pushing".into());
                return Err(Error::Network(format!(
                    "{} tracked database(s) not pushed within the timeout ({reason})",
                    behind.len()
                )));
            }
            guard = signal
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// How far this instance's storage of `db` goes (the newest local position).
    fn local_position(&self, db: &EntryId) -> Result<u64> {
        self.instance()?.registry.backend().last_position(db)
    }

    fn notify_progress(&self) {
        let (lock, signal) = &self.progress;
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        signal.notify_all();
    }

    /// The key `user` signs requests on `db` with: the best one it holds on the local copy,
    /// or its default key for a database not here yet (the owner grants that one).
    fn key_for(&self, user: &User, db: &EntryId) -> Result<PublicKey> {
        match user.signing_key(db) {
            Ok(key) => Ok(key),
            Err(e) if e.is_not_found() => user.default_key(),
            Err(e) => Err(e),
        }
    }
}

/// Fails with [`Error::InvalidArgument`] unless `addr` is `host:port` (port 0 only to
/// listen on any free port).
fn check_addr(addr: &str, listening: bool) -> Result<()> {
    let bad = || Error::invalid(format!("'{addr}' is not a host:port address"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.is_empty()
        || host.chars().any(|c| c.is_whitespace() || c == '/')
        || (host.contains(':') && !bracketed)
        || (port == 0 && !listening)
    {
        return Err(bad());
    }
    Ok(())
}

impl Drop for Sync {
    fn drop(&mut self) {
        let tracks = std::mem::take(&mut *self.tracks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tracks {
            t.stop();
        }
        let servers = std::mem::take(&mut *self.servers.lock().unwrap_or_else(|p| p.into_inner()));
        for s in servers {
            s.stop();
        }
    }
}
