//! Sync between instances over loopback (HTTP in TLS).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mnemo::crypto::{PrivateKey, PublicKey};
use mnemo::database::Permission;
use mnemo::entry::{EntryContent, EntryId, Op, Ops};
use mnemo::sync::holders::{key_hash, proof_message};
use mnemo::sync::wire::{self, Envelope, Request};
use mnemo::sync::Limits;
use mnemo::{Error, Instance};

use mnemo::backend::{Backend, MemoryBackend};

use crate::support::{
    http_exchange, http_post, logged_in, post_head, state, watched_logged_in, Instrumented,
};

/// Posts raw bytes to a sync endpoint; returns the HTTP status and body.
fn post_raw(addr: &str, endpoint: &str, body: &[u8]) -> (u16, Vec<u8>) {
    http_post(addr, &format!("/mnemo/sync/v1/{endpoint}"), body)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A signed request on `db` from `key` to the server `server`.
pub fn envelope(key: &PrivateKey, server: &Instance, db: EntryId, request: Request) -> Envelope {
    let mut env = Envelope {
        db,
        key: key.public_key(),
        server: server.device_id(),
        timestamp_ms: now_ms(),
        nonce: mnemo::crypto::random::bytes().unwrap(),
        request,
        signature: [0; 64],
    };
    env.signature = key.sign(&env.signed_part());
    env
}

#[test]
fn two_instances_converge_and_a_granted_user_gets_access() {
    let (a, alice) = logged_in("alice");
    let (b, bob) = logged_in("bob");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let sync_b = b.enable_sync().unwrap();
    assert_eq!(sync_b.connect(&addr).unwrap(), a.device_id());

    let db = alice.create_db("shared").unwrap();
    db.set("notes", "1", "\"from alice\"").unwrap();
    // Bob has no grant yet: refused, and nothing of the database reaches him.
    assert!(matches!(
        sync_b.sync_db(&bob, &addr, &db.id()),
        Err(Error::PermissionDenied(_))
    ));
    assert!(bob.load_db(&db.id()).unwrap_err().is_not_found());

    db.grant(&bob.default_key().unwrap(), Permission::Write)
        .unwrap();
    let report = sync_b.sync_db(&bob, &addr, &db.id()).unwrap();
    assert_eq!(report.pulled, 3);
    let copy = bob.load_db(&db.id()).unwrap();
    assert_eq!(copy.get("notes", "1").unwrap(), "\"from alice\"");

    // Concurrent edits on both sides, then one round: identical state and tips.
    for i in 0..20 {
        db.set("notes", &format!("a{i}"), &i.to_string()).unwrap();
        copy.set("notes", &format!("b{i}"), &i.to_string()).unwrap();
    }
    db.set("notes", "both", "\"alice\"").unwrap();
    copy.set("notes", "both", "\"bob\"").unwrap();
    let report = sync_b.sync_db(&bob, &addr, &db.id()).unwrap();
    assert_eq!((report.pulled, report.pushed), (21, 21));
    assert_eq!(state(&db, "notes"), state(&copy, "notes"));
    assert_eq!(db.tips().unwrap(), copy.tips().unwrap());
    // Nothing left to move.
    let again = sync_b.sync_db(&bob, &addr, &db.id()).unwrap();
    assert_eq!((again.pulled, again.pushed), (0, 0));
}

/// Rounds that only move entries write no entry of `_sync`: the cursors live in instance
/// metadata, replaced in place, so `_sync` does not grow with each round.
#[test]
fn rounds_do_not_grow_the_sync_state() {
    let (a, alice) = logged_in("alice");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("shared").unwrap();
    let storage = Arc::new(MemoryBackend::new());
    let b = Instance::open(storage.clone()).unwrap();
    b.create_user("bob", None).unwrap();
    let bob = b.login("bob", None).unwrap();
    db.grant(&bob.default_key().unwrap(), Permission::Write)
        .unwrap();
    let sync_b = b.enable_sync().unwrap();
    sync_b.sync_db(&bob, &addr, &db.id()).unwrap();
    let copy = bob.load_db(&db.id()).unwrap();
    let before = sync_state_position(&storage);
    for i in 0..5 {
        db.set("notes", &format!("a{i}"), "1").unwrap();
        copy.set("notes", &format!("b{i}"), "2").unwrap();
        let report = sync_b.sync_db(&bob, &addr, &db.id()).unwrap();
        assert_eq!((report.pulled, report.pushed), (1, 1), "round {i}");
    }
    assert_eq!(sync_state_position(&storage), before);
    assert_eq!(state(&db, "notes"), state(&copy, "notes"));
}

/// Nor do restarts: a peer proved again by a new engine is recorded in `_sync` only the
/// first time it is seen.
#[test]
fn restarts_do_not_grow_the_sync_state() {
    let (a, alice) = logged_in("alice");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("shared").unwrap();
    let storage = Arc::new(MemoryBackend::new());
    let mut positions = Vec::new();
    for restart in 0..4 {
        let b = Instance::open(storage.clone()).unwrap();
        if restart == 0 {
            b.create_user("bob", None).unwrap();
        }
        let bob = b.login("bob", None).unwrap();
        db.grant(&bob.default_key().unwrap(), Permission::Write)
            .unwrap();
        b.enable_sync()
            .unwrap()
            .sync_db(&bob, &addr, &db.id())
            .unwrap();
        positions.push(sync_state_position(&storage));
    }
    assert!(positions.windows(2).all(|w| w[0] == w[1]), "{positions:?}");
}

/// How many entries the `_sync` database of the instance on `storage` has stored.
fn sync_state_position(storage: &MemoryBackend) -> u64 {
    let sync_state = storage.meta_get("system/_sync").unwrap().unwrap();
    let sync_state = EntryId::parse(std::str::from_utf8(&sync_state).unwrap()).unwrap();
    storage.last_position(&sync_state).unwrap()
}

/// Whichever single write fails while a database is pulled (an entry, a cursor, a record
/// of `_sync`), the round says so and the next round completes the copy: no cursor moves
/// past an entry that was not stored.
#[test]
fn a_pull_stopped_by_a_failed_write_is_completed_by_the_next_round() {
    let (a, alice) = logged_in("alice");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("shared").unwrap();
    for i in 0..6 {
        db.set("notes", &i.to_string(), &i.to_string()).unwrap();
    }
    let storage = Arc::new(MemoryBackend::new());
    let setup = Instance::open(storage.clone()).unwrap();
    setup.create_user("bob", None).unwrap();
    setup.enable_sync().unwrap();
    let bob_key = setup.login("bob", None).unwrap().default_key().unwrap();
    db.grant(&bob_key, Permission::Read).unwrap();
    drop(setup);
    // Each attempt starts from nothing: the copy of the attempt before is forgotten, and
    // with it the sync cursors.
    for fail_at in 0.. {
        let stopping = Instrumented::stopping(storage.clone(), fail_at, false);
        let b = Instance::open(stopping.clone()).unwrap();
        let bob = b.login("bob", None).unwrap();
        let copy_of = || -> Result<_, Error> {
            b.enable_sync()?.sync_db(&bob, &addr, &db.id())?;
            bob.load_db(&db.id())
        };
        let first = copy_of();
        let copy = first.or_else(|_| copy_of()).or_else(|_| copy_of());
        let what = format!("write {fail_at} failed");
        let copy = copy.unwrap_or_else(|e| panic!("{what}: three rounds did not copy: {e}"));
        assert_eq!(copy.tips().unwrap(), db.tips().unwrap(), "{what}");
        assert_eq!(state(&copy, "notes"), state(&db, "notes"), "{what}");
        if stopping.writes_tried() <= fail_at {
            break; // the copy needed fewer writes: every one of them has failed once
        }
        bob.forget_db(&db.id()).unwrap();
    }
}

/// A server that forgets a database and pulls it again from another device hands out new
/// storage positions to its copy, never ones it gave before: a client whose cursor was
/// saved on the old copy gets every entry of the new one it lacks, on every storage, by
/// its cursor alone (its pull does not have to start again from the beginning).
#[test]
fn a_server_forgetting_a_database_and_pulling_it_again_keeps_its_clients_cursors_good() {
    for storage in crate::support::storages() {
        let name = storage.name();
        let server = Instance::open(storage.open()).unwrap();
        server.create_user("sam", None).unwrap();
        let sam = server.login("sam", None).unwrap();
        let server_sync = server.enable_sync().unwrap();
        let server_addr = server_sync.listen("127.0.0.1:0").unwrap();
        let (x, xena) = logged_in("xena");
        let x_sync = x.enable_sync().unwrap();
        let x_addr = x_sync.listen("127.0.0.1:0").unwrap();
        let carl_storage = Arc::new(MemoryBackend::new());
        let c = Instance::open(carl_storage.clone()).unwrap();
        c.create_user("carl", None).unwrap();
        let carl = c.login("carl", None).unwrap();
        let c_sync = c.enable_sync().unwrap();

        let db = sam.create_db("shared").unwrap();
        let id = db.id();
        db.grant(&xena.default_key().unwrap(), Permission::Admin)
            .unwrap();
        db.grant(&carl.default_key().unwrap(), Permission::Read)
            .unwrap();
        x_sync.sync_db(&xena, &server_addr, &id).unwrap();
        let on_x = xena.load_db(&id).unwrap();
        // Xena's entries come early in her storage order; the server does not have them.
        for i in 0..40 {
            on_x.set("notes", &format!("x{i}"), "1").unwrap();
        }
        for i in 0..60 {
            db.set("notes", &format!("s{i}"), "1").unwrap();
        }
        // Carl's cursor on the server: past all of its first copy.
        c_sync.sync_db(&carl, &server_addr, &id).unwrap();
        let on_c = carl.load_db(&id).unwrap();
        // Xena gets the server's later entries (her storage order: the server's first, hers,
        // the server's later); the server forgets the database and pulls it again from her, so
        // its new copy holds entries Carl lacks early in its order: were positions handed out
        // again, they would lie before his cursor.
        x_sync.sync_db(&xena, &server_addr, &id).unwrap();
        drop(db);
        sam.forget_db(&id).unwrap();
        server_sync.sync_db(&sam, &x_addr, &id).unwrap();
        let again = sam.load_db(&id).unwrap();
        assert_eq!(again.get_all("notes").unwrap().len(), 100, "{name}");

        c_sync.sync_db(&carl, &server_addr, &id).unwrap();
        assert_eq!(on_c.tips().unwrap(), again.tips().unwrap(), "{name}");
        assert_eq!(state(&on_c, "notes"), state(&again, "notes"), "{name}");
        let restart = format!("sync-restart/{id}/{}/pull", server.device_id());
        assert_eq!(carl_storage.meta_get(&restart).unwrap(), None, "{name}");
    }
}

/// A SQLite server, and a way to restore its file from a copy taken earlier: each
/// `serve` opens an instance on the file and listens.
struct Restorable {
    dir: crate::support::TempDir,
    url: String,
}

impl Restorable {
    fn new() -> Restorable {
        let dir = crate::support::TempDir::new();
        let url = format!("sqlite:{}", dir.0.join("server.db").display());
        Restorable { dir, url }
    }

    /// The server's instance (sam's account created the first time) and its address.
    fn serve(&self) -> (Instance, mnemo::User, String) {
        let server = Instance::open(mnemo::backend::open(&self.url).unwrap()).unwrap();
        if server.list_users().unwrap().is_empty() {
            server.create_user("sam", None).unwrap();
        }
        let addr = server.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
        let sam = server.login("sam", None).unwrap();
        (server, sam, addr)
    }

    /// The file's bytes (the server closed).
    fn backup(&self) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let files = std::fs::read_dir(&self.dir.0).unwrap();
        (files.map(|f| f.unwrap().path()))
            .map(|path| (path.clone(), std::fs::read(path).unwrap()))
            .collect()
    }

    /// Puts the files of `backup` back in place of the server's (the server closed).
    fn restore(&self, backup: &[(std::path::PathBuf, Vec<u8>)]) {
        for file in std::fs::read_dir(&self.dir.0).unwrap() {
            std::fs::remove_file(file.unwrap().path()).unwrap();
        }
        for (path, bytes) in backup {
            crate::support::write_private(path, bytes);
        }
    }
}

