//! What users let go of: forgetting databases (and reclaiming their storage), removing keys,
//! choosing the default key.

use std::sync::Arc;
use std::time::Duration;

use mnemo::backend::{Backend, MemoryBackend};
use mnemo::database::Permission;
use mnemo::entry::EntryId;
use mnemo::{Error, Instance};

use crate::support::{storages, TempDir};

/// Every byte of the SQLite file at `path` and of its WAL.
fn file_bytes(path: &std::path::Path) -> Vec<u8> {
    let mut all = std::fs::read(path).unwrap();
    let wal = path.with_extension("db-wal");
    if let Ok(more) = std::fs::read(wal) {
        all.extend(more);
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_forgotten_database_leaves_the_list_no_longer_opens_and_leaves_the_file() {
    let dir = TempDir::new();
    let path = dir.0.join("life.db");
    let backend: Arc<dyn Backend> = Arc::new(mnemo::backend::SqliteBackend::open(&path).unwrap());
    let marker = "marker-5c1e0a7d-never-elsewhere";
    let inst = Instance::open(backend.clone()).unwrap();
    inst.create_user("alice", None).unwrap();
    let alice = inst.login("alice", None).unwrap();
    let gone = alice.create_db("gone").unwrap();
    let kept = alice.create_db("kept").unwrap();
    gone.set("s", "k", &format!("\"{marker}\"")).unwrap();
    kept.set("s", "k", "\"stays\"").unwrap();
    assert!(contains(&file_bytes(&path), marker.as_bytes()));

    alice.forget_db(&gone.id()).unwrap();
    let names: Vec<String> = alice
        .list_dbs()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, vec!["kept"]);
    assert!(alice.load_db(&gone.id()).unwrap_err().is_not_found());
    assert!(alice.find_db("gone").unwrap_err().is_not_found());
    assert!(alice.forget_db(&gone.id()).unwrap_err().is_not_found());
    // Nobody kept it: no row of it is left, and its data is not in the file any more.
    assert_eq!(backend.entry_meta(&gone.id()).unwrap(), None);
    assert_eq!(backend.tips(&gone.id()).unwrap(), vec![]);
    assert_eq!(backend.cells(&gone.id(), "s").unwrap(), vec![]);
    assert!(!contains(&file_bytes(&path), marker.as_bytes()));
    // The handle still open on it fails cleanly, reading and writing.
    assert!(gone.get("s", "k").unwrap_err().is_not_found());
    assert!(gone.set("s", "k", "1").unwrap_err().is_not_found());
    assert!(gone.tips().unwrap_err().is_not_found());
    // The other database is untouched, and all of it holds after reopening.
    assert_eq!(kept.get("s", "k").unwrap(), "\"stays\"");
    drop((gone, kept, alice, inst));
    let inst = Instance::open(backend).unwrap();
    let alice = inst.login("alice", None).unwrap();
    assert_eq!(alice.list_dbs().unwrap().len(), 1);
    assert_eq!(
        alice.find_db("kept").unwrap().get("s", "k").unwrap(),
        "\"stays\""
    );
}

#[test]
fn a_database_another_user_keeps_stays_until_the_last_one_forgets_it() {
    let backend = Arc::new(MemoryBackend::new());
    let inst = Instance::open(backend.clone()).unwrap();
    inst.create_user("alice", None).unwrap();
    inst.create_user("bob", None).unwrap();
    let alice = inst.login("alice", None).unwrap();
    let bob = inst.login("bob", None).unwrap();
    let db = alice.create_db("shared").unwrap();
    db.grant(&bob.default_key().unwrap(), Permission::Write)
        .unwrap();
    let bobs = bob.load_db(&db.id()).unwrap();
    db.set("s", "k", "1").unwrap();

    alice.forget_db(&db.id()).unwrap();
    assert!(alice.list_dbs().unwrap().is_empty());
    assert!(alice.find_db("shared").unwrap_err().is_not_found());
    // Bob keeps it: every row stays, and both handles go on working.
    assert!(backend.entry_meta(&db.id()).unwrap().is_some());
    assert_eq!(bobs.get("s", "k").unwrap(), "1");
    db.set("s", "k", "2").unwrap();
    assert_eq!(bob.list_dbs().unwrap().len(), 1);
    // Forgetting is local: alice's grant stands, so loading it again puts it back.
    alice.load_db(&db.id()).unwrap();
    assert_eq!(alice.list_dbs().unwrap().len(), 1);

    bob.forget_db(&db.id()).unwrap();
    assert!(backend.entry_meta(&db.id()).unwrap().is_some());
    alice.forget_db(&db.id()).unwrap();
    assert_eq!(backend.entry_meta(&db.id()).unwrap(), None);
    assert!(bobs.get("s", "k").unwrap_err().is_not_found());
    assert!(bob.load_db(&db.id()).unwrap_err().is_not_found());
}

#[test]
fn system_databases_and_unknown_ones_are_not_forgotten() {
    let backend = Arc::new(MemoryBackend::new());
    let inst = Instance::open(backend.clone()).unwrap();
    inst.enable_sync().unwrap();
    inst.create_user("alice", None).unwrap();
    let alice = inst.login("alice", None).unwrap();
    for name in ["_instance", "_users", "_databases", "_sync"] {
        let text = backend
            .meta_get(&format!("system/{name}"))
            .unwrap()
            .unwrap();
        let id = EntryId::parse(std::str::from_utf8(&text).unwrap()).unwrap();
        assert!(
            matches!(alice.forget_db(&id), Err(Error::PermissionDenied(_))),
            "{name}"
        );
        assert!(backend.entry_meta(&id).unwrap().is_some(), "{name}");
    }
    let other = alice.create_db("d").unwrap();
    inst.create_user("bob", None).unwrap();
    let bob = inst.login("bob", None).unwrap();
    // Someone else's database, and one never here: neither is in bob's list.
    assert!(bob.forget_db(&other.id()).unwrap_err().is_not_found());
    let never = EntryId::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
    assert!(bob.forget_db(&never).unwrap_err().is_not_found());
    assert!(backend.entry_meta(&other.id()).unwrap().is_some());
    alice.forget_db(&other.id()).unwrap();
    assert!(alice.forget_db(&other.id()).unwrap_err().is_not_found());
}

#[test]
fn forgetting_stops_tracking_for_good() {
    let backend = Arc::new(MemoryBackend::new());
    let (a, alice) = crate::support::logged_in("alice");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("tracked").unwrap();
    let b = Instance::open(backend.clone()).unwrap();
    b.create_user("bob", None).unwrap();
    let bob = b.login("bob", None).unwrap();
    db.grant(&bob.default_key().unwrap(), Permission::Write)
        .unwrap();
    let sync_b = b.enable_sync().unwrap();
    sync_b.track(&bob, &addr, &db.id()).unwrap();
    let copy = bob.load_db(&db.id()).unwrap();
    copy.set("s", "k", "1").unwrap();
    sync_b.flush(Duration::from_secs(10)).unwrap();

    bob.forget_db(&db.id()).unwrap();
    // Nothing tracks it any more (untrack finds nothing), and nothing of it is left on B.
    assert!(sync_b
        .untrack(&bob, &addr, &db.id())
        .unwrap_err()
        .is_not_found());
    assert_eq!(backend.entry_meta(&db.id()).unwrap(), None);
    db.set("s", "k", "2").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(backend.entry_meta(&db.id()).unwrap(), None);
    assert!(copy.get("s", "k").unwrap_err().is_not_found());

    // After a restart, logging in with sync on resumes nothing for it.
    drop((copy, bob, sync_b, b));
    let b = Instance::open(backend.clone()).unwrap();
    let sync_b = b.enable_sync().unwrap();
    let bob = b.login("bob", None).unwrap();
    assert!(sync_b
        .untrack(&bob, &addr, &db.id())
        .unwrap_err()
        .is_not_found());
    // It can be brought back: a new track pulls it afresh, whole.
    sync_b.track(&bob, &addr, &db.id()).unwrap();
    assert_eq!(bob.load_db(&db.id()).unwrap().get("s", "k").unwrap(), "2");
}

#[test]
fn forgetting_with_sync_off_forgets_the_recorded_tracks() {
    let backend = Arc::new(MemoryBackend::new());
    let (a, alice) = crate::support::logged_in("alice");
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let db = alice.create_db("tracked").unwrap();
    let id = db.id();
    {
        let b = Instance::open(backend.clone()).unwrap();
        b.create_user("bob", None).unwrap();
        b.create_user("carol", None).unwrap();
        let bob = b.login("bob", None).unwrap();
        let carol = b.login("carol", None).unwrap();
        db.grant(&bob.default_key().unwrap(), Permission::Write)
            .unwrap();
        db.grant(&carol.default_key().unwrap(), Permission::Read)
            .unwrap();
        let sync_b = b.enable_sync().unwrap();
        sync_b.track(&bob, &addr, &id).unwrap();
        sync_b.track(&carol, &addr, &id).unwrap();
    }
    {
        // Sync is not enabled in this run: bob forgets it; carol still keeps it.
        let b = Instance::open(backend.clone()).unwrap();
        b.login("bob", None).unwrap().forget_db(&id).unwrap();
        assert!(backend.entry_meta(&id).unwrap().is_some());
    }
    let b = Instance::open(backend.clone()).unwrap();
    let sync_b = b.enable_sync().unwrap();
    let bob = b.login("bob", None).unwrap();
    let carol = b.login("carol", None).unwrap();
    assert!(sync_b.untrack(&bob, &addr, &id).unwrap_err().is_not_found());
    sync_b.untrack(&carol, &addr, &id).unwrap();
}

#[test]
fn removing_a_key_and_changing_the_default_persist_across_reopening() {
    for storage in storages() {
        let name = storage.name();
        let (first, second, third, user_id) = {
            let inst = Instance::open(storage.open()).unwrap();
            inst.create_user("alice", Some("pw")).unwrap();
            let alice = inst.login("alice", Some("pw")).unwrap();
            let first = alice.default_key().unwrap();
            let second = alice.add_private_key(Some("second")).unwrap();
            let third = alice.add_private_key(Some("third")).unwrap();
            let old = alice.create_db("old").unwrap();
            assert_eq!(old.author(), first, "{name}");

            assert!(
                matches!(alice.remove_key(&first), Err(Error::InvalidArgument(_))),
                "{name}"
            );
            let stranger = mnemo::crypto::PrivateKey::generate().unwrap().public_key();
            assert!(
                alice.remove_key(&stranger).unwrap_err().is_not_found(),
                "{name}"
            );
            assert!(
                alice.set_default_key(&stranger).unwrap_err().is_not_found(),
                "{name}"
            );

            alice.set_default_key(&second).unwrap();
            assert_eq!(alice.default_key().unwrap(), second, "{name}");
            assert_eq!(alice.create_db("new").unwrap().author(), second, "{name}");
            alice.remove_key(&first).unwrap();
            assert!(
                alice.remove_key(&first).unwrap_err().is_not_found(),
                "{name}"
            );
            // The session no longer signs with the removed key.
            assert!(old.set("s", "k", "1").is_err(), "{name}");
            alice.remove_key(&third).unwrap();
            (first, second, third, alice.id().to_string())
        };
        let inst = Instance::open(storage.open()).unwrap();
        let alice = inst.login("alice", Some("pw")).unwrap();
        assert_eq!(alice.default_key().unwrap(), second, "{name}");
        let keys = alice.list_keys().unwrap();
        assert_eq!(keys.len(), 1, "{name}");
        assert!(keys[0].public == second && keys[0].default, "{name}");
        // The removed keys' sealed secrets are gone from storage.
        let backend = storage.open();
        for removed in [first, third] {
            assert_eq!(
                backend
                    .secret_get(&format!("key/{user_id}/{removed}"))
                    .unwrap(),
                None,
                "{name}"
            );
        }
        assert!(backend
            .secret_get(&format!("key/{user_id}/{second}"))
            .unwrap()
            .is_some());
        // The database the removed key created no longer opens with a key of hers.
        assert!(alice.find_db("old").unwrap_err().is_not_found(), "{name}");
        assert_eq!(alice.find_db("new").unwrap().author(), second, "{name}");
    }
}

/// SQLite's `secure_delete` zeroes a deleted row where it lies, yet copies made when rows
/// moved between pages can stay in unused page space: a forgotten database's entries,
/// spread among another's in `entries` (keyed by random ids), used to survive that way in
/// about half the rounds below.
#[test]
fn a_forgotten_database_leaves_no_copy_among_another_databases_pages() {
    let dir = TempDir::new();
    let path = dir.0.join("spread.db");
    let backend: Arc<dyn Backend> = Arc::new(mnemo::backend::SqliteBackend::open(&path).unwrap());
    let inst = Instance::open(backend).unwrap();
    inst.create_user("alice", None).unwrap();
    let alice = inst.login("alice", None).unwrap();
    let kept = alice.create_db("kept").unwrap();
    for round in 0..3 {
        let gone = alice.create_db(&format!("gone{round}")).unwrap();
        let marker = format!("marker-0b7e55d2-{round}");
        for i in 0..700 {
            let pad = "x".repeat((i * 37) % 300);
            gone.set("s", &format!("k{i}"), &format!("\"{marker}{pad}\""))
                .unwrap();
            kept.set("s", &format!("k{round}-{i}"), &format!("\"{pad}\""))
                .unwrap();
        }
        alice.forget_db(&gone.id()).unwrap();
        assert!(
            !contains(&file_bytes(&path), marker.as_bytes()),
            "round {round}: the forgotten database's data is still in the file"
        );
        assert_eq!(
            kept.get("s", &format!("k{round}-1")).unwrap(),
            format!("\"{}\"", "x".repeat(37))
        );
    }
}

/// Replaced and deleted secrets leave no copy in the file either (the secrets table is
/// rebuilt in new pages after each change).
#[test]
fn replaced_and_deleted_secrets_leave_no_copy_in_the_file() {
    let dir = TempDir::new();
    let path = dir.0.join("secrets.db");
    let backend = mnemo::backend::SqliteBackend::open(&path).unwrap();
    let old = |round: usize, i: usize| {
        format!(
            "old-secret-{i:03}-{}",
            "s".repeat((i * 13 + round * 29) % 200)
        )
        .into_bytes()
    };
    for round in 0..3 {
        for i in 0..120 {
            backend
                .secret_put(&format!("key/{i}"), &old(round, i), None)
                .unwrap();
        }
        for i in 0..120 {
            if i % 3 == 0 {
                assert!(backend.secret_delete(&format!("key/{i}")).unwrap());
            } else {
                let new = vec![b'n'; 20 + (i * 7 + round) % 150];
                assert!(backend
                    .secret_put(&format!("key/{i}"), &new, Some(&old(round, i)))
                    .unwrap());
            }
        }
        assert!(
            !contains(&file_bytes(&path), b"old-secret-"),
            "round {round}: an old secret is still in the file"
        );
        assert_eq!(
            backend.secret_get("key/1").unwrap().map(|v| v.len()),
            Some(27 + round)
        );
    }
}

/// Only a change that replaced or deleted a secret rebuilds the secrets table (seen as a
/// change of the file's schema): a new secret, or a delete of one not there, leaves nothing
/// old to scrub.
#[test]
fn only_a_change_that_removes_a_secret_rebuilds_the_secrets_table() {
    let dir = TempDir::new();
    let path = dir.0.join("rebuilds.db");
    let backend = mnemo::backend::SqliteBackend::open(&path).unwrap();
    let schema_version = || -> i64 {
        rusqlite::Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA schema_version", [], |r| r.get(0))
            .unwrap()
    };
    let first = schema_version();
    assert!(backend.secret_put("a", b"one", None).unwrap());
    assert!(backend.secret_put("b", b"two", None).unwrap());
    assert!(!backend.secret_delete("missing").unwrap());
    assert!(!backend.secret_put("a", b"x", Some(b"not-one")).unwrap());
    assert_eq!(
        schema_version(),
        first,
        "a change that removed nothing rebuilt the table"
    );
    let changes: [(&str, &dyn Fn() -> bool); 3] = [
        ("replace", &|| {
            backend.secret_put("a", b"uno", None).unwrap()
        }),
        ("compare and swap", &|| {
            backend.secret_put("a", b"eins", Some(b"uno")).unwrap()
        }),
        ("delete", &|| backend.secret_delete("b").unwrap()),
    ];
    for (change, run) in changes {
        let before = schema_version();
        assert!(run(), "{change}");
        assert_ne!(
            schema_version(),
            before,
            "{change} did not rebuild the table"
        );
    }
    assert_eq!(
        backend.secret_get("a").unwrap().as_deref(),
        Some(&b"eins"[..])
    );
}

/// A secret change is committed before its WAL checkpoint: when a reader keeps the
/// checkpoint from finishing, the change still succeeds (it happened), and the scrub is
/// finished by the next change to the secrets, or the next open of the file.
#[test]
fn a_secret_change_a_reader_keeps_from_scrubbing_succeeds_and_is_scrubbed_next_time() {
    let dir = TempDir::new();
    let path = dir.0.join("busy.db");
    let backend = mnemo::backend::SqliteBackend::open(&path).unwrap();
    let old = b"old-secret-7f3a9c-never-elsewhere";
    assert!(backend.secret_put("a", old, None).unwrap());
    // Another connection in a read transaction: no checkpoint can finish meanwhile.
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let rows: i64 = reader
        .query_row("SELECT count(*) FROM secrets", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
    assert!(backend.secret_put("a", b"new", Some(old)).unwrap());
    assert_eq!(
        backend.secret_get("a").unwrap().as_deref(),
        Some(&b"new"[..])
    );
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    assert!(contains(&file_bytes(&path), old), "scrubbed already");
    // A change that removes nothing scrubs nothing of its own, but finishes the last one.
    assert!(backend.secret_put("b", b"other", None).unwrap());
    assert!(!contains(&file_bytes(&path), old), "still in the file");

    // Kept out again, and no change after it here: the next open of the file finishes it
    // (the scrub left pending is recorded in the file, not only in this process).
    let older = b"older-secret-4c1d2e-never-elsewhere";
    assert!(backend.secret_put("c", older, None).unwrap());
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let rows: i64 = reader
        .query_row("SELECT count(*) FROM secrets", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3);
    assert!(backend.secret_delete("c").unwrap());
    drop(backend);
    reader.execute_batch("COMMIT").unwrap(); // still open: closing last would checkpoint
    assert!(contains(&file_bytes(&path), older), "scrubbed already");
    let backend = mnemo::backend::SqliteBackend::open(&path).unwrap();
    assert!(!contains(&file_bytes(&path), older), "still in the file");
    assert_eq!(backend.secret_get("c").unwrap(), None);
    drop(reader);
}
