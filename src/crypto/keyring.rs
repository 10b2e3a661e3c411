//! Private keys held on someone's behalf and used by reference: callers ask for signatures
//! and never see the keys.

use super::{PrivateKey, PublicKey, Signature};
use crate::error::{Error, Result};

/// Keys held for a signer: a user's session, or the device. Databases sign their entries
/// through it and sync signs its requests through it, so neither needs to know whose keys
/// they are. A user's key ring fails with [`Error::LoggedOut`] once its session has ended.
pub trait KeyRing: Send + Sync {
    /// Signs `message` with the private half of `key`; [`Error::PermissionDenied`] if this
    /// ring does not hold it.
    fn sign(&self, key: &PublicKey, message: &[u8]) -> Result<Signature>;

    /// The public halves of the keys held, the default key first.
    fn public_keys(&self) -> Result<Vec<PublicKey>>;

    /// Fails (with [`Error::LoggedOut`] for a user's session) once this ring can sign
    /// nothing any more, so that an operation reports that before anything else.
    fn ensure_usable(&self) -> Result<()>;
}

/// One key is a key ring of one key (the device's).
impl KeyRing for PrivateKey {
    fn sign(&self, key: &PublicKey, message: &[u8]) -> Result<Signature> {
        if *key != self.public_key() {
            return Err(not_held(key));
        }
        Ok(PrivateKey::sign(self, message))
    }

    fn public_keys(&self) -> Result<Vec<PublicKey>> {
        Ok(vec![self.public_key()])
    }

    fn ensure_usable(&self) -> Result<()> {
        Ok(())
    }
}

/// The error for a key a ring does not hold.
pub fn not_held(key: &PublicKey) -> Error {
    Error::PermissionDenied(format!("this session holds no private key {key}"))
}
