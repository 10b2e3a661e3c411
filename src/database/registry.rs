//! The databases of one instance: one [`DatabaseCore`] per database, shared by all its
//! handles, and the operations every room above needs (open, create, does it exist, take a
//! foreign entry).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::waiting::WaitingBudget;
use super::{create_root, Database, DatabaseCore, Notifier, Received};
use crate::backend::{Backend, Version};
use crate::crypto::{KeyRing, PublicKey};
use crate::entry::{Entry, EntryId};
use crate::error::Result;

/// The cores of the databases an instance has used since it opened. A core holds the
/// database's write lock, subscribers and foreign entries waiting for parents, so it lives
/// as long as the instance, not just as long as some handle.
pub struct Registry {
    backend: Arc<dyn Backend>,
    notifier: Arc<Notifier>,
    /// Bytes of foreign entries waiting for parents, across every database here.
    waiting: Arc<WaitingBudget>,
    open: Mutex<HashMap<EntryId, Arc<DatabaseCore>>>,
}

impl Registry {
    /// An empty registry over `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Registry {
            backend,
            notifier: Arc::default(),
            waiting: Arc::default(),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The storage backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The core of database `id` (whether or not it is stored yet).
    pub fn core(&self, id: EntryId) -> Arc<DatabaseCore> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.entry(id)
            .or_insert_with(|| {
                Arc::new(DatabaseCore::new(
                    id,
                    self.backend.clone(),
                    self.notifier.clone(),
                    self.waiting.clone(),
                ))
            })
            .clone()
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
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.get(id).is_some_and(|c| Arc::ptr_eq(c, &core)) {
            open.remove(id);
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

    /// Bytes of foreign entries waiting for their parents across this instance now (at most
    /// [`super::MAX_WAITING_BYTES`]).
    pub fn waiting_bytes(&self) -> usize {
        self.waiting.used()
    }

    /// Takes a verified entry from elsewhere (sync) into whichever database it belongs to;
    /// see [`Received`].
    pub fn receive(&self, entry: Entry) -> Result<Received> {
        self.core(entry.database_id()).receive(entry)
    }
}
