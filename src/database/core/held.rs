//! Entries held for want of room, taken in with the children that merge the tips back.
//!
//! A database takes at most [`MAX_PARENTS`] tips, so that one commit can merge them all: an
//! entry from elsewhere that builds on none of them is refused while it has that many. A
//! reader or relay cannot commit, so without more it would refuse such an entry for as long
//! as the tips stay at the bound, even an honest writer's made before it saw the others
//! (a writer flooding side-by-side entries keeps them there), and every entry after it with
//! it. So a refused entry is held (see [`Waiting::hold`]), and when an entry arrives that,
//! with the waiting and held entries it needs, leaves no more tips than the bound (typically
//! a writer's next commit, which merged the tips), they are all taken in together. What each
//! of them is allowed to do is checked first, as if the ones before it were stored, so an
//! entry refused on its own merits takes none of them in.
//!
//! [`Waiting::hold`]: super::Waiting::hold

use std::collections::{HashMap, HashSet};

use super::{DatabaseCore, Outcome, Received, Room};
use crate::backend::EntryMeta;
use crate::database::SETTINGS_STORE;
use crate::entry::{Entry, EntryId, MAX_PARENTS};
use crate::error::Result;

/// Most entries taken in together: what an honest writer made before it saw the tips at the
/// bound, and the commit after, fit many times over.
const MAX_GROUP: usize = 64;

/// Most groups tried for one arrival: the one the arriving entry needs, then those of the
/// entries waiting on it, nearest first.
const MAX_TRIES: usize = 16;

/// Most stored entries looked up for one arrival (each once): a merge has up to
/// [`MAX_PARENTS`] parents, so a few merges' worth; past it, nothing is taken in.
const MAX_LOOKUPS: usize = 4 * MAX_PARENTS;

/// The stored entries' metadata looked up while trying the groups of one arrival.
#[derive(Default)]
struct Lookups {
    found: HashMap<EntryId, Option<EntryMeta>>,
}

impl Lookups {
    /// `Some` of the metadata of `id` if it is stored (`Some(None)` if not); `None` once
    /// [`MAX_LOOKUPS`] entries were looked up: nothing more is tried for this arrival.
    fn meta(&mut self, core: &DatabaseCore, id: &EntryId) -> Result<Option<Option<EntryMeta>>> {
        if let Some(found) = self.found.get(id) {
            return Ok(Some(found.clone()));
        }
        if self.found.len() >= MAX_LOOKUPS {
            return Ok(None);
        }
        let found = core.stored_meta(id)?;
        self.found.insert(*id, found.clone());
        Ok(Some(found))
    }
}

impl DatabaseCore {
    /// Takes in the entries held for want of room that `anchor` (just held, or just made to
    /// wait for its parents) comes with, when such a group leaves the tips within the bound,
    /// noting each in `received`; returns the ids taken. A group is an entry with the waiting
    /// entries it needs: `anchor`'s first, then those of the entries waiting on it. Callers
    /// hold the write lock.
    pub(super) fn take_with_held(
        &self,
        anchor: EntryId,
        received: &mut Received,
    ) -> Result<Vec<EntryId>> {
        if !self.waiting().holds_any() {
            return Ok(Vec::new());
        }
        let mut lookups = Lookups::default();
        for candidate in self.waiting_from(anchor) {
            let Some(group) = self.needed_by(candidate) else {
                continue;
            };
            match self.group_fits(&group, &mut lookups)? {
                Some(true) => return Ok(self.take_in(group, received)),
                Some(false) => {}
                None => break, // looked up enough for one arrival
            }
        }
        Ok(Vec::new())
    }

    /// `anchor` and the entries waiting on it, transitively, nearest first: at most
    /// [`MAX_TRIES`].
    fn waiting_from(&self, anchor: EntryId) -> Vec<EntryId> {
        let waiting = self.waiting();
        let mut found = vec![anchor];
        let mut next = 0;
        while next < found.len() && found.len() < MAX_TRIES {
            for child in waiting.children_waiting_on(&found[next]) {
                if found.len() < MAX_TRIES && waiting.contains(child) && !found.contains(child) {
                    found.push(*child);
                }
            }
            next += 1;
        }
        found
    }

