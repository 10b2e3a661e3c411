//! The databases of one instance: one [`DatabaseCore`] per database, shared by all its
//! handles, and the operations every room above needs (open, create, does it exist, take a
//! foreign entry). Idle cores are dropped past a bound, least recently used first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::events::{WatcherBudget, MAX_WATCHERS};
use super::others::{OtherProcesses, OTHER_PROCESSES_POLL};
use super::subscribe::MAX_QUEUED_NOTIFICATIONS;
use super::waiting::{WaitingBudget, WaitingLimits};
use super::{create_root, Database, DatabaseCore, Notifier, Received};
use crate::backend::{Backend, Version};
use crate::crypto::{KeyRing, PublicKey};
use crate::entry::{Entry, EntryId};
use crate::error::Result;

/// How many idle databases an instance keeps in memory by default: their cores, with what
/// each caches (settings, discards, its tips). A database is idle when nothing but the
/// instance refers to it: no handle, subscription or event queue, no foreign entry waiting
/// for parents, no commit or undoing of a revocation unfinished. Past the bound, the least
/// recently used idle ones are dropped, and read from storage again at their next use;
/// databases in use are always kept.
pub const IDLE_DATABASES_KEPT: usize = 256;

/// Bounds on what an instance holds in memory for its databases.
#[derive(Clone, Copy, Debug)]
pub struct RegistryLimits {
    /// Idle databases kept at most ([`IDLE_DATABASES_KEPT`]).
    pub idle_databases: usize,
    /// Change notifications queued for callbacks before changes wait for room
    /// ([`MAX_QUEUED_NOTIFICATIONS`]).
    pub queued_notifications: usize,
    /// Foreign entries waiting for their parents.
    pub waiting: WaitingLimits,
    /// How often each database with subscribers is polled for entries other processes
    /// stored in the same storage ([`OTHER_PROCESSES_POLL`]); whole milliseconds.
    pub other_processes_poll: Duration,
    /// Watchers ([`super::Events`]) live at once across the instance's databases
    /// ([`MAX_WATCHERS`]); past it, a watch fails with [`crate::Error::Busy`]. 0 refuses
    /// every watch.
    pub watchers: usize,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        RegistryLimits {
            idle_databases: IDLE_DATABASES_KEPT,
            queued_notifications: MAX_QUEUED_NOTIFICATIONS,
            waiting: WaitingLimits::default(),
            other_processes_poll: OTHER_PROCESSES_POLL,
            watchers: MAX_WATCHERS,
        }
    }
}

/// Most idle databases an instance may be set to keep.
pub const MAX_IDLE_DATABASES_LIMIT: usize = 1 << 20;
/// Most change notifications an instance may be set to queue (about 100 bytes each).
pub const MAX_QUEUED_NOTIFICATIONS_LIMIT: usize = 1 << 24;
/// Most entries an instance may be set to let wait in one database.
pub const MAX_WAITING_ENTRIES_LIMIT: usize = 1 << 24;
/// Most bytes an instance may be set to let wait, in one database or in all.
pub const MAX_WAITING_BYTES_LIMIT: usize = 1 << 40;
/// Longest an instance may be set to let an entry wait for its parents, in milliseconds
/// (a day).
pub const MAX_WAITING_TIME_MS_LIMIT: u64 = 24 * 60 * 60 * 1000;
/// Least and most time between two polls for other processes' entries, in milliseconds
/// (10 ms, an hour).
pub const OTHER_PROCESSES_POLL_MS_LIMITS: (u64, u64) = (10, 60 * 60 * 1000);
/// Most watchers an instance may be set to keep at once (each two descriptors, and up to
/// about 72 KiB of queue).
pub const MAX_WATCHERS_LIMIT: usize = 1 << 20;

impl RegistryLimits {
    /// Each limit with its name: `idle_databases_kept`, `queued_notifications`,
    /// `waiting_entries_per_database`, `waiting_bytes_per_database`, `waiting_bytes`,
    /// `waiting_time_ms`, `other_processes_poll_ms`, `watchers`.
    pub fn by_name(&self) -> Vec<(&'static str, u64)> {
        let RegistryLimits {
            idle_databases,
            queued_notifications,
            waiting:
                WaitingLimits {
                    entries_per_database,
                    bytes_per_database,
                    bytes,
                    time,
                },
            other_processes_poll,
            watchers,
        } = *self;
        let ms = |time: Duration| u64::try_from(time.as_millis()).unwrap_or(u64::MAX);
        vec![
            ("idle_databases_kept", idle_databases as u64),
            ("queued_notifications", queued_notifications as u64),
            ("waiting_entries_per_database", entries_per_database as u64),
            ("waiting_bytes_per_database", bytes_per_database as u64),
            ("waiting_bytes", bytes as u64),
            ("waiting_time_ms", ms(time)),
            ("other_processes_poll_ms", ms(other_processes_poll)),
            ("watchers", watchers as u64),
        ]
    }

