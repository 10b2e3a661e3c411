//! Sharing by ticket: a holder hands out a [`Ticket`]; whoever has it asks the holder for
//! access (an access request, signed by the asking user's key); an admin there approves
//! (which grants the key) or rejects it, or an auto-approve policy grants it; then the
//! asker joins (pulls the database). No public key has to be carried by hand.

use std::sync::{Arc, Weak};

use super::net::client::PeerConnection;
use super::requests::{is_request_id, request_id, PolicyRecord, RequestRecord, RequestState};
use super::ticket::Ticket;
use super::wire::{self, Envelope, Request, WINDOW_MS};
use super::{address, PeerAddr, Requester, SyncEngine};
use crate::crypto::{random, KeyRing, PublicKey};
use crate::database::{now_ms, Permission};
use crate::entry::EntryId;
use crate::error::{quoted, Error, Result};

impl SyncEngine {
    /// A ticket for database `db` (held here): its id, where this engine listens (the
    /// addresses given to [`SyncEngine::advertise`], else the listeners' own, wildcard
    /// ones excepted) and this device's id, signed by the device.
    /// [`Error::NotFound`] if the database is not here; [`Error::InvalidArgument`] if
    /// there is no address to put in it (not listening, or only on a wildcard address and
    /// nothing advertised).
    pub fn share(&self, db: &EntryId) -> Result<String> {
        if !self.registry()?.exists(db)? {
            return Err(Error::NotFound(format!("database {db} is not here")));
        }
        let mut addresses = self
            .advertised
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if addresses.is_empty() {
            for listener in self
                .listeners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
            {
                if !listener.is_wildcard() {
                    addresses.push(listener.addr());
                }
            }
        }
        if addresses.is_empty() {
            return Err(Error::invalid(
                "no address to put in a ticket: listen first, or advertise the address peers reach (when listening on all interfaces)",
            ));
        }
        addresses.truncate(super::ticket::MAX_ADDRESSES);
        Ticket {
            db: *db,
            device: self.device_key,
            addresses,
        }
        .to_text(&*self.device)
    }

    /// Adds `addr` (`host:port`, as peers reach this device: a public name, a forwarded
    /// port) to the addresses tickets name, in place of the listeners' own. At most
    /// [`super::ticket::MAX_ADDRESSES`].
    pub fn advertise(&self, addr: &str) -> Result<()> {
        address::check_host_port(addr, false)?;
        let mut advertised = self.advertised.lock().unwrap_or_else(|p| p.into_inner());
        if !advertised.iter().any(|a| a == addr) {
            if advertised.len() >= super::ticket::MAX_ADDRESSES {
                return Err(Error::invalid(format!(
                    "at most {} addresses are advertised",
                    super::ticket::MAX_ADDRESSES
                )));
            }
            advertised.push(addr.to_string());
        }
        Ok(())
    }

    /// Asks the device a ticket names for `permission` on its database, as `requester`
    /// (signed by the user's default key; the holder learns that key and this device's id).
    /// Returns the request's id. Tries the ticket's addresses in turn.
    pub fn request_access(
        &self,
        requester: &dyn Requester,
        ticket: &str,
        permission: Permission,
    ) -> Result<String> {
        let ticket = Ticket::parse(ticket)?;
        let keys = requester.key_ring();
        let key = *keys
            .public_keys()?
            .first()
            .ok_or_else(|| Error::Internal("a key ring holds no key".into()))?;
        self.asked_for(&ticket.db, requester)?;
        self.at_any(&ticket, |engine, peer| {
            let limits = engine.limits();
            let mut connection =
                PeerConnection::new(engine.runtime(), peer, &engine.identity, &limits);
            let server = connection.peer()?;
            let mut env = Envelope {
                db: ticket.db,
                key,
                server,
                timestamp_ms: now_ms(),
                nonce: random::bytes()?,
                request: Request::Ask { permission },
                signature: [0; 64],
            };
            env.signature = keys.sign(&key, &env.signed_part())?;
            let largest = env.request.largest_reply();
            let answered = wire::decode_text(&connection.post("db", env.encode(), largest)?)?;
            // The id is the request's, the same on both sides: whatever else a peer
            // answers is refused, not handed to the application (which may show it).
            let expected = request_id(&ticket.db, &key);
            if answered != expected {
                return Err(Error::Network(format!(
                    "the peer answered the access request with an id that is not its own \
                     ({}, expected {expected})",
                    quoted(&answered)
                )));
            }
            Ok(expected)
        })
    }

    /// Pulls the database a ticket names from the device it names, as `requester`, and adds
    /// it to the user's databases: once an admin there approved the user's request (before:
    /// [`Error::PermissionDenied`]).
    pub fn join(&self, requester: &dyn Requester, ticket: &str) -> Result<()> {
        let ticket = Ticket::parse(ticket)?;
        self.state.want(&ticket.db)?;
        self.at_any(&ticket, |engine, peer| {
            engine.sync_db_at(requester, peer, &ticket.db)?;
            requester.keep(&ticket.db)
        })
    }

