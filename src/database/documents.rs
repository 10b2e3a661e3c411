//! What one entry's operations do to the stored cells: last writer wins per key, nested
//! documents merged per path, and the change log that history reads.
//!
//! A key's cell holds its current (merged) value. A key that was ever written by path keeps
//! beside it, in the hidden store [`doc_store`]: its *base* (the newest whole-value set or
//! delete, under pointer `""`) and the newest write of each path. Its value is the base with
//! every path write newer than the base applied in `(height, entry, pointer)` order
//! ([`crate::json::pointer::place`]), so a whole-value set replaces every path older than it,
//! and concurrent writes of different paths both survive. Every rule is a function of the
//! set of entries, not of their arrival order, so replicas converge; the common case (a
//! write newer than everything of the key) costs a few point reads, not a replay, unless it
//! replaces a write older than the value's last, or goes into an array
//! ([`crate::database::Transaction::set_path`] writes a whole array instead, so a local
//! write does so only when the value changed between its `set_path` and its commit).
//!
//! Every operation also leaves a row in the hidden store [`log_store`], keyed by key, height
//! and entry, so a key's history is a range read.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use crate::backend::{Backend, Cell, CellReads, CellWrite, CellWrites, RangeLimit};
use crate::entry::{EntryId, Op, Ops};
use crate::error::{Error, Result};
use crate::json::pointer;

/// Where the rules read the current state: the backend, or a state being derived.
pub(crate) trait CellSource {
    /// The cell of `key` in `store`.
    fn cell(&self, store: &str, key: &str) -> Result<Option<Cell>>;
    /// False only if no key of `store` was ever written by path (so a whole-value write
    /// needs no look at documents).
    fn may_have_documents(&self, store: &str) -> bool;
    /// The cells of `store` whose keys start with `prefix`, sorted by key.
    fn cells_with_prefix(&self, store: &str, prefix: &str) -> Result<Vec<(String, Cell)>>;
    /// Told the operations `(store, key, op)` worked out next, before the rules read their
    /// rows: a source may read those rows at once. The default does nothing.
    fn read_ahead(&self, _ops: &[(&str, &str, &Op)]) -> Result<()> {
        Ok(())
    }
}

/// The stored state of one database.
pub(crate) struct StoredCells<'a> {
    pub backend: &'a dyn Backend,
    pub db: EntryId,
    /// The stores that may hold documents (`None`: assume every store may).
    pub document_stores: Option<&'a HashSet<String>>,
}

/// The user stores of database `db` with a hidden documents store beside them.
pub(crate) fn document_stores(backend: &dyn Backend, db: &EntryId) -> Result<HashSet<String>> {
    Ok(backend
        .stores(db)?
        .into_iter()
        .filter_map(|s| s.strip_prefix(DOC_PREFIX).map(str::to_string))
        .collect())
}

impl CellSource for StoredCells<'_> {
    fn cell(&self, store: &str, key: &str) -> Result<Option<Cell>> {
        self.backend.cell(&self.db, store, key)
    }

    fn may_have_documents(&self, store: &str) -> bool {
        self.document_stores.is_none_or(|s| s.contains(store))
    }

    fn cells_with_prefix(&self, store: &str, prefix: &str) -> Result<Vec<(String, Cell)>> {
        self.backend
            .cells_range(&self.db, store, prefix, None, RangeLimit::NONE, false)
    }
}

/// [`StoredCells`] that also notes what it read, for the write that follows
/// ([`crate::backend::EntryWrite::reads`]): storage refuses it if another process changed
/// any of those cells meanwhile.
pub(crate) struct NotedCells<'a> {
    stored: StoredCells<'a>,
    /// Rows read ahead for the operations being worked out, by store and key.
    ahead: RefCell<BTreeMap<(String, String), Option<Cell>>>,
    reads: RefCell<CellReads>,
}

impl<'a> NotedCells<'a> {
    /// Reads through `stored`.
    pub(crate) fn new(stored: StoredCells<'a>) -> Self {
        NotedCells {
            stored,
            ahead: RefCell::default(),
            reads: RefCell::default(),
        }
    }

