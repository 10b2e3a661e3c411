//! What a listener does with each request: bytes of a well-formed, bounded body in, bytes
//! of the reply out (or an error, which the listener sends as an [`super::wire::ErrorReply`]).
//! Synchronous: they read and write storage; the listener runs them on its bounded pool.

use std::sync::Arc;

use super::wire::{self, Envelope, IdsPage, Request};
use super::SyncEngine;
use crate::crypto::PublicKey;
use crate::database::settings::auth_key;
use crate::database::{now_ms, DatabaseCore, Permission, Registry, SETTINGS_STORE};
use crate::entry::{Checked, Checking, Entry, EntryId};
use crate::error::{Error, Result, Status};

/// The endpoints of the sync protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A signed request on one database.
    Db,
    /// A signed long poll for one database's next change ([`Request::Watch`]); the
    /// listener holds it without a handler thread (see [`admit_watch`]).
    Watch,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 2] = [Endpoint::Db, Endpoint::Watch];

    /// The endpoint's name in its path (`/mnemo/sync/v1/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Db => "db",
            Endpoint::Watch => "watch",
        }
    }

    /// The endpoint at HTTP path `path`, if any.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        let name = path.strip_prefix("/mnemo/sync/v1/")?;
        Endpoint::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// Handles one request body for `endpoint`, from the client that proved device key
/// `peer` in the TLS handshake. A watch is answered at once with the current position
/// here (the listener waits for changes itself, through [`admit_watch`]). The body is let
/// go once its request is decoded and its signature checked.
pub fn dispatch(
    sync: &SyncEngine,
    peer: &PublicKey,
    endpoint: Endpoint,
    body: Vec<u8>,
) -> Result<Vec<u8>> {
    match endpoint {
        Endpoint::Db => database(sync, peer, body),
        Endpoint::Watch => {
            let watch = admit_watch(sync, &body)?;
            let position = *watch.position.borrow();
            sync.end_watch(watch);
            Ok(wire::encode_position(position))
        }
    }
}

/// A watch admitted: the database, the position the client has, and the server's
/// position as it changes.
pub struct Watch {
    /// The database watched.
    pub db: EntryId,
    /// The position the client asked to go past.
    pub after: u64,
    /// The server's storage position of the database, updated after every change.
    pub position: tokio::sync::watch::Receiver<u64>,
}

/// Checks a watch request (signed, fresh, by a key that may read the database) and starts
/// following the database's position. The caller waits on [`Watch::position`].
pub fn admit_watch(sync: &SyncEngine, body: &[u8]) -> Result<Watch> {
    let env = authenticated(sync, body)?;
    let Request::Watch { after } = env.request else {
        return Err(Error::invalid(
            "the watch endpoint takes watch requests only",
        ));
    };
    let registry = serving(sync)?;
    if !registry.exists(&env.db)? {
        return Err(no_access());
    }
    let core = readable(sync, &registry, &env)?;
    Ok(Watch {
        db: env.db,
        after,
        position: sync.watchers.follow(&core, registry.backend().clone())?,
    })
}

/// The instance's databases, or [`Error::Network`] once the instance behind this server is
/// closed (a sync reference keeps its listeners): the peer asked nothing wrong, and is told
/// this device serves nothing now, not that its request was bad.
fn serving(sync: &SyncEngine) -> Result<Arc<Registry>> {
    sync.registry()
        .map_err(|_| Error::Network("the instance behind this device's listener is closed".into()))
}

/// The refusal of a database this instance does not hold and no local user asked for.
fn not_asked_for() -> Error {
    Error::PermissionDenied(
        "this instance takes a database it does not hold only when a local user asked for it"
            .into(),
    )
}

fn no_access() -> Error {
    Error::PermissionDenied("this key has no permission on that database".into())
}

/// A request envelope addressed to this server and signed by the key it names.
fn authenticated(sync: &SyncEngine, body: &[u8]) -> Result<Envelope> {
    let env = Envelope::decode(body)?;
    if env.server != sync.device_key {
        return Err(Error::PermissionDenied(
            "the request is addressed to another server".into(),
        ));
    }
    env.key
        .verify_parts(&Envelope::signed_parts(body), &env.signature)
        .map_err(|_| Error::PermissionDenied("the request signature does not verify".into()))?;
    Ok(env)
}

