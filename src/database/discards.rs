//! Which entries take effect. An entry that is valid (its author had the permission in the
//! settings its parents saw) is stored, but it has no effect on state (it is discarded,
//! and marked so in storage) when, in everything this replica holds:
//!
//! - its author was lowered below what it needed by an effective settings change that had
//!   not seen it and that it had not seen (a concurrent revocation or demotion), or
//! - its author's permission came from a settings change that is itself discarded.
//!
//! The [`DiscardIndex`] answers this for an arriving entry in O(the changes involved).
//! When a lowering change arrives that other stored entries had not seen, what takes
//! effect is worked out again from all of the database's entries ([`recompute`]), and the
//! state is replaced: the effect of the entries it discards is undone.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::authority::{self, Closure, Level, SettingsEntry};
use super::documents::{self, DerivedCells};
use super::settings::{load_closure, visible_from};
use crate::backend::{Backend, Cell, EntryMeta, StateWrite, Version};
use crate::crypto::PublicKey;
use crate::entry::{Entry, EntryId};
use crate::error::{Error, Result};

/// What the settings of one database decide across all of its history.
#[derive(Default)]
pub(crate) struct DiscardIndex {
    /// Settings entries that do not take effect.
    discarded_settings: HashSet<EntryId>,
    /// Effective lowerings, by the key lowered.
    lowerings: HashMap<PublicKey, Vec<Lowering>>,
    /// What [`DiscardIndex::discards_arriving`] worked out for the settings tips it was last
    /// asked about, so that commits on unchanged settings load their closure once.
    arriving: Option<ArrivingMemo>,
}

/// The settings closure some settings tips see, as [`DiscardIndex::discards_arriving`]
/// needs it.
struct ArrivingMemo {
    visible: Vec<EntryId>,
    /// `None` when the closure holds no discarded settings change (no grant in it is
    /// discounted); else its entries, and each author's level in it found so far.
    discounted: Option<(Vec<SettingsEntry>, HashMap<PublicKey, Level>)>,
}

/// An effective settings change that lowered a key, as the index keeps it.
struct Lowering {
    /// The change.
    change: EntryId,
    /// Its height.
    height: u64,
    /// Its author.
    by: PublicKey,
    /// The key's new level.
    level: Level,
}

/// Most authors' levels an [`ArrivingMemo`] keeps (past it, it starts again).
const MEMO_AUTHORS: usize = 1024;

impl DiscardIndex {
    /// The index of database `db` as stored.
    pub(crate) fn load(backend: &dyn Backend, db: &EntryId) -> Result<DiscardIndex> {
        let entries = load_closure(backend, &settings_tips(backend, db)?)?;
        let closure = Closure::new(&entries);
        Ok(Self::from_resolution(
            &entries,
            &authority::resolve(&closure),
        ))
    }

    fn from_resolution(entries: &[SettingsEntry], resolution: &authority::Resolution) -> Self {
        let mut index = DiscardIndex::default();
        for (entry, effective) in entries.iter().zip(&resolution.effective) {
            if !effective {
                index.discarded_settings.insert(entry.id);
            }
        }
        for (i, key, level) in &resolution.lowerings {
            index.lowerings.entry(*key).or_default().push(Lowering {
                change: entries[*i].id,
                height: entries[*i].height,
                by: entries[*i].author,
                level: *level,
            });
        }
        index
    }

    /// Records that the effective change `entry` lowered `key` to `level`.
    pub(crate) fn add_lowering(&mut self, key: PublicKey, entry: &Entry, level: Level) {
        let content = entry.content();
        self.lowerings.entry(key).or_default().push(Lowering {
            change: entry.id(),
            height: content.height,
            by: content.author,
            level,
        });
        self.arriving = None;
    }

    /// Whether settings entry `entry` is discarded.
    pub(crate) fn discards_settings(&self, entry: &EntryId) -> bool {
        self.discarded_settings.contains(entry)
    }

