//! The accounts of one instance: the user directory (`_users`), creating users, logging
//! in, and what every session needs from the instance.

use std::sync::Arc;

use super::account::{self, check_password, check_username, Vault};
use super::lifecycle::Lifecycle;
use super::records::{
    owner_key, AccountStatus, CatalogRecord, UserRecord, CATALOG, KEYS, OWNERS, TRACKED, USERS,
};
use super::session::Session;
use super::User;
use crate::crypto::{random, KdfParams, KeyRing, PublicKey};
use crate::database::{now_ms, Database, Registry};
use crate::entry::EntryId;
use crate::error::{Error, Result};

/// Metadata key of the claim on a username (the backend's atomic insert decides races).
fn username_claim(username: &str) -> String {
    format!("username/{username}")
}
/// Metadata key of the claim on being the instance's admin (the first user created).
const ADMIN_CLAIM: &str = "admin";

/// The user directory and account operations of one instance. Sessions share it.
pub struct Accounts {
    registry: Arc<Registry>,
    /// Signs the user databases and the directory (the device's key).
    device: Arc<dyn KeyRing>,
    device_key: PublicKey,
    /// `_users`: username → [`UserRecord`].
    directory: Database,
    /// `_databases`: the databases created on this instance and who created them.
    catalog: Database,
    /// The Argon2id cost of new passwords.
    kdf: KdfParams,
    /// What the instance does when a database is forgotten.
    lifecycle: Arc<dyn Lifecycle>,
}

impl Accounts {
    /// The accounts kept in `directory` (`_users`), recording created databases in `catalog`
    /// (`_databases`); new user databases are signed with `device_key` from `device`, new
    /// passwords cost `kdf`, and `lifecycle` learns of forgotten databases.
    pub fn new(
        registry: Arc<Registry>,
        device: Arc<dyn KeyRing>,
        device_key: PublicKey,
        directory: Database,
        catalog: Database,
        kdf: KdfParams,
        lifecycle: Arc<dyn Lifecycle>,
    ) -> Self {
        Accounts {
            registry,
            device,
            device_key,
            directory,
            catalog,
            kdf,
            lifecycle,
        }
    }

    /// Creates a user with a fresh default key: sealed under `password` if given, stored
    /// unsealed otherwise. The first user created is the instance's admin.
    /// [`Error::AlreadyExists`] if the name is taken.
    pub fn create_user(&self, username: &str, password: Option<&str>) -> Result<()> {
        check_username(username)?;
        if let Some(pw) = password {
            check_password(pw)?;
        }
        let backend = self.registry.backend();
        let id = random::hex_token::<16>()?;
        let claim = username_claim(username);
        if !backend.meta_insert_new(&claim, id.as_bytes())? {
            return Err(Error::AlreadyExists(format!(
                "username '{username}' is taken"
            )));
        }
        self.write_account(username, &id, password)
            .inspect_err(|_| {
                let _ = backend.meta_delete(&claim);
            })
    }

    fn write_account(&self, username: &str, id: &str, password: Option<&str>) -> Result<()> {
        let user_db =
            self.registry
                .create(&format!("user:{id}"), self.device.clone(), self.device_key)?;
        account::create(&user_db, &self.vault(id), password, self.kdf)?;
        let admin = self
            .registry
            .backend()
            .meta_insert_new(ADMIN_CLAIM, id.as_bytes())?;
        let record = UserRecord {
            id: id.to_string(),
            db: user_db.id(),
            status: AccountStatus::Active,
            admin,
            created: now_ms(),
        };
        USERS.put(&self.directory, username, &record).map(drop)
    }

    /// Logs a user in. Unknown users and wrong passwords both give [`Error::AuthFailed`]
    /// after the same key-derivation work; a disabled user with the right password gets
    /// [`Error::PermissionDenied`].
    pub fn login(self: &Arc<Self>, username: &str, password: Option<&str>) -> Result<User> {
        check_username(username)?;
        let Some(record) = self.record(username)? else {
            account::burn_login_time(password, self.kdf);
            return Err(Error::AuthFailed);
        };
        let user_db = self
            .registry
            .open(record.db, self.device.clone(), self.device_key);
        let secrets = account::open(&user_db, &self.vault(&record.id), password, self.kdf)?;
        if !record.is_active() {
            return Err(Error::PermissionDenied(format!(
                "user '{username}' is disabled"
            )));
        }
        Ok(User::new(
            self.clone(),
            username.to_string(),
            record.id,
            user_db,
            Session::new(secrets),
        ))
    }