    /// `entry` (waiting) with the waiting entries it descends from, parents first (by
    /// claimed height: [`DatabaseCore::group_fits`] checks it), when one of them is held;
    /// `None` otherwise, or past [`MAX_GROUP`]. Read from memory only: whether the parents
    /// outside the group are stored is for `group_fits`.
    fn needed_by(&self, entry: EntryId) -> Option<Vec<Entry>> {
        let waiting = self.waiting();
        let mut group: HashSet<EntryId> = HashSet::new();
        let mut stack = vec![entry];
        while let Some(id) = stack.pop() {
            if group.contains(&id) {
                continue;
            }
            if group.len() == MAX_GROUP {
                return None;
            }
            let parents = waiting.parents(&id)?;
            stack.extend(parents.iter().filter(|p| waiting.contains(p)).copied());
            group.insert(id);
        }
        if !group.iter().any(|id| waiting.is_held(id)) {
            return None;
        }
        // Only a group that may be taken in is decoded.
        let mut ordered: Vec<Entry> = (group.iter())
            .map(|id| waiting.entry(id))
            .collect::<Option<_>>()?;
        ordered.sort_by_key(|e| (e.content().height, e.id()));
        Some(ordered)
    }

    /// Whether `group` (parents first) may be taken in: every parent stored or before it in
    /// the group, each entry valid as if those before it were stored (no settings change
    /// among them: such a change waits for a writer's commit to merge the tips), and the tips
    /// left no more than the bound. `None` once `lookups` passed [`MAX_LOOKUPS`].
    fn group_fits(&self, group: &[Entry], lookups: &mut Lookups) -> Result<Option<bool>> {
        let mut planned: HashMap<EntryId, EntryMeta> = HashMap::new();
        let mut tips: HashSet<EntryId> = self.tip_ids()?.into_iter().collect();
        for entry in group {
            let content = entry.content();
            if content.ops.contains_key(SETTINGS_STORE) {
                return Ok(Some(false));
            }
            let mut parents = Vec::with_capacity(content.parents.len());
            for p in &content.parents {
                let meta = match planned.get(p) {
                    Some(meta) => meta.clone(),
                    None => match lookups.meta(self, p)? {
                        None => return Ok(None),
                        Some(Some(meta)) => meta,
                        // Not here yet, or claimed heights out of order.
                        Some(None) => return Ok(Some(false)),
                    },
                };
                let Ok(parent) = self.own_parent(*p, meta) else {
                    return Ok(Some(false));
                };
                parents.push(parent);
            }
            let Ok(plan) = self.plan(&parents, &content.author, &content.ops) else {
                return Ok(Some(false));
            };
            if plan.meta.height != content.height {
                return Ok(Some(false));
            }
            planned.insert(entry.id(), plan.meta);
            for p in &content.parents {
                tips.remove(p);
            }
            tips.insert(entry.id());
        }
        Ok(Some(tips.len() <= MAX_PARENTS))
    }

    /// Stores `group`, parents first, each past the bound; stops at a failure (only storage
    /// can fail one now), leaving the rest waiting.
    fn take_in(&self, group: Vec<Entry>, received: &mut Received) -> Vec<EntryId> {
        let mut taken = Vec::new();
        for entry in group {
            let id = entry.id();
            self.waiting().remove(&id);
            match self.validate_and_apply(&entry, Room::Unbounded) {
                Ok(Outcome::Applied) => received.applied.push(id),
                Ok(Outcome::Discarded) => received.discarded.push(id),
                Ok(Outcome::NoRoom) => unreachable!("room is not bounded here"),
                Err(e) => {
                    received.rejected.push((id, e));
                    break;
                }
            }
            taken.push(id);
        }
        taken
    }
}