    /// Runs `ask` on each of the ticket's addresses until one answers; a refusal (anything
    /// but a network failure) ends it at once.
    fn at_any<T>(
        &self,
        ticket: &Ticket,
        ask: impl Fn(&SyncEngine, &PeerAddr) -> Result<T>,
    ) -> Result<T> {
        let mut last = None;
        for peer in ticket.peers() {
            match ask(self, &peer) {
                Err(e @ Error::Network(_)) => last = Some(e),
                done => return done,
            }
        }
        Err(last.unwrap_or_else(|| Error::invalid("the ticket names no address")))
    }

    /// The access requests waiting for an admin, on the databases where one of `admin`'s
    /// keys is admin; one whose key already holds the permission asked is no longer one.
    pub fn access_requests(&self, admin: &dyn Requester) -> Result<Vec<RequestRecord>> {
        let keys = admin.key_ring();
        keys.ensure_usable()?;
        let mut mine = Vec::new();
        for request in self.requests.all()? {
            if request.state == RequestState::Pending
                && self.admin_key(&*keys, &request.db)?.is_some()
                && !self.settled(&request)?
            {
                mine.push(request);
            }
        }
        Ok(mine)
    }

    /// Whether pending `request` needs no approval any more: its key holds the permission
    /// asked, or more (granted otherwise, or by an approval stopped between its grant and
    /// removing the request, as by a crash); its record is then removed, as an approval
    /// does.
    fn settled(&self, request: &RequestRecord) -> Result<bool> {
        if !self.holds(&request.db, &request.key, request.permission)? {
            return Ok(false);
        }
        self.requests.delete(&request.id)?;
        Ok(true)
    }

    /// Whether `key` holds `permission` or more on `db`, by a grant that took effect (one
    /// made by a discarded change holds nothing).
    fn holds(&self, db: &EntryId, key: &PublicKey, permission: Permission) -> Result<bool> {
        let held = self.registry()?.core(*db).effective_permission_of(key)?;
        Ok(held.is_some_and(|p| p >= permission))
    }

    /// Approves request `id`: grants its key the permission asked, signed by `admin`'s key
    /// that is admin of the database. [`Error::NotFound`] unless it is pending on a
    /// database `admin` administers.
    pub fn approve(&self, admin: &dyn Requester, id: &str) -> Result<()> {
        let keys = admin.key_ring();
        let (request, admin_key) = self.pending_for(&*keys, id)?;
        self.grant(&request, keys, admin_key)?;
        self.requests.delete(id)
    }

    /// Rejects request `id`: its key's further requests on that database are refused until
    /// the rejection expires. [`Error::NotFound`] unless it is pending on a database
    /// `admin` administers.
    pub fn reject(&self, admin: &dyn Requester, id: &str) -> Result<()> {
        let (mut request, _) = self.pending_for(&*admin.key_ring(), id)?;
        request.state = RequestState::Rejected;
        request.requested_at = now_ms();
        self.requests.put(&request, &self.limits())
    }

    /// Sets the auto-approve policy of `db`: requests for at most `permission` are granted
    /// as they arrive, signed by `admin`'s admin key, while a session of that user is
    /// logged in here with sync enabled (requests arriving otherwise wait, and are granted
    /// when that user next logs in). A key `db` revoked is never granted by a policy: its
    /// request waits for an admin. `None` removes the policy. [`Error::PermissionDenied`]
    /// unless one of `admin`'s keys is admin of `db`.
    pub fn auto_approve(
        &self,
        admin: &dyn Requester,
        db: &EntryId,
        permission: Option<Permission>,
    ) -> Result<()> {
        let keys = admin.key_ring();
        keys.ensure_usable()?;
        let admin_key = self.admin_key(&*keys, db)?.ok_or_else(|| {
            Error::PermissionDenied("only an admin of the database sets its policy".into())
        })?;
        let policy = permission.map(|permission| PolicyRecord {
            permission,
            admin: admin_key,
        });
        self.requests.set_policy(db, policy.as_ref())?;
        self.register_approver(&keys)?;
        self.approve_waiting()
    }

    /// Remembers `keys` (a session) as able to sign the grants of auto-approve policies
    /// set by its keys, while it lasts.
    pub(super) fn register_approver(&self, keys: &Arc<dyn KeyRing>) -> Result<()> {
        let mut approvers = self.approvers.lock().unwrap_or_else(|p| p.into_inner());
        approvers.retain(|(_, ring)| ring.upgrade().is_some_and(|r| r.ensure_usable().is_ok()));
        for key in keys.public_keys()? {
            approvers.push((key, Arc::downgrade(keys)));
        }
        Ok(())
    }

