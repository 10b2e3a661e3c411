//! Entries from elsewhere (sync), taken many to a storage commit.
//!
//! Each entry is validated and applied, or waits for its parents, as
//! [`DatabaseCore::receive`] says. A pull or a push brings them by the hundred, and one
//! storage commit each would cost one `fsync` each (a pull of 10,000 small entries into a
//! SQLite file took 27 s where `fsync` takes 3 ms). So the entries of a reply are taken in
//! parts: each part under the database's write lock in one write turn of the backend
//! ([`crate::backend::Backend::write_turn`]), whose commit makes all of its entries durable
//! at once. Subscribers hear of a part's entries only once they are durable, as they hear
//! of a local commit. Should the turn's commit fail, what memory derived from the part is
//! dropped and each entry is looked up in storage: only those stored are reported taken.

use std::iter::Peekable;
use std::time::Instant;

use super::{DatabaseCore, Outcome, Received, Room};
use crate::database::subscribe::Origin;
use crate::database::SETTINGS_STORE;
use crate::entry::{Entry, EntryId};
use crate::error::{Error, Result};

/// Most entries taken in one write turn: it holds the database and the storage's writer
/// (every other database's commits) while it applies them, and a turn's commit makes them
/// durable together (SQLite's group commit takes up to 64 writes).
pub(crate) const RECEIVED_PER_TURN: usize = 64;

/// Bytes of entries after which a write turn takes no more (at least one entry).
const RECEIVED_BYTES_PER_TURN: usize = 1 << 20;

impl DatabaseCore {
    /// Takes an entry from elsewhere (already decoded, so its signature verified). It is
    /// validated and applied if its parents are present, or waits invisibly until they are.
    /// Returns once it is durable.
    pub fn receive(&self, entry: Entry) -> Result<Received> {
        let mut outcomes = self.receive_all(vec![entry]);
        outcomes.pop().expect("one outcome per entry")
    }

    /// Takes entries from elsewhere (decoded, so their signatures verified), in order, each
    /// as [`DatabaseCore::receive`] does, sharing storage commits (see the module's
    /// documentation); returns each one's outcome, in order, once they are durable.
    pub fn receive_all(&self, entries: Vec<Entry>) -> Vec<Result<Received>> {
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut entries = entries.into_iter().peekable();
        while let Some(next) = entries.peek() {
            if next.database_id() != self.id {
                let id = next.id();
                entries.next();
                outcomes.push(Err(Error::Corrupt(format!(
                    "entry {id} belongs to another database"
                ))));
            } else if next.content().db.is_none() {
                let root = entries.next().expect("peeked");
                outcomes.push(self.receive_root(&root));
            } else {
                self.receive_part(&mut entries, &mut outcomes);
            }
        }
        outcomes
    }

    /// A database's first entry from elsewhere: stored unless the database is.
    fn receive_root(&self, root: &Entry) -> Result<Received> {
        self.wait_for_callbacks();
        if self.exists()? {
            return Ok(Received {
                duplicate: true,
                ..Received::default()
            });
        }
        self.store_root(root)?;
        self.announce_remote(&[root.id()]);
        let mut received = Received {
            applied: vec![root.id()],
            ..Received::default()
        };
        self.release_waiting(vec![root.id()], &mut received)?;
        Ok(received)
    }

