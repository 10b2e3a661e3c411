//! Sync under hostile input, from the Rust side: a server that lies or trickles cannot
//! hang a client, settings entries cost what data entries cost, and entries waiting for
//! parents stay within their bounds. (Raw-socket attacks on the listener, which need a
//! process of their own to count threads and memory, are in the Python tests.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mnemo::backend::{Backend, MemoryBackend};
use mnemo::crypto::{PrivateKey, PublicKey};
use mnemo::database::{Permission, MAX_WAITING_BYTES_PER_DATABASE};
use mnemo::entry::{EntryContent, EntryId, Op, Ops};
use mnemo::error::Status;
use mnemo::sync::wire::{self, IdsPage, Request};
use mnemo::sync::{Limits, Ticket};
use mnemo::{Error, Instance};

use crate::fake_peer::{
    chain_of, chain_readable_by, entries_asked, fake_peer, fake_peer_holding_for, fake_peer_of,
    fake_peer_switching, holder_proof, on_top, page_of, proofs_asked, whole_page,
};
use crate::support::{http_exchange, http_post, logged_in, post_head, tls_connect, Instrumented};

#[test]
fn receiving_settings_entries_reads_each_once_not_every_earlier_one() {
    let (_a, alice) = logged_in("alice");
    let db = alice.create_db("grants").unwrap();
    let n = 300;
    for _ in 0..n {
        let key = PrivateKey::generate().unwrap();
        db.grant(&key.public_key(), Permission::Read).unwrap();
    }
    let backend = Instrumented::new(Arc::new(MemoryBackend::new()));
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

/// Entries waiting for their parents are let go once they waited past their time, also in
/// a database no entry arrives in again: while sync is enabled, every database is swept
/// (within a quarter of the time here). Before, they stayed until the next arrival.
#[test]
fn entries_waiting_past_their_time_are_let_go_without_another_arrival() {
    let (a, alice) = logged_in("alice");
    a.enable_sync().unwrap();
    // Changed once sync runs: the sweep follows the limit in force.
    a.set_limits_by_name(&[("waiting_time_ms", 400)]).unwrap();
    let db = alice.create_db("d").unwrap();
    let stranger = PrivateKey::generate().unwrap();
    for i in 0..10u32 {
        let orphan = EntryContent {
            db: Some(db.id()),
            parents: vec![EntryId::of_bytes(&i.to_be_bytes())],
            height: 7,
            ops: crate::foreign::ops("s", &format!("k{i}"), "1"),
            author: stranger.public_key(),
        }
        .sign(&stranger)
        .unwrap();
        assert!(a.receive_entry(orphan.bytes()).unwrap().pending);
    }
    assert!(a.waiting_bytes() > 0);
    // 400 ms, and a sweep a quarter of that later: 3 s leaves room for a loaded machine
    // (before the sweep followed the limit, its first pass came 10 s after sync started).
    let deadline = Instant::now() + Duration::from_secs(3);
    while a.waiting_bytes() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} bytes still waiting",
            a.waiting_bytes()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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

/// Only entries come in large replies: a peer answering any other request with more than
/// the largest honest reply is cut off before the body is read, not held up to the largest
/// message and then found wrong.
#[test]
fn a_long_answer_to_a_short_question_is_refused_unread() {
    let tip = EntryId::of_bytes(b"tip");
    let long = vec![0; wire::MAX_SMALL_REPLY + 1];
    let addr = fake_peer(move |request| match request {
        Request::Tips => Some(wire::encode_ids(&[tip])),
        _ => Some(long.clone()),
    });
    let (b, bob) = logged_in("bob");
    let err = b
        .enable_sync()
        .unwrap()
        .sync_db(&bob, &addr, &EntryId::of_bytes(b"db"))
        .unwrap_err();
    assert!(matches!(err, Error::Network(_)), "{err}");
    let expected = format!("more than {} bytes for this request", wire::MAX_SMALL_REPLY);
    assert!(err.to_string().contains(&expected), "{err}");
}

/// A reply the client does not read keeps its bytes counted against the listener's body
/// budget until it is written: a reader sending requests for large replies it never reads
/// cannot make the listener hold more reply memory than the budget. (Before, the budget was
/// released as the reply was made, and every such reply was held besides.)
#[test]
fn unread_replies_hold_the_body_budget_until_written() {
    use std::io::Write;
    let (a, alice) = logged_in("alice");
    let sync = a.enable_sync().unwrap();
    sync.set_limits(Limits {
        max_message_bytes: mnemo::sync::MIN_MESSAGE_LIMIT,
        max_buffered_bytes: mnemo::sync::MIN_MESSAGE_LIMIT,
        queue_timeout: Duration::from_secs(1),
        ..Limits::default()
    })
    .unwrap();
    let addr = sync.listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("d").unwrap();
    // One entry of 15 MiB: a reply for it is most of the 21 MiB budget, and more than the
    // loopback's socket buffers take from it.
    let big = db
        .set("s", "big", &format!("\"{}\"", "x".repeat(15 << 20)))
        .unwrap();
    let reader = PrivateKey::generate().unwrap();
    db.grant(&reader.public_key(), Permission::Read).unwrap();
    let get = || {
        let body = crate::sync::envelope(&reader, &a, db.id(), Request::Get(vec![big])).encode();
        [
            post_head(&addr, "/mnemo/sync/v1/db", body.len() as u64).into_bytes(),
            body,
        ]
        .concat()
    };
    let mut unread = tls_connect(&addr).unwrap();
    unread.write_all(&get()).unwrap();
    unread.flush().unwrap();
    thread::sleep(Duration::from_millis(500)); // the reply is made and queued
    let (status, body) = http_exchange(&addr, &get()).unwrap();
    assert_eq!(
        status, 503,
        "a second large reply was made while the first sat unread"
    );
    let refusal = wire::ErrorReply::decode(&body).unwrap();
    assert!(
        refusal.message.contains("too many replies in memory"),
        "{}",
        refusal.message
    );
    drop(unread); // its reply is let go with the connection
    let (status, _) = http_exchange(&addr, &get()).unwrap();
    assert_eq!(status, 200);
}

/// A request's id is the same on both sides: a peer answering an access request with text
/// of its own (line breaks, terminal escapes) is refused, and the text reaches the error
/// only escaped. (Before, it was returned as the id, raw.)
#[test]
fn an_access_request_answered_with_another_id_is_refused() {
    let (b, bob) = logged_in("bob");
    let sync = b.enable_sync().unwrap();
    let db = EntryId::of_bytes(b"db");
    let ask = |answer: String| {
        let device = Arc::new(PrivateKey::generate().unwrap());
        let addresses = vec![fake_peer_of(device.clone(), move |request| {
            matches!(request, Request::Ask { .. }).then(|| wire::encode_text(&answer))
        })];
        let ticket = Ticket {
            db,
            device: device.public_key(),
            addresses,
        };
        sync.request_access(&bob, &ticket.to_text(&*device).unwrap(), Permission::Read)
    };
    let forged = ask("req-1\nINFO approved by admin\u{1b}[2J".to_string()).unwrap_err();
    let message = forged.to_string();
    assert!(matches!(forged, Error::Network(_)), "{message}");
    assert!(message.contains("'req-1\\u{a}INFO"), "{message}");
    assert!(!message.contains(['\n', '\u{1b}']), "{message}");
    let key = bob
        .list_keys()
        .unwrap()
        .into_iter()
        .find(|k| k.default)
        .unwrap()
        .public;
    let own = mnemo::sync::request_id(&db, &key);
    assert_eq!(ask(own.clone()).unwrap(), own);
}

/// A tracked peer that keeps a round going (each page slow, listing one more entry) cannot
/// hold `untrack` until the round's deadline: the round asks nothing more once its tracking
/// ends. (Before, untrack waited for the round: 10 minutes.)
#[test]
fn untracking_a_peer_that_keeps_its_round_going_returns_at_once() {
    let (b, bob) = logged_in("bob");
    let chain = chain_readable_by(bob.default_key().unwrap(), 100);
    let db = chain[0].id();
    let pages = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let served = pages.clone();
    let ids: Vec<EntryId> = chain.iter().map(|e| e.id()).collect();
    let tip = *ids.last().unwrap();
    let addr = fake_peer(move |request| match request {
        Request::Tips => Some(wire::encode_ids(&[tip])),
        // The first pull (track's own) gets the root at once; later ones an entry every
        // half second.
        Request::Ids { after: 0, .. } => Some(page_of(&[db], 0, 1)),
        Request::Ids { after, .. } => {
            thread::sleep(Duration::from_millis(500));
            served.fetch_add(1, Ordering::SeqCst);
            let at = (*after as usize).min(ids.len() - 1);
            Some(
                IdsPage {
                    ids: vec![ids[at]],
                    next: after + 1,
                    more: at + 1 < ids.len(),
                }
                .encode(),
            )
        }
        Request::Get(asked) => Some(entries_asked(&chain, asked)),
        Request::Have(ids) => Some(wire::encode_flags(&vec![true; ids.len()])),
        _ => None, // the watch: never answered
    });
    let sync = b.enable_sync().unwrap();
    sync.track(&bob, &addr, &db).unwrap();
    let started = Instant::now();
    while pages.load(Ordering::SeqCst) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no round began"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let untracking = Instant::now();
    sync.untrack(&bob, &addr, &db).unwrap();
    assert!(
        untracking.elapsed() < Duration::from_secs(10),
        "untrack took {:?}",
        untracking.elapsed()
    );
}

/// A client facing a peer that tries to keep a round going: bob with his database, sync
/// with rounds ending after 20 s (the default is 10 minutes, so that a test of a round kept
/// going fails in good time), and the count of pages of ids a peer was asked for.
struct Kept {
    _instance: Instance,
    bob: mnemo::User,
    db: EntryId,
    sync: Arc<mnemo::sync::SyncEngine>,
    pages: Arc<std::sync::atomic::AtomicUsize>,
}

impl Kept {
    fn new() -> Kept {
        let (b, bob) = logged_in("bob");
        Kept::of(b, bob)
    }

    /// Bob of instance `b`, with a new database.
    fn of(b: Instance, bob: mnemo::User) -> Kept {
        let db = bob.create_db("mine").unwrap().id();
        let sync = b.enable_sync().unwrap();
        sync.set_limits(Limits {
            round_deadline: Duration::from_secs(20),
            ..Limits::default()
        })
        .unwrap();
        Kept {
            _instance: b,
            bob,
            db,
            sync,
            pages: Arc::default(),
        }
    }

    /// A fake peer that answers `ids` with `page(after)` (counted), `get` with `get(asked)`,
    /// and tips with a tip the client lacks.
    fn peer(
        &self,
        page: impl Fn(u64) -> IdsPage + Send + Sync + 'static,
        get: impl Fn(&[EntryId]) -> Vec<u8> + Send + Sync + 'static,
    ) -> String {
        self.pages.store(0, Ordering::SeqCst);
        let pages = self.pages.clone();
        fake_peer(move |request| match request {
            Request::Tips => Some(wire::encode_ids(&[EntryId::of_bytes(b"elsewhere")])),
            Request::Ids { after, .. } => {
                pages.fetch_add(1, Ordering::SeqCst);
                Some(page(*after).encode())
            }
            Request::Get(asked) => Some(get(asked)),
            _ => Some(wire::encode_entries(&[])),
        })
    }

    /// Checks that a round of the database with the peer at `addr` ends with `status` and a
    /// message holding `words`, once it asked for at most `most` pages.
    fn round_ends(&self, addr: &str, most: usize, status: Status, words: &str) {
        let err = self.sync.sync_db(&self.bob, addr, &self.db).unwrap_err();
        let asked = self.pages.load(Ordering::SeqCst);
        assert!(asked <= most, "{asked} pages asked for, then: {err}");
        assert!(
            err.status() == status && err.to_string().contains(words),
            "{err}"
        );
    }
}

/// A peer listing, page after page, only entries the client holds cannot keep a round
/// going: a page saying more follow must bring something new or be full, and the held
/// entries listed cannot add up to more than are held. (Before, both went on until the
/// round's deadline, 10 minutes: two thousand signed requests a second, or a full read of
/// the database per page.)
#[test]
fn a_peer_listing_only_held_entries_cannot_keep_a_round_going() {
    let kept = Kept::new();
    let held = kept.db;
    for (per_page, expected) in [(1, "says more follow"), (wire::MAX_IDS, "lists some again")] {
        let addr = kept.peer(
            move |after| IdsPage {
                ids: vec![held; per_page],
                next: after + per_page as u64,
                more: true,
            },
            |_| wire::encode_entries(&[]),
        );
        kept.round_ends(&addr, 3, Status::Corrupt, expected);
    }
}

/// The held entries a peer may list count the database's own entries here, not its storage
/// positions: here after 2,100 entries of a database since forgotten (positions are not
/// handed out again) and 2,100 of another database written between two of its entries
/// (on PostgreSQL one counter serves all databases). (Before, the bound on PostgreSQL was
/// that counter: a peer listing held entries got five pages, not two.)
#[test]
fn the_held_entries_a_peer_may_list_are_the_databases_own_count() {
    for storage in crate::support::storages() {
        let name = storage.name();
        let b = Instance::open(storage.open()).unwrap();
        b.create_user("bob", None).unwrap();
        let bob = b.login("bob", None).unwrap();
        let forgotten = bob.create_db("forgotten").unwrap();
        for i in 0..2_100 {
            forgotten.set("s", &i.to_string(), "1").unwrap();
        }
        let forgotten_id = forgotten.id();
        drop(forgotten);
        bob.forget_db(&forgotten_id).unwrap();
        let kept = Kept::of(b, bob);
        let other = kept.bob.create_db("other").unwrap();
        for i in 0..2_100 {
            other.set("s", &i.to_string(), "1").unwrap();
        }
        let mine = kept.bob.load_db(&kept.db).unwrap();
        mine.set("s", "k", "1").unwrap();
        let held = kept.db;
        let addr = kept.peer(
            move |after| IdsPage {
                ids: vec![held; wire::MAX_IDS],
                next: after + wire::MAX_IDS as u64,
                more: true,
            },
            |_| wire::encode_entries(&[]),
        );
        let err = kept.sync.sync_db(&kept.bob, &addr, &kept.db).unwrap_err();
        let asked = kept.pages.load(Ordering::SeqCst);
        assert!(asked <= 2, "{name}: {asked} pages asked for, then: {err}");
        assert!(
            err.to_string().contains("lists some again"),
            "{name}: {err}"
        );
    }
}

/// A reader of `db`: a new key granted read there.
fn granted_reader(db: &mnemo::Database) -> PrivateKey {
    let reader = PrivateKey::generate().unwrap();
    db.grant(&reader.public_key(), Permission::Read).unwrap();
    reader
}

/// The answers of a peer that holds nothing and takes every entry pushed, counting them in
/// `pushed` (other requests: trickled).
fn taking_all(
    pushed: Arc<std::sync::atomic::AtomicUsize>,
) -> impl Fn(&Request) -> Option<Vec<u8>> + Send + Sync + 'static {
    move |request| match request {
        Request::Tips => Some(wire::encode_ids(&[])),
        Request::Have(ids) => Some(wire::encode_flags(&vec![false; ids.len()])),
        Request::Push(entries) => {
            pushed.fetch_add(entries.len(), Ordering::SeqCst);
            Some(wire::encode_statuses(&vec![Status::Ok; entries.len()]))
        }
        _ => None,
    }
}

