//! What happens beyond the user room when a user forgets a database, adds or removes a key,
//! or an account is erased: this room tells sync (the user and sync rooms never import each
//! other), which stops tracking a database forgotten and, when it leaves storage, forgets
//! all it remembers of it; and makes, or marks gone, the device's holder proofs of keys.

use std::sync::{Arc, OnceLock, Weak};

use super::system::{recorded_id, SYSTEM_DATABASES};
use crate::crypto::{KeyRing, PublicKey};
use crate::database::{Database, Registry};
use crate::entry::EntryId;
use crate::error::Result;
use crate::sync::{forget_recorded, HolderProofs, SyncEngine};
use crate::user::Lifecycle;

/// The instance's [`Lifecycle`]: what the user room calls when a database is forgotten, a
/// key added or removed, or an account erased.
pub(super) struct InstanceLifecycle {
    registry: Arc<Registry>,
    /// The device's key ring and key: `_sync` is device-signed.
    device: Arc<dyn KeyRing>,
    device_key: PublicKey,
    /// The sync engine, once enabled; held weakly, so sessions never keep it alive.
    sync: OnceLock<Weak<SyncEngine>>,
}

impl InstanceLifecycle {
    /// The lifecycle of the instance whose databases `registry` holds, signed by `device`.
    pub(super) fn new(
        registry: Arc<Registry>,
        device: Arc<dyn KeyRing>,
        device_key: PublicKey,
    ) -> Self {
        InstanceLifecycle {
            registry,
            device,
            device_key,
            sync: OnceLock::new(),
        }
    }

    /// Tells forgetting to go through `sync` (the instance's one engine) from now on.
    pub(super) fn sync_enabled(&self, sync: &Arc<SyncEngine>) {
        let _ = self.sync.set(Arc::downgrade(sync));
    }
}

impl Lifecycle for InstanceLifecycle {
    fn is_system(&self, db: &EntryId) -> Result<bool> {
        let backend = &**self.registry.backend();
        for name in SYSTEM_DATABASES {
            if recorded_id(backend, name)? == Some(*db) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// With sync running, its engine stops the tracks and forgets the records; without, the
    /// records in `_sync` (if sync was ever enabled) are forgotten all the same, so nothing
    /// resumes for the database when sync is next enabled.
    fn forgotten(&self, user_id: &str, db: &EntryId, unkept: bool) -> Result<()> {
        if let Some(sync) = self.sync.get().and_then(Weak::upgrade) {
            return sync.forget_db(user_id, db, unkept);
        }
        match self.sync_state()? {
            Some(state) => forget_recorded(state, user_id, db, unkept),
            None => Ok(()),
        }
    }

    /// Without sync enabled nothing is made: a user logging in once it is makes them all.
    fn key_added(&self, user_id: &str, keys: &dyn KeyRing) -> Result<()> {
        match self.sync.get().and_then(Weak::upgrade) {
            Some(sync) => sync.prove_holding(user_id, keys),
            None => Ok(()),
        }
    }

    fn key_removed(&self, user_id: &str, key: &PublicKey) -> Result<()> {
        match self.holder_proofs()? {
            Some(proofs) => proofs.forget_key(user_id, key),
            None => Ok(()),
        }
    }

    fn account_erased(&self, user_id: &str) -> Result<()> {
        match self.holder_proofs()? {
            Some(proofs) => proofs.forget_owner(user_id),
            None => Ok(()),
        }
    }
}

impl InstanceLifecycle {
    /// The `_sync` database, if sync was ever enabled on this storage (opened here when
    /// the engine does not run in this process).
    fn sync_state(&self) -> Result<Option<Database>> {
        let Some(state) = recorded_id(&**self.registry.backend(), "_sync")? else {
            return Ok(None);
        };
        Ok(Some(self.registry.open(
            state,
            self.device.clone(),
            self.device_key,
        )))
    }

    /// The device's holder proofs, if sync was ever enabled on this storage.
    fn holder_proofs(&self) -> Result<Option<HolderProofs>> {
        Ok(self
            .sync_state()?
            .map(|state| HolderProofs::new(state, self.device_key)))
    }
}
