//! Background tracking, as the engine manages it: starting and stopping [`Track`]s, recording
//! them in `_sync` so they resume when their user logs in again, and waiting for pushes.

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use super::state::SyncState;
use super::track::Track;
use super::{PeerAddr, Requester, SyncEngine};
use crate::crypto::{KeyRing, PublicKey};
use crate::database::Database;
use crate::entry::EntryId;
use crate::error::{Error, Result};

/// A database a user tracks, as [`SyncEngine::tracks`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackStatus {
    /// The database.
    pub db: EntryId,
    /// The peer's `host:port` (what [`SyncEngine::untrack`] takes).
    pub peer: String,
    /// The device accepted as the peer: the one the tracked address pins, else the one
    /// that answered the first round that succeeded; `None` before any did.
    pub device: Option<PublicKey>,
    /// Whether it runs in this process now. A recorded track does not when its database
    /// was not here at login, or once its thread stopped.
    pub running: bool,
    /// When its last round succeeded, in milliseconds since the Unix epoch; `None` when
    /// none did since it started in this process.
    pub last_synced_ms: Option<u64>,
    /// Why its last round failed; `None` when it succeeded or none ended yet.
    pub last_error: Option<String>,
}

impl TrackStatus {
    /// A track of `db` with the peer at `addr`, as recorded, with nothing running.
    fn not_running(db: EntryId, addr: PeerAddr) -> Self {
        TrackStatus {
            db,
            peer: addr.host_port,
            device: addr.device,
            running: false,
            last_synced_ms: None,
            last_error: None,
        }
    }
}

