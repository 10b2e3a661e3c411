//! Sync under hostile input, from the Rust side: a server that lies or trickles cannot
//! hang a client, settings entries cost what data entries cost, and entries waiting for
//! parents stay within their bounds. (Raw-socket attacks on the listener, which need a
//! process of their own to count threads and memory, are in the Python tests.)

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mnemo::backend::{Backend, Cell, EntryMeta, EntryWrite, MemoryBackend, StateWrite};
use mnemo::crypto::PrivateKey;
use mnemo::database::{Permission, MAX_WAITING_BYTES_PER_DATABASE};
use mnemo::entry::{EntryContent, EntryId, Op, Ops};
use mnemo::sync::wire::{self, IdsPage, Request};
use mnemo::sync::{Limits, TlsIdentity};
use mnemo::{Error, Instance};

use crate::support::{http_post, logged_in};

/// A backend that counts how often entries are read back.
struct CountingBackend {
    inner: MemoryBackend,
    entry_reads: AtomicUsize,
}

impl Backend for CountingBackend {
    fn put_entry(&self, write: &EntryWrite<'_>) -> mnemo::Result<()> {
        self.inner.put_entry(write)
    }
    fn get_entry(&self, id: &EntryId) -> mnemo::Result<Option<Vec<u8>>> {
        self.entry_reads.fetch_add(1, Ordering::Relaxed);
        self.inner.get_entry(id)
    }
    fn entry_meta(&self, id: &EntryId) -> mnemo::Result<Option<EntryMeta>> {
        self.inner.entry_meta(id)
    }
    fn tips(&self, db: &EntryId) -> mnemo::Result<Vec<(EntryId, u64)>> {
        self.inner.tips(db)
    }
    fn cell(&self, db: &EntryId, store: &str, key: &str) -> mnemo::Result<Option<Cell>> {
        self.inner.cell(db, store, key)
    }
    fn cells(&self, db: &EntryId, store: &str) -> mnemo::Result<Vec<(String, Cell)>> {
        self.inner.cells(db, store)
    }
    fn cells_range(
        &self,
        db: &EntryId,
        store: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        live_only: bool,
    ) -> mnemo::Result<Vec<(String, Cell)>> {
        self.inner
            .cells_range(db, store, prefix, after, limit, live_only)
    }
    fn entries_after(
        &self,
        db: &EntryId,
        after: u64,
        limit: usize,
    ) -> mnemo::Result<Vec<(u64, EntryId)>> {
        self.inner.entries_after(db, after, limit)
    }
    fn last_position(&self, db: &EntryId) -> mnemo::Result<u64> {
        self.inner.last_position(db)
    }
    fn meta_get(&self, key: &str) -> mnemo::Result<Option<Vec<u8>>> {
        self.inner.meta_get(key)
    }
    fn meta_insert_new(&self, key: &str, value: &[u8]) -> mnemo::Result<bool> {
        self.inner.meta_insert_new(key, value)
    }
    fn meta_delete(&self, key: &str) -> mnemo::Result<bool> {
        self.inner.meta_delete(key)
    }
    fn stores(&self, db: &EntryId) -> mnemo::Result<Vec<String>> {
        self.inner.stores(db)
    }
    fn discarded(&self, db: &EntryId) -> mnemo::Result<Vec<EntryId>> {
        self.inner.discarded(db)
    }
    fn replace_state(&self, db: &EntryId, state: &StateWrite<'_>) -> mnemo::Result<()> {
        self.inner.replace_state(db, state)
    }
    fn secret_get(&self, key: &str) -> mnemo::Result<Option<Vec<u8>>> {
        self.inner.secret_get(key)
    }
    fn secret_put(&self, key: &str, value: &[u8], replacing: Option<&[u8]>) -> mnemo::Result<bool> {
        self.inner.secret_put(key, value, replacing)
    }
    fn secret_delete(&self, key: &str) -> mnemo::Result<bool> {
        self.inner.secret_delete(key)
    }
}

