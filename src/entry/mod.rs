//! Entries: the signed, content-addressed unit of history and of sync.
//!
//! Encoding (format version 1, all integers big-endian, strings u32-length-prefixed UTF-8):
//! `version u8 | db tag u8 (0 root, 1 child) [db id 32] | parent count u32, ids 32 each,
//! strictly ascending | height u64 | store count u32, per store (names strictly ascending):
//! name, op count u32, per op (keys strictly ascending): key, kind u8 (0 delete, 1 set,
//! 2 patch) [set: canonical JSON value] [patch: path count u32 (at least 1), per path
//! (pointers strictly ascending): a non-empty JSON Pointer, canonical JSON value]
//! | author 32 | signature 64`.
//! The signature covers [`SIGNING_DOMAIN`] followed by everything before it; the id is the
//! SHA-256 of all of it. Decoding accepts only this canonical form.

mod batch;
pub(crate) mod codec;
mod id;

use std::collections::BTreeMap;

pub use batch::{decode_all, Checked, Checking, Refused, MAX_DECODE_THREADS, MAX_VERIFY_THREADS};
pub use id::EntryId;

use crate::crypto::{KeyCache, KeyRing, PublicKey, Signature};
use crate::error::{Error, Result};
use codec::{Reader, Writer};

/// The encoding's format version.
pub const FORMAT_VERSION: u8 = 1;
/// Domain-separation tag prefixed to the bytes an entry's signature covers.
pub const SIGNING_DOMAIN: &[u8] = b"mnemo/entry/v1\0";
/// Largest accepted encoded entry.
pub const MAX_ENTRY_BYTES: usize = 16 << 20;
/// Largest store name, in bytes.
pub const MAX_STORE_NAME: usize = 255;
/// Largest key, in bytes.
pub const MAX_KEY: usize = 4096;
/// Most parents an entry may have.
pub const MAX_PARENTS: usize = 1024;

/// Bytes an entry of a database with one parent takes besides its stores and operations:
/// format, database id, parent count and parent, height, store count, author, signature.
pub const ENTRY_BYTES_BESIDES_OPS: usize = 1 + 1 + 32 + 4 + 32 + 8 + 4 + 32 + 64;

/// Bytes store `store` takes in an entry besides its keys' operations: its name and count.
pub fn encoded_store_len(store: &str) -> usize {
    4 + store.len() + 4
}

/// Bytes `op` on `key` takes in an entry.
pub fn encoded_op_len(key: &str, op: &Op) -> usize {
    let body = match op {
        Op::Delete => 0,
        Op::Set(json) => 4 + json.len(),
        Op::Patch(paths) => {
            4 + paths
                .iter()
                .map(|(p, v)| encoded_path_len(p, v))
                .sum::<usize>()
        }
    };
    4 + key.len() + 1 + body
}

/// Bytes all of `ops` take in an entry: what a transaction counts as it is built.
#[cfg(test)]
pub(crate) fn encoded_ops_len(ops: &Ops) -> usize {
    (ops.iter())
        .map(|(store, ops)| {
            encoded_store_len(store)
                + (ops.iter())
                    .map(|(k, op)| encoded_op_len(k, op))
                    .sum::<usize>()
        })
        .sum()
}

/// Bytes one path of an [`Op::Patch`] takes in an entry: its pointer and value.
pub fn encoded_path_len(pointer: &str, json: &str) -> usize {
    4 + pointer.len() + 4 + json.len()
}

/// One change to one key of a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set the key to this canonical JSON text.
    Set(String),
    /// Delete the key (a tombstone).
    Delete,
    /// Set parts of the key's JSON value: JSON Pointer (RFC 6901, never `""`) → canonical
    /// JSON text. Merged with concurrent changes per path (see `database::documents`).
    Patch(BTreeMap<String, String>),
}

/// Checks one path of a [`Op::Patch`]: a non-empty valid JSON Pointer without NUL, and a
/// value `value_depth` deep ([`crate::json::pointer::depth`]) whose write stays within
/// [`crate::json::pointer::MAX_WRITE_DEPTH`]. Returns the pointer's tokens;
/// [`Error::InvalidArgument`] otherwise.
pub fn check_path(pointer: &str, value_depth: usize) -> Result<Vec<String>> {
    use crate::json::pointer;
    let tokens = pointer::parse(pointer)?;
    if tokens.is_empty() {
        return Err(Error::invalid("a patch path is not the empty pointer"));
    }
    if pointer.contains('\0') {
        // Paths are stored as text keys, which PostgreSQL cannot hold with a NUL.
        return Err(Error::invalid("a patch path has no NUL"));
    }
    pointer::check_write_depth(&tokens, value_depth)?;
    Ok(tokens)
}

