//! A logged-in session's decrypted keys, wiped at logout.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard};

use super::account::AccountKey;
use crate::crypto::keyring::not_held;
use crate::crypto::{KeyRing, PrivateKey, PublicKey, Signature};
use crate::error::{Error, Result};

/// The private keys and the account key of one logged-in user. [`Session::wipe`] drops them
/// ([`PrivateKey`] and [`AccountKey`] zeroize themselves on drop); afterwards every use
/// fails with [`Error::LoggedOut`]. Locks are held only to read or swap these values, never
/// across storage or key derivation.
pub(crate) struct Session {
    secrets: RwLock<Option<Secrets>>,
}

/// What a session holds while logged in.
pub(crate) struct Secrets {
    /// The default key: it signs the databases the user creates.
    pub default: PublicKey,
    /// Every private key of the user.
    pub keys: BTreeMap<PublicKey, PrivateKey>,
    /// The key that seals the user's private keys, for sealing new ones.
    pub account_key: AccountKey,
}

impl Session {
    /// A session holding `secrets`.
    pub fn new(secrets: Secrets) -> Self {
        Session {
            secrets: RwLock::new(Some(secrets)),
        }
    }

    /// Read access to the secrets; [`Error::LoggedOut`] after [`Session::wipe`].
    pub fn read(&self) -> Result<SecretsGuard<'_>> {
        let guard = self
            .secrets
            .read()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?;
        if guard.is_none() {
            return Err(Error::LoggedOut);
        }
        Ok(SecretsGuard(guard))
    }

    /// The default key's public half.
    pub fn default_key(&self) -> Result<PublicKey> {
        Ok(self.read()?.default)
    }

    /// A copy of the account key (wiped when dropped), to seal a new key outside the lock.
    pub fn account_key(&self) -> Result<AccountKey> {
        Ok(self.read()?.account_key.clone())
    }

    /// Adds a private key the account now holds.
    pub fn add_key(&self, key: PrivateKey) -> Result<()> {
        let mut guard = self
            .secrets
            .write()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?;
        let secrets = guard.as_mut().ok_or(Error::LoggedOut)?;
        secrets.keys.insert(key.public_key(), key);
        Ok(())
    }

    /// Drops private key `key` (wiped as it drops): the session no longer signs with it.
    pub fn remove_key(&self, key: &PublicKey) -> Result<()> {
        let mut guard = self
            .secrets
            .write()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?;
        let secrets = guard.as_mut().ok_or(Error::LoggedOut)?;
        let removed = secrets.keys.remove(key);
        drop(guard);
        drop(removed);
        Ok(())
    }

    /// Makes `key`, which the session holds, its default key.
    pub fn set_default(&self, key: &PublicKey) -> Result<()> {
        let mut guard = self
            .secrets
            .write()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?;
        let secrets = guard.as_mut().ok_or(Error::LoggedOut)?;
        if !secrets.keys.contains_key(key) {
            return Err(not_held(key));
        }
        secrets.default = *key;
        Ok(())
    }

    /// Drops every decrypted secret. Idempotent.
    pub fn wipe(&self) {
        let taken = match self.secrets.write() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(taken);
    }

    /// True once wiped.
    pub fn is_wiped(&self) -> bool {
        self.secrets.read().map(|g| g.is_none()).unwrap_or(true)
    }
}

/// Borrowed secrets of a live session.
pub(crate) struct SecretsGuard<'a>(RwLockReadGuard<'a, Option<Secrets>>);

impl std::ops::Deref for SecretsGuard<'_> {
    type Target = Secrets;
    fn deref(&self) -> &Secrets {
        self.0.as_ref().expect("checked when the guard was made")
    }
}

impl KeyRing for Session {
    fn sign(&self, key: &PublicKey, message: &[u8]) -> Result<Signature> {
        let secrets = self.read()?;
        let private = secrets.keys.get(key).ok_or_else(|| not_held(key))?;
        Ok(private.sign(message))
    }

    fn public_keys(&self) -> Result<Vec<PublicKey>> {
        let secrets = self.read()?;
        let others = secrets.keys.keys().filter(|k| **k != secrets.default);
        Ok(std::iter::once(secrets.default)
            .chain(others.copied())
            .collect())
    }

    fn ensure_usable(&self) -> Result<()> {
        self.read().map(drop)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.wipe();
    }
}
