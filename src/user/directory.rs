//! The accounts of one instance: the user directory (`_users`), creating users, logging
//! in, and what every session needs from the instance.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::account::{self, check_password, check_username, Vault};
use super::lifecycle::Lifecycle;
use super::records::{
    owner_key, AccountStatus, CatalogRecord, CreationRecord, DeletionRecord, UserRecord, CATALOG,
    CREATING, DELETING, OWNERS, TRACKED, USERS,
};
use super::session::Session;
use super::User;
use crate::crypto::{random, KdfParams, KeyRing, PublicKey};
use crate::database::{create_root, now_ms, Database, Registry};
use crate::entry::{Entry, EntryId};
use crate::error::{Error, Result};

/// Metadata key of the claim on a username (the backend's atomic insert decides races).
fn username_claim(username: &str) -> String {
    format!("username/{username}")
}

/// Whether `claim`, a username claim as stored, names account `id` (claims of earlier
/// versions hold the id alone).
fn claims(claim: &[u8], id: &str) -> bool {
    claim == id.as_bytes()
        || serde_json::from_slice::<NameClaim>(claim).is_ok_and(|claim| claim.id == id)
}

/// Metadata key of the claim on being the instance's admin (the first user created).
const ADMIN_CLAIM: &str = "admin";

/// How long after it started an unclaimed user creation is taken to be abandoned by its
/// creator, by default ([`Accounts::discard_abandoned`]): far longer than any creation
/// takes (one key derivation and a few writes).
pub const ABANDONED_CREATION_AGE: Duration = Duration::from_secs(60 * 60);

/// The value of a username claim: the complete account the name belongs to, and all the
/// directory record needs besides (so whoever finds the record missing can write it).
#[derive(Serialize, Deserialize)]
struct NameClaim {
    id: String,
    db: EntryId,
    created: u64,
}

