//! Entries from elsewhere (sync), taken many to a storage commit.
//!
//! Each entry is validated and applied, or waits for its parents, as
//! [`DatabaseCore::receive`] says. A pull or a push brings them by the hundred, and one
//! storage commit each cost one `fsync` each (a pull of 10,000 small entries into a SQLite
//! file took 27 s where `fsync` takes 3 ms). So the entries of a reply are taken in parts,
//! each under the database's write lock: up to [`ENTRIES_PER_PART`] entries, with the
//! waiting children they release. A part's work is done in write turns of the backend
//! ([`crate::backend::Backend::write_turn`]), each made durable before the next begins, so
//! that on SQLite one `fsync` covers a turn's entries. A turn holds the storage's writer (on
//! SQLite, every database of the file), so it takes no more work once it holds
//! [`ENTRIES_PER_TURN`] entries, [`BYTES_PER_TURN`] or [`TIME_PER_TURN`], and an entry that
//! can take long to work out ([`is_costly`]: a path write, a settings change, a large one)
//! is taken alone outside any turn, as every entry was before: only its storing holds the
//! writer. A part ends early when someone waits for the database (a local commit, say): the
//! next part goes on after them.
//!
//! Subscribers hear of a turn's entries once they are durable, after the part. Should a
//! turn's commit fail, what memory derived is dropped and what the turn took is looked up in
//! storage, under the same lock: only what is stored (or still waiting) is reported taken,
//! so a round holds its cursor back and the next takes the rest. On PostgreSQL each entry is
//! a commit of its own all the same (its backend shares none); a part bounds how long the
//! database is held.

use std::collections::VecDeque;
use std::iter::Peekable;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{op_count, DatabaseCore, Outcome, Received, Room, MAX_OPS_MADE_IN_TURN, UNDO_PENDING};
use crate::database::notice_order::Ticket;
use crate::database::subscribe::Origin;
use crate::database::SETTINGS_STORE;
use crate::entry::{Entry, EntryId, Op};
use crate::error::{Error, Result};

/// Most entries (given, not released) one part takes under the database's write lock.
const ENTRIES_PER_PART: usize = 64;

/// Most entries one write turn takes, given or released: SQLite's group commit holds up to
/// 64 writes.
const ENTRIES_PER_TURN: usize = 64;

/// Bytes of entries after which a write turn takes no more.
const BYTES_PER_TURN: usize = 1 << 20;

/// Time after which a write turn takes no more.
const TIME_PER_TURN: Duration = Duration::from_millis(50);

/// Bytes past which an entry is taken alone, outside any write turn ([`is_costly`]).
const COSTLY_BYTES: usize = 64 << 10;

/// One part of [`DatabaseCore::receive_all`] under way.
struct Part<'a> {
    /// How many more entries given the part may take.
    given: usize,
    /// Waiting children to try, each with the index of the outcome that released them.
    released: VecDeque<(usize, EntryId)>,
    /// Announcements due once the part ends, in order: each turn's place in line and the
    /// entries it applied.
    announcements: Vec<(Ticket<'a>, Vec<EntryId>)>,
    /// Set when a turn failed or an undoing is pending here: the part takes nothing more.
    ended: bool,
}