fn write_notes(db: &mnemo::Database, prefix: &str, count: usize) {
    for i in 0..count {
        db.set("notes", &format!("{prefix}{i}"), "1").unwrap();
    }
}

/// Carl, who may write sam's database "shared" on `server` and pulled its `pulled` notes,
/// and the server's files as they were once it then wrote `more` notes (it is closed).
struct BackedUp {
    instance: Instance,
    carl: mnemo::User,
    sync: Arc<mnemo::sync::SyncEngine>,
    id: EntryId,
    backup: Vec<(std::path::PathBuf, Vec<u8>)>,
}

impl BackedUp {
    fn new(server: &Restorable, pulled: usize, more: usize) -> BackedUp {
        let (s, sam, addr) = server.serve();
        let (instance, carl) = logged_in("carl");
        let sync = instance.enable_sync().unwrap();
        let db = sam.create_db("shared").unwrap();
        let id = db.id();
        db.grant(&carl.default_key().unwrap(), Permission::Write)
            .unwrap();
        write_notes(&db, "before", pulled);
        sync.sync_db(&carl, &addr, &id).unwrap();
        write_notes(&db, "just before the backup", more);
        drop((db, sam, s));
        BackedUp {
            instance,
            carl,
            sync,
            id,
            backup: server.backup(),
        }
    }

    /// A round of Carl's with the server at `addr`.
    fn round(&self, addr: &str) -> mnemo::sync::SyncReport {
        self.sync.sync_db(&self.carl, addr, &self.id).unwrap()
    }

    /// After the backup: the server writes 30 entries, Carl pulls them and pushes 10 (two
    /// rounds: his cursor there is then past his own entries). Carl's copy.
    fn pull_what_the_server_loses(&self, server: &Restorable) -> mnemo::Database {
        let (s, sam, addr) = server.serve();
        write_notes(&sam.load_db(&self.id).unwrap(), "lost", 30);
        let on_c = self.carl.load_db(&self.id).unwrap();
        write_notes(&on_c, "carl", 10);
        self.round(&addr);
        self.round(&addr);
        drop((sam, s));
        on_c
    }
}

/// A server whose SQLite file is restored from a backup hands out again the positions it
/// had handed out since (to other entries): a client whose pull, after its cursor, leaves
/// the server's tips missing pulls again from the beginning, and one whose tips the server
/// lacks with nothing left to push pushes again from the beginning: it gets the server's
/// new entries and pushes back what the server lost (its own and the client's).
#[test]
fn a_server_restored_from_a_backup_and_its_client_converge_again() {
    let server = Restorable::new();
    let carl = BackedUp::new(&server, 20, 0);
    let on_c = carl.pull_what_the_server_loses(&server);

    // Restored: its positions after the backup go to 40 new entries.
    server.restore(&carl.backup);
    let (_s, sam, addr) = server.serve();
    let restored = sam.load_db(&carl.id).unwrap();
    assert_eq!(restored.get_all("notes").unwrap().len(), 20);
    write_notes(&restored, "after", 40);

    carl.round(&addr);
    assert_eq!(on_c.get_all("notes").unwrap().len(), 100);
    assert_eq!(state(&on_c, "notes"), state(&restored, "notes"));
    assert_eq!(on_c.tips().unwrap(), restored.tips().unwrap());
}

/// A restored server writing more new entries past a client's cursor than a round leaves
/// waiting for parents (1,024; 2,200 written: the third page is asked for with more
/// waiting), or than its waiting area holds: each listed after the cursor waits for one
/// listed before it, and the pull starts again from the beginning at once (each round
/// ended BUSY, a page further on, until the pages ended; with the area full, for good).
#[test]
fn a_restored_server_with_more_new_entries_than_can_wait_converges_at_once() {
    for (name, waiting_area, written) in [("round", None, 2_200), ("area", Some(100), 300)] {
        let server = Restorable::new();
        let carl = BackedUp::new(&server, 20, 0);
        if let Some(entries) = waiting_area {
            let limit = [("waiting_entries_per_database", entries)];
            carl.instance.set_limits_by_name(&limit).unwrap();
        }
        let on_c = carl.pull_what_the_server_loses(&server);
        server.restore(&carl.backup);
        let (_s, sam, addr) = server.serve();
        let restored = sam.load_db(&carl.id).unwrap();
        write_notes(&restored, "after", written);

        carl.round(&addr);
        let all = on_c.get_all("notes").unwrap();
        assert_eq!(all.len(), 20 + 30 + 10 + written, "{name}");
        assert_eq!(state(&on_c, "notes"), state(&restored, "notes"), "{name}");
        assert_eq!(on_c.tips().unwrap(), restored.tips().unwrap(), "{name}");
    }
}