    /// The authors of the stored lowerings of `author` below `need` that an entry not stored
    /// yet, whose parents see the settings tips `visible`, has not seen: each discards it (a
    /// stored change cannot have seen an entry not stored yet).
    pub(crate) fn lowered_unseen_by(
        &self,
        backend: &dyn Backend,
        author: &PublicKey,
        need: Level,
        visible: &[EntryId],
    ) -> Result<Vec<PublicKey>> {
        let mut by = Vec::new();
        for lowering in self.lowerings.get(author).into_iter().flatten() {
            if lowering.level < need && !sees(backend, visible, &lowering.change, lowering.height)?
            {
                by.push(lowering.by);
            }
        }
        Ok(by)
    }

    /// Whether the settings tips `visible` see a settings change that does not take effect:
    /// what an entry made on them may do, and whom it lowers, may then be otherwise with
    /// everything than as its branch saw them.
    pub(crate) fn sees_discarded(
        &mut self,
        backend: &dyn Backend,
        visible: &[EntryId],
    ) -> Result<bool> {
        if self.discarded_settings.is_empty() {
            return Ok(false);
        }
        if self.arriving.as_ref().is_none_or(|m| m.visible != visible) {
            let entries = load_closure(backend, visible)?;
            let discarded = &self.discarded_settings;
            let sees_discarded = entries.iter().any(|e| discarded.contains(&e.id));
            self.arriving = Some(ArrivingMemo {
                visible: visible.to_vec(),
                discounted: sees_discarded.then(|| (entries, HashMap::new())),
            });
        }
        Ok(self
            .arriving
            .as_ref()
            .is_some_and(|m| m.discounted.is_some()))
    }

    /// Records that settings entry `entry` was discarded on arrival.
    pub(crate) fn add_discarded_settings(&mut self, entry: EntryId) {
        self.discarded_settings.insert(entry);
        self.arriving = None;
    }

    /// Whether an entry not stored yet, by `author`, needing `need`, whose parents see the
    /// settings tips `visible`, is discarded by what is stored (see the module's rules).
    /// The settings closure is loaded once per settings tips asked about (see
    /// [`ArrivingMemo`]).
    pub(crate) fn discards_arriving(
        &mut self,
        backend: &dyn Backend,
        author: &PublicKey,
        need: Level,
        visible: &[EntryId],
    ) -> Result<bool> {
        if !self
            .lowered_unseen_by(backend, author, need, visible)?
            .is_empty()
        {
            return Ok(true);
        }
        // Permission from a discarded settings change it sees.
        if !self.sees_discarded(backend, visible)? {
            return Ok(false);
        }
        let discarded = &self.discarded_settings;
        let memo = self.arriving.as_mut().expect("set above");
        let Some((entries, levels)) = &mut memo.discounted else {
            return Ok(false);
        };
        let level = match levels.get(author) {
            Some(level) => *level,
            None => {
                let closure = Closure::new(entries);
                let seen = closure.seen_from(visible);
                let counts = |j: usize| !discarded.contains(&entries[j].id);
                let level = closure
                    .grant_among(author, &seen, &counts)
                    .and_then(|g| g.level());
                if levels.len() >= MEMO_AUTHORS {
                    levels.clear();
                }
                levels.insert(*author, level);
                level
            }
        };
        Ok(level < need)
    }
}

/// Whether settings entry `target` (at `height`) is one of the settings tips `visible` or
/// an ancestor of them. Walks the settings links down to `height` only.
fn sees(backend: &dyn Backend, visible: &[EntryId], target: &EntryId, height: u64) -> Result<bool> {
    let mut stack: Vec<EntryId> = visible.to_vec();
    let mut seen: HashSet<EntryId> = HashSet::new();
    while let Some(id) = stack.pop() {
        if id == *target {
            return Ok(true);
        }
        if !seen.insert(id) {
            continue;
        }
        let meta = stored_meta(backend, &id)?;
        if meta.height > height {
            stack.extend(meta.settings_visible);
        }
    }
    Ok(false)
}

fn stored_meta(backend: &dyn Backend, id: &EntryId) -> Result<EntryMeta> {
    backend
        .entry_meta(id)?
        .ok_or_else(|| Error::Corrupt(format!("entry {id} is referenced but not stored")))
}

