//! Typed records: a store whose values are one serde type, read and written only through
//! a [`Table`], so each record has one encoding and one place that knows it.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Database, Transaction};
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
        db.cell(self.store, key)?
            .and_then(|cell| cell.value)
            .map(|json| self.decode(&json))
            .transpose()
    }

    /// Every record, sorted by key.
    pub fn all(&self, db: &Database) -> Result<Vec<(String, T)>> {
        db.get_all(self.store)?
            .into_iter()
            .map(|(key, json)| Ok((key, self.decode(&json)?)))
            .collect()
    }

    /// The record under `key`, if any; a record that does not parse is `Some(None)` (for
    /// records a reader can do without, made again by their writer).
    pub fn get_lenient(&self, db: &Database, key: &str) -> Result<Option<Option<T>>> {
        Ok((db.cell(self.store, key)?)
            .and_then(|cell| cell.value)
            .map(|json| self.decode(&json).ok()))
    }

    /// Every record, sorted by key; one that does not parse is `None` (as
    /// [`Table::get_lenient`]).
    pub fn all_lenient(&self, db: &Database) -> Result<Vec<(String, Option<T>)>> {
        Ok((db.get_all(self.store)?.into_iter())
            .map(|(key, json)| {
                let record = self.decode(&json).ok();
                (key, record)
            })
            .collect())
    }

    /// Adds writing `record` under `key` to `txn`.
    pub fn set(&self, txn: &mut Transaction, key: &str, record: &T) -> Result<()> {
        txn.set(self.store, key, &self.encode(record)?)
    }

    /// Writes `record` under `key` as one commit.
    pub fn put(&self, db: &Database, key: &str, record: &T) -> Result<EntryId> {
        db.set(self.store, key, &self.encode(record)?)
    }

    /// Adds deleting the record under `key` to `txn`; [`Error::NotFound`] if there is none.
    pub fn remove(&self, txn: &mut Transaction, key: &str) -> Result<()> {
        txn.delete(self.store, key)
    }

    /// Deletes the record under `key` as one commit; [`Error::NotFound`] if there is none.
    pub fn delete(&self, db: &Database, key: &str) -> Result<EntryId> {
        db.delete(self.store, key)
    }

    /// Deletes the record under `key` as one commit, if there is one (another writer may
    /// have deleted it since it was read); whether there was.
    pub fn delete_if_any(&self, db: &Database, key: &str) -> Result<bool> {
        match db.delete(self.store, key) {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
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
    fn records_round_trip_and_a_malformed_one_is_corrupt() {
        let registry = Registry::new(Arc::new(MemoryBackend::new()));
        let key = Arc::new(PrivateKey::generate().unwrap());
        let db = registry.create("d", key.clone(), key.public_key()).unwrap();
        assert_eq!(NOTES.get(&db, "a").unwrap(), None);
        NOTES.put(&db, "a", &vec![1, 2]).unwrap();
        let mut txn = db.begin();
        NOTES.set(&mut txn, "b", &vec![3]).unwrap();
        txn.commit().unwrap();
        assert_eq!(NOTES.get(&db, "a").unwrap(), Some(vec![1, 2]));
        assert_eq!(
            NOTES.all(&db).unwrap(),
            vec![("a".to_string(), vec![1, 2]), ("b".to_string(), vec![3])]
        );
        NOTES.delete(&db, "b").unwrap();
        assert_eq!(NOTES.get(&db, "b").unwrap(), None);
        assert!(matches!(
            NOTES.delete(&db, "b"),
            Err(crate::Error::NotFound(_))
        ));
        assert!(!NOTES.delete_if_any(&db, "b").unwrap());
        assert!(NOTES.delete_if_any(&db, "a").unwrap());
        assert_eq!(NOTES.get(&db, "a").unwrap(), None);

        // A stored value of another shape is corrupt, not a wrong value.
        db.set("notes", "c", "\"text\"").unwrap();
        assert!(matches!(NOTES.get(&db, "c"), Err(crate::Error::Corrupt(_))));
    }
}