#[test]
fn receiving_settings_entries_reads_each_once_not_every_earlier_one() {
    let (_a, alice) = logged_in("alice");
    let db = alice.create_db("grants").unwrap();
    let n = 300;
    for _ in 0..n {
        let key = PrivateKey::generate().unwrap();
        db.grant(&key.public_key(), Permission::Read).unwrap();
    }
    let backend = Arc::new(CountingBackend {
        inner: MemoryBackend::new(),
        entry_reads: AtomicUsize::new(0),
    });
    let b = Instance::open(backend.clone()).unwrap();
    let ids = db.tips().unwrap();
    let all = collect_ancestry(&db, &ids);
    let before = backend.entry_reads.load(Ordering::Relaxed);
    for id in &all {
        b.receive_entry(&db.entry_bytes(id).unwrap()).unwrap();
    }
    let reads = backend.entry_reads.load(Ordering::Relaxed) - before;
    // Re-evaluating every earlier settings entry would read about n²/2 = 45,000 entries.
    assert!(
        reads <= 2 * n,
        "{reads} entry reads for {n} settings entries"
    );
}

/// Every entry of `db` from the root to `tips`, parents first.
fn collect_ancestry(db: &mnemo::Database, tips: &[EntryId]) -> Vec<EntryId> {
    let mut by_height = BTreeMap::new();
    let mut stack = tips.to_vec();
    let mut seen = std::collections::HashSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let entry = mnemo::entry::Entry::decode(&db.entry_bytes(&id).unwrap()).unwrap();
        by_height
            .entry(entry.content().height)
            .or_insert_with(Vec::new)
            .push(id);
        stack.extend(entry.content().parents.iter().copied());
    }
    by_height.into_values().flatten().collect()
}

#[test]
fn entries_waiting_for_parents_are_bounded_and_the_overflow_is_refused_as_busy() {
    let (a, alice) = logged_in("alice");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("d").unwrap();
    let reader = PrivateKey::generate().unwrap();
    db.grant(&reader.public_key(), Permission::Read).unwrap();
    let stranger = PrivateKey::generate().unwrap();

    // Orphans: valid encodings whose parents nobody has, 512 KiB each.
    let orphan = |i: u32| {
        let mut ops = Ops::new();
        ops.entry("s".into()).or_default().insert(
            format!("k{i}"),
            Op::Set(format!("\"{}\"", "x".repeat(512 << 10))),
        );
        EntryContent {
            db: Some(db.id()),
            parents: vec![EntryId::of_bytes(&i.to_be_bytes())],
            height: 7,
            ops,
            author: reader.public_key(),
        }
        .sign(&reader)
        .unwrap()
        .bytes()
        .to_vec()
    };
    let push = |key: &PrivateKey, entries: Vec<Vec<u8>>| {
        let env = crate::sync::envelope(key, &a, db.id(), Request::Push(entries));
        http_post(&addr, "/mnemo/sync/v1/db", &env.encode())
    };
    // A stranger, with no read key on the database, cannot make anything wait.
    let (status, _) = push(&stranger, vec![orphan(0)]);
    assert_eq!(status, 403);
    assert_eq!(a.waiting_bytes(), 0);

    let mut taken = 0;
    let mut busy = 0;
    for round in 0..8u32 {
        let batch = (0..6).map(|i| orphan(round * 6 + i)).collect();
        let (status, body) = push(&reader, batch);
        assert_eq!(status, 200);
        for s in wire::decode_statuses(&body).unwrap() {
            match s {
                0 => taken += 1,
                12 => busy += 1,
                other => panic!("unexpected status {other}"),
            }
        }
        assert!(a.waiting_bytes() <= MAX_WAITING_BYTES_PER_DATABASE);
    }
    assert!(taken > 0 && busy > 0, "{taken} taken, {busy} busy");
    // The listener still serves a legitimate pull at once.
    let (b, bob) = logged_in("bob");
    db.grant(&bob.default_key().unwrap(), Permission::Read)
        .unwrap();
    b.enable_sync()
        .unwrap()
        .sync_db(&bob, &addr, &db.id())
        .unwrap();
    assert_eq!(
        bob.load_db(&db.id()).unwrap().tips().unwrap(),
        db.tips().unwrap()
    );
}