fn name_taken(username: &str) -> Error {
    Error::AlreadyExists(format!("username '{username}' is taken"))
}

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
    /// Held shared while a user starts keeping a database ([`User::load_db`]), exclusive
    /// while [`User::forget_db`] finds that no user keeps one and reclaims its storage: a
    /// database is never reclaimed under a user who has just loaded it.
    keeping: RwLock<()>,
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
            keeping: RwLock::new(()),
        }
    }

    /// Creates a user with a fresh default key: sealed under `password` if given, stored
    /// unsealed otherwise. The first user created is the instance's admin.
    /// [`Error::AlreadyExists`] if the name is taken.
    ///
    /// Crash-safe: a `CreationRecord` is written first; then the account (its database and
    /// sealed keys, under a fresh random id), reachable by nobody; claiming the name
    /// (`NameClaim`, the backend's atomic insert) is the moment the user exists; the
    /// directory record follows (written by the next lookup of the name,
    /// `Accounts::record`, if a crash came first) and the creation record goes. A creation
    /// that stopped before its claim is discarded by [`Accounts::discard_abandoned`].
    pub fn create_user(&self, username: &str, password: Option<&str>) -> Result<()> {
        check_username(username)?;
        if let Some(pw) = password {
            check_password(pw)?;
        }
        if self.record(username)?.is_some() {
            return Err(name_taken(username));
        }
        let id = random::hex_token::<16>()?;
        let root = create_root(&format!("user:{id}"), &*self.device, self.device_key)?;
        let claim = NameClaim {
            id,
            db: root.id(),
            created: now_ms(),
        };
        let creation = CreationRecord {
            username: username.to_string(),
            db: claim.db,
            started: claim.created,
        };
        CREATING.put(&self.directory, &claim.id, &creation)?;
        self.store_account(username, &root, &claim, password)?;
        match self.claim_name(username, &claim) {
            Ok(true) => {}
            Ok(false) => {
                // Another thread or process took the name meanwhile.
                let _ = self.discard_unclaimed(&claim);
                return Err(name_taken(username));
            }
            Err(e) => {
                // The claim may have landed all the same (a connection lost on commit):
                // the account is discarded only once the stored claim shows it did not.
                if self
                    .claim_of(username)
                    .is_ok_and(|c| c.is_none_or(|c| c.id != claim.id))
                {
                    let _ = self.discard_unclaimed(&claim);
                }
                return Err(e);
            }
        }
        // The user exists from the claim on, whatever this does. Its directory record, if
        // this fails (erasing the name's earlier holder was busy, say), is written by the
        // next lookup of the name or the next sweep of creation records; a creation record
        // left behind names a claimed account, which the sweep finishes and drops.
        if self.finish_creation(username, &claim).is_ok() {
            let _ = CREATING.delete(&self.directory, &claim.id);
        }
        Ok(())
    }

    /// Stores the account `claim` names (its database from `root`, its keys and secrets), for
    /// `username`, ready to be claimed. On an error the attempt is discarded; what that
    /// leaves (and what a crash leaves) stays under its creation record for a later open.
    /// [`Error::Busy`] if an open took the creation for abandoned meanwhile (it took longer
    /// than the age allowed, as a process suspended part-way would): it was discarded.
    fn store_account(
        &self,
        username: &str,
        root: &Entry,
        claim: &NameClaim,
        password: Option<&str>,
    ) -> Result<()> {
        let stored = self
            .registry
            .create_from_root(root, self.device.clone(), self.device_key)
            .and_then(|db| account::create(&db, &self.vault(&claim.id), password, self.kdf));
        let abandoned = CREATING
            .get(&self.directory, &claim.id)
            .map(|c| c.is_none());
        match (stored, abandoned) {
            (Ok(_), Ok(false)) => Ok(()),
            (_, Ok(true)) => {
                // Discarded already, except what this wrote since (its secrets, found by
                // their names).
                let _ = self.vault(&claim.id).delete_all();
                let _ = self.registry.discard(&claim.db);
                Err(Error::Busy(format!(
                    "creating user '{username}' took so long that an open of the storage \
                     discarded it as abandoned; create the user again"
                )))
            }
            (Err(e), _) | (Ok(_), Err(e)) => {
                let _ = self.discard_unclaimed(claim);
                Err(e)
            }
        }
    }

    /// Finishes what user creations left in their `CreationRecord`s when they stopped
    /// part-way (a crash, or an error whose clean-up failed too): a creation whose name was
    /// claimed is finished (its directory record written) and loses its creation record; one
    /// that never got its name and started at least
    /// `older_than` ago is discarded with its database and secrets (its creator is taken to
    /// have stopped; one still under way finds its record gone before it claims the name,
    /// and fails busy). Younger ones are left alone.
    pub fn discard_abandoned(&self, older_than: Duration) -> Result<()> {
        let now = now_ms();
        let age_limit = u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX);
        for (id, creation) in CREATING.all(&self.directory)? {
            let claim = self
                .claim_of(&creation.username)?
                .filter(|claim| claim.id == id);
            if let Some(claim) = claim {
                // Its directory record too, so that the user is listed before any lookup.
                self.finish_creation(&creation.username, &claim)?;
                CREATING.delete(&self.directory, &id)?;
            } else if now.saturating_sub(creation.started) >= age_limit {
                self.discard_unclaimed(&NameClaim {
                    id,
                    db: creation.db,
                    created: creation.started,
                })?;
            }
        }
        Ok(())
    }

    /// Claims `username` for the complete account `claim` names; false if it is taken.
    fn claim_name(&self, username: &str, claim: &NameClaim) -> Result<bool> {
        let value = serde_json::to_vec(claim)
            .map_err(|e| Error::Internal(format!("cannot encode a username claim: {e}")))?;
        self.registry
            .backend()
            .meta_insert_new(&username_claim(username), &value)
    }

    /// The claim on `username` whose directory record may not be written yet. Claims written
    /// by earlier versions (the id alone) came before their account, so they name nothing
    /// that could be finished: `None`.
    fn claim_of(&self, username: &str) -> Result<Option<NameClaim>> {
        let claim = self
            .registry
            .backend()
            .meta_get(&username_claim(username))?;
        Ok(claim.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// Writes the directory record of the user `claim` made `username` (by the creator, or by
    /// whoever looks the name up after the creator stopped short). Every writer computes the
    /// same record, so two at once agree. A record of an earlier holder of the name (whose
    /// deletion freed the name and then stopped) is replaced, its account erased first.
    fn finish_creation(&self, username: &str, claim: &NameClaim) -> Result<UserRecord> {
        if let Some(earlier) = USERS.get(&self.directory, username)? {
            if earlier.id == claim.id {
                return Ok(earlier);
            }
            // `claim` was read before: the earlier holder is erased only while the name is
            // still this claim's (not a newer holder's, whose record `earlier` may be).
            if self
                .claim_of(username)?
                .is_none_or(|now| now.id != claim.id)
            {
                return Err(Error::Busy(format!(
                    "the name '{username}' changed hands meanwhile; try again"
                )));
            }
            self.erase_account(&earlier.id, &earlier.db)?;
        }
        let record = self.record_of(claim)?;
        USERS.put(&self.directory, username, &record)?;
        Ok(record)
    }

    /// The directory record of a new account, as `claim` names it (the instance's admin if
    /// it is the first to claim that).
    fn record_of(&self, claim: &NameClaim) -> Result<UserRecord> {
        let backend = self.registry.backend();
        let admin = backend.meta_insert_new(ADMIN_CLAIM, claim.id.as_bytes())?
            || backend.meta_get(ADMIN_CLAIM)?.as_deref() == Some(claim.id.as_bytes());
        Ok(UserRecord {
            id: claim.id.clone(),
            db: claim.db,
            status: AccountStatus::Active,
            admin,
            created: claim.created,
        })
    }

    /// Removes an account that never got its name (a failed or abandoned creation)
    /// ([`Accounts::erase_account`]), then its creation record. Repeatable: what an error
    /// leaves stays under the record, reachable by nobody else.
    fn discard_unclaimed(&self, claim: &NameClaim) -> Result<()> {
        self.erase_account(&claim.id, &claim.db)?;
        if CREATING.get(&self.directory, &claim.id)?.is_some() {
            CREATING.delete(&self.directory, &claim.id)?;
        }
        Ok(())
    }

    /// Erases account `id` and its private database `db`: every sealed secret of the account
    /// (listed by the database or not) and the account secret, then the database.
    /// Repeatable. [`Error::Busy`] if the database was written meanwhile (it then stays).
    fn erase_account(&self, id: &str, db: &EntryId) -> Result<()> {
        self.lifecycle.account_erased(id)?;
        self.vault(id).delete_all()?;
        if !self.registry.discard(db)? {
            return Err(Error::Busy(format!(
                "the account {id} was written while it was erased; try again"
            )));
        }
        Ok(())
    }

    /// Logs a user in. Unknown users and wrong passwords both give [`Error::AuthFailed`]
    /// after the same key-derivation work; a disabled user with the right password gets
    /// [`Error::PermissionDenied`].
    pub fn login(self: &Arc<Self>, username: &str, password: Option<&str>) -> Result<User> {
        check_username(username)?;
        let Some(record) = self.record(username)? else {
            return Err(account::burn_login_time(password, self.kdf));
        };
        let user_db = self
            .registry
            .open(record.db, self.device.clone(), self.device_key);
        let secrets = match account::open(&user_db, &self.vault(&record.id), password, self.kdf) {
            Ok(secrets) => secrets,
            // Deleted while this login read it (the name freed, then the secrets erased):
            // as a user that is not there.
            Err(_)
                if self
                    .record(username)
                    .is_ok_and(|r| r.is_none_or(|r| r.id != record.id)) =>
            {
                return Err(Error::AuthFailed)
            }
            Err(e) => return Err(e),
        };
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

    /// The device key of the instance these accounts belong to.
    pub(super) fn device_key(&self) -> PublicKey {
        self.device_key
    }

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

    /// Held while a user starts keeping a database (see [`Accounts::keeping`]).
    pub(super) fn starting_to_keep(&self) -> RwLockReadGuard<'_, ()> {
        self.keeping.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Held from finding that no user keeps a database until its storage is reclaimed
    /// (see [`Accounts::keeping`]).
    pub(super) fn deciding_to_reclaim(&self) -> RwLockWriteGuard<'_, ()> {
        self.keeping.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a user of the instance other than the one whose private database is `except`
    /// keeps database `db` in their list (one read per user: forgetting is rare). Deleted
    /// accounts keep nothing.
    pub(super) fn kept_by_others(&self, db: &EntryId, except: &EntryId) -> Result<bool> {
        let key = db.to_text();
        for (_, record) in self.records()? {
            if record.db == *except {
                continue;
            }
            let user_db = self
                .registry
                .open(record.db, self.device.clone(), self.device_key);
            if TRACKED.get(&user_db, &key)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The record of `username`, if there is such a user: one its name's claim names. Written
    /// first if the user's creation claimed the name and stopped before it (a crash). A
    /// record no claim names is what a deletion leaves until it ends (it frees the name
    /// first; [`Accounts::finish_deletions`] ends one that stopped): that user is gone.
    pub(super) fn record(&self, username: &str) -> Result<Option<UserRecord>> {
        let Some(claim) = self
            .registry
            .backend()
            .meta_get(&username_claim(username))?
        else {
            return Ok(None);
        };
        if let Some(record) = USERS.get(&self.directory, username)? {
            if claims(&claim, &record.id) {
                return Ok(Some(record));
            }
        }
        match serde_json::from_slice::<NameClaim>(&claim) {
            Ok(claim) => match self.finish_creation(username, &claim) {
                // Erasing the name's earlier holder is busy (being erased, or written): the
                // new account is the user all the same, while the name is still its; its
                // record is written next time.
                Err(Error::Busy(_)) if self.claimed_by(username, &claim.id)? => {
                    self.record_of(&claim).map(Some)
                }
                finished => finished.map(Some),
            },
            // A claim of an earlier version (the id alone) names no account to finish.
            Err(_) => Ok(None),
        }
    }

    /// For deleting `username`: its record, or one a deletion that stopped part-way left
    /// (no claim names it), which the deletion removes again.
    pub(super) fn record_to_delete(&self, username: &str) -> Result<Option<UserRecord>> {
        if let Some(record) = self.record(username)? {
            return Ok(Some(record));
        }
        USERS.get(&self.directory, username)
    }

    /// Every user's record, sorted by username (not those a deletion is removing: see
    /// [`Accounts::record`]).
    pub(super) fn records(&self) -> Result<Vec<(String, UserRecord)>> {
        let mut current = Vec::new();
        for (username, record) in USERS.all(&self.directory)? {
            if self.claimed_by(&username, &record.id)? {
                current.push((username, record));
            }
        }
        Ok(current)
    }

    /// Whether the stored claim on `username` names account `id` (the account is the user).
    fn claimed_by(&self, username: &str, id: &str) -> Result<bool> {
        let claim = self
            .registry
            .backend()
            .meta_get(&username_claim(username))?;
        Ok(claim.is_some_and(|claim| claims(&claim, id)))
    }

    /// Finishes the deletions that stopped part-way (a crash, or an error) after freeing the
    /// name, from their deletion records: one under way meanwhile is done twice, which
    /// does no harm. One that stopped before freeing the name left the user there, and is
    /// not finished: deleting that user again does it.
    pub fn finish_deletions(&self) -> Result<()> {
        for (id, deletion) in DELETING.all(&self.directory)? {
            if !self.claimed_by(&deletion.username, &id)? {
                self.remove(&deletion.username, &id, &deletion.db)?;
            }
        }
        Ok(())
    }

    /// Replaces the record of `username`.
    pub(super) fn put_record(&self, username: &str, record: &UserRecord) -> Result<()> {
        USERS.put(&self.directory, username, record).map(drop)
    }

    /// Removes `username`, whose account is `id` with private database `db`: records the
    /// deletion ([`DELETING`]), frees the name (the user is gone from then on:
    /// [`Accounts::record`]), erases the account (its secrets and private database), drops
    /// its directory record, then the deletion record. Stopped part-way (a crash, or an
    /// error) before the name was freed, it left the user there; after, it is finished by
    /// the next open of the storage, or by repeating it.
    pub(super) fn remove(&self, username: &str, id: &str, db: &EntryId) -> Result<()> {
        let deletion = DeletionRecord {
            username: username.to_string(),
            db: *db,
        };
        DELETING.put(&self.directory, id, &deletion)?;
        // A claim naming another account is a new holder's, whose creation is under way; so
        // is one written since it was read here, which the backend does not delete.
        let backend = self.registry.backend();
        let key = username_claim(username);
        if let Some(claim) = backend.meta_get(&key)?.filter(|claim| claims(claim, id)) {
            backend.meta_delete(&key, Some(&claim))?;
        }
        self.erase_account(id, db)?;
        // Another deletion of this account may have ended meanwhile.
        if USERS
            .get(&self.directory, username)?
            .is_some_and(|r| r.id == id)
        {
            USERS.delete_if_any(&self.directory, username)?;
        }
        DELETING.delete_if_any(&self.directory, id).map(drop)
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
    /// with `reclaimed`, that it left the instance (its catalog record goes too).
    pub(super) fn catalog_forgotten(
        &self,
        db: &EntryId,
        owner: &str,
        reclaimed: bool,
    ) -> Result<()> {
        let mut txn = self.catalog.begin();
        let mut changed = false;
        let owner = owner_key(db, owner);
        if OWNERS.get(&self.catalog, &owner)?.is_some() {
            OWNERS.remove(&mut txn, &owner)?;
            changed = true;
        }
        if reclaimed && CATALOG.get(&self.catalog, &db.to_text())?.is_some() {
            CATALOG.remove(&mut txn, &db.to_text())?;
            changed = true;
        }
        if changed {
            txn.commit()?;
        }
        Ok(())
    }
}
