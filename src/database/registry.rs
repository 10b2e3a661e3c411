//! One [`DatabaseCore`] per database in an instance, shared by all its handles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{DatabaseCore, Notifier};
use crate::backend::Backend;
use crate::entry::EntryId;

/// The cores of the databases an instance has used since it opened. A core holds the
/// database's write lock, subscribers and foreign entries waiting for parents, so it lives
/// as long as the instance, not just as long as some handle.
pub struct Registry {
    backend: Arc<dyn Backend>,
    notifier: Arc<Notifier>,
    open: Mutex<HashMap<EntryId, Arc<DatabaseCore>>>,
}

impl Registry {
    /// An empty registry over `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Registry {
            backend,
            notifier: Arc::default(),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The storage backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The core of database `id` (whether or not it is stored yet).
    pub fn core(&self, id: EntryId) -> Arc<DatabaseCore> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.entry(id)
            .or_insert_with(|| {
                Arc::new(DatabaseCore::new(
                    id,
                    self.backend.clone(),
                    self.notifier.clone(),
                ))
            })
            .clone()
    }
}
