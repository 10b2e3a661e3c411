//! Serving other instances: the HTTP listener and the handlers of each request.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::wire::{self, Confirm, Envelope, ErrorReply, Hello, HelloReply, IdsPage, Request};
use super::SyncEngine;
use crate::database::settings::auth_key;
use crate::database::{now_ms, Permission, Registry, SETTINGS_STORE};
use crate::entry::Entry;
use crate::error::{Error, Result};

/// Worker threads per listener.
const WORKERS: usize = 4;
/// How long an unanswered handshake challenge stays valid.
const CHALLENGE_MS: u64 = 60_000;

/// A bound HTTP server and its worker threads.
pub(super) struct Listener {
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Listener {
    pub(super) fn start(addr: &str, sync: Weak<SyncEngine>) -> Result<Listener> {
        let socket = std::net::TcpListener::bind(addr)
            .map_err(|e| Error::Network(format!("cannot listen on {addr}: {e}")))?;
        no_delay(&socket)?;
        let server = tiny_http::Server::from_listener(socket, None)
            .map_err(|e| Error::Network(format!("cannot listen on {addr}: {e}")))?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..WORKERS)
            .map(|i| {
                let (server, stop, sync) = (server.clone(), stop.clone(), sync.clone());
                thread::Builder::new()
                    .name(format!("mnemo-sync-server-{i}"))
                    .spawn(move || serve(&server, &stop, &sync))
                    .map_err(|e| Error::Internal(format!("cannot start a sync server thread: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Listener {
            server,
            stop,
            workers,
        })
    }

    pub(super) fn addr(&self) -> String {
        self.server
            .server_addr()
            .to_ip()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// Stops the workers (they finish the request in hand) and closes the socket.
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for _ in &self.workers {
            self.server.unblock();
        }
        let me = thread::current().id();
        for w in self.workers {
            if w.thread().id() != me {
                let _ = w.join();
            }
        }
    }
}

/// Sets TCP_NODELAY on the listening socket; Linux passes it to every accepted connection.
/// Without it, a reply written in two parts waits for the client's delayed ACK (~40 ms).
fn no_delay(socket: &std::net::TcpListener) -> Result<()> {
    socket2::SockRef::from(socket)
        .set_tcp_nodelay(true)
        .map_err(|e| Error::Network(format!("cannot set TCP_NODELAY on the listener: {e}")))
}

fn serve(server: &tiny_http::Server, stop: &AtomicBool, sync: &Weak<SyncEngine>) {
    while !stop.load(Ordering::Acquire) {
        let request = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(_) => break,
        };
        let Some(sync) = sync.upgrade() else { break };
        respond(&sync, request);
    }
}

fn respond(sync: &SyncEngine, mut request: tiny_http::Request) {
    let reply = read_body(&mut request).and_then(|body| {
        if *request.method() != tiny_http::Method::Post {
            return Err(Error::invalid("sync requests are POSTs"));
        }
        match request.url() {
            "/mnemo/sync/v1/hello" => hello(sync, &body),
            "/mnemo/sync/v1/confirm" => confirm(sync, &body),
            "/mnemo/sync/v1/db" => database(sync, &body),
            other => Err(Error::NotFound(format!("no sync endpoint {other}"))),
        }
    });
    let (code, body) = match reply {
        Ok(body) => (200, body),
        Err(e) => {
            let http = match &e {
                Error::InvalidArgument(_) | Error::Network(_) | Error::Corrupt(_) => 400,
                Error::PermissionDenied(_) | Error::AuthFailed => 403,
                Error::NotFound(_) => 404,
                _ => 500,
            };
            (
                http,
                ErrorReply {
                    status: e.status().code(),
                    message: e.to_string(),
                }
                .encode(),
            )
        }
    };
    let _ = request.respond(tiny_http::Response::from_data(body).with_status_code(code));
}

fn read_body(request: &mut tiny_http::Request) -> Result<Vec<u8>> {
    if request.body_length().is_some_and(|n| n > wire::MAX_MESSAGE) {
        return Err(Error::invalid("sync message too large"));
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(wire::MAX_MESSAGE as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::Network(format!("reading the request: {e}")))?;
    if body.len() > wire::MAX_MESSAGE {
        return Err(Error::invalid("sync message too large"));
    }
    Ok(body)
}

fn hello(sync: &SyncEngine, body: &[u8]) -> Result<Vec<u8>> {
    let hello = Hello::decode(body)?;
    let proof = wire::hello_proof(&hello.nonce, &hello.client, &sync.device_key);
    let signature = sync.device.sign(&sync.device_key, &proof)?;
    let nonce = crate::crypto::random::bytes::<32>()?;
    let now = now_ms();
    let mut challenges = sync.challenges.lock().unwrap_or_else(|p| p.into_inner());
    challenges.retain(|_, issued| now.saturating_sub(*issued) < CHALLENGE_MS);
    if challenges.len() > 100_000 {
        return Err(Error::Network(
            "server busy: too many open handshakes".into(),
        ));
    }
    challenges.insert(nonce, now);
    Ok(HelloReply {
        server: sync.device_key,
        signature,
        nonce,
    }
    .encode())
}

fn confirm(sync: &SyncEngine, body: &[u8]) -> Result<Vec<u8>> {
    let confirm = Confirm::decode(body)?;
    let issued = sync
        .challenges
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&confirm.nonce);
    if issued.is_none_or(|t| now_ms().saturating_sub(t) >= CHALLENGE_MS) {
        return Err(Error::PermissionDenied(
            "unknown or expired handshake challenge".into(),
        ));
    }
    let proof = wire::confirm_proof(&confirm.nonce, &sync.device_key, &confirm.client);
    confirm
        .client
        .verify(&proof, &confirm.signature)
        .map_err(|_| Error::PermissionDenied("the peer's device proof does not verify".into()))?;
    sync.state.peer_seen(&confirm.client)?;
    Ok(wire::encode_flags(&[]))
}

fn no_access() -> Error {
    Error::PermissionDenied("this key has no permission on that database".into())
}

fn database(sync: &SyncEngine, body: &[u8]) -> Result<Vec<u8>> {
    let env = Envelope::decode(body)?;
    if env.server != sync.device_key {
        return Err(Error::PermissionDenied(
            "the request is addressed to another server".into(),
        ));
    }
    env.key
        .verify(&env.signed_part(), &env.signature)
        .map_err(|_| Error::PermissionDenied("the request signature does not verify".into()))?;
    sync.replay.check(env.timestamp_ms, &env.nonce, now_ms())?;
    let registry = sync.registry()?;
    if !registry.exists(&env.db)? {
        // A database new to this server: it holds nothing of it, so saying so (no tips,
        // no entries held) reveals no entry. It may arrive by push, root first, from a key
        // its root grants: that is how a device shares a database with a server.
        return match &env.request {
            Request::Tips => Ok(wire::encode_ids(&[])),
            Request::Have(ids) => Ok(wire::encode_flags(&vec![false; ids.len()])),
            Request::Push(entries) if admits_new_database(&env, entries) => {
                push(&registry, &env, entries)
            }
            _ => Err(no_access()),
        };
    }
    let core = registry.core(env.db);
    if core
        .current_settings()?
        .permission_of(&env.key)
        .is_none_or(|p| p < Permission::Read)
    {
        return Err(no_access());
    }
    let backend = core.backend();
    match &env.request {
        Request::Tips => Ok(wire::encode_ids(
            &backend
                .tips(&env.db)?
                .into_iter()
                .map(|(id, _)| id)
                .collect::<Vec<_>>(),
        )),
        Request::Ids { after, limit } => {
            let limit = (*limit as usize).clamp(1, wire::MAX_IDS);
            let page = backend.entries_after(&env.db, *after, limit)?;
            let next = page.last().map_or(*after, |(seq, _)| *seq);
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
            for id in ids {
                if size >= wire::BATCH_BYTES || entries.len() >= wire::MAX_ENTRIES {
                    break;
                }
                // Only entries of this database: a grant on one never reveals another.
                if backend.entry_meta(id)?.is_some_and(|m| m.db == env.db) {
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
        Request::Push(entries) => push(&registry, &env, entries),
    }
}

fn admits_new_database(env: &Envelope, entries: &[Vec<u8>]) -> bool {
    let Some(root) = entries.first().and_then(|b| Entry::decode(b).ok()) else {
        return false;
    };
    let settings = root.content().ops.get(SETTINGS_STORE);
    let grant = settings.and_then(|s| s.get(&auth_key(&env.key)));
    root.id() == env.db && root.content().db.is_none() && grant.is_some()
}

/// Takes pushed entries one by one: each is verified (signature, then permission) before it
/// becomes visible; invalid ones are dropped. Replies one flag per entry: taken or refused.
fn push(registry: &Registry, env: &Envelope, entries: &[Vec<u8>]) -> Result<Vec<u8>> {
    let flags: Vec<bool> = entries
        .iter()
        .map(|bytes| {
            Entry::decode(bytes)
                .and_then(|e| {
                    if e.database_id() != env.db {
                        return Err(Error::Corrupt("entry of another database".into()));
                    }
                    registry.receive(e)
                })
                .is_ok_and(|r| r.rejected.is_empty())
        })
        .collect();
    Ok(wire::encode_flags(&flags))
}
