//! A key's history: every change made to it, read through the change log that
//! [`super::documents`] keeps beside the cells.

use std::collections::BTreeMap;

use super::documents::{self, CellSource, StoredCells};
use crate::backend::Backend;
use crate::crypto::PublicKey;
use crate::entry::{Entry, EntryId, Op};
use crate::error::{Error, Result};

/// What one change did to a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// Set the whole value to this canonical JSON text.
    Set(String),
    /// Deleted the key.
    Delete,
    /// Set parts of the value: JSON Pointer → canonical JSON text.
    Patch(BTreeMap<String, String>),
}

/// One change of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChange {
    /// The entry that made it.
    pub entry: EntryId,
    /// The key that signed the entry.
    pub author: PublicKey,
    /// The entry's height.
    pub height: u64,
    /// What it did.
    pub kind: ChangeKind,
}

/// The changes of `key` in `store` of database `db`, newest first, at most `limit` (0: all).
pub(crate) fn of_key(
    backend: &dyn Backend,
    db: &EntryId,
    store: &str,
    key: &str,
    limit: usize,
) -> Result<Vec<KeyChange>> {
    let source = StoredCells {
        backend,
        db: *db,
        document_stores: None,
    };
    let rows =
        source.cells_with_prefix(&documents::log_store(store), &documents::key_prefix(key))?;
    // Log rows sort by (height, entry id): their keys spell both in fixed-width hex.
    let wanted = if limit == 0 { rows.len() } else { limit };
    rows.iter()
        .rev()
        .take(wanted)
        .map(|(row_key, _)| {
            let (height, id) = documents::log_row_entry(key, row_key)?;
            let bytes = backend.get_entry(&id)?.ok_or_else(|| {
                Error::Corrupt(format!("the change log names a missing entry {id}"))
            })?;
            let entry = Entry::decode_stored(&bytes)?;
            let content = entry.content();
            let op = content
                .ops
                .get(store)
                .and_then(|ops| ops.get(key))
                .ok_or_else(|| Error::Corrupt(format!("entry {id} does not change key '{key}'")))?;
            Ok(KeyChange {
                entry: id,
                author: content.author,
                height,
                kind: match op {
                    Op::Set(json) => ChangeKind::Set(json.clone()),
                    Op::Delete => ChangeKind::Delete,
                    Op::Patch(paths) => ChangeKind::Patch(paths.clone()),
                },
            })
        })
        .collect()
}
