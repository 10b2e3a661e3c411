//! The system databases every instance keeps, all signed by the device key:
//! `_instance` (configuration), `_users` (the user directory) and `_databases` (the registry
//! of databases). Their ids are recorded in the backend's metadata, so opening an instance
//! finds them in O(1).

use std::sync::Arc;

use serde_json::{json, Value};

use crate::backend::Backend;
use crate::crypto::{KdfParams, PrivateKey};
use crate::database::{self, Database, Registry};
use crate::entry::EntryId;
use crate::error::{Error, Result};
use crate::user::Session;

const DEVICE_KEY: &str = "device_key";
const CONFIG_STORE: &str = "config";

/// Handles on the system databases, signing with the device key.
pub(crate) struct System {
    pub(crate) device: Arc<Session>,
    pub(crate) device_key: crate::crypto::PublicKey,
    pub(crate) users: Database,
    pub(crate) databases: Database,
    /// The Argon2id parameters new passwords use, fixed when the instance was created.
    pub(crate) kdf: KdfParams,
}

impl System {
    /// Loads the system databases, creating them (and the device key) on first open.
    /// `kdf`, if given, sets the password parameters of a new instance; on an existing one
    /// it must equal what was recorded.
    pub(crate) fn open(registry: &Registry, kdf: Option<KdfParams>) -> Result<System> {
        let backend = &**registry.backend();
        let device_key = load_or_create_device_key(backend)?;
        let device_pub = device_key.public_key();
        let device = Arc::new(Session::with_key(device_key));
        let open = |name: &str| -> Result<Database> {
            let id = load_or_create_system_db(registry, &device, name)?;
            Ok(Database::new(registry.core(id), device.clone(), device_pub))
        };
        let instance = open("_instance")?;
        let kdf = check_or_write_config(&instance, kdf)?;
        Ok(System {
            users: open("_users")?,
            databases: open("_databases")?,
            device,
            device_key: device_pub,
            kdf,
        })
    }

    /// The `_sync` system database (created on first use).
    pub(crate) fn open_sync_db(&self, registry: &Registry) -> Result<Database> {
        let id = load_or_create_system_db(registry, &self.device, "_sync")?;
        Ok(self.handle(registry, id))
    }

    /// A device-signed handle on any database of this instance (user databases).
    pub(crate) fn handle(&self, registry: &Registry, id: EntryId) -> Database {
        Database::new(registry.core(id), self.device.clone(), self.device_key)
    }

    /// Creates a new device-signed database (a user's private database).
    pub(crate) fn create_db(&self, registry: &Registry, name: &str) -> Result<Database> {
        let root = database::create_root(name, &*self.device, self.device_key)?;
        let core = registry.core(root.id());
        core.store_root(&root)?;
        Ok(Database::new(core, self.device.clone(), self.device_key))
    }
}

fn load_or_create_device_key(backend: &dyn Backend) -> Result<PrivateKey> {
    if let Some(seed) = backend.meta_get(DEVICE_KEY)? {
        return PrivateKey::from_seed(&seed);
    }
    let key = PrivateKey::generate()?;
    if backend.meta_insert_new(DEVICE_KEY, key.to_seed().as_ref())? {
        return Ok(key);
    }
    // Another opener won the race: use its key.
    let seed = backend
        .meta_get(DEVICE_KEY)?
        .ok_or_else(|| Error::Storage("device key vanished".into()))?;
    PrivateKey::from_seed(&seed)
}

fn load_or_create_system_db(registry: &Registry, device: &Session, name: &str) -> Result<EntryId> {
    let backend = registry.backend();
    let meta_key = format!("system/{name}");
    let recorded = |bytes: Vec<u8>| -> Result<EntryId> {
        let id = EntryId::parse(std::str::from_utf8(&bytes).unwrap_or(""))
            .map_err(|_| Error::Corrupt(format!("the recorded id of {name} is malformed")))?;
        if !registry.core(id).exists()? {
            return Err(Error::Corrupt(format!("system database {name} is missing")));
        }
        Ok(id)
    };
    if let Some(bytes) = backend.meta_get(&meta_key)? {
        return recorded(bytes);
    }
    let author = device.read()?.default;
    let root = database::create_root(name, device, author)?;
    registry.core(root.id()).store_root(&root)?;
    if backend.meta_insert_new(&meta_key, root.id().to_text().as_bytes())? {
        return Ok(root.id());
    }
    // Another opener created it first; ours stays unused.
    recorded(
        backend
            .meta_get(&meta_key)?
            .ok_or_else(|| Error::Storage(format!("{name} vanished")))?,
    )
}

fn kdf_json(p: KdfParams) -> String {
    json!({"m_kib": p.m_kib, "t": p.t, "p": p.p}).to_string()
}

/// Records the device identity and password parameters on first open; checks them later.
fn check_or_write_config(instance: &Database, requested: Option<KdfParams>) -> Result<KdfParams> {
    if let Some(p) = requested {
        p.validate()?;
    }
    let device = instance.author().to_text();
    let recorded_device = match instance.get(CONFIG_STORE, "device_id") {
        Ok(json) => Some(json),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e),
    };
    let Some(recorded_device) = recorded_device else {
        let params = requested.unwrap_or_default();
        let mut txn = instance.begin();
        txn.set(CONFIG_STORE, "device_id", &Value::from(device).to_string())?;
        txn.set(CONFIG_STORE, "argon2id", &kdf_json(params))?;
        txn.commit()?;
        return Ok(params);
    };
    if serde_json::from_str::<String>(&recorded_device).ok() != Some(device) {
        return Err(Error::Corrupt(
            "the stored device key does not match the instance's recorded identity".into(),
        ));
    }
    let stored: Value = serde_json::from_str(&instance.get(CONFIG_STORE, "argon2id")?)
        .map_err(|_| Error::Corrupt("instance configuration is malformed".into()))?;
    let n = |k: &str| {
        stored
            .get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let params = match (n("m_kib"), n("t"), n("p")) {
        (Some(m_kib), Some(t), Some(p)) => KdfParams { m_kib, t, p },
        _ => return Err(Error::Corrupt("instance configuration is malformed".into())),
    };
    params
        .validate()
        .map_err(|_| Error::Corrupt("stored Argon2id parameters are below the minimum".into()))?;
    if requested.is_some_and(|r| r != params) {
        return Err(Error::invalid(format!(
            "this instance was created with Argon2id m={} KiB, t={}, p={}; options cannot change them",
            params.m_kib, params.t, params.p
        )));
    }
    Ok(params)
}
