//! The stored forms of accounts, each a typed record with one table.
//!
//! In `_users` (device-signed), store `users`: username → [`UserRecord`]; store `creating`:
//! account id → [`CreationRecord`].
//! In `_databases`, store `databases`: database id → [`CatalogRecord`]; store `owners`:
//! [`owner_key`] → `true`.
//! In each user's private database (device-signed): store `account`, key `profile` →
//! [`ProfileRecord`] (the default key); store `keys`: public key → [`KeyRecord`] (its name);
//! store `databases`: database id → [`TrackedRecord`].
//! In the backend's secrets table (replaced in place, never in signed history):
//! [`account_secret`] → [`AccountSecret`] (password settings, the sealed account key);
//! [`key_secret`] → a private key's seed sealed under the account key.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::crypto::{KdfParams, PublicKey};
use crate::database::Table;
use crate::entry::EntryId;

/// The user directory, in `_users`.
pub(super) const USERS: Table<UserRecord> = Table::new("users", "user record");
/// User creations under way (or abandoned part-way), in `_users`.
pub(super) const CREATING: Table<CreationRecord> = Table::new("creating", "creation record");
/// User deletions under way (or stopped part-way), by account id, in `_users`.
pub(super) const DELETING: Table<DeletionRecord> = Table::new("deleting", "deletion record");
/// Databases created on the instance, in `_databases`.
pub(super) const CATALOG: Table<CatalogRecord> = Table::new("databases", "catalog record");
/// Who created each database, in `_databases`.
pub(super) const OWNERS: Table<bool> = Table::new("owners", "owner record");
/// A user's profile, in the user database, under [`PROFILE_KEY`].
pub(super) const PROFILE: Table<ProfileRecord> = Table::new("account", "profile record");
/// The key of the one record in [`PROFILE`].
pub(super) const PROFILE_KEY: &str = "profile";
/// A user's keys (public information), in the user database.
pub(super) const KEYS: Table<KeyRecord> = Table::new("keys", "key record");
/// The databases a user tracks, in the user database.
pub(super) const TRACKED: Table<TrackedRecord> = Table::new("databases", "tracked database");

/// The key of an owner record: `<database id>/<user id>`.
pub(super) fn owner_key(db: &EntryId, user_id: &str) -> String {
    format!("{db}/{user_id}")
}

/// The secrets-table key of an account's [`AccountSecret`].
pub(super) fn account_secret(user_id: &str) -> String {
    format!("account/{user_id}")
}

/// The secrets-table key of one private key's sealed seed.
pub(super) fn key_secret(user_id: &str, key: &PublicKey) -> String {
    format!("{}{key}", key_secrets(user_id))
}

/// What the secrets-table keys of an account's sealed seeds start with.
pub(super) fn key_secrets(user_id: &str) -> String {
    format!("key/{user_id}/")
}

/// A user's entry in the directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct UserRecord {
    /// Random, stable id (names can be reused after a deletion).
    pub id: String,
    /// The user's private database.
    pub db: EntryId,
    /// Whether the user may log in.
    pub status: AccountStatus,
    /// Whether the user administers the instance.
    pub admin: bool,
    /// Creation time, milliseconds since the Unix epoch.
    pub created: u64,
}

/// A user creation under way, kept from before any of the account is stored until its name
/// is claimed (or the attempt is discarded), so that a creator that stopped part-way leaves
/// nothing stored that no later open can find.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CreationRecord {
    /// The name the account is for.
    pub username: String,
    /// The account's private database (its root may not be stored yet).
    pub db: EntryId,
    /// When the creation started, milliseconds since the Unix epoch.
    pub started: u64,
}

/// A user deletion under way, kept from before the name is freed until the account is
/// erased, so that one stopped part-way is finished by the next open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct DeletionRecord {
    /// The name the account had.
    pub username: String,
    /// The account's private database.
    pub db: EntryId,
}

/// Whether an account may log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum AccountStatus {
    /// It may.
    Active,
    /// An admin disabled it.
    Disabled,
}

impl UserRecord {
    /// True unless an admin disabled the account.
    pub fn is_active(&self) -> bool {
        self.status == AccountStatus::Active
    }
}

/// A database as the instance's catalog records it at creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CatalogRecord {
    /// Its name when created.
    pub name: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created: u64,
}

/// What unlocks an account: its password settings and its account key (which seals every
/// private key of the account). Kept in the secrets table, so a new password replaces it.
/// The account key's bytes are zeroed when it is dropped, and never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct AccountSecret {
    /// How the password derives the key that seals the account key; `None` for a
    /// passwordless account, whose account key is stored unsealed.
    pub kdf: Option<KdfRecord>,
    /// The account key: sealed under the password-derived key, or plain without a password.
    #[serde(with = "base64_bytes")]
    pub account_key: Vec<u8>,
}

impl Drop for AccountSecret {
    fn drop(&mut self) {
        self.account_key.zeroize();
    }
}

impl std::fmt::Debug for AccountSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountSecret")
            .field("kdf", &self.kdf)
            .field("account_key", &"<redacted>")
            .finish()
    }
}

/// Which key is the user's default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ProfileRecord {
    /// The default key: it signs the databases the user creates.
    pub default_key: PublicKey,
}

/// The password-derivation settings of one account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct KdfRecord {
    /// The algorithm; only Argon2id exists.
    pub alg: KdfAlgorithm,
    /// Memory, KiB (see [`KdfParams`]; no `serde(flatten)`: it cannot carry exact numbers).
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
    /// The account's own salt.
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
}

impl KdfRecord {
    /// The Argon2id cost recorded.
    pub fn params(&self) -> KdfParams {
        KdfParams {
            m_kib: self.m_kib,
            t: self.t,
            p: self.p,
        }
    }
}

/// A password-derivation algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum KdfAlgorithm {
    /// Argon2id (RFC 9106).
    Argon2id,
}

/// One key of a user (its sealed seed is in the secrets table, under [`key_secret`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct KeyRecord {
    /// Its display name, if any.
    pub name: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created: u64,
}

/// A database the user tracks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct TrackedRecord {
    /// Its name when the user started tracking it.
    pub name: String,
    /// When, milliseconds since the Unix epoch.
    pub added: u64,
    /// The height of the tracking commit in the user database: later tracking has a larger
    /// one, so it orders a user's databases by when they were tracked.
    pub seq: u64,
}

/// Bytes stored as base64url without padding.
mod base64_bytes {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        B64.decode(text.as_bytes())
            .map_err(|_| serde::de::Error::custom("not base64url"))
    }
}
