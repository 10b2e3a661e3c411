//! Asking a peer: the handshake, and one sync round (pull then push) for a database.

use std::io::Read;
use std::sync::Arc;

use super::state::Direction;
use super::wire::{self, Confirm, Envelope, ErrorReply, Hello, HelloReply, IdsPage, Request};
use super::SyncEngine;
use crate::backend::Backend;
use crate::crypto::{random, KeyRing, PublicKey};
use crate::database::{now_ms, Registry};
use crate::entry::{Entry, EntryId};
use crate::error::{Error, Result};

/// What one round moved.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Entries received from the peer and taken (applied or waiting for parents).
    pub pulled: usize,
    /// Entries the peer took from us.
    pub pushed: usize,
    /// Entries received that failed verification (dropped), with the reason.
    pub rejected: Vec<String>,
    /// How many of our entries the peer refused.
    pub refused_by_peer: usize,
}

impl SyncReport {
    /// The report, or an error naming what was rejected (everything valid was applied).
    pub fn into_result(self) -> Result<SyncReport> {
        if let Some(first) = self.rejected.first() {
            return Err(Error::Corrupt(format!(
                "the peer sent {} entries that failed verification and were dropped (first: {first})",
                self.rejected.len()
            )));
        }
        if self.refused_by_peer > 0 {
            return Err(Error::PermissionDenied(format!(
                "the peer refused {} of our entries (their authors lack permission there?)",
                self.refused_by_peer
            )));
        }
        Ok(self)
    }
}

fn url(addr: &str, endpoint: &str) -> String {
    format!("http://{addr}/mnemo/sync/v1/{endpoint}")
}

impl SyncEngine {
    fn post(&self, addr: &str, endpoint: &str, body: &[u8]) -> Result<Vec<u8>> {
        let mut response = self
            .agent
            .post(&url(addr, endpoint))
            .header("content-type", "application/octet-stream")
            .send(body)
            .map_err(|e| Error::Network(format!("{addr}: {e}")))?;
        let status = response.status().as_u16();
        let mut bytes = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(wire::MAX_MESSAGE as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Network(format!("{addr}: reading the reply: {e}")))?;
        if bytes.len() > wire::MAX_MESSAGE {
            return Err(Error::Network(format!("{addr}: reply too large")));
        }
        if status == 200 {
            return Ok(bytes);
        }
        match ErrorReply::decode(&bytes) {
            Ok(reply) => Err(Error::from_peer(reply.status, reply.message)),
            Err(_) => Err(Error::Network(format!("{addr}: HTTP status {status}"))),
        }
    }

    /// Mutual proof of device keys with the peer at `addr`; remembers and returns its id.
    pub(super) fn handshake(&self, addr: &str) -> Result<PublicKey> {
        let nonce = random::bytes::<32>()?;
        let reply = HelloReply::decode(
            &self.post(
                addr,
                "hello",
                &Hello {
                    client: self.device_key,
                    nonce,
                }
                .encode(),
            )?,
        )?;
        reply
            .server
            .verify(
                &wire::hello_proof(&nonce, &self.device_key, &reply.server),
                &reply.signature,
            )
            .map_err(|_| {
                Error::Network(format!("{addr}: the peer's device proof does not verify"))
            })?;
        let proof = wire::confirm_proof(&reply.nonce, &reply.server, &self.device_key);
        let signature = self.device.sign(&self.device_key, &proof)?;
        self.post(
            addr,
            "confirm",
            &Confirm {
                client: self.device_key,
                nonce: reply.nonce,
                signature,
            }
            .encode(),
        )?;
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.to_string(), reply.server);
        self.state.peer_seen(&reply.server)?;
        Ok(reply.server)
    }

    fn peer_device(&self, addr: &str) -> Result<PublicKey> {
        if let Some(known) = self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
        {
            return Ok(*known);
        }
        self.handshake(addr)
    }

    /// Pulls then pushes database `db` with the peer at `addr`, signing as `key`.
    pub(super) fn round(
        &self,
        keys: &dyn KeyRing,
        key: &PublicKey,
        addr: &str,
        db: &EntryId,
    ) -> Result<SyncReport> {
        let peer = self.peer_device(addr)?;
        let talk = Exchange {
            sync: self,
            registry: self.registry()?,
            keys,
            key: *key,
            addr,
            peer,
            db: *db,
        };
        let mut report = SyncReport::default();
        let theirs = wire::decode_ids(&talk.ask(Request::Tips)?)?;
        let ours: Vec<EntryId> = talk
            .registry
            .backend()
            .tips(db)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        if theirs.is_empty() && ours.is_empty() {
            return Err(Error::NotFound(format!(
                "neither this instance nor the peer holds database {db}"
            )));
        }
        if theirs == ours {
            return Ok(report);
        }
        // A peer without the database has nothing to pull (and may take it by push).
        if !theirs.is_empty() {
            talk.pull(&mut report)?;
        }
        if talk.registry.exists(db)? {
            talk.push(&mut report)?;
        }
        Ok(report)
    }
}

