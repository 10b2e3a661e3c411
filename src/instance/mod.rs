//! The instance: one device's identity, its accounts and its databases on one backend.
//!
//! The top of the middle layer: it opens the backend's databases ([`Registry`]), the system
//! databases and the device key, and composes the rooms below: [`Accounts`] (users) and
//! [`SyncEngine`] (sync), which never import this room or each other.

mod lifecycle;
mod requester;
mod system;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::backend::Backend;
use crate::crypto::{KdfParams, PublicKey};
use crate::database::{
    Received, Registry, RegistryLimits, IDLE_DATABASES_KEPT, MAX_QUEUED_NOTIFICATIONS,
};
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::sync::SyncEngine;
use crate::user::{Accounts, User, ABANDONED_CREATION_AGE};

use lifecycle::InstanceLifecycle;
use system::System;

/// How to open an instance.
#[derive(Clone, Copy, Debug, Default)]
pub struct InstanceOptions {
    /// Argon2id parameters for passwords; at least [`KdfParams::MINIMUM`]. `None`: the minimum.
    /// Only applies the first time a backend is opened.
    pub kdf: Option<KdfParams>,
    /// How long ago a user creation that never claimed its name must have started for this
    /// open to discard it, as abandoned by a creator that stopped (a crash). `None`:
    /// [`ABANDONED_CREATION_AGE`] (an hour).
    pub abandoned_after: Option<Duration>,
    /// How many idle databases to keep in memory for reuse, at most
    /// [`crate::database::MAX_IDLE_DATABASES_LIMIT`]. `None`: [`IDLE_DATABASES_KEPT`] (256).
    pub idle_databases_kept: Option<usize>,
    /// How many change notifications may wait for callbacks before changes to databases
    /// with callbacks wait for them, from 1 to
    /// [`crate::database::MAX_QUEUED_NOTIFICATIONS_LIMIT`]. `None`:
    /// [`MAX_QUEUED_NOTIFICATIONS`] (65,536).
    pub queued_notifications: Option<usize>,
}

