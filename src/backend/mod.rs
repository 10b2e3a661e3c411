//! Storage backends: where entries, materialised state and instance metadata live.

mod memory;
mod postgres;
mod range;
mod rows;
mod sqlite;
mod url;

use std::sync::Arc;

use crate::entry::EntryId;
use crate::error::Result;

pub use memory::MemoryBackend;
pub use postgres::{PostgresBackend, PostgresUrl, SslMode};
pub(crate) use range::cell_bytes;
pub use range::RangeLimit;
pub use sqlite::SqliteBackend;
pub use url::{open, parse as parse_url, BackendUrl};

/// The current value of one key of one store, with the `(height, entry)` order that won it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// Height of the entry that wrote the winning operation.
    pub height: u64,
    /// The entry that wrote it.
    pub entry: EntryId,
    /// The canonical JSON value, or `None` for a tombstone.
    pub value: Option<String>,
}

impl Cell {
    /// True when this cell's write wins over `other`'s (last writer by `(height, entry id)`).
    pub fn wins_over(&self, other: &Cell) -> bool {
        (self.height, self.entry) > (other.height, other.entry)
    }
}

/// One cell an entry writes: kept if it wins over the stored cell of its key
/// ([`Cell::wins_over`]) or, with `replace`, in any case (a merged value that changed
/// without a newer write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellWrite {
    /// The store.
    pub store: String,
    /// The key.
    pub key: String,
    /// The cell.
    pub cell: Cell,
    /// Whether it replaces the stored cell even if that one is as new.
    pub replace: bool,
}

impl CellWrite {
    /// True when this write is kept over `stored`.
    pub fn keeps_over(&self, stored: &Cell) -> bool {
        self.replace || self.cell.wins_over(stored)
    }
}

/// The cells one entry writes ([`EntryWrite::cells`]), handed to storage one at a time:
/// made as they are stored rather than all held at once, since an entry of many small keys
/// writes two rows a key, each taking many times the bytes its key takes in the entry.
pub trait CellWrites {
    /// Calls `write` with each cell in turn (in no set order; no two of the same key),
    /// stopping at the first error it returns, which is returned.
    fn each(&self, write: &mut dyn FnMut(&CellWrite) -> Result<()>) -> Result<()>;
}

/// Cells already made, as they are.
impl CellWrites for Vec<CellWrite> {
    fn each(&self, write: &mut dyn FnMut(&CellWrite) -> Result<()>) -> Result<()> {
        self.iter().try_for_each(write)
    }
}

/// What validation needs to know of a stored entry, kept beside its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    /// The database it belongs to.
    pub db: EntryId,
    /// Its height.
    pub height: u64,
    /// The `_settings` tips visible from its parents (what its permissions were checked
    /// against), sorted.
    pub settings_visible: Vec<EntryId>,
    /// Whether it changes `_settings`.
    pub changes_settings: bool,
}

/// How far one database's stored rows have come, whichever process wrote them, in two
/// parts. Its *shape* moves on with every write that changes what a writer keeps in memory
/// of the database: a settings change, a new store of documents
/// ([`EntryWrite::reshapes`]), a state replaced, the database forgotten. Its *count* moves
/// on with every write. A writer states the version that what it worked out reflects (what
/// it keeps in memory and what it read), and the backend writes only if that still holds:
/// another process's change in between is never overwritten or missed. Each part is only
/// compared for equality.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Version {
    shape: u64,
    count: u64,
}

impl Version {
    /// The version of two counters: the shape and the count (see [`Version`]).
    pub fn new(shape: u64, count: u64) -> Self {
        Version { shape, count }
    }

    /// True when `other` has the same shape (what memory holds of the database still
    /// holds), whatever the count.
    pub fn same_shape(&self, other: &Version) -> bool {
        self.shape == other.shape
    }
}