/// The database of `env` (held here), if its key may at least read it; the request's nonce
/// is remembered only then, so strangers cannot fill the replay memory.
fn readable(sync: &SyncEngine, registry: &Registry, env: &Envelope) -> Result<Arc<DatabaseCore>> {
    let core = registry.core(env.db);
    if core
        .effective_permission_of(&env.key)?
        .is_none_or(|p| p < Permission::Read)
    {
        return Err(no_access());
    }
    fresh(sync, env)?;
    Ok(core)
}

/// Accepts `env` once within its window (see [`super::replay`]), remembering its nonce in
/// the replay memory of the size the limits set now.
fn fresh(sync: &SyncEngine, env: &Envelope) -> Result<()> {
    let capacity = sync.limits().max_remembered_requests;
    sync.replay
        .check(&env.key, env.timestamp_ms, &env.nonce, now_ms(), capacity)
}

/// A signed request on a database: addressed to this server, signed by its key, and from a
/// key with at least read (or a first push that makes the key's own database here, or an
/// access request, which needs no permission).
fn database(sync: &SyncEngine, peer: &PublicKey, body: Vec<u8>) -> Result<Vec<u8>> {
    let registry = serving(sync)?;
    let mut env = authenticated(sync, &body)?;
    // A push's entries are in `env` now. They are taken out of it (the rest is still
    // needed) to move on to be checked, not be copied.
    drop(body);
    let request = std::mem::replace(&mut env.request, Request::Tips);
    if let Request::Ask { permission } = request {
        return Ok(wire::encode_text(
            &sync.take_request(peer, &env, permission)?,
        ));
    }
    if !registry.exists(&env.db)? {
        // A database new to this server: it holds nothing of it, so saying so (no tips,
        // no entries held) reveals no entry. It may arrive by push, root first, from a key
        // its root grants, but only if a local user asked for it: nobody else can make this
        // instance store a database.
        return match request {
            Request::Tips => Ok(wire::encode_ids(&[])),
            Request::Have(ids) => Ok(wire::encode_flags(&vec![false; ids.len()])),
            // A client about to push the database here: the proofs of the keys it names,
            // if a local user asked for it (else refused, as its push would be). Answered
            // without remembering the request: it changes nothing, and strangers may not
            // fill the replay memory.
            Request::Holders { salt, hashes } => match sync.state.wants(&env.db)? {
                true => proofs_of(sync, &salt, &hashes),
                false => Err(not_asked_for()),
            },
            Request::Push(entries) => {
                if !sync.state.wants(&env.db)? || !admits_new_database(&env, &entries) {
                    return Err(not_asked_for());
                }
                fresh(sync, &env)?;
                Ok(push(&registry, env.db, entries))
            }
            _ => Err(no_access()),
        };
    }
    let core = readable(sync, &registry, &env)?;
    let backend = core.backend();
    match request {
        // At most a message's ids (a database has no more, unless one stored before its
        // tips were bounded): the client then takes the reply for a difference and syncs.
        Request::Tips => Ok(wire::encode_ids(
            &backend
                .tips(&env.db)?
                .into_iter()
                .map(|(id, _)| id)
                .take(wire::MAX_IDS)
                .collect::<Vec<_>>(),
        )),
        Request::Ids { after, limit } => {
            let limit = (limit as usize).clamp(1, wire::MAX_IDS);
            let page = backend.entries_after(&env.db, after, limit)?;
            let next = page.last().map_or(after, |(seq, _)| *seq);
            let more = page.len() == limit;
            Ok(IdsPage {
                ids: page.into_iter().map(|(_, id)| id).collect(),
                next,
                more,
            }
            .encode())
        }
        Request::Get(ids) => {
            let mut entries = Vec::new();
            let mut size = 0;
            for id in &ids {
                if size >= wire::BATCH_BYTES || entries.len() >= wire::MAX_ENTRIES {
                    break;
                }
                // Only entries of this database: a grant on one never reveals another (the
                // row's database, read unchecked here, is checked with the entry's bytes).
                if backend.entry_db(id)? == Some(env.db) {
                    let bytes = backend
                        .get_entry(id)?
                        .ok_or_else(|| Error::Storage(format!("entry {id} vanished")))?;
                    size += bytes.len();
                    entries.push(bytes);
                }
            }
            Ok(wire::encode_entries(&entries))
        }
        Request::Have(ids) => {
            let flags = ids
                .iter()
                .map(|id| core.knows(id))
                .collect::<Result<Vec<_>>>()?;
            Ok(wire::encode_flags(&flags))
        }
        Request::Push(entries) => Ok(push(&registry, env.db, entries)),
        Request::Holders { salt, hashes } => proofs_of(sync, &salt, &hashes),
        // Access requests were taken above; watches have an endpoint of their own.
        Request::Watch { .. } | Request::Ask { .. } => {
            Err(Error::invalid("watch requests go to the watch endpoint"))
        }
    }
}

