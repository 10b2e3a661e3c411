//! Transactions: several operations, across stores, committed as one entry.

use std::collections::HashMap;

use serde_json::Value;

use super::{check_key, check_user_store, Database};
use crate::entry::{
    encoded_op_len, encoded_path_len, encoded_store_len, EntryId, Op, Ops, ENTRY_BYTES_BESIDES_OPS,
    MAX_ENTRY_BYTES,
};
use crate::error::{quoted, Error, Result};
use crate::json::pointer;

/// Operations collected for one commit. Nothing is visible until [`Transaction::commit`];
/// dropping the transaction discards them. They are one entry, so they take at most
/// [`MAX_ENTRY_BYTES`]: an operation that would make them more is refused.
#[derive(Debug)]
pub struct Transaction {
    db: Database,
    ops: Ops,
    /// The bytes `ops` take in the entry ([`encoded_op_len`], [`encoded_store_len`]).
    bytes: usize,
    /// The value of each key with path writes here, as the database held it when the first
    /// was made, with the writes since.
    patched: HashMap<(String, String), Value>,
}

impl Transaction {
    pub(crate) fn new(db: Database) -> Self {
        Transaction {
            db,
            ops: Ops::new(),
            bytes: 0,
            patched: HashMap::new(),
        }
    }

    /// Sets `key` in `store` to the JSON text `json` (a later operation on the same key in
    /// this transaction replaces it).
    pub fn set(&mut self, store: &str, key: &str, json: &str) -> Result<()> {
        check_user_store(store)?;
        check_key(key)?;
        let value = crate::json::canonical(json)?;
        self.put(store, key, Op::Set(value))
    }