/// One new entry with everything it changes, stored atomically by [`Backend::put_entry`].
pub struct EntryWrite<'a> {
    /// Its id.
    pub id: EntryId,
    /// Its metadata.
    pub meta: EntryMeta,
    /// Its canonical bytes.
    pub bytes: &'a [u8],
    /// Tips it replaces (its parents that were tips).
    pub parents: &'a [EntryId],
    /// The cells it writes, each kept as [`CellWrite::keeps_over`] says, inside the same
    /// atomic write.
    pub cells: &'a dyn CellWrites,
    /// True for an entry stored but discarded on arrival (it has no effect on state: see
    /// docs/security-model.md); `cells` then has none.
    pub discarded: bool,
    /// The database's version that the writer's decisions reflect: nothing is written
    /// unless its shape is still current, and with `exact` its count too.
    pub expected: Version,
    /// Whether the writer read rows that any other write may change (the tips, for a
    /// settings change, or the tip it remembered from its last write) to work this one out,
    /// so that any write since makes it stale.
    pub exact: bool,
    /// The cells the writer read to work this one out (a document's rows), with what it
    /// found: nothing is written unless they still hold that (or, where a backend stores it
    /// without comparing them, unless the count is unchanged: [`EntryWrite::counts_exactly`]).
    pub reads: CellReads,
    /// Whether it moves the shape on: it changes settings, or writes a store of documents
    /// the writer did not know of.
    pub reshapes: bool,
}

impl EntryWrite<'_> {
    /// True when the database's version `now` still matches what this write expects: the
    /// shape, and with [`EntryWrite::exact`] the count too ([`Backend::put_entry`]). The
    /// caller then checks [`EntryWrite::reads`].
    pub fn fits(&self, now: Version) -> bool {
        now.same_shape(&self.expected) && (!self.exact || now == self.expected)
    }

    /// Whether the count must be unchanged for a backend to store this write without
    /// comparing [`EntryWrite::reads`]: the write is `exact`, or it read cells.
    pub fn counts_exactly(&self) -> bool {
        self.exact || !self.reads.is_empty()
    }
}

/// What [`Backend::put_entry`] did when it stored (or found) the entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Put {
    /// The database's version after.
    pub version: Version,
    /// True when the entry was new and the version before it was exactly
    /// [`EntryWrite::expected`], count too: nothing was written since what the writer read,
    /// so an entry made on top of every tip it read is now the only tip.
    pub directly_after: bool,
}

/// Cells with their keys, sorted by key.
pub type KeyedCells = Vec<(String, Cell)>;

/// Cells a writer read to work an entry out, with what it found ([`EntryWrite::reads`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CellReads {
    /// Single cells: the store, the key, and the cell found (`None`: there was none).
    pub cells: Vec<(String, String, Option<Cell>)>,
    /// Ranges: the store, a key prefix, and every cell of the store whose key starts with
    /// it.
    pub prefixes: Vec<(String, String, KeyedCells)>,
}