/// An open instance. Cheap to share: clones refer to the same instance.
#[derive(Clone)]
pub struct Instance {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<Registry>,
    system: System,
    accounts: Arc<Accounts>,
    /// What forgetting a database does beyond the user room (it reaches sync through it).
    lifecycle: Arc<InstanceLifecycle>,
    sync: OnceLock<Arc<SyncEngine>>,
    sessions: requester::Sessions,
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
        let limits = RegistryLimits {
            idle_databases: options.idle_databases_kept.unwrap_or(IDLE_DATABASES_KEPT),
            queued_notifications: options
                .queued_notifications
                .unwrap_or(MAX_QUEUED_NOTIFICATIONS),
            ..RegistryLimits::default()
        };
        limits.validate()?;
        let registry = Arc::new(Registry::with_limits(backend, limits));
        let system = System::open(&registry, options.kdf)?;
        let lifecycle = Arc::new(InstanceLifecycle::new(
            registry.clone(),
            system.device(),
            system.device_key(),
        ));
        let accounts = Arc::new(Accounts::new(
            registry.clone(),
            system.device(),
            system.device_key(),
            system.database(&registry, "_users")?,
            system.database(&registry, "_databases")?,
            system.kdf(),
            lifecycle.clone(),
        ));
        // Best effort: what a failure leaves is found again by the next open.
        let _ =
            accounts.discard_abandoned(options.abandoned_after.unwrap_or(ABANDONED_CREATION_AGE));
        let _ = accounts.finish_deletions();
        Ok(Instance {
            inner: Arc::new(Inner {
                registry,
                system,
                accounts,
                lifecycle,
                sync: OnceLock::new(),
                sessions: requester::Sessions::default(),
            }),
        })
    }

    /// The device's public identity (Ed25519), stable for the instance's life.
    pub fn device_id(&self) -> PublicKey {
        self.inner.system.device_key()
    }

    /// The Argon2id parameters of this instance's passwords.
    pub fn kdf_params(&self) -> KdfParams {
        self.inner.system.kdf()
    }

    /// Creates a user with a fresh default key: sealed under `password` if given, stored
    /// unsealed otherwise. The first user created is the instance's admin.
    /// [`Error::AlreadyExists`] if the name is taken.
    pub fn create_user(&self, username: &str, password: Option<&str>) -> Result<()> {
        self.inner.accounts.create_user(username, password)
    }

    /// Logs a user in. Unknown users and wrong passwords both give [`Error::AuthFailed`] after
    /// the same key-derivation work; a disabled user with the right password gets
    /// [`Error::PermissionDenied`]. With sync enabled, what the user tracks resumes in the
    /// background ([`SyncEngine::resume`]).
    pub fn login(&self, username: &str, password: Option<&str>) -> Result<User> {
        let user = self.inner.accounts.login(username, password)?;
        if let Some(sync) = self.inner.sync.get() {
            sync.resume(&user)?;
        }
        self.inner.sessions.remember(&user);
        Ok(user)
    }

    /// Every username, sorted.
    pub fn list_users(&self) -> Result<Vec<String>> {
        self.inner.accounts.usernames()
    }

    /// Decodes, verifies and takes an entry that came from elsewhere (sync), for whichever
    /// database it belongs to; no user session is needed. See [`Received`].
    pub fn receive_entry(&self, bytes: &[u8]) -> Result<Received> {
        self.inner.registry.receive(Entry::decode(bytes)?)
    }

    /// Bytes of entries received from elsewhere that wait, invisible, for their parents,
    /// across this instance's databases: at most the `waiting_bytes` of [`Self::limits`]
    /// ([`crate::database::MAX_WAITING_BYTES`] by default).
    pub fn waiting_bytes(&self) -> usize {
        self.inner.registry.waiting_bytes()
    }

    /// Databases whose state this instance holds in memory now: the system databases, those
    /// in use, and at most about [`IDLE_DATABASES_KEPT`] idle ones (see there).
    pub fn databases_in_memory(&self) -> usize {
        self.inner.registry.cores_held()
    }

    /// Watchers ([`crate::database::Events`]) live on this instance now, over all its
    /// databases: at most the `watchers` of [`Self::limits`]
    /// ([`crate::database::MAX_WATCHERS`] by default), unless it was lowered since they
    /// started.
    pub fn watchers(&self) -> usize {
        self.inner.registry.watchers_live()
    }

    /// Change notifications waiting for this instance's callbacks now.
    pub fn notifications_queued(&self) -> u64 {
        self.inner.registry.notifications_queued()
    }

    /// What this instance holds now, by name, against its [`RegistryLimits`]:
    /// `databases_in_memory`, `notifications_queued`, `waiting_entry_bytes`,
    /// `databases_polled` (for entries other processes store), `storage_connections`,
    /// `password_derivations` (computing now in this process, at most
    /// [`crate::crypto::password::derivations_at_once`]), `scrubs_pending`
    /// ([`Backend::scrub_steps_pending`], read from the storage: the one count that can fail)
    /// and `watchers` (live now, over all the databases: [`Self::watchers`]).
    pub fn stats(&self) -> Result<Vec<(&'static str, u64)>> {
        let scrubs_pending = self.inner.registry.backend().scrub_steps_pending()?;
        Ok(vec![
            ("databases_in_memory", self.databases_in_memory() as u64),
            ("notifications_queued", self.notifications_queued()),
            ("waiting_entry_bytes", self.waiting_bytes() as u64),
            (
                "databases_polled",
                self.inner.registry.databases_polled() as u64,
            ),
            (
                "storage_connections",
                self.inner.registry.backend().connections_open() as u64,
            ),
            (
                "password_derivations",
                crate::crypto::password::derivations_running() as u64,
            ),
            ("scrubs_pending", scrubs_pending),
            ("watchers", self.watchers() as u64),
        ])
    }

    /// The limits on what this instance holds in memory for its databases.
    pub fn limits(&self) -> RegistryLimits {
        self.inner.registry.limits()
    }

    /// Sets the limits named in `changes` (as [`RegistryLimits::by_name`] names them),
    /// keeping the others, all or nothing. Returns the limits now in force.
    pub fn set_limits_by_name<S: AsRef<str>>(
        &self,
        changes: &[(S, u64)],
    ) -> Result<RegistryLimits> {
        self.inner.registry.change_limits(|limits| {
            for (name, value) in changes {
                limits.set_by_name(name.as_ref(), *value)?;
            }
            Ok(())
        })
    }

    /// Enables sync (idempotent: also from several threads at once) and returns the
    /// instance's one [`SyncEngine`]. Creates the `_sync` system database on first use. What
    /// the users logged in now track resumes in the background; if resuming it fails, sync
    /// stays enabled, the error is returned and the next call resumes again.
    pub fn enable_sync(&self) -> Result<Arc<SyncEngine>> {
        if let Some(sync) = self.inner.sync.get() {
            self.inner.sessions.resume_pending(sync)?;
            return Ok(sync.clone());
        }
        let inner = &*self.inner;
        let state = inner.system.database(&inner.registry, "_sync")?;
        // Threads racing here each make an engine; one is kept, the others dropped unused.
        let engine = SyncEngine::new(
            &inner.registry,
            inner.system.device(),
            inner.system.device_key(),
            state,
        )?;
        let mut made = false;
        let sync = inner
            .sync
            .get_or_init(|| {
                made = true;
                engine
            })
            .clone();
        if made {
            inner.lifecycle.sync_enabled(&sync);
            inner.sessions.sync_enabled();
        }
        inner.sessions.resume_pending(&sync)?;
        Ok(sync)
    }

    /// The instance's [`SyncEngine`]; [`Error::SyncDisabled`] before
    /// [`Instance::enable_sync`].
    pub fn sync(&self) -> Result<Arc<SyncEngine>> {
        self.inner.sync.get().cloned().ok_or(Error::SyncDisabled)
    }
}
