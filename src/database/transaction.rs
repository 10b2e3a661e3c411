//! Transactions: several operations, across stores, committed as one entry.

use super::{check_key, check_user_store, Database};
use crate::entry::{EntryId, Op, Ops};
use crate::error::{Error, Result};
use crate::json::pointer;

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

    /// Sets the part of `key`'s JSON value at `pointer` (RFC 6901; `""` is the whole value,
    /// as [`Transaction::set`]) to the JSON text `json`, making the objects the path needs.
    /// Merged per path with concurrent changes (see `database::documents`). A write of a
    /// path replaces earlier writes of it and of paths under it in this transaction.
    /// [`Error::InvalidArgument`] for a bad pointer, bad JSON or a write nested deeper than
    /// [`crate::json::pointer::MAX_WRITE_DEPTH`] levels.
    pub fn set_path(&mut self, store: &str, key: &str, pointer: &str, json: &str) -> Result<()> {
        check_user_store(store)?;
        check_key(key)?;
        if pointer.is_empty() {
            return self.set(store, key, json);
        }
        let parsed = crate::json::parse(json)?;
        let tokens = crate::entry::check_path(pointer, crate::json::pointer::depth(&parsed))?;
        if tokens.iter().any(|t| t == crate::json::NUMBER_MARKER) {
            return Err(crate::json::marker_refused());
        }
        let fragment = crate::json::canonical_of(&parsed)?;
        let store_ops = self.ops.entry(store.to_string()).or_default();
        match store_ops.get_mut(key) {
            Some(Op::Set(whole)) => {
                let mut doc: serde_json::Value = serde_json::from_str(whole)
                    .map_err(|_| Error::Internal("a pending value does not parse".into()))?;
                pointer::place(&mut doc, &tokens, parsed);
                *whole = crate::json::canonical_of(&doc)?;
            }
            Some(op @ Op::Delete) => {
                let mut doc = serde_json::Value::Null;
                pointer::place(&mut doc, &tokens, parsed);
                *op = Op::Set(crate::json::canonical_of(&doc)?);
            }
            Some(Op::Patch(paths)) => {
                paths.retain(|p, _| {
                    pointer::parse(p).map_or(true, |under| !under.starts_with(&tokens))
                });
                paths.insert(pointer.to_string(), fragment);
            }
            None => {
                let paths = [(pointer.to_string(), fragment)].into_iter().collect();
                store_ops.insert(key.to_string(), Op::Patch(paths));
            }
        }
        Ok(())
    }

    /// Deletes `key` from `store`; [`Error::NotFound`] if it has no value (in the database,
    /// or given one earlier in this transaction by `set` or `set_path`).
    pub fn delete(&mut self, store: &str, key: &str) -> Result<()> {
        check_user_store(store)?;
        check_key(key)?;
        let set_here = matches!(
            self.ops.get(store).and_then(|s| s.get(key)),
            Some(Op::Set(_) | Op::Patch(_))
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
