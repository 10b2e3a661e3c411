//! Background tracking: one thread per (user, peer, database) that pushes soon after each
//! local commit and pulls soon after each of the peer's, and retries with backoff while the
//! peer is down. The peer's commits are learnt by a watch (a long poll the peer answers
//! when its copy changes) kept by a task on the engine's runtime; a periodic pull is the
//! fallback while no watch is held.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::net::client::Link;
use super::wire::{self, Envelope, Request};
use super::{PeerAddr, SyncEngine};
use crate::crypto::{random, KeyRing, PublicKey};
use crate::database::{
    end_waits_for_room_when, now_ms, Change, DatabaseCore, Origin, Subscription,
};
use crate::entry::EntryId;
use crate::error::{Error, Result};

/// How often a tracked database is pulled when no watch tells of the peer's commits.
const PULL_EVERY: Duration = Duration::from_secs(1);
/// How often it is pulled anyway while a watch is held (in case one was missed).
const PULL_WHILE_WATCHED: Duration = Duration::from_secs(30);
/// Backoff bounds of the watch while the peer refuses or fails it.
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(500);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Least time from one round's start to the next, and from one watch to the next: commits
/// made faster, here or at the peer, share a round. Each round and watch is a signed
/// request or a few, and a peer refuses a key that sends more than about 54 a second (its
/// share of the peer's replay memory, [`super::replay::per_key`]): back to back, a track
/// of a database written steadily sent hundreds a second and was refused for minutes.
const LEAST_GAP: Duration = Duration::from_millis(250);
/// Backoff bounds while the peer fails.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One tracked database.
pub(super) struct Track {
    /// The id of the user it runs for.
    who: String,
    addr: PeerAddr,
    /// The device that answered the first successful round, when `addr` pinned none: later
    /// rounds accept only it, and it is recorded so that tracking resumes pinned.
    answered: OnceLock<PublicKey>,
    /// Whether `answered` is recorded.
    answered_recorded: AtomicBool,
    db: EntryId,
    /// The local storage position (see `Backend::last_position`) that the last successful
    /// round had pushed up to.
    pushed: AtomicU64,
    /// When the last round succeeded, in milliseconds since the Unix epoch (0: none yet).
    synced_at_ms: AtomicU64,
    /// Set to stop it; also ends its waits for room among queued notifications, as it may
    /// be stopped from inside a change callback it waits for.
    stop: Arc<AtomicBool>,
    /// Set when the thread has ended (stopped, or its user logged out).
    finished: AtomicBool,
    /// Whether the last watch the peer answered went well (the periodic pull then slows).
    watching: AtomicBool,
    watch_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    wake: (Mutex<bool>, Condvar),
    last_error: Mutex<Option<String>>,
    /// The key the watch signs with: the one the peer accepted in the last round.
    watch_key: Mutex<PublicKey>,
    thread: Mutex<Option<JoinHandle<()>>>,
    subscription: Mutex<Option<Subscription>>,
}

