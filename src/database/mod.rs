//! Databases: a DAG of signed entries with document stores materialised by last writer wins.

mod authority;
mod core;
mod discards;
mod documents;
mod events;
mod generated_keys;
mod history;
mod names;
mod notice_order;
mod others;
mod read_check;
#[cfg(test)]
mod receive_tests;
mod registry;
mod scan;
pub mod settings;
mod settings_cache;
#[cfg(test)]
mod staged_tests;
mod subscribe;
mod table;
mod transaction;
mod waiting;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::{Backend, Cell};
use crate::crypto::{random, KeyRing, PublicKey};
use crate::entry::{Entry, EntryContent, EntryId, Op, Ops};
use crate::error::{Error, Result};

pub use self::core::{DatabaseCore, Received};
pub use events::{Event, Events, EVENTS_CAPACITY, MAX_WATCHERS};
pub use history::{ChangeKind, KeyChange};
pub use names::{check_key, check_prefix, check_store, check_user_store};
pub use others::OTHER_PROCESSES_POLL;
use read_check::ReadCheck;
pub use read_check::READ_RECHECK_AFTER;
pub use registry::{
    Registry, RegistryLimits, IDLE_DATABASES_KEPT, MAX_IDLE_DATABASES_LIMIT,
    MAX_QUEUED_NOTIFICATIONS_LIMIT, MAX_WAITING_BYTES_LIMIT, MAX_WAITING_ENTRIES_LIMIT,
    MAX_WAITING_TIME_MS_LIMIT, MAX_WATCHERS_LIMIT, OTHER_PROCESSES_POLL_MS_LIMITS,
};
pub use scan::{Cursor, CURSOR_PAGE, CURSOR_PAGE_BYTES};
pub use settings::{Grant, Permission};
use subscribe::Notifier;
pub use subscribe::{
    end_waits_for_room_when, Callback, Change, Origin, Subscription, MAX_QUEUED_NOTIFICATIONS,
    NOTIFICATION_ROOM_WAIT,
};
pub use table::Table;
pub use transaction::Transaction;
pub(crate) use waiting::WaitingBudget;
pub use waiting::{
    WaitingLimits, MAX_SWEEP_PERIOD, MAX_WAITING_BYTES, MAX_WAITING_BYTES_PER_DATABASE,
    MAX_WAITING_ENTRIES, WAITING_TTL,
};

/// The store every database keeps its name and auth keys in.
pub const SETTINGS_STORE: &str = "_settings";

/// A handle on one database, signing as one key of a key ring (a user's session, or the
/// device). Clones share the database. It reads only while one of the ring's keys may read
/// the database: once that is revoked, reads fail with [`Error::PermissionDenied`] (within
/// [`READ_RECHECK_AFTER`] when another process stored the revocation).
#[derive(Clone)]
pub struct Database {
    core: Arc<DatabaseCore>,
    keys: Arc<dyn KeyRing>,
    author: PublicKey,
    /// The ring's public keys when the handle was made (they may read after a logout).
    readers: Arc<[PublicKey]>,
    /// When reading was last found allowed.
    read_check: Arc<ReadCheck>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("id", &self.core.id())
            .field("author", &self.author)
            .finish()
    }
}

/// Milliseconds since the Unix epoch, for the creation times kept in system databases.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The most bytes a database name created here takes (it is kept in the root entry, the
/// creator's list and the instance's catalog).
pub const MAX_DB_NAME: usize = 255;

