//! Entries from elsewhere taken many to a storage commit
//! ([`super::core::DatabaseCore::receive_all`]) on a SQLite file: children sent before
//! their parents come in with them, and a commit that fails leaves nothing reported taken
//! that is not stored, and nothing heard of.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::registry::Registry;
use super::{Change, Database};
use crate::backend::{Backend, SqliteBackend};
use crate::crypto::PrivateKey;
use crate::entry::{Entry, EntryContent, EntryId, Op};
use crate::error::Error;

/// Removes a SQLite file and its companions when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

/// A new SQLite file with one database, and `len` entries of its author in a chain on its
/// root (made, not stored), as another device of the author would send them.
fn open_with_chain(len: usize) -> (TempFile, Arc<SqliteBackend>, Database, Vec<Entry>) {
    let file = TempFile(std::env::temp_dir().join(format!(
        "mnemo-receive-{}.db",
        crate::crypto::random::hex_token::<8>().unwrap()
    )));
    let backend = Arc::new(SqliteBackend::open(&file.0).unwrap());
    let key = PrivateKey::generate().unwrap();
    let author = key.public_key();
    let db = Registry::new(backend.clone())
        .create("d", Arc::new(key), author)
        .unwrap();
    let (mut parent, mut height) = (db.id(), 0);
    let chain = (0..len)
        .map(|i| {
            height += 1;
            let ops = BTreeMap::from([(
                "s".to_string(),
                BTreeMap::from([(format!("k{i}"), Op::Set(i.to_string()))]),
            )]);
            let entry = EntryContent {
                db: Some(db.id()),
                parents: vec![parent],
                height,
                ops,
                author: db.author(),
            }
            .sign(&*db.keys)
            .unwrap();
            parent = entry.id();
            entry
        })
        .collect();
    (file, backend, db, chain)
}

/// The entries `db`'s subscribers hear from now on.
fn heard(db: &Database) -> (super::Subscription, mpsc::Receiver<EntryId>) {
    let (tx, rx) = mpsc::channel();
    let subscription = db
        .subscribe(Box::new(move |c: &Change| {
            let _ = tx.send(c.entry);
        }))
        .unwrap();
    (subscription, rx)
}

/// What `db`'s subscribers heard of so far.
fn heard_so_far(db: &Database, rx: &mpsc::Receiver<EntryId>) -> Vec<EntryId> {
    db.flush_notifications(Duration::from_secs(10)).unwrap();
    rx.try_iter().collect()
}

#[test]
fn children_sent_before_their_parents_come_in_with_them() {
    let (_file, backend, db, chain) = open_with_chain(20);
    let (_subscription, rx) = heard(&db);
    let reversed: Vec<Entry> = chain.iter().rev().cloned().collect();
    let outcomes = db.core.receive_all(reversed);
    let outcomes: Vec<_> = outcomes.into_iter().map(Result::unwrap).collect();
    assert!(outcomes[..19].iter().all(|r| r.pending));
    let ids: Vec<EntryId> = chain.iter().map(Entry::id).collect();
    assert_eq!(outcomes[19].applied, ids, "released parents first");
    assert_eq!(backend.tips(&db.id()).unwrap(), vec![(ids[19], 20)]);
    assert_eq!(heard_so_far(&db, &rx), ids);
    assert_eq!(db.core.waiting_entries(), 0);
    db.core.verify().unwrap();
}

#[test]
fn a_part_whose_commit_failed_reports_nothing_taken_nor_heard() {
    let (_file, backend, db, chain) = open_with_chain(20);
    let (_subscription, rx) = heard(&db);
    let tips = backend.tips(&db.id()).unwrap();
    // Children first: all but the last given wait, then come in with it, in one turn.
    backend.fail_commit_in(0);
    let reversed: Vec<Entry> = chain.iter().rev().cloned().collect();
    for (i, outcome) in db.core.receive_all(reversed).into_iter().enumerate() {
        assert!(
            matches!(outcome, Err(Error::Storage(_))),
            "{i}: {outcome:?}"
        );
    }
    assert_eq!(backend.tips(&db.id()).unwrap(), tips);
    assert!(heard_so_far(&db, &rx).is_empty());
    assert_eq!(db.core.waiting_entries(), 0);

    // Sent again, they are all taken.
    let outcomes = db.core.receive_all(chain.clone());
    assert!(outcomes
        .iter()
        .all(|o| o.as_ref().is_ok_and(|r| r.applied.len() == 1)));
    let ids: Vec<EntryId> = chain.iter().map(Entry::id).collect();
    assert_eq!(heard_so_far(&db, &rx), ids);
    db.core.verify().unwrap();
}

#[test]
fn a_failed_turn_keeps_what_the_turns_before_it_stored() {
    let (_file, backend, db, chain) = open_with_chain(100);
    let (_subscription, rx) = heard(&db);
    // The first turn (64 entries) is committed, the second's commit fails.
    backend.fail_commit_in(1);
    let outcomes = db.core.receive_all(chain.clone());
    let ids: Vec<EntryId> = chain.iter().map(Entry::id).collect();
    for (i, outcome) in outcomes.iter().enumerate() {
        match i < 64 {
            true => assert!(outcome.as_ref().is_ok_and(|r| r.applied == [ids[i]]), "{i}"),
            false => assert!(
                matches!(outcome, Err(Error::Storage(_))),
                "{i}: {outcome:?}"
            ),
        }
    }
    assert_eq!(backend.tips(&db.id()).unwrap(), vec![(ids[63], 64)]);
    assert_eq!(heard_so_far(&db, &rx), ids[..64]);
    // Memory forgot what the failed turn taught it: the rest come in on what is stored.
    let outcomes = db.core.receive_all(chain[64..].to_vec());
    assert!(outcomes
        .iter()
        .all(|o| o.as_ref().is_ok_and(|r| r.applied.len() == 1)));
    assert_eq!(heard_so_far(&db, &rx), ids[64..]);
    assert_eq!(db.get("s", "k99").unwrap(), "99");
    db.core.verify().unwrap();
}
