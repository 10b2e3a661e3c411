//! A database's `_settings`: its name and who may do what, as visible to an entry.
//!
//! Every stored entry records the settings tips visible from its parents
//! ([`EntryMeta::settings_visible`]). The settings an entry is checked against are the
//! last-writer-wins merge of the `_settings` operations of every settings-changing entry
//! reachable from those tips through the same links: a small sub-DAG, cached by tip set,
//! so validation cost does not grow with the database's history.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::authority::{self, SettingsEntry};
use crate::backend::{not_stored, Backend, EntryMeta};
use crate::crypto::PublicKey;
use crate::entry::{Entry, EntryId, Op};
use crate::error::{quoted, Error, Result};

/// Prefix of the settings keys that hold auth entries: `auth/<public key>`.
const AUTH_PREFIX: &str = "auth/";

/// The settings key of `key`'s auth entry: `auth/<public key>`.
pub fn auth_key(key: &PublicKey) -> String {
    format!("{AUTH_PREFIX}{}", key.to_text())
}

/// The key an auth entry's settings key (`auth/<public key>`) names; `None` for other
/// settings keys. The key's text was checked ([`check_ops`]) before its entry was applied,
/// so it is decoded here, not checked again.
pub(crate) fn auth_holder(name: &str) -> Option<PublicKey> {
    PublicKey::from_checked_text(name.strip_prefix(AUTH_PREFIX)?)
}

/// What a key may do in a database. Ordered: `Read < Write < Admin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Read the database (and sync it).
    Read,
    /// Read and write its stores.
    Write,
    /// Write, and change its settings (grant and revoke).
    Admin,
}

impl Permission {
    /// Parses "admin", "write" or "read".
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "admin" => Ok(Permission::Admin),
            "write" => Ok(Permission::Write),
            "read" => Ok(Permission::Read),
            _ => Err(Error::invalid(format!(
                "a permission is admin, write or read, not {}",
                quoted(text)
            ))),
        }
    }

    /// The text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Admin => "admin",
            Permission::Write => "write",
            Permission::Read => "read",
        }
    }
}

/// One key's auth entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Its permission.
    pub permission: Permission,
    /// False once revoked.
    pub active: bool,
    /// For an admin grant, its seniority: 0 for the database's creator, and an admin may
    /// change only keys whose priority is greater (junior) than its own. `None` otherwise.
    pub priority: Option<u32>,
}

impl Grant {
    /// An active grant of `permission` (with `priority` for admin grants).
    pub fn active(permission: Permission, priority: Option<u32>) -> Grant {
        Grant {
            permission,
            active: true,
            priority,
        }
    }

    /// What the grant lets its key do now: its permission if active.
    pub fn level(&self) -> Option<Permission> {
        self.active.then_some(self.permission)
    }

    /// The same grant, revoked.
    pub fn revoked(self) -> Grant {
        Grant {
            active: false,
            ..self
        }
    }
}

/// The stored form of a [`Grant`]: `{"permission":"admin","priority":1,"status":"active"}`.
/// Its fields are in key order, so serde writes it in canonical form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthRecord {
    permission: Permission,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    priority: Option<u32>,
    status: GrantStatus,
}

#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum GrantStatus {
    Active,
    Revoked,
}

/// The canonical JSON of one auth entry.
pub fn auth_value(grant: Grant) -> String {
    let status = if grant.active {
        GrantStatus::Active
    } else {
        GrantStatus::Revoked
    };
    serde_json::to_string(&AuthRecord {
        permission: grant.permission,
        priority: grant.priority,
        status,
    })
    .expect("an auth record always encodes")
}

/// Parses an auth entry; an admin grant carries a priority and no other grant does.
pub(crate) fn parse_auth_value(json: &str) -> Result<Grant> {
    let bad = || Error::Corrupt(format!("malformed auth entry {}", quoted(json)));
    let record: AuthRecord = serde_json::from_str(json).map_err(|_| bad())?;
    if (record.permission == Permission::Admin) != record.priority.is_some() {
        return Err(bad());
    }
    Ok(Grant {
        permission: record.permission,
        active: record.status == GrantStatus::Active,
        priority: record.priority,
    })
}

/// Fails with [`Error::Corrupt`] unless every `_settings` operation is one mnemo understands:
/// `name` (a string), `nonce` (a string) or `auth/<key>` (an auth entry). None may be deleted.
pub fn check_ops(ops: &BTreeMap<String, Op>) -> Result<()> {
    for (key, op) in ops {
        let Op::Set(json) = op else {
            return Err(Error::Corrupt(format!(
                "settings key {} cannot be deleted",
                quoted(key)
            )));
        };
        if let Some(pubkey) = key.strip_prefix(AUTH_PREFIX) {
            PublicKey::parse(pubkey)
                .map_err(|_| Error::Corrupt(format!("bad key in settings {}", quoted(key))))?;
            parse_auth_value(json)?;
        } else if key == "name" || key == "nonce" {
            if !json.starts_with('"') {
                return Err(Error::Corrupt(format!(
                    "settings {} is a string",
                    quoted(key)
                )));
            }
        } else {
            return Err(Error::Corrupt(format!(
                "unknown settings key {}",
                quoted(key)
            )));
        }
    }
    Ok(())
}

