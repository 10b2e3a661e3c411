//! Entries other processes store in the same storage (a SQLite file, a PostgreSQL
//! database), heard by polling so that a database's subscribers and watchers learn of them
//! too, as remote changes. Only databases with subscribers are polled, by one thread per
//! instance: each poll reads their last storage positions (one round trip on a server), and
//! for each that moved, its new entries, under the database's write lock, skipping those
//! this process stored (which it announced itself).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::DatabaseCore;
use crate::entry::EntryId;
use crate::error::{Error, Result};

/// How often, by default, each database with subscribers is polled for entries other
/// processes stored.
pub const OTHER_PROCESSES_POLL: Duration = Duration::from_millis(200);
/// Entries read for one database per poll, at most (the rest at the next poll).
pub(super) const ENTRIES_PER_POLL: usize = 1024;
/// Entries this process stored that a poll has not read back yet, past which the next poll
/// is made at once (each reads up to [`ENTRIES_PER_POLL`] back), and those older than
/// [`OWN_ENTRY_KEPT_FOR`] are forgotten (a commit undone after it was stored, or an entry
/// another process stored first, is never read back as this process's).
const OWN_ENTRIES_HURRY_AT: usize = 1 << 14;
/// How long an entry this process stored waits to be read back before it may be forgotten.
const OWN_ENTRY_KEPT_FOR: Duration = Duration::from_secs(600);

/// The thread of one instance that polls the databases whose subscribers hear other
/// processes' entries, started with the first such database and stopped with the instance;
/// it sleeps, without waking, while there is none.
pub(crate) struct OtherProcesses {
    interval_ms: AtomicU64,
    polled: Mutex<Vec<Weak<DatabaseCore>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    stopped: Mutex<bool>,
    /// Set when the next poll is due at once (see [`OtherProcesses::hurry`]).
    due_now: AtomicBool,
    wake: Condvar,
}

impl OtherProcesses {
    /// Polls nothing yet; each database every `interval` once it is asked to.
    pub(crate) fn new(interval: Duration) -> Arc<Self> {
        let others = Arc::new(OtherProcesses {
            interval_ms: AtomicU64::new(0),
            polled: Mutex::default(),
            worker: Mutex::default(),
            stopped: Mutex::new(false),
            due_now: AtomicBool::new(false),
            wake: Condvar::new(),
        });
        others.set_interval(interval);
        others
    }