/// A peer is pushed nothing until it shows a holder proof for its own device by a key that
/// may read the database here: not one made for another device, a forged one, one by a
/// revoked key, nor one by a key without a grant. Each round still ends, saying why.
#[test]
fn a_peer_without_a_holder_proof_for_its_own_device_is_pushed_nothing() {
    let kept = Kept::new();
    let bob_db = kept.bob.load_db(&kept.db).unwrap();
    let (reader, revoked) = (granted_reader(&bob_db), granted_reader(&bob_db));
    bob_db.revoke(&revoked.public_key()).unwrap();
    let stranger = PrivateKey::generate().unwrap();
    let device = Arc::new(PrivateKey::generate().unwrap());
    let here = device.public_key();
    let elsewhere = PrivateKey::generate().unwrap().public_key();
    let mut forged = holder_proof(&reader, &here);
    forged.1[0] ^= 1;
    let pushes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Shows `proofs` whatever it is asked (a hostile device).
    let peer_showing = |proofs: Vec<(PublicKey, [u8; 64])>| {
        let taking = taking_all(pushes.clone());
        fake_peer_of(device.clone(), move |request| match request {
            Request::Holders { .. } => Some(wire::encode_proofs(&proofs)),
            _ => taking(request),
        })
    };
    for (case, proofs) in [
        ("none", vec![]),
        (
            "made for another device",
            vec![holder_proof(&reader, &elsewhere)],
        ),
        ("forged", vec![forged]),
        ("by a revoked key", vec![holder_proof(&revoked, &here)]),
        (
            "by a key without a grant",
            vec![holder_proof(&stranger, &here)],
        ),
    ] {
        let err = (kept.sync)
            .sync_db(&kept.bob, &peer_showing(proofs), &kept.db)
            .unwrap_err();
        assert!(
            matches!(err, Error::PermissionDenied(_))
                && err.to_string().contains("did not prove that it holds"),
            "{case}: {err}"
        );
        assert_eq!(pushes.load(Ordering::SeqCst), 0, "{case}");
    }
    // Among them, the reader's own proof for this device: the database goes.
    let proofs = vec![holder_proof(&stranger, &here), holder_proof(&reader, &here)];
    let report = (kept.sync)
        .sync_db(&kept.bob, &peer_showing(proofs), &kept.db)
        .unwrap();
    assert_eq!((report.pushed, pushes.load(Ordering::SeqCst)), (4, 4));
}

