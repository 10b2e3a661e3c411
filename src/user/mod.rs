//! Users: accounts (creating, logging in, sealing keys) and what a logged-in user can do.
//!
//! This room never imports `instance` or `sync`. The instance gives it an [`Accounts`]
//! (the directory and what sessions need: the databases, the device's key ring for user
//! databases); a [`User`] acts through its session's [`KeyRing`], which is also what sync
//! signs requests with.

mod account;
mod admin;
mod directory;
mod lifecycle;
mod records;
mod session;

use std::sync::Arc;

use crate::crypto::{KeyRing, PrivateKey, PublicKey};
use crate::database::{create_root, now_ms, Database, Permission};
use crate::entry::EntryId;
use crate::error::{quoted, Error, Result};
use records::{TrackedRecord, UserRecord, KEYS, TRACKED};
use session::Session;

pub use account::{check_password, check_username, MAX_PASSWORD, MAX_USERNAME};
pub use admin::UserInfo;
pub use directory::{Accounts, ABANDONED_CREATION_AGE};
pub use lifecycle::Lifecycle;

/// One of a user's keys, as listed (the private half never leaves the session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The public key.
    pub public: PublicKey,
    /// Its display name, if any.
    pub name: Option<String>,
    /// Whether it is the default key (it signs the databases the user creates).
    pub default: bool,
}

/// A database the user tracks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbInfo {
    /// Its id.
    pub id: EntryId,
    /// Its name when the user started tracking it.
    pub name: String,
}

