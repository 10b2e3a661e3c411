//! Helpers shared by the SQL backends: packing ids into blobs and per-row checksums.
//!
//! Every row carries an 8-byte check over its content, so that bytes damaged on disk are
//! reported as [`Error::Corrupt`] instead of being returned as a wrong value.

use sha2::{Digest, Sha256};

use crate::backend::{Cell, EntryMeta};
use crate::entry::EntryId;
use crate::error::{Error, Result};

/// The check of a row made of `parts` (each length-prefixed, so parts cannot run together).
pub fn check(parts: &[&[u8]]) -> Vec<u8> {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize()[..8].to_vec()
}

/// Fails with [`Error::Corrupt`] unless `stored` is the check of `parts`.
pub fn verify(stored: &[u8], parts: &[&[u8]], what: &str) -> Result<()> {
    if check(parts) != stored {
        return Err(Error::Corrupt(format!(
            "stored {what} fails its integrity check"
        )));
    }
    Ok(())
}

/// An id from a stored blob.
pub fn id_of(blob: &[u8]) -> Result<EntryId> {
    let bytes: [u8; 32] = blob
        .try_into()
        .map_err(|_| Error::Corrupt("a stored id is not 32 bytes".into()))?;
    Ok(EntryId::from_bytes(bytes))
}

/// Ids packed one after another.
pub fn pack_ids(ids: &[EntryId]) -> Vec<u8> {
    ids.iter()
        .flat_map(|id| id.as_bytes().iter().copied())
        .collect()
}

/// The inverse of [`pack_ids`].
pub fn unpack_ids(blob: &[u8]) -> Result<Vec<EntryId>> {
    if blob.len() % 32 != 0 {
        return Err(Error::Corrupt("a stored id list is malformed".into()));
    }
    blob.chunks(32).map(id_of).collect()
}

/// The parts an entry row's check covers.
pub fn entry_check(id: &EntryId, meta: &EntryMeta, bytes: &[u8]) -> Vec<u8> {
    let visible = pack_ids(&meta.settings_visible);
    check(&[
        id.as_bytes(),
        meta.db.as_bytes(),
        &meta.height.to_be_bytes(),
        &visible,
        &[u8::from(meta.changes_settings)],
        bytes,
    ])
}

/// The check of a cell row.
pub fn cell_check(db: &EntryId, store: &str, key: &str, cell: &Cell) -> Vec<u8> {
    let (present, value) = match &cell.value {
        Some(v) => (1u8, v.as_bytes()),
        None => (0u8, &[][..]),
    };
    check(&[
        db.as_bytes(),
        store.as_bytes(),
        key.as_bytes(),
        &cell.height.to_be_bytes(),
        cell.entry.as_bytes(),
        &[present],
        value,
    ])
}

/// The check of a tip row.
pub fn tip_check(db: &EntryId, id: &EntryId, height: u64) -> Vec<u8> {
    check(&[db.as_bytes(), id.as_bytes(), &height.to_be_bytes()])
}

/// A database's tips packed: each id followed by its height (8 bytes, big-endian).
pub fn pack_tips(tips: &[(EntryId, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tips.len() * 40);
    for (id, height) in tips {
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&height.to_be_bytes());
    }
    out
}

/// The inverse of [`pack_tips`].
pub fn unpack_tips(blob: &[u8]) -> Result<Vec<(EntryId, u64)>> {
    if blob.len() % 40 != 0 {
        return Err(Error::Corrupt("a stored tip list is malformed".into()));
    }
    let tips = blob
        .chunks(40)
        .map(|tip| {
            let height: [u8; 8] = tip[32..].try_into().expect("40-byte chunk");
            Ok((id_of(&tip[..32])?, u64::from_be_bytes(height)))
        })
        .collect::<Result<Vec<_>>>()?;
    check_tips_distinct(tips.iter().map(|(id, _)| id))?;
    Ok(tips)
}

/// Fails with [`Error::Corrupt`] unless `ids`, a database's tips as stored (in id order),
/// name each entry once: a list made longer with copies (a changed file) would be taken as
/// a commit's parents.
pub fn check_tips_distinct<'a>(mut ids: impl Iterator<Item = &'a EntryId>) -> Result<()> {
    let Some(mut last) = ids.next() else {
        return Ok(());
    };
    for id in ids {
        if id <= last {
            return Err(Error::Corrupt(
                "a database's stored tips name an entry twice or out of order".into(),
            ));
        }
        last = id;
    }
    Ok(())
}

/// The check of a log row: the entry stored at position `seq` of `db`, and the tips of
/// `db` after it (packed by [`pack_tips`]; `None` on rows that do not record them).
pub fn log_check(db: &EntryId, seq: u64, id: &EntryId, tips: Option<&[u8]>) -> Vec<u8> {
    check(&[
        b"log",
        db.as_bytes(),
        &seq.to_be_bytes(),
        id.as_bytes(),
        &[u8::from(tips.is_some())],
        tips.unwrap_or_default(),
    ])
}

/// The check of a store's row count.
pub fn store_check(db: &EntryId, store: &str, rows: u64) -> Vec<u8> {
    check(&[db.as_bytes(), store.as_bytes(), &rows.to_be_bytes()])
}

/// The check of a discarded-entry row.
pub fn discarded_check(db: &EntryId, id: &EntryId) -> Vec<u8> {
    check(&[b"discarded", db.as_bytes(), id.as_bytes()])
}

/// Fails with [`Error::Corrupt`] unless `found` rows were read of a store that records
/// `recorded` (rows lost to damage would otherwise go unseen).
pub fn verify_row_count(store: &str, recorded: u64, found: usize) -> Result<()> {
    if recorded != found as u64 {
        return Err(Error::Corrupt(format!(
            "store '{store}' records {recorded} rows but {found} were found: rows are missing or damaged"
        )));
    }
    Ok(())
}

/// Fails with [`Error::Corrupt`] unless `key`, read in the order of an index, comes after
/// `last` (the key read before it, or the bound the read started after). A SQLite file
/// damaged where one B-tree page names another can return a page of rows twice or out of
/// order, each row passing its own check: a row repeated in place of one lost keeps a
/// recorded count right, and a paged read resuming after the last key read can go back
/// forever.
pub fn verify_rises<K: Ord + ?Sized>(last: Option<&K>, key: &K, what: &str) -> Result<()> {
    if last.is_some_and(|last| key <= last) {
        return Err(Error::Corrupt(format!(
            "{what} were read out of order: the file is damaged"
        )));
    }
    Ok(())
}

/// The check of a metadata or secret row.
pub fn meta_check(key: &str, value: &[u8]) -> Vec<u8> {
    check(&[key.as_bytes(), value])
}

/// A stored height (SQL integers are signed).
pub fn height_of(stored: i64) -> Result<u64> {
    unsigned(stored, "height")
}

/// A stored log position (a sequence number; SQL integers are signed).
pub fn position_of(stored: i64) -> Result<u64> {
    unsigned(stored, "log position")
}

fn unsigned(stored: i64, what: &str) -> Result<u64> {
    u64::try_from(stored).map_err(|_| Error::Corrupt(format!("a stored {what} is negative")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_rise_past_the_one_before() {
        assert!(verify_rises(None, "a", "keys").is_ok());
        assert!(verify_rises(Some("a"), "b", "keys").is_ok());
        for (last, key) in [("b", "b"), ("b", "a")] {
            let e = verify_rises(Some(last), key, "keys").unwrap_err();
            assert!(matches!(e, Error::Corrupt(ref why) if why.contains("out of order")));
        }
        assert!(verify_rises(Some(&7u64), &7, "log positions").is_err());
    }
}