/// Operations grouped by store name, then by key.
pub type Ops = BTreeMap<String, BTreeMap<String, Op>>;

/// What an entry says, before it is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryContent {
    /// The database this entry belongs to; `None` for a root entry.
    pub db: Option<EntryId>,
    /// Parent entries (the database's tips when it was written), sorted.
    pub parents: Vec<EntryId>,
    /// Longest path from the root: 0 for a root, else the highest parent's height plus one.
    pub height: u64,
    /// The changes it makes.
    pub ops: Ops,
    /// Who signs it.
    pub author: PublicKey,
}

/// A signed entry with its canonical bytes and id.
#[derive(Clone, Debug)]
pub struct Entry {
    content: EntryContent,
    bytes: Vec<u8>,
    id: EntryId,
}

impl EntryContent {
    /// Signs this content with the author's key, which `keys` must hold
    /// ([`Error::PermissionDenied`] otherwise; [`Error::LoggedOut`] from an ended session).
    pub fn sign(self, keys: &dyn KeyRing) -> Result<Entry> {
        // What the signature covers made in the entry's own buffer, the domain before it
        // then taken off: no copy of the entry (up to 16 MiB) to sign.
        let mut w = Writer(Vec::with_capacity(256));
        w.raw(SIGNING_DOMAIN);
        self.encode_unsigned(&mut w)?;
        let signature = keys.sign(&self.author, &w.0)?;
        w.0.drain(..SIGNING_DOMAIN.len());
        w.raw(&signature);
        let id = EntryId::of_bytes(&w.0);
        Ok(Entry {
            content: self,
            bytes: w.0,
            id,
        })
    }

    /// Appends the entry without its signature to `w`.
    fn encode_unsigned(&self, w: &mut Writer) -> Result<()> {
        check_limits(self)?;
        let start = w.0.len();
        w.u8(FORMAT_VERSION);
        match &self.db {
            None => w.u8(0),
            Some(db) => {
                w.u8(1);
                w.raw(db.as_bytes());
            }
        }
        w.u32(self.parents.len() as u32);
        for p in &self.parents {
            w.raw(p.as_bytes());
        }
        w.u64(self.height);
        w.u32(self.ops.len() as u32);
        for (store, ops) in &self.ops {
            w.str(store);
            w.u32(ops.len() as u32);
            for (key, op) in ops {
                w.str(key);
                match op {
                    Op::Delete => w.u8(0),
                    Op::Set(json) => {
                        w.u8(1);
                        w.str(json);
                    }
                    Op::Patch(paths) => {
                        w.u8(2);
                        w.u32(paths.len() as u32);
                        for (pointer, json) in paths {
                            w.str(pointer);
                            w.str(json);
                        }
                    }
                }
            }
        }
        w.raw(self.author.as_bytes());
        if w.0.len() - start + 64 > MAX_ENTRY_BYTES {
            return Err(Error::invalid(format!(
                "an entry is at most {MAX_ENTRY_BYTES} bytes"
            )));
        }
        Ok(())
    }
}

fn check_limits(c: &EntryContent) -> Result<()> {
    if c.parents.len() > MAX_PARENTS {
        return Err(Error::invalid(format!(
            "an entry has at most {MAX_PARENTS} parents"
        )));
    }
    if !c.parents.windows(2).all(|w| w[0] < w[1]) {
        return Err(Error::Internal(
            "entry parents must be sorted and distinct".into(),
        ));
    }
    for (store, ops) in &c.ops {
        if store.is_empty() || store.len() > MAX_STORE_NAME || ops.is_empty() {
            return Err(Error::invalid(
                "store names are 1 to 255 bytes and carry operations",
            ));
        }
        if ops.keys().any(|k| k.len() > MAX_KEY) {
            return Err(Error::invalid(format!("a key is at most {MAX_KEY} bytes")));
        }
    }
    Ok(())
}

impl Entry {
    /// Decodes and verifies an entry from its canonical bytes: the form must be canonical and
    /// the signature must verify. Fails with [`Error::Corrupt`] otherwise.
    pub fn decode(bytes: &[u8]) -> Result<Entry> {
        let content = Self::check(bytes, Some(&mut KeyCache::new()))?;
        Ok(Self::made(content, bytes.to_vec()))
    }

