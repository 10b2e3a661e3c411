//! Foreign entries waiting, invisible, for their parents: bounded per database (count and
//! bytes) and across the instance (bytes), and forgotten after a while. A peer that sends
//! entries whose parents never come can hold only this much, only this long; past it, its
//! entries are refused with [`Error::Busy`], which the peer sees. The bounds are
//! [`WaitingLimits`], which the instance may change at run time.
//!
//! Entries whose parents are all stored but that the database had no room for (they would
//! add a tip past its bound) are kept here too, held: refused all the same, but a child that
//! arrives later and merges the tips back may take them in with it
//! ([`super::core::DatabaseCore::receive`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::crypto::PublicKey;
use crate::entry::{Entry, EntryId};
use crate::error::{Error, Result};

/// Most entries waiting in one database, by default.
pub const MAX_WAITING_ENTRIES: usize = 100_000;
/// Most bytes waiting in one database, by default.
pub const MAX_WAITING_BYTES_PER_DATABASE: usize = 16 << 20;
/// Most bytes waiting across an instance's databases, by default.
pub const MAX_WAITING_BYTES: usize = 64 << 20;
/// How long an entry may wait for its parents before it is dropped, by default.
pub const WAITING_TTL: Duration = Duration::from_secs(600);
/// Longest time between two sweeps of expired waiting entries while sync is enabled (a
/// quarter of the waiting time, from 100 ms to this).
pub const MAX_SWEEP_PERIOD: Duration = Duration::from_secs(10);
/// Bytes counted for an entry beyond its encoding: its record (its parents, author and
/// height, kept decoded), its place in the maps and in arrival order, with the allocator's
/// share. An entry waits as its bytes alone, decoded again when it is taken out: decoded,
/// its maps of stores and keys took several times its size (about 2.2 KB for a 260-byte
/// entry, of which 386 bytes were counted).
const OVERHEAD: usize = 320;
/// Bytes counted for each parent an entry waits for: its place in the map of what waits
/// on each parent (a slot and a list).
const PER_MISSING_PARENT: usize = 320;
/// Most entries held for want of room in one database: past it, the longest held of the
/// author holding the most is dropped (it is refused all the same, and sent again by its
/// peer), so that a writer flooding entries cannot push out another's.
pub const MAX_HELD: usize = 64;

/// Bounds on the foreign entries waiting for their parents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitingLimits {
    /// Entries waiting in one database at most ([`MAX_WAITING_ENTRIES`]).
    pub entries_per_database: usize,
    /// Bytes waiting in one database at most ([`MAX_WAITING_BYTES_PER_DATABASE`]).
    pub bytes_per_database: usize,
    /// Bytes waiting across the instance at most ([`MAX_WAITING_BYTES`]).
    pub bytes: usize,
    /// How long an entry waits before it is dropped ([`WAITING_TTL`]); whole milliseconds.
    pub time: Duration,
}

impl Default for WaitingLimits {
    fn default() -> Self {
        WaitingLimits {
            entries_per_database: MAX_WAITING_ENTRIES,
            bytes_per_database: MAX_WAITING_BYTES_PER_DATABASE,
            bytes: MAX_WAITING_BYTES,
            time: WAITING_TTL,
        }
    }
}

/// The instance-wide count of waiting bytes, the bounds in force, and the databases that
/// hold some (to sweep their expired entries when the budget runs out).
pub(crate) struct WaitingBudget {
    used: AtomicUsize,
    max_entries_per_database: AtomicUsize,
    max_bytes_per_database: AtomicUsize,
    max_bytes: AtomicUsize,
    max_wait_ms: AtomicU64,
    members: Mutex<Vec<Weak<Mutex<Waiting>>>>,
}

impl WaitingBudget {
    /// An empty budget bounded by `limits`.
    pub(crate) fn new(limits: WaitingLimits) -> Self {
        let budget = WaitingBudget {
            used: AtomicUsize::new(0),
            max_entries_per_database: AtomicUsize::new(0),
            max_bytes_per_database: AtomicUsize::new(0),
            max_bytes: AtomicUsize::new(0),
            max_wait_ms: AtomicU64::new(0),
            members: Mutex::default(),
        };
        budget.set_limits(limits);
        budget
    }

    /// The bounds in force.
    pub(crate) fn limits(&self) -> WaitingLimits {
        WaitingLimits {
            entries_per_database: self.max_entries_per_database.load(Ordering::Acquire),
            bytes_per_database: self.max_bytes_per_database.load(Ordering::Acquire),
            bytes: self.max_bytes.load(Ordering::Acquire),
            time: Duration::from_millis(self.max_wait_ms.load(Ordering::Acquire)),
        }
    }