/// A logged-in user. Holds the user's decrypted keys until [`User::logout`] or drop.
pub struct User {
    accounts: Arc<Accounts>,
    username: String,
    id: String,
    /// The user's private database (device-signed): account, keys, tracked databases.
    user_db: Database,
    session: Arc<Session>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl User {
    fn new(
        accounts: Arc<Accounts>,
        username: String,
        id: String,
        user_db: Database,
        session: Session,
    ) -> Self {
        User {
            accounts,
            username,
            id,
            user_db,
            session: Arc::new(session),
        }
    }

    /// The user's name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The device id of the instance this session belongs to.
    pub fn device_id(&self) -> PublicKey {
        self.accounts.device_key()
    }

    /// The account's id: random, fixed at creation, never reused (a name can be, after the
    /// account is deleted).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The session's key ring: what databases and sync sign with on this user's behalf.
    /// It stops signing when the session logs out.
    pub fn key_ring(&self) -> Arc<dyn KeyRing> {
        self.session.clone()
    }

    /// This session's account record; [`Error::PermissionDenied`] once an admin deleted it
    /// (the name may since belong to someone else).
    fn own_record(&self) -> Result<UserRecord> {
        self.session.ensure_usable()?;
        match self.accounts.record(&self.username)? {
            Some(r) if r.id == self.id => Ok(r),
            _ => Err(Error::PermissionDenied(format!(
                "the account '{}' was deleted",
                self.username
            ))),
        }
    }

    /// `read` of this user's private database; once an admin deleted the account (its
    /// private database with it), [`Error::PermissionDenied`] as from changes, rather than
    /// the database's [`Error::NotFound`].
    fn read_account<T>(&self, read: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        self.unless_deleted(read(&self.user_db))
    }

    /// `result`, unless it failed on what an admin deleting the account meanwhile took
    /// away (its private database, a secret: [`Error::NotFound`], [`Error::Corrupt`]):
    /// then [`Error::PermissionDenied`], as for a call made after the deletion. Any other
    /// failure to look the account up leaves `result`'s error as it is.
    fn unless_deleted<T>(&self, result: Result<T>) -> Result<T> {
        result.map_err(|e| match e {
            Error::NotFound(_) | Error::Corrupt(_) => match self.own_record() {
                Err(deleted @ Error::PermissionDenied(_)) => deleted,
                _ => e,
            },
            e => e,
        })
    }

    /// The public half of the user's default key, which signs the databases it creates.
    pub fn default_key(&self) -> Result<PublicKey> {
        self.session.default_key()
    }

    /// Creates a database named `name` (1 to [`crate::database::MAX_DB_NAME`] bytes), with
    /// this user's default key as its admin, and tracks it. Stopped part-way, it leaves the
    /// database listed or not stored.
    pub fn create_db(&self, name: &str) -> Result<Database> {
        self.own_record()?;
        self.unless_deleted(self.create_db_here(name))
    }

    /// [`User::create_db`] once the account was found.
    fn create_db_here(&self, name: &str) -> Result<Database> {
        let author = self.default_key()?;
        let root = create_root(name, &*self.session, author)?;
        // Listed before it is stored: a creation stopped part-way leaves at most a record of
        // a database never stored, which lists skip (they show what this instance holds),
        // rather than a stored database in nobody's list, whose id nobody knows. The record
        // stays after an error: the root may have been stored all the same.
        self.track(root.id(), name)?;
        let db = self
            .accounts
            .registry()
            .create_from_root(&root, self.session.clone(), author)?;
        self.accounts.catalog_created(&db.id(), name, &self.id)?;
        Ok(db)
    }

    /// Opens database `id` stored on this instance and tracks it. The handle signs with the
    /// user's key of highest permission on it. [`Error::NotFound`] unless this instance holds
    /// the database and one of the user's keys may at least read it (the same answer either
    /// way, so a user learns nothing of databases it may not open; system databases and
    /// other users' private databases are never opened this way).
    pub fn load_db(&self, id: &EntryId) -> Result<Database> {
        self.session.ensure_usable()?;
        // Not reclaimed by another user's forget_db until this user keeps it.
        let _keeping = self.accounts.starting_to_keep();
        let Some(author) = self.openable(id)? else {
            return Err(not_openable(id));
        };
        let db = self
            .accounts
            .registry()
            .open(*id, self.session.clone(), author);
        let listed = self.read_account(|db| TRACKED.get(db, &id.to_text()))?;
        if listed.is_none() {
            self.track(*id, &db.name()?)?;
        }
        Ok(db)
    }

    /// The key to open database `id` with, if this instance holds it and one of the user's
    /// keys may read it.
    fn openable(&self, id: &EntryId) -> Result<Option<PublicKey>> {
        if !self.accounts.registry().exists(id)? {
            return Ok(None);
        }
        Ok(self.best_key(id)?.map(|(key, _)| key))
    }

    /// Opens the tracked database named `name`. When several tracked databases share the
    /// name, the one tracked first wins (by tracking order; between sessions tracking at the
    /// same moment, the smallest id). [`Error::NotFound`] if none.
    pub fn find_db(&self, name: &str) -> Result<Database> {
        if name.is_empty() {
            return Err(Error::invalid("a database name is not empty"));
        }
        let first = self
            .tracked()?
            .into_iter()
            .filter(|(_, record)| record.name == name)
            .map(|(id, record)| (record.seq, id))
            .min();
        // (`tracked` lists only databases the user may open.)
        let (_, id) = first.ok_or_else(|| {
            Error::NotFound(format!("no tracked database named {}", quoted(name)))
        })?;
        self.load_db(&id)
    }

    /// Every database the user tracks, sorted by name, then id.
    pub fn list_dbs(&self) -> Result<Vec<DbInfo>> {
        self.session.ensure_usable()?;
        let mut out: Vec<DbInfo> = self
            .tracked()?
            .into_iter()
            .map(|(id, record)| DbInfo {
                id,
                name: record.name,
            })
            .collect();
        out.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
        Ok(out)
    }

    /// The databases the user tracks and may still open.
    fn tracked(&self) -> Result<Vec<(EntryId, TrackedRecord)>> {
        let mut out = Vec::new();
        for (id, record) in self.read_account(|db| TRACKED.all(db))? {
            let id = EntryId::parse(&id)
                .map_err(|_| Error::Corrupt("a tracked database id is malformed".into()))?;
            if self.openable(&id)?.is_some() {
                out.push((id, record));
            }
        }
        Ok(out)
    }

    fn track(&self, id: EntryId, name: &str) -> Result<()> {
        self.own_record()?;
        // The user database's height orders its commits: a cheap, growing sequence number.
        let record = TrackedRecord {
            name: name.to_string(),
            added: now_ms(),
            seq: self.user_db.height()? + 1,
        };
        TRACKED.put(&self.user_db, &id.to_text(), &record).map(drop)
    }

    /// Generates a new key for this user, stored sealed like the others. Returns its public
    /// half.
    pub fn add_private_key(&self, name: Option<&str>) -> Result<PublicKey> {
        if name.is_some_and(|n| n.len() > 255) {
            return Err(Error::invalid("a key name is at most 255 bytes"));
        }
        self.own_record()?;
        let account_key = self.session.account_key()?;
        let vault = self.accounts.vault(&self.id);
        let key = Box::new(PrivateKey::generate()?);
        let public = key.public_key();
        let added = account::add_key(&self.user_db, &vault, &account_key, &key, name);
        if let Err(deleted @ Error::PermissionDenied(_)) = self.own_record() {
            // An admin deleted the account meanwhile, erasing its secrets, perhaps before
            // this one was stored.
            let _ = vault.delete_key(&public);
            return Err(deleted);
        }
        added?;
        self.session.add_key(key)?;
        // The key is added whatever happens here: a proof not made now is made when the
        // user next logs in with sync enabled, or syncs, tracks or asks for a database.
        let _ = (self.accounts.lifecycle()).key_added(&self.id, &*self.key_ring());
        Ok(public)
    }

    /// The user's keys, sorted by public key.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let default = self.default_key()?;
        self.read_account(|db| KEYS.all(db))?
            .into_iter()
            .map(|(text, record)| {
                let public = PublicKey::parse(&text)
                    .map_err(|_| Error::Corrupt("a stored key id is malformed".into()))?;
                Ok(KeyInfo {
                    public,
                    name: record.name,
                    default: public == default,
                })
            })
            .collect()
    }

