//! The shared core of one database: validation, application of entries, foreign entries
//! waiting for their parents, settings cache and subscribers.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::authority::{self, Level};
use super::discards::{self, DiscardIndex};
use super::documents;
use super::events::{Events, WatcherBudget};
use super::notice_order::{NoticeOrder, Ticket};
use super::others::{Heard, OtherProcesses, ENTRIES_PER_POLL};
use super::settings::{self, Permission, Settings};
use super::settings_cache::SettingsCache;
use super::subscribe::{Callback, Change, Notifier, Origin, Subscribers, Subscription};
use super::waiting::{Waiting, WaitingBudget};
use super::SETTINGS_STORE;
use crate::backend::{Backend, Cell, CellReads, EntryMeta, EntryWrite, Staged, Version};
use crate::crypto::{KeyRing, PublicKey};
use crate::entry::{Entry, EntryContent, EntryId, Op, Ops, MAX_PARENTS};
use crate::error::{quoted, Error, Result};

mod held;
mod receive;
mod stored_metas;
mod write_lock;

use stored_metas::StoredMetas;
use write_lock::{WriteGuard, WriteLock};

/// The most operations a commit plans and signs inside its write turn, holding the
/// backend's writer (and so every other database's commits) meanwhile: a larger commit
/// makes the staged commit it builds on durable first, and plans and signs outside.
/// Planning and signing take about 1.8 us an operation, a lone durable `sqlite:` commit
/// about 240 us (BENCHMARKS.md): past this many operations, making the staged commit
/// durable on its own holds the writer for less time than planning inside the turn.
pub(crate) const MAX_OPS_MADE_IN_TURN: usize = 256;

/// The number of operations in `ops`, over all stores.
fn op_count(ops: &Ops) -> usize {
    ops.values().map(BTreeMap::len).sum()
}

/// What became of a foreign entry.
#[derive(Debug, Default)]
pub struct Received {
    /// Entries now visible: the one received and any waiting children it completed.
    pub applied: Vec<EntryId>,
    /// True when the entry waits, invisible, for missing parents.
    pub pending: bool,
    /// True when the entry was already stored.
    pub duplicate: bool,
    /// Waiting children that turned out invalid once their parents arrived: dropped.
    pub rejected: Vec<(EntryId, Error)>,
    /// Entries stored with no effect: a revocation or demotion of their author they had not
    /// seen discards them (docs/security-model.md).
    pub discarded: Vec<EntryId>,
}

/// The discard index of a database, held under its lock.
struct DiscardGuard<'a>(MutexGuard<'a, Option<DiscardIndex>>);

impl std::ops::Deref for DiscardGuard<'_> {
    type Target = DiscardIndex;
    fn deref(&self) -> &DiscardIndex {
        self.0.as_ref().expect("loaded when the guard was made")
    }
}

impl std::ops::DerefMut for DiscardGuard<'_> {
    fn deref_mut(&mut self) -> &mut DiscardIndex {
        self.0.as_mut().expect("loaded when the guard was made")
    }
}

/// Whether the stored state may lack the undoing of a revocation (see
/// [`DatabaseCore::undo_pending`]): not checked in this process yet, or since another
/// process wrote (it may have stopped half-way through one).
const UNDO_UNCHECKED: u8 = 0;
/// The stored state is what the stored entries make of it, as far as this process knows.
const UNDO_NONE: u8 = 1;
/// A revocation may be stored without its undoing: work the state out again.
const UNDO_PENDING: u8 = 2;

/// The instance metadata record that says database `db`'s state must be worked out again
/// (a revocation may be stored without the undoing of what it discards). Written before
/// the revocation is stored, with a fresh random token ([`UNDO_TOKEN_BYTES`]), and removed
/// once the state is replaced, only if it still holds the token read before the state was
/// worked out: a revocation stored meanwhile wrote a new one, and its undoing stays asked.
fn undo_pending_record(db: &EntryId) -> String {
    format!("undo-pending/{db}")
}

/// Bytes of the random token an undo record holds (see [`undo_pending_record`]).
const UNDO_TOKEN_BYTES: usize = 16;

/// How many times a change is worked out again because another process wrote the database
/// between its reads and its write (see [`DatabaseCore::known_version`]) before it gives
/// up with [`Error::Busy`].
const STALE_TRIES: usize = 16;

/// After how many tries a change other processes' writes overtook is worked out again
/// holding the database's write lock in storage ([`Backend::hold_for_turn`]), so that the
/// next try is the last: a settings change reads every tip, and without the lock, writers
/// in other processes overtook it until it gave up.
const HOLD_AFTER_TRIES: usize = 2;

fn kept_changing() -> Error {
    Error::Busy("other processes kept changing the database; retry".into())
}

/// What a new entry will be, worked out before it is stored.
struct Plan {
    meta: EntryMeta,
    /// The keys it lowers, with their new level (settings changes only).
    lowers: Vec<(PublicKey, Level)>,
    /// A local commit's parent is the tip memory remembered ([`Known::sole_tip`]).
    on_remembered_tip: bool,
    /// A local commit's parents are every tip (false only past [`MAX_PARENTS`] tips).
    on_every_tip: bool,
}

/// How an entry comes to be stored ([`DatabaseCore::apply`]).
#[derive(Clone, Copy)]
enum Arrival {
    /// Made here on top of the tips: those read from storage, or the one memory
    /// `remembered` ([`Known::sole_tip`]), which holds only while nothing else is written;
    /// `on_every_tip` unless there were more than [`MAX_PARENTS`].
    Local {
        remembered: bool,
        on_every_tip: bool,
    },
    /// From elsewhere: in effect, or `discarded` on arrival.
    Received { discarded: bool },
}

/// What this process knows of the database's rows.
struct Known {
    /// The version that what memory holds reflects (see [`DatabaseCore::known_version`]).
    version: Version,
    /// True when `version` is what this process's own write returned (not read from
    /// storage, as at first use or after another process's write was found).
    written_here: bool,
    /// The only tip at `version`, with its metadata, when this process's own commit made
    /// that version directly on top of every tip ([`crate::backend::Put::directly_after`]):
    /// the next commit builds on it without reading the tips.
    sole_tip: Option<(EntryId, EntryMeta)>,
}

/// What became of a valid entry from elsewhere.
enum Outcome {
    /// Stored and in effect.
    Applied,
    /// Stored, with no effect (see [`super::discards`]).
    Discarded,
    /// Not stored: it would add a tip past [`MAX_PARENTS`] ([`Room::Bounded`]).
    NoRoom,
}

/// Whether an entry from elsewhere may add a tip when the database has [`MAX_PARENTS`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Room {
    /// No: one more tip than the next commit may have parents.
    Bounded,
    /// Yes: it comes with children that merge the tips back ([`held`]).
    Unbounded,
}

/// The parents of a commit among `tips` (sorted by id): all of them, and true; or, when a
/// database holds more tips than one entry may have parents (held entries taken in together
/// whose merging child then failed to store, or a database stored before the bound), the
/// `most` highest (by height, then id), sorted by id again, and false: the next commits merge
/// the rest, `most` at a time.
fn parents_among(
    mut tips: Vec<(EntryId, EntryMeta)>,
    most: usize,
) -> (Vec<(EntryId, EntryMeta)>, bool) {
    if tips.len() <= most {
        return (tips, true);
    }
    tips.sort_by(|(a, x), (b, y)| y.height.cmp(&x.height).then(a.cmp(b)));
    tips.truncate(most);
    tips.sort_by_key(|(a, _)| *a);
    (tips, false)
}

