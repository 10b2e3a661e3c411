//! Who may change a database's settings, and how concurrent changes resolve. The rules,
//! with examples, are in docs/security-model.md:
//!
//! - Admins are ordered by priority: the creator is 0; an admin may grant admin only with a
//!   greater (junior) priority than its own, and may change only keys that are not admins
//!   senior to or as senior as itself. No admin changes its own grant. So the creator can
//!   never be demoted or revoked, and every replica always keeps an admin.
//! - A change that lowers a key (demotes or revokes it) discards, wherever it is known, the
//!   effect of every entry by that key that needed more than the new level and that the
//!   change had not seen (concurrent with it). Discards cascade: changes are decided after
//!   the changes they were made on, then by seniority, so a senior's revocation of a junior
//!   admin usually discards that admin's concurrent changes, including its own revocations,
//!   before those are considered; where it comes later, [`resolve`] decides again in rounds.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use super::settings::{auth_holder, auth_key, parse_auth_value, Grant, Permission};
use crate::crypto::PublicKey;
use crate::entry::{EntryId, Op};
use crate::error::{Error, Result};

/// What a key may do, as an order: no permission < read < write < admin.
pub type Level = Option<Permission>;

/// The level an entry's author needs: admin for a change of settings, else write.
pub fn needed(changes_settings: bool) -> Level {
    Some(if changes_settings {
        Permission::Admin
    } else {
        Permission::Write
    })
}

/// The auth changes in a settings entry's operations (checked by `settings::check_ops`):
/// `(key, new grant)`.
pub fn auth_changes(ops: &BTreeMap<String, Op>) -> Vec<(PublicKey, Grant)> {
    ops.iter()
        .filter_map(|(name, op)| {
            let key = auth_holder(name)?;
            let Op::Set(json) = op else { return None };
            Some((key, parse_auth_value(json).ok()?))
        })
        .collect()
}

/// Fails with [`Error::PermissionDenied`] unless `author` may make the settings change
/// `ops` where the grants are those `grant_of` reports (the settings its parents see).
pub fn check_change(
    author: &PublicKey,
    ops: &BTreeMap<String, Op>,
    grant_of: impl Fn(&PublicKey) -> Option<Grant>,
) -> Result<()> {
    let mine = grant_of(author)
        .filter(|g| g.level() == Some(Permission::Admin))
        .ok_or_else(|| Error::PermissionDenied(format!("key {author} is not an admin here")))?;
    let my_priority = mine.priority.unwrap_or(u32::MAX);
    for (key, new) in auth_changes(ops) {
        if key == *author {
            return Err(Error::PermissionDenied(
                "an admin cannot change its own grant".into(),
            ));
        }
        if let Some(theirs) = grant_of(&key).filter(|g| g.level() == Some(Permission::Admin)) {
            if theirs.priority.unwrap_or(u32::MAX) <= my_priority {
                return Err(Error::PermissionDenied(format!(
                    "key {key} is an admin as senior as or more senior than {author}"
                )));
            }
        }
        if new.permission == Permission::Admin && new.priority.unwrap_or(0) <= my_priority {
            return Err(Error::PermissionDenied(format!(
                "an admin of priority {my_priority} grants admin only with a greater priority"
            )));
        }
    }
    Ok(())
}

/// The keys a settings change lowers, with their new level: those whose level after the
/// change is below their level in the settings it was made on (`grant_of`).
pub fn lowered(
    ops: &BTreeMap<String, Op>,
    grant_of: impl Fn(&PublicKey) -> Option<Grant>,
) -> Vec<(PublicKey, Level)> {
    auth_changes(ops)
        .into_iter()
        .filter_map(|(key, new)| {
            let before = grant_of(&key).and_then(|g| g.level());
            (new.level() < before).then_some((key, new.level()))
        })
        .collect()
}

/// One settings entry, as [`resolve`] needs it.
pub struct SettingsEntry {
    /// Its id.
    pub id: EntryId,
    /// Its height.
    pub height: u64,
    /// Its author.
    pub author: PublicKey,
    /// The settings entries its parents see (indices into the list given to [`resolve`]).
    pub parents: Vec<usize>,
    /// Its `_settings` operations.
    pub ops: BTreeMap<String, Op>,
}