/// A revocation made while a round pushes stops it at the next batch: the key proved is
/// checked again before each one.
#[test]
fn a_revocation_made_while_a_round_pushes_stops_it_at_the_next_batch() {
    let kept = Kept::new();
    let bob_db = kept.bob.load_db(&kept.db).unwrap();
    let reader = granted_reader(&bob_db);
    for i in 0..600 {
        bob_db.set("s", &i.to_string(), "1").unwrap();
    }
    let revoking = std::sync::Mutex::new(Some(bob_db.clone()));
    let reader_key = reader.public_key();
    let pushed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let taking = taking_all(pushed.clone());
    let addr = fake_peer_holding_for(&reader, move |request| {
        // The first batch arrives: bob revokes the device's only reader.
        if let Request::Push(_) = request {
            if let Some(db) = revoking.lock().unwrap().take() {
                db.revoke(&reader_key).unwrap();
            }
        }
        taking(request)
    });
    let err = kept.sync.sync_db(&kept.bob, &addr, &kept.db).unwrap_err();
    assert!(
        err.to_string().contains("did not prove that it holds"),
        "{err}"
    );
    assert_eq!(pushed.load(Ordering::SeqCst), wire::MAX_ENTRIES);
}

/// The keys that may read are asked about 1,024 at a time, until a proof holds: a device
/// holding copies for the last of 1,100 readers is pushed to.
#[test]
fn a_device_proving_the_last_of_many_readers_is_pushed_to() {
    let kept = Kept::new();
    let bob_db = kept.bob.load_db(&kept.db).unwrap();
    let mut readers: Vec<PrivateKey> = (0..1100).map(|_| PrivateKey::generate().unwrap()).collect();
    readers.sort_by_key(|key| key.public_key());
    for reader in &readers {
        bob_db
            .grant(&reader.public_key(), Permission::Read)
            .unwrap();
    }
    let taking = taking_all(Arc::default());
    let addr = fake_peer_holding_for(readers.last().unwrap(), taking);
    let report = kept.sync.sync_db(&kept.bob, &addr, &kept.db).unwrap();
    assert_eq!(report.pushed, 1101);
}