    /// One part of [`DatabaseCore::receive_all`]: takes the next entries of `entries` of
    /// this database that are not roots, up to [`RECEIVED_PER_TURN`] (or
    /// [`RECEIVED_BYTES_PER_TURN`]), in one write turn, and pushes their outcomes to
    /// `outcomes`. When the database's lock or the turn cannot be had, every entry left
    /// fails alike (each would wait for the same lock).
    fn receive_part<I: Iterator<Item = Entry>>(
        &self,
        entries: &mut Peekable<I>,
        outcomes: &mut Vec<Result<Received>>,
    ) {
        self.wait_for_callbacks();
        let guard = match self.lock().and_then(|guard| {
            self.ensure_kept()?;
            Ok(guard)
        }) {
            Ok(guard) => guard,
            Err(e) => return outcomes.extend(entries.map(|_| Err(e.clone()))),
        };
        let ticket = self.notices.ticket();
        let first = outcomes.len();
        let mut ids = Vec::new();
        let mut changes_settings = false;
        let turn = self.backend.write_turn(false, &mut || {
            let mut bytes = 0;
            while ids.len() < RECEIVED_PER_TURN && bytes < RECEIVED_BYTES_PER_TURN {
                let ours = |e: &Entry| e.database_id() == self.id && e.content().db.is_some();
                let Some(entry) = entries.next_if(ours) else {
                    break;
                };
                bytes += entry.bytes().len();
                changes_settings |= entry.content().ops.contains_key(SETTINGS_STORE);
                ids.push(entry.id());
                outcomes.push(self.take_received(entry));
            }
            Ok(())
        });
        let (staged, mut lost) = match turn {
            Ok(staged) => (staged, None),
            Err(e) if ids.is_empty() => {
                return outcomes.extend(entries.map(|_| Err(e.clone())));
            }
            Err(e) => (None, Some(e)),
        };
        *self.staged_commit() = staged.clone();
        drop(guard);
        if let Some(staged) = staged {
            lost = staged.wait().err();
        }
        if let Some(e) = lost {
            self.forget_derived_state();
            self.keep_what_was_stored(&ids, &mut outcomes[first..], &e);
        }
        if changes_settings {
            // Read permissions cached since a settings change was applied (before it was
            // durable, so checked without it) are checked again.
            self.settings_generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        let applied: Vec<EntryId> = (outcomes[first..].iter().flatten())
            .flat_map(|received| received.applied.iter().copied())
            .collect();
        self.announce_from_elsewhere(ticket, &applied, Origin::Sync);
    }

    /// [`DatabaseCore::receive`]'s work for an entry of this database that is not a root,
    /// in a write turn under the write lock; nothing is announced.
    fn take_received(&self, entry: Entry) -> Result<Received> {
        let id = entry.id();
        if self.backend.entry_meta(&id)?.is_some() {
            return Ok(Received {
                duplicate: true,
                ..Received::default()
            });
        }
        if self.waiting().contains(&id) {
            if self.waits_for_parents(&id)? {
                return Ok(Received {
                    pending: true,
                    ..Received::default()
                });
            }
            // Held for want of room (the tips may have been merged since), or its parents
            // came and its release was kept out: tried again.
            self.waiting().remove(&id);
        }
        let mut received = Received::default();
        let missing = self.missing_parents(&entry.content().parents)?;
        let mut no_room = false;
        if !missing.is_empty() {
            self.waiting().add(entry, missing, Instant::now())?;
            // A parent held for want of room may come in with it.
            self.take_with_held(id, &mut received)?;
        } else {
            match self.validate_and_apply(&entry, Room::Bounded)? {
                Outcome::Applied => received.applied.push(id),
                Outcome::Discarded => received.discarded.push(id),
                Outcome::NoRoom => {
                    no_room = true;
                    // Refused, and held (if there is room for that): a child merging the
                    // tips back may take it in.
                    let _ = self.waiting().hold(entry, Instant::now());
                    self.take_with_held(id, &mut received)?;
                }
            }
        }
        let taken: Vec<EntryId> = (received.applied.iter())
            .chain(&received.discarded)
            .copied()
            .collect();
        // A failure to read storage here leaves the children waiting, as if their other
        // parents were still missing: a peer sending them again releases them.
        let _ = self.apply_released(taken, &mut received);
        let came_in = received.applied.contains(&id) || received.discarded.contains(&id);
        if !came_in {
            if no_room {
                return Err(self.no_room(&id));
            }
            received.pending = true;
        }
        Ok(received)
    }

    /// After a part's storage commit failed (`e`): each entry reported taken (the part's
    /// entries `ids`, with their `outcomes`) is looked up in storage, and only those stored
    /// stay taken. An entry itself not stored fails with `e`; children it released that
    /// are not are rejected with `e`. Nothing lasting: a peer sends them again.
    fn keep_what_was_stored(&self, ids: &[EntryId], outcomes: &mut [Result<Received>], e: &Error) {
        let lost = |e: &Error| Error::Storage(format!("the entry was not stored: {e}"));
        let stored = |id: &EntryId| (self.backend.entry_db(id)).is_ok_and(|db| db == Some(self.id));
        for (id, outcome) in ids.iter().zip(outcomes) {
            let Ok(received) = outcome else {
                continue;
            };
            let came_in = received.applied.contains(id) || received.discarded.contains(id);
            if came_in && !stored(id) {
                *outcome = Err(lost(e));
                continue;
            }
            for taken in [&mut received.applied, &mut received.discarded] {
                taken.retain(|child| {
                    let kept = stored(child);
                    if !kept {
                        received.rejected.push((*child, lost(e)));
                    }
                    kept
                });
            }
        }
    }
}