/// Builds and signs the root entry of a new database named `name` (1 to [`MAX_DB_NAME`]
/// bytes), with `author` (held by `keys`) as admin.
pub fn create_root(name: &str, keys: &dyn KeyRing, author: PublicKey) -> Result<Entry> {
    if name.is_empty() || name.len() > MAX_DB_NAME {
        return Err(Error::invalid(format!(
            "a database name is 1 to {MAX_DB_NAME} bytes"
        )));
    }
    let mut settings = BTreeMap::new();
    settings.insert(
        "name".to_string(),
        Op::Set(serde_json::Value::from(name).to_string()),
    );
    let nonce = random::hex_token::<16>()?;
    settings.insert(
        "nonce".to_string(),
        Op::Set(serde_json::Value::from(nonce).to_string()),
    );
    settings.insert(
        settings::auth_key(&author),
        Op::Set(settings::auth_value(settings::Grant::active(
            Permission::Admin,
            Some(0),
        ))),
    );
    let mut ops = Ops::new();
    ops.insert(SETTINGS_STORE.to_string(), settings);
    EntryContent {
        db: None,
        parents: Vec::new(),
        height: 0,
        ops,
        author,
    }
    .sign(keys)
}

impl Database {
    /// A handle on `core` that signs its commits as `author`, a key `keys` holds.
    pub fn new(core: Arc<DatabaseCore>, keys: Arc<dyn KeyRing>, author: PublicKey) -> Self {
        let readers = keys.public_keys().unwrap_or_else(|_| vec![author]).into();
        Database {
            core,
            keys,
            author,
            readers,
            read_check: Arc::default(),
        }
    }

    /// Fails with [`Error::PermissionDenied`] unless one of the handle's keys may read the
    /// database now ([`Error::NotFound`] once it was forgotten on this instance), and
    /// brings the stored state up to date first if it may lack a revocation's undoing
    /// ([`DatabaseCore::ensure_current`]). Checked again when this process sees the
    /// database's settings change, and at least every [`READ_RECHECK_AFTER`] (for changes
    /// other processes store), so most reads pay a few atomic loads and a clock read.
    fn check_read(&self) -> Result<()> {
        self.core.ensure_kept()?;
        self.core.ensure_current()?;
        let generation = self.core.settings_generation();
        if self.read_check.still_holds(generation) {
            return Ok(());
        }
        let mut readable = false;
        for key in self.readers.iter() {
            if self.core.effective_permission_of(key)?.is_some() {
                readable = true;
                break;
            }
        }
        if !readable {
            return Err(Error::PermissionDenied(
                "none of this session's keys may read this database".into(),
            ));
        }
        self.read_check.passed(generation);
        Ok(())
    }

    /// The database's id (its root entry's id).
    pub fn id(&self) -> EntryId {
        self.core.id()
    }

    /// The storage this database is kept in (for records beside it: sync's cursors).
    pub(crate) fn backend(&self) -> &dyn Backend {
        self.core.backend()
    }

    /// The key this handle signs with.
    pub fn author(&self) -> PublicKey {
        self.author
    }

    /// The database's name, from its settings.
    pub fn name(&self) -> Result<String> {
        let json = self.get(SETTINGS_STORE, "name")?;
        serde_json::from_str::<String>(&json)
            .map_err(|_| Error::Corrupt("database name is not a string".into()))
    }

    /// Sets `key` in `store` to the JSON text `json`, as one commit.
    pub fn set(&self, store: &str, key: &str, json: &str) -> Result<EntryId> {
        let mut txn = self.begin();
        txn.set(store, key, json)?;
        txn.commit()
    }

    /// Sets the part of `key`'s value at JSON Pointer `pointer` to the JSON text `json`, as
    /// one commit (see [`Transaction::set_path`]).
    pub fn set_path(&self, store: &str, key: &str, pointer: &str, json: &str) -> Result<EntryId> {
        let mut txn = self.begin();
        txn.set_path(store, key, pointer, json)?;
        txn.commit()
    }