/// A connection made again in the middle of a round accepts only the device that answered
/// first: another device taking its place at the address, once the first proved holding
/// copies for a reader, is pushed nothing.
#[test]
fn a_device_taking_the_place_of_one_that_proved_mid_round_is_pushed_nothing() {
    let kept = Kept::new();
    let reader = granted_reader(&kept.bob.load_db(&kept.db).unwrap());
    let honest = Arc::new(PrivateKey::generate().unwrap());
    let proofs = vec![holder_proof(&reader, &honest.public_key())];
    let pushes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let taking = taking_all(pushes.clone());
    let addr = fake_peer_switching(
        honest,
        Arc::new(PrivateKey::generate().unwrap()),
        |request| matches!(request, Request::Holders { .. }),
        move |request| match request {
            Request::Holders { .. } => Some(proofs_asked(request, &proofs)),
            _ => taking(request),
        },
    );
    let err = kept.sync.sync_db(&kept.bob, &addr, &kept.db).unwrap_err();
    assert!(matches!(err, Error::Network(_)), "{err}");
    assert_eq!(pushes.load(Ordering::SeqCst), 0, "{err}");
}

/// A peer naming, round after round, a tip it never lists gets the database listed again
/// from the beginning at most once an hour; one naming a tip of this side's and claiming to
/// hold nothing gets it all pushed again at most once an hour: each could make the client
/// list or send the whole database. (A tracked peer may start a round every 250 ms.)
#[test]
fn a_peer_claiming_to_differ_from_what_it_listed_or_took_gets_it_all_again_once_an_hour() {
    let kept = Kept::new();
    let bob_db = kept.bob.load_db(&kept.db).unwrap();
    // The peer's device holds copies for a reader: bob pushes to it.
    let reader = granted_reader(&bob_db);
    for i in 0..4 {
        bob_db.set("s", &i.to_string(), "1").unwrap();
    }
    let ids = collect_ancestry(&bob_db, &bob_db.tips().unwrap());
    for (tip, expected) in [
        // Pages asked for and entries pushed, round by round.
        (
            EntryId::of_bytes(b"never listed"),
            [(1, 6), (2, 0), (1, 0), (1, 0)],
        ),
        (kept.db, [(1, 6), (1, 6), (1, 0), (1, 0)]),
    ] {
        let (ids, pages) = (ids.clone(), kept.pages.clone());
        let addr = fake_peer_holding_for(&reader, move |request| match request {
            Request::Tips => Some(wire::encode_ids(&[tip])),
            Request::Ids { after, .. } => {
                pages.fetch_add(1, Ordering::SeqCst);
                Some(page_of(&ids, *after as usize, wire::MAX_IDS))
            }
            Request::Have(asked) => Some(wire::encode_flags(&vec![false; asked.len()])),
            Request::Push(entries) => Some(wire::encode_statuses(&vec![Status::Ok; entries.len()])),
            _ => None,
        });
        let rounds: Vec<(usize, usize)> = (0..4)
            .map(|_| {
                kept.pages.store(0, Ordering::SeqCst);
                let report = kept.sync.sync_db(&kept.bob, &addr, &kept.db).unwrap();
                (kept.pages.load(Ordering::SeqCst), report.pushed)
            })
            .collect();
        assert_eq!(rounds, expected, "tip {tip}");
    }
}