    /// The key this user signs database `id` with: the one with the highest permission on it
    /// (the default key first among equals). [`Error::NotFound`] if none of the user's keys
    /// has any permission, or the database is not on this instance (the same answer).
    pub fn signing_key(&self, id: &EntryId) -> Result<PublicKey> {
        self.openable(id)?.ok_or_else(|| not_openable(id))
    }

    fn best_key(&self, id: &EntryId) -> Result<Option<(PublicKey, Permission)>> {
        let core = self.accounts.registry().core(*id);
        core.best_key(&self.session.public_keys()?)
    }

    /// Changes the password (`None` on either side: passwordless). `old` must be the
    /// current one ([`Error::AuthFailed`] otherwise). The old password stops working at
    /// once; the session's keys stay as they are.
    pub fn change_password(&self, old: Option<&str>, new: Option<&str>) -> Result<()> {
        if let Some(pw) = new {
            check_password(pw)?;
        }
        self.own_record()?;
        let vault = self.accounts.vault(&self.id);
        self.unless_deleted(account::change_password(
            &vault,
            old,
            new,
            self.accounts.kdf(),
        ))
    }

    /// Ends the session: wipes the decrypted keys. Databases opened through it then refuse
    /// writes with [`Error::LoggedOut`].
    pub fn logout(self) {
        self.session.wipe();
    }

    /// True once the session's secrets are wiped (after [`User::logout`] on any handle).
    pub fn is_logged_out(&self) -> bool {
        self.session.is_wiped()
    }
}

fn not_openable(id: &EntryId) -> Error {
    Error::NotFound(format!(
        "no database {id} on this instance that this user may open"
    ))
}

