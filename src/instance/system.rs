//! The device's identity and the system databases every instance keeps, all signed by the
//! device key: `_instance` (configuration), `_users` (the user directory), `_databases`
//! (the catalog of databases) and `_sync`. Their ids are recorded in the backend's metadata,
//! so opening an instance finds them in O(1).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::backend::Backend;
use crate::crypto::{KdfParams, KeyRing, PrivateKey, PublicKey};
use crate::database::{Database, Registry, Table};
use crate::entry::EntryId;
use crate::error::{Error, Result};

/// Metadata key of the device's private key seed.
const DEVICE_KEY: &str = "device_key";
/// The instance's configuration, in `_instance`, under [`CONFIG_KEY`].
const CONFIG: Table<InstanceConfig> = Table::new("config", "instance configuration");
const CONFIG_KEY: &str = "instance";

/// The system databases, by name.
pub(super) const SYSTEM_DATABASES: [&str; 4] = ["_instance", "_users", "_databases", "_sync"];

/// Metadata key of the recorded id of system database `name`.
fn system_db_key(name: &str) -> String {
    format!("system/{name}")
}

/// The id recorded for system database `name`, if it was ever created.
pub(super) fn recorded_id(backend: &dyn Backend, name: &str) -> Result<Option<EntryId>> {
    backend
        .meta_get(&system_db_key(name))?
        .map(|bytes| parse_recorded(name, &bytes))
        .transpose()
}

fn parse_recorded(name: &str, bytes: &[u8]) -> Result<EntryId> {
    EntryId::parse(std::str::from_utf8(bytes).unwrap_or(""))
        .map_err(|_| Error::Corrupt(format!("the recorded id of {name} is malformed")))
}

/// What an instance records about itself when it is created.
#[derive(Debug, Serialize, Deserialize)]
struct InstanceConfig {
    /// The device identity, checked against the stored device key at every open.
    device_id: PublicKey,
    /// The Argon2id cost of passwords, fixed at creation.
    argon2id: KdfParams,
}

/// The device's key and the instance's configuration.
pub(super) struct System {
    device: Arc<PrivateKey>,
    kdf: KdfParams,
}

impl System {
    /// Loads the device key and checks `_instance`, creating both on first open. `kdf`, if
    /// given, sets the password cost of a new instance; on an existing one it must equal
    /// what was recorded.
    pub(super) fn open(registry: &Registry, kdf: Option<KdfParams>) -> Result<System> {
        let device = Arc::new(load_or_create_device_key(&**registry.backend())?);
        let mut system = System {
            device,
            kdf: KdfParams::MINIMUM,
        };
        let instance = system.database(registry, "_instance")?;
        system.kdf = check_or_write_config(&instance, kdf)?;
        Ok(system)
    }

    /// The device's public identity.
    pub(super) fn device_key(&self) -> PublicKey {
        self.device.public_key()
    }

    /// The device's key ring (one key), which signs every system database.
    pub(super) fn device(&self) -> Arc<dyn KeyRing> {
        self.device.clone()
    }

    /// The Argon2id cost of this instance's passwords.
    pub(super) fn kdf(&self) -> KdfParams {
        self.kdf
    }

    /// A device-signed handle on system database `name`, created on first use.
    pub(super) fn database(&self, registry: &Registry, name: &str) -> Result<Database> {
        let id = load_or_create_system_db(registry, &self.device, name)?;
        Ok(registry.open(id, self.device(), self.device_key()))
    }
}

fn load_or_create_device_key(backend: &dyn Backend) -> Result<PrivateKey> {
    // The seed's bytes as read are zeroed once the key is made from them.
    let stored = || -> Result<Option<PrivateKey>> {
        (backend.meta_get(DEVICE_KEY)?.map(Zeroizing::new))
            .map(|seed| PrivateKey::from_seed(&seed))
            .transpose()
    };
    if let Some(key) = stored()? {
        return Ok(key);
    }
    // The key is stored before anything it signs: an instance set up without one lost it
    // (read again: another process may have set up the storage since the first read).
    if backend.meta_get(&system_db_key("_instance"))?.is_some() {
        return stored()?.ok_or_else(|| {
            Error::Corrupt(
                "the device key is missing from storage that holds an instance: it was \
                 deleted outside mnemo"
                    .into(),
            )
        });
    }
    let key = PrivateKey::generate()?;
    if backend.meta_insert_new(DEVICE_KEY, key.to_seed().as_ref())? {
        return Ok(key);
    }
    // Another opener won the race: use its key.
    stored()?.ok_or_else(|| Error::Storage("device key vanished".into()))
}

fn load_or_create_system_db(
    registry: &Registry,
    device: &Arc<PrivateKey>,
    name: &str,
) -> Result<EntryId> {
    let backend = registry.backend();
    let meta_key = system_db_key(name);
    let recorded = |bytes: Vec<u8>| -> Result<EntryId> {
        let id = parse_recorded(name, &bytes)?;
        if !registry.exists(&id)? {
            return Err(Error::Corrupt(format!("system database {name} is missing")));
        }
        Ok(id)
    };
    if let Some(bytes) = backend.meta_get(&meta_key)? {
        return recorded(bytes);
    }
    let created = registry.create(name, device.clone(), device.public_key())?;
    if backend.meta_insert_new(&meta_key, created.id().to_text().as_bytes())? {
        return Ok(created.id());
    }
    // Another opener created it first; nobody else knows ours. Best effort: what a failure
    // leaves is reachable by nobody.
    let _ = registry.discard(&created.id());
    recorded(
        backend
            .meta_get(&meta_key)?
            .ok_or_else(|| Error::Storage(format!("{name} vanished")))?,
    )
}

/// Records the device identity and password parameters on first open; checks them later.
fn check_or_write_config(instance: &Database, requested: Option<KdfParams>) -> Result<KdfParams> {
    if let Some(p) = requested {
        p.validate()?;
    }
    let device = instance.author();
    let Some(config) = CONFIG.get(instance, CONFIG_KEY)? else {
        let config = InstanceConfig {
            device_id: device,
            argon2id: requested.unwrap_or_default(),
        };
        CONFIG.put(instance, CONFIG_KEY, &config)?;
        return Ok(config.argon2id);
    };
    if config.device_id != device {
        return Err(Error::Corrupt(
            "the stored device key does not match the instance's recorded identity".into(),
        ));
    }
    let params = config.argon2id;
    params
        .validate()
        .map_err(|_| Error::Corrupt("stored Argon2id parameters are out of range".into()))?;
    if requested.is_some_and(|r| r != params) {
        return Err(Error::invalid(format!(
            "this instance was created with Argon2id m={} KiB, t={}, p={}; options cannot change them",
            params.m_kib, params.t, params.p
        )));
    }
    Ok(params)
}