    /// Sets the limit called `name` (as [`RegistryLimits::by_name`] names it) to `value`;
    /// [`crate::Error::InvalidArgument`] for an unknown name or a value out of its bounds.
    pub fn set_by_name(&mut self, name: &str, value: u64) -> Result<()> {
        let within = |min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(value)
            } else {
                Err(crate::Error::invalid(format!(
                    "instance limit {name}: {value} is not from {min} to {max}"
                )))
            }
        };
        // Every bound below fits a usize: the casts cannot truncate.
        let count = |min: usize, max: usize| within(min as u64, max as u64).map(|v| v as usize);
        let waiting = &mut self.waiting;
        match name {
            "idle_databases_kept" => self.idle_databases = count(0, MAX_IDLE_DATABASES_LIMIT)?,
            "queued_notifications" => {
                self.queued_notifications = count(1, MAX_QUEUED_NOTIFICATIONS_LIMIT)?
            }
            "waiting_entries_per_database" => {
                waiting.entries_per_database = count(0, MAX_WAITING_ENTRIES_LIMIT)?
            }
            "waiting_bytes_per_database" => {
                waiting.bytes_per_database = count(0, MAX_WAITING_BYTES_LIMIT)?
            }
            "waiting_bytes" => waiting.bytes = count(0, MAX_WAITING_BYTES_LIMIT)?,
            "waiting_time_ms" => {
                waiting.time = Duration::from_millis(within(1, MAX_WAITING_TIME_MS_LIMIT)?)
            }
            "other_processes_poll_ms" => {
                let (min, max) = OTHER_PROCESSES_POLL_MS_LIMITS;
                self.other_processes_poll = Duration::from_millis(within(min, max)?)
            }
            "watchers" => self.watchers = count(0, MAX_WATCHERS_LIMIT)?,
            _ => {
                return Err(crate::Error::invalid(format!(
                    "no instance limit is called {}",
                    crate::error::quoted(name)
                )))
            }
        }
        Ok(())
    }

    /// Fails unless each limit is within its bounds (see [`RegistryLimits::set_by_name`]).
    pub fn validate(&self) -> Result<()> {
        let mut checked = RegistryLimits::default();
        for (name, value) in self.by_name() {
            checked.set_by_name(name, value)?;
        }
        Ok(())
    }
}

/// The cores of the databases an instance uses. A core holds the database's write lock,
/// subscribers and foreign entries waiting for parents, so it lives as long as any of them
/// does, not just as long as some handle; once idle, it is kept for reuse up to a bound
/// ([`IDLE_DATABASES_KEPT`]).
pub struct Registry {
    backend: Arc<dyn Backend>,
    notifier: Arc<Notifier>,
    /// Bytes of foreign entries waiting for parents, across every database here.
    waiting: Arc<WaitingBudget>,
    /// The poll that lets subscribers hear entries other processes store.
    others: Arc<OtherProcesses>,
    /// Watchers live across every database here, and the bound on them.
    watchers: Arc<WatcherBudget>,
    open: Mutex<Cores>,
}

/// The cores held, with when each was last asked for.
struct Cores {
    held: HashMap<EntryId, Held>,
    /// Cores asked for so far: the clock of `Held::last_use`.
    uses: u64,
    /// The number of cores held at which a new one first drops idle ones.
    sweep_at: usize,
    /// Idle cores kept at most (see [`IDLE_DATABASES_KEPT`]).
    idle_kept: usize,
}

struct Held {
    core: Arc<DatabaseCore>,
    last_use: u64,
}

impl Cores {
    /// Drops the least recently used idle cores, keeping three quarters of `idle_kept`, and
    /// sets when to look again: after a quarter of it more, so that a sweep (which looks at
    /// every core) runs once every so many new cores, whatever number are in use. Returns
    /// the cores dropped, for the caller to let go of outside the lock.
    fn drop_idle(&mut self) -> Vec<Arc<DatabaseCore>> {
        let mut idle: Vec<(u64, EntryId)> = self
            .held
            .iter()
            .filter(|(_, held)| Self::only_here(&held.core) && held.core.is_idle())
            .map(|(id, held)| (held.last_use, *id))
            .collect();
        let slack = self.idle_kept / 4;
        let keep = self.idle_kept - slack;
        let mut dropped = Vec::new();
        if idle.len() > keep {
            idle.sort_unstable();
            for (_, id) in &idle[..idle.len() - keep] {
                dropped.extend(self.held.remove(id).map(|held| held.core));
            }
        }
        self.sweep_at = self.held.len() + slack.max(1);
        dropped
    }

