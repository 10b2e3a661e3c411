//! The in-process backend: nothing survives the process. For tests and ephemeral use.
//!
//! Kept compact, since everything lives in RAM: entry bytes and values in exact-size boxes,
//! the settings tips an entry saw shared between entries (most see the same few sets).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use super::range::{cell_bytes, KeyRange};
use super::{Backend, Cell, EntryMeta, EntryWrite, Put, RangeLimit, StateWrite, Version};
use crate::entry::EntryId;
use crate::error::{Error, Result};

/// Keeps everything in memory behind one reader-writer lock.
#[derive(Default)]
pub struct MemoryBackend {
    inner: RwLock<Inner>,
}

/// One stored entry.
struct Stored {
    bytes: Box<[u8]>,
    db: EntryId,
    height: u64,
    settings_visible: Arc<[EntryId]>,
    changes_settings: bool,
}

/// One key's winning write.
struct StoredCell {
    height: u64,
    entry: EntryId,
    value: Option<Box<str>>,
}

impl StoredCell {
    fn to_cell(&self) -> Cell {
        Cell {
            height: self.height,
            entry: self.entry,
            value: self.value.as_deref().map(str::to_string),
        }
    }
}

/// A database's entries in the order they were stored: the entry at `ids[i]` is at position
/// `before + i + 1`.
struct Log {
    before: u64,
    ids: Vec<EntryId>,
}

impl Log {
    /// The position of its last entry.
    fn last_position(&self) -> u64 {
        self.before + self.ids.len() as u64
    }
}

/// One store's cells, by key.
type Store = BTreeMap<Box<str>, StoredCell>;

#[derive(Default)]
struct Inner {
    entries: HashMap<EntryId, Stored>,
    tips: HashMap<EntryId, BTreeMap<EntryId, u64>>,
    /// Per database, its entries in the order they were stored.
    log: HashMap<EntryId, Log>,
    /// The last position handed out to a database since forgotten: a database stored (again)
    /// after that starts after it, so no position is handed out twice.
    forgotten_positions: u64,
    /// Per database, per store, per key: the winning write.
    stores: HashMap<EntryId, HashMap<Box<str>, Store>>,
    meta: BTreeMap<String, Vec<u8>>,
    secrets: BTreeMap<String, Vec<u8>>,
    /// Per database, its entries stored but discarded.
    discarded: HashMap<EntryId, std::collections::BTreeSet<EntryId>>,
    /// Distinct settings-tip sets, shared by the entries that saw them.
    visible_sets: HashMap<Vec<EntryId>, Arc<[EntryId]>>,
    /// Writes of any database so far: each write's stamp.
    writes: u64,
    /// Per database, its [`Version`]: the stamps of its last write that moved the shape on,
    /// and of its last write (absent: 0 and 0, as before its first write or once forgotten;
    /// stamps are never handed out twice).
    versions: HashMap<EntryId, Version>,
}

impl Inner {
    /// [`Backend::cell`].
    fn cell(&self, db: &EntryId, store: &str, key: &str) -> Option<Cell> {
        self.stores
            .get(db)
            .and_then(|s| s.get(store))
            .and_then(|s| s.get(key))
            .map(StoredCell::to_cell)
    }

    /// [`Backend::cells_range`].
    fn cells_range(
        &self,
        db: &EntryId,
        store: &str,
        prefix: &str,
        after: Option<&str>,
        limit: RangeLimit,
        live_only: bool,
    ) -> Vec<(String, Cell)> {
        let Some(range) = KeyRange::new(prefix, after) else {
            return Vec::new();
        };
        let Some(cells) = self.stores.get(db).and_then(|s| s.get(store)) else {
            return Vec::new();
        };
        let lower = match range.inclusive {
            true => Bound::Included(range.lower.as_str()),
            false => Bound::Excluded(range.lower.as_str()),
        };
        let upper = match &range.upper {
            Some(upper) => Bound::Excluded(upper.as_str()),
            None => Bound::Unbounded,
        };
        let most = if limit.cells == 0 {
            usize::MAX
        } else {
            limit.cells
        };
        let mut spent = 0;
        cells
            .range::<str, _>((lower, upper))
            .filter(|(_, c)| !live_only || c.value.is_some())
            .take(most)
            .take_while(|(k, c)| {
                let room = limit.has_room_after(spent);
                spent += cell_bytes(k, c.value.as_deref());
                room
            })
            .map(|(k, c)| (k.to_string(), c.to_cell()))
            .collect()
    }