    /// What was read, and found.
    pub(crate) fn into_reads(self) -> CellReads {
        self.reads.into_inner()
    }
}

impl CellSource for NotedCells<'_> {
    fn cell(&self, store: &str, key: &str) -> Result<Option<Cell>> {
        let ahead = self
            .ahead
            .borrow()
            .get(&(store.to_string(), key.to_string()))
            .cloned();
        let found = match ahead {
            Some(found) => found,
            None => self.stored.cell(store, key)?,
        };
        self.reads
            .borrow_mut()
            .cells
            .push((store.to_string(), key.to_string(), found.clone()));
        Ok(found)
    }

    fn may_have_documents(&self, store: &str) -> bool {
        self.stored.may_have_documents(store)
    }

    fn cells_with_prefix(&self, store: &str, prefix: &str) -> Result<Vec<(String, Cell)>> {
        let found = self.stored.cells_with_prefix(store, prefix)?;
        self.reads.borrow_mut().prefixes.push((
            store.to_string(),
            prefix.to_string(),
            found.clone(),
        ));
        Ok(found)
    }

    /// Reads the rows that working out `ops` reads by key in one read of storage where the
    /// backend can ([`Backend::cells_at`]): a path write reads its key, its base and each
    /// path's row, one after another. Replaces the rows read ahead before, so that an entry
    /// of many keys holds those of [`OPS_READ_AHEAD`] at a time. A row read ahead is noted
    /// only when the rules read it, as any other.
    fn read_ahead(&self, ops: &[(&str, &str, &Op)]) -> Result<()> {
        let mut wanted = Vec::new();
        for &(store, key, op) in ops {
            let doc = Document {
                source: &self.stored,
                store,
                key,
            };
            doc.rows_read(op, &mut wanted);
        }
        let keys: Vec<(&str, &str)> = wanted
            .iter()
            .map(|(s, k)| (s.as_str(), k.as_str()))
            .collect();
        let found = if keys.is_empty() {
            Vec::new()
        } else {
            self.stored.backend.cells_at(&self.stored.db, &keys)?
        };
        *self.ahead.borrow_mut() = wanted.into_iter().zip(found).collect();
        Ok(())
    }
}

/// A state being worked out in memory: (store, key) → cell.
pub(crate) type DerivedCells = BTreeMap<(String, String), Cell>;

impl CellSource for DerivedCells {
    fn cell(&self, store: &str, key: &str) -> Result<Option<Cell>> {
        Ok(self.get(&(store.to_string(), key.to_string())).cloned())
    }

    fn may_have_documents(&self, _store: &str) -> bool {
        true
    }

    fn cells_with_prefix(&self, store: &str, prefix: &str) -> Result<Vec<(String, Cell)>> {
        Ok(self
            .range((store.to_string(), prefix.to_string())..)
            .take_while(|((s, k), _)| s == store && k.starts_with(prefix))
            .map(|((_, k), c)| (k.clone(), c.clone()))
            .collect())
    }
}

/// Applies `writes` to a state being worked out, as a backend would store them.
pub(crate) fn apply_to(cells: &mut DerivedCells, writes: &EntryCells<'_>) -> Result<()> {
    writes.each(&mut |write| {
        let slot = (write.store.clone(), write.key.clone());
        if cells
            .get(&slot)
            .is_none_or(|stored| write.keeps_over(stored))
        {
            cells.insert(slot, write.cell.clone());
        }
        Ok(())
    })
}

const DOC_PREFIX: &str = "_doc:";

/// The hidden store of the bases and path writes of `store`'s nested documents.
pub(crate) fn doc_store(store: &str) -> String {
    [DOC_PREFIX, store].concat()
}

/// The hidden store of `store`'s change log.
pub(crate) fn log_store(store: &str) -> String {
    ["_log:", store].concat()
}

// The hidden row keys below are built by hand rather than with `format!`: they are made for
// every key a commit writes, and the formatting machinery was a visible part of a commit's
// cost.