    /// True when the registry holds the only reference to `core`: no handle, and no call
    /// under way in it (every call holds a reference), and none can start but through
    /// [`Registry::core`], which waits for the lock held here.
    fn only_here(core: &Arc<DatabaseCore>) -> bool {
        Arc::strong_count(core) == 1 && Arc::weak_count(core) == 0
    }
}

impl Registry {
    /// An empty registry over `backend`, with the default limits.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self::with_limits(backend, RegistryLimits::default())
    }

    /// An empty registry over `backend`, holding at most what `limits` allow.
    pub fn with_limits(backend: Arc<dyn Backend>, limits: RegistryLimits) -> Self {
        let idle_kept = limits.idle_databases;
        Registry {
            backend,
            notifier: Arc::new(Notifier::bounded(limits.queued_notifications)),
            waiting: Arc::new(WaitingBudget::new(limits.waiting)),
            others: OtherProcesses::new(limits.other_processes_poll),
            watchers: Arc::new(WatcherBudget::new(limits.watchers)),
            open: Mutex::new(Cores {
                held: HashMap::new(),
                uses: 0,
                sweep_at: idle_kept.max(1),
                idle_kept,
            }),
        }
    }

    fn cores(&self) -> MutexGuard<'_, Cores> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limits in force.
    pub fn limits(&self) -> RegistryLimits {
        self.limits_with(&self.cores())
    }

    /// The limits in force, read with the cores' lock held as `cores`.
    fn limits_with(&self, cores: &Cores) -> RegistryLimits {
        RegistryLimits {
            idle_databases: cores.idle_kept,
            queued_notifications: self.notifier.max_queued(),
            waiting: self.waiting.limits(),
            other_processes_poll: self.others.interval(),
            watchers: self.watchers.max(),
        }
    }

    /// Changes the limits with `change`, all or nothing: [`crate::Error::InvalidArgument`]
    /// (and nothing changed) if `change` fails or leaves a limit out of its bounds. Idle
    /// databases past a lowered bound are dropped at the next new one opened; watchers past a
    /// lowered bound are kept, and new ones refused until fewer are live. Returns the limits
    /// now in force.
    pub fn change_limits(
        &self,
        change: impl FnOnce(&mut RegistryLimits) -> Result<()>,
    ) -> Result<RegistryLimits> {
        // Under the cores' lock: concurrent changes apply one after the other.
        let mut cores = self.cores();
        let mut limits = self.limits_with(&cores);
        change(&mut limits)?;
        limits.validate()?;
        cores.idle_kept = limits.idle_databases;
        // The next database opened sweeps with the new bound.
        cores.sweep_at = cores.held.len().max(1);
        self.notifier.set_max_queued(limits.queued_notifications);
        self.waiting.set_limits(limits.waiting);
        self.others.set_interval(limits.other_processes_poll);
        self.watchers.set_max(limits.watchers);
        Ok(limits)
    }

    /// Databases whose core this instance holds in memory now: those in use, and at most
    /// about [`IDLE_DATABASES_KEPT`] idle ones.
    pub fn cores_held(&self) -> usize {
        self.cores().held.len()
    }

    /// Databases polled now for entries other processes store (those with subscribers, on
    /// storage other processes may write).
    pub fn databases_polled(&self) -> usize {
        self.others.polled()
    }

    /// The storage backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The core of database `id` (whether or not it is stored yet).
    pub fn core(&self, id: EntryId) -> Arc<DatabaseCore> {
        let mut cores = self.cores();
        cores.uses += 1;
        let last_use = cores.uses;
        if let Some(held) = cores.held.get_mut(&id) {
            held.last_use = last_use;
            return held.core.clone();
        }
        let dropped = if cores.held.len() >= cores.sweep_at {
            cores.drop_idle()
        } else {
            Vec::new()
        };
        let core = Arc::new(DatabaseCore::new(
            id,
            self.backend.clone(),
            self.notifier.clone(),
            self.waiting.clone(),
            self.watchers.clone(),
            self.others.clone(),
        ));
        let held = Held {
            core: core.clone(),
            last_use,
        };
        cores.held.insert(id, held);
        drop(cores);
        drop(dropped);
        core
    }

    /// Whether database `id` is stored here (its root entry is). Asks storage only: no core
    /// is made for an id that is not here.
    pub fn exists(&self, id: &EntryId) -> Result<bool> {
        Ok(self.backend.entry_meta(id)?.is_some_and(|m| m.db == *id))
    }

    /// A handle on database `id` that signs as `author`, a key `keys` holds.
    pub fn open(&self, id: EntryId, keys: Arc<dyn KeyRing>, author: PublicKey) -> Database {
        Database::new(self.core(id), keys, author)
    }

    /// Creates a database named `name` with `author` (a key `keys` holds) as its admin, and
    /// returns a handle signing as `author`.
    pub fn create(
        &self,
        name: &str,
        keys: Arc<dyn KeyRing>,
        author: PublicKey,
    ) -> Result<Database> {
        let root = create_root(name, &*keys, author)?;
        self.create_from_root(&root, keys, author)
    }

    /// Creates the database whose root entry is `root` (made by [`create_root`], so that
    /// its id could be recorded before it is stored) and opens it, signing as `author`.
    pub fn create_from_root(
        &self,
        root: &Entry,
        keys: Arc<dyn KeyRing>,
        author: PublicKey,
    ) -> Result<Database> {
        let core = self.core(root.id());
        core.store_root(root)?;
        Ok(Database::new(core, keys, author))
    }

    /// Removes database `id` from this instance: every stored row of it, and its core, so
    /// that a later open (after it is synced here again) starts afresh. Handles still open
    /// on it fail with [`crate::Error::NotFound`] from then on.
    /// Removes nothing, and returns false, if its stored version moved on from `decided_at`
    /// (the one read from storage before deciding: [`Backend::version`]).
    pub fn forget(&self, id: &EntryId, decided_at: Version) -> Result<bool> {
        let core = self.core(*id);
        if !core.forget(decided_at)? {
            return Ok(false);
        }
        // Dropped only now, so that no new handle meanwhile got a fresh core on rows being
        // removed (one that got this core fails like the others).
        let mut cores = self.cores();
        if cores
            .held
            .get(id)
            .is_some_and(|h| Arc::ptr_eq(&h.core, &core))
        {
            cores.held.remove(id);
        }
        Ok(true)
    }

    /// Removes database `id`, which nobody else knows of (a creation abandoned part-way, or
    /// lost to a racing one), at whatever version it has; false if it was written meanwhile
    /// (then nothing is removed). A database never stored is removed at once.
    pub fn discard(&self, id: &EntryId) -> Result<bool> {
        let version = self.backend.version(id)?;
        self.forget(id, version)
    }

    /// Change notifications waiting for callbacks now (see [`RegistryLimits`]).
    pub fn notifications_queued(&self) -> u64 {
        self.notifier.queued()
    }

    /// Watchers live on this instance now, over all its databases (at most the `watchers` of
    /// [`RegistryLimits`], unless it was lowered since they started).
    pub fn watchers_live(&self) -> usize {
        self.watchers.live()
    }

    /// Bytes of foreign entries waiting for their parents across this instance now (at most
    /// the `waiting_bytes` of [`RegistryLimits`], unless it was lowered since they came).
    pub fn waiting_bytes(&self) -> usize {
        self.waiting.used()
    }

    /// What counts the waiting entries of every database, and sweeps the expired ones
    /// ([`WaitingBudget::sweep_expired`]).
    pub(crate) fn waiting_budget(&self) -> &Arc<WaitingBudget> {
        &self.waiting
    }

    /// Takes a verified entry from elsewhere (sync) into whichever database it belongs to;
    /// see [`Received`].
    pub fn receive(&self, entry: Entry) -> Result<Received> {
        self.core(entry.database_id()).receive(entry)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.others.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchers_limit_is_named_bounded_and_counted_across_databases() {
        let defaults = RegistryLimits::default();
        assert!(defaults
            .by_name()
            .contains(&("watchers", MAX_WATCHERS as u64)));
        let mut limits = defaults;
        for value in [0, 2, MAX_WATCHERS_LIMIT as u64] {
            limits.set_by_name("watchers", value).unwrap();
            assert_eq!(limits.watchers as u64, value);
            limits.validate().unwrap();
        }
        let past = limits.set_by_name("watchers", MAX_WATCHERS_LIMIT as u64 + 1);
        assert!(matches!(past, Err(crate::Error::InvalidArgument(_))));
        assert_eq!(limits.watchers, MAX_WATCHERS_LIMIT);

        let registry = Registry::new(Arc::new(crate::backend::MemoryBackend::new()));
        assert_eq!(registry.limits().watchers, MAX_WATCHERS);
        let changed = registry
            .change_limits(|l| l.set_by_name("watchers", 1))
            .unwrap();
        assert_eq!(changed.watchers, 1);
        let (a, b) = (
            registry.core(EntryId::from_bytes([1; 32])),
            registry.core(EntryId::from_bytes([2; 32])),
        );
        let watching = a.watch().unwrap();
        assert_eq!(registry.watchers_live(), 1);
        assert!(matches!(b.watch(), Err(crate::Error::Busy(_))));
        // A refused change of limits leaves the watchers' bound as it was.
        let refused = registry.change_limits(|l| {
            l.watchers = 5;
            l.set_by_name("queued_notifications", 0)
        });
        assert!(refused.is_err());
        assert_eq!(registry.limits().watchers, 1);
        drop(watching);
        assert_eq!(registry.watchers_live(), 0);
        drop(b.watch().unwrap());
    }
}
