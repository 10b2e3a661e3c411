//! Which databases' document writes are being overtaken by other processes' writes, so that
//! the next one goes straight to the transaction that compares the rows it read
//! (`put_entry_checking_reads`) instead of first trying the one statement that needs the
//! count unchanged. Under contention that try almost always fails, after waiting for the
//! database's lock like the transaction that follows it.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::entry::EntryId;

/// At most this many databases are remembered; past it the set starts afresh (each then
/// costs one failed try again).
pub(super) const MAX_REMEMBERED: usize = 1024;

/// The databases whose last document write found the count moved on.
#[derive(Default)]
pub(super) struct Overtaken {
    databases: Mutex<HashSet<EntryId>>,
}

impl Overtaken {
    /// Whether the last document write to `db` was overtaken.
    pub(super) fn was(&self, db: &EntryId) -> bool {
        self.databases().contains(db)
    }

    /// Records how the document write to `db` that just ended fared.
    pub(super) fn record(&self, db: &EntryId, overtaken: bool) {
        let mut databases = self.databases();
        if !overtaken {
            databases.remove(db);
            return;
        }
        if databases.len() >= MAX_REMEMBERED && !databases.contains(db) {
            databases.clear();
        }
        databases.insert(*db);
    }

    fn databases(&self) -> std::sync::MutexGuard<'_, HashSet<EntryId>> {
        self.databases.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> EntryId {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
        EntryId::from_bytes(bytes)
    }

    #[test]
    fn a_database_is_remembered_until_a_write_to_it_is_not_overtaken() {
        let overtaken = Overtaken::default();
        assert!(!overtaken.was(&id(1)));
        overtaken.record(&id(1), true);
        assert!(overtaken.was(&id(1)) && !overtaken.was(&id(2)));
        overtaken.record(&id(1), false);
        assert!(!overtaken.was(&id(1)));
    }

    #[test]
    fn the_set_starts_afresh_when_full() {
        let overtaken = Overtaken::default();
        for n in 0..MAX_REMEMBERED {
            overtaken.record(&id(n), true);
        }
        overtaken.record(&id(0), true); // already there: nothing forgotten
        assert!(overtaken.was(&id(MAX_REMEMBERED - 1)));
        overtaken.record(&id(MAX_REMEMBERED), true);
        assert!(overtaken.was(&id(MAX_REMEMBERED)));
        assert!(!overtaken.was(&id(0)));
    }
}