    fn version(&self, db: &EntryId) -> Version {
        self.versions.get(db).copied().unwrap_or_default()
    }

    /// Moves `db`'s version on (its shape too if `reshapes`) and returns it.
    fn advance(&mut self, db: &EntryId, reshapes: bool) -> Version {
        self.writes += 1;
        let shape = if reshapes {
            self.writes
        } else {
            self.version(db).shape
        };
        let version = Version::new(shape, self.writes);
        self.versions.insert(*db, version);
        version
    }
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Inner>> {
        self.inner
            .read()
            .map_err(|_| Error::Internal("memory backend lock poisoned".into()))
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, Inner>> {
        self.inner
            .write()
            .map_err(|_| Error::Internal("memory backend lock poisoned".into()))
    }

    /// Every byte string stored (entries, cells, metadata), for tests that check what
    /// reaches storage, e.g. that no password or private key is stored in plain text.
    pub fn raw_contents(&self) -> Result<Vec<Vec<u8>>> {
        let inner = self.read()?;
        let mut all: Vec<Vec<u8>> = inner.entries.values().map(|s| s.bytes.to_vec()).collect();
        all.extend(
            inner
                .meta
                .iter()
                .chain(&inner.secrets)
                .flat_map(|(k, v)| [k.as_bytes().to_vec(), v.clone()]),
        );
        for cells in inner.stores.values().flat_map(HashMap::values) {
            all.extend(cells.iter().map(|(k, c)| {
                [k.as_bytes(), c.value.as_deref().unwrap_or("").as_bytes()].concat()
            }));
        }
        Ok(all)
    }
}

impl Backend for MemoryBackend {
    fn version(&self, db: &EntryId) -> Result<Version> {
        Ok(self.read()?.version(db))
    }

