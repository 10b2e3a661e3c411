//! The settings states a database has computed, by settings tip set: each new settings
//! entry's state is derived from its parents' cached one, so receiving N settings entries
//! costs N small merges, not N walks of the history. Bounded in states and in cells; the
//! oldest states go first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::settings::Settings;
use crate::entry::EntryId;

/// Most states kept per database.
pub const MAX_STATES: usize = 1024;
/// Most settings cells kept across a database's states (about 100 bytes each).
pub const MAX_CELLS: usize = 1 << 20;

/// A bounded map from settings tip sets to their states.
#[derive(Default)]
pub(crate) struct SettingsCache {
    inner: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    states: HashMap<Vec<EntryId>, Arc<Settings>>,
    /// Insertion order, oldest first.
    order: VecDeque<Vec<EntryId>>,
    cells: usize,
}

impl SettingsCache {
    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state at `tips`, if cached.
    pub(crate) fn get(&self, tips: &[EntryId]) -> Option<Arc<Settings>> {
        self.lock().states.get(tips).cloned()
    }

    /// Forgets every state (after the database's discards changed).
    pub(crate) fn clear(&self) {
        *self.lock() = Cache::default();
    }

    /// Keeps `state` as the state at `tips`, dropping the oldest states beyond the bounds.
    pub(crate) fn insert(&self, tips: Vec<EntryId>, state: Arc<Settings>) {
        let mut cache = self.lock();
        if cache.states.contains_key(&tips) {
            return;
        }
        cache.cells += state.len();
        cache.order.push_back(tips.clone());
        cache.states.insert(tips, state);
        while cache.states.len() > MAX_STATES || (cache.cells > MAX_CELLS && cache.states.len() > 1)
        {
            let Some(oldest) = cache.order.pop_front() else {
                break;
            };
            if let Some(gone) = cache.states.remove(&oldest) {
                cache.cells -= gone.len();
            }
        }
    }
}