/// A client whose last round pushed entries the server then lost (restored from a backup
/// taken after the client's last pull: everything the server lists is still as it was) pushes
/// them again: its tips differ from the server's once the server's are here, it has nothing
/// new to push, and the server does not hold its tips. Here the round that pushed them also
/// pulled entries the server wrote just before the backup (the audit's case: a check of the
/// last entry the server held or took, by the client's order, found one of those).
#[test]
fn entries_pushed_to_a_server_later_restored_from_a_backup_are_pushed_again() {
    let server = Restorable::new();
    let carl = BackedUp::new(&server, 20, 3);

    // More than a page of Carl's (written before the round that pulls those 3).
    let (s, _sam, addr) = server.serve();
    let on_c = carl.carl.load_db(&carl.id).unwrap();
    write_notes(&on_c, "carl", 1_100);
    let report = carl.round(&addr);
    assert_eq!((report.pulled, report.pushed), (3, 1_100));
    drop((_sam, s));

    server.restore(&carl.backup);
    let (_s, sam, addr) = server.serve();
    let report = carl.round(&addr);
    assert_eq!((report.pulled, report.pushed), (0, 1_100));
    let restored = sam.load_db(&carl.id).unwrap();
    assert_eq!(state(&on_c, "notes"), state(&restored, "notes"));
    assert_eq!(on_c.tips().unwrap(), restored.tips().unwrap());
}

/// A client that goes on writing after its server was restored from a backup: its next
/// round pushes the new entry, which waits there for parents the server lost (and the
/// server answers `have` for it as held); the round after, with nothing to send, finds the
/// server's tips all here and still different, and pushes again from the beginning.
/// (Before, a check asking whether the server held the client's tips found them: waiting.)
#[test]
fn a_client_writing_on_after_its_server_was_restored_pushes_what_the_server_lost() {
    let server = Restorable::new();
    let carl = BackedUp::new(&server, 5, 0);
    let (s, sam, addr) = server.serve();
    let on_c = carl.carl.load_db(&carl.id).unwrap();
    write_notes(&on_c, "lost", 10);
    assert_eq!(carl.round(&addr).pushed, 10);
    drop((sam, s));

    server.restore(&carl.backup);
    let (_s, sam, addr) = server.serve();
    write_notes(&on_c, "after", 1);
    assert_eq!(carl.round(&addr).pushed, 1);
    assert_eq!(carl.round(&addr).pushed, 10);
    let restored = sam.load_db(&carl.id).unwrap();
    assert_eq!(state(&on_c, "notes"), state(&restored, "notes"));
    assert_eq!(on_c.tips().unwrap(), restored.tips().unwrap());
}

/// Clients that took an entry from a server before it was restored from a backup, and push
/// it back, cannot hide from a third the entry the server wrote at that position since: the
/// third's pull, after its cursor, does not list it, but the server's tips it then lacks
/// make the pull start again from the beginning. (The audit's case against a check of the
/// entry at the cursor's position alone: it was unchanged, and the entry was skipped.)
#[test]
fn a_pull_that_leaves_the_servers_tips_missing_starts_again_from_the_beginning() {
    let server = Restorable::new();
    let (s, sam, addr) = server.serve();
    let db = sam.create_db("shared").unwrap();
    let id = db.id();
    let clients: Vec<_> = ["bea", "dan", "ann"]
        .into_iter()
        .map(|name| {
            let (instance, user) = logged_in(name);
            let sync = instance.enable_sync().unwrap();
            db.grant(&user.default_key().unwrap(), Permission::Write)
                .unwrap();
            (instance, user, sync)
        })
        .collect();
    let round = |(_, user, sync): &(Instance, mnemo::User, _), addr: &str| {
        let sync: &Arc<mnemo::sync::SyncEngine> = sync;
        sync.sync_db(user, addr, &id).unwrap()
    };
    for client in &clients {
        round(client, &addr);
    }
    drop((db, sam, s));
    let backup = server.backup();

    // Bea pushes b; Dan pulls it and pushes d; Ann pulls both.
    let (s, sam, addr) = server.serve();
    let [bea, dan, ann] = &clients[..] else {
        unreachable!()
    };
    write_notes(&bea.1.load_db(&id).unwrap(), "b", 1);
    round(bea, &addr);
    round(dan, &addr);
    write_notes(&dan.1.load_db(&id).unwrap(), "d", 1);
    round(dan, &addr);
    round(ann, &addr);
    drop((sam, s));

    // Restored: the server writes z at b's old position; Dan's round brings b and d back.
    server.restore(&backup);
    let (_s, sam, addr) = server.serve();
    let restored = sam.load_db(&id).unwrap();
    write_notes(&restored, "z", 1);
    round(dan, &addr);
    round(ann, &addr);
    let on_ann = ann.1.load_db(&id).unwrap();
    assert_eq!(state(&on_ann, "notes"), state(&restored, "notes"));
    assert_eq!(on_ann.tips().unwrap(), restored.tips().unwrap());
}

/// Whichever single write fails at the listener while entries are pushed to it, the round
/// says to retry and the next round pushes what was refused: the push cursor stays.
#[test]
fn a_push_refused_by_a_failed_write_is_sent_again_next_round() {
    let (b, bob) = logged_in("bob");
    let sync_b = b.enable_sync().unwrap();
    let storage = Arc::new(MemoryBackend::new());
    let setup = Instance::open(storage.clone()).unwrap();
    setup.create_user("alice", None).unwrap();
    let alice = setup.login("alice", None).unwrap();
    let alice_db = alice.create_db("shared").unwrap();
    alice_db
        .grant(&bob.default_key().unwrap(), Permission::Write)
        .unwrap();
    let addr = setup.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db_id = alice_db.id();
    sync_b.sync_db(&bob, &addr, &db_id).unwrap();
    drop((alice_db, alice, setup));

    let stopping = Instrumented::new(storage);
    let a = Instance::open(stopping.clone()).unwrap();
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let copy = bob.load_db(&db_id).unwrap();
    let alice = a.login("alice", None).unwrap();
    let db = alice.load_db(&db_id).unwrap();
    for k in 0.. {
        for i in 0..3 {
            copy.set("notes", &format!("{k}-{i}"), "1").unwrap();
        }
        let fail_at = stopping.fail_write_in(k);
        let what = format!("the listener's write {k} of the push failed");
        if let Err(e) = sync_b.sync_db(&bob, &addr, &db_id) {
            assert!(matches!(e, Error::Busy(_)), "{what}: {e}");
            sync_b.sync_db(&bob, &addr, &db_id).unwrap();
        }
        assert_eq!(db.tips().unwrap(), copy.tips().unwrap(), "{what}");
        assert_eq!(state(&db, "notes"), state(&copy, "notes"), "{what}");
        if stopping.writes_tried() <= fail_at {
            break; // the push needed fewer writes: every one of them has failed once
        }
    }
}

/// Entries received by the hundred share storage commits, a part of up to 64 to a commit,
/// both pulled by a client and pushed to a listener (one commit each took a pull of 10,000
/// small entries 27 s into a SQLite file whose `fsync` takes 3 ms).
#[test]
fn received_entries_share_storage_commits_pulled_and_pushed() {
    const NOTES: usize = 300;
    let (a, alice) = logged_in("alice");
    let addr_a = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("shared").unwrap();
    write_notes(&db, "a", NOTES);
    let (storage, b, bob) = watched_logged_in("bob");
    db.grant(&bob.default_key().unwrap(), Permission::Write)
        .unwrap();
    let sync_b = b.enable_sync().unwrap();

    let before = storage.storage_commits();
    sync_b.sync_db(&bob, &addr_a, &db.id()).unwrap();
    let pulled = storage.storage_commits() - before;
    let copy = bob.load_db(&db.id()).unwrap();
    assert_eq!(state(&copy, "notes"), state(&db, "notes"));
    // The root, then the rest by parts (the replies' boundaries add a few).
    assert!(
        pulled <= 2 + NOTES / 32,
        "{pulled} commits for {NOTES} entries pulled"
    );

    // Pushed the other way: bob's listener takes alice's new notes.
    let addr_b = sync_b.listen("127.0.0.1:0").unwrap();
    write_notes(&db, "b", NOTES);
    let before = storage.storage_commits();
    a.enable_sync()
        .unwrap()
        .sync_db(&alice, &addr_b, &db.id())
        .unwrap();
    let pushed = storage.storage_commits() - before;
    assert_eq!(state(&copy, "notes"), state(&db, "notes"));
    assert!(
        pushed <= 2 + NOTES / 32,
        "{pushed} commits for {NOTES} entries pushed"
    );
    copy.verify().unwrap();
}

