//! Local commits left staged by their write turn ([`super::core::DatabaseCore::commit`]):
//! anything else done to the database makes them durable first, so what it reads includes
//! them; one that fails leaves nothing behind.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use super::registry::Registry;
use super::Database;
use crate::backend::{Backend, SqliteBackend};
use crate::crypto::PrivateKey;
use crate::entry::{Entry, EntryContent, EntryId, Op};
use crate::error::{Error, Result};

/// Removes a SQLite file and its companions when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

/// A new SQLite file with one database, whose staged commits never settle on their own.
fn open() -> (TempFile, Arc<SqliteBackend>, Database) {
    let file = TempFile(std::env::temp_dir().join(format!(
        "mnemo-staged-{}.db",
        crate::crypto::random::hex_token::<8>().unwrap()
    )));
    let backend = Arc::new(SqliteBackend::open(&file.0).unwrap());
    backend.set_settle_after(Duration::from_secs(600));
    let key = PrivateKey::generate().unwrap();
    let author = key.public_key();
    let db = Registry::new(backend.clone())
        .create("d", Arc::new(key), author)
        .unwrap();
    (file, backend, db)
}

/// Sets `key` to 1 on another thread, once `backend` has two threads announced (on their
/// way to turns that never come): the commit stays staged, and this thread can still take
/// one turn without ending the group. Returns what the set returns, when it does.
fn staged_set(
    backend: &SqliteBackend,
    db: &Database,
    key: &'static str,
) -> (mpsc::Receiver<Result<EntryId>>, JoinHandle<()>) {
    backend.announce_write();
    backend.announce_write();
    let (sent, committed) = mpsc::channel();
    let writer = db.clone();
    let committer = std::thread::spawn(move || {
        let _ = sent.send(writer.set("s", key, "1"));
    });
    assert!(committed.recv_timeout(Duration::from_millis(300)).is_err());
    (committed, committer)
}

#[test]
fn an_entry_received_while_its_parent_is_staged_finds_it() {
    let (_file, backend, db) = open();
    let (committed, committer) = staged_set(&backend, &db, "k");
    let mut staged: Option<(EntryId, u64)> = None;
    backend
        .write_turn(true, &mut || {
            staged = backend.tips(&db.id())?.first().copied();
            Ok(())
        })
        .unwrap();
    let (parent, height) = staged.unwrap();
    assert_eq!(
        backend.entry_meta(&parent).unwrap(),
        None,
        "not committed yet"
    );

    // The same author's next entry, as if from another of its devices.
    let mut ops = BTreeMap::new();
    ops.insert(
        "s".to_string(),
        BTreeMap::from([("k".into(), Op::Set("2".into()))]),
    );
    let child = EntryContent {
        db: Some(db.id()),
        parents: vec![parent],
        height: height + 1,
        ops,
        author: db.author(),
    }
    .sign(&*db.keys)
    .unwrap();
    let received = db.core.receive(child).unwrap();
    assert!(!received.pending, "the staged parent was not seen");
    assert_eq!(received.applied.len(), 1);
    let id = committed.recv_timeout(Duration::from_secs(10));
    assert!(matches!(id, Ok(Ok(_))), "{id:?}");
    committer.join().unwrap();
    assert_eq!(db.get("s", "k").unwrap(), "2");
    backend.withdraw_write();
}

#[test]
fn a_staged_commit_that_fails_leaves_nothing_behind() {
    let (_file, backend, db) = open();
    let (committed, committer) = staged_set(&backend, &db, "lost");
    // A commit sharing its transaction panics: the group is rolled back.
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        backend.write_turn(true, &mut || panic!("a bug in a commit"))
    }));
    assert!(panicked.is_err());
    let failed = committed.recv_timeout(Duration::from_secs(10));
    assert!(matches!(failed, Ok(Err(Error::Storage(_)))), "{failed:?}");
    committer.join().unwrap();
    backend.withdraw_write();

    // The next commit forgets what memory kept of the failed one (a new settings
    // generation says so), builds on what is stored, and the database checks out.
    let generation = db.core.settings_generation();
    db.set("s", "kept", "2").unwrap();
    assert_eq!(db.core.settings_generation(), generation + 1);
    assert!(matches!(db.get("s", "lost"), Err(Error::NotFound(_))));
    assert_eq!(db.get("s", "kept").unwrap(), "2");
    assert_eq!(db.core.backend().tips(&db.id()).unwrap().len(), 1);
    db.core.verify().unwrap();
}

#[test]
fn a_large_commit_makes_the_staged_one_durable_before_planning() {
    let (_file, backend, db) = open();
    let (committed, committer) = staged_set(&backend, &db, "small");
    let large = db.clone();
    let large_committer = std::thread::spawn(move || {
        let mut tx = large.begin();
        for i in 0..=super::core::MAX_OPS_MADE_IN_TURN {
            tx.set("s", &format!("large{i}"), "2")?;
        }
        tx.commit()
    });
    // The small commit is durable without waiting for company; the large one, made after
    // it, stays staged (the two announced threads keep its group open).
    let small = committed.recv_timeout(Duration::from_secs(10));
    let Ok(Ok(small)) = small else {
        panic!("the small commit waits: {small:?}")
    };
    committer.join().unwrap();
    backend.withdraw_write();
    backend.withdraw_write();
    let large = large_committer.join().unwrap().unwrap();
    assert_eq!(backend.tips(&db.id()).unwrap(), vec![(large, 2)]);
    let bytes = backend.get_entry(&large).unwrap().unwrap();
    assert_eq!(
        Entry::decode(&bytes).unwrap().content().parents,
        vec![small]
    );
    assert_eq!(db.get("s", "small").unwrap(), "1");
    db.core.verify().unwrap();
}
