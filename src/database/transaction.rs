//! Transactions: several operations, across stores, committed as one entry.

use super::{check_key, check_user_store, Database};
use crate::entry::{EntryId, Op, Ops};
use crate::error::{Error, Result};

/// Operations collected for one commit. Nothing is visible until [`Transaction::commit`];
/// dropping the transaction discards them.
#[derive(Debug)]
pub struct Transaction {
    db: Database,
    ops: Ops,
}

impl Transaction {
    pub(crate) fn new(db: Database) -> Self {
        Transaction {
            db,
            ops: Ops::new(),
        }
    }

    /// Sets `key` in `store` to the JSON text `json` (a later operation on the same key in
    /// this transaction replaces it).
    pub fn set(&mut self, store: &str, key: &str, json: &str) -> Result<()> {
        check_user_store(store)?;
        check_key(key)?;
        let value = crate::json::canonical(json)?;
        self.ops
            .entry(store.to_string())
            .or_default()
            .insert(key.to_string(), Op::Set(value));
        Ok(())
    }

    /// Deletes `key` from `store`; [`Error::NotFound`] if it has no value (in the database
    /// or set earlier in this transaction).
    pub fn delete(&mut self, store: &str, key: &str) -> Result<()> {
        check_user_store(store)?;
        check_key(key)?;
        let set_here = matches!(
            self.ops.get(store).and_then(|s| s.get(key)),
            Some(Op::Set(_))
        );
        if !set_here {
            self.db.get(store, key)?;
        }
        self.ops
            .entry(store.to_string())
            .or_default()
            .insert(key.to_string(), Op::Delete);
        Ok(())
    }

    /// Commits every operation as one signed entry and returns its id. An empty transaction
    /// is refused with [`Error::InvalidArgument`].
    pub fn commit(self) -> Result<EntryId> {
        if self.ops.is_empty() {
            return Err(Error::invalid("the transaction has no operations"));
        }
        self.db.commit(self.ops)
    }
}