/// A fake peer: a real device in TLS, that answers each database request with
/// `answer(request)`: the reply body, or `None` to trickle a reply forever.
fn fake_peer(answer: impl Fn(&Request) -> Option<Vec<u8>> + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let device = Arc::new(PrivateKey::generate().unwrap());
    let key = device.public_key();
    let config = TlsIdentity::new(device, key)
        .unwrap()
        .server_config()
        .unwrap();
    thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let tls = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut stream = rustls::StreamOwned::new(tls, tcp);
            while let Some((_path, body)) = read_request(&mut stream) {
                let reply = answer(&wire::Envelope::decode(&body).unwrap().request);
                let ok = match reply {
                    Some(body) => write_reply(&mut stream, &body),
                    None => trickle(&mut stream),
                };
                if !ok {
                    break;
                }
            }
        }
    });
    addr
}

fn read_request(stream: &mut impl Read) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).ok()?;
    let path = head.split_whitespace().nth(1)?.to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })?
        .parse()
        .ok()?;
    let mut body = vec![0; length];
    stream.read_exact(&mut body).ok()?;
    Some((path, body))
}

fn write_reply(stream: &mut impl Write, body: &[u8]) -> bool {
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).is_ok()
        && stream.write_all(body).is_ok()
        && stream.flush().is_ok()
}

/// Announces a large reply and sends it one byte a second.
fn trickle(stream: &mut impl Write) -> bool {
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n");
    for _ in 0..100_000 {
        if stream
            .write_all(&[1])
            .and_then(|()| stream.flush())
            .is_err()
        {
            return false;
        }
        thread::sleep(Duration::from_secs(1));
    }
    false
}

#[test]
fn a_server_that_claims_more_without_giving_it_cannot_hang_the_client() {
    let some_tip = EntryId::of_bytes(b"tip");
    let addr = fake_peer(move |request| match request {
        Request::Tips => Some(wire::encode_ids(&[some_tip])),
        // Always "more", never anything new.
        Request::Ids { after, .. } => Some(
            IdsPage {
                ids: vec![],
                next: *after,
                more: true,
            }
            .encode(),
        ),
        _ => Some(wire::encode_entries(&[])),
    });
    let (b, bob) = logged_in("bob");
    let started = Instant::now();
    let err = b
        .enable_sync()
        .unwrap()
        .sync_db(&bob, &addr, &EntryId::of_bytes(b"db"))
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // Listing ids it then never sends: a network error, not a loop.
    let listed = EntryId::of_bytes(b"listed");
    let addr = fake_peer(move |request| match request {
        Request::Tips => Some(wire::encode_ids(&[listed])),
        Request::Ids { .. } => Some(
            IdsPage {
                ids: vec![listed],
                next: 1,
                more: false,
            }
            .encode(),
        ),
        _ => Some(wire::encode_entries(&[])),
    });
    let err = b
        .sync()
        .unwrap()
        .sync_db(&bob, &addr, &EntryId::of_bytes(b"db"))
        .unwrap_err();
    assert!(matches!(err, Error::Network(_)), "{err}");
}

#[test]
fn a_trickling_server_hits_the_request_timeout() {
    let addr = fake_peer(|request| match request {
        Request::Tips => None,
        _ => Some(wire::encode_entries(&[])),
    });
    let (b, bob) = logged_in("bob");
    let sync = b.enable_sync().unwrap();
    sync.set_limits(Limits {
        request_timeout: Duration::from_secs(2),
        watch_timeout: Duration::from_secs(1),
        ..Limits::default()
    })
    .unwrap();
    let started = Instant::now();
    let err = sync
        .sync_db(&bob, &addr, &EntryId::of_bytes(b"db"))
        .unwrap_err();
    assert!(matches!(err, Error::Network(_)), "{err}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
}