/// The outcome of [`resolve`].
pub struct Resolution {
    /// For each entry: whether it takes effect.
    pub effective: Vec<bool>,
    /// The keys lowered by effective entries: `(entry index, key, new level)`.
    pub lowerings: Vec<(usize, PublicKey, Level)>,
}

/// A set of entries as bits, for ancestry.
#[derive(Clone)]
pub struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    /// Whether entry `i` is in the set.
    pub fn has(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    /// Whether the two sets share an entry.
    fn meets(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).any(|(a, b)| a & b != 0)
    }
    fn union(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
}

/// A closed set of settings entries (every ancestor of each is in it), with the ancestry
/// and the writers of each settings key worked out once.
pub struct Closure<'a> {
    entries: &'a [SettingsEntry],
    /// For each entry, its ancestors in the set.
    ancestors: Vec<Bits>,
    /// For each settings key, the entries that set it, in (height, id) order.
    writers: HashMap<&'a str, Vec<usize>>,
    index: HashMap<EntryId, usize>,
}

impl<'a> Closure<'a> {
    /// The closure of `entries`, which must be in topological order (parents first: by
    /// height, then id).
    pub fn new(entries: &'a [SettingsEntry]) -> Self {
        let n = entries.len();
        let mut ancestors: Vec<Bits> = Vec::with_capacity(n);
        let mut writers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let mut bits = Bits::new(n);
            for &p in &entry.parents {
                bits.union(&ancestors[p]);
                bits.set(p);
            }
            ancestors.push(bits);
            for name in entry.ops.keys() {
                writers.entry(name.as_str()).or_default().push(i);
            }
        }
        let index = entries.iter().enumerate().map(|(i, e)| (e.id, i)).collect();
        Closure {
            entries,
            ancestors,
            writers,
            index,
        }
    }

    /// The entries seen from settings tips `tips`: the tips and all their ancestors.
    pub fn seen_from(&self, tips: &[EntryId]) -> Bits {
        let mut bits = Bits::new(self.entries.len());
        for tip in tips {
            if let Some(&i) = self.index.get(tip) {
                bits.union(&self.ancestors[i]);
                bits.set(i);
            }
        }
        bits
    }

    /// The index of entry `id`, if it is in the set.
    pub fn index_of(&self, id: &EntryId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Whether entry `a` is an ancestor of entry `b`.
    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        self.ancestors[b].has(a)
    }

    /// The winning grant of `key` among the entries of `among` that `counts`.
    pub fn grant_among(
        &self,
        key: &PublicKey,
        among: &Bits,
        counts: &dyn Fn(usize) -> bool,
    ) -> Option<Grant> {
        let name = auth_key(key);
        let list = self.writers.get(name.as_str())?;
        list.iter()
            .rev()
            .find(|&&j| among.has(j) && counts(j))
            .and_then(|&j| match self.entries[j].ops.get(&name) {
                Some(Op::Set(json)) => parse_auth_value(json).ok(),
                _ => None,
            })
    }
}