    /// Every username, sorted.
    pub fn usernames(&self) -> Result<Vec<String>> {
        Ok(self.records()?.into_iter().map(|(name, _)| name).collect())
    }

    /// The databases of the instance.
    pub(super) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The sealed secrets of user `user_id`.
    pub(super) fn vault<'a>(&'a self, user_id: &'a str) -> Vault<'a> {
        Vault::new(&**self.registry.backend(), user_id)
    }

    /// The Argon2id cost of new passwords.
    pub(super) fn kdf(&self) -> KdfParams {
        self.kdf
    }

    /// What the instance does when a database is forgotten.
    pub(super) fn lifecycle(&self) -> &dyn Lifecycle {
        &*self.lifecycle
    }

    /// Whether some user of the instance keeps database `db` in their list (one read per
    /// user: forgetting is rare). Deleted accounts keep nothing.
    pub(super) fn kept(&self, db: &EntryId) -> Result<bool> {
        let key = db.to_text();
        for (_, record) in self.records()? {
            let user_db = self
                .registry
                .open(record.db, self.device.clone(), self.device_key);
            if TRACKED.get(&user_db, &key)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The record of `username`, if there is such a user.
    pub(super) fn record(&self, username: &str) -> Result<Option<UserRecord>> {
        USERS.get(&self.directory, username)
    }

    /// Every user's record, sorted by username.
    pub(super) fn records(&self) -> Result<Vec<(String, UserRecord)>> {
        USERS.all(&self.directory)
    }

    /// Replaces the record of `username`.
    pub(super) fn put_record(&self, username: &str, record: &UserRecord) -> Result<()> {
        USERS.put(&self.directory, username, record).map(drop)
    }

    /// Removes `username` (whose record is `record`) from the directory, erases its
    /// secrets, and frees the name for reuse.
    pub(super) fn remove(&self, username: &str, record: &UserRecord) -> Result<()> {
        let user_db = self
            .registry
            .open(record.db, self.device.clone(), self.device_key);
        let keys = KEYS
            .all(&user_db)?
            .into_iter()
            .filter_map(|(text, _)| PublicKey::parse(&text).ok())
            .collect::<Vec<_>>();
        USERS.delete(&self.directory, username)?;
        self.vault(&record.id).delete_all(&keys)?;
        self.registry
            .backend()
            .meta_delete(&username_claim(username))
            .map(drop)
    }

    /// Records in the catalog that user `owner` created database `db` named `name`.
    pub(super) fn catalog_created(&self, db: &EntryId, name: &str, owner: &str) -> Result<()> {
        let mut txn = self.catalog.begin();
        CATALOG.set(
            &mut txn,
            &db.to_text(),
            &CatalogRecord {
                name: name.to_string(),
                created: now_ms(),
            },
        )?;
        OWNERS.set(&mut txn, &owner_key(db, owner), &true)?;
        txn.commit().map(drop)
    }

    /// Records in the catalog that user `owner` forgot database `db` (its owner record goes);
    /// with `unkept`, that it leaves the instance (its catalog record goes too).
    pub(super) fn catalog_forgotten(&self, db: &EntryId, owner: &str, unkept: bool) -> Result<()> {
        let mut txn = self.catalog.begin();
        let mut changed = false;
        let owner = owner_key(db, owner);
        if OWNERS.get(&self.catalog, &owner)?.is_some() {
            OWNERS.remove(&mut txn, &owner)?;
            changed = true;
        }
        if unkept && CATALOG.get(&self.catalog, &db.to_text())?.is_some() {
            CATALOG.remove(&mut txn, &db.to_text())?;
            changed = true;
        }
        if changed {
            txn.commit()?;
        }
        Ok(())
    }
}
