//! Access requests as a listener keeps them, in `_sync` (so they survive restarts): pending
//! until an admin approves or rejects them, rejected ones kept so that the same key cannot
//! ask again at once, both forgotten after [`REQUEST_LIFETIME_MS`]. Bounded per database
//! and in all (the engine's access-request [`Limits`]). Also the auto-approve policies
//! admins set per database.

use serde::{Deserialize, Serialize};

use super::Limits;
use crate::crypto::PublicKey;
use crate::database::{now_ms, Database, Permission, Table};
use crate::entry::EntryId;
use crate::error::{Error, Result};

/// How long a request (pending or rejected) is kept: 7 days.
pub const REQUEST_LIFETIME_MS: u64 = 7 * 24 * 3600 * 1000;
/// Least time between two changes of one key's pending request (another permission asked):
/// each is a commit of `_sync`, whose history is kept.
pub const REQUEST_CHANGE_EVERY_MS: u64 = 60 * 1000;
/// Most changes of one pending request's permission: a request is written at most this many
/// times more before an admin answers it or it expires, so the requests a database may hold
/// bound what strangers add to `_sync`'s history.
pub const MAX_REQUEST_CHANGES: u32 = 3;

/// Requests, by id.
const REQUESTS: Table<RequestRecord> = Table::new("requests", "access request");
/// Auto-approve policies, by database id.
const POLICIES: Table<PolicyRecord> = Table::new("policies", "auto-approve policy");

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for an admin.
    Pending,
    /// Refused by an admin: the key gets PERMISSION_DENIED if it asks again.
    Rejected,
}

/// One access request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The request's id (the same for every request of one key on one database).
    pub id: String,
    /// The database asked for.
    pub db: EntryId,
    /// The key that asked, and would be granted.
    pub key: PublicKey,
    /// The permission asked for.
    pub permission: Permission,
    /// The device the request came from (proven in TLS).
    pub device: PublicKey,
    /// When it was made (or last renewed), milliseconds since the Unix epoch.
    pub requested_at: u64,
    /// How many times its key asked for another permission while it waited (at most
    /// [`MAX_REQUEST_CHANGES`]).
    #[serde(default)]
    pub changes: u32,
    /// Pending or rejected.
    pub state: RequestState,
}

impl RequestRecord {
    /// Whether this request's key may ask for `permission` instead, at `now_ms`: `None` if it
    /// asks for what it waits for already (nothing to write), else how many changes the
    /// request then counts. [`Error::PermissionDenied`] once an admin rejected it;
    /// [`Error::Busy`] less than [`REQUEST_CHANGE_EVERY_MS`] after it was made or last
    /// changed, or after [`MAX_REQUEST_CHANGES`] of them.
    pub(super) fn change_to(&self, permission: Permission, now_ms: u64) -> Result<Option<u32>> {
        if self.state == RequestState::Rejected {
            return Err(Error::PermissionDenied(
                "an admin rejected this key's request for this database".into(),
            ));
        }
        if self.permission == permission {
            return Ok(None);
        }
        if now_ms.saturating_sub(self.requested_at) < REQUEST_CHANGE_EVERY_MS {
            return Err(Error::Busy(
                "this key's request was made or changed less than a minute ago; retry later".into(),
            ));
        }
        if self.changes >= MAX_REQUEST_CHANGES {
            return Err(Error::Busy(format!(
                "this key's request changed its permission {MAX_REQUEST_CHANGES} times; it waits \
                 as it is until an admin answers it or it expires"
            )));
        }
        Ok(Some(self.changes + 1))
    }
}

/// An auto-approve policy: requests for at most `permission` on a database are granted,
/// signed by `admin`, as soon as that key's session is at hand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// The highest permission granted without asking.
    pub permission: Permission,
    /// The admin key that set it and signs the grants.
    pub admin: PublicKey,
}

/// The id of `key`'s request on `db`: `req-` and 16 hex digits of a hash of both.
pub fn request_id(db: &EntryId, key: &PublicKey) -> String {
    let hash =
        EntryId::of_bytes(&[&b"mnemo/request/v1\0"[..], db.as_bytes(), key.as_bytes()].concat());
    let hex: String = hash.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("req-{hex}")
}