impl CellReads {
    /// True when nothing was read.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty() && self.prefixes.is_empty()
    }

    /// True when reading again, with `cell` (one cell of a store) and `with_prefix` (the
    /// cells of a store under a prefix, sorted by key), finds what was read.
    pub fn still_hold(
        &self,
        mut cell: impl FnMut(&str, &str) -> Result<Option<Cell>>,
        mut with_prefix: impl FnMut(&str, &str) -> Result<KeyedCells>,
    ) -> Result<bool> {
        for (store, key, found) in &self.cells {
            if cell(store, key)? != *found {
                return Ok(false);
            }
        }
        for (store, prefix, found) in &self.prefixes {
            if with_prefix(store, prefix)? != *found {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The whole materialised state of one database, as [`Backend::replace_state`] writes it.
pub struct StateWrite<'a> {
    /// Every cell: `(store, key, cell)`.
    pub cells: Vec<(&'a str, &'a str, Cell)>,
    /// Every entry stored but discarded.
    pub discarded: &'a [EntryId],
    /// The database's version the state was worked out from: nothing is written unless it
    /// is still current.
    pub expected: Version,
}

/// Entries stored in a [`Backend::write_turn`] that were not yet durable when it returned.
pub trait Staged: Send + Sync {
    /// Waits until they are durable, or returns the error that undid them.
    fn wait(&self) -> Result<()>;
    /// How their commit ended, or `None` while it has not.
    fn settled(&self) -> Option<Result<()>>;
    /// Makes them durable now (without waiting for company) and returns how that ended.
    fn settle_now(&self) -> Result<()>;
}

/// What the core needs from storage. Implementations are safe to share between threads;
/// each method is atomic on its own.
pub trait Backend: Send + Sync {
    /// The current version of database `db`'s rows (see [`Version`]).
    fn version(&self, db: &EntryId) -> Result<Version>;
    /// If the database's version still matches [`EntryWrite::expected`] (its shape; with
    /// [`EntryWrite::exact`], its count too) and the cells it read still hold what it found
    /// ([`EntryWrite::reads`]; or the count is unchanged), stores an entry, replaces its
    /// parents in the tip set by it, and writes the cells that are kept
    /// ([`CellWrite::keeps_over`]), all or nothing, and returns the version after (its
    /// shape moved on if [`EntryWrite::reshapes`]) with whether nothing came between
    /// ([`Put::directly_after`]). Storing an entry that is already present changes no row.
    /// `None`: the version moved on or a cell read changed (another process wrote), and
    /// nothing was written.
    fn put_entry(&self, write: &EntryWrite<'_>) -> Result<Option<Put>>;
    /// Runs `work` as one turn of this storage's writer, for a commit: the entries `work`
    /// stores with [`Backend::put_entry`] may be left staged (written, not yet durable, seen
    /// by nobody else) to share their commit with others', and what `work` reads on this
    /// thread includes what is staged. Returns the staged entries to wait for, or `None` when
    /// everything `work` stored is durable. `announced`: this thread called
    /// [`Backend::announce_write`] for this turn. Fails if something `work` stored was not
    /// committed after all (its shared commit failed), even when `work` succeeded. A turn
    /// asked for inside this thread's turn is part of it: its `work` runs at once, and
    /// what it stores is committed with the outer turn's. The default (a backend without
    /// shared commits) runs `work`, whose stores are durable when they return.
    fn write_turn(
        &self,
        _announced: bool,
        work: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Option<Arc<dyn Staged>>> {
        work().map(|()| None)
    }
    /// Called from a [`Backend::write_turn`]'s `work`: holds database `db`'s write lock in
    /// this storage until the turn ends, so that nobody else (another process, another
    /// connection) writes `db` meanwhile. What `work` reads of `db` after this stays current
    /// and its next [`Backend::put_entry`] is not overtaken: for a change that others'
    /// writes kept overtaking. SQLite holds the file's lock, and lets it go when `work`
    /// writes other than with `put_entry` (a metadata record, a state replaced): ask again
    /// after such a write. Waits for writes under way (at most the storage's lock wait,
    /// then [`crate::Error::Busy`]). The default (storage only this process writes, whose
    /// writes to `db` the caller's lock already serialises) does nothing.
    fn hold_for_turn(&self, _db: &EntryId) -> Result<()> {
        Ok(())
    }
    /// How long a write waits for this process's earlier writes to the same database before
    /// it fails with [`crate::Error::Busy`]: the storage's own wait for its lock, so that a
    /// storage that stops answering keeps each queued write waiting about one bound, not
    /// one per write ahead. The default (storage in this process's memory, which nothing
    /// outside keeps waiting): no bound.
    fn lock_wait(&self) -> Option<std::time::Duration> {
        None
    }
    /// Tells the writer that this thread is on its way to a [`Backend::write_turn`] (it
    /// waits for a database's lock), so that turns ending meanwhile leave their commit open
    /// for it. Each call is ended by `write_turn(true, ..)` or [`Backend::withdraw_write`].
    fn announce_write(&self) {}
    /// Ends an [`Backend::announce_write`] that will not take its turn.
    fn withdraw_write(&self) {}
    /// Connections open now to the storage (a file's, a server's), for stats. The default:
    /// none (storage in this process's memory).
    fn connections_open(&self) -> usize {
        0
    }
    /// Steps of a scrub left pending (the file's rewrite, the WAL's checkpoint after a forget
    /// or a secret removed), for stats: while one is, removed bytes may still be in the
    /// storage. The default: none (storage that is not scrubbed).
    fn scrub_steps_pending(&self) -> Result<u64> {
        Ok(0)
    }
    /// Whether other processes may write this storage too (a file, a server), so that
    /// entries this instance did not store can appear in it. The default: no.
    fn shared_with_other_processes(&self) -> bool {
        false
    }
    /// The database entry `id` is stored in, if it is stored, read from its row without
    /// the row's check (which needs the entry's bytes, up to 16 MiB): for "which of these
    /// do you hold?", where a damaged row can only make an entry be fetched or pushed when
    /// it need not be, or not be when it should (missing here then, until `verify` finds
    /// the row). Anything read from the entry itself is checked.
    fn entry_db(&self, id: &EntryId) -> Result<Option<EntryId>>;
    /// The bytes of an entry, if present.
    fn get_entry(&self, id: &EntryId) -> Result<Option<Vec<u8>>>;
    /// The metadata of an entry, if present.
    fn entry_meta(&self, id: &EntryId) -> Result<Option<EntryMeta>>;
    /// A database's current tips with their heights, sorted by id.
    fn tips(&self, db: &EntryId) -> Result<Vec<(EntryId, u64)>>;
    /// A database's current tips with their metadata, sorted by id: what a commit builds on.
    /// [`crate::Error::Corrupt`] if a tip's entry is not stored. A backend whose every read
    /// is a round trip to a server answers in one.
    fn tip_metas(&self, db: &EntryId) -> Result<Vec<(EntryId, EntryMeta)>> {
        self.tips(db)?
            .into_iter()
            .map(|(id, _)| match self.entry_meta(&id)? {
                Some(meta) => Ok((id, meta)),
                None => Err(crate::Error::Corrupt(format!("tip {id} is not stored"))),
            })
            .collect()
    }
    /// Every settings entry reachable from settings tips `tips` through what each entry
    /// sees ([`EntryMeta::settings_visible`]), the tips included, each with its metadata and
    /// bytes, in no set order: what the settings at those tips are worked out from.
    /// [`crate::Error::Corrupt`] if one of them is not stored. A backend whose every read is
    /// a round trip to a server answers in one.
    fn settings_closure(&self, tips: &[EntryId]) -> Result<Vec<(EntryId, EntryMeta, Vec<u8>)>> {
        let mut seen: std::collections::BTreeSet<EntryId> = tips.iter().copied().collect();
        let mut queue: Vec<EntryId> = seen.iter().copied().collect();
        let mut found = Vec::new();
        while let Some(id) = queue.pop() {
            let (Some(meta), Some(bytes)) = (self.entry_meta(&id)?, self.get_entry(&id)?) else {
                return Err(not_stored(&id));
            };
            for seen_by_it in &meta.settings_visible {
                if seen.insert(*seen_by_it) {
                    queue.push(*seen_by_it);
                }
            }
            found.push((id, meta, bytes));
        }
        Ok(found)
    }
    /// The current cell of one key.
    fn cell(&self, db: &EntryId, store: &str, key: &str) -> Result<Option<Cell>>;
    /// [`Backend::cell`] of each `(store, key)` of `keys`, in their order: in one read where
    /// the backend can (PostgreSQL: one round trip; the default asks for each in turn).
    fn cells_at(&self, db: &EntryId, keys: &[(&str, &str)]) -> Result<Vec<Option<Cell>>> {
        keys.iter()
            .map(|(store, key)| self.cell(db, store, key))
            .collect()
    }
    /// Every cell of one store, sorted by key (tombstones included). [`crate::Error::Corrupt`]
    /// if rows are missing: each store's row count is kept with its cells.
    fn cells(&self, db: &EntryId, store: &str) -> Result<Vec<(String, Cell)>>;
    /// Cells of one store whose keys start with `prefix` and sort after `after` (bytewise, i.e. by
    /// UTF-8 bytes; `None`: from the first), in bytewise key order, no more than `limit`
    /// allows. With `live_only`, tombstones are skipped (and count for nothing towards
    /// `limit`). Costs O(cells returned) through the store's key index.
    fn cells_range(
        &self,
        db: &EntryId,
        store: &str,
        prefix: &str,
        after: Option<&str>,
        limit: RangeLimit,
        live_only: bool,
    ) -> Result<Vec<(String, Cell)>>;
    /// The names of the stores of `db` that hold cells (tombstones included), sorted.
    fn stores(&self, db: &EntryId) -> Result<Vec<String>>;
    /// The entries of `db` stored but discarded, sorted.
    fn discarded(&self, db: &EntryId) -> Result<Vec<EntryId>>;
    /// If `db`'s version is still [`StateWrite::expected`] (shape and count), replaces every
    /// cell of `db` and its set of discarded entries, all or nothing (after a revocation
    /// changed which entries count), and returns the version after (a new shape); `None`
    /// (nothing written) if it moved on.
    fn replace_state(&self, db: &EntryId, state: &StateWrite<'_>) -> Result<Option<Version>>;
    /// Entries of `db` in the order this backend stored them (parents always before their
    /// children), after position `after` (0: from the start), at most `limit` of them, with
    /// their positions. Positions only grow and are never handed out twice, not even to a
    /// database forgotten and stored again (its copy continues after the last position any
    /// forgotten database reached): sync pages through them with a cursor, which a peer keeps
    /// across this instance forgetting the database and pulling it again.
    fn entries_after(&self, db: &EntryId, after: u64, limit: usize) -> Result<Vec<(u64, EntryId)>>;
    /// The position of the last entry of `db` stored (0 if none): see
    /// [`Backend::entries_after`].
    fn last_position(&self, db: &EntryId) -> Result<u64>;
    /// How many entries of `db` are stored (0 if none).
    fn entry_count(&self, db: &EntryId) -> Result<u64>;
    /// [`Backend::last_position`] of each of `dbs`, in their order (a server answers them
    /// in one round trip).
    fn last_positions(&self, dbs: &[EntryId]) -> Result<Vec<u64>> {
        dbs.iter().map(|db| self.last_position(db)).collect()
    }
    /// Reads an instance metadata record.
    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Writes `value` under `key` only if `key` is absent; returns whether it wrote.
    fn meta_insert_new(&self, key: &str, value: &[u8]) -> Result<bool>;
    /// Writes `value` under `key`, replacing what was there (on its own: not part of a
    /// write turn).
    fn meta_put(&self, key: &str, value: &[u8]) -> Result<()>;
    /// Removes `key`: whatever it holds when `only_if` is `None`, else only if it holds
    /// exactly `only_if` (so a decision made on a value read earlier cannot remove one
    /// written since). Returns whether it removed it.
    fn meta_delete(&self, key: &str, only_if: Option<&[u8]>) -> Result<bool>;
    /// Removes every record whose key starts with `prefix`, in one write; returns how many
    /// it removed. `prefix` ends with `/`, so that it names a whole family of records.
    fn meta_delete_prefix(&self, prefix: &str) -> Result<u64>;
    /// Reads a secret (sealed key material).
    fn secret_get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Writes a secret: unconditionally when `replacing` is `None`, else only if the stored
    /// value is exactly `replacing` (so changes computed outside any lock cannot overwrite a
    /// concurrent one). Returns whether it wrote. The value replaced does not stay readable
    /// in this backend's files (SQLite: `secure_delete` and a WAL checkpoint; PostgreSQL
    /// keeps old row versions until they are vacuumed: see SECURITY.md).
    fn secret_put(&self, key: &str, value: &[u8], replacing: Option<&[u8]>) -> Result<bool>;
    /// Removes a secret the same way; returns whether it was there.
    fn secret_delete(&self, key: &str) -> Result<bool>;
    /// The names of the secrets whose name starts with `prefix`, sorted.
    fn secret_names(&self, prefix: &str) -> Result<Vec<String>>;
    /// If database `db`'s version is still `decided_at` (the one its caller read before
    /// deciding that nobody keeps it), removes every row of it (its entries, tips, storage
    /// order, cells, row counts and discarded marks), all or nothing, and returns true. False,
    /// and nothing removed, when it moved on: another process wrote since (one that started
    /// keeping the database after the caller looked, or a stale handle), and that write is
    /// kept. Removing moves the version's shape on (a
    /// backend may keep a row of its version for that, holding the database's id: PostgreSQL
    /// does, as it keeps old row versions until vacuumed anyway); no row is removed if it is
    /// not stored.
    /// Afterwards the database is as if it had never been here: storing its root again
    /// starts it afresh, at storage positions after any it had (see
    /// [`Backend::entries_after`]). The removed rows do not stay readable in this backend's files as
    /// far as it can see to it (as [`Backend::secret_delete`]: SQLite zeroes them and
    /// checkpoints; PostgreSQL keeps old row versions until they are vacuumed).
    fn forget_database(&self, db: &EntryId, decided_at: Version) -> Result<bool>;
}

/// The error for entry `id`, which another stored entry refers to, not being stored.
pub(crate) fn not_stored(id: &EntryId) -> crate::Error {
    crate::Error::Corrupt(format!("entry {id} is referenced but not stored"))
}
