//! Several processes on one storage: each keeps what it worked out of a database in memory
//! (which entries the settings discard, which stores hold documents), and decides from
//! reads taken before it writes. Another process's change landing in between must not be
//! missed. Two instances opened on one storage through separate connections stand for the
//! processes; a test hook lands one's change between the other's reads and its write.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Instant;

use mnemo::backend::{Backend, MemoryBackend};
use mnemo::crypto::PrivateKey;
use mnemo::database::{Change, Event, Permission, Subscription, READ_RECHECK_AFTER};
use mnemo::entry::{Entry, EntryContent, EntryId, Ops};
use mnemo::{Database, Error, Instance, User};

use crate::authority::{auth, data, root, write};
use crate::support::{open_discarding_abandoned, storages, Instrumented, Storage};

/// An entry by `author` in `db` on top of `parents`, at `height`.
fn entry(author: &PrivateKey, db: EntryId, parents: &[&Entry], height: u64, ops: Ops) -> Entry {
    EntryContent {
        db: Some(db),
        parents: parents.iter().map(|p| p.id()).collect(),
        height,
        ops,
        author: author.public_key(),
    }
    .sign(author)
    .unwrap()
}

/// A database an owner made, with a writer granted write, taken by `process`: the owner,
/// the writer, the database and the grant.
fn granted_writer(process: &Instance) -> (PrivateKey, PrivateKey, EntryId, Entry) {
    let (owner, writer) = (
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
    );
    let root = root(&owner);
    let db = root.id();
    let grant = entry(&owner, db, &[&root], 1, auth(&writer, write()));
    for e in [&root, &grant] {
        process.receive_entry(e.bytes()).unwrap();
    }
    (owner, writer, db, grant)
}

#[test]
fn a_revocation_stored_by_one_process_discards_what_another_receives_later() {
    for storage in storages() {
        let (one, other) = (
            Instance::open(storage.open()).unwrap(),
            Instance::open(storage.open()).unwrap(),
        );
        let (owner, writer, db, grant) = granted_writer(&one);
        // The other process takes one of the writer's entries (and learns the database's
        // settings as they are then).
        let first = entry(&writer, db, &[&grant], 2, data("x", "1"));
        other.receive_entry(first.bytes()).unwrap();
        // The first process stores the writer's revocation...
        let revoke = entry(&owner, db, &[&first], 3, auth(&writer, write().revoked()));
        one.receive_entry(revoke.bytes()).unwrap();
        // ...and the other then receives a write the writer made without seeing it.
        let late = entry(&writer, db, &[&first], 3, data("y", "2"));
        let received = other.receive_entry(late.bytes()).unwrap();
        let name = storage.name();
        assert_eq!(received.discarded, vec![late.id()], "{name}");
        let backend = storage.open();
        assert_eq!(backend.cell(&db, "s", "y").unwrap(), None, "{name}");
        assert_eq!(backend.discarded(&db).unwrap(), vec![late.id()], "{name}");
    }
}