impl SyncEngine {
    /// What `requester` tracks, recorded or running, with how each is doing: one entry per
    /// database and peer, ordered by database then peer.
    pub fn tracks(&self, requester: &dyn Requester) -> Result<Vec<TrackStatus>> {
        requester.key_ring().ensure_usable()?;
        let who = requester.requester_id();
        let running: Vec<Arc<Track>> = self
            .tracks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|t| t.is_running() && t.who() == who)
            .cloned()
            .collect();
        let mut listed: Vec<TrackStatus> = self
            .state
            .tracks_of(&who)?
            .into_iter()
            .map(|(db, addr)| TrackStatus::not_running(db, addr))
            .collect();
        for track in &running {
            let addr = track.addr();
            let at = listed
                .iter()
                .position(|s| s.db == *track.db() && s.peer == addr.host_port)
                .unwrap_or_else(|| {
                    listed.push(TrackStatus::not_running(*track.db(), addr.clone()));
                    listed.len() - 1
                });
            let status = &mut listed[at];
            status.device = track.device().or(status.device);
            status.running = true;
            status.last_synced_ms = track.synced_at_ms();
            status.last_error = track.last_error();
        }
        listed.sort_by(|a, b| (a.db, &a.peer).cmp(&(b.db, &b.peer)));
        Ok(listed)
    }

    /// Keeps database `db` in sync with the peer at `addr` in the background, as `requester`:
    /// pushes soon after every local commit (or one another process stores in this storage),
    /// learns of the peer's commits as they happen (a pull every second as a fallback), retries
    /// with backoff while the peer is down. A database not here yet is first pulled (that round
    /// must succeed); one already here is tracked even while the peer is down. Tracking is
    /// recorded: when the same user logs in again with sync enabled (after a restart too), it
    /// resumes, accepting only the device that answered now (or the one `addr` pins; for a
    /// database already here, the device that answers the first round that succeeds, which is
    /// then pinned for this session as well). It lasts until [`SyncEngine::untrack`], the
    /// engine is dropped or the user logs out. Tracking the same database and peer again
    /// changes nothing.
    pub fn track(&self, requester: &dyn Requester, addr: &str, db: &EntryId) -> Result<()> {
        let mut addr = PeerAddr::parse(addr)?;
        let keys = requester.key_ring();
        keys.ensure_usable()?;
        let who = requester.requester_id();
        if self.running(&who, &addr, db) {
            return Ok(());
        }
        if !self.has_room_for_a_track(&self.running_tracks()) {
            return Err(self.no_room_for_a_track());
        }
        self.asked_for(db, requester)?;
        if !self.registry()?.exists(db)? {
            // Bring the database here first, so it can be kept and watched.
            let candidates = self.request_keys(&*keys, db)?;
            let report = self
                .round(&*keys, &candidates, &addr, db, None)?
                .into_result()?;
            if let Some(peer) = report.peer {
                addr = addr.pinned(peer);
            }
        }
        requester.keep(db)?;
        let recorded_before = (self.state.tracks_of(&who)?.iter())
            .any(|(d, a)| d == db && a.host_port == addr.host_port);
        self.state.record_track(&who, db, &addr)?;
        if !self.start_track(&who, keys, &addr, db)? {
            // Other tracks started meanwhile: refused, so not resumed at the next login.
            if !recorded_before {
                self.state.forget_track(&who, db, &addr.host_port)?;
            }
            return Err(self.no_room_for_a_track());
        }
        Ok(())
    }

    /// Stops tracking `db` with the peer at `addr` for `requester`, and forgets it (it no
    /// longer resumes). [`Error::NotFound`] if the user did not track it.
    pub fn untrack(&self, requester: &dyn Requester, addr: &str, db: &EntryId) -> Result<()> {
        let addr = PeerAddr::parse(addr)?;
        requester.key_ring().ensure_usable()?;
        let who = requester.requester_id();
        // Stopped (threads joined) before the record goes: a round ending meanwhile may
        // record the device it pinned.
        let stopped: Vec<Arc<Track>> = {
            let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
            let (stop, keep) = std::mem::take(&mut *tracks)
                .into_iter()
                .partition(|t| t.is_for(&who, &addr, db));
            *tracks = keep;
            stop
        };
        let running = stopped.iter().any(|t| t.is_running());
        for t in stopped {
            t.stop();
        }
        let forgotten = self.state.forget_track(&who, db, &addr.host_port)?;
        if !forgotten && !running {
            return Err(Error::NotFound(format!(
                "this user does not track {db} with {}",
                addr.host_port
            )));
        }
        Ok(())
    }

    /// Stops and forgets every track of `db` for user `who` (with any peer): the user forgot
    /// the database. With `everyone`, the database leaves this instance's storage: every
    /// track of it stops and is forgotten, whoever it ran for, and so is all else sync
    /// remembers of it (cursors, that a local user asked for it), so that a later sync of
    /// it starts afresh. Tracks are stopped (their threads joined) before records go.
    pub fn forget_db(&self, who: &str, db: &EntryId, everyone: bool) -> Result<()> {
        let stopped: Vec<Arc<Track>> = {
            let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
            let (stop, keep) = std::mem::take(&mut *tracks)
                .into_iter()
                .partition(|t| t.db() == db && (everyone || t.is_of(who, db)));
            *tracks = keep;
            stop
        };
        for t in stopped {
            t.stop();
        }
        self.state.forget_db(who, db, everyone)
    }

    /// Starts again, in the background, what `requester` tracks (as recorded by
    /// [`SyncEngine::track`]), makes the user's holder proofs (see [`super::holders`]), and
    /// grants the access requests waiting for an auto-approve policy this user set: called
    /// when a user logs in with sync enabled, and for users logged in when sync is enabled.
    /// Databases no longer here are skipped.
    pub fn resume(&self, requester: &dyn Requester) -> Result<()> {
        let keys = requester.key_ring();
        keys.ensure_usable()?;
        let who = requester.requester_id();
        // Peers push to this device only once one of its users' keys proved it holds
        // copies for that key. A login does not fail for it: the next sync, track or
        // access request of the user makes them again.
        let _ = self.prove_holding(&who, &*keys);
        let registry = self.registry()?;
        for (db, addr) in self.state.tracks_of(&who)? {
            // Beyond the `max_tracks` limit, tracks stay recorded, listed as not running.
            if registry.exists(&db)? && !self.start_track(&who, keys.clone(), &addr, &db)? {
                break;
            }
        }
        // The user's session can sign what auto-approve policies grant.
        self.register_approver(&keys)?;
        self.approve_waiting()
    }

    /// Starts a [`Track`] unless one runs already for the same user, peer and database;
    /// false, starting nothing, when as many run as the `max_tracks` limit allows.
    fn start_track(
        &self,
        who: &str,
        keys: Arc<dyn KeyRing>,
        addr: &PeerAddr,
        db: &EntryId,
    ) -> Result<bool> {
        let key = self.request_keys(&*keys, db)?[0];
        let core = self.registry()?.core(*db);
        let mut tracks = self.running_tracks();
        if tracks.iter().any(|t| t.is_for(who, addr, db)) {
            return Ok(true);
        }
        if !self.has_room_for_a_track(&tracks) {
            return Ok(false);
        }
        tracks.push(Track::start(self.me.clone(), who, keys, key, addr, &core)?);
        Ok(true)
    }

    /// The tracks, locked, those that ended dropped.
    fn running_tracks(&self) -> MutexGuard<'_, Vec<Arc<Track>>> {
        let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        tracks.retain(|t| t.is_running());
        tracks
    }

    /// Whether one more track may join `running` under the `max_tracks` limit.
    fn has_room_for_a_track(&self, running: &[Arc<Track>]) -> bool {
        running.len() < self.limits().max_tracks
    }

    /// [`Error::Busy`] for a track refused under the `max_tracks` limit.
    fn no_room_for_a_track(&self) -> Error {
        Error::Busy(format!(
            "as many tracks run as the sync limit max_tracks ({}) allows: untrack one, or \
             raise it",
            self.limits().max_tracks
        ))
    }

    /// Whether a track runs for `who`, `addr` and `db`.
    fn running(&self, who: &str, addr: &PeerAddr, db: &EntryId) -> bool {
        self.running_tracks()
            .iter()
            .any(|t| t.is_for(who, addr, db))
    }

    /// Waits until every local commit made before this call has been pushed by the
    /// background tracking, or `timeout` passes ([`Error::Network`]).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        let tracks: Vec<Arc<Track>> = self
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
            let behind: Vec<&Arc<Track>> = targets
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
}

/// What [`SyncEngine::forget_db`] does to the records, for an instance whose sync engine is
/// not running in this process: `state_db` is its `_sync` database (nothing runs, so nothing
/// is stopped).
pub fn forget_recorded(state_db: Database, who: &str, db: &EntryId, everyone: bool) -> Result<()> {
    SyncState::new(state_db).forget_db(who, db, everyone)
}