/// The prefix every hidden row of `key` starts with: its length (at least 4 hex digits),
/// then the key (keys have no fixed end, so the length keeps `a` from matching `ab`).
pub(crate) fn key_prefix(key: &str) -> String {
    let mut prefix = String::with_capacity(4 + key.len());
    push_key_prefix(&mut prefix, key);
    prefix
}

fn push_key_prefix(out: &mut String, key: &str) {
    push_hex(out, key.len() as u64, 4);
    out.push_str(key);
}

/// Appends the key of `key`'s change-log row for `entry` at `height`: the key's prefix, the
/// height in 16 hex digits, the entry's id.
fn push_log_key(out: &mut String, key: &str, height: u64, entry: &EntryId) {
    push_key_prefix(out, key);
    push_hex(out, height, 16);
    entry.push_text(out);
}

/// Appends `value` in lower-case hex digits, at least `width` of them (`{:0width$x}`).
fn push_hex(out: &mut String, value: u64, width: usize) {
    let digits = (16 - value.leading_zeros() as usize / 4).max(width);
    debug_assert!(digits <= 16, "a u64 has at most 16 hex digits");
    for i in (0..digits).rev() {
        out.push(char::from(
            b"0123456789abcdef"[((value >> (4 * i)) & 15) as usize],
        ));
    }
}

/// The height and entry a log row of `key` names (see [`push_log_key`]).
pub(crate) fn log_row_entry(key: &str, row_key: &str) -> Result<(u64, EntryId)> {
    let rest = row_key
        .strip_prefix(&key_prefix(key))
        .filter(|r| r.len() > 16 && r.is_char_boundary(16))
        .ok_or_else(|| Error::Corrupt("a change-log row is malformed".into()))?;
    let height = u64::from_str_radix(&rest[..16], 16)
        .map_err(|_| Error::Corrupt("a change-log row is malformed".into()))?;
    Ok((height, EntryId::parse(&rest[16..])?))
}

/// Operations worked out together, their rows read ahead at once
/// ([`CellSource::read_ahead`]): one read of storage for a commit of up to this many, and a
/// bound on the rows held for one of many more.
const OPS_READ_AHEAD: usize = 1024;

/// The cells entry `entry` (at `height`) writes with `ops`, given the state in `source`.
/// The ops of one entry touch distinct keys, so they are worked out against the same state.
/// Only the cells that depend on the state are made now: each operation's change-log row,
/// and each key whose cell is its whole-value write as it is, are made as the cells are
/// walked ([`EntryCells`]).
pub(crate) fn writes_of<'a>(
    source: &dyn CellSource,
    entry: EntryId,
    height: u64,
    ops: &'a Ops,
) -> Result<EntryCells<'a>> {
    let mut worked_out = Vec::new();
    let mut as_is = Vec::with_capacity(ops.values().map(BTreeMap::len).sum());
    let mut all = (ops.iter())
        .flat_map(|(store, ops)| ops.iter().map(move |(key, op)| (&**store, &**key, op)))
        .peekable();
    let mut next = Vec::with_capacity(OPS_READ_AHEAD);
    while all.peek().is_some() {
        next.clear();
        next.extend(all.by_ref().take(OPS_READ_AHEAD));
        source.read_ahead(&next)?;
        for &(store, key, op) in &next {
            let doc = Document { source, store, key };
            as_is.push(match op {
                Op::Set(_) | Op::Delete if !source.may_have_documents(store) => true,
                Op::Set(json) => doc.whole(cell(height, entry, Some(json)), &mut worked_out)?,
                Op::Delete => doc.whole(cell(height, entry, None), &mut worked_out)?,
                Op::Patch(paths) => {
                    doc.patch(height, entry, paths, &mut worked_out)?;
                    false
                }
            });
        }
    }
    Ok(EntryCells {
        ops,
        height,
        entry,
        as_is,
        worked_out,
    })
}

