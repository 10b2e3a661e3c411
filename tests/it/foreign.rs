//! Foreign entries: invalid ones are rejected and change nothing; valid ones wait for
//! their parents.

use std::collections::BTreeMap;

use mnemo::crypto::PrivateKey;
use mnemo::database::Permission;
use mnemo::entry::{Entry, EntryContent, EntryId, Op, Ops};
use mnemo::{Database, Error, Instance};

use std::sync::Arc;

use mnemo::backend::MemoryBackend;

use crate::support::{logged_in, state, stored, watched_logged_in, Instrumented};

pub(crate) fn ops(store: &str, key: &str, json: &str) -> Ops {
    let mut store_ops = BTreeMap::new();
    store_ops.insert(key.to_string(), Op::Set(json.to_string()));
    let mut ops = Ops::new();
    ops.insert(store.to_string(), store_ops);
    ops
}

/// An entry on top of `db`'s current tips, signed by `key`.
pub(crate) fn on_tips(db: &Database, key: &PrivateKey, ops: Ops) -> Entry {
    let tips = db.tips().unwrap();
    let height = tips
        .iter()
        .map(|t| {
            Entry::decode(&db.entry_bytes(t).unwrap())
                .unwrap()
                .content()
                .height
        })
        .max()
        .unwrap()
        + 1;
    EntryContent {
        db: Some(db.id()),
        parents: tips,
        height,
        ops,
        author: key.public_key(),
    }
    .sign(key)
    .unwrap()
}

/// A replica of `db` (no user of it may open the database: it only relays) holding all
/// of `db`'s entries listed, and its storage.
fn replica(db: &Database, entries: &[EntryId]) -> (Instance, Arc<MemoryBackend>) {
    let backend = Arc::new(MemoryBackend::new());
    let inst = Instance::open(backend.clone()).unwrap();
    for id in entries {
        inst.receive_entry(&db.entry_bytes(id).unwrap()).unwrap();
    }
    (inst, backend)
}

fn assert_unchanged(
    backend: &MemoryBackend,
    before: &(Vec<EntryId>, Vec<(String, String)>),
    db_id: EntryId,
) {
    assert_eq!(&stored(backend, &db_id, "s"), before);
}