    /// Grants the pending requests that a policy covers and a session at hand can sign.
    pub(super) fn approve_waiting(&self) -> Result<()> {
        let policies = self.requests.policies()?;
        for request in self.requests.all()? {
            if request.state != RequestState::Pending {
                continue;
            }
            let Some((_, policy)) = policies.iter().find(|(db, _)| *db == request.db) else {
                continue;
            };
            // One that cannot be checked now (its database gone, a storage error) waits, as
            // one whose grant fails does: a login never fails for it.
            if self.policy_covers(policy, &request).unwrap_or(false) {
                if let Some(keys) = self.approver(&policy.admin) {
                    if self.grant(&request, keys, policy.admin).is_ok() {
                        self.requests.delete(&request.id)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether `policy` grants `request` by itself: one for at most its permission, from a
    /// key the database never granted, or one whose grant is in effect (asking for more).
    /// A key with a grant not in effect, revoked (or granted only by a change that was
    /// discarded), waits for an admin.
    fn policy_covers(&self, policy: &PolicyRecord, request: &RequestRecord) -> Result<bool> {
        if request.permission > policy.permission {
            return Ok(false);
        }
        let core = self.registry()?.core(request.db);
        if core.current_settings()?.grant_of(&request.key).is_none() {
            return Ok(true);
        }
        Ok(core.effective_permission_of(&request.key)?.is_some())
    }

    /// Takes an access request that arrived from device `peer` (the listener's side).
    /// Returns its id; grants it at once when a policy allows and its admin's session is
    /// at hand, and when the key already holds the permission asked, stores nothing.
    pub(super) fn take_request(
        &self,
        peer: &PublicKey,
        env: &Envelope,
        permission: Permission,
    ) -> Result<String> {
        if env.timestamp_ms.abs_diff(now_ms()) > WINDOW_MS {
            return Err(Error::PermissionDenied(
                "request timestamp is outside the accepted window".into(),
            ));
        }
        if !self.registry()?.exists(&env.db)? {
            return Err(Error::PermissionDenied(
                "this key has no permission on that database".into(),
            ));
        }
        let id = request_id(&env.db, &env.key);
        if self.holds(&env.db, &env.key, permission)? {
            return Ok(id);
        }
        let changes = match self.requests.get(&id)? {
            Some(kept) => match kept.change_to(permission, now_ms())? {
                Some(changes) => changes,
                None => return Ok(id), // already waiting: nothing to write again
            },
            None => 0,
        };
        let request = RequestRecord {
            id: id.clone(),
            db: env.db,
            key: env.key,
            permission,
            device: *peer,
            requested_at: now_ms(),
            state: RequestState::Pending,
            changes,
        };
        if let Some(policy) = self.requests.policy(&env.db)? {
            if self.policy_covers(&policy, &request)? {
                if let Some(keys) = self.approver(&policy.admin) {
                    if self.grant(&request, keys, policy.admin).is_ok() {
                        return Ok(id);
                    }
                }
            }
        }
        self.requests.put(&request, &self.limits())?;
        Ok(id)
    }

    /// The pending request `id` and the key of `keys` that is admin of its database
    /// ([`Error::NotFound`] for one whose key already holds the permission asked).
    fn pending_for(&self, keys: &dyn KeyRing, id: &str) -> Result<(RequestRecord, PublicKey)> {
        keys.ensure_usable()?;
        if !is_request_id(id) {
            return Err(Error::invalid(format!(
                "{} is not an access request id (\"req-\" and 16 lower-case hex digits)",
                quoted(id)
            )));
        }
        let not_found = || Error::NotFound(format!("no pending access request {id} for this user"));
        let request = self
            .requests
            .get(id)?
            .filter(|r| r.state == RequestState::Pending)
            .ok_or_else(not_found)?;
        let admin_key = self.admin_key(keys, &request.db)?.ok_or_else(not_found)?;
        if self.settled(&request)? {
            return Err(not_found());
        }
        Ok((request, admin_key))
    }

    /// Grants `request`, signed by `admin_key` (held by `keys`), unless its key already
    /// holds the permission.
    fn grant(
        &self,
        request: &RequestRecord,
        keys: Arc<dyn KeyRing>,
        admin_key: PublicKey,
    ) -> Result<()> {
        let db = self.registry()?.open(request.db, keys, admin_key);
        let held = db.permission_of(&request.key)?;
        if held.is_none_or(|p| p < request.permission) {
            db.grant(&request.key, request.permission)?;
        }
        Ok(())
    }

    /// A key of `keys` that is admin of `db` here, if any.
    fn admin_key(&self, keys: &dyn KeyRing, db: &EntryId) -> Result<Option<PublicKey>> {
        let registry = self.registry()?;
        if !registry.exists(db)? {
            return Ok(None);
        }
        let best = registry.core(*db).best_key(&keys.public_keys()?)?;
        Ok(best
            .filter(|(_, p)| *p == Permission::Admin)
            .map(|(key, _)| key))
    }

    /// The live session holding `admin`, registered by [`SyncEngine::register_approver`].
    fn approver(&self, admin: &PublicKey) -> Option<Arc<dyn KeyRing>> {
        self.approvers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(key, _)| key == admin)
            .find_map(|(_, ring)| ring.upgrade().filter(|r| r.ensure_usable().is_ok()))
    }
}

/// Sessions that can sign auto-approvals: each key with the session holding it.
pub(super) type Approvers = Vec<(PublicKey, Weak<dyn KeyRing>)>;