/// The cells one entry writes ([`writes_of`]): those worked out against the state, held;
/// and, made one at a time as they are walked, each operation's change-log row and the
/// cells of keys set or deleted as the operation says. An entry of many small keys writes
/// two such rows a key, which held at once took about 20 times the entry's size.
pub(crate) struct EntryCells<'a> {
    ops: &'a Ops,
    height: u64,
    entry: EntryId,
    /// For each operation of `ops`, in order: whether its key's cell is its whole-value
    /// write as it is.
    as_is: Vec<bool>,
    worked_out: Vec<CellWrite>,
}

impl CellWrites for EntryCells<'_> {
    fn each(&self, write: &mut dyn FnMut(&CellWrite) -> Result<()>) -> Result<()> {
        self.worked_out.iter().try_for_each(&mut *write)?;
        // Two rows, a change-log row and a value, their text made again in place each time.
        let mut log_row = CellWrite {
            store: String::new(),
            key: String::new(),
            cell: cell(self.height, self.entry, None),
            replace: false,
        };
        let mut value_row = log_row.clone();
        let mut as_is = self.as_is.iter();
        for (store, store_ops) in self.ops {
            log_row.store = log_store(store);
            value_row.store.clone_from(store);
            for (key, op) in store_ops {
                log_row.key.clear();
                push_log_key(&mut log_row.key, key, self.height, &self.entry);
                write(&log_row)?;
                if as_is.next() != Some(&true) {
                    continue;
                }
                match op {
                    Op::Set(json) => value_row
                        .cell
                        .value
                        .get_or_insert_default()
                        .clone_from(json),
                    Op::Delete => value_row.cell.value = None,
                    Op::Patch(_) => unreachable!("a path write is worked out"),
                }
                value_row.key.clone_from(key);
                write(&value_row)?;
            }
        }
        Ok(())
    }
}

fn cell(height: u64, entry: EntryId, value: Option<&String>) -> Cell {
    Cell {
        height,
        entry,
        value: value.cloned(),
    }
}

/// One key's cells, as the rules see them.
struct Document<'a> {
    source: &'a dyn CellSource,
    store: &'a str,
    key: &'a str,
}

