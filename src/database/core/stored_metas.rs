//! The metadata of entries read back from storage lately, so that the children of one
//! entry do not each read it again: storage checks an entry's row as a whole, its bytes
//! included, so reading the metadata of an entry holding a large value took about 20 ms
//! on SQLite (1,100 side-by-side children of an 8 MB entry took 28 s to take in).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::backend::EntryMeta;
use crate::entry::EntryId;

/// How many are kept per database; past it, they are all let go and gathered again.
const MAX_KEPT: usize = 128;

/// Entry metadata read and checked; an entry is never changed once stored, so what is kept
/// stays true while the entry is stored (a write that failed forgets all of it: what it
/// read in its turn may not have been kept).
#[derive(Default)]
pub(super) struct StoredMetas {
    kept: Mutex<HashMap<EntryId, EntryMeta>>,
}

impl StoredMetas {
    /// The metadata of entry `id`, if kept.
    pub(super) fn get(&self, id: &EntryId) -> Option<EntryMeta> {
        self.kept().get(id).cloned()
    }

    /// Keeps `meta`, read from storage for entry `id`.
    pub(super) fn keep(&self, id: EntryId, meta: &EntryMeta) {
        let mut kept = self.kept();
        if kept.len() >= MAX_KEPT {
            kept.clear();
        }
        kept.insert(id, meta.clone());
    }

    /// Lets go of everything kept.
    pub(super) fn clear(&self) {
        self.kept().clear();
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<EntryId, EntryMeta>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(height: u64) -> EntryMeta {
        EntryMeta {
            db: EntryId::from_bytes([0; 32]),
            height,
            settings_visible: Vec::new(),
            changes_settings: false,
        }
    }

    #[test]
    fn at_most_a_bounded_number_are_kept() {
        let metas = StoredMetas::default();
        let id = |n: usize| {
            EntryId::from_bytes(
                [(n % 251) as u8, (n / 251) as u8, 1, 2]
                    .repeat(8)
                    .try_into()
                    .unwrap(),
            )
        };
        for n in 0..MAX_KEPT {
            metas.keep(id(n), &meta(n as u64));
        }
        assert_eq!(metas.get(&id(5)).map(|m| m.height), Some(5));
        metas.keep(id(MAX_KEPT), &meta(0));
        assert!(metas.kept().len() <= MAX_KEPT);
        assert_eq!(metas.get(&id(5)), None);
        assert!(metas.get(&id(MAX_KEPT)).is_some());
        metas.clear();
        assert_eq!(metas.get(&id(MAX_KEPT)), None);
    }
}