    /// Sets the part of `key`'s JSON value at `pointer` (RFC 6901; `""` is the whole value,
    /// as [`Transaction::set`]) to the JSON text `json`, making the objects the path needs.
    /// Merged per path with concurrent changes (see `database::documents`). A write of a
    /// path replaces earlier writes of it and of paths under it in this transaction. A path
    /// that goes into an array (an index, or `-`) writes that whole array as this
    /// transaction sees it (read from the database): where an element goes depends on what
    /// came before, which a merge of paths cannot know, so arrays merge whole.
    /// [`Error::InvalidArgument`] for a bad pointer, bad JSON, a token into an array that
    /// neither indexes nor appends to it, or a write nested deeper than
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
        let whole = match self.ops.get(store).and_then(|s| s.get(key)) {
            Some(Op::Set(whole)) => Some(
                serde_json::from_str(whole)
                    .map_err(|_| Error::Internal("a pending value does not parse".into()))?,
            ),
            Some(Op::Delete) => Some(Value::Null),
            _ => None,
        };
        if let Some(mut doc) = whole {
            pointer::check_array_tokens(&doc, &tokens)?;
            pointer::place(&mut doc, &tokens, parsed);
            return self.put(store, key, Op::Set(crate::json::canonical_of(&doc)?));
        }
        let (tokens, parsed) = self.as_written(store, key, tokens, parsed)?;
        if tokens.is_empty() {
            // The value is an array: the write is of the whole value.
            return self.put(store, key, Op::Set(crate::json::canonical_of(&parsed)?));
        }
        self.add_path(store, key, &tokens, crate::json::canonical_of(&parsed)?)?;
        let slot = (store.to_string(), key.to_string());
        if let Some(value) = self.patched.get_mut(&slot) {
            pointer::place(value, &tokens, parsed);
        }
        Ok(())
    }

    /// The write of `value` at `tokens` in `key` of `store` as it is made: the same, or, for
    /// a path that goes into an array, a write of that whole array (no tokens: the value is
    /// the array) as this transaction sees it.
    fn as_written(
        &mut self,
        store: &str,
        key: &str,
        tokens: Vec<String>,
        value: Value,
    ) -> Result<(Vec<String>, Value)> {
        let patched = self.patched_value(store, key)?;
        pointer::check_array_tokens(patched, &tokens)?;
        let Some(n) = pointer::array_on_the_way(patched, &tokens) else {
            return Ok((tokens, value));
        };
        let mut array = pointer::get(patched, &tokens[..n])
            .cloned()
            .unwrap_or_default();
        pointer::place(&mut array, &tokens[n..], value);
        // Written whole, the array must itself be a path write every copy accepts.
        pointer::check_write_depth(&tokens[..n], pointer::depth(&array)).map_err(|_| {
            Error::invalid(format!(
                "this path goes into an array, which is written whole, and the array nests \
                 deeper than a path write may ({} levels)",
                pointer::MAX_WRITE_DEPTH
            ))
        })?;
        Ok((tokens[..n].to_vec(), array))
    }

    /// Adds the write of `fragment` (canonical JSON) at `tokens` to `key`'s path writes,
    /// replacing earlier writes of it and of paths under it.
    fn add_path(
        &mut self,
        store: &str,
        key: &str,
        tokens: &[String],
        fragment: String,
    ) -> Result<()> {
        let pointer = pointer::pointer_of(tokens);
        let Some(Op::Patch(paths)) = self.ops.get(store).and_then(|s| s.get(key)) else {
            let paths = [(pointer, fragment)].into_iter().collect();
            return self.put_patch(store, key, Op::Patch(paths));
        };
        // The paths at or under this one sort together, from it on: found without a look
        // at the others (a transaction may hold many paths of one key).
        let mut removed = 0;
        let replaced: Vec<String> = (paths.range::<str, _>((
            std::ops::Bound::Included(pointer.as_str()),
            std::ops::Bound::Unbounded,
        )))
        .take_while(|(p, _)| p.starts_with(pointer.as_str()))
        .filter(|(p, _)| pointer::is_at_or_under(p, &pointer))
        .map(|(p, v)| {
            removed += encoded_path_len(p, v);
            p.clone()
        })
        .collect();
        // The op grows by the new path, less those it replaces (counted without a pass over
        // the op's other paths).
        let bytes = within_an_entry(self.bytes - removed + encoded_path_len(&pointer, &fragment))?;
        let Some(Op::Patch(paths)) = self.ops.get_mut(store).and_then(|s| s.get_mut(key)) else {
            unreachable!("a patch was found above");
        };
        for p in &replaced {
            paths.remove(p);
        }
        paths.insert(pointer, fragment);
        self.bytes = bytes;
        Ok(())
    }

    /// The value `key` of `store` has with this transaction's path writes (read from the
    /// database at the first; null if it has none).
    fn patched_value(&mut self, store: &str, key: &str) -> Result<&mut Value> {
        let slot = (store.to_string(), key.to_string());
        if !self.patched.contains_key(&slot) {
            // A key without a value reads as null; a database that cannot be read (forgotten
            // here, say) fails the write.
            let stored = match self.db.cell(store, key)?.and_then(|cell| cell.value) {
                Some(json) => serde_json::from_str(&json).map_err(|_| {
                    Error::Corrupt(format!("the value of key {} does not parse", quoted(key)))
                })?,
                None => Value::Null,
            };
            self.patched.insert(slot.clone(), stored);
        }
        Ok(self.patched.get_mut(&slot).expect("inserted above"))
    }

    /// Puts `op`, a whole value or a deletion, for `key` of `store` as [`Transaction::put_patch`]
    /// does; the key's value is then `op`'s, not a patched one.
    fn put(&mut self, store: &str, key: &str, op: Op) -> Result<()> {
        self.put_patch(store, key, op)?;
        self.patched.remove(&(store.to_string(), key.to_string()));
        Ok(())
    }

    /// Puts `op` for `key` of `store`, in place of an earlier one, unless the entry would
    /// then be over [`MAX_ENTRY_BYTES`] ([`Error::InvalidArgument`]; nothing changes).
    fn put_patch(&mut self, store: &str, key: &str, op: Op) -> Result<()> {
        let bytes = self.bytes_with(store, key, encoded_op_len(key, &op))?;
        self.ops
            .entry(store.to_string())
            .or_default()
            .insert(key.to_string(), op);
        self.bytes = bytes;
        Ok(())
    }

    /// The bytes the operations would take with `key`'s in `store` taking `op_len`;
    /// [`Error::InvalidArgument`] if the entry would then be over [`MAX_ENTRY_BYTES`].
    fn bytes_with(&self, store: &str, key: &str, op_len: usize) -> Result<usize> {
        let (store_len, earlier) = match self.ops.get(store) {
            Some(ops) => (0, ops.get(key).map_or(0, |op| encoded_op_len(key, op))),
            None => (encoded_store_len(store), 0),
        };
        within_an_entry(self.bytes - earlier + store_len + op_len)
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
        self.put(store, key, Op::Delete)
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

/// `bytes` of operations, if an entry can hold them ([`Error::InvalidArgument`] otherwise).
fn within_an_entry(bytes: usize) -> Result<usize> {
    if ENTRY_BYTES_BESIDES_OPS + bytes > MAX_ENTRY_BYTES {
        return Err(Error::invalid(format!(
            "a transaction is one entry, at most {MAX_ENTRY_BYTES} bytes: with this \
             operation it would take {} or more",
            ENTRY_BYTES_BESIDES_OPS + bytes
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::backend::MemoryBackend;
    use crate::crypto::PrivateKey;
    use crate::database::registry::Registry;
    use crate::entry::encoded_ops_len;

    /// The bytes a transaction counts, path writes replacing others among them, are the
    /// bytes its operations take in the entry.
    #[test]
    fn the_bytes_counted_are_the_operations_bytes() {
        let key = PrivateKey::generate().unwrap();
        let author = key.public_key();
        let db = Registry::new(Arc::new(MemoryBackend::new()))
            .create("d", Arc::new(key), author)
            .unwrap();
        let mut txn = db.begin();
        for (pointer, json) in [
            ("/a/x", "1"),
            ("/ab", "22"),
            ("/a~1b", "333"),
            ("/a/y/z", "4444"),
            ("/a", "{\"y\":5}"),
            ("/ab", "6"),
        ] {
            txn.set_path("s", "k", pointer, json).unwrap();
            let counted = encoded_ops_len(&txn.ops);
            assert_eq!(txn.bytes, counted, "after {pointer}");
        }
    }
}