    /// [`Entry::decode`] of bytes the entry then keeps (not copied), the author's key taken
    /// from (or added to) `keys`: for decoding many entries by few authors. A refusal says
    /// the id of the bytes.
    fn decode_owned(bytes: Vec<u8>, keys: &mut KeyCache) -> Checked {
        match Self::check(&bytes, Some(keys)) {
            Ok(content) => Ok(Self::made(content, bytes)),
            Err(error) => Err(Refused {
                id: Some(EntryId::of_bytes(&bytes)),
                error,
            }),
        }
    }

    /// Decodes an entry this instance verified before: read back from its own storage
    /// (stored rows carry a checksum against damage), or kept as bytes in its memory since
    /// (an entry waiting for its parents). The form is checked, the signature is not
    /// verified again. Never use it for bytes from elsewhere.
    pub fn decode_stored(bytes: &[u8]) -> Result<Entry> {
        let content = Self::check(bytes, None)?;
        Ok(Self::made(content, bytes.to_vec()))
    }

    /// Decodes the content of `bytes`, verifying the signature through `keys` unless
    /// `keys` is `None`.
    fn check(bytes: &[u8], keys: Option<&mut KeyCache>) -> Result<EntryContent> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(Error::Corrupt(format!(
                "entry is larger than {MAX_ENTRY_BYTES} bytes"
            )));
        }
        if bytes.len() < 64 {
            return Err(Error::Corrupt("entry is truncated".into()));
        }
        let (unsigned, signature) = bytes.split_at(bytes.len() - 64);
        let content = decode_unsigned(unsigned)?;
        if let Some(keys) = keys {
            let signature: Signature = signature.try_into().expect("split at 64");
            keys.verify(&content.author, &[SIGNING_DOMAIN, unsigned], &signature)?;
        }
        Ok(content)
    }

    /// The entry of `content` decoded from `bytes`.
    fn made(content: EntryContent, bytes: Vec<u8>) -> Entry {
        Entry {
            content,
            id: EntryId::of_bytes(&bytes),
            bytes,
        }
    }

    /// The content hash.
    pub fn id(&self) -> EntryId {
        self.id
    }

    /// The canonical signed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The canonical signed bytes, the decoded content let go.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// What the entry says.
    pub fn content(&self) -> &EntryContent {
        &self.content
    }

    /// The database it belongs to: its own id for a root entry.
    pub fn database_id(&self) -> EntryId {
        self.content.db.unwrap_or(self.id)
    }
}

fn decode_unsigned(bytes: &[u8]) -> Result<EntryContent> {
    let corrupt = |m: &str| Error::Corrupt(m.to_string());
    let mut r = Reader::new(bytes);
    if r.u8()? != FORMAT_VERSION {
        return Err(corrupt("unknown entry format version"));
    }
    let db = match r.u8()? {
        0 => None,
        1 => Some(EntryId::from_bytes(r.array()?)),
        _ => return Err(corrupt("bad database tag")),
    };
    let parent_count = r.count(MAX_PARENTS, "parents")?;
    let mut parents = Vec::with_capacity(parent_count);
    for _ in 0..parent_count {
        let p = EntryId::from_bytes(r.array()?);
        if parents.last().is_some_and(|last| *last >= p) {
            return Err(corrupt("parents are not strictly ascending"));
        }
        parents.push(p);
    }
    let height = r.u64()?;
    if db.is_none() != parents.is_empty() || (db.is_none() && height != 0) {
        return Err(corrupt(
            "only a root entry has no parents, and it has height 0",
        ));
    }
    let mut ops = Ops::new();
    let store_count = r.count(bytes.len(), "stores")?;
    for _ in 0..store_count {
        let store = r.str(MAX_STORE_NAME, "store name")?;
        if store.is_empty()
            || store.contains('\0')
            || ops
                .last_key_value()
                .is_some_and(|(last, _)| last.as_str() >= store)
        {
            return Err(corrupt(
                "store names are non-empty, without NUL and strictly ascending",
            ));
        }
        let op_count = r.count(bytes.len(), "operations")?;
        if op_count == 0 {
            return Err(corrupt(
                "a store in an entry carries at least one operation",
            ));
        }
        let mut store_ops = BTreeMap::new();
        for _ in 0..op_count {
            let key = r.str(MAX_KEY, "key")?;
            if key.is_empty() || key.contains('\0') {
                // What a local write's key check refuses (storage keys are NUL-free text).
                return Err(corrupt("a key is not empty and has no NUL"));
            }
            if store_ops
                .last_key_value()
                .is_some_and(|(last, _): (&String, _)| last.as_str() >= key)
            {
                return Err(corrupt("keys are strictly ascending"));
            }
            let op = match r.u8()? {
                0 => Op::Delete,
                1 => {
                    let json = r.str(MAX_ENTRY_BYTES, "value")?;
                    if crate::json::canonical_depth(json).is_none() {
                        return Err(corrupt("a value is not canonical JSON"));
                    }
                    Op::Set(json.to_string())
                }
                2 => Op::Patch(decode_patch(&mut r, bytes.len())?),
                _ => return Err(corrupt("bad operation kind")),
            };
            store_ops.insert(key.to_string(), op);
        }
        ops.insert(store.to_string(), store_ops);
    }
    let author = PublicKey::from_bytes(r.array()?);
    if !r.is_empty() {
        return Err(corrupt("trailing bytes after the entry"));
    }
    Ok(EntryContent {
        db,
        parents,
        height,
        ops,
        author,
    })
}