/// Whether an entry with `parents` would add a tip to `tips` past [`MAX_PARENTS`]: it
/// builds on none of them.
fn adds_tip_past_bound(tips: &[EntryId], parents: &[EntryId]) -> bool {
    tips.len() >= MAX_PARENTS && !tips.iter().any(|t| parents.contains(t))
}

/// State shared by every handle on one database within an instance.
pub struct DatabaseCore {
    id: EntryId,
    backend: Arc<dyn Backend>,
    /// Serialises changes so each local commit's parents are the tips it saw and each
    /// cell update reads the winner it replaces; each waits at most the backend's
    /// [`Backend::lock_wait`].
    write_lock: WriteLock,
    /// Foreign entries waiting for their parents (taken after `write_lock`, never before).
    waiting: Arc<Mutex<Waiting>>,
    settings: SettingsCache,
    /// Grows whenever the settings of this database change (read permissions may differ).
    settings_generation: AtomicU64,
    /// Which entries the settings discard (loaded at first use; taken after `write_lock`).
    discards: Mutex<Option<DiscardIndex>>,
    subscribers: Arc<Subscribers>,
    notifier: Arc<Notifier>,
    /// The instance's count of watchers, which [`DatabaseCore::watch`] takes a place in.
    watchers: Arc<WatcherBudget>,
    /// The stores with nested documents (loaded at first use, and again after a recompute
    /// or when another process changed the version's shape; grows with this process's
    /// writes once they are stored).
    document_stores: Mutex<Option<HashSet<String>>>,
    /// Set (under `write_lock`) once the database was forgotten on this instance: this core
    /// then refuses everything with [`Error::NotFound`].
    forgotten: AtomicBool,
    /// The newest local commit, if its write turn left it staged (stored, not yet durable;
    /// see [`Backend::write_turn`]): the next commit builds on it within the writer's turn,
    /// anything else makes it durable first. Taken after `write_lock`.
    staged: Mutex<Option<Arc<dyn Staged>>>,
    /// Announces changes to `subscribers` in the order they were made.
    notices: NoticeOrder,
    /// `UNDO_UNCHECKED`, `UNDO_NONE` or `UNDO_PENDING`: see [`DatabaseCore::undo_pending`].
    undo: AtomicU8,
    /// What this process knows of the database's rows; `None` once forgotten with what
    /// memory derived.
    known: Mutex<Option<Known>>,
    /// While subscribers hear other processes' entries (see [`super::others`]): how far
    /// they were read, and what this process stored since. Changed under `write_lock`.
    heard: Mutex<Option<Heard>>,
    /// The instance's poll of other processes' entries.
    others: Arc<OtherProcesses>,
    /// Entries' metadata read back lately (see [`DatabaseCore::stored_meta`]).
    stored_metas: StoredMetas,
}

/// This thread on its way to a write turn, announced (see [`Backend::announce_write`])
/// until it takes the turn or withdraws; withdrawn if dropped meanwhile.
struct WriteIntent<'a> {
    backend: &'a dyn Backend,
    announced: bool,
}

impl<'a> WriteIntent<'a> {
    fn announce(backend: &'a dyn Backend) -> Self {
        backend.announce_write();
        WriteIntent {
            backend,
            announced: true,
        }
    }

    /// No longer company for others' turns (the turn is still taken, later).
    fn withdraw(&mut self) {
        if std::mem::take(&mut self.announced) {
            self.backend.withdraw_write();
        }
    }

    fn take_turn(
        mut self,
        work: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Option<Arc<dyn Staged>>> {
        let announced = std::mem::take(&mut self.announced);
        self.backend.write_turn(announced, work)
    }
}

impl Drop for WriteIntent<'_> {
    fn drop(&mut self) {
        self.withdraw();
    }
}

impl DatabaseCore {
    /// The core of database `id` on `backend`, notifying through `notifier`, holding
    /// entries that wait for parents within `budget`, watchers within `watchers`, hearing
    /// other processes through `others`.
    pub(crate) fn new(
        id: EntryId,
        backend: Arc<dyn Backend>,
        notifier: Arc<Notifier>,
        budget: Arc<WaitingBudget>,
        watchers: Arc<WatcherBudget>,
        others: Arc<OtherProcesses>,
    ) -> Self {
        DatabaseCore {
            id,
            backend,
            write_lock: WriteLock::default(),
            waiting: Waiting::new(budget),
            settings: SettingsCache::default(),
            settings_generation: AtomicU64::new(1),
            discards: Mutex::new(None),
            subscribers: Arc::default(),
            notifier,
            watchers,
            document_stores: Mutex::new(None),
            forgotten: AtomicBool::new(false),
            staged: Mutex::new(None),
            notices: NoticeOrder::default(),
            undo: AtomicU8::new(UNDO_UNCHECKED),
            known: Mutex::new(None),
            heard: Mutex::new(None),
            others,
            stored_metas: StoredMetas::default(),
        }
    }

    /// The database's id.
    pub fn id(&self) -> EntryId {
        self.id
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The write lock, with a staged commit made durable first and the stored state brought
    /// up to date ([`DatabaseCore::undo_pending`]): for changes and checks that read
    /// through the backend's ordinary reads.
    fn lock(&self) -> Result<WriteGuard<'_>> {
        let guard = self.settled_lock()?;
        self.undo_pending()?;
        Ok(guard)
    }

    /// Fails unless the stored state is what the stored entries make of it, as far as this
    /// process knows: once per process, and after a revocation's undoing failed, this
    /// brings it up to date ([`DatabaseCore::undo_pending`]). Otherwise one atomic load.
    pub(crate) fn ensure_current(&self) -> Result<()> {
        if self.undo.load(Ordering::Acquire) == UNDO_NONE {
            return Ok(());
        }
        self.lock().map(drop)
    }