/// One sync round's conversation with a peer about one database, as one key.
struct Exchange<'a> {
    sync: &'a SyncEngine,
    registry: Arc<Registry>,
    keys: &'a dyn KeyRing,
    key: PublicKey,
    addr: &'a str,
    peer: PublicKey,
    db: EntryId,
}

impl Exchange<'_> {
    /// One request on the database, signed by the key through the key ring.
    fn ask(&self, request: Request) -> Result<Vec<u8>> {
        let mut env = Envelope {
            db: self.db,
            key: self.key,
            server: self.peer,
            timestamp_ms: now_ms(),
            nonce: random::bytes()?,
            request,
            signature: [0; 64],
        };
        env.signature = self.keys.sign(&self.key, &env.signed_part())?;
        self.sync.post(self.addr, "db", &env.encode())
    }

    /// Takes every entry the peer lists after the pull cursor that this instance lacks.
    fn pull(&self, report: &mut SyncReport) -> Result<()> {
        let (state, db) = (&self.sync.state, &self.db);
        let core = self.registry.core(*db);
        let mut cursor = state.cursor(&self.peer, db, Direction::Pull)?;
        loop {
            let page = IdsPage::decode(&self.ask(Request::Ids {
                after: cursor,
                limit: wire::MAX_IDS as u32,
            })?)?;
            let mut missing: Vec<EntryId> = Vec::new();
            for id in &page.ids {
                if !core.knows(id)? {
                    missing.push(*id);
                }
            }
            while !missing.is_empty() {
                let got = wire::decode_entries(&self.ask(Request::Get(missing.clone()))?)?;
                if got.is_empty() {
                    return Err(Error::Network(format!(
                        "{}: the peer did not send entries it listed",
                        self.addr
                    )));
                }
                for bytes in &got {
                    let id = EntryId::of_bytes(bytes);
                    missing.retain(|m| *m != id);
                    let taken = Entry::decode(bytes).and_then(|e| {
                        if e.database_id() != *db {
                            return Err(Error::Corrupt("an entry of another database".into()));
                        }
                        self.registry.receive(e)
                    });
                    match taken {
                        Ok(received) => {
                            report.pulled += 1;
                            report.rejected.extend(
                                received.rejected.iter().map(|(id, e)| format!("{id}: {e}")),
                            );
                        }
                        Err(e) => report.rejected.push(format!("{id}: {e}")),
                    }
                }
            }
            if page.next > cursor {
                cursor = page.next;
                state.save_cursor(&self.peer, db, Direction::Pull, cursor)?;
            }
            if !page.more {
                return Ok(());
            }
        }
    }

    /// Sends every entry stored here after the push cursor that the peer lacks.
    fn push(&self, report: &mut SyncReport) -> Result<()> {
        let (state, db) = (&self.sync.state, &self.db);
        let backend = self.registry.backend();
        let mut cursor = state.cursor(&self.peer, db, Direction::Push)?;
        loop {
            let page = backend.entries_after(db, cursor, wire::MAX_IDS)?;
            let Some((last, _)) = page.last().copied() else {
                return Ok(());
            };
            let ids: Vec<EntryId> = page.iter().map(|(_, id)| *id).collect();
            let held = wire::decode_flags(&self.ask(Request::Have(ids.clone()))?)?;
            if held.len() != ids.len() {
                return Err(Error::Network(format!(
                    "{}: malformed reply to 'have'",
                    self.addr
                )));
            }
            let wanted: Vec<EntryId> = ids
                .iter()
                .zip(held)
                .filter(|(_, h)| !h)
                .map(|(id, _)| *id)
                .collect();
            for chunk in batches(backend, &wanted)? {
                let taken = wire::decode_flags(&self.ask(Request::Push(chunk))?)?;
                report.pushed += taken.iter().filter(|t| **t).count();
                report.refused_by_peer += taken.iter().filter(|t| !**t).count();
            }
            cursor = last;
            state.save_cursor(&self.peer, db, Direction::Push, cursor)?;
            if page.len() < wire::MAX_IDS {
                return Ok(());
            }
        }
    }
}

/// The entries `ids` in push-sized batches (bounded in count and bytes).
fn batches(backend: &Arc<dyn Backend>, ids: &[EntryId]) -> Result<Vec<Vec<Vec<u8>>>> {
    let mut out: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut size = 0;
    for id in ids {
        let bytes = backend
            .get_entry(id)?
            .ok_or_else(|| Error::Storage(format!("entry {id} vanished")))?;
        let full = out
            .last()
            .is_none_or(|b| b.len() >= wire::MAX_ENTRIES || size >= wire::BATCH_BYTES);
        if full {
            out.push(Vec::new());
            size = 0;
        }
        size += bytes.len();
        out.last_mut().expect("pushed above").push(bytes);
    }
    Ok(out)
}