fn decode_patch(r: &mut Reader<'_>, limit: usize) -> Result<BTreeMap<String, String>> {
    let corrupt = |m: &str| Error::Corrupt(m.to_string());
    let count = r.count(limit, "patch paths")?;
    if count == 0 {
        return Err(corrupt("a patch carries at least one path"));
    }
    let mut paths = BTreeMap::new();
    for _ in 0..count {
        let pointer = r.str(crate::json::pointer::MAX_POINTER, "pointer")?;
        if paths
            .last_key_value()
            .is_some_and(|(last, _): (&String, _)| last.as_str() >= pointer)
        {
            return Err(corrupt("patch pointers are strictly ascending"));
        }
        let json = r.str(MAX_ENTRY_BYTES, "value")?;
        let depth = crate::json::canonical_depth(json)
            .ok_or_else(|| corrupt("a value is not canonical JSON"))?;
        check_path(pointer, depth).map_err(|e| Error::Corrupt(format!("a patch path: {e}")))?;
        paths.insert(pointer.to_string(), json.to_string());
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;

    fn sample(key: &PrivateKey) -> EntryContent {
        let mut ops = Ops::new();
        ops.entry("todo".into())
            .or_default()
            .insert("milk".into(), Op::Set("{\"done\":false}".into()));
        ops.entry("todo".into())
            .or_default()
            .insert("eggs".into(), Op::Delete);
        let paths = [
            ("/a~1b".to_string(), "1".to_string()),
            ("/c/0".into(), "[true]".into()),
        ];
        ops.entry("todo".into())
            .or_default()
            .insert("jam".into(), Op::Patch(paths.into_iter().collect()));
        EntryContent {
            db: Some(EntryId::of_bytes(b"db")),
            parents: vec![EntryId::of_bytes(b"p")],
            height: 1,
            ops,
            author: key.public_key(),
        }
    }

    #[test]
    fn encoded_lengths_add_up_to_the_entry() {
        let key = PrivateKey::generate().unwrap();
        let content = sample(&key);
        let ops = encoded_ops_len(&content.ops);
        let entry = content.sign(&key).unwrap();
        assert_eq!(entry.bytes().len(), ENTRY_BYTES_BESIDES_OPS + ops);
    }

    #[test]
    fn encoding_round_trips_and_is_deterministic() {
        let key = PrivateKey::generate().unwrap();
        let e = sample(&key).sign(&key).unwrap();
        let d = Entry::decode(e.bytes()).unwrap();
        assert_eq!(d.content(), e.content());
        assert_eq!(d.id(), e.id());
        assert_eq!(sample(&key).sign(&key).unwrap().bytes(), e.bytes());
    }

    #[test]
    fn every_flipped_bit_or_truncation_is_rejected() {
        let key = PrivateKey::generate().unwrap();
        let e = sample(&key).sign(&key).unwrap();
        for i in 0..e.bytes().len() {
            let mut b = e.bytes().to_vec();
            b[i] ^= 0x01;
            assert!(Entry::decode(&b).is_err(), "flip at byte {i} accepted");
            assert!(
                Entry::decode(&e.bytes()[..i]).is_err(),
                "truncation at {i} accepted"
            );
        }
        let mut longer = e.bytes().to_vec();
        longer.push(0);
        assert!(Entry::decode(&longer).is_err());
    }
}
