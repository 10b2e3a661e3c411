//! User sessions: what a logged-in user can do.

pub mod account;
mod admin;
pub mod record;
mod session;

use std::sync::Arc;

use serde_json::{json, Value};

use crate::crypto::{PrivateKey, PublicKey};
use crate::database::{self, now_ms, Database, Permission};
use crate::entry::EntryId;
use crate::error::{Error, Result};
use crate::instance::Shared;
use record::{ACCOUNT_STORE, DATABASES_STORE, KEYS_STORE};

pub use admin::UserInfo;
pub use session::{Secrets, Session};

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
    instance: Arc<Shared>,
    username: String,
    id: String,
    /// The user's private database (device-signed): keys, account settings, tracked databases.
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
    pub(crate) fn new(
        instance: Arc<Shared>,
        username: String,
        id: String,
        user_db: Database,
        session: Session,
    ) -> Self {
        User {
            instance,
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

    /// This session's account record; [`Error::PermissionDenied`] once an admin deleted it
    /// (the name may since belong to someone else).
    pub(crate) fn own_record(&self) -> Result<record::UserRecord> {
        self.session.read()?;
        match self.instance.user_record(&self.username) {
            Ok(r) if r.id == self.id => Ok(r),
            Ok(_) => Err(deleted(&self.username)),
            Err(e) if e.is_not_found() => Err(deleted(&self.username)),
            Err(e) => Err(e),
        }
    }

    /// The session behind this user (for sync, which signs requests with its keys).
    pub(crate) fn session_handle(&self) -> Arc<Session> {
        self.session.clone()
    }

    /// The public half of the user's default key, which signs the databases it creates.
    pub fn default_key(&self) -> Result<PublicKey> {
        Ok(self.session.read()?.default)
    }

    /// Creates a database named `name`, with this user's default key as its admin, and
    /// tracks it.
    pub fn create_db(&self, name: &str) -> Result<Database> {
        self.own_record()?;
        let author = self.default_key()?;
        let root = database::create_root(name, &*self.session, author)?;
        let core = self.instance.registry.core(root.id());
        core.store_root(&root)?;
        self.track(root.id(), name)?;
        let mut registry = self.instance.system.databases.begin();
        registry.set(
            DATABASES_STORE,
            &root.id().to_text(),
            &json!({"name": name, "created": now_ms()}).to_string(),
        )?;
        registry.set("owners", &format!("{}/{}", root.id(), self.id), "true")?;
        registry.commit()?;
        Ok(Database::new(core, self.session.clone(), author))
    }

    /// Opens database `id` stored on this instance and tracks it. The handle signs with the
    /// user's key of highest permission on it (the default key if none has any: then it can
    /// only read). [`Error::NotFound`] if this instance holds no such database.
    pub fn load_db(&self, id: &EntryId) -> Result<Database> {
        self.session.read()?;
        if !self.instance.has_database(*id)? {
            return Err(Error::NotFound(format!(
                "no database {id} on this instance"
            )));
        }
        let core = self.instance.registry.core(*id);
        let author = match self.best_key(id)? {
            Some((key, _)) => key,
            None => self.default_key()?,
        };
        let db = Database::new(core, self.session.clone(), author);
        if self.user_db.get(DATABASES_STORE, &id.to_text()).is_err() {
            self.track(*id, &db.name()?)?;
        }
        Ok(db)
    }

    /// Opens the tracked database named `name`. When several tracked databases share the
    /// name, the one tracked first wins (by tracking order; between sessions tracking at the
    /// same moment, the smallest id). [`Error::NotFound`] if none.
    pub fn find_db(&self, name: &str) -> Result<Database> {
        if name.is_empty() {
            return Err(Error::invalid("a database name is not empty"));
        }
        let mut best: Option<(u64, EntryId)> = None;
        for (id, json) in self.user_db.get_all(DATABASES_STORE)? {
            let v = record::parse(&json)?;
            if v.get("name").and_then(Value::as_str) == Some(name) {
                let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(u64::MAX);
                let id = EntryId::parse(&id)?;
                if best.is_none_or(|b| (seq, id) < b) {
                    best = Some((seq, id));
                }
            }
        }
        let (_, id) =
            best.ok_or_else(|| Error::NotFound(format!("no tracked database named '{name}'")))?;
        self.load_db(&id)
    }

    /// Every database the user tracks, sorted by name, then id.
    pub fn list_dbs(&self) -> Result<Vec<DbInfo>> {
        self.session.read()?;
        let mut out = self
            .user_db
            .get_all(DATABASES_STORE)?
            .into_iter()
            .map(|(id, json)| {
                let v = record::parse(&json)?;
                let name = v
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                Ok(DbInfo {
                    id: EntryId::parse(&id)?,
                    name,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
        Ok(out)
    }

    fn track(&self, id: EntryId, name: &str) -> Result<()> {
        self.own_record()?;
        // The user database's height orders its commits: a cheap, growing sequence number.
        let seq = self.user_db.height()? + 1;
        let record = json!({"name": name, "added": now_ms(), "seq": seq}).to_string();
        self.user_db
            .set(DATABASES_STORE, &id.to_text(), &record)
            .map(drop)
    }

    /// Generates a new key for this user, stored sealed like the others. Returns its public
    /// half.
    pub fn add_private_key(&self, name: Option<&str>) -> Result<PublicKey> {
        if name.is_some_and(|n| n.len() > 255) {
            return Err(Error::invalid("a key name is at most 255 bytes"));
        }
        self.own_record()?;
        self.session.update(|secrets| {
            let key = PrivateKey::generate()?;
            let public = key.public_key();
            let stored = json!({"name": name, "secret": account::seal_key(secrets.kek.as_ref(), &self.id, &key)?,
                                "created": now_ms()});
            self.user_db.set(KEYS_STORE, &public.to_text(), &stored.to_string())?;
            secrets.keys.insert(public, key);
            Ok(public)
        })
    }

    /// The user's keys, sorted by public key.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let default = self.default_key()?;
        self.user_db
            .get_all(KEYS_STORE)?
            .into_iter()
            .map(|(pubkey, json)| {
                let public = PublicKey::parse(&pubkey)?;
                let v = record::parse(&json)?;
                let name = v.get("name").and_then(Value::as_str).map(str::to_string);
                Ok(KeyInfo {
                    public,
                    name,
                    default: public == default,
                })
            })
            .collect()
    }

    /// The key this user signs database `id` with: the one with the highest permission on it
    /// (the default key first among equals). [`Error::NotFound`] if none of the user's keys
    /// has any permission, or the database is not on this instance.
    pub fn signing_key(&self, id: &EntryId) -> Result<PublicKey> {
        if !self.instance.has_database(*id)? {
            return Err(Error::NotFound(format!(
                "no database {id} on this instance"
            )));
        }
        self.best_key(id)?.map(|(key, _)| key).ok_or_else(|| {
            Error::NotFound(format!("none of this user's keys has a permission on {id}"))
        })
    }

    fn best_key(&self, id: &EntryId) -> Result<Option<(PublicKey, Permission)>> {
        let settings = self.instance.registry.core(*id).current_settings()?;
        let secrets = self.session.read()?;
        let mut best: Option<(PublicKey, Permission)> = None;
        for key in std::iter::once(&secrets.default).chain(secrets.keys.keys()) {
            if let Some(p) = settings.permission_of(key) {
                if best.is_none_or(|(_, b)| p > b) {
                    best = Some((*key, p));
                }
            }
        }
        Ok(best)
    }

    /// Changes the password (`None` on either side: passwordless). `old` must be the
    /// current one ([`Error::AuthFailed`] otherwise). Every key is re-sealed in one commit;
    /// the old password stops working at once.
    pub fn change_password(&self, old: Option<&str>, new: Option<&str>) -> Result<()> {
        if let Some(pw) = new {
            account::check_password(pw)?;
        }
        self.own_record()?;
        self.session.update(|secrets| {
            let kdf_json = record::parse(&self.user_db.get(ACCOUNT_STORE, "kdf")?)?;
            let current = if kdf_json.is_null() {
                None
            } else {
                Some(account::Kdf::from_json(&kdf_json)?)
            };
            match (&current, old) {
                (Some(kdf), Some(old)) => {
                    let kek = kdf.derive(old)?;
                    let default_json =
                        record::parse(&self.user_db.get(KEYS_STORE, &secrets.default.to_text())?)?;
                    let secret = record::field(&default_json, "secret")?
                        .as_str()
                        .unwrap_or("");
                    account::unseal_key(Some(&kek), &self.id, &secrets.default, secret)?;
                }
                (None, None) => {}
                _ => return Err(Error::AuthFailed),
            }
            let kdf = new
                .map(|_| account::Kdf::new(self.instance.system.kdf))
                .transpose()?;
            let kek = match (&kdf, new) {
                (Some(kdf), Some(pw)) => Some(kdf.derive(pw)?),
                _ => None,
            };
            let stored = self.user_db.get_all(KEYS_STORE)?;
            let mut txn = self.user_db.begin();
            txn.set(
                ACCOUNT_STORE,
                "kdf",
                &kdf.as_ref()
                    .map_or(Value::Null, account::Kdf::to_json)
                    .to_string(),
            )?;
            for (pubkey, json) in stored {
                let public = PublicKey::parse(&pubkey)?;
                let key = secrets
                    .keys
                    .get(&public)
                    .ok_or_else(|| Error::Corrupt("a stored key is not in the session".into()))?;
                let mut v = record::parse(&json)?;
                v["secret"] = Value::from(account::seal_key(kek.as_ref(), &self.id, key)?);
                txn.set(KEYS_STORE, &pubkey, &v.to_string())?;
            }
            txn.commit()?;
            secrets.kek = kek;
            Ok(())
        })
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

fn deleted(username: &str) -> Error {
    Error::PermissionDenied(format!("the account '{username}' was deleted"))
}

impl Drop for User {
    fn drop(&mut self) {
        self.session.wipe();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;

    use crate::backend::MemoryBackend;
    use crate::Instance;

    fn contains(haystack: &[Vec<u8>], needle: &[u8]) -> bool {
        haystack
            .iter()
            .any(|h| h.windows(needle.len()).any(|w| w == needle))
    }

    #[test]
    fn storage_never_holds_a_password_or_a_sealed_private_key_in_clear() {
        let backend = Arc::new(MemoryBackend::new());
        let inst = Instance::open(backend.clone()).unwrap();
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
        // The search does find a key stored in clear: a passwordless user's, as documented.
        let plain = nopw_user.session.read().unwrap();
        let seed = plain.keys.values().next().unwrap().to_seed();
        assert!(contains(&raw, B64.encode(seed.as_ref()).as_bytes()));
    }

    #[test]
    fn logout_wipes_the_session_and_its_databases_refuse_writes() {
        // The secrets' types wipe their memory when dropped; logout drops them.
        fn zeroizes_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroizes_on_drop::<ed25519_dalek::SigningKey>();
        zeroizes_on_drop::<super::account::Kek>();

        let inst = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
        inst.create_user("u", Some("pw")).unwrap();
        let user = inst.login("u", Some("pw")).unwrap();
        let db = user.create_db("d").unwrap();
        let session = user.session.clone();
        assert!(session.read().unwrap().kek.is_some());
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
        let inst = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
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
            "{user:?} {inst:?} {:?} {:?}",
            user.create_db("d").unwrap(),
            user.session.read().unwrap().keys
        );
        for seed in &seeds {
            assert!(!shown.contains(seed.as_str()));
        }
        assert!(!shown.contains(password));
    }
}
