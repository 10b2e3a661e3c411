//! Background tracking: one thread per (peer, database) that pushes soon after each local
//! commit, pulls periodically, and retries with backoff while the peer is down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{PeerAddr, SyncEngine};
use crate::crypto::{KeyRing, PublicKey};
use crate::database::{Change, DatabaseCore, Subscription};
use crate::entry::EntryId;
use crate::error::{Error, Result};

/// How often a tracked database is pulled when nothing happens locally.
const PULL_EVERY: Duration = Duration::from_secs(1);
/// Backoff bounds while the peer fails.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One tracked database.
pub(super) struct Track {
    /// The id of the user it runs for.
    who: String,
    addr: PeerAddr,
    db: EntryId,
    /// The local storage position (see `Backend::last_position`) that the last successful
    /// round had pushed up to.
    pushed: AtomicU64,
    stop: AtomicBool,
    /// Set when the thread has ended (stopped, or its user logged out).
    finished: AtomicBool,
    wake: (Mutex<bool>, Condvar),
    last_error: Mutex<Option<String>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    subscription: Mutex<Option<Subscription>>,
}

impl Track {
    /// Starts tracking database `db` with the peer at `addr` for user `who`, signing as
    /// `key` from `keys`.
    pub(super) fn start(
        sync: Weak<SyncEngine>,
        who: &str,
        keys: Arc<dyn KeyRing>,
        key: PublicKey,
        addr: &PeerAddr,
        db: &DatabaseCore,
    ) -> Result<Arc<Track>> {
        let track = Arc::new(Track {
            who: who.to_string(),
            addr: addr.clone(),
            db: db.id(),
            pushed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            wake: (Mutex::new(false), Condvar::new()),
            last_error: Mutex::new(None),
            thread: Mutex::new(None),
            subscription: Mutex::new(None),
        });
        let watcher = Arc::downgrade(&track);
        let subscription = db.subscribe(Box::new(move |change: &Change| {
            if let Some(track) = watcher.upgrade() {
                if !change.remote {
                    track.poke();
                }
            }
        }))?;
        *track.subscription.lock().unwrap_or_else(|p| p.into_inner()) = Some(subscription);
        let worker = track.clone();
        let handle = thread::Builder::new()
            .name("mnemo-sync-track".into())
            .spawn(move || {
                worker.run(&sync, &*keys, &key);
                worker.finished.store(true, Ordering::Release);
            })
            .map_err(|e| Error::Internal(format!("cannot start a sync thread: {e}")))?;
        *track.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(track)
    }

    /// Whether this tracks `db` for user `who` with the peer at `addr`'s host and port
    /// (whatever device either pins).
    pub(super) fn is_for(&self, who: &str, addr: &PeerAddr, db: &EntryId) -> bool {
        self.who == who && self.addr.host_port == addr.host_port && self.db == *db
    }

    /// Whether its thread still runs (not stopped, its user not logged out).
    pub(super) fn is_running(&self) -> bool {
        !self.finished.load(Ordering::Acquire)
    }

    pub(super) fn db(&self) -> &EntryId {
        &self.db
    }

    pub(super) fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Acquire)
    }

    pub(super) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks the thread for a round now.
    pub(super) fn poke(&self) {
        let (lock, signal) = &self.wake;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        signal.notify_one();
    }

    /// Ends the tracking and waits for its thread.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.poke();
        drop(
            self.subscription
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            if h.thread().id() != thread::current().id() {
                let _ = h.join();
            }
        }
    }

    fn run(&self, sync: &Weak<SyncEngine>, keys: &dyn KeyRing, key: &PublicKey) {
        let mut wait = Duration::ZERO;
        while !self.stop.load(Ordering::Acquire) {
            {
                let (lock, signal) = &self.wake;
                let mut woken = lock.lock().unwrap_or_else(|p| p.into_inner());
                if !*woken && !wait.is_zero() {
                    woken = signal
                        .wait_timeout(woken, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                *woken = false;
            }
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let Some(sync) = sync.upgrade() else { break };
            let round = sync.local_position(&self.db).and_then(|target| {
                sync.round(keys, std::slice::from_ref(key), &self.addr, &self.db)?
                    .into_result()?;
                Ok(target)
            });
            match round {
                Ok(target) => {
                    self.pushed.fetch_max(target, Ordering::AcqRel);
                    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    wait = PULL_EVERY;
                }
                Err(Error::LoggedOut) => {
                    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some("the session logged out".into());
                    sync.notify_progress();
                    break;
                }
                Err(e) => {
                    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(e.to_string());
                    wait = if wait < BACKOFF_MIN || wait == PULL_EVERY {
                        BACKOFF_MIN
                    } else {
                        (wait * 2).min(BACKOFF_MAX)
                    };
                }
            }
            sync.notify_progress();
        }
    }
}