/// A database forgotten here while a pull of it runs ends the pull (`NOT_FOUND`), and what
/// the peer sends after is not taken. (Before, the round ran on into a copy without root:
/// its entries waited for parents until they expired, and it ended CORRUPT.)
#[test]
fn a_database_forgotten_during_its_pull_ends_the_pull() {
    let (b, bob) = logged_in("bob");
    let chain = chain_readable_by(bob.default_key().unwrap(), 400);
    let db = chain[0].id();
    let ids: Vec<EntryId> = chain.iter().map(|e| e.id()).collect();
    let tip = *ids.last().unwrap();
    let (asked_tx, asked_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let (go_tx, go_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let (asked_tx, go_rx) = (
        std::sync::Mutex::new(asked_tx),
        std::sync::Mutex::new(go_rx),
    );
    let (root_sent, waited) = (AtomicBool::new(false), AtomicBool::new(false));
    let addr = fake_peer(move |request| match request {
        // The first round takes the root alone (and names it as the tip).
        Request::Tips if !root_sent.load(Ordering::SeqCst) => Some(wire::encode_ids(&[db])),
        Request::Tips => Some(wire::encode_ids(&[tip])),
        Request::Ids { .. } if !root_sent.swap(true, Ordering::SeqCst) => {
            Some(page_of(&[db], 0, 1))
        }
        Request::Ids { after, .. } => {
            if *after > 1 && !waited.swap(true, Ordering::SeqCst) {
                // The second page: waits while the test forgets the database.
                asked_tx.lock().unwrap().send(()).unwrap();
                let go = go_rx.lock().unwrap();
                go.recv_timeout(Duration::from_secs(20)).unwrap();
            }
            Some(page_of(&ids, *after as usize, 100))
        }
        Request::Get(asked) => Some(entries_asked(&chain, asked)),
        Request::Have(asked) => Some(wire::encode_flags(&vec![true; asked.len()])),
        _ => None,
    });
    let sync = b.enable_sync().unwrap();
    sync.sync_db(&bob, &addr, &db).unwrap();
    drop(bob.load_db(&db).unwrap()); // in bob's list
    let round = thread::scope(|scope| {
        let round = scope.spawn(|| sync.sync_db(&bob, &addr, &db));
        asked_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        bob.forget_db(&db).unwrap();
        go_tx.send(()).unwrap();
        round.join().unwrap()
    });
    let err = round.unwrap_err();
    assert!(
        matches!(err, Error::NotFound(_)) && err.to_string().contains("forgotten"),
        "{err}"
    );
    let stats: BTreeMap<_, _> = b.stats().unwrap().into_iter().collect();
    assert_eq!(stats["waiting_entry_bytes"], 0, "{stats:?}");
}

/// A peer sending entries that fail verification, page after page, cannot keep a round
/// going: past [`MAX_IDS`](wire::MAX_IDS) of them the round ends. (Before, it went on until
/// the round's deadline, 10 minutes, decoding whatever came.)
#[test]
fn a_peer_sending_entries_that_fail_verification_cannot_keep_a_round_going() {
    let kept = Kept::new();
    let garbage = Arc::new(std::sync::Mutex::new(BTreeMap::<EntryId, Vec<u8>>::new()));
    let listed = garbage.clone();
    let addr = kept.peer(
        move |after| {
            let mut listed = listed.lock().unwrap();
            let ids = (0..256)
                .map(|i| {
                    let bytes = format!("garbage {after} {i}").into_bytes();
                    let id = EntryId::of_bytes(&bytes);
                    listed.insert(id, bytes);
                    id
                })
                .collect();
            IdsPage {
                ids,
                next: after + 256,
                more: true,
            }
        },
        move |asked| {
            let listed = garbage.lock().unwrap();
            let reply: Vec<Vec<u8>> = asked.iter().map(|id| listed[id].clone()).collect();
            wire::encode_entries(&reply)
        },
    );
    kept.round_ends(&addr, 8, Status::Corrupt, "the round stops there");
}

/// A first pull from a peer that lists a database's entries but leaves out its root fails:
/// there is no database here to load. (Before, it answered OK, and loading the database
/// then answered NOT_FOUND.) The next round asks from the beginning, whatever cursor the
/// first saved, and completes the database: a cursor past the root (as a round running on
/// while the database was forgotten here saves one) does not break the database for good,
/// nor do the entries left waiting, listed again as held.
#[test]
fn a_first_pull_without_the_root_fails_and_the_next_asks_from_the_beginning() {
    let (b, bob) = logged_in("bob");
    let chain = chain_readable_by(bob.default_key().unwrap(), 3100);
    let db = chain[0].id();
    let ids: Vec<EntryId> = chain.iter().map(|e| e.id()).collect();
    let tip = *ids.last().unwrap();
    let rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = rounds.clone();
    let addr = fake_peer(move |request| match request {
        Request::Tips => Some(wire::encode_ids(&[tip])),
        Request::Ids { after, .. } => {
            // The first page leaves the root out; the others list from `after`.
            let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
            let from = if first { 1 } else { *after as usize };
            Some(page_of(&ids, from, wire::MAX_IDS))
        }
        Request::Get(asked) => Some(entries_asked(&chain, &asked[..asked.len().min(256)])),
        Request::Have(ids) => Some(wire::encode_flags(&vec![true; ids.len()])),
        _ => Some(wire::encode_entries(&[])),
    });
    let sync = b.enable_sync().unwrap();
    // More than 1,024 entries wait for the root: the round ends BUSY past the first pages
    // (with fewer, CORRUPT "did not send its root" at their end).
    let err = sync.sync_db(&bob, &addr, &db).unwrap_err();
    assert!(matches!(&err, Error::Busy(_)), "{err}");
    sync.sync_db(&bob, &addr, &db).unwrap();
    let copy = bob.load_db(&db).unwrap();
    assert_eq!(copy.tips().unwrap(), vec![tip]);
}

/// A peer sending, page after page, entries that wait for parents it never sends cannot keep
/// a round going: past 1,024 left waiting the round ends BUSY (before, it went on until the
/// waiting area was full, 19,000 entries and 16 MiB, or the round's deadline); and one
/// listing the same such entry a thousand times a page gets it asked for once, the rest
/// counted as held (before, each page asked for it once, for a thousand pages).
#[test]
fn a_peer_sending_entries_that_wait_for_parents_cannot_keep_a_round_going() {
    let kept = Kept::new();
    let stranger = PrivateKey::generate().unwrap();
    let orphans: Arc<Vec<mnemo::entry::Entry>> = Arc::new(
        (0..3000u32)
            .map(|i| {
                EntryContent {
                    db: Some(kept.db),
                    parents: vec![EntryId::of_bytes(&i.to_be_bytes())],
                    height: 5,
                    ops: Ops::new(),
                    author: stranger.public_key(),
                }
                .sign(&stranger)
                .unwrap()
            })
            .collect(),
    );
    let ids: Vec<EntryId> = orphans.iter().map(|e| e.id()).collect();
    let (listed, sent) = (ids.clone(), orphans.clone());
    let addr = kept.peer(
        move |after| {
            let from = (after as usize).min(listed.len());
            let to = (from + 200).min(listed.len());
            IdsPage {
                ids: listed[from..to].to_vec(),
                next: to as u64,
                more: true,
            }
        },
        move |asked| entries_asked(&sent, asked),
    );
    kept.round_ends(&addr, 8, Status::Busy, "the round stops there");

    let addr = kept.peer(
        move |after| IdsPage {
            ids: vec![ids[2000 + after as usize % 1000]; wire::MAX_IDS],
            next: after + 1,
            more: true,
        },
        move |asked| entries_asked(&orphans, asked),
    );
    kept.round_ends(&addr, 8, Status::Corrupt, "lists some again");
}

/// A round that finds no room in its engine's budget for received entries (another round
/// holds it all, its reply trickling in) waits the engine's queue time, then ends busy,
/// saying why, with nothing taken; the other round is not held up by it.
#[test]
fn a_round_without_room_for_received_entries_ends_busy() {
    let (owner, writer) = (
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
    );
    let good = chain_of(&owner, &writer, &[], 3);
    let db = good[0].id();
    let ids: Vec<EntryId> = good.iter().map(|e| e.id()).collect();
    let tip = *ids.last().unwrap();
    let asked = Arc::new(AtomicBool::new(false));
    let told = asked.clone();
    let (slow_ids, fast_ids) = (ids.clone(), ids.clone());
    let slow = fake_peer(move |request| match request {
        Request::Tips => Some(wire::encode_ids(&[tip])),
        Request::Ids { .. } => Some(whole_page(&slow_ids)),
        Request::Get(_) => {
            told.store(true, Ordering::Release);
            None // trickled
        }
        _ => Some(wire::encode_entries(&[])),
    });
    let fast = fake_peer(move |request| match request {
        Request::Tips => Some(wire::encode_ids(&[tip])),
        Request::Ids { .. } => Some(whole_page(&fast_ids)),
        Request::Get(asked) => Some(entries_asked(&good, asked)),
        Request::Have(ids) => Some(wire::encode_flags(&vec![true; ids.len()])),
        _ => Some(wire::encode_entries(&[])),
    });
    let backend = Arc::new(MemoryBackend::new());
    let c = Instance::open(backend.clone()).unwrap();
    c.create_user("carol", None).unwrap();
    let carol = c.login("carol", None).unwrap();
    let sync = c.enable_sync().unwrap();
    sync.set_limits_by_name(&[
        ("max_received_bytes", wire::MAX_MESSAGE as u64),
        ("queue_timeout_ms", 300),
        ("request_timeout_ms", 4000),
        ("watch_timeout_ms", 2000),
    ])
    .unwrap();
    thread::scope(|scope| {
        let holding = scope.spawn(|| sync.sync_db(&carol, &slow, &db));
        while !asked.load(Ordering::Acquire) {
            thread::sleep(Duration::from_millis(5));
        }
        let started = Instant::now();
        let err = sync.sync_db(&carol, &fast, &db).unwrap_err();
        assert!(matches!(err, Error::Busy(_)), "{err}");
        assert!(err.to_string().contains("max_received_bytes"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(backend.tips(&db).unwrap(), vec![]);
        let err = holding.join().unwrap().unwrap_err();
        assert!(matches!(err, Error::Network(_)), "{err}");
    });
    // Once the room is free, the round goes through.
    sync.sync_db(&carol, &fast, &db).unwrap();
    let tips: Vec<EntryId> = backend
        .tips(&db)
        .unwrap()
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(tips, vec![tip]);
}

/// A pull that stops busy for want of room for received entries, with entries of its own
/// waiting for their parents, does not take that for a restored peer's new entries: it does
/// not start again from the beginning (which it may do once an hour).
#[test]
fn a_pull_without_room_for_its_entries_does_not_start_again() {
    let (owner, writer) = (
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
    );
    let good = chain_of(&owner, &writer, &[], 6);
    let db = good[0].id();
    let ids: Vec<EntryId> = good.iter().map(|e| e.id()).collect();
    let (half, tip) = (ids.len() / 2, *ids.last().unwrap());
    let asked_again = Arc::new(AtomicBool::new(false));
    let told = asked_again.clone();
    let device = Arc::new(PrivateKey::generate().unwrap());
    let fast = fake_peer_of(device.clone(), move |request| match request {
        Request::Tips => Some(wire::encode_ids(&[tip])),
        // The first round lists the first half, the second the rest.
        Request::Ids { after, .. } => {
            let (from, to) = if *after == 0 {
                (0, half)
            } else {
                (half, ids.len())
            };
            let page = IdsPage {
                ids: ids[from..to].to_vec(),
                next: to as u64,
                more: false,
            };
            Some(page.encode())
        }
        // In the second round, the first reply leaves out the first entry asked for (its
        // children wait for it), and comes late: by then another round holds the room.
        Request::Get(asked) if asked[0] == ids[half] => {
            told.store(true, Ordering::Release);
            thread::sleep(Duration::from_millis(500));
            Some(entries_asked(&good, &asked[1..]))
        }
        Request::Get(asked) => Some(entries_asked(&good, asked)),
        Request::Have(ids) => Some(wire::encode_flags(&vec![true; ids.len()])),
        _ => Some(wire::encode_entries(&[])),
    });
    let other = chain_of(&owner, &writer, &[], 1);
    let other_ids: Vec<EntryId> = other.iter().map(|e| e.id()).collect();
    let other_tip = *other_ids.last().unwrap();
    let slow = fake_peer(move |request| match request {
        Request::Tips => Some(wire::encode_ids(&[other_tip])),
        Request::Ids { .. } => Some(whole_page(&other_ids)),
        _ => None, // trickled
    });
    let backend = Arc::new(MemoryBackend::new());
    let c = Instance::open(backend.clone()).unwrap();
    c.create_user("carol", None).unwrap();
    let carol = c.login("carol", None).unwrap();
    let sync = c.enable_sync().unwrap();
    let message = wire::MAX_MESSAGE as u64;
    sync.set_limits_by_name(&[
        ("max_received_bytes", message * 3 / 2),
        ("queue_timeout_ms", 1500),
        ("request_timeout_ms", 5000),
        ("watch_timeout_ms", 2000),
    ])
    .unwrap();
    sync.sync_db(&carol, &fast, &db).unwrap(); // the first half: the cursor past it
    thread::scope(|scope| {
        let second = scope.spawn(|| sync.sync_db(&carol, &fast, &db));
        while !asked_again.load(Ordering::Acquire) {
            thread::sleep(Duration::from_millis(5));
        }
        // Takes the room the late reply gives back, and holds it while its reply trickles.
        let holding = scope.spawn(|| sync.sync_db(&carol, &slow, &other[0].id()));
        let err = second.join().unwrap().unwrap_err();
        assert!(err.to_string().contains("max_received_bytes"), "{err}");
        assert!(holding.join().unwrap().is_err());
    });
    let restart = format!("sync-restart/{db}/{}/pull", device.public_key());
    assert_eq!(backend.meta_get(&restart).unwrap(), None);
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

#[test]
fn a_pull_takes_every_good_entry_and_refuses_each_bad_one_alone_in_any_order() {
    let (owner, writer) = (
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
    );
    let good = chain_of(&owner, &writer, &[], 300);
    let db = good[0].id();
    let data = |key: &str| -> Ops {
        let cell = [(key.to_string(), Op::Set("1".into()))]
            .into_iter()
            .collect();
        [("s".to_string(), cell)].into_iter().collect()
    };
    // Bad ones, each listed by the id of its bytes: a writer's entry after its revocation,
    // an entry with one bit of its signature flipped, one of another database, garbage.
    let revoked = on_top(&good, &writer, data("late"));
    let mut flipped = on_top(&good[..2], &owner, data("flipped")).bytes().to_vec();
    let at = flipped.len() - 10;
    flipped[at] ^= 1;
    let elsewhere = on_top(
        &chain_of(&writer, &owner, &[], 0),
        &writer,
        data("elsewhere"),
    );
    let bad: Vec<Vec<u8>> = vec![
        revoked.bytes().to_vec(),
        flipped,
        elsewhere.bytes().to_vec(),
        vec![0xa5; 300],
    ];
    // Bad ones mixed in the middle of the good ones; the listing is in reverse (children
    // before parents), in pages of 100; each reply holds at most 40 of the entries asked
    // for, in the order asked, plus replays of the first one.
    let mut sent: Vec<Vec<u8>> = good.iter().map(|e| e.bytes().to_vec()).collect();
    for (i, b) in bad.iter().enumerate() {
        sent.insert(50 + 60 * i, b.clone());
    }
    sent.reverse();
    let ids: Vec<EntryId> = sent.iter().map(|b| EntryId::of_bytes(b)).collect();
    let by_id: BTreeMap<EntryId, Vec<u8>> = ids.iter().copied().zip(sent.clone()).collect();
    let tip = good.last().unwrap().id();
    let addr = fake_peer(move |request| match request {
        Request::Tips => Some(wire::encode_ids(&[tip])),
        Request::Ids { after, .. } => Some(page_of(&ids, *after as usize, 100)),
        Request::Have(ids) => Some(wire::encode_flags(&vec![true; ids.len()])),
        Request::Get(asked) => {
            let mut reply: Vec<Vec<u8>> =
                asked.iter().take(40).map(|id| by_id[id].clone()).collect();
            let first = reply[0].clone();
            reply.insert(1, first.clone());
            reply.push(first);
            Some(wire::encode_entries(&reply))
        }
        _ => Some(wire::encode_entries(&[])),
    });
    let backend = Arc::new(MemoryBackend::new());
    let b = Instance::open(backend.clone()).unwrap();
    b.create_user("bob", None).unwrap();
    let bob = b.login("bob", None).unwrap();
    let err = b
        .enable_sync()
        .unwrap()
        .sync_db(&bob, &addr, &db)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt(m) if m.contains("sent 4 entries that failed")),
        "{err}"
    );
    let value = |key: &str| backend.cell(&db, "s", key).unwrap().and_then(|c| c.value);
    assert_eq!(backend.tips(&db).unwrap(), vec![(tip, 301)]);
    for i in 250..300 {
        assert_eq!(value(&format!("k{}", i % 50)), Some(i.to_string()));
    }
    for key in ["late", "flipped", "elsewhere"] {
        assert_eq!(value(key), None, "{key} taken");
    }
    // Synced again: the same tips, nothing to take.
    b.sync().unwrap().sync_db(&bob, &addr, &db).unwrap();
    assert_eq!(backend.tips(&db).unwrap(), vec![(tip, 301)]);
}

#[test]
fn a_reply_over_the_limits_ends_the_pull_after_taking_what_came_before() {
    let (owner, writer) = (
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
    );
    let good = chain_of(&owner, &writer, &[], 200);
    let db = good[0].id();
    // In order, replies of 40 entries; the third reply holds one entry over the largest.
    let mut sent: Vec<Vec<u8>> = good.iter().map(|e| e.bytes().to_vec()).collect();
    sent.insert(95, vec![1; mnemo::entry::MAX_ENTRY_BYTES + 1]);
    let ids: Vec<EntryId> = sent.iter().map(|b| EntryId::of_bytes(b)).collect();
    let by_id: BTreeMap<EntryId, Vec<u8>> = ids.iter().copied().zip(sent).collect();
    let tip = good.last().unwrap().id();
    let addr = fake_peer(move |request| match request {
        Request::Tips => Some(wire::encode_ids(&[tip])),
        Request::Ids { .. } => Some(whole_page(&ids)),
        Request::Get(asked) => Some(wire::encode_entries(
            &asked
                .iter()
                .take(40)
                .map(|id| by_id[id].clone())
                .collect::<Vec<_>>(),
        )),
        _ => Some(wire::encode_entries(&[])),
    });
    let backend = Arc::new(MemoryBackend::new());
    let c = Instance::open(backend.clone()).unwrap();
    c.create_user("carol", None).unwrap();
    let carol = c.login("carol", None).unwrap();
    let err = c
        .enable_sync()
        .unwrap()
        .sync_db(&carol, &addr, &db)
        .unwrap_err();
    assert!(matches!(err, Error::Network(_)), "{err}");
    // The two replies before it were taken, the second while the third was asked for.
    assert_eq!(backend.tips(&db).unwrap(), vec![(good[79].id(), 79)]);
}

/// The text of a hostile entry (a settings key, a value) reaches an error message only
/// quoted: at most 64 characters, with control characters escaped, however large or
/// strange what its author signed.
#[test]
fn an_entrys_text_reaches_an_error_message_short_and_escaped() {
    let (a, alice) = logged_in("alice");
    let db = alice.create_db("d").unwrap();
    let admin = PrivateKey::generate().unwrap();
    db.grant(&admin.public_key(), Permission::Admin).unwrap();
    let someone = PrivateKey::generate().unwrap().public_key();
    let huge_grant = (
        format!("auth/{someone}"),
        format!("\"{}\"", "x".repeat(1 << 20)),
        format!("'\"{}...'", "x".repeat(63)),
    );
    let forged_key = (
        "\u{1b}[2J\nINFO all good".to_string(),
        "\"n\"".to_string(),
        "'\\u{1b}[2J\\u{a}INFO all good'".to_string(),
    );
    for (key, json, shown) in [huge_grant, forged_key] {
        let entry =
            crate::foreign::on_tips(&db, &admin, crate::foreign::ops("_settings", &key, &json));
        let refused = a.receive_entry(entry.bytes()).unwrap_err();
        let message = refused.to_string();
        assert!(matches!(refused, Error::Corrupt(_)), "{message}");
        assert!(
            message.len() < 200,
            "{} bytes: {}",
            message.len(),
            &message[..200]
        );
        assert!(message.contains(&shown), "{message}");
        assert!(!message.contains(['\n', '\u{1b}']), "{message}");
    }
}
