//! How an account keeps its secrets: the one place that derives, seals and unseals them.
//!
//! Every account has a random 256-bit account key, and each of its private keys is sealed
//! under it with AES-256-GCM, bound by associated data to the user id and the key. A password
//! account seals the account key itself under a key-encryption key (KEK) derived from the
//! password by Argon2id with the account's own salt; a passwordless account stores it
//! unsealed, so its private keys are as good as unsealed (documented). No password hash is
//! stored: a password is right exactly when it unseals the account key. A password change
//! re-seals the account key only, so it never races with adding a key.
//!
//! Sealed material lives in the backend's secrets table ([`Vault`]), which replaces values
//! in place, never in the signed history of the user database: after a password change (or
//! a first password), the file holds no copy that the old password (or nothing) opens.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::records::{
    account_secret, key_secret, key_secrets, AccountSecret, KdfAlgorithm, KdfRecord, KeyRecord,
    ProfileRecord, KEYS, PROFILE, PROFILE_KEY,
};
use super::session::Secrets;
use crate::backend::Backend;
use crate::crypto::{password, random, seal, KdfParams, PrivateKey, PublicKey};
use crate::database::{now_ms, Database};
use crate::error::{Error, Result};

/// Longest username, in bytes.
pub const MAX_USERNAME: usize = 64;
/// Longest password, in bytes.
pub const MAX_PASSWORD: usize = 1024;
/// How often a password change is recomputed when another change of the same account lands
/// while it derives keys, before it gives up.
const CHANGE_ATTEMPTS: usize = 4;

/// The key that seals an account's private keys: on the heap, so that moving it (into a
/// session, out of one at logout) moves a pointer and leaves no copy of the key behind;
/// wiped from memory when dropped.
pub(super) type AccountKey = Box<Zeroizing<[u8; 32]>>;

/// A fresh account key, its random bytes written where it lives.
pub(super) fn new_account_key() -> Result<AccountKey> {
    let mut key = AccountKey::default();
    random::fill(&mut key[..])?;
    Ok(key)
}

/// Fails unless `name` is a valid username: 1 to 64 bytes, no control characters.
pub fn check_username(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_USERNAME || name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "a username is 1 to {MAX_USERNAME} bytes without control characters"
        )));
    }
    Ok(())
}

/// Fails unless `password` is a valid password: 1 to 1024 bytes (use no password, not "").
pub fn check_password(password: &str) -> Result<()> {
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err(Error::invalid(format!(
            "a password is 1 to {MAX_PASSWORD} bytes (pass none for a passwordless user)"
        )));
    }
    Ok(())
}

/// An account's sealed secrets in the backend's secrets table.
pub(super) struct Vault<'a> {
    backend: &'a dyn Backend,
    user_id: &'a str,
}

impl<'a> Vault<'a> {
    pub(super) fn new(backend: &'a dyn Backend, user_id: &'a str) -> Self {
        Vault { backend, user_id }
    }

    /// The account secret with its stored bytes (for a conditional replacement), which hold
    /// the account key in the clear for a passwordless account: zeroed once dropped.
    fn account(&self) -> Result<(AccountSecret, Zeroizing<Vec<u8>>)> {
        let bytes = self
            .backend
            .secret_get(&account_secret(self.user_id))?
            .map(Zeroizing::new)
            .ok_or_else(|| Error::Corrupt("the account's secret is missing".into()))?;
        let secret = serde_json::from_slice(&bytes)
            .map_err(|_| Error::Corrupt("the account's secret is malformed".into()))?;
        Ok((secret, bytes))
    }

    /// Stores `secret`, only in place of `replacing` if given; returns whether it did.
    fn put_account(&self, secret: &AccountSecret, replacing: Option<&[u8]>) -> Result<bool> {
        let bytes = serde_json::to_vec(secret)
            .map(Zeroizing::new)
            .map_err(|e| Error::Internal(format!("cannot encode an account secret: {e}")))?;
        self.backend
            .secret_put(&account_secret(self.user_id), &bytes, replacing)
    }

    fn key(&self, key: &PublicKey) -> Result<Vec<u8>> {
        self.backend
            .secret_get(&key_secret(self.user_id, key))?
            .ok_or_else(|| Error::Corrupt(format!("the sealed private key {key} is missing")))
    }

