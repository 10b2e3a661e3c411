//! How an account keeps its secrets: the one place that derives, seals and unseals them.
//!
//! Every account has a random 256-bit account key, and each of its private keys is sealed
//! under it with AES-256-GCM, bound by associated data to the user id and the key. A password
//! account seals the account key itself under a key-encryption key (KEK) derived from the
//! password by Argon2id with the account's own salt; a passwordless account stores it
//! unsealed, so its private keys are as good as unsealed (documented). No password hash is
//! stored: a password is right exactly when it unseals the account key. A password change
//! re-seals the account key only, so it never races with adding a key.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::records::{
    AccountRecord, KdfAlgorithm, KdfRecord, KeyRecord, ACCOUNT, ACCOUNT_KEY, KEYS,
};
use super::session::Secrets;
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

/// The key that seals an account's private keys, wiped from memory when dropped.
pub(super) type AccountKey = Zeroizing<[u8; 32]>;

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

/// Writes the secrets of a new account into its empty user database: a fresh account key
/// locked by `password` (Argon2id at `params`), and a fresh default key sealed under it.
pub(super) fn create(
    user_db: &Database,
    user_id: &str,
    password: Option<&str>,
    params: KdfParams,
) -> Result<()> {
    let account_key = AccountKey::new(random::bytes()?);
    let (kdf, locked) = lock(&account_key, user_id, password, params)?;
    let key = PrivateKey::generate()?;
    let mut txn = user_db.begin();
    ACCOUNT.set(
        &mut txn,
        ACCOUNT_KEY,
        &AccountRecord {
            kdf,
            account_key: locked,
            default_key: key.public_key(),
        },
    )?;
    KEYS.set(
        &mut txn,
        &key.public_key().to_text(),
        &KeyRecord {
            name: Some("default".into()),
            secret: seal_key(&account_key, user_id, &key)?,
            created: now_ms(),
        },
    )?;
    txn.commit().map(drop)
}

/// Unlocks an account with `password` and unseals every private key: what a session holds.
/// A wrong password, or a password for a passwordless account and the reverse, gives
/// [`Error::AuthFailed`].
pub(super) fn open(user_db: &Database, user_id: &str, password: Option<&str>) -> Result<Secrets> {
    let record = account_record(user_db)?;
    let account_key = unlock(&record, user_id, password)?;
    let mut keys = BTreeMap::new();
    for (text, stored) in KEYS.all(user_db)? {
        let public = PublicKey::parse(&text)
            .map_err(|_| Error::Corrupt("a stored key id is malformed".into()))?;
        let key = unseal_key(&account_key, user_id, &public, &stored.secret)?;
        keys.insert(public, key);
    }
    if !keys.contains_key(&record.default_key) {
        return Err(Error::Corrupt("the default key is missing".into()));
    }
    Ok(Secrets {
        default: record.default_key,
        keys,
        account_key,
    })
}

/// Changes the password that locks the account key (`None` on either side: passwordless).
/// `old` must unlock the current record ([`Error::AuthFailed`] otherwise). Derivation runs
/// outside every lock; the new record is written only if no other change of the account
/// landed meanwhile, else the change is recomputed against the newer record (where `old`
/// may no longer be right).
pub(super) fn change_password(
    user_db: &Database,
    user_id: &str,
    old: Option<&str>,
    new: Option<&str>,
    params: KdfParams,
) -> Result<()> {
    for _ in 0..CHANGE_ATTEMPTS {
        let (mut record, seen) = ACCOUNT
            .get_versioned(user_db, ACCOUNT_KEY)?
            .ok_or_else(missing_account)?;
        let account_key = unlock(&record, user_id, old)?;
        (record.kdf, record.account_key) = lock(&account_key, user_id, new, params)?;
        let mut txn = user_db.begin();
        ACCOUNT.set(&mut txn, ACCOUNT_KEY, &record)?;
        if ACCOUNT
            .commit_if_unchanged(txn, ACCOUNT_KEY, Some(seen))?
            .is_some()
        {
            return Ok(());
        }
    }
    Err(Error::Storage(
        "the account kept changing during the password change; try again".into(),
    ))
}

/// Generates a private key for the account, stores it sealed under `account_key` and
/// returns it.
pub(super) fn add_key(
    user_db: &Database,
    user_id: &str,
    account_key: &AccountKey,
    name: Option<&str>,
) -> Result<PrivateKey> {
    let key = PrivateKey::generate()?;
    let record = KeyRecord {
        name: name.map(str::to_string),
        secret: seal_key(account_key, user_id, &key)?,
        created: now_ms(),
    };
    KEYS.put(user_db, &key.public_key().to_text(), &record)?;
    Ok(key)
}

/// Does the same Argon2id work as a real login, for a user that does not exist, so that an
/// unknown user and a wrong password take indistinguishable time.
pub(super) fn burn_login_time(password: Option<&str>, params: KdfParams) {
    let _ = password::derive_key(password.unwrap_or("").as_bytes(), &[0u8; 16], params);
}

fn account_record(user_db: &Database) -> Result<AccountRecord> {
    ACCOUNT
        .get(user_db, ACCOUNT_KEY)?
        .ok_or_else(missing_account)
}

fn missing_account() -> Error {
    Error::Corrupt("the account record is missing".into())
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
    let sealed = seal::seal(&kek, account_key.as_ref(), &account_key_aad(user_id))?;
    Ok((Some(kdf), sealed))
}

/// Opens the account key of `record` with `password`: the inverse of [`lock`].
fn unlock(record: &AccountRecord, user_id: &str, password: Option<&str>) -> Result<AccountKey> {
    let opened = match (&record.kdf, password) {
        (Some(kdf), Some(password)) => {
            let kek = derive_kek(kdf, password)?;
            seal::open(&kek, &record.account_key, &account_key_aad(user_id))?
        }
        (Some(kdf), None) => {
            burn_login_time(None, kdf.params());
            return Err(Error::AuthFailed);
        }
        (None, Some(_)) => return Err(Error::AuthFailed),
        (None, None) => Zeroizing::new(record.account_key.clone()),
    };
    let bytes: [u8; 32] = opened
        .as_slice()
        .try_into()
        .map_err(|_| Error::Corrupt("a stored account key is not 32 bytes".into()))?;
    Ok(AccountKey::new(bytes))
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

/// The stored form of `key`: its seed sealed under the account key.
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
