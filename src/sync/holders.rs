//! Holder proofs: a device showing a peer that it holds databases for keys that may read
//! them, before the peer pushes it anything.
//!
//! A user's key signs, once per device, that the device holds copies for it
//! ([`proof_message`]: a domain and the device's id). The device keeps these proofs in
//! `_sync` (made when a user logs in with sync enabled, and whenever a user syncs, tracks
//! or asks for a database) and shows them when asked ([`Request::Holders`]). A client about
//! to push entries asks the device for proofs by the keys that may read the database in
//! its own copy, checks them against the device id the peer proved in the TLS handshake,
//! and pushes nothing unless one holds: a device whose users' keys were all revoked, or
//! one that merely answers at the address, receives nothing new.
//!
//! [`Request::Holders`]: super::wire::Request::Holders

use std::collections::HashSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::crypto::{KeyRing, PublicKey, Signature};
use crate::database::{now_ms, Database, Table};
use crate::error::Result;

/// The proofs this device holds, by the signing key's text.
const HOLDERS: Table<HolderRecord> = Table::new("holders", "holder proof");

/// What a proof signs after the device's id.
const PROOF_DOMAIN: &[u8] = b"mnemo/sync/holder/v1\0";

/// Asked for at most this many keys, a device answers proof by proof; for more, it reads
/// all its proofs once.
const KEYS_LOOKED_UP_ONE_BY_ONE: usize = 16;

/// A key's proof that this device holds its copies.
#[derive(Debug, Serialize, Deserialize)]
struct HolderRecord {
    /// The signature over [`proof_message`] for this device, base64url.
    signature: String,
    /// When it was made, milliseconds since the Unix epoch.
    since: u64,
}

/// The bytes a key signs to say that `device` holds its copies.
pub fn proof_message(device: &PublicKey) -> Vec<u8> {
    [PROOF_DOMAIN, device.as_bytes()].concat()
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

    /// Makes a proof with each key `keys` holds that has none yet (one signature and one
    /// write to `_sync` per key, once).
    pub(super) fn make(&self, keys: &dyn KeyRing) -> Result<()> {
        for key in keys.public_keys()? {
            let held = self.stored(&key)?;
            if held.is_some_and(|signature| proves(&key, &signature, &self.device)) {
                continue;
            }
            let signature = keys.sign(&key, &proof_message(&self.device))?;
            let record = HolderRecord {
                signature: B64.encode(signature),
                since: now_ms(),
            };
            HOLDERS.put(&self.db, &key.to_text(), &record)?;
        }
        Ok(())
    }

    /// The proofs kept for those of `keys` this device has one for, each with its key (as
    /// stored: the peer asking checks them).
    pub(super) fn of(&self, keys: &[PublicKey]) -> Result<Vec<(PublicKey, Signature)>> {
        let mut proofs = Vec::new();
        if keys.len() <= KEYS_LOOKED_UP_ONE_BY_ONE {
            for key in keys {
                if let Some(signature) = self.stored(key)? {
                    proofs.push((*key, signature));
                }
            }
            return Ok(proofs);
        }
        let asked: HashSet<&PublicKey> = keys.iter().collect();
        for (text, record) in HOLDERS.all(&self.db)? {
            let Ok(key) = PublicKey::parse(&text) else {
                continue;
            };
            if let Some(signature) = asked.contains(&key).then(|| record.signature()).flatten() {
                proofs.push((key, signature));
            }
        }
        Ok(proofs)
    }

    /// The signature stored as `key`'s proof, if any (a damaged record is none).
    fn stored(&self, key: &PublicKey) -> Result<Option<Signature>> {
        Ok(HOLDERS
            .get(&self.db, &key.to_text())?
            .and_then(|record| record.signature()))
    }
}

impl HolderRecord {
    /// The signature, unless the record is damaged.
    fn signature(&self) -> Option<Signature> {
        let bytes = B64.decode(&self.signature).ok()?;
        Signature::try_from(bytes.as_slice()).ok()
    }
}