    fn put_key(&self, key: &PublicKey, sealed: &[u8]) -> Result<()> {
        self.backend
            .secret_put(&key_secret(self.user_id, key), sealed, None)
            .map(drop)
    }

    /// Removes the sealed secret of `key` (scrubbed from storage); whether it was there.
    pub(super) fn delete_key(&self, key: &PublicKey) -> Result<bool> {
        self.backend.secret_delete(&key_secret(self.user_id, key))
    }

    /// Removes every secret of the account (a deleted account): the sealed seeds stored,
    /// whether or not its key list names them (a crash between a seed and its record leaves
    /// one listed nowhere), then the account secret.
    pub(super) fn delete_all(&self) -> Result<()> {
        for name in self.backend.secret_names(&key_secrets(self.user_id))? {
            self.backend.secret_delete(&name)?;
        }
        self.backend
            .secret_delete(&account_secret(self.user_id))
            .map(drop)
    }
}

/// Writes the secrets of a new account: a fresh account key locked by `password`
/// (Argon2id at `params`) and a fresh default key sealed under it into the vault, and the
/// default key's public record into the (empty) user database. Returns the default key.
pub(super) fn create(
    user_db: &Database,
    vault: &Vault<'_>,
    password: Option<&str>,
    params: KdfParams,
) -> Result<PublicKey> {
    let account_key = new_account_key()?;
    let (kdf, locked) = lock(&account_key, vault.user_id, password, params)?;
    let key = PrivateKey::generate()?;
    // The public record first: whoever discards a failed creation finds the key it lists.
    let mut txn = user_db.begin();
    PROFILE.set(
        &mut txn,
        PROFILE_KEY,
        &ProfileRecord {
            default_key: key.public_key(),
        },
    )?;
    KEYS.set(
        &mut txn,
        &key.public_key().to_text(),
        &KeyRecord {
            name: Some("default".into()),
            created: now_ms(),
        },
    )?;
    txn.commit()?;
    vault.put_key(
        &key.public_key(),
        &seal_key(&account_key, vault.user_id, &key)?,
    )?;
    vault
        .put_account(
            &AccountSecret {
                kdf,
                account_key: locked,
            },
            None,
        )
        .map(|_| key.public_key())
}

/// Unlocks an account with `password` and unseals every private key: what a session holds.
/// Every failure (a wrong password, a password for a passwordless account and the reverse)
/// gives [`Error::AuthFailed`] after the same Argon2id work (`params` for an account that
/// has none of its own).
pub(super) fn open(
    user_db: &Database,
    vault: &Vault<'_>,
    password: Option<&str>,
    params: KdfParams,
) -> Result<Secrets> {
    let (secret, _) = vault.account()?;
    let account_key = unlock(&secret, vault.user_id, password, params)?;
    let default = default_key(user_db)?;
    let mut keys = BTreeMap::new();
    for (text, _) in KEYS.all(user_db)? {
        let public = PublicKey::parse(&text)
            .map_err(|_| Error::Corrupt("a stored key id is malformed".into()))?;
        let sealed = match vault.key(&public) {
            // Removed since the list was read (by another session of the account: its
            // record goes first, then its secret): not one of the keys any more.
            Err(Error::Corrupt(_)) if KEYS.get(user_db, &text)?.is_none() => continue,
            sealed => sealed?,
        };
        let key = unseal_key(&account_key, vault.user_id, &public, &sealed)?;
        keys.insert(public, Box::new(key));
    }
    if !keys.contains_key(&default) {
        return Err(Error::Corrupt("the default key is missing".into()));
    }
    Ok(Secrets {
        default,
        keys,
        account_key,
    })
}

/// Changes the password that locks the account key (`None` on either side: passwordless).
/// `old` must unlock the current secret ([`Error::AuthFailed`] otherwise). Derivation runs
/// outside every lock; the new secret replaces the old only if no other change landed
/// meanwhile, else the change is recomputed against the newer secret (where `old` may no
/// longer be right). The old secret is overwritten in place.
pub(super) fn change_password(
    vault: &Vault<'_>,
    old: Option<&str>,
    new: Option<&str>,
    params: KdfParams,
) -> Result<()> {
    for _ in 0..CHANGE_ATTEMPTS {
        let (secret, stored) = vault.account()?;
        let account_key = unlock(&secret, vault.user_id, old, params)?;
        let (kdf, locked) = lock(&account_key, vault.user_id, new, params)?;
        let replaced = vault.put_account(
            &AccountSecret {
                kdf,
                account_key: locked,
            },
            Some(&stored),
        )?;
        if replaced {
            return Ok(());
        }
    }
    Err(Error::Storage(
        "the account kept changing during the password change; try again".into(),
    ))
}