/// The merged settings at some set of settings tips.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// key → the winning write. Keys and values are shared, so deriving the settings of a
    /// new settings entry from its parents' copies pointers, not text.
    cells: HashMap<Arc<str>, SettingsCell>,
    /// The grants among `cells`, parsed when they are put there: a permission check (every
    /// commit, every sync request) is then one lookup, not a key formatted and JSON parsed.
    grants: HashMap<PublicKey, Grant>,
}

#[derive(Clone, Debug)]
struct SettingsCell {
    height: u64,
    entry: EntryId,
    json: Arc<str>,
}

impl Settings {
    /// The auth entry of `key`, if any (active or revoked).
    pub fn grant_of(&self, key: &PublicKey) -> Option<Grant> {
        self.grants.get(key).copied()
    }

    /// The permission of `key` if it is active.
    pub fn permission_of(&self, key: &PublicKey) -> Option<Permission> {
        self.grant_of(key).and_then(|g| g.level())
    }

    /// The keys whose active grant is `at_least` or higher, in no particular order.
    pub fn keys_at_least(&self, at_least: Permission) -> impl Iterator<Item = &PublicKey> {
        (self.grants.iter())
            .filter(move |(_, grant)| grant.level().is_some_and(|level| level >= at_least))
            .map(|(key, _)| key)
    }

    /// How many settings keys are set (the size of this state).
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// True when nothing is set (the state before a root entry).
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// These settings with the `_settings` operations of entry `entry` (at `height`) merged:
    /// the settings a settings-changing entry passes on to its children.
    pub fn with_entry(&self, height: u64, entry: EntryId, ops: &BTreeMap<String, Op>) -> Settings {
        let mut next = self.clone();
        next.merge(height, entry, ops);
        next
    }

    fn merge(&mut self, height: u64, entry: EntryId, ops: &BTreeMap<String, Op>) {
        for (key, op) in ops {
            if let Op::Set(json) = op {
                let newer = self
                    .cells
                    .get(key.as_str())
                    .is_none_or(|c| (height, entry) > (c.height, c.entry));
                if newer {
                    self.put(
                        Arc::from(key.as_str()),
                        SettingsCell {
                            height,
                            entry,
                            json: Arc::from(json.as_str()),
                        },
                    );
                }
            }
        }
    }

    /// Sets `key` to `cell`, and the grant it holds if it is an auth key (a value that does
    /// not parse as a grant leaves the key none, as reading it would).
    fn put(&mut self, key: Arc<str>, cell: SettingsCell) {
        if let Some(holder) = auth_holder(&key) {
            match parse_auth_value(&cell.json) {
                Ok(grant) => self.grants.insert(holder, grant),
                Err(_) => self.grants.remove(&holder),
            };
        }
        self.cells.insert(key, cell);
    }

    /// The settings at settings tips `tips`: every settings entry reachable from them (the
    /// tips included) is read back from storage (verified when stored, so not verified
    /// again), `authority::resolve` decides which take effect, and those are merged. For
    /// cold caches and for several tips (concurrent branches, decided together); a new
    /// entry on top of a cached state extends it instead ([`Settings::with_entry`]).
    pub fn evaluate(backend: &dyn Backend, tips: &[EntryId]) -> Result<Settings> {
        let entries = load_closure(backend, tips)?;
        let resolution = authority::resolve(&authority::Closure::new(&entries));
        let mut settings = Settings::default();
        for (entry, effective) in entries.iter().zip(&resolution.effective) {
            if *effective {
                settings.merge(entry.height, entry.id, &entry.ops);
            }
        }
        Ok(settings)
    }
}