impl Track {
    /// Starts tracking database `db` with the peer at `addr` for user `who`, watching as
    /// `key` from `keys` until a round is accepted with another.
    pub(super) fn start(
        sync: Weak<SyncEngine>,
        who: &str,
        keys: Arc<dyn KeyRing>,
        key: PublicKey,
        addr: &PeerAddr,
        db: &Arc<DatabaseCore>,
    ) -> Result<Arc<Track>> {
        let track = Arc::new(Track {
            who: who.to_string(),
            addr: addr.clone(),
            answered: OnceLock::new(),
            answered_recorded: AtomicBool::new(false),
            db: db.id(),
            pushed: AtomicU64::new(0),
            synced_at_ms: AtomicU64::new(0),
            stop: Arc::new(AtomicBool::new(false)),
            finished: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            watch_task: Mutex::new(None),
            wake: (Mutex::new(false), Condvar::new()),
            last_error: Mutex::new(None),
            watch_key: Mutex::new(key),
            thread: Mutex::new(None),
            subscription: Mutex::new(None),
        });
        let watcher = Arc::downgrade(&track);
        // Pushes soon after each commit made here or by another process on this storage
        // (not after entries sync brought: the peer has those).
        let subscription = db.subscribe(Box::new(move |change: &Change| {
            if let Some(track) = watcher.upgrade() {
                if change.origin != Origin::Sync {
                    track.poke();
                }
            }
        }))?;
        *track.subscription.lock().unwrap_or_else(|p| p.into_inner()) = Some(subscription);
        if let Some(engine) = sync.upgrade() {
            let link = Link::new(addr.clone(), engine.identity.clone(), engine.limits());
            let task = engine.runtime().spawn(watch_loop(
                Arc::downgrade(&track),
                link,
                keys.clone(),
                db.id(),
            ));
            *track.watch_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
        let worker = track.clone();
        let handle = thread::Builder::new()
            .name("mnemo-sync-track".into())
            .spawn(move || {
                end_waits_for_room_when(worker.stop.clone());
                worker.run(&sync, &*keys);
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

    /// The id of the user it runs for.
    pub(super) fn who(&self) -> &str {
        &self.who
    }

    /// Whether this tracks `db` for user `who` (with any peer).
    pub(super) fn is_of(&self, who: &str, db: &EntryId) -> bool {
        self.who == who && self.db == *db
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

    /// The peer's address as tracked (pinned or not).
    pub(super) fn addr(&self) -> &PeerAddr {
        &self.addr
    }

    /// The device accepted as the peer: the one the address pins, else the one that
    /// answered the first round that succeeded, if any did.
    pub(super) fn device(&self) -> Option<PublicKey> {
        self.addr.device.or_else(|| self.answered.get().copied())
    }

    /// When the last round succeeded (milliseconds since the Unix epoch), if one did.
    pub(super) fn synced_at_ms(&self) -> Option<u64> {
        Some(self.synced_at_ms.load(Ordering::Acquire)).filter(|ms| *ms != 0)
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
        if let Some(task) = self
            .watch_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
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

    /// Accepts only `peer` from now on (the first device that answered), and records it for
    /// resuming. The pin holds in memory even if recording fails; the round then fails, and
    /// the next successful one records it.
    fn pin(&self, sync: &SyncEngine, peer: PublicKey) -> Result<()> {
        let device = *self.answered.get_or_init(|| peer);
        if self.answered_recorded.load(Ordering::Acquire) {
            return Ok(());
        }
        let pinned = self.addr.pinned(device);
        sync.state.record_track(&self.who, &self.db, &pinned)?;
        self.answered_recorded.store(true, Ordering::Release);
        Ok(())
    }

    /// Rounds until stopped, each signed with the first key the peer accepts of those
    /// [`SyncEngine::request_keys`] names then (a key granted since is tried too).
    fn run(&self, sync: &Weak<SyncEngine>, keys: &dyn KeyRing) {
        let mut wait = Duration::ZERO;
        // The wait after the last failed round of those since the last success, if any.
        let mut backoff: Option<Duration> = None;
        let mut last_round: Option<Instant> = None;
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
                // Asked again soon after a round: later, with whatever comes meanwhile.
                let gap_ends = last_round.map(|at| at + LEAST_GAP);
                while let Some(left) = gap_ends
                    .map(|end| end.saturating_duration_since(Instant::now()))
                    .filter(|left| !left.is_zero())
                {
                    if self.stop.load(Ordering::Acquire) {
                        break;
                    }
                    woken = signal
                        .wait_timeout(woken, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                *woken = false;
            }
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let Some(sync) = sync.upgrade() else { break };
            last_round = Some(Instant::now());
            let addr = match self.answered.get() {
                Some(device) => self.addr.pinned(*device),
                None => self.addr.clone(),
            };
            let round = sync.local_position(&self.db).and_then(|target| {
                let candidates = sync.request_keys(keys, &self.db)?;
                let report = sync.round(keys, &candidates, &addr, &self.db, Some(&self.stop))?;
                // Also when the round fails afterwards (an entry refused): the key stands.
                if let Some(accepted) = report.signed_as {
                    *self.watch_key.lock().unwrap_or_else(|p| p.into_inner()) = accepted;
                }
                let report = report.into_result()?;
                if let (None, Some(peer)) = (self.addr.device, report.peer) {
                    self.pin(&sync, peer)?;
                }
                Ok(target)
            });
            match round {
                Ok(target) => {
                    self.pushed.fetch_max(target, Ordering::AcqRel);
                    self.synced_at_ms.store(now_ms().max(1), Ordering::Release);
                    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    backoff = None;
                    wait = if self.watching.load(Ordering::Acquire) {
                        PULL_WHILE_WATCHED
                    } else {
                        PULL_EVERY
                    };
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
                    // Doubled from one failure to the next up to its bound (before, a wait of
                    // 1 s or more was taken for a success's and started over at 100 ms).
                    wait = backoff.map_or(BACKOFF_MIN, |b| (b * 2).min(BACKOFF_MAX));
                    backoff = Some(wait);
                }
            }
            sync.notify_progress();
        }
    }
}

/// Keeps a watch on the peer's copy of `db` for as long as `track` runs, signed with the
/// key of the track's last accepted round: each answer other than the position known so far
/// asks the track for a round. Failures back off; logging out ends it.
async fn watch_loop(
    track: std::sync::Weak<Track>,
    mut link: Link,
    keys: Arc<dyn KeyRing>,
    db: EntryId,
) {
    let mut known = 0;
    let mut backoff = WATCH_BACKOFF_MIN;
    loop {
        link.renew();
        let Some(key) = track
            .upgrade()
            .map(|t| *t.watch_key.lock().unwrap_or_else(|p| p.into_inner()))
        else {
            return;
        };
        let answered = watch_once(&mut link, &*keys, &key, &db, known).await;
        let Some(track) = track.upgrade() else { return };
        if track.stop.load(Ordering::Acquire) {
            return;
        }
        match answered {
            Ok(position) => {
                track.watching.store(true, Ordering::Release);
                // Past the position known, or before it: the peer's storage went back (a
                // restore from a backup), and what it holds now differs too.
                if position != known {
                    known = position;
                    track.poke();
                }
                backoff = WATCH_BACKOFF_MIN;
                drop(track);
                // The round it asked for takes what comes meanwhile.
                tokio::time::sleep(LEAST_GAP).await;
            }
            Err(Error::LoggedOut) => return,
            Err(_) => {
                track.watching.store(false, Ordering::Release);
                drop(track);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
            }
        }
    }
}

/// One watch: the peer's position of `db` once it is other than `after` (or when the peer stops
/// waiting).
async fn watch_once(
    link: &mut Link,
    keys: &dyn KeyRing,
    key: &PublicKey,
    db: &EntryId,
    after: u64,
) -> Result<u64> {
    let server = link.peer().await?;
    let mut env = Envelope {
        db: *db,
        key: *key,
        server,
        timestamp_ms: now_ms(),
        nonce: random::bytes()?,
        request: Request::Watch { after },
        signature: [0; 64],
    };
    env.signature = keys.sign(key, &env.signed_part())?;
    let largest = env.request.largest_reply();
    wire::decode_position(&link.post("watch", env.encode(), largest).await?)
}