/// Stores `key` (a new private key of the account) sealed under `account_key`, and its
/// public record in the user database.
pub(super) fn add_key(
    user_db: &Database,
    vault: &Vault<'_>,
    account_key: &AccountKey,
    key: &PrivateKey,
    name: Option<&str>,
) -> Result<()> {
    let public = key.public_key();
    vault.put_key(&public, &seal_key(account_key, vault.user_id, key)?)?;
    let record = KeyRecord {
        name: name.map(str::to_string),
        created: now_ms(),
    };
    if let Err(e) = KEYS.put(user_db, &public.to_text(), &record) {
        // The record may have been stored all the same (an error while committing), and a
        // listed key without its secret would fail every login: the secret is taken back
        // only once a read shows the record is not there. (A crash here leaves it, sealed
        // under the account key, listed nowhere.)
        if KEYS
            .get(user_db, &public.to_text())
            .is_ok_and(|r| r.is_none())
        {
            let _ = vault.delete_key(&public);
        }
        return Err(e);
    }
    Ok(())
}

/// Removes `key` from the account: its public record, then its sealed seed (scrubbed from
/// storage; see [`Backend::secret_delete`]). [`Error::InvalidArgument`] for the default key,
/// [`Error::NotFound`] for a key the account does not have. The record goes first, so a
/// failure in between leaves an unused secret, never a listed key without its secret; the
/// same removal again erases that secret. A default change to `key` racing with this is
/// caught: each side writes, then reads what the other writes, and the removal undoes
/// itself if it sees `key` became the default.
pub(super) fn remove_key(user_db: &Database, vault: &Vault<'_>, key: &PublicKey) -> Result<()> {
    let text = key.to_text();
    let record = KEYS.get(user_db, &text)?;
    if default_key(user_db)? == *key {
        return Err(not_removable(key));
    }
    let Some(record) = record else {
        // A removal stopped after the record went left the secret: erased now.
        return match vault.delete_key(key)? {
            true => Ok(()),
            false => Err(Error::NotFound(format!("this user has no key {key}"))),
        };
    };
    KEYS.delete(user_db, &text)?;
    if default_key(user_db)? == *key {
        KEYS.put(user_db, &text, &record)?;
        return Err(not_removable(key));
    }
    vault.delete_key(key).map(drop)
}

fn not_removable(key: &PublicKey) -> Error {
    Error::invalid(format!(
        "key {key} is the user's default key: make another key the default first"
    ))
}

/// Makes `key`, one of the account's keys, its default ([`Error::NotFound`] otherwise). The
/// counterpart of [`remove_key`]'s race check: after writing, it reads the key's record
/// again and puts the previous default back if the key was removed meanwhile.
pub(super) fn set_default_key(user_db: &Database, key: &PublicKey) -> Result<()> {
    let text = key.to_text();
    let missing = || Error::NotFound(format!("this user has no key {key}"));
    if KEYS.get(user_db, &text)?.is_none() {
        return Err(missing());
    }
    let previous = default_key(user_db)?;
    if previous == *key {
        return Ok(());
    }
    PROFILE.put(user_db, PROFILE_KEY, &ProfileRecord { default_key: *key })?;
    if KEYS.get(user_db, &text)?.is_none() {
        PROFILE.put(
            user_db,
            PROFILE_KEY,
            &ProfileRecord {
                default_key: previous,
            },
        )?;
        return Err(missing());
    }
    Ok(())
}

/// The account's default key, as stored.
fn default_key(user_db: &Database) -> Result<PublicKey> {
    Ok(PROFILE
        .get(user_db, PROFILE_KEY)?
        .ok_or_else(|| Error::Corrupt("the account's profile is missing".into()))?
        .default_key)
}