/// The reply to a holders request: this device's proofs by the keys named.
fn proofs_of(sync: &SyncEngine, salt: &[u8; 16], hashes: &[[u8; 32]]) -> Result<Vec<u8>> {
    Ok(wire::encode_proofs(&sync.holders.of(salt, hashes)?))
}

fn admits_new_database(env: &Envelope, entries: &[Vec<u8>]) -> bool {
    let Some(root) = entries.first().and_then(|b| Entry::decode(b).ok()) else {
        return false;
    };
    let settings = root.content().ops.get(SETTINGS_STORE);
    let grant = settings.and_then(|s| s.get(&auth_key(&env.key)));
    root.id() == env.db && root.content().db.is_none() && grant.is_some()
}

/// Pushed entries are checked in parts of this many, each part's signatures on other
/// threads while the previous part's entries are stored.
const PUSH_PART: usize = 64;

/// Takes pushed entries: each is verified (signature, then permission) before it becomes
/// visible; invalid ones are dropped. Replies one status per entry: OK when taken (applied
/// or waiting for its parents), else why not. Entries are taken in the order sent, a part
/// ([`PUSH_PART`]) at a time sharing storage commits ([`DatabaseCore::receive_all`]); at
/// most two parts are being checked at a time.
fn push(registry: &Registry, db: EntryId, entries: Vec<Vec<u8>>) -> Vec<u8> {
    let core = registry.core(db);
    let mut statuses: Vec<Status> = Vec::with_capacity(entries.len());
    let mut entries = entries.into_iter();
    // Parts taken from the request's entries (moved, not copied).
    let mut next_part = move || {
        let part: Vec<Vec<u8>> = entries.by_ref().take(PUSH_PART).collect();
        (!part.is_empty()).then_some(part)
    };
    std::thread::scope(|scope| {
        let mut parts = std::iter::from_fn(&mut next_part).map(|part| Checking::start(scope, part));
        let mut next = parts.next();
        while let Some(checking) = next {
            next = parts.next(); // started before this part is taken
            statuses.extend(take_part(&core, checking.finish()));
        }
    });
    wire::encode_statuses(&statuses)
}

/// The statuses of a pushed part's entries, checked (`checked`), taken by `core`.
fn take_part(core: &DatabaseCore, checked: Vec<Checked>) -> Vec<Status> {
    let mut statuses = vec![Status::Ok; checked.len()];
    let mut entries = Vec::with_capacity(checked.len());
    let mut places = Vec::with_capacity(checked.len());
    for (place, checked) in checked.into_iter().enumerate() {
        match checked {
            Ok(entry) if entry.database_id() == core.id() => {
                entries.push(entry);
                places.push(place);
            }
            Ok(_) => statuses[place] = Status::Corrupt,
            Err(refused) => statuses[place] = refused.error.status(),
        }
    }
    for (place, taken) in places.into_iter().zip(core.receive_all(entries)) {
        statuses[place] = match taken {
            Ok(received) => (received.rejected.first()).map_or(Status::Ok, |(_, e)| e.status()),
            Err(e) => e.status(),
        };
    }
    statuses
}