impl Drop for User {
    fn drop(&mut self) {
        self.session.wipe();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;

    use super::Accounts;
    use crate::backend::{Backend, MemoryBackend};
    use crate::crypto::{KdfParams, KeyRing, PrivateKey};
    use crate::database::{Permission, Registry};

    /// The accounts of a bare instance on `backend`: what the instance room builds.
    fn accounts(backend: Arc<dyn Backend>) -> Arc<Accounts> {
        accounts_with(backend, Arc::new(Bare))
    }

    /// [`accounts`] with `lifecycle` told of forgotten databases.
    fn accounts_with(
        backend: Arc<dyn Backend>,
        lifecycle: Arc<dyn super::Lifecycle>,
    ) -> Arc<Accounts> {
        let registry = Arc::new(Registry::new(backend));
        let device = Arc::new(PrivateKey::generate().unwrap());
        let device_key = device.public_key();
        let directory = registry
            .create("_users", device.clone(), device_key)
            .unwrap();
        let catalog = registry
            .create("_databases", device.clone(), device_key)
            .unwrap();
        Arc::new(Accounts::new(
            registry,
            device,
            device_key,
            directory,
            catalog,
            KdfParams::MINIMUM,
            lifecycle,
        ))
    }

    /// The lifecycle of a bare instance: no system databases beyond these, nothing running.
    struct Bare;

    impl super::Lifecycle for Bare {
        fn is_system(&self, _db: &crate::entry::EntryId) -> crate::Result<bool> {
            Ok(false)
        }

        fn forgotten(&self, _: &str, _: &crate::entry::EntryId, _: bool) -> crate::Result<()> {
            Ok(())
        }
    }

    fn contains(haystack: &[Vec<u8>], needle: &[u8]) -> bool {
        haystack
            .iter()
            .any(|h| h.windows(needle.len()).any(|w| w == needle))
    }

    #[test]
    fn storage_never_holds_a_password_or_a_sealed_private_key_in_clear() {
        let backend = Arc::new(MemoryBackend::new());
        let inst = accounts(backend.clone());
        let password = "a very particular password";
        inst.create_user("pw", Some(password)).unwrap();
        inst.create_user("nopw", None).unwrap();
        let pw_user = inst.login("pw", Some(password)).unwrap();
        pw_user.add_private_key(Some("extra")).unwrap();
        let nopw_user = inst.login("nopw", None).unwrap();
        let raw = backend.raw_contents().unwrap();

        assert!(!contains(&raw, password.as_bytes()));
        let secrets = pw_user.session.read().unwrap();
        assert_eq!(secrets.keys.len(), 2);
        for key in secrets.keys.values() {
            let seed = key.to_seed();
            assert!(!contains(&raw, seed.as_ref()));
            assert!(!contains(&raw, B64.encode(seed.as_ref()).as_bytes()));
        }
        let sealed_account_key = secrets.account_key.clone();
        assert!(!contains(&raw, &sealed_account_key[..]));
        assert!(!contains(
            &raw,
            B64.encode(&sealed_account_key[..]).as_bytes()
        ));
        // The search does find a secret stored in clear: a passwordless user's account key,
        // as documented (it unseals that user's private keys).
        let plain = nopw_user.session.read().unwrap();
        assert!(contains(
            &raw,
            B64.encode(&plain.account_key[..]).as_bytes()
        ));
    }

    #[test]
    fn logout_wipes_the_session_and_its_databases_refuse_writes() {
        // The secrets' types wipe their memory when dropped; logout drops them.
        fn zeroizes_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroizes_on_drop::<ed25519_dalek::SigningKey>();
        zeroizes_on_drop::<zeroize::Zeroizing<[u8; 32]>>(); // what an AccountKey boxes
        zeroizes_on_drop::<aes::Aes256>(); // the round keys of the cipher that seals keys

        let inst = accounts(Arc::new(MemoryBackend::new()));
        inst.create_user("u", Some("pw")).unwrap();
        let user = inst.login("u", Some("pw")).unwrap();
        let db = user.create_db("d").unwrap();
        let session = user.session.clone();
        assert_eq!(session.read().unwrap().keys.len(), 1);
        user.logout();
        assert!(session.is_wiped());
        assert!(matches!(session.read(), Err(crate::Error::LoggedOut)));
        assert!(matches!(
            db.set("s", "k", "1"),
            Err(crate::Error::LoggedOut)
        ));
    }

    #[test]
    fn secrets_never_appear_in_errors_or_debug_output() {
        let inst = accounts(Arc::new(MemoryBackend::new()));
        let password = "hunter2-very-secret";
        inst.create_user("pw", Some(password)).unwrap();
        let wrong = inst.login("pw", Some("hunter3-very-secret")).unwrap_err();
        assert!(!wrong.to_string().contains("hunter"));
        let bad_new = "x".repeat(2000);
        let user = inst.login("pw", Some(password)).unwrap();
        let err = user
            .change_password(Some(password), Some(&bad_new))
            .unwrap_err();
        assert!(!err.to_string().contains(&bad_new) && !err.to_string().contains(password));
        let seeds: Vec<String> = user
            .session
            .read()
            .unwrap()
            .keys
            .values()
            .map(|k| B64.encode(k.to_seed().as_ref()))
            .collect();
        let shown = format!(
            "{user:?} {:?} {:?}",
            user.create_db("d").unwrap(),
            user.session.read().unwrap().keys
        );
        for seed in &seeds {
            assert!(!shown.contains(seed.as_str()));
        }
        assert!(!shown.contains(password));
    }

    /// A forged account record (password settings that would take terabytes or hours) is
    /// refused before any derivation, with or without a password given.
    #[test]
    fn a_login_refuses_forged_password_settings_before_any_work() {
        let backend = Arc::new(MemoryBackend::new());
        let inst = accounts(backend.clone());
        inst.create_user("pw", Some("secret")).unwrap();
        let id = inst.login("pw", Some("secret")).unwrap().id().to_string();
        let key = super::records::account_secret(&id);
        let stored = backend.secret_get(&key).unwrap().unwrap();
        let mut record: serde_json::Value = serde_json::from_slice(&stored).unwrap();
        record["kdf"]["m_kib"] = 4_000_000_000u32.into();
        record["kdf"]["t"] = u32::MAX.into();
        let forged = serde_json::to_vec(&record).unwrap();
        assert!(backend.secret_put(&key, &forged, Some(&stored)).unwrap());
        for password in [None, Some("secret"), Some("wrong")] {
            match inst.login("pw", password) {
                Err(crate::Error::Corrupt(why)) => assert!(why.contains("out of range")),
                other => panic!("{password:?}: {:?}", other.map(|u| u.id().to_string())),
            }
        }
    }

    #[test]
    fn keys_added_before_and_after_a_password_change_all_open_with_the_new_one() {
        let inst = accounts(Arc::new(MemoryBackend::new()));
        inst.create_user("u", Some("old")).unwrap();
        let user = inst.login("u", Some("old")).unwrap();
        let before = user.add_private_key(Some("before")).unwrap();
        user.change_password(Some("old"), Some("new")).unwrap();
        let after = user.add_private_key(Some("after")).unwrap();
        assert!(matches!(
            user.change_password(Some("old"), None),
            Err(crate::Error::AuthFailed)
        ));
        assert!(matches!(
            inst.login("u", Some("old")),
            Err(crate::Error::AuthFailed)
        ));
        let again = inst.login("u", Some("new")).unwrap();
        let keys = again.session.public_keys().unwrap();
        assert_eq!(keys.len(), 3);
        assert!(keys.contains(&before) && keys.contains(&after));
        // To passwordless and back: the same keys each time.
        again.change_password(Some("new"), None).unwrap();
        assert_eq!(
            inst.login("u", None)
                .unwrap()
                .session
                .public_keys()
                .unwrap(),
            keys
        );
    }

    /// A lifecycle that runs `work` once, when the instance is about to reclaim a database.
    struct Reclaiming {
        work: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl super::Lifecycle for Reclaiming {
        fn is_system(&self, _db: &crate::entry::EntryId) -> crate::Result<bool> {
            Ok(false)
        }

        fn forgotten(&self, _: &str, _: &crate::entry::EntryId, unkept: bool) -> crate::Result<()> {
            let work = self.work.lock().unwrap().take();
            if let (true, Some(work)) = (unkept, work) {
                work();
            }
            Ok(())
        }
    }

    /// A user loading a database (and writing to it) while another user forgets it, just
    /// as the instance found that no user keeps it: either the load waits until the storage
    /// is reclaimed and finds nothing, or the database stays for the user who loaded it.
    /// (Before, the load and the write landed in between, and the write was deleted with
    /// the rest.)
    #[test]
    fn a_database_is_never_reclaimed_under_a_user_who_just_loaded_it() {
        let lifecycle = Arc::new(Reclaiming {
            work: Mutex::new(None),
        });
        let inst = accounts_with(Arc::new(MemoryBackend::new()), lifecycle.clone());
        inst.create_user("a", None).unwrap();
        inst.create_user("b", None).unwrap();
        let a = inst.login("a", None).unwrap();
        let b = inst.login("b", None).unwrap();
        let db = a.create_db("shared").unwrap();
        db.grant(&b.default_key().unwrap(), Permission::Write)
            .unwrap();
        let id = db.id();
        type Loading = std::thread::JoinHandle<(crate::Result<()>, super::User)>;
        let loading: Arc<Mutex<Option<Loading>>> = Arc::default();
        let stash = loading.clone();
        *lifecycle.work.lock().unwrap() = Some(Box::new(move || {
            let handle = std::thread::spawn(move || {
                let wrote = b
                    .load_db(&id)
                    .and_then(|db| db.set("s", "k", "1").map(drop));
                (wrote, b)
            });
            // Without a lock between them, the load and the write finish meanwhile.
            let deadline = Instant::now() + Duration::from_secs(1);
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            *stash.lock().unwrap() = Some(handle);
        }));
        a.forget_db(&id).unwrap();
        let handle = loading.lock().unwrap().take();
        let (wrote, b) = handle.expect("reclaimed").join().unwrap();
        match wrote {
            Ok(()) => assert_eq!(b.load_db(&id).unwrap().get("s", "k").unwrap(), "1"),
            Err(e) => assert!(e.is_not_found(), "{e}"),
        }
    }
}