/// Does the same Argon2id work as a real login, for a user that does not exist, so that an
/// unknown user and a wrong password take indistinguishable time, and fail alike:
/// [`Error::Busy`] when no derivation could start (as a real login would), else
/// [`Error::AuthFailed`].
pub(super) fn burn_login_time(password: Option<&str>, params: KdfParams) -> Error {
    match password::derive_key(password.unwrap_or("").as_bytes(), &[0u8; 16], params) {
        Err(busy @ Error::Busy(_)) => busy,
        _ => Error::AuthFailed,
    }
}

/// Locks `account_key` under `password` with a fresh salt (one Argon2id run), or leaves it
/// plain without a password. Returns the settings to record and the stored form.
fn lock(
    account_key: &AccountKey,
    user_id: &str,
    password: Option<&str>,
    params: KdfParams,
) -> Result<(Option<KdfRecord>, Vec<u8>)> {
    let Some(password) = password else {
        return Ok((None, account_key.to_vec()));
    };
    let kdf = KdfRecord {
        alg: KdfAlgorithm::Argon2id,
        m_kib: params.m_kib,
        t: params.t,
        p: params.p,
        salt: random::bytes::<16>()?.to_vec(),
    };
    let kek = derive_kek(&kdf, password)?;
    let sealed = seal::seal(&kek, &account_key[..], &account_key_aad(user_id))?;
    Ok((Some(kdf), sealed))
}

/// Opens the account key of `secret` with `password`: the inverse of [`lock`]. Every
/// refusal costs one Argon2id run (at `params` when the account records none), so that no
/// failure answers faster than another.
fn unlock(
    secret: &AccountSecret,
    user_id: &str,
    password: Option<&str>,
    params: KdfParams,
) -> Result<AccountKey> {
    let opened = match (&secret.kdf, password) {
        (Some(kdf), Some(password)) => {
            let kek = derive_kek(kdf, password)?;
            seal::open(&kek, &secret.account_key, &account_key_aad(user_id))?
        }
        (Some(kdf), None) => {
            // As long as a login with a password: the record's settings, checked first.
            derive_kek(kdf, "")?;
            return Err(Error::AuthFailed);
        }
        (None, Some(password)) => return Err(burn_login_time(Some(password), params)),
        (None, None) => Zeroizing::new(secret.account_key.clone()),
    };
    if opened.len() != 32 {
        return Err(Error::Corrupt(
            "a stored account key is not 32 bytes".into(),
        ));
    }
    let mut key = AccountKey::default();
    key.copy_from_slice(&opened);
    Ok(key)
}

/// The key-encryption key `password` gives under `kdf`: the one derivation path. Settings
/// outside the accepted range (a damaged or forged record) are refused before any work.
fn derive_kek(kdf: &KdfRecord, password: &str) -> Result<Zeroizing<[u8; 32]>> {
    let bad = || Error::Corrupt("stored password settings are out of range".into());
    kdf.params().validate().map_err(|_| bad())?;
    if kdf.salt.len() != 16 {
        return Err(bad());
    }
    password::derive_key(password.as_bytes(), &kdf.salt, kdf.params())
}

fn account_key_aad(user_id: &str) -> Vec<u8> {
    format!("mnemo/account-key/v1\0{user_id}").into_bytes()
}

fn key_aad(user_id: &str, key: &PublicKey) -> Vec<u8> {
    format!("mnemo/user-key/v1\0{user_id}\0{}", key.to_text()).into_bytes()
}

/// The sealed form of `key`: its seed sealed under the account key.
fn seal_key(account_key: &AccountKey, user_id: &str, key: &PrivateKey) -> Result<Vec<u8>> {
    seal::seal(
        account_key,
        key.to_seed().as_ref(),
        &key_aad(user_id, &key.public_key()),
    )
}

/// Recovers a private key from its stored form; it must match `public`.
fn unseal_key(
    account_key: &AccountKey,
    user_id: &str,
    public: &PublicKey,
    sealed: &[u8],
) -> Result<PrivateKey> {
    let seed = seal::open(account_key, sealed, &key_aad(user_id, public))
        .map_err(|_| Error::Corrupt("a stored private key does not unseal".into()))?;
    let key = PrivateKey::from_seed(&seed)?;
    if key.public_key() != *public {
        return Err(Error::Corrupt(
            "a stored key does not match its public key".into(),
        ));
    }
    Ok(key)
}