    /// Bounds what waits from now on by `limits`. Entries already waiting past a lowered
    /// bound stay until their parents come or they expire; only new ones are refused.
    pub(crate) fn set_limits(&self, limits: WaitingLimits) {
        let wait_ms = u64::try_from(limits.time.as_millis()).unwrap_or(u64::MAX);
        self.max_entries_per_database
            .store(limits.entries_per_database, Ordering::Release);
        self.max_bytes_per_database
            .store(limits.bytes_per_database, Ordering::Release);
        self.max_bytes.store(limits.bytes, Ordering::Release);
        self.max_wait_ms.store(wait_ms, Ordering::Release);
    }

    /// Bytes waiting across the instance now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn try_reserve(&self, bytes: usize) -> bool {
        let max = self.max_bytes.load(Ordering::Acquire);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= max).then_some(used + bytes)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn register(&self, waiting: &Arc<Mutex<Waiting>>) {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        members.retain(|m| m.strong_count() > 0);
        members.push(Arc::downgrade(waiting));
    }

    /// Drops the entries that waited past their time, in every database not being changed
    /// right now.
    pub(crate) fn sweep_expired(&self) {
        if self.used() > 0 {
            self.sweep(Instant::now());
        }
    }

    /// How long to wait between two sweeps, so that a database no entry arrives in again
    /// lets its expired entries go too: a quarter of the time limit in force, from 100 ms to
    /// [`MAX_SWEEP_PERIOD`].
    pub(crate) fn sweep_period(&self) -> Duration {
        (self.limits().time / 4).clamp(Duration::from_millis(100), MAX_SWEEP_PERIOD)
    }

    /// Drops the expired entries of every database not busy right now (one being changed
    /// is skipped: it expires its own on its next use).
    fn sweep(&self, now: Instant) {
        let members: Vec<_> = self
            .members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for member in members {
            if let Ok(mut waiting) = member.try_lock() {
                waiting.expire(now);
            }
        }
    }
}

/// An entry waiting: its bytes (verified when it came), and what the waiting area reads
/// of it decoded.
struct Parked {
    bytes: Box<[u8]>,
    parents: Box<[EntryId]>,
    author: PublicKey,
    /// The bytes counted for it.
    size: usize,
}

impl Parked {
    /// The entry, decoded again (it was verified when it came). Its bytes decoded once
    /// already, so this cannot fail; were it to, the entry is dropped, as if expired.
    fn decode(&self) -> Option<Entry> {
        let decoded = Entry::decode_stored(&self.bytes);
        debug_assert!(decoded.is_ok(), "a waiting entry decodes again");
        decoded.ok()
    }
}

/// The entries of one database waiting for parents.
pub(crate) struct Waiting {
    budget: Arc<WaitingBudget>,
    entries: HashMap<EntryId, Parked>,
    /// Parent id → the waiting children that need it.
    waiting_on: HashMap<EntryId, Vec<EntryId>>,
    /// Arrival order, for expiry.
    arrivals: VecDeque<(Instant, EntryId)>,
    bytes: usize,
    /// The entries here held for want of room, not for their parents, oldest first.
    held: VecDeque<EntryId>,
}

impl Waiting {
    /// An empty waiting area drawing on the instance's `budget`.
    pub(crate) fn new(budget: Arc<WaitingBudget>) -> Arc<Mutex<Waiting>> {
        let waiting = Arc::new(Mutex::new(Waiting {
            budget: budget.clone(),
            entries: HashMap::new(),
            waiting_on: HashMap::new(),
            arrivals: VecDeque::new(),
            bytes: 0,
            held: VecDeque::new(),
        }));
        budget.register(&waiting);
        waiting
    }

    /// True if `id` is waiting here, for its parents or held.
    pub(crate) fn contains(&self, id: &EntryId) -> bool {
        self.entries.contains_key(id)
    }

    /// True if `id` is held here for want of room (see [`Waiting::hold`]).
    pub(crate) fn is_held(&self, id: &EntryId) -> bool {
        self.held.contains(id)
    }

    /// True if some entry is held here.
    pub(crate) fn holds_any(&self) -> bool {
        !self.held.is_empty()
    }

    /// Keeps `entry`, whose parents are all stored, held for want of room (at most
    /// [`MAX_HELD`]: past it, the longest held of the author holding the most makes way):
    /// counted and expired as the entries waiting for parents are. [`Error::Busy`] as
    /// [`Waiting::add`].
    pub(crate) fn hold(&mut self, entry: Entry, now: Instant) -> Result<()> {
        let id = entry.id();
        if self.contains(&id) {
            return Ok(());
        }
        if self.held.len() >= MAX_HELD {
            if let Some(longest) = self.longest_held_of_the_most_holding() {
                self.remove(&longest);
            }
        }
        self.add(entry, Vec::new(), now)?;
        self.held.push_back(id);
        Ok(())
    }

