//! Typed records: a store whose values are one serde type, read and written only through
//! a [`Table`], so each record has one encoding and one place that knows it.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Database, Transaction, Unchanged};
use crate::entry::EntryId;
use crate::error::{Error, Result};

/// The records of type `T` kept in one store of a database, as canonical JSON.
pub struct Table<T> {
    store: &'static str,
    /// What a record is, for messages ("user record").
    what: &'static str,
    record: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Table<T> {
    /// The table of `what` records in `store`.
    pub const fn new(store: &'static str, what: &'static str) -> Self {
        Table {
            store,
            what,
            record: PhantomData,
        }
    }

    /// The record under `key`, if any. [`Error::Corrupt`] if it does not parse.
    pub fn get(&self, db: &Database, key: &str) -> Result<Option<T>> {
        Ok(self.get_versioned(db, key)?.map(|(record, _)| record))
    }

    /// The record under `key` with the entry that wrote it, for a later
    /// [`Table::put_if_unchanged`].
    pub fn get_versioned(&self, db: &Database, key: &str) -> Result<Option<(T, EntryId)>> {
        let Some(cell) = db.cell(self.store, key)? else {
            return Ok(None);
        };
        cell.value
            .map(|json| Ok((self.decode(&json)?, cell.entry)))
            .transpose()
    }

    /// Every record, sorted by key.
    pub fn all(&self, db: &Database) -> Result<Vec<(String, T)>> {
        db.get_all(self.store)?
            .into_iter()
            .map(|(key, json)| Ok((key, self.decode(&json)?)))
            .collect()
    }

    /// Adds writing `record` under `key` to `txn`.
    pub fn set(&self, txn: &mut Transaction, key: &str, record: &T) -> Result<()> {
        txn.set(self.store, key, &self.encode(record)?)
    }

    /// Writes `record` under `key` as one commit.
    pub fn put(&self, db: &Database, key: &str, record: &T) -> Result<EntryId> {
        db.set(self.store, key, &self.encode(record)?)
    }

    /// Commits `txn`, which writes `key`, only if the record under `key` is still the one
    /// `seen` wrote (from [`Table::get_versioned`]; `None`: there was none). `Ok(None)` if
    /// it changed meanwhile: nothing was written.
    pub fn commit_if_unchanged(
        &self,
        txn: Transaction,
        key: &str,
        seen: Option<EntryId>,
    ) -> Result<Option<EntryId>> {
        txn.commit_if_unchanged(&Unchanged {
            store: self.store.to_string(),
            key: key.to_string(),
            seen,
        })
    }

    /// Deletes the record under `key` as one commit; [`Error::NotFound`] if there is none.
    pub fn delete(&self, db: &Database, key: &str) -> Result<EntryId> {
        db.delete(self.store, key)
    }

    fn encode(&self, record: &T) -> Result<String> {
        serde_json::to_string(record)
            .map_err(|e| Error::Internal(format!("cannot encode a {}: {e}", self.what)))
    }

    fn decode(&self, json: &str) -> Result<T> {
        serde_json::from_str(json)
            .map_err(|_| Error::Corrupt(format!("a stored {} is malformed", self.what)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Table;
    use crate::backend::MemoryBackend;
    use crate::crypto::PrivateKey;
    use crate::database::Registry;

    const NOTES: Table<Vec<u32>> = Table::new("notes", "note");

    #[test]
    fn records_round_trip_and_a_conditional_commit_sees_changes() {
        let registry = Registry::new(Arc::new(MemoryBackend::new()));
        let key = Arc::new(PrivateKey::generate().unwrap());
        let db = registry.create("d", key.clone(), key.public_key()).unwrap();
        assert_eq!(NOTES.get(&db, "a").unwrap(), None);
        NOTES.put(&db, "a", &vec![1, 2]).unwrap();
        let (record, seen) = NOTES.get_versioned(&db, "a").unwrap().unwrap();
        assert_eq!(record, vec![1, 2]);

        // Someone else writes "a" after we read it: our conditional commit writes nothing.
        NOTES.put(&db, "a", &vec![3]).unwrap();
        let mut txn = db.begin();
        NOTES.set(&mut txn, "a", &vec![4]).unwrap();
        assert_eq!(
            NOTES.commit_if_unchanged(txn, "a", Some(seen)).unwrap(),
            None
        );
        assert_eq!(NOTES.get(&db, "a").unwrap(), Some(vec![3]));

        // Read again, commit: it lands.
        let (_, seen) = NOTES.get_versioned(&db, "a").unwrap().unwrap();
        let mut txn = db.begin();
        NOTES.set(&mut txn, "a", &vec![5]).unwrap();
        assert!(NOTES
            .commit_if_unchanged(txn, "a", Some(seen))
            .unwrap()
            .is_some());
        assert_eq!(NOTES.all(&db).unwrap(), vec![("a".to_string(), vec![5])]);

        // A stored value of another shape is corrupt, not a wrong value.
        db.set("notes", "b", "\"text\"").unwrap();
        assert!(matches!(NOTES.get(&db, "b"), Err(crate::Error::Corrupt(_))));
    }
}