/// Decides which of a closed set of settings entries (every ancestor of each is in the
/// set) take effect, and which keys the effective ones lower. `closure` must be built over
/// entries in topological order.
///
/// Each entry is decided after its parents (its validity and what it lowers depend on which
/// of them take effect); of those ready, in order of their author's seniority (as their own
/// parents saw it), then height and id. Each is effective when its author may make it in
/// the effective part of its ancestry, and no effective entry concurrent with it (neither
/// ancestor nor descendant) lowered its author below admin. A lowering is usually decided
/// before the lowered key's concurrent changes, its author being more senior; but it may
/// wait on its parents, or a concurrent change may have made the key as senior as its
/// lowerer in its own entries' eyes. So everything is decided again, in rounds, until
/// exactly the entries lowered apart by an effective lowering are left out: each round
/// leaves out such an entry ("late") when a lowering of it has no late entry among its
/// ancestors (one that does may not stand once that entry is out), and takes back one
/// left out that no effective lowering reaches any more. One round in the usual case; at
/// most one more than there are entries (then the last round's decisions stand).
pub fn resolve(closure: &Closure<'_>) -> Resolution {
    let n = closure.entries.len();
    let mut left_out = vec![false; n];
    for _ in 0..=n {
        let resolution = resolve_once(closure, &left_out);
        let lowered: Vec<Vec<usize>> = (0..n)
            .map(|i| lowered_apart(closure, &resolution, i))
            .collect();
        let late: Vec<usize> = (0..n)
            .filter(|&i| resolution.effective[i] && !lowered[i].is_empty())
            .collect();
        let unfounded: Vec<usize> = (0..n)
            .filter(|&i| left_out[i] && lowered[i].is_empty())
            .collect();
        if late.is_empty() && unfounded.is_empty() {
            return resolution;
        }
        let mut late_set = Bits::new(n);
        late.iter().for_each(|&i| late_set.set(i));
        let stands = |r: usize| !closure.ancestors[r].meets(&late_set);
        let mut standing: Vec<usize> = (late.iter().copied())
            .filter(|&i| lowered[i].iter().any(|&r| stands(r)))
            .collect();
        if standing.is_empty() {
            standing = late;
        }
        for i in standing {
            left_out[i] = true;
        }
        for i in unfounded {
            left_out[i] = false;
        }
    }
    resolve_once(closure, &left_out)
}

/// The effective entries in `resolution` that lower entry `i`'s author below admin and
/// are concurrent with it (neither ancestor nor descendant).
fn lowered_apart(closure: &Closure<'_>, resolution: &Resolution, i: usize) -> Vec<usize> {
    resolution
        .lowerings
        .iter()
        .filter(|(r, key, level)| {
            *key == closure.entries[i].author
                && *level < Some(Permission::Admin)
                && !closure.is_ancestor(*r, i)
                && !closure.is_ancestor(i, *r)
        })
        .map(|(r, _, _)| *r)
        .collect()
}

/// One round of [`resolve`], the entries marked in `left_out` not taking effect.
fn resolve_once(closure: &Closure<'_>, left_out: &[bool]) -> Resolution {
    let entries = closure.entries;
    let n = entries.len();
    let seniority = |i: usize| -> u32 {
        if entries[i].parents.is_empty() {
            return 0; // the root, which makes its author the first admin
        }
        closure
            .grant_among(&entries[i].author, &closure.ancestors[i], &|_| true)
            .and_then(|g| g.priority)
            .unwrap_or(u32::MAX)
    };
    let mut waiting_on: Vec<usize> = entries.iter().map(|e| e.parents.len()).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, entry) in entries.iter().enumerate() {
        for &p in &entry.parents {
            children[p].push(i);
        }
    }
    let rank = |i: usize| Reverse((seniority(i), entries[i].height, entries[i].id, i));
    let mut ready: BinaryHeap<_> = (0..n).filter(|&i| waiting_on[i] == 0).map(rank).collect();

    let mut effective = vec![false; n];
    let mut lowerings: Vec<(usize, PublicKey, Level)> = Vec::new();
    while let Some(Reverse((_, _, _, i))) = ready.pop() {
        for &child in &children[i] {
            waiting_on[child] -= 1;
            if waiting_on[child] == 0 {
                ready.push(rank(child));
            }
        }
        let entry = &entries[i];
        let seen = &closure.ancestors[i];
        let valid = entry.parents.is_empty() // a root is checked when it is stored
            || check_change(&entry.author, &entry.ops, |k| {
                closure.grant_among(k, seen, &|j| effective[j])
            })
            .is_ok();
        let lowered_concurrently = lowerings.iter().any(|(r, key, level)| {
            *key == entry.author
                && *level < Some(Permission::Admin)
                && !closure.is_ancestor(*r, i)
                && !closure.is_ancestor(i, *r)
        });
        if valid && !lowered_concurrently && !left_out[i] {
            let lowers = lowered(&entry.ops, |k| {
                closure.grant_among(k, seen, &|j| effective[j])
            });
            effective[i] = true;
            lowerings.extend(lowers.into_iter().map(|(key, level)| (i, key, level)));
        }
    }
    Resolution {
        effective,
        lowerings,
    }
}
