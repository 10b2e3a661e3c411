//! The instance: one device's identity, its accounts and its databases on one backend.

mod system;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};

use crate::backend::Backend;
use crate::crypto::{KdfParams, PrivateKey, PublicKey};
use crate::database::{now_ms, Received, Registry};
use crate::entry::{Entry, EntryId};
use crate::error::{Error, Result};
use crate::sync::Sync;
use crate::user::account::{self, Kdf};
use crate::user::record::{self, UserRecord, ACCOUNT_STORE, KEYS_STORE, USERS_STORE};
use crate::user::{Secrets, Session, User};

pub(crate) use system::System;

const USERNAME_CLAIM: &str = "username/";
const ADMIN_CLAIM: &str = "admin";

/// How to create an instance. Only applies the first time a backend is opened.
#[derive(Clone, Copy, Debug, Default)]
pub struct InstanceOptions {
    /// Argon2id parameters for passwords; at least [`KdfParams::MINIMUM`]. `None`: the minimum.
    pub kdf: Option<KdfParams>,
}

/// An open instance. Cheap to share: clones refer to the same instance.
#[derive(Clone)]
pub struct Instance {
    shared: Arc<Shared>,
}

/// What every handle derived from an instance shares.
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    pub(crate) system: System,
    sync: OnceLock<Arc<Sync>>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("device_id", &self.device_id())
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Opens an instance on `backend`, creating the device identity and system databases on
    /// first open.
    pub fn open(backend: Arc<dyn Backend>) -> Result<Instance> {
        Self::open_with(backend, InstanceOptions::default())
    }

    /// Opens an instance with `options` (see [`InstanceOptions`]).
    pub fn open_with(backend: Arc<dyn Backend>, options: InstanceOptions) -> Result<Instance> {
        let registry = Registry::new(backend);
        let system = System::open(&registry, options.kdf)?;
        Ok(Instance {
            shared: Arc::new(Shared {
                registry,
                system,
                sync: OnceLock::new(),
            }),
        })
    }

    /// The device's public identity (Ed25519), stable for the instance's life.
    pub fn device_id(&self) -> PublicKey {
        self.shared.system.device_key
    }

    /// The Argon2id parameters of this instance's passwords.
    pub fn kdf_params(&self) -> KdfParams {
        self.shared.system.kdf
    }

    /// Creates a user with a fresh default key: sealed under `password` if given, stored
    /// unsealed otherwise. The first user created is the instance's admin.
    /// [`Error::AlreadyExists`] if the name is taken.
    pub fn create_user(&self, username: &str, password: Option<&str>) -> Result<()> {
        account::check_username(username)?;
        if let Some(pw) = password {
            account::check_password(pw)?;
        }
        let shared = &*self.shared;
        let backend = shared.registry.backend();
        let id = crate::crypto::random::hex_token::<16>()?;
        let claim = format!("{USERNAME_CLAIM}{username}");
        // The backend's atomic insert decides races, also between processes.
        if !backend.meta_insert_new(&claim, id.as_bytes())? {
            return Err(Error::AlreadyExists(format!(
                "username '{username}' is taken"
            )));
        }
        let created = self
            .write_account(username, &id, password)
            .inspect_err(|_| {
                let _ = backend.meta_delete(&claim);
            });
        created.map(drop)
    }

    fn write_account(&self, username: &str, id: &str, password: Option<&str>) -> Result<()> {
        let shared = &*self.shared;
        let backend = shared.registry.backend();
        let key = PrivateKey::generate()?;
        let kdf = password.map(|_| Kdf::new(shared.system.kdf)).transpose()?;
        let kek = match (&kdf, password) {
            (Some(kdf), Some(pw)) => Some(kdf.derive(pw)?),
            _ => None,
        };
        let user_db = shared
            .system
            .create_db(&shared.registry, &format!("user:{id}"))?;
        let mut txn = user_db.begin();
        txn.set(
            ACCOUNT_STORE,
            "kdf",
            &kdf.as_ref().map_or(Value::Null, Kdf::to_json).to_string(),
        )?;
        txn.set(
            ACCOUNT_STORE,
            "default_key",
            &Value::from(key.public_key().to_text()).to_string(),
        )?;
        let stored_key = json!({"name": "default", "secret": account::seal_key(kek.as_ref(), id, &key)?, "created": now_ms()});
        txn.set(
            KEYS_STORE,
            &key.public_key().to_text(),
            &stored_key.to_string(),
        )?;
        txn.commit()?;
        let admin = backend.meta_insert_new(ADMIN_CLAIM, id.as_bytes())?;
        let record = UserRecord {
            id: id.to_string(),
            db: user_db.id(),
            active: true,
            admin,
            created: now_ms(),
        };
        shared
            .system
            .users
            .set(USERS_STORE, username, &record.to_json())?;
        Ok(())
    }

    /// Logs a user in. Unknown users and wrong passwords both give [`Error::AuthFailed`] after
    /// the same key-derivation work; a disabled user with the right password gets
    /// [`Error::PermissionDenied`].
    pub fn login(&self, username: &str, password: Option<&str>) -> Result<User> {
        account::check_username(username)?;
        let shared = &self.shared;
        let record = match shared.system.users.get(USERS_STORE, username) {
            Ok(json) => UserRecord::from_json(&json)?,
            Err(e) if e.is_not_found() => {
                account::burn_login_time(password, shared.system.kdf);
                return Err(Error::AuthFailed);
            }
            Err(e) => return Err(e),
        };
        let user_db = shared.system.handle(&shared.registry, record.db);
        let secrets = unseal_account(&user_db, &record.id, password)?;
        if !record.active {
            return Err(Error::PermissionDenied(format!(
                "user '{username}' is disabled"
            )));
        }
        Ok(User::new(
            shared.clone(),
            username.to_string(),
            record.id,
            user_db,
            Session::new(secrets),
        ))
    }

    /// Every username, sorted.
    pub fn list_users(&self) -> Result<Vec<String>> {
        Ok(self
            .shared
            .system
            .users
            .get_all(USERS_STORE)?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// Decodes, verifies and takes an entry that came from elsewhere (sync), for whichever
    /// database it belongs to; no user session is needed. See [`Received`].
    pub fn receive_entry(&self, bytes: &[u8]) -> Result<Received> {
        self.shared.receive_entry(Entry::decode(bytes)?)
    }

    /// Enables sync (idempotent: also from several threads at once) and returns the
    /// instance's one [`Sync`]. Creates the `_sync` system database on first use.
    pub fn enable_sync(&self) -> Result<Arc<Sync>> {
        if let Some(sync) = self.shared.sync.get() {
            return Ok(sync.clone());
        }
        let state = self.shared.system.open_sync_db(&self.shared.registry)?;
        Ok(self
            .shared
            .sync
            .get_or_init(|| Sync::new(&self.shared, state))
            .clone())
    }

    /// The instance's [`Sync`]; [`Error::SyncDisabled`] before [`Instance::enable_sync`].
    pub fn sync(&self) -> Result<Arc<Sync>> {
        self.shared.sync.get().cloned().ok_or(Error::SyncDisabled)
    }
}

/// Decrypts every key of an account. The password is checked by unsealing: a wrong one
/// fails the AES-GCM tag with [`Error::AuthFailed`].
fn unseal_account(
    user_db: &crate::Database,
    user_id: &str,
    password: Option<&str>,
) -> Result<Secrets> {
    let kdf_json = record::parse(&user_db.get(ACCOUNT_STORE, "kdf")?)?;
    let kdf = if kdf_json.is_null() {
        None
    } else {
        Some(Kdf::from_json(&kdf_json)?)
    };
    let kek = match (&kdf, password) {
        (Some(kdf), Some(pw)) => Some(kdf.derive(pw)?),
        (Some(kdf), None) => {
            account::burn_login_time(None, kdf.params);
            return Err(Error::AuthFailed);
        }
        (None, Some(_)) => return Err(Error::AuthFailed),
        (None, None) => None,
    };
    let default = PublicKey::parse(
        record::parse(&user_db.get(ACCOUNT_STORE, "default_key")?)?
            .as_str()
            .ok_or_else(|| Error::Corrupt("default key is not a string".into()))?,
    )?;
    let mut keys = BTreeMap::new();
    for (pubkey, json) in user_db.get_all(KEYS_STORE)? {
        let public = PublicKey::parse(&pubkey)
            .map_err(|_| Error::Corrupt("a stored key id is malformed".into()))?;
        let stored = record::parse(&json)?;
        let secret = record::field(&stored, "secret")?.as_str().unwrap_or("");
        keys.insert(
            public,
            account::unseal_key(kek.as_ref(), user_id, &public, secret)?,
        );
    }
    if !keys.contains_key(&default) {
        return Err(Error::Corrupt("the default key is missing".into()));
    }
    Ok(Secrets { default, keys, kek })
}

impl Shared {
    /// Takes a verified entry from elsewhere into whichever database it belongs to.
    pub(crate) fn receive_entry(&self, entry: Entry) -> Result<Received> {
        self.registry.core(entry.database_id()).receive(entry)
    }

    /// The record of `username` in `_users`.
    pub(crate) fn user_record(&self, username: &str) -> Result<UserRecord> {
        UserRecord::from_json(&self.system.users.get(USERS_STORE, username)?)
    }

    /// Removes the claim on a username so it can be reused.
    pub(crate) fn release_username(&self, username: &str) -> Result<()> {
        self.registry
            .backend()
            .meta_delete(&format!("{USERNAME_CLAIM}{username}"))
            .map(drop)
    }

    /// Every user's record, sorted by username.
    pub(crate) fn user_records(&self) -> Result<Vec<(String, UserRecord)>> {
        self.system
            .users
            .get_all(USERS_STORE)?
            .into_iter()
            .map(|(name, json)| Ok((name, UserRecord::from_json(&json)?)))
            .collect()
    }

    /// Whether database `id` is stored on this instance.
    pub(crate) fn has_database(&self, id: EntryId) -> Result<bool> {
        self.registry.core(id).exists()
    }
}