    fn put_entry(&self, w: &EntryWrite<'_>) -> Result<Option<Put>> {
        let mut guard = self.write()?;
        let inner = &mut *guard;
        let db = w.meta.db;
        let now = inner.version(&db);
        if !w.fits(now)
            || !w.reads.still_hold(
                |store, key| Ok(inner.cell(&db, store, key)),
                |store, prefix| {
                    Ok(inner.cells_range(&db, store, prefix, None, RangeLimit::NONE, false))
                },
            )?
        {
            return Ok(None);
        }
        if inner.entries.contains_key(&w.id) {
            return Ok(Some(Put {
                version: now,
                directly_after: false,
            }));
        }
        let after = Put {
            version: inner.advance(&db, w.reshapes),
            directly_after: now == w.expected,
        };
        let visible = &w.meta.settings_visible;
        let settings_visible = match inner.visible_sets.get(visible) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<[EntryId]> = visible.as_slice().into();
                inner.visible_sets.insert(visible.clone(), shared.clone());
                shared
            }
        };
        inner.entries.insert(
            w.id,
            Stored {
                bytes: w.bytes.into(),
                db,
                height: w.meta.height,
                settings_visible,
                changes_settings: w.meta.changes_settings,
            },
        );
        let before = inner.forgotten_positions;
        let log = inner.log.entry(db).or_insert_with(|| Log {
            before,
            ids: Vec::new(),
        });
        log.ids.push(w.id);
        let tips = inner.tips.entry(db).or_default();
        for parent in w.parents {
            tips.remove(parent);
        }
        tips.insert(w.id, w.meta.height);
        if w.discarded {
            inner.discarded.entry(db).or_default().insert(w.id);
        }
        let stores = inner.stores.entry(db).or_default();
        w.cells.each(&mut |write| {
            let (store, key, cell) = (&write.store, &write.key, &write.cell);
            if !stores.contains_key(store.as_str()) {
                stores.insert(store.as_str().into(), BTreeMap::new());
            }
            let cells = stores.get_mut(store.as_str()).expect("inserted above");
            match cells.get_mut(key.as_str()) {
                Some(current) if !write.keeps_over(&current.to_cell()) => {}
                _ => {
                    let value = cell.value.as_deref().map(Box::from);
                    cells.insert(
                        key.as_str().into(),
                        StoredCell {
                            height: cell.height,
                            entry: cell.entry,
                            value,
                        },
                    );
                }
            }
            Ok(())
        })?;
        Ok(Some(after))
    }

    fn get_entry(&self, id: &EntryId) -> Result<Option<Vec<u8>>> {
        Ok(self.read()?.entries.get(id).map(|s| s.bytes.to_vec()))
    }

    fn entry_db(&self, id: &EntryId) -> Result<Option<EntryId>> {
        Ok(self.read()?.entries.get(id).map(|s| s.db))
    }

    fn entry_meta(&self, id: &EntryId) -> Result<Option<EntryMeta>> {
        Ok(self.read()?.entries.get(id).map(|s| EntryMeta {
            db: s.db,
            height: s.height,
            settings_visible: s.settings_visible.to_vec(),
            changes_settings: s.changes_settings,
        }))
    }

    fn tips(&self, db: &EntryId) -> Result<Vec<(EntryId, u64)>> {
        let inner = self.read()?;
        Ok(inner
            .tips
            .get(db)
            .map(|t| t.iter().map(|(id, h)| (*id, *h)).collect())
            .unwrap_or_default())
    }

    fn cell(&self, db: &EntryId, store: &str, key: &str) -> Result<Option<Cell>> {
        Ok(self.read()?.cell(db, store, key))
    }

    fn cells(&self, db: &EntryId, store: &str) -> Result<Vec<(String, Cell)>> {
        let inner = self.read()?;
        Ok(inner
            .stores
            .get(db)
            .and_then(|s| s.get(store))
            .map(|s| {
                s.iter()
                    .map(|(k, c)| (k.to_string(), c.to_cell()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn cells_range(
        &self,
        db: &EntryId,
        store: &str,
        prefix: &str,
        after: Option<&str>,
        limit: RangeLimit,
        live_only: bool,
    ) -> Result<Vec<(String, Cell)>> {
        Ok(self
            .read()?
            .cells_range(db, store, prefix, after, limit, live_only))
    }

    fn stores(&self, db: &EntryId) -> Result<Vec<String>> {
        let inner = self.read()?;
        let mut names: Vec<String> = inner
            .stores
            .get(db)
            .map(|s| s.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    fn discarded(&self, db: &EntryId) -> Result<Vec<EntryId>> {
        let inner = self.read()?;
        Ok(inner
            .discarded
            .get(db)
            .map(|d| d.iter().copied().collect())
            .unwrap_or_default())
    }

    fn replace_state(&self, db: &EntryId, state: &StateWrite<'_>) -> Result<Option<Version>> {
        let mut inner = self.write()?;
        if inner.version(db) != state.expected {
            return Ok(None);
        }
        let mut stores: HashMap<Box<str>, Store> = HashMap::new();
        for (store, key, cell) in &state.cells {
            stores.entry((*store).into()).or_default().insert(
                (*key).into(),
                StoredCell {
                    height: cell.height,
                    entry: cell.entry,
                    value: cell.value.as_deref().map(Box::from),
                },
            );
        }
        inner.stores.insert(*db, stores);
        inner
            .discarded
            .insert(*db, state.discarded.iter().copied().collect());
        Ok(Some(inner.advance(db, true)))
    }

    fn entries_after(&self, db: &EntryId, after: u64, limit: usize) -> Result<Vec<(u64, EntryId)>> {
        let inner = self.read()?;
        let Some(log) = inner.log.get(db) else {
            return Ok(Vec::new());
        };
        let skipped = after.saturating_sub(log.before);
        let start = usize::try_from(skipped)
            .unwrap_or(usize::MAX)
            .min(log.ids.len());
        Ok(log.ids[start..]
            .iter()
            .take(limit)
            .enumerate()
            .map(|(i, id)| (log.before + (start + i + 1) as u64, *id))
            .collect())
    }

    fn entry_count(&self, db: &EntryId) -> Result<u64> {
        Ok(self
            .read()?
            .log
            .get(db)
            .map_or(0, |log| log.ids.len() as u64))
    }

    fn last_position(&self, db: &EntryId) -> Result<u64> {
        Ok(self.read()?.log.get(db).map_or(0, Log::last_position))
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.read()?.meta.get(key).cloned())
    }

    fn meta_insert_new(&self, key: &str, value: &[u8]) -> Result<bool> {
        let mut inner = self.write()?;
        if inner.meta.contains_key(key) {
            return Ok(false);
        }
        inner.meta.insert(key.to_string(), value.to_vec());
        Ok(true)
    }

    fn meta_put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.write()?.meta.insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn meta_delete(&self, key: &str, only_if: Option<&[u8]>) -> Result<bool> {
        let mut inner = self.write()?;
        let held = inner.meta.get(key).map(Vec::as_slice);
        if held.is_none() || only_if.is_some_and(|expected| held != Some(expected)) {
            return Ok(false);
        }
        Ok(inner.meta.remove(key).is_some())
    }

    fn meta_delete_prefix(&self, prefix: &str) -> Result<u64> {
        let mut inner = self.write()?;
        let before = inner.meta.len();
        inner.meta.retain(|key, _| !key.starts_with(prefix));
        Ok((before - inner.meta.len()) as u64)
    }

    fn secret_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.read()?.secrets.get(key).cloned())
    }

    fn secret_put(&self, key: &str, value: &[u8], replacing: Option<&[u8]>) -> Result<bool> {
        let mut inner = self.write()?;
        if replacing.is_some_and(|old| inner.secrets.get(key).map(Vec::as_slice) != Some(old)) {
            return Ok(false);
        }
        let replaced = inner.secrets.insert(key.to_string(), value.to_vec());
        wipe(replaced);
        Ok(true)
    }

    fn secret_delete(&self, key: &str) -> Result<bool> {
        let removed = self.write()?.secrets.remove(key);
        let was = removed.is_some();
        wipe(removed);
        Ok(was)
    }

    fn secret_names(&self, prefix: &str) -> Result<Vec<String>> {
        let inner = self.read()?;
        let from = (
            std::ops::Bound::Included(prefix),
            std::ops::Bound::Unbounded,
        );
        let names = inner.secrets.range::<str, _>(from).map(|(name, _)| name);
        Ok(names
            .take_while(|name| name.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn forget_database(&self, db: &EntryId, decided_at: Version) -> Result<bool> {
        let mut guard = self.write()?;
        let inner = &mut *guard;
        if inner.version(db) != decided_at {
            return Ok(false);
        }
        if let Some(log) = inner.log.remove(db) {
            inner.forgotten_positions = inner.forgotten_positions.max(log.last_position());
            for id in log.ids {
                inner.entries.remove(&id);
            }
        }
        inner.tips.remove(db);
        inner.stores.remove(db);
        inner.discarded.remove(db);
        inner.versions.remove(db);
        // Settings-tip sets no entry shares any more.
        inner
            .visible_sets
            .retain(|_, shared| Arc::strong_count(shared) > 1);
        Ok(true)
    }
}

/// Overwrites a replaced secret's bytes before freeing them.
fn wipe(secret: Option<Vec<u8>>) {
    if let Some(mut bytes) = secret {
        zeroize::Zeroize::zeroize(&mut bytes);
    }
}