/// What one write turn took.
#[derive(Default)]
struct Turn {
    /// Each entry taken, with the index of its outcome and whether it is the outcome's own
    /// entry (else a child it released or a held entry it took in).
    taken: Vec<(usize, EntryId, bool)>,
    /// Entries applied, in order.
    applied: Vec<EntryId>,
    /// Bytes of the entries taken.
    bytes: usize,
}

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
        // Waiting children to try, each with the index of the outcome that released them.
        let mut released = VecDeque::new();
        loop {
            match entries.peek() {
                Some(next) if next.database_id() != self.id => {
                    let id = next.id();
                    entries.next();
                    outcomes.push(Err(Error::Corrupt(format!(
                        "entry {id} belongs to another database"
                    ))));
                }
                Some(next) if next.content().db.is_none() => {
                    let root = entries.next().expect("peeked");
                    let index = outcomes.len();
                    let received = self.receive_root(&root);
                    if received.as_ref().is_ok_and(|r| !r.duplicate) {
                        // The entries that waited for it, taken with the part of those after.
                        let children = self.waiting().children_of(&root.id());
                        released.extend(children.into_iter().map(|child| (index, child)));
                    }
                    outcomes.push(received);
                }
                None if released.is_empty() => return outcomes,
                _ => released = self.receive_part(&mut entries, &mut outcomes, released),
            }
        }
    }

    /// A database's first entry from elsewhere: stored (durable) and announced, unless the
    /// database is stored.
    fn receive_root(&self, root: &Entry) -> Result<Received> {
        self.wait_for_callbacks();
        if self.exists()? {
            return Ok(Received {
                duplicate: true,
                ..Received::default()
            });
        }
        self.store_root(root)?;
        self.announce_from_elsewhere(self.notices.ticket(), &[root.id()], Origin::Sync);
        Ok(Received {
            applied: vec![root.id()],
            ..Received::default()
        })
    }

    /// One part of [`DatabaseCore::receive_all`]: takes the waiting children `released`
    /// (each with the index of the outcome that released it) and the next entries of
    /// `entries` while they are of this database and not roots, up to [`ENTRIES_PER_PART`],
    /// with the children they release, in write turns under the database's write lock, and
    /// pushes their outcomes to `outcomes`; then announces what was applied. Returns the
    /// children left to try when an undoing became pending here (the next part's lock
    /// brings the state up to date first). When the lock cannot be had, or a turn failed,
    /// the entries of the part not taken fail alike (each would wait for the same lock),
    /// and so do the children not tried (rejected: a peer sends them again).
    fn receive_part<I: Iterator<Item = Entry>>(
        &self,
        entries: &mut Peekable<I>,
        outcomes: &mut Vec<Result<Received>>,
        released: VecDeque<(usize, EntryId)>,
    ) -> VecDeque<(usize, EntryId)> {
        let ours = |e: &Entry| e.database_id() == self.id && e.content().db.is_some();
        self.wait_for_callbacks();
        let guard = match self.lock().and_then(|guard| {
            self.ensure_kept()?;
            Ok(guard)
        }) {
            Ok(guard) => guard,
            Err(e) => {
                while entries.next_if(ours).is_some() {
                    outcomes.push(Err(e.clone()));
                }
                reject_untried(released, outcomes, &e);
                return VecDeque::new();
            }
        };
        let mut part = Part {
            given: ENTRIES_PER_PART,
            released,
            announcements: Vec::new(),
            ended: false,
        };
        while !part.ended {
            let Some(costly) = self.next_is_costly(entries, &part, ours) else {
                break;
            };
            let ticket = self.notices.ticket();
            let generation = self.settings_generation.load(Ordering::Acquire);
            let mut turn = Turn::default();
            let started = Instant::now();
            let worked = if costly {
                // Alone, outside any write turn, as every entry was taken before: only its
                // storing holds the storage's writer, and it is durable once stored.
                self.take_next(entries, outcomes, &mut part, &mut turn, ours);
                Ok(None)
            } else {
                self.backend.write_turn(false, &mut || {
                    loop {
                        self.take_next(entries, outcomes, &mut part, &mut turn, ours);
                        if self.undo.load(Ordering::Acquire) == UNDO_PENDING {
                            part.ended = true;
                            break;
                        }
                        if self.turn_is_full(&turn, started)
                            || self.next_is_costly(entries, &part, ours) != Some(false)
                        {
                            break;
                        }
                    }
                    Ok(())
                })
            };
            // Made durable now, while the lock is held: a failure is mended before anyone
            // else reads or writes this database.
            let durable = worked.and_then(|staged| staged.map_or(Ok(()), |s| s.settle_now()));
            if let Err(e) = durable {
                self.forget_derived_state();
                self.keep_what_was_stored(&mut turn, outcomes, &e);
                part.ended = true;
                if turn.taken.is_empty() {
                    // No turn to be had (the writer kept busy): the part's entries fail.
                    while part.given > 0 && entries.next_if(ours).is_some() {
                        part.given -= 1;
                        outcomes.push(Err(e.clone()));
                    }
                }
                reject_untried(std::mem::take(&mut part.released), outcomes, &e);
            }
            if self.settings_generation.load(Ordering::Acquire) != generation {
                // A settings change was applied before it was durable, so read permissions
                // cached meanwhile were checked without it: they are checked again.
                self.settings_generation.fetch_add(1, Ordering::AcqRel);
            }
            part.announcements.push((ticket, turn.applied));
            if self.undo.load(Ordering::Acquire) == UNDO_PENDING {
                // Also after an entry taken alone (a revocation whose undoing was kept out).
                part.ended = true;
            }
            if self.write_lock.has_waiters() {
                // Someone waits for the database (a local commit, say): the part ends, and
                // the children left to try go on in the next one, after them.
                part.ended = true;
            }
        }
        drop(guard);
        for (ticket, applied) in part.announcements {
            self.announce_from_elsewhere(ticket, &applied, Origin::Sync);
        }
        part.released
    }

    /// Whether the part's next work is an entry to take alone ([`is_costly`]): the next
    /// waiting child to try, else the next entry given; `None` when there is none.
    fn next_is_costly<I: Iterator<Item = Entry>>(
        &self,
        entries: &mut Peekable<I>,
        part: &Part<'_>,
        ours: impl Fn(&Entry) -> bool,
    ) -> Option<bool> {
        if let Some((_, child)) = part.released.front() {
            // Not waiting any more: trying it takes nothing.
            return Some(self.waiting().entry(child).is_some_and(|e| is_costly(&e)));
        }
        let next = entries.peek().filter(|e| part.given > 0 && ours(e))?;
        Some(is_costly(next))
    }

    /// Does the part's next work: tries the next waiting child, else takes the next entry
    /// given, if any.
    fn take_next<I: Iterator<Item = Entry>>(
        &self,
        entries: &mut Peekable<I>,
        outcomes: &mut Vec<Result<Received>>,
        part: &mut Part<'_>,
        turn: &mut Turn,
        ours: impl Fn(&Entry) -> bool,
    ) {
        if let Some((index, child)) = part.released.pop_front() {
            return self.release_child(index, child, outcomes, part, turn);
        }
        if part.given == 0 {
            return;
        }
        if let Some(entry) = entries.next_if(|e| ours(e)) {
            part.given -= 1;
            self.take_given(entry, outcomes, part, turn);
        }
    }

    /// Whether a turn that started at `started` and took `turn` takes no more work.
    fn turn_is_full(&self, turn: &Turn, started: Instant) -> bool {
        !turn.taken.is_empty()
            && (turn.taken.len() >= ENTRIES_PER_TURN
                || turn.bytes >= BYTES_PER_TURN
                || started.elapsed() >= TIME_PER_TURN)
    }

    /// Takes a given entry (see [`DatabaseCore::take_received`]), noting its outcome, what
    /// it took and the children it releases.
    fn take_given(
        &self,
        entry: Entry,
        outcomes: &mut Vec<Result<Received>>,
        part: &mut Part<'_>,
        turn: &mut Turn,
    ) {
        let (index, id) = (outcomes.len(), entry.id());
        turn.bytes += entry.bytes().len();
        turn.taken.push((index, id, true));
        let mut received = Received::default();
        let outcome = self.take_received(entry, &mut received);
        self.note_taken(index, &received, 0, 0, part, turn);
        outcomes.push(outcome.map(|()| received));
    }

    /// Tries waiting child `child` of an entry taken (released by outcome `index`): taken in
    /// once none of its parents is missing.
    fn release_child(
        &self,
        index: usize,
        child: EntryId,
        outcomes: &mut [Result<Received>],
        part: &mut Part<'_>,
        turn: &mut Turn,
    ) {
        let mut scratch = Received::default();
        let received = match outcomes.get_mut(index) {
            Some(Ok(received)) => received,
            _ => &mut scratch,
        };
        let (applied, discarded) = (received.applied.len(), received.discarded.len());
        let parents = self.waiting().parents(&child).map(<[EntryId]>::to_vec);
        let Some(parents) = parents else {
            return;
        };
        // A failure to read storage leaves it waiting: a peer sending it again takes it.
        if !self.missing_parents(&parents).is_ok_and(|m| m.is_empty()) {
            return;
        }
        let Some(entry) = self.waiting().take(&child) else {
            return;
        };
        turn.bytes += entry.bytes().len();
        match self.validate_and_apply(&entry, Room::Bounded) {
            Ok(Outcome::Applied) => received.applied.push(child),
            Ok(Outcome::Discarded) => received.discarded.push(child),
            Ok(Outcome::NoRoom) => {
                // Best effort: an entry that cannot be held is refused all the same.
                let _ = self.waiting().hold(entry, Instant::now());
                match self.take_with_held(child, received) {
                    Ok(taken) if taken.contains(&child) => {}
                    Ok(_) => received.rejected.push((child, self.no_room(&child))),
                    Err(e) => received.rejected.push((child, e)),
                }
            }
            Err(e) => received.rejected.push((child, e)),
        }
        self.note_taken(index, received, applied, discarded, part, turn);
    }

    /// Notes what outcome `index`'s `received` took since it held `applied` and `discarded`
    /// entries: in `turn`, and the waiting children of each, to try next.
    fn note_taken(
        &self,
        index: usize,
        received: &Received,
        applied: usize,
        discarded: usize,
        part: &mut Part<'_>,
        turn: &mut Turn,
    ) {
        let new_applied = &received.applied[applied..];
        turn.applied.extend_from_slice(new_applied);
        for id in new_applied.iter().chain(&received.discarded[discarded..]) {
            if !turn.taken.iter().any(|(_, taken, _)| taken == id) {
                turn.taken.push((index, *id, false));
            }
            let children = self.waiting().children_of(id);
            part.released
                .extend(children.into_iter().map(|child| (index, child)));
        }
    }

    /// [`DatabaseCore::receive`]'s work for an entry of this database that is not a root,
    /// in a write turn under the write lock, into `received`; nothing is announced and the
    /// waiting children of what it takes are left to the caller.
    fn take_received(&self, entry: Entry, received: &mut Received) -> Result<()> {
        let id = entry.id();
        if self.backend.entry_meta(&id)?.is_some() {
            received.duplicate = true;
            return Ok(());
        }
        if self.waiting().contains(&id) {
            if self.waits_for_parents(&id)? {
                received.pending = true;
                return Ok(());
            }
            // Held for want of room (the tips may have been merged since), or its parents
            // came and its release was kept out: tried again.
            self.waiting().remove(&id);
        }
        let missing = self.missing_parents(&entry.content().parents)?;
        let mut no_room = false;
        if !missing.is_empty() {
            self.waiting().add(entry, missing, Instant::now())?;
            // A parent held for want of room may come in with it.
            self.take_with_held(id, received)?;
        } else {
            match self.validate_and_apply(&entry, Room::Bounded)? {
                Outcome::Applied => received.applied.push(id),
                Outcome::Discarded => received.discarded.push(id),
                Outcome::NoRoom => {
                    no_room = true;
                    // Refused, and held (if there is room for that): a child merging the
                    // tips back may take it in.
                    let _ = self.waiting().hold(entry, Instant::now());
                    self.take_with_held(id, received)?;
                }
            }
        }
        let came_in = received.applied.contains(&id) || received.discarded.contains(&id);
        if !came_in {
            if no_room {
                return Err(self.no_room(&id));
            }
            received.pending = true;
        }
        Ok(())
    }

    /// After a turn's storage commit failed (`e`), under the write lock: what the turn took
    /// is looked up in storage. An entry given that is neither stored nor waiting fails
    /// with `e`; an entry it released or took in that is not stored is rejected with `e`,
    /// and is not announced. Nothing lasting: a peer sends them again.
    fn keep_what_was_stored(&self, turn: &mut Turn, outcomes: &mut [Result<Received>], e: &Error) {
        let lost = || Error::Storage(format!("the entry was not stored: {e}"));
        let stored = |id: &EntryId| (self.backend.entry_db(id)).is_ok_and(|db| db == Some(self.id));
        let gone: Vec<(usize, EntryId, bool)> = (turn.taken.iter())
            .filter(|(_, id, _)| !stored(id))
            .copied()
            .collect();
        for (index, id, given) in &gone {
            match outcomes.get_mut(*index) {
                Some(outcome @ Ok(_)) if *given && !self.waiting().contains(id) => {
                    *outcome = Err(lost());
                }
                Some(Ok(_)) if *given => {} // still waiting for its parents
                Some(Ok(received)) => {
                    received.applied.retain(|taken| taken != id);
                    received.discarded.retain(|taken| taken != id);
                    received.rejected.push((*id, lost()));
                }
                _ => {}
            }
        }
        turn.applied
            .retain(|id| !gone.iter().any(|(_, lost, _)| lost == id));
    }
}

/// Rejects each waiting child of `released` with `e`, in the outcome that released it (it
/// stays waiting, and is taken once a peer sends it again).
fn reject_untried(
    released: VecDeque<(usize, EntryId)>,
    outcomes: &mut [Result<Received>],
    e: &Error,
) {
    for (index, child) in released {
        if let Some(Ok(received)) = outcomes.get_mut(index) {
            received.rejected.push((child, e.clone()));
        }
    }
}

/// Whether `entry` can take long to work out alone, so is taken outside any write turn
/// (which would hold the storage's writer, on SQLite every database of the file, all the
/// while): a path write (it reads its key's whole value, up to 16 MiB: 1.8 s for a 15 MB
/// array on this project's host), a settings change (a lowering can make the whole state be
/// worked out again), more operations than a commit plans in its turn, or many bytes.
fn is_costly(entry: &Entry) -> bool {
    let ops = &entry.content().ops;
    ops.contains_key(SETTINGS_STORE)
        || entry.bytes().len() > COSTLY_BYTES
        || op_count(ops) > MAX_OPS_MADE_IN_TURN
        || (ops.values().flat_map(|store| store.values())).any(|op| matches!(op, Op::Patch(_)))
}
