//! The stored forms of an account: its entry in `_users` and its private user database.
//!
//! `_users`, store `users`: username → `{"id", "db", "status": "active"|"disabled",
//! "admin", "created"}`.
//! The user database (signed by the device key): store `account` holds `kdf` (the Argon2id
//! settings, or null for a passwordless user) and `default_key`; store `keys` maps each
//! public key to `{"name", "secret" (sealed, or plain for passwordless), "created"}`; store
//! `databases` maps each tracked database id to `{"name", "added", "seq"}` (`seq`: the
//! height of the tracking commit, so later tracking has a larger one).

use serde_json::{json, Value};

use crate::entry::EntryId;
use crate::error::{Error, Result};

/// Store of `_users` holding one record per username.
pub const USERS_STORE: &str = "users";
/// User-database store of account settings.
pub const ACCOUNT_STORE: &str = "account";
/// User-database store of keys.
pub const KEYS_STORE: &str = "keys";
/// User-database store of tracked databases.
pub const DATABASES_STORE: &str = "databases";

/// A user's entry in the `_users` directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// Random, stable id (names can be reused after a deletion).
    pub id: String,
    /// The user's private database.
    pub db: EntryId,
    /// False once an admin disabled the account.
    pub active: bool,
    /// Whether the user administers the instance.
    pub admin: bool,
    /// Creation time, milliseconds since the Unix epoch.
    pub created: u64,
}

impl UserRecord {
    /// The stored JSON text.
    pub fn to_json(&self) -> String {
        let status = if self.active { "active" } else { "disabled" };
        json!({"id": self.id, "db": self.db.to_text(), "status": status, "admin": self.admin, "created": self.created})
            .to_string()
    }

    /// Parses the stored JSON text; [`Error::Corrupt`] if malformed.
    pub fn from_json(text: &str) -> Result<UserRecord> {
        let bad = || Error::Corrupt("a user record is malformed".into());
        let v: Value = serde_json::from_str(text).map_err(|_| bad())?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).ok_or_else(bad);
        Ok(UserRecord {
            id: s("id")?.to_string(),
            db: EntryId::parse(s("db")?).map_err(|_| bad())?,
            active: match s("status")? {
                "active" => true,
                "disabled" => false,
                _ => return Err(bad()),
            },
            admin: v.get("admin").and_then(Value::as_bool).ok_or_else(bad)?,
            created: v.get("created").and_then(Value::as_u64).ok_or_else(bad)?,
        })
    }
}

/// A field of a JSON object stored in a system database.
pub fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value> {
    v.get(key)
        .ok_or_else(|| Error::Corrupt(format!("a stored record lacks '{key}'")))
}

/// Parses stored JSON text.
pub fn parse(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|_| Error::Corrupt("a stored record is not JSON".into()))
}