/// Entries that can take long to work out (path writes, which read their key's whole value;
/// settings changes) are taken alone, outside any write turn, so that working one out never
/// holds the storage's writer (on SQLite, every other database of the file): each is a
/// storage commit of its own, while the plain entries around them share theirs.
#[test]
fn received_path_writes_and_settings_changes_are_taken_alone() {
    let (a, alice) = logged_in("alice");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("shared").unwrap();
    let (storage, b, bob) = watched_logged_in("bob");
    db.grant(&bob.default_key().unwrap(), Permission::Read)
        .unwrap();
    let sync_b = b.enable_sync().unwrap();
    sync_b.sync_db(&bob, &addr, &db.id()).unwrap();

    db.set("docs", "d", "{}").unwrap();
    for i in 0..20 {
        db.set_path("docs", "d", &format!("/p{i}"), "1").unwrap();
    }
    for i in 0..10 {
        let key = PrivateKey::generate().unwrap().public_key();
        db.grant(&key, Permission::Read).unwrap();
        db.set("notes", &i.to_string(), "1").unwrap();
    }
    let before = storage.storage_commits();
    sync_b.sync_db(&bob, &addr, &db.id()).unwrap();
    let commits = storage.storage_commits() - before;
    // 30 taken alone; the 11 plain entries share commits between them.
    assert!(
        commits >= 30,
        "{commits} commits for 30 entries to take alone"
    );
    let copy = bob.load_db(&db.id()).unwrap();
    assert_eq!(copy.get("docs", "d").unwrap(), db.get("docs", "d").unwrap());
    copy.verify().unwrap();
}

/// A part of received entries whose storage commit failed is taken as not received at all:
/// subscribers hear nothing of it, no cursor moves past it, and the next round takes it.
#[test]
fn received_entries_whose_storage_commit_failed_are_taken_again_next_round() {
    use std::sync::mpsc::channel;
    let (a, alice) = logged_in("alice");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("shared").unwrap();
    write_notes(&db, "a", 5);
    let (storage, b, bob) = watched_logged_in("bob");
    db.grant(&bob.default_key().unwrap(), Permission::Read)
        .unwrap();
    let sync_b = b.enable_sync().unwrap();
    sync_b.sync_db(&bob, &addr, &db.id()).unwrap();
    let copy = bob.load_db(&db.id()).unwrap();
    let (tx, rx) = channel();
    let _sub = copy
        .subscribe(Box::new(move |c| tx.send(c.entry).unwrap()))
        .unwrap();

    write_notes(&db, "b", 20);
    let tips_before = copy.tips().unwrap();
    storage.roll_back_next_turn();
    let failed = sync_b.sync_db(&bob, &addr, &db.id());
    assert!(matches!(failed, Err(Error::Storage(_))), "{failed:?}");
    copy.flush_notifications(Duration::from_secs(10)).unwrap();
    assert!(
        rx.try_recv().is_err(),
        "heard of entries that were not stored"
    );
    assert_eq!(copy.tips().unwrap(), tips_before);

    sync_b.sync_db(&bob, &addr, &db.id()).unwrap();
    assert_eq!(state(&copy, "notes"), state(&db, "notes"));
    copy.flush_notifications(Duration::from_secs(10)).unwrap();
    let heard: Vec<EntryId> = rx.try_iter().collect();
    assert_eq!(heard.len(), 20, "each new entry heard once");
    copy.verify().unwrap();
}

/// `have` answers for entries of the database asked about only: a reader of one database
/// learns nothing of which entries of another the listener holds.
#[test]
fn have_answers_only_for_the_database_asked_about() {
    let (a, alice) = logged_in("alice");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let open = alice.create_db("open").unwrap();
    let secret = alice.create_db("secret").unwrap();
    let hidden = secret.set("s", "k", "1").unwrap();
    let shown = open.set("s", "k", "1").unwrap();
    let reader = PrivateKey::generate().unwrap();
    open.grant(&reader.public_key(), Permission::Read).unwrap();
    let have = envelope(
        &reader,
        &a,
        open.id(),
        Request::Have(vec![shown, hidden, secret.id()]),
    );
    let (status, body) = post_raw(&addr, "db", &have.encode());
    assert_eq!(status, 200);
    assert_eq!(wire::decode_flags(&body).unwrap(), vec![true, false, false]);
}

/// Asking which entries are held (`have`, and a pull's listing) reads no entry: storage
/// checks an entry's row with its bytes (up to 16 MiB), so a reader asking about a
/// thousand entries held made the listener read and hash every one of them. And `get` reads
/// each entry sent once. (Before: `have` read each entry past the 128 kept in memory, and
/// `get` each one twice.)
#[test]
fn asking_which_entries_are_held_reads_no_entry() {
    let (storage, a, alice) = watched_logged_in("alice");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("shared").unwrap();
    let mut ids: Vec<EntryId> = (0..300)
        .map(|i| db.set("s", &format!("k{i}"), "1").unwrap())
        .collect();
    ids.push(db.id());
    let reader = PrivateKey::generate().unwrap();
    db.grant(&reader.public_key(), Permission::Read).unwrap();
    let reads = |storage: &Instrumented| {
        (
            storage.entry_meta_reads.load(Ordering::SeqCst),
            storage.entry_reads.load(Ordering::SeqCst),
        )
    };
    let before = reads(&storage);
    let have = envelope(&reader, &a, db.id(), Request::Have(ids.clone()));
    let (status, body) = post_raw(&addr, "db", &have.encode());
    assert_eq!(status, 200);
    assert_eq!(wire::decode_flags(&body).unwrap(), vec![true; ids.len()]);
    // The request's own checks (the reader's rights) read a metadata row or two.
    let after = reads(&storage);
    assert!(
        after.0 - before.0 <= 2 && after.1 == before.1,
        "{before:?} {after:?}: entries read to answer 'have'"
    );
    let get = envelope(&reader, &a, db.id(), Request::Get(ids[..100].to_vec()));
    let (status, body) = post_raw(&addr, "db", &get.encode());
    assert_eq!(status, 200);
    assert_eq!(wire::decode_entries(&body).unwrap().len(), 100);
    let (before, after) = (after, reads(&storage));
    assert!(
        after.0 - before.0 <= 2 && after.1 - before.1 == 100,
        "{before:?} {after:?}: reads to answer 'get'"
    );

    // A pull listing the 300 entries the client holds, and two more: the client reads none
    // of them to tell they are held.
    let (client_storage, b, bob) = watched_logged_in("bob");
    db.grant(&bob.default_key().unwrap(), Permission::Write)
        .unwrap();
    let sync_b = b.enable_sync().unwrap();
    sync_b.sync_db(&bob, &addr, &db.id()).unwrap();
    // Asked of another peer holding the database (no cursor there yet: it lists everything),
    // which has two entries more (carol's grant and a value).
    db.set("s", "new", "2").unwrap();
    let other = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
    let relay = other.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    other.create_user("carol", None).unwrap();
    let carol = other.login("carol", None).unwrap();
    db.grant(&carol.default_key().unwrap(), Permission::Write)
        .unwrap();
    other
        .sync()
        .unwrap()
        .sync_db(&carol, &addr, &db.id())
        .unwrap();
    let before = reads(&client_storage);
    let report = sync_b.sync_db(&bob, &relay, &db.id()).unwrap();
    assert_eq!(report.pulled, 2);
    let (meta_reads, entry_reads) = reads(&client_storage);
    assert!(
        meta_reads - before.0 <= 10 && entry_reads - before.1 <= 10,
        "the client read {} entries' metadata and {} entries to take two",
        meta_reads - before.0,
        entry_reads - before.1
    );
}