    /// The JSON text of the part of `key`'s value at JSON Pointer `pointer` (RFC 6901; `""`
    /// is the whole value). [`Error::NotFound`] if the key has no value or the value has
    /// nothing at `pointer`; [`Error::InvalidArgument`] for a bad pointer.
    pub fn get_path(&self, store: &str, key: &str, pointer: &str) -> Result<String> {
        let tokens = crate::json::pointer::parse(pointer)?;
        let json = self.get(store, key)?;
        // Only the part is built: the rest of the value is skipped as it is read.
        crate::json::part::part_of(&json, &tokens)
            .map_err(|_| Error::Corrupt(format!("the value of key '{key}' does not parse")))?
            .map(|part| part.to_string())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "the value of key '{key}' in store '{store}' has nothing at '{pointer}'"
                ))
            })
    }

    /// Every change of `key` in `store`, newest first (by height, then entry id), at most
    /// `limit` of them (0: all), including changes that lost a merge; entries discarded by
    /// a revocation made no change. Costs O(changes of the key).
    pub fn history(&self, store: &str, key: &str, limit: usize) -> Result<Vec<KeyChange>> {
        check_store(store)?;
        check_key(key)?;
        self.check_read()?;
        history::of_key(self.core.backend(), &self.core.id(), store, key, limit)
    }

    /// Deletes `key` from `store`, as one commit; [`Error::NotFound`] if it has no value.
    pub fn delete(&self, store: &str, key: &str) -> Result<EntryId> {
        let mut txn = self.begin();
        txn.delete(store, key)?;
        txn.commit()
    }

    /// The JSON text of `key` in `store`; [`Error::NotFound`] if unset or deleted.
    /// Reserved stores such as `_settings` may be read.
    pub fn get(&self, store: &str, key: &str) -> Result<String> {
        self.cell(store, key)?
            .and_then(|c| c.value)
            .ok_or_else(|| Error::NotFound(format!("no value for key '{key}' in store '{store}'")))
    }

    /// The current cell of `key` in `store` (its value or tombstone, and the entry that
    /// wrote it), if it was ever written.
    pub(crate) fn cell(&self, store: &str, key: &str) -> Result<Option<Cell>> {
        check_store(store)?;
        check_key(key)?;
        self.check_read()?;
        self.core.backend().cell(&self.core.id(), store, key)
    }

    /// Every live key of `store` with its JSON text, sorted by key.
    pub fn get_all(&self, store: &str) -> Result<Vec<(String, String)>> {
        check_store(store)?;
        self.check_read()?;
        Ok(self
            .core
            .backend()
            .cells(&self.core.id(), store)?
            .into_iter()
            .filter_map(|(k, c)| c.value.map(|v| (k, v)))
            .collect())
    }

    /// The height of the newest entry (0 for a database holding only its root).
    pub fn height(&self) -> Result<u64> {
        self.check_read()?;
        let tips = self.core.backend().tips(&self.core.id())?;
        Ok(tips.into_iter().map(|(_, h)| h).max().unwrap_or(0))
    }

    /// The current tips, sorted.
    pub fn tips(&self) -> Result<Vec<EntryId>> {
        self.check_read()?;
        Ok(self
            .core
            .backend()
            .tips(&self.core.id())?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Starts a transaction: its operations commit together as one entry, or not at all.
    pub fn begin(&self) -> Transaction {
        Transaction::new(self.clone())
    }

    /// Gives `key` a permission on this database (admin only). An admin grant is junior to
    /// this handle's key (its priority is one more). [`Error::PermissionDenied`] unless this
    /// handle's key is an admin more senior than `key` (the creator is senior to everyone;
    /// no admin changes its own grant).
    pub fn grant(&self, key: &PublicKey, permission: Permission) -> Result<EntryId> {
        let mine = self.my_admin_grant()?;
        let priority = match permission {
            Permission::Admin => Some(
                mine.priority
                    .unwrap_or(0)
                    .checked_add(1)
                    .ok_or_else(|| Error::invalid("no admin priority is left below this one"))?,
            ),
            _ => None,
        };
        self.write_auth(
            key,
            settings::auth_value(Grant::active(permission, priority)),
        )
    }

    /// Revokes `key` (admin only): entries it signs on top of this change are refused, and
    /// its entries this change had not seen are discarded wherever it arrives
    /// (docs/security-model.md). [`Error::PermissionDenied`] unless this handle's key is an
    /// admin more senior than `key`; [`Error::NotFound`] if the key holds no active grant.
    pub fn revoke(&self, key: &PublicKey) -> Result<EntryId> {
        self.my_admin_grant()?;
        let grant = self
            .core
            .current_settings()?
            .grant_of(key)
            .filter(|g| g.active)
            .ok_or_else(|| {
                Error::NotFound(format!("key {key} has no active grant on this database"))
            })?;
        self.write_auth(key, settings::auth_value(grant.revoked()))
    }

    /// This handle's key's admin grant; [`Error::PermissionDenied`] if it is not an admin
    /// now (counting only settings changes that took effect), checked first, so a caller
    /// without the permission learns nothing else.
    fn my_admin_grant(&self) -> Result<Grant> {
        self.keys.ensure_usable()?;
        let not_admin =
            || Error::PermissionDenied(format!("key {} is not an admin here", self.author));
        if self.core.effective_permission_of(&self.author)? != Some(Permission::Admin) {
            return Err(not_admin());
        }
        self.core
            .current_settings()?
            .grant_of(&self.author)
            .ok_or_else(not_admin)
    }

    fn write_auth(&self, key: &PublicKey, value: String) -> Result<EntryId> {
        let mut settings = BTreeMap::new();
        settings.insert(settings::auth_key(key), Op::Set(value));
        let mut ops = Ops::new();
        ops.insert(SETTINGS_STORE.to_string(), settings);
        self.commit(ops)
    }

    /// The permission `key` has now, if any (only settings changes that took effect count:
    /// a grant made by a discarded change gives nothing).
    pub fn permission_of(&self, key: &PublicKey) -> Result<Option<Permission>> {
        self.core.effective_permission_of(key)
    }

    /// Calls `callback` on the instance's notification thread after every change, local or
    /// remote, until the returned [`Subscription`] is dropped (see there for what is still
    /// delivered after). A panic in the callback is caught and ignored.
    pub fn subscribe(&self, callback: Callback) -> Result<Subscription> {
        self.check_read()?;
        self.core.subscribe(callback)
    }

    /// Starts a watcher: every change from now on, local or remote, queued for the caller to
    /// read ([`Events`]). Fails with [`Error::PermissionDenied`] once read was revoked, and
    /// with [`Error::Busy`] while the instance has as many watchers as its `watchers` limit
    /// allows ([`MAX_WATCHERS`] by default; see [`RegistryLimits`]).
    pub fn watch(&self) -> Result<Events> {
        self.check_read()?;
        self.core.watch()
    }

    /// Waits until every subscription callback for the changes made so far has run (see
    /// [`DatabaseCore::flush_notifications`]).
    pub fn flush_notifications(&self, timeout: std::time::Duration) -> Result<()> {
        self.core.flush_notifications(timeout)
    }

    /// Checks everything stored of this database against its entries (signatures, ids,
    /// recorded heights, and the whole state: every store, the tips, the discarded
    /// entries). [`Error::Corrupt`] names the first difference: rows missing, altered or
    /// added. Reads every entry: its cost grows with the history.
    pub fn verify(&self) -> Result<()> {
        self.check_read()?;
        self.core.verify()
    }

    /// The canonical bytes of one entry of this database.
    pub fn entry_bytes(&self, id: &EntryId) -> Result<Vec<u8>> {
        self.check_read()?;
        let meta = self.core.backend().entry_meta(id)?;
        if meta.is_none_or(|m| m.db != self.core.id()) {
            return Err(Error::NotFound(format!(
                "entry {id} is not in this database"
            )));
        }
        self.core
            .backend()
            .get_entry(id)?
            .ok_or_else(|| Error::NotFound(format!("entry {id}")))
    }

    /// Decodes, verifies and takes an entry that came from elsewhere; see [`Received`].
    pub fn receive(&self, bytes: &[u8]) -> Result<Received> {
        self.core.receive(Entry::decode(bytes)?)
    }

    fn commit(&self, ops: Ops) -> Result<EntryId> {
        self.core.commit(ops, self.author, &*self.keys)
    }
}