/// The settings tips of database `db`: the newest settings entries its tips see.
fn settings_tips(backend: &dyn Backend, db: &EntryId) -> Result<Vec<EntryId>> {
    let tips = backend
        .tips(db)?
        .into_iter()
        .map(|(id, _)| Ok((id, stored_meta(backend, &id)?)))
        .collect::<Result<Vec<_>>>()?;
    visible_from(backend, &tips)
}

/// What a database's entries make of it, worked out from all of them.
pub(crate) struct Derived {
    /// The discard index.
    pub index: DiscardIndex,
    /// Every cell: (store, key) → the winning write of the entries in effect.
    pub cells: BTreeMap<(String, String), Cell>,
    /// The entries stored with no effect, sorted.
    pub discarded: Vec<EntryId>,
    /// The entries no other entry names as a parent, sorted.
    pub tips: Vec<EntryId>,
}

/// Works out, from every entry of database `db`, which entries take effect and what state
/// they make. With `verify`, also checks every entry as if it came from elsewhere: its id
/// is the hash of its bytes, its signature verifies, and what is stored beside it (its
/// database, height, settings flag) agrees with it ([`crate::Error::Corrupt`] otherwise).
/// Takes the entries stored when it starts (a writer faster than the pass would otherwise
/// keep it going for ever). Costs a pass over all of those entries, time and memory in
/// proportion.
pub(crate) fn derive(backend: &dyn Backend, db: &EntryId, verify: bool) -> Result<Derived> {
    let end = backend.last_position(db)?;
    let settings = load_closure(backend, &settings_tips(backend, db)?)?;
    let closure = Closure::new(&settings);
    let resolution = authority::resolve(&closure);
    let index = DiscardIndex::from_resolution(&settings, &resolution);

    // Every entry, parents first, with what the checks need.
    let mut parents: HashMap<EntryId, Vec<EntryId>> = HashMap::new();
    let mut metas: HashMap<EntryId, EntryMeta> = HashMap::new();
    let mut all: Vec<(EntryId, EntryMeta, Entry)> = Vec::new();
    let mut after = 0;
    while after < end {
        let page = backend.entries_after(db, after, 4096)?;
        let Some((last, _)) = page.last().copied() else {
            break;
        };
        for (_, id) in page
            .into_iter()
            .take_while(|(position, _)| *position <= end)
        {
            let meta = stored_meta(backend, &id)?;
            let bytes = backend
                .get_entry(&id)?
                .ok_or_else(|| Error::Corrupt(format!("entry {id} is listed but not stored")))?;
            let entry = if verify {
                let entry = Entry::decode(&bytes)?;
                check_stored(backend, &id, &meta, &entry, db, &metas)?;
                entry
            } else {
                Entry::decode_stored(&bytes)?
            };
            parents.insert(id, entry.content().parents.clone());
            metas.insert(id, meta.clone());
            all.push((id, meta, entry));
        }
        after = last;
    }

    // The full ancestry of each lowering change, worked out when first needed.
    let mut ancestry: HashMap<EntryId, HashSet<EntryId>> = HashMap::new();
    let mut cells = DerivedCells::new();
    let mut discarded: Vec<EntryId> = Vec::new();
    for (id, meta, entry) in &all {
        let content = entry.content();
        let effective = if content.db.is_none() {
            true
        } else if meta.changes_settings {
            !index.discarded_settings.contains(id)
        } else {
            let need = authority::needed(false);
            let seen = closure.seen_from(&meta.settings_visible);
            let counts = |j: usize| resolution.effective[j];
            let permitted = closure
                .grant_among(&content.author, &seen, &counts)
                .and_then(|g| g.level())
                >= need;
            let lowered = index
                .lowerings
                .get(&content.author)
                .into_iter()
                .flatten()
                .filter(|lowering| lowering.level < need)
                .any(|Lowering { change, .. }| {
                    let change_seen = closure.index_of(change).is_some_and(|i| seen.has(i));
                    let sees_it = ancestry
                        .entry(*change)
                        .or_insert_with(|| ancestors_of(&parents, change))
                        .contains(id);
                    !change_seen && !sees_it
                });
            permitted && !lowered
        };
        if !effective {
            discarded.push(*id);
            continue;
        }
        let writes = documents::writes_of(&cells, *id, meta.height, &content.ops)?;
        documents::apply_to(&mut cells, &writes)?;
    }
    discarded.sort();
    let named: HashSet<&EntryId> = parents.values().flatten().collect();
    let mut tips: Vec<EntryId> = all
        .iter()
        .map(|(id, _, _)| *id)
        .filter(|id| !named.contains(id))
        .collect();
    tips.sort();
    Ok(Derived {
        index,
        cells,
        discarded,
        tips,
    })
}