/// Whether `id` has the form [`request_id`] gives: "req-" and 16 lower-case hex digits.
pub fn is_request_id(id: &str) -> bool {
    id.strip_prefix("req-").is_some_and(|hex| {
        hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The requests and policies of one instance, in its `_sync` database.
pub(super) struct Requests {
    db: Database,
}

impl Requests {
    pub(super) fn new(db: Database) -> Self {
        Requests { db }
    }

    /// Every request still within its lifetime (expired ones are deleted on the way).
    pub(super) fn all(&self) -> Result<Vec<RequestRecord>> {
        let now = now_ms();
        let mut live = Vec::new();
        for (id, record) in REQUESTS.all(&self.db)? {
            if now.saturating_sub(record.requested_at) > REQUEST_LIFETIME_MS {
                REQUESTS.delete(&self.db, &id)?;
            } else {
                live.push(record);
            }
        }
        Ok(live)
    }

    /// The request `id`, if kept and within its lifetime.
    pub(super) fn get(&self, id: &str) -> Result<Option<RequestRecord>> {
        Ok(REQUESTS
            .get(&self.db, id)?
            .filter(|r| now_ms().saturating_sub(r.requested_at) <= REQUEST_LIFETIME_MS))
    }

    /// Records `record` (replacing the same key's request on the same database), within
    /// `limits`' access-request bounds: when its database or the instance holds as many
    /// as it may, the oldest
    /// rejected request there is forgotten to make room (so rejecting requests frees their
    /// places); [`Error::Busy`] when all are pending.
    pub(super) fn put(&self, record: &RequestRecord, limits: &Limits) -> Result<()> {
        let all = self.all()?;
        if !all.iter().any(|r| r.id == record.id) {
            let here = all.iter().filter(|r| r.db == record.db).count();
            let crowd: Vec<&RequestRecord> = if here >= limits.max_access_requests_per_database {
                all.iter().filter(|r| r.db == record.db).collect()
            } else if all.len() >= limits.max_access_requests {
                all.iter().collect()
            } else {
                Vec::new()
            };
            if !crowd.is_empty() {
                let oldest_rejected = crowd
                    .into_iter()
                    .filter(|r| r.state == RequestState::Rejected)
                    .min_by_key(|r| r.requested_at)
                    .ok_or_else(|| {
                        Error::Busy("too many access requests wait here; try again later".into())
                    })?;
                REQUESTS.delete(&self.db, &oldest_rejected.id)?;
            }
        }
        REQUESTS.put(&self.db, &record.id, record).map(drop)
    }

    /// Forgets request `id`, if it is still recorded: an approval, a listing that found
    /// it settled and a policy may each remove it at the same moment.
    pub(super) fn delete(&self, id: &str) -> Result<()> {
        REQUESTS.delete_if_any(&self.db, id).map(drop)
    }

    /// The auto-approve policy of `db`, if any.
    pub(super) fn policy(&self, db: &EntryId) -> Result<Option<PolicyRecord>> {
        POLICIES.get(&self.db, &db.to_text())
    }

    /// Every auto-approve policy, by database.
    pub(super) fn policies(&self) -> Result<Vec<(EntryId, PolicyRecord)>> {
        POLICIES
            .all(&self.db)?
            .into_iter()
            .map(|(db, p)| Ok((EntryId::parse(&db)?, p)))
            .collect()
    }

    /// Sets (or with `None`, removes) the auto-approve policy of `db`.
    pub(super) fn set_policy(&self, db: &EntryId, policy: Option<&PolicyRecord>) -> Result<()> {
        match policy {
            Some(p) => POLICIES.put(&self.db, &db.to_text(), p).map(drop),
            None => POLICIES.delete_if_any(&self.db, &db.to_text()).map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;

    #[test]
    fn request_ids_have_the_form_checked() {
        let key = PrivateKey::generate().unwrap().public_key();
        let id = request_id(&EntryId::of_bytes(b"db"), &key);
        assert!(is_request_id(&id), "{id}");
        for bad in [
            "",
            "req-",
            &id.to_uppercase(),
            &id[..id.len() - 1],
            &format!("{id}0"),
        ] {
            assert!(!is_request_id(bad), "{bad}");
        }
    }

    fn pending(permission: Permission, requested_at: u64, changes: u32) -> RequestRecord {
        let key = PrivateKey::generate().unwrap().public_key();
        RequestRecord {
            id: "req-test".into(),
            db: EntryId::of_bytes(b"a database"),
            key,
            permission,
            device: key,
            requested_at,
            state: RequestState::Pending,
            changes,
        }
    }

    #[test]
    fn a_pending_request_changes_its_permission_a_bounded_number_of_times() {
        let start = 1_000_000_000;
        let mut request = pending(Permission::Read, start, 0);
        let mut now = start;
        for made in 1..=MAX_REQUEST_CHANGES {
            let same = request.permission;
            assert_eq!(request.change_to(same, now).unwrap(), None);
            let other = match same {
                Permission::Read => Permission::Write,
                _ => Permission::Read,
            };
            let too_soon = request.change_to(other, now + REQUEST_CHANGE_EVERY_MS - 1);
            assert!(matches!(too_soon, Err(Error::Busy(_))), "{too_soon:?}");
            now += REQUEST_CHANGE_EVERY_MS;
            assert_eq!(request.change_to(other, now).unwrap(), Some(made));
            request = pending(other, now, made);
        }
        let refused = request.change_to(Permission::Admin, now + REQUEST_LIFETIME_MS);
        assert!(
            matches!(&refused, Err(Error::Busy(m)) if m.contains("3 times")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_rejected_request_is_never_changed() {
        let mut request = pending(Permission::Read, 0, 0);
        request.state = RequestState::Rejected;
        let far = 10 * REQUEST_CHANGE_EVERY_MS;
        for permission in [Permission::Read, Permission::Write] {
            let refused = request.change_to(permission, far);
            assert!(matches!(refused, Err(Error::PermissionDenied(_))));
        }
    }

    #[test]
    fn records_kept_before_changes_were_counted_read_as_none_made() {
        let record = pending(Permission::Read, 7, 2);
        let mut json = serde_json::to_value(&record).unwrap();
        json.as_object_mut().unwrap().remove("changes");
        let read: RequestRecord = serde_json::from_value(json).unwrap();
        assert_eq!(read.changes, 0);
    }
}
