//! A logged-in session's decrypted keys, wiped at logout.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard};

use crate::crypto::{PrivateKey, PublicKey};
use crate::database::Signer;
use crate::entry::{Entry, EntryContent};
use crate::error::{Error, Result};

use super::account::Kek;

/// The private keys (and, for password users, the key-encryption key) of one logged-in
/// user. [`Session::wipe`] drops them: [`PrivateKey`] and [`Kek`] zeroize themselves on drop.
/// Afterwards every use fails with [`Error::LoggedOut`].
pub struct Session {
    secrets: RwLock<Option<Secrets>>,
}

/// What a session holds while logged in.
pub struct Secrets {
    /// The default key: it signs the databases the user creates.
    pub default: PublicKey,
    /// Every private key of the user.
    pub keys: BTreeMap<PublicKey, PrivateKey>,
    /// The key-encryption key, for sealing new keys; `None` for passwordless users.
    pub kek: Option<Kek>,
}

impl Session {
    /// A session holding `secrets`.
    pub fn new(secrets: Secrets) -> Self {
        Session {
            secrets: RwLock::new(Some(secrets)),
        }
    }

    /// A session signing with one key only (the device's, for system databases).
    pub fn with_key(key: PrivateKey) -> Self {
        let default = key.public_key();
        Session::new(Secrets {
            default,
            keys: BTreeMap::from([(default, key)]),
            kek: None,
        })
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

    /// Changes the secrets in place (adding a key, re-sealing under a new password).
    pub fn update<T>(&self, change: impl FnOnce(&mut Secrets) -> Result<T>) -> Result<T> {
        let mut guard = self
            .secrets
            .write()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?;
        change(guard.as_mut().ok_or(Error::LoggedOut)?)
    }

    /// Signs `message` (not an entry: a sync request or handshake proof) with `key`, which
    /// the session must hold.
    pub fn sign_message(
        &self,
        key: &PublicKey,
        message: &[u8],
    ) -> Result<crate::crypto::Signature> {
        let secrets = self.read()?;
        let private = secrets.keys.get(key).ok_or_else(|| {
            Error::PermissionDenied(format!("this session holds no private key {key}"))
        })?;
        Ok(private.sign(message))
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
pub struct SecretsGuard<'a>(RwLockReadGuard<'a, Option<Secrets>>);

impl std::ops::Deref for SecretsGuard<'_> {
    type Target = Secrets;
    fn deref(&self) -> &Secrets {
        self.0.as_ref().expect("checked when the guard was made")
    }
}

impl Signer for Session {
    fn sign(&self, content: EntryContent) -> Result<Entry> {
        let secrets = self.read()?;
        let key = secrets.keys.get(&content.author).ok_or_else(|| {
            Error::PermissionDenied(format!(
                "this session holds no private key {}",
                content.author
            ))
        })?;
        content.sign(key)
    }

    fn ready(&self) -> Result<()> {
        self.read().map(drop)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.wipe();
    }
}
