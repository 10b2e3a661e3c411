//! Holder proofs: a device showing a peer that it holds databases for keys that may read
//! them, before the peer pushes it anything.
//!
//! A user's key signs, once per device, that the device holds copies for it
//! ([`proof_message`]: a domain and the device's id). The device keeps these proofs in
//! `_sync` (made when a user logs in with sync enabled, adds a key, or syncs, tracks or
//! asks for a database; deleted with the key or the account) and shows them when asked ([`Request::Holders`]). A client about
//! to push entries asks the device for proofs by the keys that may read the database in
//! its own copy, checks them against the device id the peer proved in the TLS handshake,
//! and pushes nothing unless one holds: a device whose users' keys were all revoked, or
//! one that merely answers at the address, receives nothing new.
//!
//! The client names the keys by salted hashes ([`key_hash`]), so that a device that proves
//! nothing does not learn who may read the database: it can only test keys it already
//! knows.
//!
//! [`Request::Holders`]: super::wire::Request::Holders

use std::collections::HashSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::{KeyRing, PublicKey, Signature};
use crate::database::{Database, Table};
use crate::error::{Error, Result};

/// The proofs this device holds, by the signing key's text.
const HOLDERS: Table<HolderRecord> = Table::new("holders", "holder proof");

/// What a proof signs before the device's id.
const PROOF_DOMAIN: &[u8] = b"mnemo/sync/holder/v1\0";
/// What a key's hash covers before the salt and the key.
const KEY_HASH_DOMAIN: &[u8] = b"mnemo/sync/holder-key/v1\0";

/// A key's proof that this device holds its copies.
#[derive(Debug, Serialize, Deserialize)]
struct HolderRecord {
    /// The signature over [`proof_message`] for this device, base64url.
    signature: String,
}

/// The bytes a key signs to say that `device` holds its copies.
pub fn proof_message(device: &PublicKey) -> Vec<u8> {
    [PROOF_DOMAIN, device.as_bytes()].concat()
}

/// How a client names `key` in a [`Request::Holders`](super::wire::Request::Holders)
/// salted with `salt`.
pub fn key_hash(salt: &[u8; 16], key: &PublicKey) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(KEY_HASH_DOMAIN);
    hash.update(salt);
    hash.update(key.as_bytes());
    hash.finalize().into()
}

/// Whether `signature` is `key`'s proof that `device` holds its copies.
pub(super) fn proves(key: &PublicKey, signature: &Signature, device: &PublicKey) -> bool {
    key.verify(&proof_message(device), signature).is_ok()
}

/// The proofs of a device, kept in its `_sync` database.
pub(super) struct HolderProofs {
    db: Database,
    device: PublicKey,
}

impl HolderProofs {
    /// The proofs kept in `db` for the device `device`.
    pub(super) fn new(db: Database, device: PublicKey) -> Self {
        HolderProofs { db, device }
    }

    /// Makes a proof with each key `keys` holds that has none yet, or a damaged one (a
    /// signature each, and one commit to `_sync` for them all).
    pub(super) fn make(&self, keys: &dyn KeyRing) -> Result<()> {
        let mut txn = self.db.begin();
        let mut made = false;
        for key in keys.public_keys()? {
            let stored = match HOLDERS.get(&self.db, &key.to_text()) {
                Ok(record) => record.and_then(|r| r.signature()),
                Err(Error::Corrupt(_)) => None,
                Err(e) => return Err(e),
            };
            if stored.is_some_and(|signature| proves(&key, &signature, &self.device)) {
                continue;
            }
            let signature = keys.sign(&key, &proof_message(&self.device))?;
            let record = HolderRecord {
                signature: B64.encode(signature),
            };
            HOLDERS.set(&mut txn, &key.to_text(), &record)?;
            made = true;
        }
        if made {
            txn.commit()?;
        }
        Ok(())
    }

    /// Deletes the proofs of `keys` (one commit to `_sync`, if any was kept).
    pub(super) fn forget(&self, keys: &[PublicKey]) -> Result<()> {
        let mut txn = self.db.begin();
        let mut held = false;
        for key in keys {
            let kept = match HOLDERS.get(&self.db, &key.to_text()) {
                Ok(record) => record.is_some(),
                Err(Error::Corrupt(_)) => true,
                Err(e) => return Err(e),
            };
            if kept {
                HOLDERS.remove(&mut txn, &key.to_text())?;
                held = true;
            }
        }
        if held {
            txn.commit()?;
        }
        Ok(())
    }

    /// The proofs kept for the keys whose hashes salted with `salt` are among `hashes`,
    /// each with its key (as stored: the peer asking checks them).
    pub(super) fn of(
        &self,
        salt: &[u8; 16],
        hashes: &[[u8; 32]],
    ) -> Result<Vec<(PublicKey, Signature)>> {
        let asked: HashSet<&[u8; 32]> = hashes.iter().collect();
        let mut proofs = Vec::new();
        for (text, record) in HOLDERS.all(&self.db)? {
            let (Ok(key), Some(signature)) = (PublicKey::parse(&text), record.signature()) else {
                continue;
            };
            if asked.contains(&key_hash(salt, &key)) {
                proofs.push((key, signature));
            }
        }
        Ok(proofs)
    }
}

impl HolderRecord {
    /// The signature, unless the record is damaged.
    fn signature(&self) -> Option<Signature> {
        let bytes = B64.decode(&self.signature).ok()?;
        Signature::try_from(bytes.as_slice()).ok()
    }
}