/// Fails with [`crate::Error::Corrupt`] unless what is stored beside entry `id` agrees with
/// the entry: its id, database, height (one more than its highest parent, each stored
/// before it, with the stored facts in `checked`, each checked so already), settings flag,
/// and the settings entries it sees (those its parents make).
fn check_stored(
    backend: &dyn Backend,
    id: &EntryId,
    meta: &EntryMeta,
    entry: &Entry,
    db: &EntryId,
    checked: &HashMap<EntryId, EntryMeta>,
) -> Result<()> {
    let content = entry.content();
    let corrupt = |what: &str| Err(Error::Corrupt(format!("stored entry {id}: {what}")));
    if entry.id() != *id {
        return corrupt("its bytes do not hash to its id");
    }
    if entry.database_id() != *db || meta.db != *db {
        return corrupt("it belongs to another database");
    }
    let expected = content
        .parents
        .iter()
        .map(|p| checked.get(p).map(|m| m.height + 1))
        .try_fold(0, |max, h| h.map(|h| max.max(h)));
    match expected {
        None => return corrupt("a parent is missing or stored after it"),
        Some(h) if h != content.height || meta.height != h => {
            return corrupt("its height is not one more than its highest parent's")
        }
        Some(_) => {}
    }
    if meta.changes_settings != content.ops.contains_key(super::SETTINGS_STORE) {
        return corrupt("its recorded settings flag differs from the entry's");
    }
    let parents: Vec<(EntryId, EntryMeta)> = content
        .parents
        .iter()
        .map(|p| (*p, checked[p].clone()))
        .collect();
    let mut recorded = meta.settings_visible.clone();
    recorded.sort();
    if recorded != visible_from(backend, &parents)? {
        return corrupt("the settings entries it is recorded to see are not its parents'");
    }
    Ok(())
}

/// Works out again, from every entry of database `db`, which entries take effect, and
/// replaces the stored state (cells and discarded marks) with the result, if the database's
/// version is still `expected` (read before anything else). Run only when a lowering change
/// arrives that other stored entries had not seen. Returns the new index and version, or
/// `None` when another process wrote meanwhile (nothing was replaced).
pub(crate) fn recompute(
    backend: &dyn Backend,
    db: &EntryId,
    expected: Version,
) -> Result<Option<(DiscardIndex, Version)>> {
    let derived = derive(backend, db, false)?;
    let cells: Vec<(&str, &str, Cell)> = derived
        .cells
        .iter()
        .map(|((store, key), cell)| (store.as_str(), key.as_str(), cell.clone()))
        .collect();
    let replaced = backend.replace_state(
        db,
        &StateWrite {
            cells,
            discarded: &derived.discarded,
            expected,
        },
    )?;
    Ok(replaced.map(|version| (derived.index, version)))
}

/// Every entry reachable from `from` through parents (not `from` itself).
fn ancestors_of(parents: &HashMap<EntryId, Vec<EntryId>>, from: &EntryId) -> HashSet<EntryId> {
    let mut seen = HashSet::new();
    let mut stack: Vec<EntryId> = parents.get(from).cloned().unwrap_or_default();
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            stack.extend(parents.get(&id).into_iter().flatten().copied());
        }
    }
    seen
}
