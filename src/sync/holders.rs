//! Holder proofs: a device showing a peer that it holds databases for keys that may read
//! them, before the peer pushes it anything.
//!
//! A user's key signs, once per device, that the device holds copies for it
//! ([`proof_message`]: a domain and the device's id). The device keeps these proofs in
//! `_sync` (made when a user logs in with sync enabled, adds a key, or syncs, tracks or
//! asks for a database; marked gone with the key or the account, and never made again for
//! a key gone) and shows them when asked ([`Request::Holders`]). A client about
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
use crate::error::Result;

/// The proofs this device holds, by the signing key's text.
const HOLDERS: Table<HolderRecord> = Table::new("holders", "holder proof");

/// What a proof signs before the device's id.
const PROOF_DOMAIN: &[u8] = b"mnemo/sync/holder/v1\0";
/// What a key's hash covers before the salt and the key.
const KEY_HASH_DOMAIN: &[u8] = b"mnemo/sync/holder-key/v1\0";

/// A key's proof that this device holds its copies, or the mark that the key is gone.
#[derive(Debug, Serialize, Deserialize)]
struct HolderRecord {
    /// The account the key belongs to (a user's id).
    owner: String,
    /// The signature over [`proof_message`] for this device, base64url; `None` once the
    /// key was removed or its account erased: such a key never proves again here (a session
    /// still holding it must not make its proof again).
    signature: Option<String>,
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
pub struct HolderProofs {
    db: Database,
    device: PublicKey,
}

impl HolderProofs {
    /// The proofs kept in `db` for the device `device`.
    pub fn new(db: Database, device: PublicKey) -> Self {
        HolderProofs { db, device }
    }

    /// Makes a proof with each key `keys` (a session of the account `owner`) holds that has
    /// none yet, or a damaged one, unless the key is gone (a signature each, and one commit
    /// to `_sync` for them all).
    pub(super) fn make(&self, owner: &str, keys: &dyn KeyRing) -> Result<()> {
        let mut txn = self.db.begin();
        let mut made = false;
        for key in keys.public_keys()? {
            match HOLDERS.get_lenient(&self.db, &key.to_text())? {
                Some(Some(record)) if record.is_gone() => continue,
                Some(Some(record))
                    if (record.signature()).is_some_and(|s| proves(&key, &s, &self.device)) =>
                {
                    continue
                }
                _ => {}
            }
            let signature = keys.sign(&key, &proof_message(&self.device))?;
            let record = HolderRecord {
                owner: owner.to_string(),
                signature: Some(B64.encode(signature)),
            };
            HOLDERS.set(&mut txn, &key.to_text(), &record)?;
            made = true;
        }
        if made {
            txn.commit()?;
        }
        Ok(())
    }

    /// Marks `key`, removed from account `owner`, gone: its proof is deleted, and never
    /// made again here.
    pub fn forget_key(&self, owner: &str, key: &PublicKey) -> Result<()> {
        let mut txn = self.db.begin();
        HOLDERS.set(&mut txn, &key.to_text(), &HolderRecord::gone(owner))?;
        txn.commit().map(drop)
    }

    /// Marks every key of account `owner` gone (see [`HolderProofs::forget_key`]), as one
    /// commit if it had any.
    pub fn forget_owner(&self, owner: &str) -> Result<()> {
        let mut txn = self.db.begin();
        let mut held = false;
        for (key, record) in HOLDERS.all_lenient(&self.db)? {
            if record.is_some_and(|r| r.owner == owner && !r.is_gone()) {
                HOLDERS.set(&mut txn, &key, &HolderRecord::gone(owner))?;
                held = true;
            }
        }
        if held {
            txn.commit()?;
        }
        Ok(())
    }

    /// The proofs kept for the keys whose hashes salted with `salt` are among `hashes`,
    /// each with its key (as stored: the peer asking checks them). Damaged records are
    /// passed over.
    pub(super) fn of(
        &self,
        salt: &[u8; 16],
        hashes: &[[u8; 32]],
    ) -> Result<Vec<(PublicKey, Signature)>> {
        let asked: HashSet<&[u8; 32]> = hashes.iter().collect();
        let mut proofs = Vec::new();
        for (text, record) in HOLDERS.all_lenient(&self.db)? {
            let (Ok(key), Some(signature)) =
                (PublicKey::parse(&text), record.and_then(|r| r.signature()))
            else {
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
    /// The mark of a key of `owner` that is gone.
    fn gone(owner: &str) -> HolderRecord {
        HolderRecord {
            owner: owner.to_string(),
            signature: None,
        }
    }

    fn is_gone(&self) -> bool {
        self.signature.is_none()
    }

    /// The signature, unless the key is gone or the record damaged.
    fn signature(&self) -> Option<Signature> {
        let bytes = B64.decode(self.signature.as_ref()?).ok()?;
        Signature::try_from(bytes.as_slice()).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::MemoryBackend;
    use crate::crypto::PrivateKey;
    use crate::database::Registry;

    /// Proofs kept in a `_sync` of their own, and their device's key.
    fn proofs() -> (HolderProofs, PublicKey) {
        let registry = Arc::new(Registry::new(Arc::new(MemoryBackend::new())));
        let device = Arc::new(PrivateKey::generate().unwrap());
        let key = device.public_key();
        let db = registry.create("_sync", device, key).unwrap();
        (HolderProofs::new(db, key), key)
    }

    fn shown(proofs: &HolderProofs, keys: &[PublicKey]) -> Vec<PublicKey> {
        let salt = [5; 16];
        let hashes: Vec<[u8; 32]> = keys.iter().map(|k| key_hash(&salt, k)).collect();
        let mut shown: Vec<PublicKey> = (proofs.of(&salt, &hashes).unwrap().into_iter())
            .map(|(key, _)| key)
            .collect();
        shown.sort();
        shown
    }

    #[test]
    fn a_key_gone_never_proves_again_and_damaged_records_are_passed_over_then_made_again() {
        let (proofs, device) = proofs();
        let (alice, bob) = (
            PrivateKey::generate().unwrap(),
            PrivateKey::generate().unwrap(),
        );
        let (a, b) = (alice.public_key(), bob.public_key());
        proofs.make("alice", &alice).unwrap();
        proofs.make("bob", &bob).unwrap();
        let mut both = vec![a, b];
        both.sort();
        assert_eq!(shown(&proofs, &both), both);
        for (key, signature) in proofs.of(&[5; 16], &[key_hash(&[5; 16], &a)]).unwrap() {
            assert!(proves(&key, &signature, &device));
        }

        // A damaged record is passed over when shown, and made again by its key.
        proofs
            .db
            .set("holders", &a.to_text(), "\"not a record\"")
            .unwrap();
        assert_eq!(shown(&proofs, &both), vec![b]);
        proofs.make("alice", &alice).unwrap();
        assert_eq!(shown(&proofs, &both), both);

        // A key removed, or an account erased, is gone for good: a session still holding
        // the key makes nothing.
        proofs.forget_key("alice", &a).unwrap();
        proofs.make("alice", &alice).unwrap();
        assert_eq!(shown(&proofs, &both), vec![b]);
        proofs.forget_owner("carol").unwrap();
        assert_eq!(shown(&proofs, &both), vec![b]);
        proofs.forget_owner("bob").unwrap();
        proofs.make("bob", &bob).unwrap();
        assert!(shown(&proofs, &both).is_empty());
    }
}