impl Document<'_> {
    fn write(&self, writes: &mut Vec<CellWrite>, store: String, key: String, cell: Cell) {
        writes.push(CellWrite {
            store,
            key,
            cell,
            replace: false,
        });
    }

    fn replace_value(&self, writes: &mut Vec<CellWrite>, cell: Cell) {
        writes.push(CellWrite {
            store: self.store.to_string(),
            key: self.key.to_string(),
            cell,
            replace: true,
        });
    }

    /// The rows [`Document::whole`] or [`Document::patch`] may read by key for `op`, as far
    /// as they are known before reading: for a path write, the key, its base, each path's
    /// row and the rows of the paths above it; for a whole-value write to a store that may
    /// hold documents, the base and the key.
    fn rows_read(&self, op: &Op, rows: &mut Vec<(String, String)>) {
        let paths = match op {
            Op::Patch(paths) => Some(paths),
            _ if self.source.may_have_documents(self.store) => None,
            _ => return,
        };
        let (doc, base_key) = (doc_store(self.store), key_prefix(self.key));
        rows.push((self.store.to_string(), self.key.to_string()));
        for pointer in paths.into_iter().flat_map(|p| p.keys()) {
            for above in paths_above(pointer) {
                rows.push((doc.clone(), path_row_key(&base_key, above)));
            }
            rows.push((doc.clone(), path_row_key(&base_key, pointer)));
        }
        rows.push((doc, base_key));
    }

    /// A whole-value set or delete, `new`, to a store that may hold documents. True when
    /// the key's cell is to be `new` as it is: that write is left to the caller.
    fn whole(&self, new: Cell, writes: &mut Vec<CellWrite>) -> Result<bool> {
        let doc = doc_store(self.store);
        let base_key = key_prefix(self.key);
        let Some(base) = self.source.cell(&doc, &base_key)? else {
            // Never written by path: plain last writer wins.
            return Ok(true);
        };
        if !new.wins_over(&base) {
            return Ok(false);
        }
        self.write(writes, doc, base_key, new.clone());
        let current = self.source.cell(self.store, self.key)?;
        if current.as_ref().is_none_or(|c| new.wins_over(c)) {
            return Ok(true);
        }
        let paths = self.paths()?;
        self.replace_value(writes, merge(&new, &paths)?);
        Ok(false)
    }

    /// Writes of paths, all at `(height, entry)`.
    fn patch(
        &self,
        height: u64,
        entry: EntryId,
        paths: &std::collections::BTreeMap<String, String>,
        writes: &mut Vec<CellWrite>,
    ) -> Result<()> {
        let doc = doc_store(self.store);
        let base_key = key_prefix(self.key);
        let current = self.source.cell(self.store, self.key)?;
        let base = match self.source.cell(&doc, &base_key)? {
            Some(base) => base,
            None => {
                // First path write: what the key holds now becomes its base.
                let base = current.clone().unwrap_or(Cell {
                    height: 0,
                    entry: EntryId::from_bytes([0; 32]),
                    value: None,
                });
                self.write(writes, doc.clone(), base_key.clone(), base.clone());
                base
            }
        };
        let mut won = Vec::new();
        // The paths whose older write these replace, and that write.
        let mut replaced = Vec::new();
        for (pointer, json) in paths {
            let path_cell = cell(height, entry, Some(json));
            let path_key = path_row_key(&base_key, pointer);
            let stored = self.source.cell(&doc, &path_key)?;
            if stored.as_ref().is_none_or(|s| path_cell.wins_over(s)) {
                self.write(writes, doc.clone(), path_key, path_cell.clone());
                won.push((pointer.clone(), path_cell));
                replaced.extend(stored.map(|s| (pointer.as_str(), s)));
            }
        }
        let newest = cell(height, entry, None);
        if won.is_empty() || !newest.wins_over(&base) {
            return Ok(()); // superseded by a newer write of the same paths or of the whole
        }
        let on_top = match &current {
            None => true,
            Some(c) => newest.wins_over(c) && !self.shaped_later(&replaced, c, &base)?,
        };
        if on_top {
            // Newer than everything of the key: apply on top of its value, which is the
            // replay below (the rule) unless an older write these replace shaped what came
            // after it, or a write goes into an array (what an older write of the path
            // appended there would stay, where the replay drops it).
            let mut value = parse(current.and_then(|c| c.value).as_deref())?;
            if !goes_into_an_array(&value, &won)? {
                for (pointer, path_cell) in &won {
                    apply(&mut value, pointer, path_cell)?;
                }
                let merged = cell(height, entry, Some(&crate::json::encode(&value)));
                self.write(writes, self.store.to_string(), self.key.to_string(), merged);
                return Ok(());
            }
        }
        let mut all = self.paths()?;
        all.retain(|(p, _)| !won.iter().any(|(w, _)| w == p));
        all.extend(won);
        self.replace_value(writes, merge(&base, &all)?);
        Ok(())
    }

    /// Whether one of the older writes `replaced` (by path), which a new write replaces, may
    /// have shaped later writes in the value `current` holds: when it was not applied last,
    /// and an array was on its way (in the base, or in the write of a path above it), which
    /// it may have made an object that later writes went into (the replay, without it,
    /// keeps the array). Objects on the way it could only have made as a later write would.
    fn shaped_later(&self, replaced: &[(&str, Cell)], current: &Cell, base: &Cell) -> Result<bool> {
        let (doc, base_key) = (doc_store(self.store), key_prefix(self.key));
        let mut base_value = None;
        for (pointer, older) in replaced {
            if (older.height, older.entry) == (current.height, current.entry) {
                continue;
            }
            let tokens = pointer::parse(pointer).map_err(|_| stored_bad("pointer"))?;
            let base_value = match &mut base_value {
                Some(value) => value,
                None => base_value.insert(parse(base.value.as_deref())?),
            };
            if pointer::array_on_the_way(base_value, &tokens).is_some() {
                return Ok(true);
            }
            // The i-th path above has i + 1 tokens.
            for (i, above) in paths_above(pointer).enumerate() {
                let Some(row) = self.source.cell(&doc, &path_row_key(&base_key, above))? else {
                    continue;
                };
                let rest = &tokens[i + 1..];
                if pointer::array_on_the_way(&parse(row.value.as_deref())?, rest).is_some() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The stored path writes of the key (not its base), as `(pointer, cell)`.
    fn paths(&self) -> Result<Vec<(String, Cell)>> {
        let prefix = key_prefix(self.key);
        Ok(self
            .source
            .cells_with_prefix(&doc_store(self.store), &prefix)?
            .into_iter()
            .filter_map(|(k, c)| {
                let pointer = k[prefix.len()..].to_string();
                (!pointer.is_empty()).then_some((pointer, c))
            })
            .collect())
    }
}

/// The pointers above `pointer` (its proper prefixes, the whole value `""` aside), shortest
/// first: "/a" and "/a/b" for "/a/b/c".
fn paths_above(pointer: &str) -> impl Iterator<Item = &str> {
    pointer
        .match_indices('/')
        .map(|(at, _)| &pointer[..at])
        .filter(|above| !above.is_empty())
}

/// The key of a path write's row in the documents store: the key's prefix, then the pointer.
fn path_row_key(base_key: &str, pointer: &str) -> String {
    [base_key, pointer].concat()
}

/// The value `base` makes with the path writes newer than it applied in order.
fn merge(base: &Cell, paths: &[(String, Cell)]) -> Result<Cell> {
    let mut newer: Vec<&(String, Cell)> = paths.iter().filter(|(_, c)| c.wins_over(base)).collect();
    newer.sort_by(|(pa, a), (pb, b)| (a.height, a.entry, pa).cmp(&(b.height, b.entry, pb)));
    let Some((_, top)) = newer.last() else {
        return Ok(base.clone());
    };
    let mut value = parse(base.value.as_deref())?;
    for (pointer, path_cell) in &newer {
        apply(&mut value, pointer, path_cell)?;
    }
    Ok(cell(
        top.height,
        top.entry,
        Some(&crate::json::encode(&value)),
    ))
}

/// Whether a write of one of `paths` goes into an array in `value`
/// ([`pointer::array_on_the_way`]).
fn goes_into_an_array(value: &Value, paths: &[(String, Cell)]) -> Result<bool> {
    for (pointer, _) in paths {
        let tokens = pointer::parse(pointer).map_err(|_| stored_bad("pointer"))?;
        if pointer::array_on_the_way(value, &tokens).is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn apply(value: &mut Value, pointer: &str, path_cell: &Cell) -> Result<()> {
    let tokens = pointer::parse(pointer).map_err(|_| stored_bad("pointer"))?;
    let written = parse(path_cell.value.as_deref())?;
    pointer::place(value, &tokens, written);
    Ok(())
}

fn parse(json: Option<&str>) -> Result<Value> {
    json.map_or(Ok(Value::Null), |text| {
        serde_json::from_str(text).map_err(|_| stored_bad("value"))
    })
}

fn stored_bad(what: &str) -> Error {
    Error::Corrupt(format!("a stored document {what} does not parse"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_row_keys_have_the_formatted_layout() {
        let entry = EntryId::of_bytes(b"an entry");
        for key in ["k", "k0000001", &"x".repeat(4096), &"y".repeat(0x1_0000)] {
            assert_eq!(key_prefix(key), format!("{:04x}{key}", key.len()));
            for height in [0, 1, 0xf, 0x10, 0xffff_ffff, u64::MAX] {
                let mut row = String::new();
                push_log_key(&mut row, key, height, &entry);
                assert_eq!(
                    row,
                    format!("{:04x}{key}{height:016x}{}", key.len(), entry.to_text())
                );
                assert_eq!(log_row_entry(key, &row).unwrap(), (height, entry));
            }
        }
        assert_eq!(log_store("s"), "_log:s");
        assert_eq!(doc_store("s"), "_doc:s");
    }
}