    /// The write lock with a staged commit made durable first (see [`DatabaseCore::lock`]).
    fn settled_lock(&self) -> Result<WriteGuard<'_>> {
        let guard = self.commit_lock()?;
        let staged = self.staged_commit().take();
        if let Some(staged) = staged {
            if staged.settle_now().is_err() {
                self.forget_derived_state();
            }
        }
        Ok(guard)
    }

    /// The write lock alone, a staged commit left as it is (see [`DatabaseCore::commit`]),
    /// after this process's writes to the database that came first: [`Error::Busy`] when
    /// they keep it longer than the backend's [`Backend::lock_wait`] (a storage that stopped
    /// answering keeps each of them waiting up to its bound). After a write that panicked
    /// while holding it (a bug, caught at the C boundary), what is kept in memory of the
    /// stored state is dropped, as after a failed write, and the database goes on: it is
    /// read again from storage.
    fn commit_lock(&self) -> Result<WriteGuard<'_>> {
        let within = self.backend.lock_wait();
        let Some(taken) = self.write_lock.take(within) else {
            let waited = within.unwrap_or_default().as_millis();
            return Err(Error::Busy(format!(
                "this process's other writes to the database kept it for more than {waited} ms; \
                 retry"
            )));
        };
        if taken.after_panic {
            self.forget_derived_state();
        }
        Ok(taken.guard)
    }

    fn staged_commit(&self) -> MutexGuard<'_, Option<Arc<dyn Staged>>> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Storing a revocation that arrives after what it discards, and undoing their effect
    /// (replacing the state), are two writes; a record written before the first and removed
    /// after the second says when the second may be missing (it failed, or the process
    /// stopped in between). The record is looked for at this database's first use in this
    /// process, and again before each change while the undoing is pending here (another
    /// process may have done it meanwhile: then nothing is left to do); while it is there,
    /// the state is worked out again here. Callers hold the write lock, with nothing staged.
    fn undo_pending(&self) -> Result<()> {
        if self.undo.load(Ordering::Acquire) == UNDO_NONE {
            return Ok(());
        }
        let Some(token) = self.backend.meta_get(&undo_pending_record(&self.id))? else {
            self.undo.store(UNDO_NONE, Ordering::Release);
            return Ok(());
        };
        self.undo_discarded(&token)
    }

    /// Works out which entries take effect from all of them and replaces the stored state
    /// with the result ([`discards::recompute`]), then removes the record that asked for it
    /// if it still holds `token` (read before): nothing is pending then. A record that
    /// holds another token asks for a revocation stored since, which this undoing may have
    /// missed: it stays, and the undoing stays pending. On failure, memory forgets what it
    /// derived (it may reflect the state being replaced) and the undoing stays pending.
    /// Callers hold the write lock.
    fn undo_discarded(&self, token: &[u8]) -> Result<()> {
        let undone = self.recompute().and_then(|()| {
            self.settings.clear();
            self.settings_generation.fetch_add(1, Ordering::AcqRel);
            self.backend
                .meta_delete(&undo_pending_record(&self.id), Some(token))
        });
        match undone {
            Ok(true) => self.undo.store(UNDO_NONE, Ordering::Release),
            Ok(false) => self.undo.store(UNDO_PENDING, Ordering::Release),
            Err(_) => {
                self.undo.store(UNDO_PENDING, Ordering::Release);
                self.forget_derived_state();
            }
        }
        undone.map(drop)
    }

    /// [`discards::recompute`], worked out again while other processes write meanwhile; the
    /// discard index it returns replaces memory's.
    fn recompute(&self) -> Result<()> {
        for _ in 0..STALE_TRIES {
            let expected = self.known_version()?;
            match discards::recompute(&*self.backend, &self.id, expected)? {
                Some((index, version)) => {
                    *self.discards.lock().unwrap_or_else(|p| p.into_inner()) = Some(index);
                    // It may have undone every document of a store.
                    *self
                        .document_stores
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = None;
                    self.settle_version(version, None);
                    return Ok(());
                }
                None => self.catch_up()?,
            }
        }
        Err(kept_changing())
    }

    /// The version of this database's rows that what memory holds of it reflects (the
    /// discard index and the document stores: the version's shape), and what a change read
    /// to work itself out. Read from storage before any of them is loaded; then, after each
    /// write of this process, the version that write returned. A write states it, and
    /// storage refuses the write when another process's change moved it on meanwhile (the
    /// shape; for a write that read tips or document rows, the count too): the change is
    /// worked out again ([`DatabaseCore::catch_up`]), at most [`STALE_TRIES`] times.
    fn known_version(&self) -> Result<Version> {
        let mut known = self.known();
        if let Some(known) = &*known {
            return Ok(known.version);
        }
        let version = self.backend.version(&self.id)?;
        *known = Some(Known {
            version,
            written_here: false,
            sole_tip: None,
        });
        Ok(version)
    }

    fn known(&self) -> MutexGuard<'_, Option<Known>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The only tip, if this process's last write left it so and nothing since changed what
    /// memory knows ([`Known::sole_tip`]). A write built on it must find the count unchanged.
    fn remembered_tip(&self) -> Option<(EntryId, EntryMeta)> {
        self.known().as_ref().and_then(|k| k.sole_tip.clone())
    }

    /// After storage refused a write as stale: reads the version again, and forgets what
    /// memory holds of the database only if its shape moved on (another process changed
    /// settings or stores of documents). A change worked out again then reads the rest anew.
    fn catch_up(&self) -> Result<()> {
        let now = self.backend.version(&self.id)?;
        let mut known = self.known();
        if known.as_ref().is_some_and(|k| k.version.same_shape(&now)) {
            *known = Some(Known {
                version: now,
                written_here: false,
                sole_tip: None,
            });
            return Ok(());
        }
        drop(known);
        self.forget_derived_state();
        Ok(())
    }

    /// Records the version this process's own write returned, and the tip it left if it is
    /// the only one.
    fn settle_version(&self, version: Version, sole_tip: Option<(EntryId, EntryMeta)>) {
        *self.known() = Some(Known {
            version,
            written_here: true,
            sole_tip,
        });
    }

    /// Drops what is kept in memory of the stored state (loaded again from storage at next
    /// use, after the version is read again): after a staged commit failed, it may include
    /// that commit's effects; after another process wrote, it may lack theirs.
    fn forget_derived_state(&self) {
        *self.known() = None;
        // Look for the record again at the next change or read.
        let _ = self.undo.compare_exchange(
            UNDO_NONE,
            UNDO_UNCHECKED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        *self.discards.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self
            .document_stores
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        self.settings.clear();
        self.settings_generation.fetch_add(1, Ordering::AcqRel);
        self.stored_metas.clear();
    }

    /// The metadata of stored entry `id`, if it is stored: kept in memory once read, so that
    /// the children of an entry holding a large value do not each read all of it again.
    pub(super) fn stored_meta(&self, id: &EntryId) -> Result<Option<EntryMeta>> {
        if let Some(meta) = self.stored_metas.get(id) {
            return Ok(Some(meta));
        }
        let found = self.backend.entry_meta(id)?;
        if let Some(meta) = &found {
            self.stored_metas.keep(*id, meta);
        }
        Ok(found)
    }

    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Error::NotFound`] once `DatabaseCore::forget` ran: the handles still holding
    /// this core outlived their database.
    pub fn ensure_kept(&self) -> Result<()> {
        if self.forgotten.load(Ordering::Acquire) {
            return Err(Error::NotFound(format!(
                "database {} was forgotten on this instance",
                self.id
            )));
        }
        Ok(())
    }

    /// Removes every stored row of this database if its version is still `decided_at` (see
    /// [`Backend::forget_database`]) and retires this core: afterwards its handles fail with
    /// [`Error::NotFound`]. Holds the write lock meanwhile, so no commit lands half-way.
    /// False, and the core kept, when another process wrote since `decided_at`.
    pub(crate) fn forget(&self, decided_at: Version) -> Result<bool> {
        let _guard = self.settled_lock()?;
        self.forgotten.store(true, Ordering::Release);
        let removed = self.backend.forget_database(&self.id, decided_at);
        if !matches!(removed, Ok(true)) {
            self.forgotten.store(false, Ordering::Release);
            return removed;
        }
        // The database is forgotten whatever comes of this: a record left behind (the
        // storage busy just then) only makes a copy stored again later work its state out
        // once more. Failing here would tell the caller the forget failed.
        let _ = self
            .backend
            .meta_delete(&undo_pending_record(&self.id), None);
        Ok(true)
    }

    /// A number that grows whenever this database's settings change.
    pub fn settings_generation(&self) -> u64 {
        self.settings_generation.load(Ordering::Acquire)
    }

    /// True when nothing held here would be lost with this core: no subscription or event
    /// queue, no foreign entry waiting for parents (expired ones are dropped first), no
    /// commit still staged, no undoing of a revocation pending. A fresh core reads the
    /// rest from storage again. Only meaningful while nothing else refers to this core (the
    /// registry checks), so that none of this can change meanwhile.
    pub(crate) fn is_idle(&self) -> bool {
        if Arc::strong_count(&self.subscribers) > 1
            || self.undo.load(Ordering::Acquire) == UNDO_PENDING
            || self
                .staged_commit()
                .as_ref()
                .is_some_and(|s| s.settled().is_none())
        {
            return false;
        }
        // The instance's sweep of expired entries may hold it for a moment: busy, then.
        self.waiting.try_lock().is_ok_and(|mut waiting| {
            waiting.expire(Instant::now());
            waiting.len() == 0
        })
    }

    /// Entries waiting for their parents in this database now.
    pub fn waiting_entries(&self) -> usize {
        self.waiting().len()
    }

    /// True if the entry is stored here or waiting for its parents.
    pub fn knows(&self, id: &EntryId) -> Result<bool> {
        // Only entries of this database: asked by a reader of this one over sync, another
        // database's entries are none of its business. Its row's database only, not the
        // entry (a peer lists or asks about a thousand at a time, each up to 16 MiB).
        // Not from the metadata kept in memory: a turn taking received entries keeps those it
        // reads before they are durable.
        if self.backend.entry_db(id)? == Some(self.id) {
            return Ok(true);
        }
        // A held entry was refused, and one whose parents have all come was not taken in
        // (its release was kept out, the database busy): a peer is to send it again.
        self.waits_for_parents(id)
    }

    /// Whether entry `id` waits for parents not stored yet (not held for want of room).
    fn waits_for_parents(&self, id: &EntryId) -> Result<bool> {
        let parents = {
            let waiting = self.waiting();
            match waiting.parents(id) {
                Some(parents) if !waiting.is_held(id) => parents.to_vec(),
                _ => return Ok(false),
            }
        };
        Ok(!self.missing_parents(&parents)?.is_empty())
    }

    /// True once the root entry is stored.
    pub fn exists(&self) -> Result<bool> {
        Ok(self.backend.entry_meta(&self.id)?.is_some())
    }

    /// The settings visible to a child of the current tips.
    pub fn current_settings(&self) -> Result<Arc<Settings>> {
        let parents = self.tip_metas()?;
        self.settings_at(&settings::visible_from(&*self.backend, &parents)?)
    }

    /// The permission `key` has now, counting only settings changes that took effect: what
    /// the current settings give it, capped by its grant in the database's state. A grant
    /// made by a discarded change (rule 4 of docs/security-model.md) is in the former, as
    /// the branch it was made on saw it, but never in the latter.
    pub fn effective_permission_of(&self, key: &PublicKey) -> Result<Option<Permission>> {
        self.effective_in(&*self.current_settings()?, key)
    }

    /// Of `keys`, the one with the highest permission now (counting only settings changes
    /// that took effect, as [`DatabaseCore::effective_permission_of`]) and that permission;
    /// among equals, the earliest in `keys`. `None` if no key has any.
    pub fn best_key(&self, keys: &[PublicKey]) -> Result<Option<(PublicKey, Permission)>> {
        let settings = self.current_settings()?;
        let mut best: Option<(PublicKey, Permission)> = None;
        for key in keys {
            if let Some(p) = self.effective_in(&settings, key)? {
                if best.is_none_or(|(_, b)| p > b) {
                    best = Some((*key, p));
                }
            }
        }
        Ok(best)
    }

    /// `key`'s permission in `settings` (the current ones), capped by its grant in the
    /// state.
    fn effective_in(&self, settings: &Settings, key: &PublicKey) -> Result<Option<Permission>> {
        let Some(visible) = settings.permission_of(key) else {
            return Ok(None);
        };
        let cell = self
            .backend
            .cell(&self.id, SETTINGS_STORE, &settings::auth_key(key))?;
        let stored = match cell.and_then(|c| c.value) {
            Some(json) => settings::parse_auth_value(&json)?.level(),
            None => None,
        };
        Ok(stored.map(|level| level.min(visible)))
    }

    /// The settings at settings tips `tips`: cached, or evaluated from storage. Several
    /// tips are evaluated together, from all their entries: which changes take effect
    /// depends on what the branches hold together (a lowering in one discards the lowered
    /// key's concurrent changes in another). Evaluation reads storage, so it runs outside
    /// the cache's lock; two threads may evaluate the same tips at once and get the same
    /// result.
    fn settings_at(&self, tips: &[EntryId]) -> Result<Arc<Settings>> {
        if tips.is_empty() {
            return Ok(Arc::default());
        }
        if let Some(found) = self.settings.get(tips) {
            return Ok(found);
        }
        let state = Arc::new(Settings::evaluate(&*self.backend, tips)?);
        self.settings.insert(tips.to_vec(), state.clone());
        Ok(state)
    }

    /// Calls `callback` on the instance's notification thread after every change of this
    /// database, local or remote (from sync, or from another process writing the same
    /// storage), until the returned [`Subscription`] is dropped.
    pub fn subscribe(self: &Arc<Self>, callback: Callback) -> Result<Subscription> {
        self.start_hearing(|| {
            Subscription::start(self.subscribers.clone(), &self.notifier, callback)
        })
    }

    /// Queues every change of this database from now on, local or remote (as
    /// [`DatabaseCore::subscribe`] hears them), for the returned [`Events`] to read; fails
    /// with [`Error::Busy`] when the instance already has as many watchers as its
    /// `watchers` limit allows (see [`super::RegistryLimits`]), or if the system cannot make
    /// a socket pair or a thread, or storage cannot be read.
    pub fn watch(self: &Arc<Self>) -> Result<Events> {
        // Taken first: a watch refused costs no descriptor, and starts no poll.
        let place = self.watchers.take()?;
        self.start_hearing(|| Events::start(self.subscribers.clone(), place))
    }

    /// Adds a subscriber with `start`, which then also hears the entries other processes
    /// store from now on, when they may write this storage (see [`super::others`]). All
    /// that may fail is done before `start`, so that a subscriber started is kept.
    fn start_hearing<T>(self: &Arc<Self>, start: impl FnOnce() -> Result<T>) -> Result<T> {
        if !self.backend.shared_with_other_processes() {
            return start();
        }
        self.others.start()?;
        let started = {
            // Under the write lock, with this process's own entries durable: each entry is
            // either stored by the position read here, or noted as this process's; and a
            // poll cannot stop hearing in between, as nobody subscribes yet.
            let _guard = self.settled_lock()?;
            if !self.hears_other_processes() {
                let position = self.backend.last_position(&self.id)?;
                *self.heard() = Some(Heard::after(position));
            }
            start()?
        };
        self.others.poll(self);
        Ok(started)
    }

    fn heard(&self) -> MutexGuard<'_, Option<Heard>> {
        self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the subscribers hear other processes' entries now.
    pub(super) fn hears_other_processes(&self) -> bool {
        self.heard().is_some()
    }

    /// One poll, storage's last position of this database being `position`: announces, as
    /// remote changes, the entries other processes stored since the last poll, in storage
    /// order; stops hearing them once nobody subscribes.
    pub(super) fn hear_other_processes(&self, position: u64) -> Result<()> {
        let Some(read_to) = self.heard().as_ref().map(Heard::read_to) else {
            return Ok(());
        };
        if !self.subscribers.any() {
            let _guard = self.commit_lock()?;
            if !self.subscribers.any() {
                *self.heard() = None;
            }
            return Ok(());
        }
        if position <= read_to {
            return Ok(());
        }
        self.wait_for_callbacks();
        // Under the write lock: every entry this process stored since the subscription
        // began is noted (one still staged is read at a later poll, once durable), and the
        // announcement takes its place in line before any later change.
        let guard = self.commit_lock()?;
        let others = {
            let mut heard = self.heard();
            let Some(heard) = heard.as_mut() else {
                return Ok(());
            };
            let page = self
                .backend
                .entries_after(&self.id, heard.read_to(), ENTRIES_PER_POLL)?;
            heard.read(page)
        };
        if others.is_empty() {
            return Ok(());
        }
        let ticket = self.notices.ticket();
        drop(guard);
        self.announce_from_elsewhere(ticket, &others, Origin::OtherProcess);
        Ok(())
    }

    /// Waits until every subscription callback queued before this call, for any database
    /// of this instance, has run; [`Error::Busy`] when `timeout` passes first, or at once
    /// when called from inside a callback (it would wait for itself).
    pub fn flush_notifications(&self, timeout: std::time::Duration) -> Result<()> {
        self.notifier.flush(timeout)
    }

    fn parent_metas(&self, parents: &[EntryId]) -> Result<Vec<(EntryId, EntryMeta)>> {
        parents
            .iter()
            .map(|p| {
                let meta = self
                    .stored_meta(p)?
                    .ok_or_else(|| Error::Corrupt(format!("parent {p} is not stored")))?;
                self.own_parent(*p, meta)
            })
            .collect()
    }

    /// The current tips with their metadata (one read of storage): the parents of a commit.
    /// [`Error::NotFound`] when there are none: the database is not stored (any more;
    /// another process sharing the storage may have forgotten it).
    fn tip_metas(&self) -> Result<Vec<(EntryId, EntryMeta)>> {
        let mut tips = self.backend.tip_metas(&self.id)?;
        // A forgetting removes the root with the tips, in one write: a root stored without
        // tips is damage, unless the database was stored again since the tips were read.
        if tips.is_empty() && self.backend.entry_meta(&self.id)?.is_some() {
            tips = self.backend.tip_metas(&self.id)?;
            if tips.is_empty() {
                return Err(Error::Corrupt(format!(
                    "database {} has stored entries but no tips: they were deleted outside \
                     mnemo",
                    self.id
                )));
            }
        }
        if tips.is_empty() {
            return Err(Error::NotFound(format!(
                "database {} is not stored here: it was forgotten (perhaps by another process)",
                self.id
            )));
        }
        tips.into_iter()
            .map(|(id, meta)| self.own_parent(id, meta))
            .collect()
    }

    /// `parent` with its metadata, if it is an entry of this database.
    fn own_parent(&self, parent: EntryId, meta: EntryMeta) -> Result<(EntryId, EntryMeta)> {
        if meta.db != self.id {
            return Err(Error::Corrupt(format!(
                "parent {parent} belongs to another database"
            )));
        }
        Ok((parent, meta))
    }

    /// Checks that `author` may make `ops` on top of `parent_metas` (in the settings those
    /// parents see) and returns the metadata the new entry will have, with the keys the
    /// change lowers (demotes or revokes), if it changes settings.
    fn plan(
        &self,
        parent_metas: &[(EntryId, EntryMeta)],
        author: &PublicKey,
        ops: &Ops,
    ) -> Result<Plan> {
        let height = parent_metas
            .iter()
            .map(|(_, m)| m.height)
            .max()
            .ok_or_else(|| Error::Corrupt("a non-root entry has parents".into()))?
            + 1;
        let visible = settings::visible_from(&*self.backend, parent_metas)?;
        let settings = self.settings_at(&visible)?;
        let changes_settings = ops.contains_key(SETTINGS_STORE);
        check_stores(ops)?;
        let needed = if changes_settings {
            Permission::Admin
        } else {
            Permission::Write
        };
        match settings.permission_of(author) {
            Some(p) if p >= needed => {}
            Some(p) => {
                return Err(Error::PermissionDenied(format!(
                    "key {author} has {} permission; this needs {}",
                    p.as_str(),
                    needed.as_str()
                )))
            }
            None => {
                return Err(Error::PermissionDenied(format!(
                    "key {author} has no permission on this database"
                )))
            }
        }
        let mut lowers = Vec::new();
        if let Some(settings_ops) = ops.get(SETTINGS_STORE) {
            authority::check_change(author, settings_ops, |k| settings.grant_of(k))?;
            lowers = authority::lowered(settings_ops, |k| settings.grant_of(k));
        }
        Ok(Plan {
            meta: EntryMeta {
                db: self.id,
                height,
                settings_visible: visible,
                changes_settings,
            },
            lowers,
            on_remembered_tip: false,
            on_every_tip: true,
        })
    }

    /// Stores a root entry (local or foreign) as this database's start.
    pub fn store_root(&self, root: &Entry) -> Result<()> {
        let content = root.content();
        if root.id() != self.id || content.db.is_some() {
            return Err(Error::Corrupt("not this database's root entry".into()));
        }
        let settings_ops = content
            .ops
            .get(SETTINGS_STORE)
            .ok_or_else(|| Error::Corrupt("a root entry carries settings".into()))?;
        settings::check_ops(settings_ops)?;
        check_stores(&content.ops)?;
        let admin = settings::auth_value(settings::Grant::active(Permission::Admin, Some(0)));
        let author_key = settings::auth_key(&content.author);
        if settings_ops.get(&author_key) != Some(&Op::Set(admin))
            || !settings_ops.contains_key("name")
        {
            return Err(Error::Corrupt(
                "a root entry names the database and makes its author admin".into(),
            ));
        }
        let meta = EntryMeta {
            db: self.id,
            height: 0,
            settings_visible: Vec::new(),
            changes_settings: true,
        };
        let _guard = self.lock()?;
        self.ensure_kept()?;
        for _ in 0..STALE_TRIES {
            // A new root is the first entry of its database: on top of every tip (none).
            let arrival = Arrival::Local {
                remembered: false,
                on_every_tip: true,
            };
            if self.apply(root, meta.clone(), arrival)? {
                return Ok(());
            }
            self.catch_up()?;
        }
        Err(kept_changing())
    }

    /// Signs (as `author`, through `keys`) and stores a local commit of `ops` on top of the
    /// current tips; returns once it is durable.
    ///
    /// The commit runs in a write turn of the backend (see [`Backend::write_turn`]) and
    /// lets go of the database before waiting for durability, so that concurrent commits
    /// to one database can share a storage commit. When the previous commit of this
    /// database is still staged, this one reads, plans and signs inside its turn (where
    /// that commit's rows are seen); otherwise it does so before, and the turn only stores.
    /// A commit of more than `MAX_OPS_MADE_IN_TURN` operations first makes a staged
    /// previous commit durable, so that it never holds the writer while it plans and signs.
    pub fn commit(&self, ops: Ops, author: PublicKey, keys: &dyn KeyRing) -> Result<EntryId> {
        keys.ensure_usable()?;
        if ops.is_empty() {
            return Err(Error::invalid("nothing to commit"));
        }
        self.wait_for_callbacks();
        self.ensure_current()?;
        let mut intent = WriteIntent::announce(&*self.backend);
        let guard = self.commit_lock()?;
        let ticket = self.notices.ticket();
        self.ensure_kept()?;
        let earlier = self.staged_commit().clone();
        let earlier_failed = || {
            if earlier
                .as_ref()
                .is_some_and(|e| matches!(e.settled(), Some(Err(_))))
            {
                self.forget_derived_state();
            }
        };
        // When the previous commit is staged, this one must read it: it is made in its turn
        // (a large one makes it durable first; a failure is seen by `earlier_failed`).
        let builds_on_staged = match earlier.as_ref().filter(|e| e.settled().is_none()) {
            Some(staged) if op_count(&ops) > MAX_OPS_MADE_IN_TURN => {
                let _ = staged.settle_now();
                false
            }
            Some(_) => true,
            None => false,
        };
        let mut ops = Some(ops);
        let mut made_before = None;
        if !builds_on_staged {
            // Not company for other commits while it plans and signs (which may take a
            // while): it queues for the writer once its rows are ready.
            intent.withdraw();
            earlier_failed();
            let ops = ops.take().expect("taken once");
            made_before = Some(self.make_entry(ops, author, keys)?);
        }
        let mut made = None;
        let staged = intent.take_turn(&mut || {
            let (mut entry, mut plan) = match made_before.take() {
                Some(made_before) => made_before,
                None => {
                    earlier_failed();
                    let ops = ops.take().expect("taken once");
                    self.make_entry(ops, author, keys)?
                }
            };
            for tries in 1.. {
                made = Some((entry.id(), plan.meta.changes_settings));
                if self.store_local(&entry, plan)? {
                    return Ok(());
                }
                // Another process wrote since the entry was planned: planned again on top
                // of what there is now.
                if (HOLD_AFTER_TRIES..STALE_TRIES).contains(&tries) {
                    self.backend.hold_for_turn(&self.id)?;
                }
                self.catch_up()?;
                if tries == STALE_TRIES {
                    break;
                }
                let ops = entry.content().ops.clone();
                (entry, plan) = self.make_entry(ops, author, keys)?;
            }
            Err(kept_changing())
        });
        let staged = staged.inspect_err(|_| {
            if made.is_some() {
                // What memory learnt from the entry (a lowering) is not in storage.
                self.forget_derived_state();
            }
        })?;
        *self.staged_commit() = staged.clone();
        drop(guard);
        if let Some(staged) = staged {
            staged.wait()?;
        }
        let (id, changes_settings) = made.expect("made by the turn that succeeded");
        if changes_settings {
            // Read permissions cached against the previous generation are checked again
            // now that the change is durable (and so seen by the reads that check them).
            self.settings_generation.fetch_add(1, Ordering::AcqRel);
        }
        ticket.announce(|| {
            let change = Change {
                db: self.id,
                entry: id,
                origin: Origin::Local,
            };
            self.subscribers.notify(&self.notifier, change);
        });
        Ok(id)
    }

    /// A local commit of `ops` on top of the current tips, signed, with its plan.
    /// [`Error::PermissionDenied`] when its author's permission comes from a settings change
    /// that was discarded (it would be discarded here and everywhere: rule 4 of
    /// docs/security-model.md).
    fn make_entry(&self, ops: Ops, author: PublicKey, keys: &dyn KeyRing) -> Result<(Entry, Plan)> {
        self.known_version()?;
        let remembered = self.remembered_tip();
        let on_remembered_tip = remembered.is_some();
        let (tips, on_every_tip) = match remembered {
            Some(tip) => (vec![tip], true),
            None => parents_among(self.tip_metas()?, MAX_PARENTS),
        };
        let mut plan = self.plan(&tips, &author, &ops)?;
        plan.on_remembered_tip = on_remembered_tip;
        plan.on_every_tip = on_every_tip;
        if !on_every_tip && !plan.lowers.is_empty() {
            // Its lowering would not see the tips left out, whose entries it may discard.
            return Err(Error::Busy(format!(
                "database {} has more than {MAX_PARENTS} tips: commit other changes first \
                 (each merges {MAX_PARENTS} of them), then lower a key's permission",
                self.id
            )));
        }
        let need = authority::needed(plan.meta.changes_settings);
        if self.discard_index()?.discards_arriving(
            &*self.backend,
            &author,
            need,
            &plan.meta.settings_visible,
        )? {
            return Err(Error::PermissionDenied(format!(
                "key {author} has its permission from a settings change that was discarded"
            )));
        }
        let parents = tips.into_iter().map(|(id, _)| id).collect();
        let content = EntryContent {
            db: Some(self.id),
            parents,
            height: plan.meta.height,
            ops,
            author,
        };
        Ok((content.sign(keys)?, plan))
    }

    /// Stores a local commit made by [`DatabaseCore::make_entry`]. What may fail is done
    /// before the entry is stored: once it is, the commit has happened. False when another
    /// process wrote since it was made (nothing is stored: see
    /// [`DatabaseCore::known_version`]).
    fn store_local(&self, entry: &Entry, plan: Plan) -> Result<bool> {
        // On top of every stored entry: nothing it lowers can be concurrent with it.
        let mut discards = if plan.lowers.is_empty() {
            None
        } else {
            Some(self.discard_index()?)
        };
        let arrival = Arrival::Local {
            remembered: plan.on_remembered_tip,
            on_every_tip: plan.on_every_tip,
        };
        if !self.apply(entry, plan.meta, arrival)? {
            return Ok(false);
        }
        if let Some(discards) = discards.as_mut() {
            for (key, level) in plan.lowers {
                discards.add_lowering(key, entry, level);
            }
        }
        Ok(true)
    }

    /// The refusal of entry `id`, which would add a tip past the bound.
    fn no_room(&self, id: &EntryId) -> Error {
        Error::Busy(format!(
            "database {} has {MAX_PARENTS} tips, the most it takes: entry {id} would add one \
             (a writer's commit merges them)",
            self.id
        ))
    }

    /// Before a change, with no lock held: when this database has callbacks and the
    /// instance's callbacks are far behind, waits for them to catch up (for a while; see
    /// [`Notifier::wait_for_room`]).
    fn wait_for_callbacks(&self) {
        if self.subscribers.has_callbacks() {
            self.notifier.wait_for_room();
        }
    }

    /// Announces `entries`, which came from elsewhere than a commit here (`origin`: sync,
    /// or another process on this storage), at `ticket`'s place in line.
    fn announce_from_elsewhere(&self, ticket: Ticket<'_>, entries: &[EntryId], origin: Origin) {
        ticket.announce(|| {
            for id in entries {
                let change = Change {
                    db: self.id,
                    entry: *id,
                    origin,
                };
                self.subscribers.notify(&self.notifier, change);
            }
        });
    }

    fn missing_parents(&self, parents: &[EntryId]) -> Result<Vec<EntryId>> {
        let mut missing = Vec::new();
        for p in parents {
            // Asked of storage (not of what memory keeps): another process may have
            // forgotten the database since.
            if self.backend.entry_db(p)?.is_none() {
                missing.push(*p);
            }
        }
        Ok(missing)
    }

    /// Checks a foreign entry whose parents are stored, and stores it: in effect, or
    /// discarded. When it lowers a key and other stored entries had not seen it, what takes
    /// effect is worked out again for the whole database. Callers hold the write lock.
    /// Overtaken [`HOLD_AFTER_TRIES`] times, it is worked out again in a write turn holding
    /// the database's lock in storage ([`Backend::hold_for_turn`]).
    fn validate_and_apply(&self, entry: &Entry, room: Room) -> Result<Outcome> {
        for tries in 1..=HOLD_AFTER_TRIES {
            if tries > 1 {
                self.catch_up()?;
            }
            if let Some(outcome) = self.try_validate_and_apply(entry, room)? {
                return Ok(outcome);
            }
        }
        let mut outcome = None;
        let staged = self.backend.write_turn(false, &mut || {
            for _ in HOLD_AFTER_TRIES..STALE_TRIES {
                // Asked again at each try (a write of the try's own may have let it go), and
                // the version read again once it is held.
                self.backend.hold_for_turn(&self.id)?;
                self.catch_up()?;
                outcome = self.try_validate_and_apply(entry, room)?;
                if outcome.is_some() {
                    break;
                }
            }
            Ok(())
        });
        // What memory learnt from the entry is not in storage if the turn's commit failed.
        // Left staged for company, it is made durable now: this thread holds the database,
        // which a commit on its way to join would wait for. (Inside the turn of a part of
        // received entries, this turn is part of it, and that one's end commits.)
        let forget = |_: &Error| self.forget_derived_state();
        if let Some(staged) = staged.inspect_err(forget)? {
            staged.settle_now().inspect_err(forget)?;
        }
        outcome.ok_or_else(kept_changing)
    }

    /// [`DatabaseCore::validate_and_apply`] once; `None` when another process wrote while
    /// it was worked out (nothing is stored).
    fn try_validate_and_apply(&self, entry: &Entry, room: Room) -> Result<Option<Outcome>> {
        self.known_version()?;
        let content = entry.content();
        let parents = self.parent_metas(&content.parents)?;
        let plan = self.plan(&parents, &content.author, &content.ops)?;
        if plan.meta.height != content.height {
            return Err(Error::Corrupt(format!(
                "entry {} claims height {} but its parents give {}",
                entry.id(),
                content.height,
                plan.meta.height
            )));
        }
        let tips = self.tip_ids()?;
        if room == Room::Bounded && adds_tip_past_bound(&tips, &content.parents) {
            return Ok(Some(Outcome::NoRoom));
        }
        let need = authority::needed(plan.meta.changes_settings);
        let discarded = self.discard_index()?.discards_arriving(
            &*self.backend,
            &content.author,
            need,
            &plan.meta.settings_visible,
        )?;
        let sees_everything = tips.iter().all(|t| content.parents.contains(t));
        let decided_here = sees_everything
            || !plan.meta.changes_settings
            || !self.needs_everything(content, &plan, discarded)?;
        if discarded && decided_here {
            let changes_settings = plan.meta.changes_settings;
            if !self.apply(entry, plan.meta, Arrival::Received { discarded: true })? {
                return Ok(None);
            }
            if changes_settings {
                self.discard_index()?.add_discarded_settings(entry.id());
            }
            return Ok(Some(Outcome::Discarded));
        }
        if decided_here {
            if !self.apply(entry, plan.meta, Arrival::Received { discarded: false })? {
                return Ok(None);
            }
            if !plan.lowers.is_empty() {
                let mut discards = self.discard_index()?;
                for (key, level) in plan.lowers {
                    discards.add_lowering(key, entry, level);
                }
            }
            return Ok(Some(Outcome::Applied));
        }
        // It may discard stored entries: their effect is undone once it is stored, and a
        // record says so meanwhile (see `undo_pending`).
        let token = crate::crypto::random::bytes::<UNDO_TOKEN_BYTES>()?;
        self.backend
            .meta_put(&undo_pending_record(&self.id), &token)?;
        self.undo.store(UNDO_PENDING, Ordering::Release);
        if !self.apply(entry, plan.meta, Arrival::Received { discarded: false })? {
            return Ok(None); // the record stays: the next change works the state out again
        }
        match self.undo_discarded(&token) {
            Ok(()) if self.discard_index()?.discards_settings(&entry.id()) => {
                Ok(Some(Outcome::Discarded))
            }
            // The entry is stored; other processes' writes kept overtaking the undoing,
            // which stays pending: it is done before the next read or change here, or by
            // the first of them to see the record.
            Ok(()) | Err(Error::Busy(_)) => Ok(Some(Outcome::Applied)),
            Err(e) => Err(e),
        }
    }

    /// Whether arriving settings change `content`, which does not see every tip, is to be
    /// decided with all the entries rather than on arrival (`plan` worked out as its own
    /// branch saw things). Taking effect on arrival: when it lowers someone (it may discard
    /// stored entries), or when its branch holds a change that does not take effect (what
    /// it may do, and whom it lowers, may then be otherwise). Arriving `discarded` by
    /// stored lowerings of its author (so discarded whatever its branch saw): only when it
    /// lowers one of their authors (it may be decided first: see `authority::resolve`), so
    /// that a revoked admin's changes are still discarded on arrival, at no more cost.
    fn needs_everything(
        &self,
        content: &EntryContent,
        plan: &Plan,
        discarded: bool,
    ) -> Result<bool> {
        let visible = &plan.meta.settings_visible;
        let mut index = self.discard_index()?;
        if !discarded {
            return Ok(!plan.lowers.is_empty() || index.sees_discarded(&*self.backend, visible)?);
        }
        let need = authority::needed(true);
        let lowerers = index.lowered_unseen_by(&*self.backend, &content.author, need, visible)?;
        let lowers = |by: &PublicKey| {
            (plan.lowers.iter()).any(|(key, level)| key == by && *level < Some(Permission::Admin))
        };
        Ok(lowerers.iter().any(lowers))
    }

    /// The ids of the current tips, sorted.
    fn tip_ids(&self) -> Result<Vec<EntryId>> {
        Ok(self
            .backend
            .tips(&self.id)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Checks everything stored of this database against its entries: every entry's bytes
    /// hash to its id and its signature verifies; what is stored beside it agrees with it;
    /// and the state (every store's cells, the tips, the discarded entries) is exactly what
    /// the entries make of it, each cell found both by a read of its whole store and when
    /// looked up by itself. [`Error::Corrupt`] names the first difference. Costs a pass
    /// over all of the database's entries; commits may go on meanwhile (a check that raced
    /// one is made again).
    pub fn verify(&self) -> Result<()> {
        const ATTEMPTS: usize = 4;
        for _ in 0..ATTEMPTS {
            let before = self.backend.last_position(&self.id)?;
            let checked = self.verify_once();
            if self.backend.last_position(&self.id)? == before {
                return checked;
            }
        }
        Err(Error::Busy(
            "the database kept changing while it was verified; retry".into(),
        ))
    }

    fn verify_once(&self) -> Result<()> {
        /// The keys a verification asks the storage for at once ([`Backend::cells_at`]:
        /// one query on PostgreSQL, a lookup each elsewhere).
        const KEYS_PER_LOOKUP: usize = 256;
        let derived = discards::derive(&*self.backend, &self.id, true)?;
        let differ = |what: &str| {
            Err(Error::Corrupt(format!(
                "stored {what} differ from what the entries make"
            )))
        };
        let tips = self.tip_ids()?;
        if tips != derived.tips {
            return differ("tips");
        }
        let marked = self.backend.discarded(&self.id)?;
        if marked != derived.discarded {
            let first = |id: &EntryId, how: &str| {
                Err(Error::Corrupt(format!(
                    "stored discarded-entry marks differ from what the entries make: entry \
                     {id} {how}"
                )))
            };
            return match marked.iter().find(|id| !derived.discarded.contains(id)) {
                Some(id) => first(id, "is marked discarded but takes effect"),
                None => match derived.discarded.iter().find(|id| !marked.contains(id)) {
                    Some(id) => first(id, "takes effect in storage but is discarded"),
                    None => differ("discarded-entry marks"),
                },
            };
        }
        let mut derived_stores: BTreeMap<&str, Vec<(&str, &Cell)>> = BTreeMap::new();
        for ((store, key), cell) in &derived.cells {
            derived_stores
                .entry(store.as_str())
                .or_default()
                .push((key.as_str(), cell));
        }
        let mut names: Vec<String> = self.backend.stores(&self.id)?;
        names.extend(derived_stores.keys().map(|s| s.to_string()));
        names.sort();
        names.dedup();
        for store in names {
            let stored = self.backend.cells(&self.id, &store)?;
            let expected = derived_stores
                .get(store.as_str())
                .map_or(&[][..], |v| &v[..]);
            let same = stored.len() == expected.len()
                && stored
                    .iter()
                    .zip(expected)
                    .all(|((k, c), (ek, ec))| k == ek && c == *ec);
            if !same {
                return differ(&format!("cells of store '{store}'"));
            }
            // Each key looked up by itself as well: a damaged index can send a point read
            // (`get`) past a key that a full read still finds.
            for chunk in expected.chunks(KEYS_PER_LOOKUP) {
                let keys: Vec<(&str, &str)> =
                    chunk.iter().map(|(key, _)| (&*store, *key)).collect();
                let found = self.backend.cells_at(&self.id, &keys)?;
                // (One answer for each key: a missing answer is a difference too.)
                let missed = chunk.iter().enumerate().find_map(|(i, (key, cell))| {
                    (found.get(i).and_then(Option::as_ref) != Some(*cell)).then_some(key)
                });
                if let Some(key) = missed {
                    return Err(Error::Corrupt(format!(
                        "stored cells of store '{store}' differ from what the entries make \
                         when looked up one key at a time (first at key {})",
                        quoted(key)
                    )));
                }
            }
        }
        Ok(())
    }

    /// The discard index, loaded from storage at first use.
    fn discard_index(&self) -> Result<DiscardGuard<'_>> {
        let mut guard = self.discards.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            self.known_version()?;
            *guard = Some(DiscardIndex::load(&*self.backend, &self.id)?);
        }
        Ok(DiscardGuard(guard))
    }

    /// Stores `entry` with `meta`, and its cells (the backend keeps those that win) unless
    /// it was discarded on arrival. False when another process wrote since what memory
    /// holds, or what this change read, was read (nothing is stored: see
    /// [`DatabaseCore::known_version`]). Callers hold the write lock.
    fn apply(&self, entry: &Entry, meta: EntryMeta, arrival: Arrival) -> Result<bool> {
        let expected = self.known_version()?;
        let discarded = matches!(arrival, Arrival::Received { discarded: true });
        let remembered = matches!(
            arrival,
            Arrival::Local {
                remembered: true,
                ..
            }
        );
        // The only tip it leaves if nothing else is written meanwhile, remembered when this
        // process wrote last (a local commit after another process's write reads the tips
        // again, so that processes taking turns never build on a tip one of them left).
        let follows_own_write = self.known().as_ref().is_some_and(|k| k.written_here);
        let on_every_tip = matches!(
            arrival,
            Arrival::Local {
                on_every_tip: true,
                ..
            }
        );
        let sole_tip = (on_every_tip && follows_own_write).then(|| (entry.id(), meta.clone()));
        let content = entry.content();
        // The stores of documents it adds (remembered once it is stored, so that the write
        // that stores them tells other processes), and the document rows it read.
        let mut new_document_stores = Vec::new();
        let mut reads = CellReads::default();
        // What a discarded entry writes.
        let no_cells = Vec::new();
        let cells = if discarded {
            None
        } else {
            let mut known = self
                .document_stores
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if known.is_none() {
                *known = Some(documents::document_stores(&*self.backend, &self.id)?);
            }
            let known = known.as_ref().expect("loaded above");
            new_document_stores = content
                .ops
                .iter()
                .filter(|(store, ops)| {
                    !known.contains(*store) && ops.values().any(|op| matches!(op, Op::Patch(_)))
                })
                .map(|(store, _)| store.clone())
                .collect();
            let with_new: HashSet<String>;
            let document_stores = if new_document_stores.is_empty() {
                known
            } else {
                with_new = known.iter().chain(&new_document_stores).cloned().collect();
                &with_new
            };
            let stored = documents::NotedCells::new(documents::StoredCells {
                backend: &*self.backend,
                db: self.id,
                document_stores: Some(document_stores),
            });
            let writes = documents::writes_of(&stored, entry.id(), meta.height, &content.ops)?;
            reads = stored.into_reads();
            Some(writes)
        };
        // Its children will be checked against its settings: derived now from the state it
        // was checked against (cached a moment ago), instead of walking later, and before it
        // is stored, so that nothing can fail once it is.
        let settings = match content.ops.get(SETTINGS_STORE) {
            Some(ops) => Some(self.settings_at(&meta.settings_visible)?.with_entry(
                meta.height,
                entry.id(),
                ops,
            )),
            None => None,
        };
        let changes_settings = meta.changes_settings;
        let stored = self.backend.put_entry(&EntryWrite {
            id: entry.id(),
            meta,
            bytes: entry.bytes(),
            parents: &content.parents,
            cells: match &cells {
                Some(cells) => cells,
                None => &no_cells,
            },
            discarded,
            expected,
            // A settings change reads the tips (which entries it lowers concurrently); a
            // commit on the remembered tip holds only if nothing was written since.
            exact: changes_settings || remembered,
            reads,
            reshapes: changes_settings || !new_document_stores.is_empty(),
        })?;
        let Some(put) = stored else {
            return Ok(false);
        };
        // The guard goes before `hurry`, which takes the poll's lock.
        let hurry =
            (self.heard().as_mut()).is_some_and(|h| h.stored_here(entry.id(), Instant::now()));
        if hurry {
            self.others.hurry();
        }
        self.settle_version(put.version, sole_tip.filter(|_| put.directly_after));
        if let Some(known) = self
            .document_stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            known.extend(new_document_stores);
        }
        if let Some(state) = settings {
            self.settings.insert(vec![entry.id()], Arc::new(state));
        }
        if changes_settings {
            self.settings_generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(true)
    }
}

/// Only user stores and `_settings` may be written; `_settings` operations must be valid.
fn check_stores(ops: &BTreeMap<String, BTreeMap<String, Op>>) -> Result<()> {
    for (store, store_ops) in ops {
        if store == SETTINGS_STORE {
            settings::check_ops(store_ops)?;
        } else if store.starts_with('_') {
            return Err(Error::Corrupt(format!(
                "store {} is reserved",
                quoted(store)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::backend::{EntryMeta, MemoryBackend};
    use crate::crypto::PrivateKey;
    use crate::database::registry::Registry;
    use crate::entry::EntryId;

    #[test]
    fn a_commit_takes_the_highest_tips_when_there_are_more_than_it_may_have_parents() {
        let tip = |n: u8, height: u64| {
            let meta = EntryMeta {
                db: EntryId::from_bytes([0; 32]),
                height,
                settings_visible: Vec::new(),
                changes_settings: false,
            };
            (EntryId::from_bytes([n; 32]), meta)
        };
        let tips = vec![tip(1, 5), tip(2, 9), tip(3, 5), tip(4, 7)];
        let ids = |tips: Vec<(EntryId, EntryMeta)>| -> Vec<u8> {
            tips.iter().map(|(id, _)| id.as_bytes()[0]).collect()
        };
        let (kept, every) = super::parents_among(tips.clone(), 3);
        assert_eq!((ids(kept), every), (vec![1, 2, 4], false));
        let (kept, every) = super::parents_among(tips, 4);
        assert_eq!((ids(kept), every), (vec![1, 2, 3, 4], true));
    }

    #[test]
    fn a_write_that_panicked_does_not_lock_the_database_for_good() {
        let key = PrivateKey::generate().unwrap();
        let author = key.public_key();
        let db = Registry::new(Arc::new(MemoryBackend::new()))
            .create("d", Arc::new(key), author)
            .unwrap();
        db.set("s", "k", "1").unwrap();
        let core = db.core.clone();
        let panicked = std::thread::spawn(move || {
            let _held = core.write_lock.take(None);
            panic!("a write that panicked (as the test means)");
        })
        .join();
        assert!(panicked.is_err());
        // Before, every later write failed: "internal error: database lock poisoned".
        db.set("s", "k", "2").unwrap();
        assert_eq!(db.get("s", "k").unwrap(), "2");
    }
}
