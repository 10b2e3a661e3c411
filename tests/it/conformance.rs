//! The backend conformance suite: the same behaviour on memory, SQLite and PostgreSQL.

use std::sync::{Arc, Barrier};
use std::thread;

use mnemo::backend::{Backend, MemoryBackend, RangeLimit};
use mnemo::database::{Database, Permission};
use mnemo::entry::EntryId;
use mnemo::{Error, Instance, User};

use crate::support::{state, storages};

#[test]
fn engine_behaves_the_same_and_survives_reopening() {
    for storage in storages() {
        let name = storage.name();
        let (db_id, tips) = {
            let (_inst, _user, db) = user_with_db(storage.open(), "notes");
            db.set("todo", "milk", r#"{"done":false}"#).unwrap();
            db.set("todo", "eggs", "2").unwrap();
            db.delete("todo", "eggs").unwrap();
            let mut txn = db.begin();
            txn.set("a", "x", "1").unwrap();
            txn.set("b", "y", "[1,2]").unwrap();
            txn.commit().unwrap();
            assert!(db.get("todo", "eggs").unwrap_err().is_not_found(), "{name}");
            assert_eq!(
                state(&db, "todo"),
                vec![("milk".into(), r#"{"done":false}"#.into())],
                "{name}"
            );
            (db.id(), db.tips().unwrap())
        };
        let inst = Instance::open(storage.open()).unwrap();
        let user = inst.login("u", None).unwrap();
        let db = user.load_db(&db_id).unwrap();
        assert_eq!(db.tips().unwrap(), tips, "{name}");
        assert_eq!(db.get("a", "x").unwrap(), "1", "{name}");
        assert_eq!(db.get("b", "y").unwrap(), "[1,2]", "{name}");
        assert!(db.get("todo", "eggs").unwrap_err().is_not_found(), "{name}");
        // A later commit goes on from the stored tips.
        let next = db.set("todo", "eggs", "3").unwrap();
        assert_eq!(db.tips().unwrap(), vec![next], "{name}");
    }
}

#[test]
fn accounts_and_keys_survive_reopening() {
    for storage in storages() {
        let name = storage.name();
        let (device, extra) = {
            let inst = Instance::open(storage.open()).unwrap();
            inst.create_user("alice", Some("pw1")).unwrap();
            inst.create_user("bob", None).unwrap();
            let alice = inst.login("alice", Some("pw1")).unwrap();
            let extra = alice.add_private_key(Some("laptop")).unwrap();
            alice
                .create_db("diary")
                .unwrap()
                .set("d", "mon", "1")
                .unwrap();
            alice.change_password(Some("pw1"), Some("pw2")).unwrap();
            (inst.device_id(), extra)
        };
        let inst = Instance::open(storage.open()).unwrap();
        assert_eq!(inst.device_id(), device, "{name}");
        assert_eq!(inst.list_users().unwrap(), vec!["alice", "bob"], "{name}");
        assert!(
            matches!(inst.login("alice", Some("pw1")), Err(Error::AuthFailed)),
            "{name}"
        );
        let alice = inst.login("alice", Some("pw2")).unwrap();
        assert!(
            alice.list_keys().unwrap().iter().any(|k| k.public == extra),
            "{name}"
        );
        let diary = alice.find_db("diary").unwrap();
        assert_eq!(diary.get("d", "mon").unwrap(), "1", "{name}");
        diary.set("d", "tue", "2").unwrap();
        assert_eq!(alice.admin_list_users().unwrap().len(), 2, "{name}");
        inst.login("bob", None).unwrap();
    }
}

/// A new user "u" on an instance of `backend`, with a new database `name`. Bind all three:
/// the database's handle works while its session and instance live.
fn user_with_db(backend: Arc<dyn Backend>, name: &str) -> (Instance, User, Database) {
    let inst = Instance::open(backend).unwrap();
    inst.create_user("u", None).unwrap();
    let user = inst.login("u", None).unwrap();
    let db = user.create_db(name).unwrap();
    (inst, user, db)
}

/// An owner's database on one instance, shared with a guest (write) of another, who holds
/// a copy of its root and grant. Bind `sessions` (not `..`): a dropped session logs out and
/// its database handles stop working.
struct Shared {
    a: Instance,
    b: Instance,
    sessions: [User; 2],
    db: Database,
    copy: Database,
}

fn share_with_a_guest(a: Arc<dyn Backend>, b: Arc<dyn Backend>) -> Shared {
    let (a, b) = (Instance::open(a).unwrap(), Instance::open(b).unwrap());
    a.create_user("owner", None).unwrap();
    b.create_user("guest", None).unwrap();
    let owner = a.login("owner", None).unwrap();
    let guest = b.login("guest", None).unwrap();
    let db = owner.create_db("shared").unwrap();
    let grant = db
        .grant(&guest.default_key().unwrap(), Permission::Write)
        .unwrap();
    for id in [db.id(), grant] {
        b.receive_entry(&db.entry_bytes(&id).unwrap()).unwrap();
    }
    let copy = guest.load_db(&db.id()).unwrap();
    Shared {
        a,
        b,
        sessions: [owner, guest],
        db,
        copy,
    }
}

#[test]
fn grants_and_foreign_entries_work_across_storages() {
    let all = storages();
    for pair in all.windows(2) {
        let Shared {
            a,
            b,
            sessions: _sessions,
            db,
            copy,
        } = share_with_a_guest(pair[0].open(), pair[1].open());
        let write = db.set("s", "k", "1").unwrap();
        b.receive_entry(&db.entry_bytes(&write).unwrap()).unwrap();
        assert_eq!(
            copy.get("s", "k").unwrap(),
            "1",
            "{} -> {}",
            pair[0].name(),
            pair[1].name()
        );
        let reply = copy.set("s", "reply", "2").unwrap();
        a.receive_entry(&copy.entry_bytes(&reply).unwrap()).unwrap();
        assert_eq!(db.get("s", "reply").unwrap(), "2");
        assert_eq!(db.tips().unwrap(), copy.tips().unwrap());
    }
}

/// `tip_metas` (what a commit builds on, one read) agrees with `tips` and `entry_meta` (and
/// `entry_db`), on a database with two tips; the next commit builds on both.
#[test]
fn tip_metas_agree_with_tips_and_entry_meta() {
    for storage in storages() {
        let name = storage.name();
        let backend = storage.open();
        let Shared {
            a,
            sessions: _sessions,
            db,
            copy,
            ..
        } = share_with_a_guest(backend.clone(), Arc::new(MemoryBackend::new()));
        db.set("s", "here", "1").unwrap();
        let there = copy.set("s", "there", "2").unwrap();
        a.receive_entry(&copy.entry_bytes(&there).unwrap()).unwrap();

        let tips = backend.tips(&db.id()).unwrap();
        assert_eq!(tips.len(), 2, "{name}");
        let expected: Vec<_> = tips
            .iter()
            .map(|(id, _)| (*id, backend.entry_meta(id).unwrap().unwrap()))
            .collect();
        assert_eq!(backend.tip_metas(&db.id()).unwrap(), expected, "{name}");
        for (id, meta) in &expected {
            assert_eq!(backend.entry_db(id).unwrap(), Some(meta.db), "{name}");
        }
        let absent = mnemo::entry::EntryId::from_bytes([7; 32]);
        assert_eq!(backend.entry_db(&absent).unwrap(), None, "{name}");
        let merge = db.set("s", "both", "3").unwrap();
        assert_eq!(db.tips().unwrap(), vec![merge], "{name}");
        let meta = backend.entry_meta(&merge).unwrap().unwrap();
        assert_eq!(
            meta.height,
            tips.iter().map(|t| t.1).max().unwrap() + 1,
            "{name}"
        );
        assert_eq!(
            backend.tip_metas(&db.id()).unwrap(),
            vec![(merge, meta)],
            "{name}"
        );
        assert_eq!(
            backend
                .tip_metas(&mnemo::entry::EntryId::from_bytes([7; 32]))
                .unwrap(),
            vec![],
            "{name}"
        );
    }
}

/// `settings_closure` (what the settings are worked out from; one read on PostgreSQL) finds
/// every settings entry that settings tips see, each once, as stored; an id not stored is
/// corrupt.
#[test]
fn the_settings_closure_holds_each_settings_entry_the_tips_see_once() {
    for storage in storages() {
        let name = storage.name();
        let backend = storage.open();
        let (_inst, user, db) = user_with_db(backend.clone(), "closure");
        for _ in 0..3 {
            let key = user.add_private_key(None).unwrap();
            db.grant(&key, Permission::Read).unwrap();
        }
        db.set("s", "k", "1").unwrap();
        let (_, tip) = backend.tip_metas(&db.id()).unwrap().remove(0);
        let tips = tip.settings_visible;
        let closure = backend.settings_closure(&tips).unwrap();
        let ids: std::collections::BTreeSet<EntryId> = closure.iter().map(|e| e.0).collect();
        // The database's root and the three grants, each once.
        assert_eq!((closure.len(), ids.len()), (4, 4), "{name}");
        assert!(tips.iter().all(|t| ids.contains(t)), "{name}");
        for (id, meta, bytes) in &closure {
            assert_eq!(
                Some(meta),
                backend.entry_meta(id).unwrap().as_ref(),
                "{name}"
            );
            assert_eq!(
                Some(bytes),
                backend.get_entry(id).unwrap().as_ref(),
                "{name}"
            );
            assert!(meta.changes_settings, "{name}");
            assert!(
                meta.settings_visible.iter().all(|p| ids.contains(p)),
                "{name}"
            );
        }
        // Tips given twice, or one an ancestor of another: still each entry once.
        let all: Vec<EntryId> = ids.iter().copied().collect();
        let again = [tips.clone(), tips.clone(), all].concat();
        let mut twice = backend.settings_closure(&again).unwrap();
        twice.sort_by_key(|e| e.0);
        let mut once = closure.clone();
        once.sort_by_key(|e| e.0);
        assert_eq!(twice, once, "{name}");
        assert_eq!(backend.settings_closure(&[]).unwrap(), vec![], "{name}");
        let absent = EntryId::from_bytes([7; 32]);
        match backend.settings_closure(&[tips[0], absent]) {
            Err(Error::Corrupt(message)) => {
                assert!(message.contains(&absent.to_string()), "{name}: {message}")
            }
            other => panic!("{name}: the closure of an absent entry gave {other:?}"),
        }
    }
}

/// Storage changed behind the library's back: a tip whose entry row is gone, or whose entry
/// row fails its check, stops with `Corrupt` a commit that reads the tips (SQLite and
/// PostgreSQL). Here another instance loads the database (which reads them already) and
/// commits, as another process would. A process's commit right after its own builds on the
/// tip it remembers without reading it; damage to that tip is found by reads and `verify`.
#[test]
fn a_tip_whose_entry_is_missing_or_damaged_stops_a_commit() {
    use crate::support::Storage;
    for damage in ["missing", "damaged"] {
        for storage in storages() {
            let name = storage.name();
            let (_inst, _user, db) = user_with_db(storage.open(), "d");
            let tip = db.set("s", "k", "1").unwrap();
            let statement = match damage {
                "missing" => "DELETE FROM {entries} WHERE id = $1",
                _ => "UPDATE {entries} SET visible = $1 WHERE id = $1",
            };
            let tip_bytes = tip.as_bytes().to_vec();
            match &storage {
                Storage::Memory(_) => continue,
                Storage::Sqlite(dir) => {
                    let conn = rusqlite::Connection::open(dir.0.join("mnemo.db")).unwrap();
                    let sql = statement.replace("{entries}", "entries").replace('$', "?");
                    assert_eq!(conn.execute(&sql, [&tip_bytes]).unwrap(), 1, "{name}");
                }
                Storage::Postgres { url, .. } => {
                    let mut conn = postgres::Client::connect(url, postgres::NoTls).unwrap();
                    let sql = statement.replace("{entries}", "mnemo_entries");
                    assert_eq!(conn.execute(&sql, &[&tip_bytes]).unwrap(), 1, "{name}");
                }
            }
            let other = Instance::open(storage.open()).unwrap();
            let other_user = other.login("u", None).unwrap();
            let loaded = other_user.load_db(&db.id());
            match loaded.and_then(|other_db| other_db.set("s", "k", "2")) {
                Err(Error::Corrupt(message)) => assert!(
                    message.contains(&tip.to_string()),
                    "{name}, {damage}: {message}"
                ),
                other => panic!("{name}, {damage}: a commit on a {damage} tip: {other:?}"),
            }
        }
    }
}

#[test]
fn two_instances_on_one_storage_create_a_username_once() {
    for storage in storages() {
        // Separate instances, each with its own connection: like separate processes.
        let instances: Vec<Instance> = (0..4)
            .map(|_| Instance::open(storage.open()).unwrap())
            .collect();
        let barrier = Arc::new(Barrier::new(instances.len()));
        let handles: Vec<_> = instances
            .into_iter()
            .map(|inst| {
                let barrier = barrier.clone();
                thread::spawn(move || {
                    barrier.wait();
                    (0..5)
                        .map(|round| inst.create_user(&format!("same{round}"), None).is_ok())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<Vec<bool>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for round in 0..5 {
            let winners = results.iter().filter(|r| r[round]).count();
            assert_eq!(winners, 1, "{}: round {round}", storage.name());
        }
        let inst = Instance::open(storage.open()).unwrap();
        assert_eq!(inst.list_users().unwrap().len(), 5, "{}", storage.name());
        for round in 0..5 {
            inst.login(&format!("same{round}"), None).unwrap();
        }
    }
}

#[test]
fn storage_order_lists_parents_before_children_and_only_grows() {
    for storage in storages() {
        let name = storage.name();
        let (inst, user, db) = user_with_db(storage.open(), "log");
        let ids: Vec<_> = std::iter::once(db.id())
            .chain((0..25).map(|i| db.set("s", "k", &i.to_string()).unwrap()))
            .collect();
        let backend = storage.open();
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = backend.entries_after(&db.id(), after, 10).unwrap();
            let Some(&(last, _)) = page.last() else { break };
            assert!(last > after, "{name}");
            seen.extend(page.into_iter().map(|(_, id)| id));
            after = last;
        }
        assert_eq!(seen, ids, "{name}");
        assert_eq!(backend.last_position(&db.id()).unwrap(), after, "{name}");
        // A duplicate store changes nothing.
        inst.receive_entry(&db.entry_bytes(&ids[3]).unwrap())
            .unwrap();
        assert_eq!(backend.last_position(&db.id()).unwrap(), after, "{name}");
        // Several at once, in the order asked, an unknown database at 0.
        let other = user.create_db("other").unwrap().id();
        let unknown = EntryId::of_bytes(b"no such database");
        let asked = [other, unknown, db.id(), other];
        let each: Vec<u64> = asked
            .iter()
            .map(|id| backend.last_position(id).unwrap())
            .collect();
        assert_eq!(backend.last_positions(&asked).unwrap(), each, "{name}");
        assert!(
            each[0] > 0 && each[1] == 0 && each[2] == after,
            "{name}: {each:?}"
        );
        assert_eq!(
            backend.last_positions(&[]).unwrap(),
            Vec::<u64>::new(),
            "{name}"
        );
    }
}

#[test]
fn secrets_replace_in_place_and_conditionally() {
    for storage in storages() {
        let name = storage.name();
        let backend = storage.open();
        assert_eq!(backend.secret_get("s").unwrap(), None, "{name}");
        assert!(backend.secret_put("s", b"one", None).unwrap(), "{name}");
        assert!(
            !backend.secret_put("s", b"two", Some(b"zero")).unwrap(),
            "{name}"
        );
        assert!(
            backend.secret_put("s", b"two", Some(b"one")).unwrap(),
            "{name}"
        );
        assert_eq!(backend.secret_get("s").unwrap().unwrap(), b"two", "{name}");
        assert!(
            !backend.secret_put("absent", b"x", Some(b"y")).unwrap(),
            "{name}"
        );
        assert!(backend.secret_delete("s").unwrap(), "{name}");
        assert!(!backend.secret_delete("s").unwrap(), "{name}");
        assert_eq!(backend.secret_get("s").unwrap(), None, "{name}");
    }
}

#[test]
fn secrets_are_listed_by_the_start_of_their_names_in_order() {
    for storage in storages() {
        let name = storage.name();
        let backend = storage.open();
        for key in [
            "key/a/2",
            "account/a",
            "key/ab/1",
            "key/a/1",
            "key%/x",
            "k\u{e9}y/a/1",
        ] {
            backend.secret_put(key, b"sealed", None).unwrap();
        }
        let names = |prefix: &str| backend.secret_names(prefix).unwrap();
        assert_eq!(names("key/a/"), ["key/a/1", "key/a/2"], "{name}");
        assert_eq!(names("key/a"), ["key/a/1", "key/a/2", "key/ab/1"], "{name}");
        // Matched as text, not as a pattern: `%` and `_` are themselves.
        assert_eq!(names("key%"), ["key%/x"], "{name}");
        assert_eq!(names("key_"), Vec::<String>::new(), "{name}");
        assert_eq!(names("k\u{e9}"), ["k\u{e9}y/a/1"], "{name}");
        assert_eq!(names("").len(), 6, "{name}");
        backend.secret_delete("key/a/1").unwrap();
        assert_eq!(names("key/a/"), ["key/a/2"], "{name}");
    }
}

#[test]
fn metadata_records_are_inserted_once_replaced_and_kept_across_reopening() {
    for storage in storages() {
        let name = storage.name();
        {
            let backend = storage.open();
            assert_eq!(backend.meta_get("m").unwrap(), None, "{name}");
            assert!(backend.meta_insert_new("m", b"one").unwrap(), "{name}");
            assert!(!backend.meta_insert_new("m", b"two").unwrap(), "{name}");
            assert_eq!(backend.meta_get("m").unwrap().unwrap(), b"one", "{name}");
            backend.meta_put("m", b"three").unwrap();
            backend.meta_put("fresh", b"four").unwrap();
            assert_eq!(backend.meta_get("m").unwrap().unwrap(), b"three", "{name}");
        }
        let backend = storage.open();
        assert_eq!(backend.meta_get("m").unwrap().unwrap(), b"three", "{name}");
        assert_eq!(
            backend.meta_get("fresh").unwrap().unwrap(),
            b"four",
            "{name}"
        );
        // Deleted only if it holds what the deleter expects.
        assert!(!backend.meta_delete("m", Some(b"one")).unwrap(), "{name}");
        assert_eq!(backend.meta_get("m").unwrap().unwrap(), b"three", "{name}");
        assert!(backend.meta_delete("m", Some(b"three")).unwrap(), "{name}");
        assert!(!backend.meta_delete("m", Some(b"three")).unwrap(), "{name}");
        assert_eq!(backend.meta_get("m").unwrap(), None, "{name}");
        assert!(backend.meta_delete("fresh", None).unwrap(), "{name}");
        assert!(!backend.meta_delete("fresh", None).unwrap(), "{name}");
        assert_eq!(backend.meta_get("fresh").unwrap(), None, "{name}");
    }
}

#[test]
fn metadata_records_are_deleted_by_prefix_and_only_those() {
    for storage in storages() {
        let name = storage.name();
        let backend = storage.open();
        let keys = [
            "sync-x/a/1",
            "sync-x/a/2",
            "sync-x/a/\u{10FFFF}",
            "sync-x/a",
            "sync-x/ab/1",
            "sync-x/a0",
            "sync-x/a.",
            "sync-y/a/1",
            "sync-x%/a/1",
        ];
        for key in keys {
            backend.meta_put(key, b"v").unwrap();
        }
        assert_eq!(
            backend.meta_delete_prefix("sync-x/a/").unwrap(),
            3,
            "{name}"
        );
        assert_eq!(
            backend.meta_delete_prefix("sync-x/a/").unwrap(),
            0,
            "{name}"
        );
        for key in keys {
            let kept = !key.starts_with("sync-x/a/");
            assert_eq!(
                backend.meta_get(key).unwrap().is_some(),
                kept,
                "{name} {key}"
            );
        }
        // Matched as text, not as a pattern.
        assert_eq!(backend.meta_delete_prefix("sync-_/").unwrap(), 0, "{name}");
        assert_eq!(backend.meta_delete_prefix("sync-x%/").unwrap(), 1, "{name}");
    }
}

#[test]
fn stores_are_listed_and_state_is_replaced_whole_if_current() {
    use mnemo::backend::{Cell, StateWrite, Version};
    for storage in storages() {
        let name = storage.name();
        let (_inst, _user, db) = user_with_db(storage.open(), "d");
        let written = db.set("b", "k", "1").unwrap();
        db.set("a", "k", "2").unwrap();
        let backend = storage.open();
        // Each store's change log is a hidden store beside it (history reads it).
        assert_eq!(
            backend.stores(&db.id()).unwrap(),
            vec!["_log:_settings", "_log:a", "_log:b", "_settings", "a", "b"],
            "{name}"
        );
        assert_eq!(backend.discarded(&db.id()).unwrap(), vec![], "{name}");
        let cell = Cell {
            height: 9,
            entry: written,
            value: Some("\"only\"".into()),
        };
        // A replacement worked out from a version that is no longer current writes nothing.
        let before = backend.version(&db.id()).unwrap();
        let replace = |expected| {
            backend
                .replace_state(
                    &db.id(),
                    &StateWrite {
                        cells: vec![("c", "k", cell.clone())],
                        discarded: &[written],
                        expected,
                    },
                )
                .unwrap()
        };
        assert_eq!(replace(Version::new(7, 7)), None, "{name}");
        assert_eq!(backend.discarded(&db.id()).unwrap(), vec![], "{name}");
        let after = replace(before).expect("the current version");
        assert_ne!(after, before, "{name}");
        assert_eq!(backend.version(&db.id()).unwrap(), after, "{name}");
        assert_eq!(backend.stores(&db.id()).unwrap(), vec!["c"], "{name}");
        assert_eq!(
            backend.cells(&db.id(), "c").unwrap(),
            vec![("k".into(), cell)],
            "{name}"
        );
        assert_eq!(backend.cells(&db.id(), "a").unwrap(), vec![], "{name}");
        assert_eq!(
            backend.discarded(&db.id()).unwrap(),
            vec![written],
            "{name}"
        );
    }
}

#[test]
fn key_ranges_are_bytewise_prefixed_paged_and_skip_tombstones() {
    let keys = [
        "a",
        "a\u{7f}",
        "aé",
        "a\u{10FFFF}",
        "a\u{10FFFF}z",
        "b",
        "user",
        "user/1",
        "user/2",
        "user/é",
        "user0",
        "users",
        "Z",
        "日本",
        "\u{10FFFF}",
        "\u{10FFFF}\u{10FFFF}",
    ];
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    for storage in storages() {
        let name = storage.name();
        let (_inst, _user, db) = user_with_db(storage.open(), "d");
        let mut txn = db.begin();
        for (i, key) in keys.iter().enumerate() {
            txn.set("s", key, &i.to_string()).unwrap();
            txn.set("other", key, "0").unwrap();
        }
        txn.commit().unwrap();
        db.delete("s", "user/1").unwrap();
        db.delete("s", "b").unwrap();
        let backend = storage.open();
        let range = |prefix: &str, after: Option<&str>, limit: usize, live_only: bool| {
            backend
                .cells_range(
                    &db.id(),
                    "s",
                    prefix,
                    after,
                    RangeLimit::cells(limit),
                    live_only,
                )
                .unwrap()
                .into_iter()
                .map(|(k, c)| (k, c.value.is_some()))
                .collect::<Vec<_>>()
        };
        let keys_of = |cells: Vec<(String, bool)>| -> Vec<String> {
            cells.into_iter().map(|(k, _)| k).collect()
        };
        let expect = |filter: &dyn Fn(&str) -> bool| -> Vec<String> {
            sorted
                .iter()
                .filter(|k| filter(k))
                .map(|k| k.to_string())
                .collect()
        };

        // Everything, tombstones included, in bytewise order; the cells are the stored ones.
        assert_eq!(
            keys_of(range("", None, 0, false)),
            expect(&|_| true),
            "{name}"
        );
        assert_eq!(
            backend
                .cells_range(&db.id(), "s", "", None, RangeLimit::NONE, false)
                .unwrap(),
            backend.cells(&db.id(), "s").unwrap(),
            "{name}"
        );
        let dead = |k: &str| k == "user/1" || k == "b";
        assert_eq!(
            range("", None, 0, false)
                .into_iter()
                .filter(|(_, live)| !live)
                .map(|(k, _)| k)
                .collect::<Vec<_>>(),
            expect(&dead),
            "{name}"
        );
        // Live only.
        assert_eq!(
            keys_of(range("", None, 0, true)),
            expect(&|k| !dead(k)),
            "{name}"
        );
        // Prefixes: "user/" holds neither "user0" nor "users" nor "user".
        assert_eq!(
            keys_of(range("user/", None, 0, false)),
            vec!["user/1", "user/2", "user/é"],
            "{name}"
        );
        assert_eq!(
            keys_of(range("user/", None, 0, true)),
            vec!["user/2", "user/é"],
            "{name}"
        );
        assert_eq!(
            keys_of(range("a", None, 0, false)),
            vec!["a", "a\u{7f}", "aé", "a\u{10FFFF}", "a\u{10FFFF}z"],
            "{name}"
        );
        assert_eq!(
            keys_of(range("a\u{10FFFF}", None, 0, false)),
            vec!["a\u{10FFFF}", "a\u{10FFFF}z"],
            "{name}"
        );
        assert_eq!(
            keys_of(range("\u{10FFFF}", None, 0, false)),
            vec!["\u{10FFFF}", "\u{10FFFF}\u{10FFFF}"],
            "{name}"
        );
        assert_eq!(keys_of(range("日", None, 0, false)), vec!["日本"], "{name}");
        assert_eq!(
            keys_of(range("nothing", None, 0, false)),
            Vec::<String>::new()
        );
        // After, within and outside the prefix.
        assert_eq!(
            keys_of(range("a", Some("a\u{7f}"), 0, false)),
            vec!["aé", "a\u{10FFFF}", "a\u{10FFFF}z"],
            "{name}"
        );
        assert_eq!(
            keys_of(range("user", Some("user/2"), 0, false)),
            vec!["user/é", "user0", "users"],
            "{name}"
        );
        assert_eq!(
            keys_of(range("user/", Some("a"), 0, false)),
            vec!["user/1", "user/2", "user/é"],
            "{name}"
        );
        assert!(range("user/", Some("user0"), 0, false).is_empty(), "{name}");
        assert!(
            range("", Some("\u{10FFFF}\u{10FFFF}"), 0, false).is_empty(),
            "{name}"
        );
        assert!(
            range("a", Some("a\u{10FFFF}z"), 0, false).is_empty(),
            "{name}"
        );
        // Limits page through everything, tombstones not counting when skipped.
        for live_only in [false, true] {
            for limit in [1, 3, 5, 100] {
                let mut after: Option<String> = None;
                let mut seen = Vec::new();
                loop {
                    let page = keys_of(range("", after.as_deref(), limit, live_only));
                    assert!(page.len() <= limit, "{name}");
                    let Some(last) = page.last().cloned() else {
                        break;
                    };
                    seen.extend(page);
                    after = Some(last);
                }
                let all = keys_of(range("", None, 0, live_only));
                assert_eq!(seen, all, "{name} limit {limit} live_only {live_only}");
            }
        }
        assert_eq!(
            keys_of(range("user/", None, 1, true)),
            vec!["user/2"],
            "{name}"
        );
        // Another store and an unknown one.
        assert_eq!(
            backend
                .cells_range(&db.id(), "other", "user/", None, RangeLimit::NONE, true)
                .unwrap()
                .len(),
            3,
            "{name}"
        );
        assert!(backend
            .cells_range(&db.id(), "none", "", None, RangeLimit::NONE, false)
            .unwrap()
            .is_empty());
    }
}

#[test]
fn a_range_stops_once_its_cells_hold_the_bytes_asked_for() {
    for storage in storages() {
        let name = storage.name();
        let (_inst, _user, db) = user_with_db(storage.open(), "d");
        // Ten cells of 100 bytes each (a 2-byte key, a 98-byte JSON string), the fifth
        // deleted (a tombstone counts its key's 2 bytes), then one of 10,000 bytes.
        let mut txn = db.begin();
        for i in 0..10 {
            txn.set("s", &format!("k{i}"), &format!("\"{}\"", "x".repeat(96)))
                .unwrap();
        }
        txn.set("t", "big", &format!("\"{}\"", "y".repeat(9_995)))
            .unwrap();
        txn.set("t", "small", "1").unwrap();
        txn.commit().unwrap();
        db.delete("s", "k4").unwrap();
        let backend = storage.open();
        let count = |store: &str, limit: RangeLimit, live_only: bool| {
            backend
                .cells_range(&db.id(), store, "", None, limit, live_only)
                .unwrap()
                .len()
        };
        let bytes = |bytes: usize| RangeLimit { cells: 0, bytes };
        // The cell that starts below the limit is taken, whatever its size.
        assert_eq!(count("s", bytes(1), true), 1, "{name}");
        assert_eq!(count("s", bytes(100), true), 1, "{name}");
        assert_eq!(count("s", bytes(101), true), 2, "{name}");
        assert_eq!(count("s", bytes(300), true), 3, "{name}");
        assert_eq!(count("s", bytes(301), true), 4, "{name}");
        // k0..k3 and the tombstone hold 402 bytes: k5 starts below 403.
        assert_eq!(count("s", bytes(402), false), 5, "{name}");
        assert_eq!(count("s", bytes(403), false), 6, "{name}");
        // Skipped tombstones count for nothing.
        assert_eq!(count("s", bytes(401), true), 5, "{name}");
        assert_eq!(count("s", bytes(1 << 20), true), 9, "{name}");
        // Whichever limit comes first.
        let both = RangeLimit {
            cells: 2,
            bytes: 1 << 20,
        };
        assert_eq!(count("s", both, true), 2, "{name}");
        assert_eq!(count("t", bytes(5), true), 1, "{name}");
        assert_eq!(count("t", bytes(10_000), true), 1, "{name}");
        assert_eq!(count("t", bytes(10_001), true), 2, "{name}");
    }
}

#[test]
fn a_forgotten_database_leaves_no_row_and_can_be_stored_again() {
    for storage in storages() {
        let name = storage.name();
        let inst = Instance::open(storage.open()).unwrap();
        inst.create_user("u", None).unwrap();
        let user = inst.login("u", None).unwrap();
        let gone = user.create_db("gone").unwrap();
        let kept = user.create_db("kept").unwrap();
        let written = gone.set("s", "k", "\"v\"").unwrap();
        kept.set("s", "k", "\"w\"").unwrap();
        let root_bytes = gone.entry_bytes(&gone.id()).unwrap();
        let written_bytes = gone.entry_bytes(&written).unwrap();

        let backend = storage.open();
        let id = gone.id();
        // Decided before a write that then landed: nothing is removed.
        let decided_at = backend.version(&id).unwrap();
        let late = gone.set("s", "late", "\"x\"").unwrap();
        assert!(!backend.forget_database(&id, decided_at).unwrap(), "{name}");
        assert_eq!(backend.tips(&id).unwrap(), vec![(late, 2)], "{name}");
        assert_eq!(gone.get("s", "late").unwrap(), "\"x\"", "{name}");
        let decided_at = backend.version(&id).unwrap();
        let last_position = backend.last_position(&id).unwrap();
        assert_eq!(backend.entry_count(&id).unwrap(), 3, "{name}");
        assert!(backend.forget_database(&id, decided_at).unwrap(), "{name}");
        assert_eq!(backend.entry_meta(&id).unwrap(), None, "{name}");
        assert_eq!(backend.entry_db(&written).unwrap(), None, "{name}");
        assert_eq!(backend.get_entry(&written).unwrap(), None, "{name}");
        assert_eq!(backend.tips(&id).unwrap(), vec![], "{name}");
        assert_eq!(backend.stores(&id).unwrap(), Vec::<String>::new(), "{name}");
        assert_eq!(backend.cells(&id, "s").unwrap(), vec![], "{name}");
        assert_eq!(backend.cell(&id, "s", "k").unwrap(), None, "{name}");
        assert_eq!(backend.discarded(&id).unwrap(), vec![], "{name}");
        assert_eq!(backend.last_position(&id).unwrap(), 0, "{name}");
        assert_eq!(backend.entry_count(&id).unwrap(), 0, "{name}");
        assert_eq!(backend.entries_after(&id, 0, 10).unwrap(), vec![], "{name}");
        // The other database is untouched; forgetting what is not here changes nothing.
        assert_eq!(backend.tips(&kept.id()).unwrap().len(), 1, "{name}");
        assert_eq!(
            backend.cell(&kept.id(), "s", "k").unwrap().unwrap().value,
            Some("\"w\"".into()),
            "{name}"
        );
        let version = backend.version(&id).unwrap();
        assert!(backend.forget_database(&id, version).unwrap(), "{name}");

        // Stored again from its entries (as a sync would), it starts afresh, at positions
        // after those of its first copy (a peer's cursor on them stays good), also when
        // opened again.
        let again = Instance::open(storage.open()).unwrap();
        assert!(
            !again.receive_entry(&root_bytes).unwrap().duplicate,
            "{name}"
        );
        assert_eq!(
            again.receive_entry(&written_bytes).unwrap().applied,
            vec![written],
            "{name}"
        );
        assert_eq!(backend.tips(&id).unwrap(), vec![(written, 1)], "{name}");
        assert_eq!(
            backend.stores(&id).unwrap(),
            vec!["_log:_settings", "_log:s", "_settings", "s"],
            "{name}"
        );
        let positions: Vec<u64> = (backend.entries_after(&id, 0, 10).unwrap().iter())
            .map(|(position, _)| *position)
            .collect();
        assert_eq!(positions.len(), 2, "{name}");
        assert!(positions[0] > last_position, "{name}: {positions:?}");
        assert_eq!(backend.last_position(&id).unwrap(), positions[1], "{name}");
        assert_eq!(backend.entry_count(&id).unwrap(), 2, "{name}");
        assert_eq!(
            backend.entries_after(&id, positions[0], 10).unwrap(),
            vec![(positions[1], written)],
            "{name}"
        );
    }
}

/// Keys of every valid length work on every storage, in scans too: a 4,096-byte key of
/// random text (more than a PostgreSQL index entry holds), a path write under it (whose
/// hidden row's key is about twice as long) and its history, and keys that share a long
/// prefix and differ after it, in bytewise order, a page at a time.
#[test]
fn the_longest_keys_are_stored_read_and_scanned_in_order() {
    use crate::support::Rng;
    for storage in storages() {
        let name = storage.name();
        let (_inst, _user, db) = user_with_db(storage.open(), "d");
        let mut rng = Rng::new(11);
        let mut random = |n: usize| -> String {
            (0..n)
                .map(|_| char::from(b'0' + rng.below(75) as u8))
                .filter(|c| !matches!(c, '/' | '~' | '\\' | '"'))
                .collect()
        };
        let key = random(5000)[..4096].to_string();
        let field = random(4000);
        db.set("s", &key, "{}").unwrap();
        db.set_path("s", &key, &format!("/{field}"), "2").unwrap();
        let value = db.get("s", &key).unwrap();
        assert!(value == format!("{{\"{field}\":2}}"), "{name}");
        assert_eq!(db.history("s", &key, 0).unwrap().len(), 2, "{name}");

        let long = "a".repeat(600);
        let keys = [
            long.clone(),
            format!("{long}b"),
            format!("{long}c"),
            format!("{}b", "a".repeat(599)),
        ];
        for k in keys.iter().rev() {
            db.set("t", k, "1").unwrap();
        }
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        while let Some((k, _)) = db
            .scan("t", "a", after.as_deref(), 1)
            .unwrap()
            .into_iter()
            .next()
        {
            paged.push(k.clone());
            after = Some(k);
        }
        assert_eq!(paged, keys, "{name}");
        let all: Vec<String> = db
            .get_all("t")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(all, keys, "{name}");
        db.verify().unwrap();
    }
}