#[test]
fn invalid_entries_are_rejected_and_change_nothing() {
    let (_inst, owner) = logged_in("owner");
    let db = owner.create_db("d").unwrap();
    let first = db.set("s", "k", "1").unwrap();
    let (peer, backend) = replica(&db, &[db.id(), first]);

    // A key with no permission.
    let stranger = PrivateKey::generate().unwrap();
    let e = on_tips(&db, &stranger, ops("s", "k", "2"));
    assert!(matches!(
        peer.receive_entry(e.bytes()),
        Err(Error::PermissionDenied(_))
    ));

    // A forged signature and a tampered payload: the owner's entry, altered.
    let good = db.entry_bytes(&db.set("s", "k", "3").unwrap()).unwrap();
    let mut forged = good.clone();
    *forged.last_mut().unwrap() ^= 1;
    assert!(matches!(
        peer.receive_entry(&forged),
        Err(Error::Corrupt(_))
    ));
    let mut tampered = good.clone();
    let at = tampered.windows(1).rposition(|w| w == b"3").unwrap();
    tampered[at] = b'4';
    assert!(matches!(
        peer.receive_entry(&tampered),
        Err(Error::Corrupt(_))
    ));
    peer.receive_entry(&good).unwrap();
    let before = (
        vec![EntryId::of_bytes(&good)],
        vec![("k".to_string(), "3".to_string())],
    );

    // A parent from another database, and a wrong height.
    let other = owner.create_db("other").unwrap();
    let foreign_parent = EntryContent {
        db: Some(db.id()),
        parents: vec![other.id()],
        height: 1,
        ops: ops("s", "k", "5"),
        author: db.author(),
    };
    let writer = PrivateKey::generate().unwrap();
    let grant = db.grant(&writer.public_key(), Permission::Write).unwrap();
    peer.receive_entry(&db.entry_bytes(&grant).unwrap())
        .unwrap();
    let before = (vec![grant], before.1);
    peer.receive_entry(&other.entry_bytes(&other.id()).unwrap())
        .unwrap();
    let mut wrong_parent = foreign_parent;
    wrong_parent.author = writer.public_key();
    assert!(matches!(
        peer.receive_entry(wrong_parent.sign(&writer).unwrap().bytes()),
        Err(Error::Corrupt(_))
    ));
    let mut wrong_height = on_tips(&db, &writer, ops("s", "k", "6")).content().clone();
    wrong_height.height += 1;
    assert!(matches!(
        peer.receive_entry(wrong_height.sign(&writer).unwrap().bytes()),
        Err(Error::Corrupt(_))
    ));

    // A writer changing settings (admin only), and a reserved store.
    let mut grant_self = BTreeMap::new();
    grant_self.insert(
        format!("auth/{}", writer.public_key()),
        Op::Set(r#"{"permission":"admin","priority":1,"status":"active"}"#.into()),
    );
    let mut settings_ops = Ops::new();
    settings_ops.insert("_settings".to_string(), grant_self);
    let escalate = on_tips(&db, &writer, settings_ops);
    assert!(matches!(
        peer.receive_entry(escalate.bytes()),
        Err(Error::PermissionDenied(_))
    ));
    let reserved = on_tips(&db, &writer, ops("_private", "k", "1"));
    assert!(matches!(
        peer.receive_entry(reserved.bytes()),
        Err(Error::Corrupt(_))
    ));

    // Names a local write refuses: an empty key, a NUL in a key, a store or a patch path
    // (storage keys are text without NUL; a cursor could not return such a key).
    let mut nul_path = Ops::new();
    let patch = BTreeMap::from([("/a\0b".to_string(), "1".to_string())]);
    nul_path.insert(
        "s".to_string(),
        BTreeMap::from([("k".to_string(), Op::Patch(patch))]),
    );
    for bad in [
        ops("s", "", "1"),
        ops("s", "a\0b", "1"),
        ops("s\0t", "k", "1"),
        nul_path,
    ] {
        let entry = on_tips(&db, &writer, bad.clone());
        match peer.receive_entry(entry.bytes()) {
            Err(Error::Corrupt(_)) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }

    assert_unchanged(&backend, &before, db.id());
}

/// A demotion whose storage commit failed never happened: the demoted key's entries that
/// arrive afterwards are applied, not discarded by a lowering that memory kept.
#[test]
fn a_demotion_whose_commit_failed_discards_nothing() {
    let (storage, inst, owner) = watched_logged_in("owner");
    let db = owner.create_db("d").unwrap();
    let writer = PrivateKey::generate().unwrap();
    db.grant(&writer.public_key(), Permission::Write).unwrap();
    let by_writer = on_tips(&db, &writer, ops("s", "k", "\"writer\""));

    storage.roll_back_next_turn();
    assert!(matches!(
        db.grant(&writer.public_key(), Permission::Read),
        Err(Error::Storage(_))
    ));
    let received = inst.receive_entry(by_writer.bytes()).unwrap();
    assert_eq!(received.applied, vec![by_writer.id()]);
    assert!(received.discarded.is_empty());
    assert_eq!(db.get("s", "k").unwrap(), "\"writer\"");
    db.verify().unwrap();
}

/// Once a commit's entry is stored, nothing left to do can fail it: a storage that stops
/// answering reads right after the entry landed does not turn a stored revocation into an
/// error for its caller.
#[test]
fn a_stored_commit_succeeds_even_if_storage_reads_fail_right_after() {
    let (storage, _inst, owner) = watched_logged_in("owner");
    let db = owner.create_db("d").unwrap();
    let writer = PrivateKey::generate().unwrap().public_key();
    db.grant(&writer, Permission::Write).unwrap();
    db.set("s", "k", "1").unwrap();

    storage.fail_reads_after_next_put();
    let revoked = db.revoke(&writer);
    storage.resume_reads();
    assert!(revoked.is_ok(), "{revoked:?}");
    assert_eq!(db.permission_of(&writer).unwrap(), None);
    db.verify().unwrap();
}

/// Two processes on one storage, "here" (watched) and "other", and an owner's database on
/// a third copy with a writer granted; here holds the root and the grant, then the
/// writer's entry `concurrent` (on the owner's tips, so concurrent with what the owner
/// writes next).
struct TwoProcesses {
    watched: Arc<Instrumented>,
    here: Instance,
    other: Instance,
    /// The owner's instance and session (dropped, the session logs out).
    owner: (Instance, mnemo::User),
    db: Database,
    writer: PrivateKey,
    concurrent: Entry,
}

impl TwoProcesses {
    fn new(concurrent_value: &str) -> TwoProcesses {
        let shared: Arc<dyn mnemo::backend::Backend> = Arc::new(MemoryBackend::new());
        let watched = Instrumented::new(shared.clone());
        let here = Instance::open(watched.clone()).unwrap();
        let other = Instance::open(shared).unwrap();
        let owner = logged_in("owner");
        let db = owner.1.create_db("d").unwrap();
        let writer = PrivateKey::generate().unwrap();
        let grant = db.grant(&writer.public_key(), Permission::Write).unwrap();
        for id in [db.id(), grant] {
            here.receive_entry(&db.entry_bytes(&id).unwrap()).unwrap();
        }
        let concurrent = on_tips(&db, &writer, ops("s", "c", concurrent_value));
        assert_eq!(
            here.receive_entry(concurrent.bytes())
                .unwrap()
                .applied
                .len(),
            1
        );
        TwoProcesses {
            watched,
            here,
            other,
            owner,
            db,
            writer,
            concurrent,
        }
    }
}

/// A process whose undoing of a revocation failed looks again, before its next change,
/// for the record that asks for it: another process on the storage that did the undoing
/// meanwhile removed it, and nothing is left to do. Before, the process worked the whole
/// state out again (reading every entry) before each change, and while other processes kept
/// writing that never succeeded: every commit of it failed BUSY (an audit: 13 BUSY and 170
/// commits in 12 s, against the other writer's 3,490).
#[test]
fn an_undoing_another_process_finished_is_not_done_again() {
    use std::sync::atomic::Ordering;

    let TwoProcesses {
        watched,
        here,
        other,
        owner: _owner,
        db,
        writer,
        ..
    } = TwoProcesses::new("1");
    // The owner, who never saw that entry, revokes the writer: arriving here, the
    // revocation is stored and then its undoing fails.
    let revoke = db
        .entry_bytes(&db.revoke(&writer.public_key()).unwrap())
        .unwrap();
    watched.fail_reads_after_next_put();
    assert!(here.receive_entry(&revoke).is_err());
    watched.resume_reads();
    // The other process does the undoing at its first use of the database.
    assert!(other.receive_entry(&revoke).unwrap().duplicate);
    let before = watched.entry_reads.load(Ordering::SeqCst);
    assert!(here.receive_entry(&revoke).unwrap().duplicate);
    let reads = watched.entry_reads.load(Ordering::SeqCst) - before;
    assert_eq!(reads, 0, "the undoing was done again here");
}

/// A revocation that arrives after what it discards is stored even when other processes'
/// writes keep overtaking the undoing that follows (each working out of the state is stale
/// before it is written): the entry is taken, the undoing stays pending, and the state is
/// right at the next read. Before, the receipt failed BUSY though the entry was stored (an
/// audit: every sync round bringing the revocation failed while two processes wrote).
#[test]
fn a_revocation_is_taken_while_other_processes_overtake_its_undoing() {
    let TwoProcesses {
        watched,
        here,
        other,
        db,
        writer,
        concurrent,
        owner: _owner,
    } = TwoProcesses::new("\"writer's\"");
    let revoke = db.revoke(&writer.public_key()).unwrap();
    // The owner's later writes reach the storage through the other process, one before
    // each replacement of the state here.
    let mut later: Vec<Vec<u8>> = (0..16)
        .map(|i| {
            let id = db.set("s", &format!("o{i}"), &i.to_string()).unwrap();
            db.entry_bytes(&id).unwrap()
        })
        .collect();
    later.reverse();
    let last = later[0].clone();
    watched.before_state_replacements(16, move || {
        other.receive_entry(&later.pop().unwrap()).unwrap();
    });

    let taken = here.receive_entry(&db.entry_bytes(&revoke).unwrap());
    let taken = taken.unwrap_or_else(|e| panic!("the revocation was refused: {e}"));
    assert_eq!(taken.applied, vec![revoke]);
    // The next change here finds the state worked out (by the other process, which found
    // the record at its first use): the writer's concurrent write is undone.
    assert!(here.receive_entry(&last).unwrap().duplicate);
    let (tips, cells) = stored(&*watched, &db.id(), "s");
    assert_eq!(cells, state(&db, "s"));
    let mut expected = vec![concurrent.id(), db.tips().unwrap()[0]];
    expected.sort();
    assert_eq!(tips, expected);
}

/// An undoing removes its record only if no revocation was stored meanwhile. Here, this
/// process works out the state for a first revocation; before it removes the record,
/// another process stores a second revocation (finding the record there) and fails to
/// undo what that one discards. Before, the record was then removed anyway, and the second
/// writer's concurrent write stayed in effect for good on that storage.
#[test]
fn an_undoing_keeps_the_record_of_a_revocation_stored_meanwhile() {
    use mnemo::backend::Backend;

    let shared: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let (watched, watched_other) = (
        Instrumented::new(shared.clone()),
        Instrumented::new(shared.clone()),
    );
    let here = Instance::open(watched.clone()).unwrap();
    let other = Instance::open(watched_other.clone()).unwrap();
    let (_owner_inst, owner) = logged_in("owner");
    let db = owner.create_db("d").unwrap();
    let writers = [
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
    ];
    let mut known = vec![db.id()];
    for w in &writers {
        known.push(db.grant(&w.public_key(), Permission::Write).unwrap());
    }
    for id in known {
        here.receive_entry(&db.entry_bytes(&id).unwrap()).unwrap();
    }
    for (i, w) in writers.iter().enumerate() {
        let concurrent = on_tips(&db, w, ops("s", &format!("w{i}"), "1"));
        here.receive_entry(concurrent.bytes()).unwrap();
    }
    let revokes: Vec<Vec<u8>> = writers
        .iter()
        .map(|w| {
            db.entry_bytes(&db.revoke(&w.public_key()).unwrap())
                .unwrap()
        })
        .collect();
    // The first revocation is stored here and its undoing fails: it is pending.
    watched.fail_reads_after_next_put();
    assert!(here.receive_entry(&revokes[0]).is_err());
    watched.resume_reads();

    let second = revokes[1].clone();
    watched.before_meta_delete(move || {
        watched_other.fail_reads_after_next_put();
        assert!(other.receive_entry(&second).is_err());
        watched_other.resume_reads();
    });
    // Here, the pending undoing is done before the next change.
    assert!(here.receive_entry(&revokes[0]).unwrap().duplicate);

    // A process opening the storage now finds the second undoing asked for, and does it.
    let fresh = Instance::open(shared.clone()).unwrap();
    assert!(fresh.receive_entry(&revokes[1]).unwrap().duplicate);
    assert_eq!(stored(&*shared, &db.id(), "s").1, state(&db, "s"));
}

#[test]
fn a_revoked_key_cannot_write_on_top_of_its_revocation() {
    let (_inst, owner) = logged_in("owner");
    let db = owner.create_db("d").unwrap();
    let writer = PrivateKey::generate().unwrap();
    let grant = db.grant(&writer.public_key(), Permission::Write).unwrap();
    let (peer, _) = replica(&db, &[db.id(), grant]);

    // Before revocation: accepted.
    let ok = on_tips(&db, &writer, ops("s", "w", "1"));
    db.receive(ok.bytes()).unwrap();
    peer.receive_entry(ok.bytes()).unwrap();
    // Written concurrently with the revocation (on the pre-revocation tips): valid where it
    // was written, so stored, but discarded wherever the revocation is known.
    let concurrent = on_tips(&db, &writer, ops("s", "c", "1"));
    let revoke = db.revoke(&writer.public_key()).unwrap();
    peer.receive_entry(&db.entry_bytes(&revoke).unwrap())
        .unwrap();
    let got = peer.receive_entry(concurrent.bytes()).unwrap();
    assert!(got.applied.is_empty() && got.discarded == vec![concurrent.id()]);
    let got = db.receive(concurrent.bytes()).unwrap();
    assert_eq!(got.discarded, vec![concurrent.id()]);
    assert!(db.get("s", "c").unwrap_err().is_not_found());
    // On top of the revocation: rejected, whatever it claims.
    let after = on_tips(&db, &writer, ops("s", "w", "2"));
    assert!(matches!(
        db.receive(after.bytes()),
        Err(Error::PermissionDenied(_))
    ));
    assert!(matches!(
        peer.receive_entry(after.bytes()),
        Err(Error::PermissionDenied(_))
    ));
    assert_eq!(db.get("s", "w").unwrap(), "1");
    assert_eq!(db.permission_of(&writer.public_key()).unwrap(), None);
}

#[test]
fn entries_wait_for_missing_parents_then_apply() {
    let (_inst, owner) = logged_in("owner");
    let db = owner.create_db("d").unwrap();
    let ids: Vec<EntryId> = (0..5)
        .map(|i| db.set("s", &format!("k{i}"), &i.to_string()).unwrap())
        .collect();
    let (peer, backend) = replica(&db, &[]);
    // Children first, root last.
    for id in ids.iter().rev() {
        let got = peer.receive_entry(&db.entry_bytes(id).unwrap()).unwrap();
        assert!(got.pending && got.applied.is_empty());
    }
    let got = peer
        .receive_entry(&db.entry_bytes(&db.id()).unwrap())
        .unwrap();
    assert_eq!(
        got.applied.len(),
        6,
        "root and its five waiting descendants"
    );
    assert_eq!(
        stored(&*backend, &db.id(), "s"),
        (db.tips().unwrap(), state(&db, "s"))
    );
    // A duplicate changes nothing.
    assert!(
        peer.receive_entry(&db.entry_bytes(&ids[2]).unwrap())
            .unwrap()
            .duplicate
    );
}

#[test]
fn the_waiting_limits_set_at_run_time_bound_what_waits_from_then_on() {
    let (_inst, owner) = logged_in("owner");
    let db = owner.create_db("d").unwrap();
    let ids: Vec<EntryId> = (0..4)
        .map(|i| db.set("s", &format!("k{i}"), &i.to_string()).unwrap())
        .collect();
    let (peer, _) = replica(&db, &[]);
    let receive = |id: &EntryId| peer.receive_entry(&db.entry_bytes(id).unwrap());
    let busy = |got: mnemo::Result<_>| matches!(got, Err(Error::Busy(_)));

    // Two entries may wait in a database: the third is refused, and nothing else changes.
    peer.set_limits_by_name(&[("waiting_entries_per_database", 2)])
        .unwrap();
    assert!(receive(&ids[3]).unwrap().pending);
    assert!(receive(&ids[2]).unwrap().pending);
    assert!(busy(receive(&ids[1])));
    assert_eq!(peer.limits().waiting.entries_per_database, 2);

    // No byte may wait across the instance: nothing more waits, in any database.
    peer.set_limits_by_name(&[("waiting_entries_per_database", 10), ("waiting_bytes", 0)])
        .unwrap();
    assert!(busy(receive(&ids[1])));
    // Within the bytes of one entry, per database: the instance's room is no longer what
    // refuses, this database's is.
    let used = peer.waiting_bytes() as u64;
    peer.set_limits_by_name(&[
        ("waiting_bytes", 1 << 30),
        ("waiting_bytes_per_database", used),
    ])
    .unwrap();
    assert!(busy(receive(&ids[1])));

    // Entries that waited longer than a lowered waiting time are dropped at the next
    // arrival, which then finds room.
    peer.set_limits_by_name(&[
        ("waiting_bytes_per_database", 1 << 30),
        ("waiting_time_ms", 1),
    ])
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(receive(&ids[1]).unwrap().pending);
    assert_eq!(peer.waiting_bytes() as u64, used / 2, "only ids[1] waits");
    // The root and ids[0] then apply, with ids[1] that waited; the dropped two come again.
    peer.set_limits_by_name(&[("waiting_time_ms", 600_000)])
        .unwrap();
    assert_eq!(receive(&db.id()).unwrap().applied, vec![db.id()]);
    assert_eq!(receive(&ids[0]).unwrap().applied, vec![ids[0], ids[1]]);
    assert_eq!(receive(&ids[2]).unwrap().applied, vec![ids[2]]);
    assert_eq!(receive(&ids[3]).unwrap().applied, vec![ids[3]]);
    assert_eq!(peer.waiting_bytes(), 0);
}

#[test]
fn waiting_limits_out_of_their_bounds_are_refused_and_change_nothing() {
    let (inst, _) = logged_in("owner");
    let before = inst.limits().by_name();
    for (name, value) in [
        ("waiting_entries_per_database", (1u64 << 24) + 1),
        ("waiting_bytes_per_database", (1 << 40) + 1),
        ("waiting_bytes", u64::MAX),
        ("waiting_time_ms", 0),
        ("waiting_time_ms", 86_400_001),
    ] {
        let refused = inst.set_limits_by_name(&[("waiting_bytes", 5), (name, value)]);
        assert!(
            matches!(refused, Err(Error::InvalidArgument(_))),
            "{name}={value}"
        );
        assert_eq!(inst.limits().by_name(), before);
    }
    for (name, value) in [
        ("waiting_entries_per_database", 1 << 24),
        ("waiting_bytes_per_database", 1 << 40),
        ("waiting_bytes", 0),
        ("waiting_time_ms", 86_400_000),
    ] {
        let set = inst.set_limits_by_name(&[(name, value)]).unwrap().by_name();
        assert!(set.contains(&(name, value)), "{name}={value}");
    }
}

#[test]
fn a_waiting_child_that_turns_out_invalid_is_dropped() {
    let (_inst, owner) = logged_in("owner");
    let db = owner.create_db("d").unwrap();
    let first = db.set("s", "k", "1").unwrap();
    let stranger = PrivateKey::generate().unwrap();
    let bad_child = EntryContent {
        db: Some(db.id()),
        parents: vec![first],
        height: 2,
        ops: ops("s", "k", "\"x\""),
        author: stranger.public_key(),
    }
    .sign(&stranger)
    .unwrap();
    let (peer, _) = replica(&db, &[db.id()]);
    let got = peer.receive_entry(bad_child.bytes());
    assert!(got.as_ref().is_ok_and(|g| g.pending), "{got:?}");
    let got = peer
        .receive_entry(&db.entry_bytes(&first).unwrap())
        .unwrap();
    assert_eq!(got.applied, vec![first]);
    assert_eq!(got.rejected.len(), 1);
    assert!(matches!(got.rejected[0].1, Error::PermissionDenied(_)));
}

#[test]
fn subscribers_hear_local_commits_and_applied_foreign_entries() {
    use std::sync::mpsc::channel;
    use std::time::Duration;

    let (_inst, owner) = logged_in("owner");
    let db = owner.create_db("d").unwrap();
    let (peer, reader) = logged_in("reader");
    let grant = db
        .grant(&reader.default_key().unwrap(), Permission::Read)
        .unwrap();
    for id in [db.id(), grant] {
        peer.receive_entry(&db.entry_bytes(&id).unwrap()).unwrap();
    }
    let copy = reader.load_db(&db.id()).unwrap();

    let (tx, rx) = channel();
    let _sub = copy
        .subscribe(Box::new(move |change| tx.send(*change).unwrap()))
        .unwrap();
    let first = db.set("s", "k", "1").unwrap();
    let second = db.set("s", "k", "2").unwrap();
    // The child arrives first and waits: no notification until its parent applies.
    peer.receive_entry(&db.entry_bytes(&second).unwrap())
        .unwrap();
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    peer.receive_entry(&db.entry_bytes(&first).unwrap())
        .unwrap();
    let heard: Vec<_> = (0..2)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    assert!(heard.iter().all(|c| c.remote() && c.db == db.id()));
    assert_eq!(
        heard.iter().map(|c| c.entry).collect::<Vec<_>>(),
        vec![first, second]
    );
    // A duplicate is not a change.
    peer.receive_entry(&db.entry_bytes(&first).unwrap())
        .unwrap();
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
}

/// A writer's entries side by side (none on another's) make tips; a database takes at most
/// `MAX_PARENTS` of them, so that the next commit, whose parents are every tip, can always
/// be made. Before, a writer (or a relay of a revoked writer's entries) pushing 1,100 such
/// entries left every later commit INVALID_ARGUMENT ("an entry has at most 1024 parents"),
/// the revocation that would end it included, for good.
#[test]
fn a_database_takes_at_most_as_many_tips_as_an_entry_has_parents() {
    use mnemo::entry::MAX_PARENTS;

    let (inst, owner) = logged_in("owner");
    let db = owner.create_db("d").unwrap();
    let writer = PrivateKey::generate().unwrap();
    db.grant(&writer.public_key(), Permission::Write).unwrap();
    let side_by_side: Vec<Entry> = (0..MAX_PARENTS + 20)
        .map(|i| on_tips(&db, &writer, ops("s", &format!("k{i}"), "1")))
        .collect();
    for entry in &side_by_side[..MAX_PARENTS] {
        assert_eq!(inst.receive_entry(entry.bytes()).unwrap().applied.len(), 1);
    }
    assert_eq!(db.tips().unwrap().len(), MAX_PARENTS);
    let refused = inst.receive_entry(side_by_side[MAX_PARENTS].bytes());
    assert!(matches!(refused, Err(Error::Busy(_))), "{refused:?}");
    assert_eq!(db.tips().unwrap().len(), MAX_PARENTS);
    // A commit merges them; the refused entry is taken when it comes again.
    let merge = db.set("s", "owner", "1").unwrap();
    assert_eq!(db.tips().unwrap(), vec![merge]);
    for entry in &side_by_side[MAX_PARENTS..] {
        inst.receive_entry(entry.bytes()).unwrap();
    }
    assert_eq!(db.tips().unwrap().len(), 21);
    // Its revocation is made, and the revoked writer's entries it had not seen, discarded
    // but stored, are held to the same bound.
    let late: Vec<Entry> = (0..MAX_PARENTS)
        .map(|i| on_tips(&db, &writer, ops("s", &format!("late{i}"), "1")))
        .collect();
    db.revoke(&writer.public_key()).unwrap();
    let mut refused = 0;
    for entry in &late {
        match inst.receive_entry(entry.bytes()) {
            Ok(r) => assert_eq!(r.discarded.len(), 1),
            Err(Error::Busy(_)) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(refused, 1);
    assert_eq!(db.tips().unwrap().len(), MAX_PARENTS);
    db.set("s", "owner", "3").unwrap();
    assert_eq!(db.get("s", "owner").unwrap(), "3");
    assert!(matches!(db.get("s", "late0"), Err(Error::NotFound(_))));
    db.verify().unwrap();
}

/// An entry on `parents` (of heights up to `below`), signed by `key`.
pub(crate) fn on_parents(
    db: &Database,
    mut parents: Vec<EntryId>,
    below: u64,
    key: &PrivateKey,
    ops: Ops,
) -> Entry {
    parents.sort();
    EntryContent {
        db: Some(db.id()),
        parents,
        height: below + 1,
        ops,
        author: key.public_key(),
    }
    .sign(key)
    .unwrap()
}

/// A flooding writer's `MAX_PARENTS` entries side by side on one entry of a database, and an
/// honest writer, both granted write there.
struct Flood {
    flooder: PrivateKey,
    honest: PrivateKey,
    /// The grants and the base entry, in order.
    made: Vec<EntryId>,
    /// The entry the flood is on, and its height.
    base: EntryId,
    h: u64,
    entries: Vec<Entry>,
}

impl Flood {
    fn on(db: &Database) -> Flood {
        let flooder = PrivateKey::generate().unwrap();
        let honest = PrivateKey::generate().unwrap();
        let mut made = vec![
            db.grant(&flooder.public_key(), Permission::Write).unwrap(),
            db.grant(&honest.public_key(), Permission::Write).unwrap(),
        ];
        let base = db.set("s", "base", "1").unwrap();
        made.push(base);
        let h = Entry::decode(&db.entry_bytes(&base).unwrap())
            .unwrap()
            .content()
            .height;
        let entries = (0..mnemo::entry::MAX_PARENTS)
            .map(|i| on_parents(db, vec![base], h, &flooder, ops("s", &format!("f{i}"), "1")))
            .collect();
        Flood {
            flooder,
            honest,
            made,
            base,
            h,
            entries,
        }
    }
}

/// A relay (it cannot commit) whose tips a flooding writer keeps at the bound: an honest
/// writer's entry made before it saw the flood adds a tip and is refused, but its next
/// commit, which merges the tips, takes it in with it (in either order of arrival, through a
/// chain of entries), as no commit at the relay could. Before, the relay refused the entry
/// and waited for its child for ever. A merging child that is not allowed takes nothing in.
#[test]
fn a_relay_at_the_tip_bound_takes_a_writers_entry_in_with_the_commit_that_merges_the_tips() {
    use mnemo::entry::MAX_PARENTS;

    let (_inst, owner) = logged_in("owner");
    let db = owner.create_db("d").unwrap();
    let stranger = PrivateKey::generate().unwrap();
    let Flood {
        flooder,
        honest,
        made,
        base,
        h,
        entries: flood,
    } = Flood::on(&db);
    let mut shared = vec![db.id()];
    shared.extend(made);
    let flood_ids: Vec<EntryId> = flood.iter().map(Entry::id).collect();
    let tips_of = |backend: &MemoryBackend| {
        use mnemo::backend::Backend;
        backend.tips(&db.id()).unwrap().len()
    };
    let relay_at_bound = || {
        let (relay, backend) = replica(&db, &shared);
        for entry in &flood {
            relay.receive_entry(entry.bytes()).unwrap();
        }
        assert_eq!(tips_of(&backend), MAX_PARENTS);
        (relay, backend)
    };
    let merging = |last: &Entry, key: &PrivateKey| {
        let mut parents = vec![last.id()];
        parents.extend_from_slice(&flood_ids[1..]);
        let height = last.content().height;
        on_parents(&db, parents, height, key, ops("s", "merged", "1"))
    };

    // The entry, then its merging child.
    let written = on_parents(&db, vec![base], h, &honest, ops("s", "honest", "1"));
    let merge = merging(&written, &honest);
    let (relay, backend) = relay_at_bound();
    let refused = relay.receive_entry(written.bytes());
    assert!(matches!(refused, Err(Error::Busy(_))), "{refused:?}");
    let took = relay.receive_entry(merge.bytes()).unwrap();
    assert_eq!(took.applied, vec![written.id(), merge.id()]);
    assert_eq!(tips_of(&backend), 2); // the merge and the one flood entry it did not see
                                      // Sent again, both are known.
    assert!(relay.receive_entry(written.bytes()).unwrap().duplicate);

    // The child first: it waits; the entry, refused for room, comes in with it.
    let (relay, backend) = relay_at_bound();
    assert!(relay.receive_entry(merge.bytes()).unwrap().pending);
    let took = relay.receive_entry(written.bytes()).unwrap();
    assert_eq!(took.applied, vec![written.id(), merge.id()]);
    assert_eq!(tips_of(&backend), 2);

    // A chain: two entries, each adding nothing the bound allows, then the merge.
    let first = on_parents(&db, vec![base], h, &honest, ops("s", "a", "1"));
    let second = on_parents(&db, vec![first.id()], h + 1, &honest, ops("s", "b", "1"));
    let merge = merging(&second, &honest);
    let (relay, backend) = relay_at_bound();
    assert!(matches!(
        relay.receive_entry(first.bytes()),
        Err(Error::Busy(_))
    ));
    assert!(relay.receive_entry(second.bytes()).unwrap().pending);
    let took = relay.receive_entry(merge.bytes()).unwrap();
    assert_eq!(took.applied, vec![first.id(), second.id(), merge.id()]);
    assert_eq!(tips_of(&backend), 2);

    // The flooder's entries refused after the honest one do not push it out of the
    // entries held (64): those of the author holding the most make way.
    let (relay, backend) = relay_at_bound();
    assert!(matches!(
        relay.receive_entry(written.bytes()),
        Err(Error::Busy(_))
    ));
    for i in 0..100 {
        let more = on_parents(
            &db,
            vec![base],
            h,
            &flooder,
            ops("s", &format!("g{i}"), "1"),
        );
        assert!(matches!(
            relay.receive_entry(more.bytes()),
            Err(Error::Busy(_))
        ));
    }
    let merge = merging(&written, &honest);
    let took = relay.receive_entry(merge.bytes()).unwrap();
    assert_eq!(took.applied, vec![written.id(), merge.id()]);
    assert_eq!(tips_of(&backend), 2);

    // A merging child signed by a key with no grant takes nothing in: the entry stays
    // refused, the tips at the bound.
    let forged = merging(&written, &stranger);
    let (relay, backend) = relay_at_bound();
    assert!(matches!(
        relay.receive_entry(written.bytes()),
        Err(Error::Busy(_))
    ));
    assert!(relay.receive_entry(forged.bytes()).unwrap().pending);
    assert!(matches!(
        relay.receive_entry(written.bytes()),
        Err(Error::Busy(_))
    ));
    assert_eq!(tips_of(&backend), MAX_PARENTS);
    // The honest merge still does.
    let took = relay
        .receive_entry(merging(&written, &honest).bytes())
        .unwrap();
    assert!(took.applied.contains(&written.id()));
    assert_eq!(tips_of(&backend), 2);
}

/// A database holding more tips than an entry may have parents (here: two held entries taken
/// in with their merging child, whose storing then failed) still commits: a commit merges
/// the 1,024 highest, the next the rest. A permission lowered meanwhile would not see the tips
/// left out: refused BUSY until they are merged. (A reviewer found the first version of this
/// passing the kept tips unsorted, which every commit refused as INTERNAL.)
#[test]
fn a_database_past_the_tip_bound_commits_merging_the_highest_tips() {
    use mnemo::entry::MAX_PARENTS;

    let (storage, _inst, owner) = watched_logged_in("owner");
    let db = owner.create_db("d").unwrap();
    let Flood {
        flooder,
        honest,
        base,
        h,
        entries: flood,
        ..
    } = Flood::on(&db);
    for entry in &flood {
        db.receive(entry.bytes()).unwrap();
    }
    let first = on_parents(&db, vec![base], h, &honest, ops("s", "first", "1"));
    let written = on_parents(
        &db,
        vec![first.id()],
        h + 1,
        &honest,
        ops("s", "honest", "1"),
    );
    assert!(matches!(db.receive(first.bytes()), Err(Error::Busy(_))));
    assert!(db.receive(written.bytes()).unwrap().pending);
    let mut parents = vec![written.id()];
    parents.extend(flood[1..].iter().map(Entry::id));
    let merge = on_parents(&db, parents, h + 2, &honest, ops("s", "merged", "1"));
    // The held entries are stored (the second the highest tip), then storage fails before
    // their merging child is.
    let failing = storage.clone();
    let mut puts = 0;
    storage.before_writes(2, move || {
        puts += 1;
        if puts == 2 {
            failing.fail_reads_after_next_put();
        }
    });
    let _ = db.receive(merge.bytes());
    storage.resume_reads();
    assert_eq!(db.tips().unwrap().len(), MAX_PARENTS + 1);
    assert!(matches!(
        db.revoke(&flooder.public_key()),
        Err(Error::Busy(_))
    ));
    db.set("s", "after", "1").unwrap();
    assert_eq!(db.tips().unwrap().len(), 2);
    db.set("s", "again", "1").unwrap();
    assert_eq!(db.tips().unwrap().len(), 1);
    db.revoke(&flooder.public_key()).unwrap();
    assert_eq!(db.get("s", "honest").unwrap(), "1");
    db.verify().unwrap();
}

/// The children of a stored entry do not each read it again from storage (which checks an
/// entry's row as a whole, its bytes included: 1,100 children of an entry holding an 8 MB
/// value took 28 s to take in on SQLite, 3.3 s now).
#[test]
fn the_children_of_an_entry_do_not_each_read_it_again() {
    let (watched, _inst, user) = watched_logged_in("owner");
    let db = user.create_db("d").unwrap();
    let writer = PrivateKey::generate().unwrap();
    db.grant(&writer.public_key(), Permission::Write).unwrap();
    let parent = on_tips(&db, &writer, ops("big", "k", "\"a large value\""));
    db.receive(parent.bytes()).unwrap();
    let height = parent.content().height;
    let children: Vec<Entry> = (0..20)
        .map(|n| {
            on_parents(
                &db,
                vec![parent.id()],
                height,
                &writer,
                ops("s", &format!("k{n}"), "1"),
            )
        })
        .collect();
    let before = watched
        .entry_meta_reads
        .load(std::sync::atomic::Ordering::Relaxed);
    for child in &children {
        db.receive(child.bytes()).unwrap();
    }
    let reads = watched
        .entry_meta_reads
        .load(std::sync::atomic::Ordering::Relaxed)
        - before;
    // One each for the child itself (whether it is here already), and the parent once:
    // before, the parent was read twice more for each child (60 reads).
    assert!(reads <= 25, "{reads} reads of entries' metadata");
    assert_eq!(db.tips().unwrap().len(), 20);
    db.verify().unwrap();
}