#[test]
fn requests_are_authenticated_fresh_and_bounded() {
    let (a, alice) = logged_in("alice");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("private").unwrap();
    db.set("s", "secret", "\"x\"").unwrap();
    let reader = PrivateKey::generate().unwrap();
    db.grant(&reader.public_key(), Permission::Read).unwrap();
    let stranger = PrivateKey::generate().unwrap();

    // A stranger learns nothing, whatever it asks.
    for request in [
        Request::Tips,
        Request::Ids {
            after: 0,
            limit: 10,
        },
        Request::Get(vec![db.id()]),
        Request::Have(vec![db.id()]),
        Request::Holders {
            salt: [0; 16],
            hashes: vec![key_hash(&[0; 16], &alice.default_key().unwrap())],
        },
    ] {
        let (status, body) = post_raw(
            &addr,
            "db",
            &envelope(&stranger, &a, db.id(), request).encode(),
        );
        assert_eq!(status, 403);
        assert_eq!(wire::ErrorReply::decode(&body).unwrap().status, 5);
    }
    // A reader's request works once; replayed, it is refused.
    let request = envelope(&reader, &a, db.id(), Request::Tips).encode();
    assert_eq!(post_raw(&addr, "db", &request).0, 200);
    assert_eq!(post_raw(&addr, "db", &request).0, 403);
    // Stale, redirected, and tampered requests are refused.
    let mut stale = envelope(&reader, &a, db.id(), Request::Tips);
    stale.timestamp_ms -= 10 * 60 * 1000;
    stale.signature = reader.sign(&stale.signed_part());
    assert_eq!(post_raw(&addr, "db", &stale.encode()).0, 403);
    let mut redirected = envelope(&reader, &a, db.id(), Request::Tips);
    redirected.server = reader.public_key();
    redirected.signature = reader.sign(&redirected.signed_part());
    assert_eq!(post_raw(&addr, "db", &redirected.encode()).0, 403);
    let mut tampered = envelope(
        &reader,
        &a,
        db.id(),
        Request::Ids {
            after: 0,
            limit: 10,
        },
    )
    .encode();
    let at = tampered.len() - 70;
    tampered[at] ^= 1;
    assert_eq!(post_raw(&addr, "db", &tampered).0, 403);
    // Garbage, truncation, an unknown version, an oversized body: errors, and the server
    // goes on serving.
    assert_eq!(post_raw(&addr, "db", b"garbage").0, 400);
    assert_eq!(post_raw(&addr, "db", &request[..request.len() / 2]).0, 400);
    let mut future = request.clone();
    future[0] = 9;
    let (status, body) = post_raw(&addr, "db", &future);
    assert_eq!(status, 400);
    assert!(wire::ErrorReply::decode(&body)
        .unwrap()
        .message
        .contains("version 9"));
    // A body announced larger than the largest message is refused before it is read.
    let oversized = post_head(&addr, "/mnemo/sync/v1/db", wire::MAX_MESSAGE as u64 + 1);
    assert_eq!(http_exchange(&addr, oversized.as_bytes()).unwrap().0, 400);
    assert_eq!(post_raw(&addr, "nowhere", b"").0, 404);
    let fresh = envelope(&reader, &a, db.id(), Request::Tips).encode();
    assert_eq!(post_raw(&addr, "db", &fresh).0, 200);
}

#[test]
fn pushed_entries_are_verified_before_they_are_visible() {
    let (a, alice) = logged_in("alice");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("d").unwrap();
    let first = db.set("s", "k", "1").unwrap();
    let writer = PrivateKey::generate().unwrap();
    db.grant(&writer.public_key(), Permission::Write).unwrap();
    let reader = PrivateKey::generate().unwrap();
    db.grant(&reader.public_key(), Permission::Read).unwrap();
    let tips = db.tips().unwrap();

    let entry = |author: &PrivateKey, value: &str| {
        let mut ops = Ops::new();
        ops.entry("s".into())
            .or_default()
            .insert("k".into(), Op::Set(value.into()));
        EntryContent {
            db: Some(db.id()),
            parents: tips.clone(),
            height: 4,
            ops,
            author: author.public_key(),
        }
        .sign(author)
        .unwrap()
    };
    let unauthorised = entry(&reader, "\"reader\"").bytes().to_vec();
    let mut forged = entry(&writer, "\"forged\"").bytes().to_vec();
    *forged.last_mut().unwrap() ^= 1;
    let mut tampered = entry(&writer, "\"tampered\"").bytes().to_vec();
    let at = tampered.len() - 100;
    tampered[at] ^= 1;
    let good = entry(&writer, "\"good\"").bytes().to_vec();
    let push = Request::Push(vec![unauthorised, forged, tampered, good]);
    let (status, body) = post_raw(&addr, "db", &envelope(&reader, &a, db.id(), push).encode());
    assert_eq!(status, 200);
    // One status per entry: no permission, forged, tampered, taken.
    assert_eq!(wire::decode_statuses(&body).unwrap(), vec![5, 10, 10, 0]);
    assert_eq!(db.get("s", "k").unwrap(), "\"good\"");
    assert_ne!(db.tips().unwrap(), vec![first]);
}

#[test]
fn a_large_push_is_taken_in_order_sent_and_each_bad_entry_refused_alone() {
    let (a, alice) = logged_in("alice");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("d").unwrap();
    db.set("s", "k", "1").unwrap();
    let writer = PrivateKey::generate().unwrap();
    db.grant(&writer.public_key(), Permission::Write).unwrap();
    // A chain of 150 entries by the writer, pushed children first (each waits for its
    // parent), with garbage, a flipped signature bit and replays among them: the pushed
    // batch is checked in parts, and every part holds some of each.
    let mut parents = db.tips().unwrap();
    let mut chain: Vec<Vec<u8>> = Vec::new();
    for i in 0..150u64 {
        let mut ops = Ops::new();
        ops.entry("s".into())
            .or_default()
            .insert("k".into(), Op::Set(i.to_string()));
        let entry = EntryContent {
            db: Some(db.id()),
            parents: parents.clone(),
            height: 3 + i,
            ops,
            author: writer.public_key(),
        }
        .sign(&writer)
        .unwrap();
        parents = vec![entry.id()];
        chain.push(entry.bytes().to_vec());
    }
    let mut flipped = chain[10].clone();
    *flipped.last_mut().unwrap() ^= 1;
    let mut pushed: Vec<Vec<u8>> = chain.iter().rev().cloned().collect();
    let mut expected = vec![0; pushed.len()];
    for (at, bad, status) in [
        (20, vec![0xa5; 200], 10),
        (70, flipped, 10),
        (75, chain[3].clone(), 0),
        (130, chain[149].clone(), 0),
    ] {
        pushed.insert(at, bad);
        expected.insert(at, status);
    }
    let push = Request::Push(pushed);
    let (status, body) = post_raw(&addr, "db", &envelope(&writer, &a, db.id(), push).encode());
    assert_eq!(status, 200);
    assert_eq!(wire::decode_statuses(&body).unwrap(), expected);
    assert_eq!(db.get("s", "k").unwrap(), "149");
    assert_eq!(db.tips().unwrap(), parents);
}

#[test]
fn enabling_sync_from_eight_threads_makes_one_engine() {
    let (inst, _user) = logged_in("u");
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (inst, barrier) = (inst.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                inst.enable_sync().unwrap()
            })
        })
        .collect();
    let engines: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(engines.iter().all(|e| Arc::ptr_eq(e, &engines[0])));
    assert!(Arc::ptr_eq(&inst.sync().unwrap(), &engines[0]));
}

#[test]
fn tracking_pushes_on_commit_and_pulls_remote_changes() {
    use std::sync::mpsc::channel;
    let (a, alice) = logged_in("alice");
    let (b, bob) = logged_in("bob");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let sync_b = b.enable_sync().unwrap();
    let db = alice.create_db("tracked").unwrap();
    db.grant(&bob.default_key().unwrap(), Permission::Write)
        .unwrap();
    sync_b.track(&bob, &addr, &db.id()).unwrap();
    let copy = bob.load_db(&db.id()).unwrap();

    // Local commits on B are pushed in the background; flush waits for them.
    for i in 0..10 {
        copy.set("s", &format!("b{i}"), &i.to_string()).unwrap();
    }
    sync_b.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(db.get("s", "b9").unwrap(), "9");

    // A's commits reach B by the periodic pull, and B's subscribers hear them as remote.
    let (tx, rx) = channel();
    let _sub = copy
        .subscribe(Box::new(move |c| tx.send(*c).unwrap()))
        .unwrap();
    let id = db.set("s", "from_a", "true").unwrap();
    let heard = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(heard.remote() && heard.entry == id);
    assert_eq!(copy.get("s", "from_a").unwrap(), "true");
}