    /// How often each database is polled.
    pub(crate) fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Acquire))
    }

    /// Polls every `interval` from now on: a poll waiting for the old interval takes the
    /// new one, counted from the last poll.
    pub(crate) fn set_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.interval_ms.store(ms, Ordering::Release);
        let _stopped = lock(&self.stopped);
        self.wake.notify_all();
    }

    /// Polls `core` from now on, for as long as it hears other processes (see
    /// [`OtherProcesses::start`]).
    pub(super) fn poll(&self, core: &Arc<DatabaseCore>) {
        {
            let mut polled = lock(&self.polled);
            let weak = Arc::downgrade(core);
            if !polled.iter().any(|p| p.ptr_eq(&weak)) {
                polled.push(weak);
            }
        }
        // Under the lock the thread checks for work under, so that it cannot miss this.
        let _stopped = lock(&self.stopped);
        self.wake.notify_all();
    }

    /// Makes the next poll now, whatever the interval: a database's entries stored here but
    /// not read back yet are many.
    pub(super) fn hurry(&self) {
        self.due_now.store(true, Ordering::Release);
        let _stopped = lock(&self.stopped);
        self.wake.notify_all();
    }

    /// Starts the thread unless it runs (or stopped for good).
    pub(super) fn start(self: &Arc<Self>) -> Result<()> {
        let mut worker = lock(&self.worker);
        if worker.is_some() || *lock(&self.stopped) {
            return Ok(());
        }
        let others = self.clone();
        let thread = thread::Builder::new()
            .name("mnemo-other-processes".into())
            .spawn(move || others.run())
            .map_err(|e| {
                Error::Internal(format!(
                    "cannot start the thread that hears other processes: {e}"
                ))
            })?;
        *worker = Some(thread);
        Ok(())
    }

    fn run(&self) {
        while self.wait_for_the_next_poll() {
            self.poll_once();
        }
    }

    /// Waits until some database is polled, then for the interval in force (read again
    /// when it changes) or until hurried; false once stopped.
    fn wait_for_the_next_poll(&self) -> bool {
        let stopped = lock(&self.stopped);
        let mut stopped = self
            .wake
            .wait_while(stopped, |stopped| {
                !*stopped && lock(&self.polled).is_empty()
            })
            .unwrap_or_else(|p| p.into_inner());
        let since = Instant::now();
        loop {
            if *stopped {
                return false;
            }
            if self.due_now.swap(false, Ordering::AcqRel) {
                return true;
            }
            let Some(left) = self.interval().checked_sub(since.elapsed()) else {
                return true;
            };
            if left.is_zero() {
                return true;
            }
            stopped = self
                .wake
                .wait_timeout(stopped, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Reads the last position of every database polled (in one round trip on a server),
    /// then the new entries of those that moved. What fails (storage unreachable) is tried
    /// again at the next poll.
    fn poll_once(&self) {
        let polled = self.polled_now();
        let Some(first) = polled.first() else {
            return;
        };
        let ids: Vec<EntryId> = polled.iter().map(|core| core.id()).collect();
        let Ok(positions) = first.backend().last_positions(&ids) else {
            return;
        };
        for (core, position) in polled.iter().zip(positions) {
            let _ = core.hear_other_processes(position);
        }
    }

    /// How many databases are polled now.
    pub(crate) fn polled(&self) -> usize {
        self.polled_now().len()
    }

    /// The databases to poll now (those whose subscribers all went are let go).
    fn polled_now(&self) -> Vec<Arc<DatabaseCore>> {
        let mut polled = lock(&self.polled);
        let mut now = Vec::with_capacity(polled.len());
        polled.retain(|weak| match weak.upgrade() {
            Some(core) if core.hears_other_processes() => {
                now.push(core);
                true
            }
            _ => false,
        });
        now
    }

    /// Stops the thread and waits for it (unless called on it).
    pub(crate) fn stop(&self) {
        *lock(&self.stopped) = true;
        self.wake.notify_all();
        let worker = lock(&self.worker).take();
        if let Some(worker) = worker {
            if worker.thread().id() != thread::current().id() {
                let _ = worker.join();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// For one database whose subscribers hear other processes: how far its entries were read,
/// and the entries this process stored since, which it announced itself.
pub(super) struct Heard {
    read_to: u64,
    own: HashMap<EntryId, Instant>,
}

impl Heard {
    /// Hears what is stored after storage position `position`.
    pub(super) fn after(position: u64) -> Self {
        Heard {
            read_to: position,
            own: HashMap::new(),
        }
    }

    /// The storage position read up to.
    pub(super) fn read_to(&self) -> u64 {
        self.read_to
    }

    /// Notes that this process stored `id`, `now` (before any poll can read it). True when
    /// so many wait to be read back that the next poll should come at once.
    pub(super) fn stored_here(&mut self, id: EntryId, now: Instant) -> bool {
        if self.own.len() >= OWN_ENTRIES_HURRY_AT {
            self.own
                .retain(|_, stored| now.duration_since(*stored) < OWN_ENTRY_KEPT_FOR);
        }
        self.own.insert(id, now);
        self.own.len() >= OWN_ENTRIES_HURRY_AT
    }

    /// Reads `page`, entries stored after [`Heard::read_to`] in storage order: returns
    /// those another process stored.
    pub(super) fn read(&mut self, page: Vec<(u64, EntryId)>) -> Vec<EntryId> {
        let mut others = Vec::new();
        for (position, id) in page {
            self.read_to = self.read_to.max(position);
            if self.own.remove(&id).is_none() {
                others.push(id);
            }
        }
        others
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> EntryId {
        EntryId::of_bytes(&[n])
    }

    #[test]
    fn entries_stored_here_are_skipped_once_and_the_rest_are_others() {
        let mut heard = Heard::after(10);
        heard.stored_here(id(1), Instant::now());
        heard.stored_here(id(3), Instant::now());
        let others = heard.read(vec![(11, id(1)), (12, id(2)), (13, id(3)), (14, id(4))]);
        assert_eq!(others, vec![id(2), id(4)]);
        assert_eq!(heard.read_to(), 14);
        assert!(heard.own.is_empty());
        // Read back once only: the same id again (never, in storage order) is another's.
        assert_eq!(heard.read(vec![(15, id(1))]), vec![id(1)]);
    }

    #[test]
    fn own_entries_never_read_back_are_forgotten_once_old_and_many() {
        let mut heard = Heard::after(0);
        let start = Instant::now();
        for n in 0..OWN_ENTRIES_HURRY_AT as u32 - 1 {
            assert!(!heard.stored_here(EntryId::of_bytes(&n.to_be_bytes()), start));
        }
        let later = start + OWN_ENTRY_KEPT_FOR;
        assert!(
            heard.stored_here(id(1), later),
            "at the bound: the next poll is due at once"
        );
        assert_eq!(
            heard.own.len(),
            OWN_ENTRIES_HURRY_AT,
            "nothing trimmed below it"
        );
        assert!(!heard.stored_here(id(2), later));
        assert_eq!(heard.own.len(), 2, "the old ones go, the recent one stays");
    }

    #[test]
    fn a_hurried_poll_comes_at_once_whatever_the_interval() {
        let others = OtherProcesses::new(Duration::from_secs(3600));
        // Something to poll (gone already: the wait only needs the list not empty).
        lock(&others.polled).push(Weak::new());
        let hurrying = {
            let others = others.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                others.hurry();
            })
        };
        let started = Instant::now();
        assert!(others.wait_for_the_next_poll());
        assert!(started.elapsed() < Duration::from_secs(60));
        hurrying.join().unwrap();
        others.stop();
        assert!(!others.wait_for_the_next_poll(), "stopped");
    }
}