/// Every settings entry reachable from `tips` (the tips included), in topological order
/// (height, then id), each with its parents in the settings sub-DAG as indices.
pub(crate) fn load_closure(backend: &dyn Backend, tips: &[EntryId]) -> Result<Vec<SettingsEntry>> {
    let mut found = (backend.settings_closure(tips)?.into_iter())
        .map(|(id, meta, bytes)| Ok((meta.height, id, meta, Entry::decode_stored(&bytes)?)))
        .collect::<Result<Vec<(u64, EntryId, EntryMeta, Entry)>>>()?;
    found.sort_by_key(|(height, id, _, _)| (*height, *id));
    found.dedup_by_key(|(height, id, _, _)| (*height, *id)); // each once, whatever the backend
    let index: HashMap<EntryId, usize> = found
        .iter()
        .enumerate()
        .map(|(i, (_, id, _, _))| (*id, i))
        .collect();
    // Settings entries an entry sees are its ancestors, so lower: stored links that say
    // otherwise (a changed file) would make a cycle of the order the closure relies on.
    for (height, id, meta, _) in &found {
        for seen_by_it in &meta.settings_visible {
            // Each is in the closure: a backend that left one out answered wrongly.
            let Some(&at) = index.get(seen_by_it) else {
                return Err(not_stored(seen_by_it));
            };
            if found[at].0 >= *height {
                return Err(Error::Corrupt(format!(
                    "stored entry {id}: a settings entry it sees is not below it"
                )));
            }
        }
    }
    Ok(found
        .into_iter()
        .map(|(height, id, meta, entry)| SettingsEntry {
            id,
            height,
            author: entry.content().author,
            parents: meta.settings_visible.iter().map(|p| index[p]).collect(),
            ops: entry
                .content()
                .ops
                .get(super::SETTINGS_STORE)
                .cloned()
                .unwrap_or_default(),
        })
        .collect())
}

fn stored_meta(backend: &dyn Backend, id: &EntryId) -> Result<EntryMeta> {
    backend.entry_meta(id)?.ok_or_else(|| not_stored(id))
}

/// The settings tips that a child of entries with these metadata sees, sorted: the union of
/// what each parent passes on (itself if it changed settings, else what it saw), without
/// any tip that is an ancestor of another.
///
/// A parent's own set is already minimal, so only a union larger than every parent's share
/// is reduced; then each walk back from a candidate stops below the lowest candidate (an
/// ancestor is always lower than its descendants).
pub fn visible_from(
    backend: &dyn Backend,
    parents: &[(EntryId, EntryMeta)],
) -> Result<Vec<EntryId>> {
    let shares: Vec<Vec<EntryId>> = parents
        .iter()
        .map(|(id, meta)| {
            if meta.changes_settings {
                vec![*id]
            } else {
                meta.settings_visible.clone()
            }
        })
        .collect();
    let mut set: BTreeSet<EntryId> = shares.iter().flatten().copied().collect();
    if set.len() <= 1 || shares.iter().any(|share| share.len() == set.len()) {
        return Ok(set.into_iter().collect());
    }
    let candidates: Vec<(EntryId, EntryMeta)> = set
        .iter()
        .map(|id| Ok((*id, stored_meta(backend, id)?)))
        .collect::<Result<_>>()?;
    let floor = candidates.iter().map(|(_, m)| m.height).min().unwrap_or(0);
    for (tip, meta) in &candidates {
        if !set.contains(tip) {
            continue;
        }
        let mut queue = meta.settings_visible.clone();
        let mut seen = BTreeSet::new();
        while let Some(ancestor) = queue.pop() {
            if !seen.insert(ancestor) {
                continue;
            }
            set.remove(&ancestor);
            let above = stored_meta(backend, &ancestor)?;
            if above.height > floor {
                queue.extend(above.settings_visible);
            }
        }
    }
    Ok(set.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;

    fn ops(pairs: &[(&str, &str)]) -> BTreeMap<String, Op> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Op::Set(v.to_string())))
            .collect()
    }

    fn id(n: u8) -> EntryId {
        EntryId::from_bytes([n; 32])
    }

    #[test]
    fn grants_follow_the_winning_auth_value() {
        let key = PrivateKey::generate().unwrap().public_key();
        let write = Grant::active(Permission::Write, None);
        let revoked = Grant {
            active: false,
            ..write
        };
        let first = Settings::default().with_entry(
            1,
            id(1),
            &ops(&[(&auth_key(&key), &auth_value(write))]),
        );
        assert_eq!(first.grant_of(&key), Some(write));
        assert_eq!(first.permission_of(&key), Some(Permission::Write));

        // A newer write wins, an older one does not.
        let newer = first.with_entry(2, id(2), &ops(&[(&auth_key(&key), &auth_value(revoked))]));
        assert_eq!(newer.grant_of(&key), Some(revoked));
        assert_eq!(newer.permission_of(&key), None);
        let read = auth_value(Grant::active(Permission::Read, None));
        let older = newer.with_entry(1, id(0), &ops(&[(&auth_key(&key), &read)]));
        assert_eq!(older.grant_of(&key), Some(revoked));

        // A winning value that is not a grant leaves the key without one.
        let garbled = newer.with_entry(3, id(3), &ops(&[(&auth_key(&key), "\"admin\"")]));
        assert_eq!(garbled.grant_of(&key), None);
        // Only a key's canonical text form names it (here: padded, which the parse of a
        // settings key refuses; such a cell can only come from storage).
        let padded = format!("{}=", auth_key(&key));
        let odd = Settings::default().with_entry(1, id(1), &ops(&[(&padded, &auth_value(write))]));
        assert_eq!(odd.grant_of(&key), None);
        assert_eq!(odd.len(), 1);
    }
}