#[test]
fn a_peer_killed_mid_sync_resumes_losing_and_duplicating_nothing() {
    use std::io::{BufRead, BufReader};

    use crate::durability::{open_user, spawn_child, wait_until_done};
    use crate::support::TempDir;

    let (a, alice) = logged_in("alice");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("big").unwrap();
    for i in 0..3000 {
        db.set("s", &format!("k{i}"), &i.to_string()).unwrap();
    }
    let dir = TempDir::new();
    let url = format!("sqlite:{}", dir.0.join("peer.db").display());
    let (_inst, writer, _) = open_user(&url);
    db.grant(&writer.default_key().unwrap(), Permission::Read)
        .unwrap();
    drop((_inst, writer));

    // Kill the pulling peer a little after it starts, twice; then let it finish.
    for delay_ms in [150u64, 400] {
        let mut child = spawn_child(&format!("pull|{url}|{addr}|{}", db.id()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(Ok(line)) = lines.next() {
            if line == "pulling" {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    wait_until_done(spawn_child(&format!("pull|{url}|{addr}|{}", db.id())));

    let backend = mnemo::backend::open(&url).unwrap();
    let (_inst, writer, _) = open_user(&url);
    let copy = writer.load_db(&db.id()).unwrap();
    assert_eq!(state(&copy, "s"), state(&db, "s"));
    assert_eq!(copy.tips().unwrap(), db.tips().unwrap());
    // Every entry stored exactly once: root, grant, 3,000 writes.
    let stored = backend.entries_after(&db.id(), 0, 10_000).unwrap();
    let distinct: std::collections::BTreeSet<_> = stored.iter().map(|(_, id)| *id).collect();
    assert_eq!((stored.len(), distinct.len()), (3002, 3002));
}

/// A listener shows the holder proofs its users made (logged in when sync was enabled, or
/// logging in after), for the keys asked about: to readers of a database it holds (also
/// for keys its own copy does not name: a grant it has not heard of yet), and for one it
/// does not hold yet, only if a local user asked for it.
#[test]
fn a_listener_shows_its_users_holder_proofs_for_the_keys_asked_about() {
    let (a, alice) = logged_in("alice");
    let sync = a.enable_sync().unwrap();
    let addr = sync.listen("127.0.0.1:0").unwrap();
    a.create_user("bob", None).unwrap();
    let bob = a.login("bob", None).unwrap();
    let keys = [alice.default_key().unwrap(), bob.default_key().unwrap()];
    let db = alice.create_db("d").unwrap();
    let reader = PrivateKey::generate().unwrap();
    db.grant(&reader.public_key(), Permission::Read).unwrap();
    let ask = |key: &PrivateKey, db: EntryId, asked: Vec<PublicKey>| {
        let salt = [7; 16];
        let hashes = asked.iter().map(|k| key_hash(&salt, k)).collect();
        let request = Request::Holders { salt, hashes };
        let (status, body) = post_raw(&addr, "db", &envelope(key, &a, db, request).encode());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        wire::decode_proofs(&body).unwrap()
    };
    let proves = |proofs: &[(PublicKey, [u8; 64])]| {
        proofs.iter().all(|(key, signature)| {
            key.verify(&proof_message(&a.device_id()), signature)
                .is_ok()
        })
    };
    let strangers: Vec<PublicKey> = (0..40)
        .map(|_| PrivateKey::generate().unwrap().public_key())
        .collect();
    let named = |proofs: &[(PublicKey, [u8; 64])]| {
        let mut keys: Vec<PublicKey> = proofs.iter().map(|(key, _)| *key).collect();
        keys.sort();
        keys
    };
    // Carol uses the device too, but the database here does not name her key.
    a.create_user("carol", None).unwrap();
    let carol = a.login("carol", None).unwrap().default_key().unwrap();
    let mut users = vec![keys[0], keys[1], carol];
    users.sort();
    // Asked about a few keys, and about many in a stranger's key order.
    for asked in [
        vec![keys[0], reader.public_key(), carol, keys[1]],
        [&strangers[..], &[carol], &keys[..]].concat(),
    ] {
        let proofs = ask(&reader, db.id(), asked);
        assert_eq!(named(&proofs), users);
        assert!(proves(&proofs));
    }
    // A database not here: refused until a local user asks for it (its round fails here).
    let elsewhere = EntryId::of_bytes(b"elsewhere");
    let stranger = PrivateKey::generate().unwrap();
    let salt = [7; 16];
    let hashes = keys.iter().map(|k| key_hash(&salt, k)).collect();
    let request = envelope(&stranger, &a, elsewhere, Request::Holders { salt, hashes });
    let (status, body) = post_raw(&addr, "db", &request.encode());
    let refusal = wire::ErrorReply::decode(&body).unwrap();
    assert_eq!((status, refusal.status), (403, 5));
    assert!(
        refusal.message.contains("a local user asked for it"),
        "{}",
        refusal.message
    );
    assert!(sync.sync_db(&bob, "127.0.0.1:1", &elsewhere).is_err());
    let proofs = ask(&stranger, elsewhere, vec![keys[0], carol, keys[1]]);
    assert_eq!(proofs.len(), 3);
    assert!(proves(&proofs));
}

#[test]
fn a_database_here_is_tracked_while_the_peer_is_down_and_pushed_when_it_comes_up() {
    let (a, alice) = logged_in("alice");
    let db = alice.create_db("mine").unwrap();
    // A free port, with nobody listening on it yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let sync_a = a.enable_sync().unwrap();
    sync_a.track(&alice, &addr, &db.id()).unwrap();
    let kept = db.set("s", "k", "\"kept\"").unwrap();
    assert!(matches!(
        sync_a.flush(Duration::from_millis(300)),
        Err(Error::Network(_))
    ));

    // The peer comes up on that address: the queued commit arrives, nothing lost. B's user
    // asked for the database first (its own pull failed: A does not listen), else B would
    // refuse to store it.
    let (b, bob) = logged_in("bob");
    let sync_b = b.enable_sync().unwrap();
    assert!(sync_b.sync_db(&bob, "127.0.0.1:1", &db.id()).is_err());
    // Bob may read it: A pushes only to a device holding copies for such a key.
    db.grant(&bob.default_key().unwrap(), Permission::Read)
        .unwrap();
    sync_b.listen(&addr).unwrap();
    sync_a.flush(Duration::from_secs(20)).unwrap();
    // B already holds both the root and the commit (they arrived by push).
    for id in [db.id(), kept] {
        assert!(
            b.receive_entry(&db.entry_bytes(&id).unwrap())
                .unwrap()
                .duplicate
        );
    }
}

#[test]
fn a_stranger_cannot_make_a_listener_store_a_database() {
    use crate::support::TempDir;
    let dir = TempDir::new();
    let path = dir.0.join("listener.db");
    let backend = Arc::new(mnemo::backend::SqliteBackend::open(&path).unwrap());
    let a = Instance::open(backend).unwrap();
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let size = || {
        ["", "-wal"]
            .iter()
            .map(|s| std::fs::metadata(format!("{}{s}", path.display())).map_or(0, |m| m.len()))
            .sum::<u64>()
    };
    // A stranger makes its own database (its root grants the stranger's key) with 200 KB
    // in it and pushes it: refused, and the listener's file does not take it.
    let (s, stranger) = logged_in("stranger");
    let theirs = stranger.create_db("uninvited").unwrap();
    for i in 0..20 {
        theirs
            .set(
                "s",
                &format!("k{i}"),
                &format!("\"{}\"", "7".repeat(10_000)),
            )
            .unwrap();
    }
    let before = size();
    let err = s
        .enable_sync()
        .unwrap()
        .sync_db(&stranger, &addr, &theirs.id())
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err}");
    assert!(
        size() < before + 50_000,
        "the file grew by the pushed database"
    );
}

/// A watch answers at once when the listener's position is other than the client's (past
/// it, or before it: a listener restored from a backup), when its copy changes, or after
/// `watch_timeout` with the same position; strangers are refused, and an
/// address holding its share of watches gets BUSY for more.
#[test]
fn watches_answer_changes_and_are_bounded() {
    let (a, alice) = logged_in("alice");
    let sync = a.enable_sync().unwrap();
    sync.set_limits(Limits {
        max_watches_per_address: 2,
        watch_timeout: Duration::from_millis(1500),
        ..Limits::default()
    })
    .unwrap();
    let addr = sync.listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("watched").unwrap();
    let reader = PrivateKey::generate().unwrap();
    db.grant(&reader.public_key(), Permission::Read).unwrap();
    let watch = |key: &PrivateKey, after: u64| {
        let env = envelope(key, &a, db.id(), Request::Watch { after });
        post_raw(&addr, "watch", &env.encode())
    };
    let position = |(status, body): (u16, Vec<u8>)| {
        assert_eq!(status, 200, "{body:?}");
        wire::decode_position(&body).unwrap()
    };

    // Behind: answered at once with the listener's position.
    let now = position(watch(&reader, 0));
    assert!(now > 0);
    // Ahead (the listener's storage went back): answered at once too. (Before, it waited
    // for the listener to pass the client's position: a tracking client heard nothing of
    // a restored listener's commits until then, but by its pull every 30 s.)
    let started = Instant::now();
    assert_eq!(position(watch(&reader, now + 1_000)), now);
    assert!(started.elapsed() < Duration::from_millis(1400));
    // Up to date: answered when the database changes.
    let waiting = {
        let (env, addr) = (
            envelope(&reader, &a, db.id(), Request::Watch { after: now }),
            addr.clone(),
        );
        std::thread::spawn(move || post_raw(&addr, "watch", &env.encode()))
    };
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    db.set("s", "k", "1").unwrap();
    assert!(position(waiting.join().unwrap()) > now);
    assert!(started.elapsed() < Duration::from_secs(1));
    // Nothing changes: answered after the watch timeout, same position.
    let now = position(watch(&reader, now + 1));
    let started = Instant::now();
    assert_eq!(position(watch(&reader, now)), now);
    assert!(started.elapsed() >= Duration::from_millis(1400));

    // A key that may not read is refused, and at the db endpoint a watch is malformed.
    let stranger = PrivateKey::generate().unwrap();
    assert_eq!(watch(&stranger, 0).0, 403);
    let env = envelope(&reader, &a, db.id(), Request::Watch { after: 0 });
    assert_eq!(post_raw(&addr, "db", &env.encode()).0, 400);

    // Two watches held from this address: a third is BUSY at once.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (env, addr) = (
                envelope(&reader, &a, db.id(), Request::Watch { after: now }),
                addr.clone(),
            );
            std::thread::spawn(move || post_raw(&addr, "watch", &env.encode()))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = watch(&reader, now);
    assert_eq!(status, 503);
    assert_eq!(wire::ErrorReply::decode(&body).unwrap().status, 12);
    for h in held {
        assert_eq!(h.join().unwrap().0, 200);
    }
}

/// Watches follow a database the listener forgot and stored again: one held on the old copy
/// hears the new copy's position at once, and new ones hear its commits. (Before, the old
/// copy's subscription, which hears nothing more, stayed followed while any watch was
/// held: clients heard the listener's commits only by their watches' timeouts.)
#[test]
fn watches_follow_a_database_the_listener_forgot_and_stored_again() {
    let (a, alice) = logged_in("alice");
    let sync = a.enable_sync().unwrap();
    sync.set_limits(Limits {
        watch_timeout: Duration::from_secs(10),
        ..Limits::default()
    })
    .unwrap();
    let addr = sync.listen("127.0.0.1:0").unwrap();
    let (x, xena) = logged_in("xena");
    let x_sync = x.enable_sync().unwrap();
    let x_addr = x_sync.listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("watched").unwrap();
    let id = db.id();
    let reader = Arc::new(PrivateKey::generate().unwrap());
    db.grant(&reader.public_key(), Permission::Read).unwrap();
    db.grant(&xena.default_key().unwrap(), Permission::Read)
        .unwrap();
    x_sync.sync_db(&xena, &addr, &id).unwrap();
    let request = |after| envelope(&reader, &a, id, Request::Watch { after }).encode();
    let position = |(status, body): (u16, Vec<u8>)| {
        assert_eq!(status, 200, "{body:?}");
        wire::decode_position(&body).unwrap()
    };
    let held = |after| {
        let (body, addr) = (request(after), addr.clone());
        std::thread::spawn(move || post_raw(&addr, "watch", &body))
    };

    let old = position(post_raw(&addr, "watch", &request(0)));
    let on_old_copy = held(old);
    std::thread::sleep(Duration::from_millis(300));
    drop(db);
    alice.forget_db(&id).unwrap();
    sync.sync_db(&alice, &x_addr, &id).unwrap();
    let started = Instant::now();
    let now = position(post_raw(&addr, "watch", &request(0)));
    assert!(now > old, "{now} after {old}");
    assert_eq!(position(on_old_copy.join().unwrap()), now);
    let waiting = held(now);
    std::thread::sleep(Duration::from_millis(300));
    alice.load_db(&id).unwrap().set("s", "k", "1").unwrap();
    assert!(position(waiting.join().unwrap()) > now);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A tracking peer hears of each of the listener's commits without polling for it.
#[test]
fn a_tracking_peer_hears_each_commit_of_the_listener() {
    let (a, alice) = logged_in("alice");
    let (b, bob) = logged_in("bob");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("pushed both ways").unwrap();
    db.grant(&bob.default_key().unwrap(), Permission::Write)
        .unwrap();
    let sync_b = b.enable_sync().unwrap();
    sync_b.track(&bob, &addr, &db.id()).unwrap();
    let copy = bob.load_db(&db.id()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let _sub = copy
        .subscribe(Box::new(move |change| {
            let _ = tx.send(change.entry);
        }))
        .unwrap();
    for i in 0..15 {
        let id = db.set("s", "k", &i.to_string()).unwrap();
        loop {
            let heard = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("each commit reaches the tracking peer");
            if heard == id {
                break;
            }
        }
    }
}

/// Access requests from strangers: bounded per database (BUSY past it, nothing more kept),
/// idempotent when repeated, refused when stale or for a database not held, and listed
/// only to the database's admins.
/// A key granted only by a discarded change (its granter's concurrent revocation discards
/// it) holds nothing: its access request is kept for an admin, not answered "already held".
#[test]
fn a_key_granted_by_a_discarded_change_can_still_ask_for_access() {
    let (a, alice) = logged_in("alice");
    let sync = a.enable_sync().unwrap();
    let addr = sync.listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("asked for").unwrap();
    let (junior, stranger) = (
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
    );
    db.grant(&junior.public_key(), Permission::Admin).unwrap();
    // The junior admin, offline, grants the stranger write; alice revokes it meanwhile.
    let mut grant = Ops::new();
    grant.entry("_settings".into()).or_default().insert(
        mnemo::database::settings::auth_key(&stranger.public_key()),
        Op::Set(mnemo::database::settings::auth_value(
            mnemo::database::Grant::active(Permission::Write, None),
        )),
    );
    let granted = EntryContent {
        db: Some(db.id()),
        parents: db.tips().unwrap(),
        height: db.height().unwrap() + 1,
        ops: grant,
        author: junior.public_key(),
    }
    .sign(&junior)
    .unwrap();
    db.revoke(&junior.public_key()).unwrap();
    let received = a.receive_entry(granted.bytes()).unwrap();
    assert_eq!(received.discarded, vec![granted.id()]);

    let env = envelope(
        &stranger,
        &a,
        db.id(),
        Request::Ask {
            permission: Permission::Read,
        },
    );
    let (status, body) = post_raw(&addr, "db", &env.encode());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let asked = sync.access_requests(&alice).unwrap();
    assert_eq!(asked.len(), 1, "{asked:?}");
}

#[test]
fn access_requests_are_bounded_and_checked() {
    let (a, alice) = logged_in("alice");
    let sync = a.enable_sync().unwrap();
    let addr = sync.listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("asked for").unwrap();
    let ask = |key: &PrivateKey, db: EntryId| {
        let env = envelope(
            key,
            &a,
            db,
            Request::Ask {
                permission: Permission::Read,
            },
        );
        post_raw(&addr, "db", &env.encode())
    };
    let strangers: Vec<PrivateKey> = (0..70).map(|_| PrivateKey::generate().unwrap()).collect();
    let (mut taken, mut busy) = (0, 0);
    for key in &strangers {
        match ask(key, db.id()) {
            (200, body) => {
                assert!(wire::decode_text(&body).unwrap().starts_with("req-"));
                taken += 1;
            }
            (503, body) => {
                assert_eq!(wire::ErrorReply::decode(&body).unwrap().status, 12);
                busy += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((taken, busy), (64, 6));
    assert_eq!(sync.access_requests(&alice).unwrap().len(), 64);
    // Asking again: the same id, nothing new kept.
    let (_, first) = ask(&strangers[0], db.id());
    let (_, again) = ask(&strangers[0], db.id());
    assert_eq!(first, again);
    assert_eq!(sync.access_requests(&alice).unwrap().len(), 64);
    // A database not held, a stale request, a malformed permission.
    assert_eq!(ask(&strangers[0], EntryId::of_bytes(b"elsewhere")).0, 403);
    let mut stale = envelope(
        &strangers[0],
        &a,
        db.id(),
        Request::Ask {
            permission: Permission::Read,
        },
    );
    stale.timestamp_ms -= 10 * 60 * 1000;
    stale.signature = strangers[0].sign(&stale.signed_part());
    assert_eq!(post_raw(&addr, "db", &stale.encode()).0, 403);
    let mut malformed = envelope(
        &strangers[0],
        &a,
        db.id(),
        Request::Ask {
            permission: Permission::Read,
        },
    )
    .encode();
    let at = malformed.len() - 65; // the permission byte, just before the signature
    malformed[at] = 9;
    assert_eq!(post_raw(&addr, "db", &malformed).0, 400);
    // Only the database's admins see the requests.
    let (_, bob) = (
        a.create_user("bob", None).unwrap(),
        a.login("bob", None).unwrap(),
    );
    assert!(sync.access_requests(&bob).unwrap().is_empty());
    let id = mnemo::sync::wire::decode_text(&first).unwrap();
    assert!(matches!(sync.approve(&bob, &id), Err(Error::NotFound(_))));
    sync.approve(&alice, &id).unwrap();
    assert_eq!(
        db.permission_of(&strangers[0].public_key()).unwrap(),
        Some(Permission::Read)
    );

    // Rejected requests give their places up, oldest first, to new ones (a key whose
    // rejection was given up may ask again).
    let pending = sync.access_requests(&alice).unwrap();
    assert_eq!(pending.len(), 63);
    for request in &pending {
        sync.reject(&alice, &request.id).unwrap();
    }
    // The first takes the place the approved request left, the second a rejected one's.
    let newcomers: Vec<PrivateKey> = (0..2).map(|_| PrivateKey::generate().unwrap()).collect();
    for newcomer in &newcomers {
        assert_eq!(ask(newcomer, db.id()).0, 200);
    }
    let newcomer = &newcomers[1];
    assert_eq!(sync.access_requests(&alice).unwrap().len(), 2); // pending ones only
                                                                // The last request rejected is the last to go: its key is still refused.
    let last_rejected = pending.last().unwrap().key;
    let last = strangers.iter().find(|k| k.public_key() == last_rejected);
    assert_eq!(ask(last.unwrap(), db.id()).0, 403);
    // A pending request changes its permission at most once a minute (each change is a
    // commit kept in `_sync`'s history).
    let ask_write = envelope(
        newcomer,
        &a,
        db.id(),
        Request::Ask {
            permission: Permission::Write,
        },
    );
    let (status, body) = post_raw(&addr, "db", &ask_write.encode());
    assert_eq!(status, 503);
    assert_eq!(wire::ErrorReply::decode(&body).unwrap().status, 12);
}

/// Whether `stream` was closed by its peer within 5 s (a read ends or fails, but does not
/// time out).
fn closed_within_5s(stream: &mut impl std::io::Read, socket: &std::net::TcpStream) -> bool {
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

/// Unlistening closes the port before it returns (it can be bound again at once) and the
/// listener's connections, whether still in their handshake or idle between requests; the
/// engine's other listeners go on.
#[test]
fn unlisten_closes_the_port_and_the_connections_and_spares_other_listeners() {
    let (a, _alice) = logged_in("alice");
    let sync = a.enable_sync().unwrap();
    let addr = sync.listen("127.0.0.1:0").unwrap();
    let other = sync.listen("127.0.0.1:0").unwrap();
    let mut in_handshake = std::net::TcpStream::connect(&addr).unwrap();
    let mut idle = crate::support::tls_connect(&addr).unwrap();
    let mut elsewhere = crate::support::tls_connect(&other).unwrap();

    sync.unlisten(&addr).unwrap();
    assert!(std::net::TcpStream::connect(&addr).is_err());
    let socket = in_handshake.try_clone().unwrap();
    assert!(closed_within_5s(&mut in_handshake, &socket));
    let socket = idle.sock.try_clone().unwrap();
    assert!(closed_within_5s(&mut idle, &socket));
    elsewhere
        .sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1];
    let kept = std::io::Read::read(&mut elsewhere, &mut buf).unwrap_err();
    assert!(matches!(
        kept.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));

    let (b, _bob) = logged_in("bob");
    let client = b.enable_sync().unwrap();
    assert!(client.connect(&addr).is_err());
    assert_eq!(client.connect(&other).unwrap(), a.device_id());
    assert!(matches!(sync.unlisten(&addr), Err(Error::NotFound(_))));
    assert!(matches!(
        sync.unlisten("localhost"),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(sync.listen(&addr).unwrap(), addr);
    assert_eq!(client.connect(&addr).unwrap(), a.device_id());
}

/// A request under way when its listener stops still gets its answer: a watch held then is
/// answered at once, with the position it waited past (before, at the next change or the
/// watch timeout, its connection open meanwhile).
#[test]
fn unlisten_lets_a_request_under_way_finish() {
    let (a, alice) = logged_in("alice");
    let sync = a.enable_sync().unwrap();
    let addr = sync.listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("watched").unwrap();
    let reader = PrivateKey::generate().unwrap();
    db.grant(&reader.public_key(), Permission::Read).unwrap();
    let now = {
        let env = envelope(&reader, &a, db.id(), Request::Watch { after: 0 });
        wire::decode_position(&post_raw(&addr, "watch", &env.encode()).1).unwrap()
    };
    let waiting = {
        let env = envelope(&reader, &a, db.id(), Request::Watch { after: now });
        let addr = addr.clone();
        std::thread::spawn(move || post_raw(&addr, "watch", &env.encode()))
    };
    std::thread::sleep(Duration::from_millis(300));
    sync.unlisten(&addr).unwrap();
    let (status, body) = waiting.join().unwrap();
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(wire::decode_position(&body).unwrap(), now);
}

/// A process that tracks a database pushes at once what another process commits to it on
/// the same storage (it hears it by polling), not only at its next periodic round.
#[test]
fn a_track_pushes_another_processs_commit_soon() {
    use crate::support::TempDir;

    let (a, alice) = logged_in("alice");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("tracked").unwrap();
    let dir = TempDir::new();
    let open = || {
        let path = dir.0.join("b.db");
        Instance::open(Arc::new(
            mnemo::backend::SqliteBackend::open(&path).unwrap(),
        ))
        .unwrap()
    };
    let (tracking, other) = (open(), open());
    tracking.create_user("bob", None).unwrap();
    tracking
        .set_limits_by_name(&[("other_processes_poll_ms", 10)])
        .unwrap();
    let bob = tracking.login("bob", None).unwrap();
    db.grant(&bob.default_key().unwrap(), Permission::Write)
        .unwrap();
    let sync = tracking.enable_sync().unwrap();
    sync.track(&bob, &addr, &db.id()).unwrap();
    // A change of the listener's answers the track's watch: from then on the track's
    // periodic round comes every 30 s.
    let first = db.set("s", "from_a", "1").unwrap();
    let copy = bob.load_db(&db.id()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !copy.tips().unwrap().contains(&first) {
        assert!(
            Instant::now() < deadline,
            "the listener's change never arrived"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));

    let bob_elsewhere = other.login("bob", None).unwrap();
    let theirs = bob_elsewhere.load_db(&db.id()).unwrap();
    let id = theirs.set("s", "from_the_other_process", "2").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while db.get("s", "from_the_other_process").is_err() {
        assert!(
            Instant::now() < deadline,
            "another process's commit {id} was not pushed within 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A listener handles as many requests side by side as its `max_requests_in_flight`, also
/// when that was raised above the default after the engine started; its stats count them.
#[test]
fn a_raised_in_flight_limit_handles_that_many_requests_at_once() {
    const AT_ONCE: usize = 24;
    let (storage, a, alice) = watched_logged_in("alice");
    let db = alice.create_db("busy").unwrap();
    let reader = PrivateKey::generate().unwrap();
    db.grant(&reader.public_key(), Permission::Read).unwrap();
    let sync = a.enable_sync().unwrap();
    sync.set_limits(Limits {
        max_requests_in_flight: AT_ONCE,
        max_requests_in_flight_per_address: AT_ONCE,
        ..sync.limits()
    })
    .unwrap();
    let addr = sync.listen("127.0.0.1:0").unwrap();
    let in_flight = || {
        let stats = sync.stats();
        stats
            .iter()
            .find(|(name, _)| *name == "requests_in_flight")
            .unwrap()
            .1
    };

    // Each request's lookup waits for one more than can come, until the patience runs out.
    storage.gather_sync_lookups(AT_ONCE + 1, Duration::from_secs(3));
    let requests: Vec<_> = (0..AT_ONCE as u8)
        .map(|n| {
            let unknown = EntryId::of_bytes(&[n]);
            let have = envelope(&reader, &a, db.id(), Request::Have(vec![unknown]));
            let addr = addr.clone();
            std::thread::spawn(move || post_raw(&addr, "db", &have.encode()))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    while in_flight() < AT_ONCE as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(in_flight(), AT_ONCE as u64);
    for request in requests {
        assert_eq!(request.join().unwrap().0, 200);
    }
    assert_eq!(storage.most_sync_lookups_at_once(), AT_ONCE);
    assert_eq!(in_flight(), 0);
}