#[test]
fn concurrent_path_writes_from_two_processes_both_survive() {
    for storage in storages() {
        let p = TwoProcesses::on(&storage);
        p.mine.set("s", "k", r#"{"a":1,"b":1}"#).unwrap();
        let in_between = p.theirs.clone();
        p.watched.before_writes(1, move || {
            in_between.set_path("s", "k", "/b", "2").unwrap();
        });
        p.mine.set_path("s", "k", "/a", "2").unwrap();
        let name = storage.name();
        assert_eq!(p.mine.get("s", "k").unwrap(), r#"{"a":2,"b":2}"#, "{name}");
        assert_eq!(
            p.theirs.get("s", "k").unwrap(),
            r#"{"a":2,"b":2}"#,
            "{name}"
        );
        p.mine.verify().unwrap();
    }
}

/// One user's database open in two processes on one storage: `mine` through `watched` (so a
/// test can land the other's writes in between), `theirs` in the other, each with its
/// user's session. Fields drop in order: the databases before their sessions, those before
/// the instances.
pub(crate) struct TwoProcesses {
    pub(crate) watched: Arc<Instrumented>,
    pub(crate) mine: Database,
    pub(crate) theirs: Database,
    sessions: (User, User),
    instances: (Instance, Instance),
}

impl TwoProcesses {
    /// On a fresh in-memory storage.
    fn new() -> TwoProcesses {
        TwoProcesses::on(&Storage::Memory(Arc::new(MemoryBackend::new())))
    }

    pub(crate) fn on(storage: &Storage) -> TwoProcesses {
        let watched = Instrumented::new(storage.open());
        let one = Instance::open(watched.clone()).unwrap();
        one.create_user("u", None).unwrap();
        let user = one.login("u", None).unwrap();
        let mine = user.create_db("d").unwrap();
        let other = Instance::open(storage.open()).unwrap();
        let their_user = other.login("u", None).unwrap();
        let theirs = their_user.load_db(&mine.id()).unwrap();
        TwoProcesses {
            watched,
            mine,
            theirs,
            sessions: (user, their_user),
            instances: (one, other),
        }
    }

    /// A subscription to `mine`, and the changes it hears.
    fn hear_mine(&self) -> (Subscription, Receiver<Change>) {
        let (sender, heard) = channel();
        let subscription = self
            .mine
            .subscribe(Box::new(move |change: &Change| {
                let _ = sender.send(*change);
            }))
            .unwrap();
        (subscription, heard)
    }

    /// On `storage`, with the first process polling for the other's entries every 10 ms
    /// (for its subscribers).
    fn hearing_each_other(storage: &Storage) -> TwoProcesses {
        let p = TwoProcesses::on(storage);
        p.instances
            .0
            .set_limits_by_name(&[("other_processes_poll_ms", 10)])
            .unwrap();
        p
    }
}

/// Writes that read what others change (here, paths of one document) are worked out again
/// when another process wrote first, up to 16 times; then the caller gets Busy.
#[test]
fn a_commit_gives_up_as_busy_when_other_processes_keep_writing_first() {
    let p = TwoProcesses::new();
    p.mine.set_path("s", "k", "/a", "0").unwrap();
    let theirs = p.theirs.clone();
    let mut n = 0;
    // Each time this process is about to store its commit, the other has just written.
    p.watched.before_writes(16, move || {
        n += 1;
        theirs.set_path("s", "k", "/b", &n.to_string()).unwrap();
    });
    assert!(matches!(
        p.mine.set_path("s", "k", "/a", "1"),
        Err(Error::Busy(_))
    ));
    assert_eq!(p.mine.get("s", "k").unwrap(), r#"{"a":0,"b":16}"#);
    // Once the other process pauses, the next commit goes through.
    p.mine.set_path("s", "k", "/a", "2").unwrap();
    assert_eq!(p.mine.get("s", "k").unwrap(), r#"{"a":2,"b":16}"#);
    p.mine.verify().unwrap();
}

/// Writes that build only on what memory holds (settings, which stores have documents)
/// commute with other processes' writes: a plain set is stored at once, beside theirs.
/// (The commit after them must see both tips: storage says the first was not stored
/// directly after what this process knew, so it remembers no tip of its own.)
#[test]
fn plain_writes_from_several_processes_are_stored_at_once() {
    for storage in storages() {
        let name = storage.name();
        let p = TwoProcesses::on(&storage);
        let theirs = p.theirs.clone();
        p.watched.before_writes(1, move || {
            theirs.set("s", "theirs", "1").unwrap();
        });
        let tried = p.watched.writes_tried();
        p.mine.set("s", "mine", "2").unwrap();
        assert_eq!(
            p.watched.writes_tried(),
            tried + 1,
            "{name}: stored at the first try"
        );
        assert_eq!(p.mine.get("s", "theirs").unwrap(), "1", "{name}");
        // Both are tips; the next commit joins them.
        assert_eq!(p.mine.tips().unwrap().len(), 2, "{name}");
        let joined = p.mine.set("s", "next", "3").unwrap();
        assert_eq!(p.mine.tips().unwrap(), vec![joined], "{name}");
        p.mine.verify().unwrap();
    }
}

#[test]
fn a_revocation_another_process_left_half_done_is_undone_here() {
    let memory = Arc::new(MemoryBackend::new());
    let stopping = Instrumented::new(memory.clone());
    let one = Instance::open(stopping.clone()).unwrap();
    let other = Instance::open(memory.clone()).unwrap();
    let (owner, writer, db, grant) = granted_writer(&one);
    let first = entry(&owner, db, &[&grant], 2, data("a", "1"));
    other.receive_entry(first.bytes()).unwrap();
    let offline = entry(&writer, db, &[&first], 3, data("x", "2"));
    one.receive_entry(offline.bytes()).unwrap();
    // The revocation did not see the writer's entry. Its writes: the record, the entry, the
    // state replaced (this one fails), the record removed. Then the process stops.
    let revoke = entry(&owner, db, &[&first], 3, auth(&writer, write().revoked()));
    stopping.fail_write_in(2);
    assert!(one.receive_entry(revoke.bytes()).is_err());
    assert!(memory.cell(&db, "s", "x").unwrap().is_some());
    drop(one);
    for (height, key) in [(4, "b"), (5, "c")] {
        let next = EntryContent {
            db: Some(db),
            parents: memory
                .tips(&db)
                .unwrap()
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
            height,
            ops: data(key, "3"),
            author: owner.public_key(),
        }
        .sign(&owner)
        .unwrap();
        other.receive_entry(next.bytes()).unwrap();
    }
    assert_eq!(
        memory.cell(&db, "s", "x").unwrap().and_then(|c| c.value),
        None
    );
    assert_eq!(memory.discarded(&db).unwrap(), vec![offline.id()]);
}

/// A local commit planned before another process stored its author's revocation is
/// refused, not stored with an effect that every other replica would discard.
#[test]
fn a_commit_planned_before_another_process_revoked_its_author_is_refused() {
    for storage in storages() {
        let owners = Instance::open(storage.open()).unwrap();
        owners.create_user("o", None).unwrap();
        owners.create_user("w", None).unwrap();
        let owner = owners.login("o", None).unwrap();
        let db = owner.create_db("d").unwrap();
        let watched = Instrumented::new(storage.open());
        let writers = Instance::open(watched.clone()).unwrap();
        let writer = writers.login("w", None).unwrap();
        let key = writer.default_key().unwrap();
        db.grant(&key, Permission::Write).unwrap();
        let mine = writer.load_db(&db.id()).unwrap();
        mine.set("s", "before", "1").unwrap();
        let revoking = Arc::new(db);
        let revoke = revoking.clone();
        watched.before_writes(1, move || {
            revoke.revoke(&key).unwrap();
        });
        let name = storage.name();
        let refused = mine.set("s", "after", "2");
        assert!(
            matches!(refused, Err(Error::PermissionDenied(_))),
            "{name}: {refused:?}"
        );
        assert!(revoking.get("s", "after").is_err(), "{name}");
        revoking.verify().unwrap();
        drop((writer, writers, owner, owners));
    }
}

/// Subscriptions announce the changes made through their own instance: another process's
/// writes to the shared storage are not announced (they are read all the same).
#[test]
fn another_processes_writes_are_read_but_not_announced() {
    let p = TwoProcesses::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let _subscription = p
        .mine
        .subscribe(Box::new(move |change| tx.send(change.entry).unwrap()))
        .unwrap();
    p.theirs.set("s", "theirs", "1").unwrap();
    let own = p.mine.set("s", "mine", "2").unwrap();
    p.mine
        .flush_notifications(std::time::Duration::from_secs(10))
        .unwrap();
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![own]);
    assert_eq!(p.mine.get("s", "theirs").unwrap(), "1");
}

/// The first path write to a store, refused once because another process wrote first, still
/// tells other processes that the store now holds documents when it is stored.
#[test]
fn a_store_of_documents_made_by_a_retried_write_is_known_to_other_processes() {
    let p = TwoProcesses::new();
    p.mine.set("s", "k", "{}").unwrap();
    p.theirs.set("s", "other", "1").unwrap();
    let theirs = p.theirs.clone();
    p.watched.before_writes(1, move || {
        theirs.set("s", "k", r#"{"y":1}"#).unwrap();
    });
    let tried = p.watched.writes_tried();
    p.mine.set_path("s", "k", "/a", "1").unwrap();
    assert_eq!(
        p.watched.writes_tried(),
        tried + 2,
        "refused once, then stored"
    );
    assert_eq!(p.theirs.get("s", "k").unwrap(), r#"{"a":1,"y":1}"#);
    // A whole value set by the other process replaces the path write.
    p.theirs.set("s", "k", r#"{"z":1}"#).unwrap();
    p.mine.set_path("s", "k", "/b", "2").unwrap();
    assert_eq!(p.mine.get("s", "k").unwrap(), r#"{"b":2,"z":1}"#);
    p.mine.verify().unwrap();
}

/// A reader's handle in one process stops reading soon after another process stores the
/// revocation of its key, though this process saw no settings change: handles look at the
/// settings again at least every `READ_RECHECK_AFTER`.
#[test]
fn a_revocation_stored_by_another_process_stops_an_open_handles_reads() {
    for storage in storages() {
        let owners = Instance::open(storage.open()).unwrap();
        owners.create_user("o", None).unwrap();
        owners.create_user("r", None).unwrap();
        let owner = owners.login("o", None).unwrap();
        let db = owner.create_db("d").unwrap();
        db.set("s", "k", "1").unwrap();
        let readers = Instance::open(storage.open()).unwrap();
        let reader = readers.login("r", None).unwrap();
        let key = reader.default_key().unwrap();
        db.grant(&key, Permission::Read).unwrap();
        let theirs = reader.load_db(&db.id()).unwrap();
        assert_eq!(theirs.get("s", "k").unwrap(), "1");
        db.revoke(&key).unwrap();
        let name = storage.name();
        let deadline = Instant::now() + READ_RECHECK_AFTER * 10;
        let refused = loop {
            match theirs.get("s", "k") {
                Ok(_) if Instant::now() < deadline => std::thread::sleep(READ_RECHECK_AFTER / 10),
                other => break other,
            }
        };
        assert!(
            matches!(refused, Err(Error::PermissionDenied(_))),
            "{name}: {refused:?}"
        );
        drop((theirs, reader, readers, db, owner, owners));
    }
}

/// A database one process found nobody keeps stays stored when another process started
/// keeping it and wrote to it before its rows were removed: that write is not lost, and the
/// database is not reclaimed under it.
#[test]
fn a_database_another_process_started_keeping_is_not_reclaimed_under_its_write() {
    for storage in storages() {
        let name = storage.name();
        let watched = Instrumented::new(storage.open());
        let one = Instance::open(watched.clone()).unwrap();
        one.create_user("owner", None).unwrap();
        one.create_user("writer", None).unwrap();
        let owner = one.login("owner", None).unwrap();
        let mine = owner.create_db("d").unwrap();
        let other = Instance::open(storage.open()).unwrap();
        let writer = Arc::new(other.login("writer", None).unwrap());
        mine.grant(&writer.default_key().unwrap(), Permission::Write)
            .unwrap();
        let (id, in_between) = (mine.id(), writer.clone());
        let (sent, landed) = std::sync::mpsc::channel();
        watched.before_forget(move || {
            let theirs = in_between.load_db(&id).unwrap();
            theirs.set("s", "k", "\"kept\"").unwrap();
            sent.send(theirs).unwrap();
        });
        owner.forget_db(&id).unwrap();
        let theirs = landed.recv().unwrap();
        assert!(owner.list_dbs().unwrap().is_empty(), "{name}");
        assert_eq!(theirs.get("s", "k").unwrap(), "\"kept\"", "{name}");
        theirs.verify().unwrap();
        let listed: Vec<EntryId> = writer.list_dbs().unwrap().iter().map(|d| d.id).collect();
        assert_eq!(listed, vec![id], "{name}");
        // Still here for this process too, for a user who may open it.
        assert!(mine.get("s", "k").is_ok(), "{name}");
    }
}

/// A database nobody keeps is reclaimed even when a write lands between the check and the
/// removal from a handle whose user no longer keeps it (here the same user, in another
/// process): the reclaiming looks again, finds that nobody keeps it still, and removes it
/// with that write, instead of leaving it stored with nobody to forget it.
#[test]
fn a_database_written_by_a_handle_nobody_keeps_is_reclaimed_all_the_same() {
    for storage in storages() {
        let name = storage.name();
        let p = TwoProcesses::on(&storage);
        let (id, theirs) = (p.mine.id(), p.theirs.clone());
        let (sent, landed) = std::sync::mpsc::channel();
        p.watched.before_forget(move || {
            sent.send(theirs.set("s", "k", "\"late\"")).unwrap();
        });
        p.sessions.0.forget_db(&id).unwrap();
        landed.recv().unwrap().unwrap();
        let backend = storage.open();
        assert_eq!(
            backend.entry_meta(&id).unwrap(),
            None,
            "{name}: the root stayed"
        );
        assert!(backend.tips(&id).unwrap().is_empty(), "{name}");
        assert!(
            matches!(p.theirs.get("s", "k"), Err(Error::NotFound(_))),
            "{name}"
        );
    }
}

/// Processes opening a fresh storage at the same moment agree on one device and one set of
/// system databases; the system databases made by the openers that lost the race are not
/// left stored.
#[test]
fn processes_opening_a_fresh_storage_at_once_leave_one_set_of_system_databases() {
    for storage in storages() {
        let name = storage.name();
        let openers = 4;
        let barrier = Arc::new(std::sync::Barrier::new(openers));
        let opened: Vec<(String, Vec<EntryId>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..openers)
                .map(|_| {
                    let (watched, barrier) = (Instrumented::new(storage.open()), barrier.clone());
                    s.spawn(move || {
                        barrier.wait();
                        let inst = Instance::open(watched.clone()).unwrap();
                        (inst.device_id().to_text(), watched.roots_stored())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let devices: BTreeSet<&String> = opened.iter().map(|(device, _)| device).collect();
        assert_eq!(devices.len(), 1, "{name}");
        let backend = storage.open();
        let kept = (opened.iter().flat_map(|(_, roots)| roots))
            .filter(|root| backend.entry_meta(root).unwrap().is_some())
            .count();
        assert_eq!(
            kept, 3,
            "{name}: _instance, _users and _databases, once each"
        );
        Instance::open(storage.open())
            .unwrap()
            .create_user("u", None)
            .unwrap();
    }
}

/// A user creation that another process's open takes for abandoned (as one suspended for
/// longer than the age allowed would be) fails busy, and leaves the name free and nothing of
/// it stored, rather than claiming the name for an account whose database was discarded.
#[test]
fn a_user_creation_discarded_meanwhile_as_abandoned_fails_and_leaves_nothing() {
    // The creation's writes: its record, its database's root, its key list (after the slow
    // key derivation), its key's secret, its account secret; then the claim.
    for storage in storages() {
        for discarded_before in [3, 5] {
            let what = format!(
                "{}, discarded before write {discarded_before}",
                storage.name()
            );
            let name = format!("carol{discarded_before}");
            let watched = Instrumented::new(storage.open());
            let creator = Instance::open(watched.clone()).unwrap();
            let (other, mut writes) = (storage.open(), 0);
            watched.before_writes(discarded_before, move || {
                writes += 1;
                if writes == discarded_before {
                    open_discarding_abandoned(other.clone());
                }
            });
            let (owners_before, roots_before) = (watched.secret_owners(), watched.roots_stored());
            let created = creator.create_user(&name, Some("pw"));
            assert!(
                matches!(created, Err(Error::Busy(_))),
                "{what}: {created:?}"
            );
            let login = creator.login(&name, Some("pw"));
            assert!(matches!(login, Err(Error::AuthFailed)), "{what}");
            let backend = storage.open();
            let left = watched.roots_stored().into_iter().skip(roots_before.len());
            let left = left.filter(|root| backend.entry_meta(root).unwrap().is_some());
            assert_eq!(left.count(), 0, "{what}: its database stayed");
            assert_eq!(
                watched.secret_owners(),
                owners_before,
                "{what}: its secrets stayed"
            );
            creator.create_user(&name, Some("pw")).unwrap();
            creator.login(&name, Some("pw")).unwrap();
        }
    }
}

/// A database another process forgot answers NotFound here, as it does in that process:
/// reads, writes and received entries, and loading it again.
#[test]
fn a_database_another_process_forgot_is_not_found_here() {
    for storage in storages() {
        let p = TwoProcesses::on(&storage);
        p.mine.set("s", "k", "1").unwrap();
        assert_eq!(p.theirs.get("s", "k").unwrap(), "1");
        p.sessions.0.forget_db(&p.mine.id()).unwrap();
        let name = storage.name();
        std::thread::sleep(READ_RECHECK_AFTER);
        for result in [
            p.theirs.get("s", "k").map(drop),
            p.theirs.set("s", "k", "2").map(drop),
            p.theirs.set_path("s", "k", "/a", "2").map(drop),
            p.theirs.verify().map(drop),
            p.sessions.1.load_db(&p.mine.id()).map(drop),
        ] {
            assert!(
                matches!(result, Err(Error::NotFound(_))),
                "{name}: {result:?}"
            );
        }
    }
}

/// A write to a document reads the rows it works itself out from in one read of storage (one
/// round trip on PostgreSQL), not one after another: a path write its key, its base and its
/// paths' rows; a whole-value write to a store of documents the base and the key. A path
/// write also reads the key's value once when it is made (to see whether it goes into an
/// array).
#[test]
fn a_document_write_reads_its_rows_in_one_read() {
    type Write = fn(&Database) -> Result<mnemo::entry::EntryId, Error>;
    for storage in storages() {
        let name = storage.name();
        let p = TwoProcesses::on(&storage);
        p.mine.set_path("s", "k", "/a", "1").unwrap();
        let writes: [(Write, usize); 4] = [
            (|db| db.set_path("s", "k", "/b", "2"), 1),
            (|db| db.set_path("s", "k", "/a/c", "3"), 1),
            (|db| db.set("s", "k", r#"{"d":4}"#), 0),
            (|db| db.set("s", "other", "5"), 0),
        ];
        for (write, value_reads) in writes {
            let (cells, batches) = p.watched.cell_reads();
            write(&p.mine).unwrap();
            let read = p.watched.cell_reads();
            assert_eq!(read, (cells + value_reads, batches + 1), "{name}");
        }
        p.mine.verify().unwrap();
        assert_eq!(p.theirs.get("s", "k").unwrap(), r#"{"d":4}"#, "{name}");
    }
}

/// A write to a document checks only that document's rows: another process writing other
/// keys of the store meanwhile does not make it work itself out again.
#[test]
fn path_writes_to_other_documents_in_between_do_not_refuse_a_path_write() {
    for storage in storages() {
        let p = TwoProcesses::on(&storage);
        // The processes take turns (so this one remembers no tip of its own to build on).
        p.theirs.set_path("s", "other", "/a", "1").unwrap();
        p.mine.set_path("s", "k", "/a", "1").unwrap();
        let in_between = p.theirs.clone();
        p.watched.before_writes(1, move || {
            in_between.set_path("s", "other", "/b", "2").unwrap();
            in_between.set("s", "plain", "3").unwrap();
        });
        let tried = p.watched.writes_tried();
        p.mine.set_path("s", "k", "/b", "2").unwrap();
        let name = storage.name();
        assert_eq!(p.watched.writes_tried(), tried + 1, "{name}");
        assert_eq!(p.mine.get("s", "k").unwrap(), r#"{"a":1,"b":2}"#, "{name}");
        assert_eq!(
            p.mine.get("s", "other").unwrap(),
            r#"{"a":1,"b":2}"#,
            "{name}"
        );
        p.mine.verify().unwrap();
    }
}

/// Whole-value and path writes to a few documents from two processes, the other's landing
/// between this one's reads and its write at random: every write is kept as the rules say
/// (`verify` works the state out again from the entries and compares), and both processes
/// read the same values.
#[test]
fn interleaved_document_writes_from_two_processes_keep_the_state_right() {
    for storage in storages() {
        let p = TwoProcesses::on(&storage);
        let (watched, mine, theirs) = (&p.watched, &p.mine, &p.theirs);
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        let write = |db: &Database, choice: u64, value: u64| {
            let key = ["k0", "k1"][(choice % 2) as usize];
            let pointer = ["/a", "/b", "/a/c"][(choice / 2 % 3) as usize];
            match choice / 6 % 4 {
                0 => db.set("s", key, &format!(r#"{{"v":{value}}}"#)).map(drop),
                1 => match db.delete("s", key) {
                    Err(Error::NotFound(_)) => Ok(()), // nothing to delete
                    done => done.map(drop),
                },
                _ => db.set_path("s", key, pointer, &value.to_string()).map(drop),
            }
            .unwrap_or_else(|e| panic!("{key} {pointer}: {e}"));
        };
        let name = storage.name();
        for round in 0..100 {
            let (mine_choice, their_choice, interleave) = (next(24), next(24), next(2) == 0);
            if interleave {
                let in_between = theirs.clone();
                watched.before_writes(1, move || write(&in_between, their_choice, round));
            }
            write(mine, mine_choice, round);
            if !interleave {
                write(theirs, their_choice, round);
            }
            mine.verify()
                .unwrap_or_else(|e| panic!("{name}, round {round}: {e}"));
        }
        for key in ["k0", "k1"] {
            let (a, b) = (mine.get("s", key).ok(), theirs.get("s", key).ok());
            assert_eq!(a, b, "{name}: {key}");
        }
    }
}

/// A commit right after this process's own, with nothing written in between, builds on the
/// tip that commit left without reading the tips. When another process wrote meanwhile,
/// storage refuses it and it is made again on top of what there is now; the commit after
/// that reads the tips, as every commit does while processes take turns.
#[test]
fn a_commit_builds_on_the_tip_its_process_left_until_another_writes() {
    for storage in storages() {
        let name = storage.name();
        let p = TwoProcesses::on(&storage);
        p.mine.set("s", "a", "1").unwrap();
        let reads = p.watched.tip_reads();
        p.mine.set("s", "b", "2").unwrap();
        assert_eq!(p.watched.tip_reads(), reads, "{name}: the tips were read");
        let theirs = p.theirs.clone();
        p.watched.before_writes(1, move || {
            theirs.set("s", "theirs", "3").unwrap();
        });
        let tried = p.watched.writes_tried();
        let third = p.mine.set("s", "c", "4").unwrap();
        assert_eq!(p.watched.writes_tried(), tried + 2, "{name}: refused once");
        assert_eq!(
            p.mine.tips().unwrap(),
            vec![third],
            "{name}: on top of theirs"
        );
        let reads = p.watched.tip_reads();
        let fourth = p.mine.set("s", "d", "5").unwrap();
        assert!(
            p.watched.tip_reads() > reads,
            "{name}: the tips were not read"
        );
        assert_eq!(p.theirs.tips().unwrap(), vec![fourth], "{name}");
        assert_eq!(p.theirs.get("s", "c").unwrap(), "4", "{name}");
        assert_eq!(p.mine.get("s", "theirs").unwrap(), "3", "{name}");
        p.mine.verify().unwrap();
    }
}

/// A commit whose storage commit failed leaves no tip remembered: the next commit builds on
/// the tip before it.
#[test]
fn a_commit_after_a_failed_one_builds_on_the_tip_before_it() {
    for storage in storages() {
        let name = storage.name();
        let p = TwoProcesses::on(&storage);
        p.mine.set("s", "a", "1").unwrap();
        let before = p.mine.set("s", "b", "2").unwrap();
        p.watched.roll_back_next_turn();
        assert!(p.mine.set("s", "c", "3").is_err(), "{name}");
        let next = p.mine.set("s", "d", "4").unwrap();
        let parents = Entry::decode(&p.mine.entry_bytes(&next).unwrap())
            .unwrap()
            .content()
            .parents
            .clone();
        assert_eq!(parents, vec![before], "{name}");
        assert_eq!(p.mine.tips().unwrap(), vec![next], "{name}");
        assert!(p.mine.get("s", "c").unwrap_err().is_not_found(), "{name}");
        p.mine.verify().unwrap();
    }
}

/// Subscribers of one process hear what another process commits to the same storage, as
/// remote changes, each once and in the order it was stored, among their own process's
/// commits (heard once, as local).
#[test]
fn subscribers_hear_each_commit_of_another_process_once_in_storage_order() {
    for storage in storages().into_iter().filter(|s| s.name() != "memory") {
        let name = storage.name();
        let p = TwoProcesses::hearing_each_other(&storage);
        let (_subscription, heard) = p.hear_mine();
        let theirs = p.theirs.clone();
        let writer = std::thread::spawn(move || {
            (0..40)
                .map(|i| theirs.set("s", &format!("theirs{i}"), "1").unwrap())
                .collect::<Vec<_>>()
        });
        let mine: Vec<EntryId> = (0..40)
            .map(|i| p.mine.set("s", &format!("mine{i}"), "1").unwrap())
            .collect();
        let theirs = writer.join().unwrap();
        let mut got = Vec::new();
        while got.len() < 80 {
            match heard.recv_timeout(std::time::Duration::from_secs(10)) {
                Ok(change) => got.push(change),
                Err(_) => panic!("{name}: heard {} of 80 changes", got.len()),
            }
        }
        // Nothing more comes: each change was heard once.
        assert!(
            heard
                .recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "{name}"
        );
        let heard_theirs: Vec<EntryId> =
            got.iter().filter(|c| c.remote()).map(|c| c.entry).collect();
        let heard_mine: Vec<EntryId> = got
            .iter()
            .filter(|c| !c.remote())
            .map(|c| c.entry)
            .collect();
        assert_eq!(heard_theirs, theirs, "{name}: theirs, remote, in order");
        assert_eq!(heard_mine, mine, "{name}: mine, local, in order");
    }
}

/// A subscription hears only what is stored after it was made, and nothing once dropped;
/// a process with no subscriber reads nothing for them.
#[test]
fn other_processes_are_heard_only_while_someone_subscribes() {
    for storage in storages().into_iter().filter(|s| s.name() != "memory") {
        let name = storage.name();
        let p = TwoProcesses::hearing_each_other(&storage);
        p.theirs.set("s", "before", "1").unwrap();
        let watch = p.mine.watch().unwrap();
        let (subscription, heard) = p.hear_mine();
        let after = p.theirs.set("s", "after", "1").unwrap();
        let timeout = std::time::Duration::from_secs(10);
        let first = heard.recv_timeout(timeout).ok().map(|c| c.entry);
        assert_eq!(first, Some(after), "{name}");
        let event = watch.next(timeout);
        let heard_by_watch = |event: &Option<Event>| match event {
            Some(Event::Change(c)) => c.entry == after && c.remote(),
            _ => false,
        };
        assert!(heard_by_watch(&event), "{name}: {event:?}");
        drop(subscription);
        drop(watch);
        // The next poll stops hearing; the ones after read nothing.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let reads = p.watched.position_reads.load(Ordering::Relaxed);
        p.theirs.set("s", "unheard", "1").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let polled = p.watched.position_reads.load(Ordering::Relaxed) - reads;
        assert_eq!(polled, 0, "{name}: polled with nobody subscribed");
        assert!(heard.try_recv().is_err(), "{name}");
    }
}

/// A poll interval lowered while the thread waits out a long one applies at once.
#[test]
fn a_lowered_poll_interval_applies_at_once() {
    let storage = Storage::Sqlite(crate::support::TempDir::new());
    let p = TwoProcesses::on(&storage);
    let mine = &p.instances.0;
    mine.set_limits_by_name(&[("other_processes_poll_ms", 3_600_000)])
        .unwrap();
    let (_subscription, heard) = p.hear_mine();
    let theirs = p.theirs.set("s", "k", "1").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(heard.try_recv().is_err(), "polled within the hour");
    mine.set_limits_by_name(&[("other_processes_poll_ms", 10)])
        .unwrap();
    let got = heard.recv_timeout(std::time::Duration::from_secs(10));
    assert_eq!(got.ok().map(|c| c.entry), Some(theirs));
}

/// A child waiting here for a parent that another process stored (nothing here released
/// it) is taken in when a peer sends it again: before, it answered "pending" (and was
/// "known", so a peer did not send it again) until it expired, 10 minutes on. The same
/// when this process stored the parent but the release was kept out (a busy database).
#[test]
fn a_child_whose_parent_another_process_stored_is_taken_in_when_sent_again() {
    let two = TwoProcesses::new();
    let writer = PrivateKey::generate().unwrap();
    two.mine
        .grant(&writer.public_key(), Permission::Write)
        .unwrap();
    let parent = crate::foreign::on_tips(&two.mine, &writer, crate::foreign::ops("s", "p", "1"));
    let child = crate::foreign::on_parents(
        &two.mine,
        vec![parent.id()],
        parent.content().height,
        &writer,
        crate::foreign::ops("s", "c", "2"),
    );
    assert!(two.mine.receive(child.bytes()).unwrap().pending);
    two.theirs.receive(parent.bytes()).unwrap();
    let again = two.mine.receive(child.bytes()).unwrap();
    assert_eq!(again.applied, vec![child.id()]);
    assert_eq!(two.mine.get("s", "c").unwrap(), "2");
    two.mine.verify().unwrap();
}