    /// The entry held longest of the author that has the most held.
    fn longest_held_of_the_most_holding(&self) -> Option<EntryId> {
        let author_of = |id: &EntryId| self.entries.get(id).map(|parked| parked.author);
        let mut counts: HashMap<_, usize> = HashMap::new();
        for id in &self.held {
            if let Some(author) = author_of(id) {
                *counts.entry(author).or_default() += 1;
            }
        }
        let most = counts.into_iter().max_by_key(|(_, n)| *n)?.0;
        self.held
            .iter()
            .find(|id| author_of(id) == Some(most))
            .copied()
    }

    /// Entries waiting here.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Makes `entry` wait for `missing` parents. [`Error::Busy`] when this database or the
    /// instance cannot hold more now (send parents first, or retry later).
    pub(crate) fn add(&mut self, entry: Entry, missing: Vec<EntryId>, now: Instant) -> Result<()> {
        self.expire(now);
        let limits = self.budget.limits();
        let size = entry.bytes().len()
            + OVERHEAD
            + 32 * entry.content().parents.len()
            + PER_MISSING_PARENT * missing.len();
        if self.entries.len() >= limits.entries_per_database
            || self.bytes + size > limits.bytes_per_database
        {
            return Err(Error::Busy(format!(
                "this database already holds {} entries waiting for their parents; send parents first",
                self.entries.len()
            )));
        }
        if !self.budget.try_reserve(size) {
            self.budget.sweep(now);
            if !self.budget.try_reserve(size) {
                return Err(Error::Busy(
                    "too many entries are waiting for their parents on this instance; retry later"
                        .into(),
                ));
            }
        }
        let id = entry.id();
        for parent in missing {
            self.waiting_on.entry(parent).or_default().push(id);
        }
        self.arrivals.push_back((now, id));
        let parked = Parked {
            parents: entry.content().parents.clone().into_boxed_slice(),
            author: entry.content().author,
            bytes: entry.into_bytes().into_boxed_slice(),
            size,
        };
        self.entries.insert(id, parked);
        self.bytes += size;
        Ok(())
    }

    /// The waiting children that need `parent` (forgetting that they need it).
    pub(crate) fn children_of(&mut self, parent: &EntryId) -> Vec<EntryId> {
        self.waiting_on.remove(parent).unwrap_or_default()
    }

    /// The waiting children that need `parent`, which stay waiting.
    pub(crate) fn children_waiting_on(&self, parent: &EntryId) -> &[EntryId] {
        self.waiting_on.get(parent).map_or(&[], Vec::as_slice)
    }

    /// The parents of waiting entry `id`, if it is waiting.
    pub(crate) fn parents(&self, id: &EntryId) -> Option<&[EntryId]> {
        self.entries.get(id).map(|parked| &parked.parents[..])
    }

    /// The waiting entry `id`, decoded again, if any (it stays waiting).
    pub(crate) fn entry(&self, id: &EntryId) -> Option<Entry> {
        self.entries.get(id).and_then(Parked::decode)
    }

    /// Takes `id` out of the waiting area, decoded again.
    pub(crate) fn take(&mut self, id: &EntryId) -> Option<Entry> {
        self.drop_entry(id).as_ref().and_then(Parked::decode)
    }

    /// Drops `id` from the waiting area.
    pub(crate) fn remove(&mut self, id: &EntryId) {
        self.drop_entry(id);
    }

    fn drop_entry(&mut self, id: &EntryId) -> Option<Parked> {
        let parked = self.entries.remove(id)?;
        self.held.retain(|h| h != id);
        self.bytes -= parked.size;
        self.budget.release(parked.size);
        Some(parked)
    }

    /// Drops entries that waited as long as the budget's limits allow ([`WAITING_TTL`] by
    /// default), oldest first.
    pub(crate) fn expire(&mut self, now: Instant) {
        let max_wait = self.budget.limits().time;
        while let Some((arrived, id)) = self.arrivals.front().copied() {
            if now.duration_since(arrived) < max_wait {
                break;
            }
            self.arrivals.pop_front();
            if let Some(parked) = self.drop_entry(&id) {
                for parent in &parked.parents[..] {
                    if let Some(children) = self.waiting_on.get_mut(parent) {
                        children.retain(|c| *c != id);
                        if children.is_empty() {
                            self.waiting_on.remove(parent);
                        }
                    }
                }
            }
        }
        // Entries applied or dropped earlier leave their arrival behind: trim those too.
        if self.arrivals.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.arrivals.retain(|(_, id)| entries.contains_key(id));
        }
        // After a flood, the maps give back what they grew to (not counted in the budget).
        if self.entries.capacity() > 4 * self.entries.len() + 64 {
            self.entries.shrink_to_fit();
            self.waiting_on.shrink_to_fit();
            self.arrivals.shrink_to_fit();
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}
