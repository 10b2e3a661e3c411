//! Instances and accounts: reopening, concurrent creation, options, creations and
//! deletions stopped part-way (a crash or an error at each write in turn).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Barrier};
use std::thread;

use mnemo::backend::{Backend, MemoryBackend};
use mnemo::crypto::KdfParams;
use mnemo::instance::InstanceOptions;
use mnemo::{Error, Instance};

use crate::support::{open_discarding_abandoned, storages, watched_logged_in, Instrumented};

#[test]
fn reopening_keeps_identity_accounts_and_databases() {
    let backend = Arc::new(MemoryBackend::new());
    let (device, db_id) = {
        let inst = Instance::open(backend.clone()).unwrap();
        inst.create_user("alice", Some("pw")).unwrap();
        inst.create_user("bob", None).unwrap();
        let alice = inst.login("alice", Some("pw")).unwrap();
        let db = alice.create_db("notes").unwrap();
        db.set("s", "k", "\"v\"").unwrap();
        alice.add_private_key(Some("second")).unwrap();
        (inst.device_id(), db.id())
    };
    let inst = Instance::open(backend.clone() as Arc<dyn Backend>).unwrap();
    assert_eq!(inst.device_id(), device);
    assert_eq!(inst.list_users().unwrap(), vec!["alice", "bob"]);
    let alice = inst.login("alice", Some("pw")).unwrap();
    assert_eq!(alice.list_keys().unwrap().len(), 2);
    let db = alice.find_db("notes").unwrap();
    assert_eq!(db.id(), db_id);
    assert_eq!(db.get("s", "k").unwrap(), "\"v\"");
    db.set("s", "k", "\"w\"").unwrap();
    assert!(matches!(
        inst.login("alice", Some("nope")),
        Err(Error::AuthFailed)
    ));
    inst.login("bob", None).unwrap();
}

#[test]
fn argon2_options_are_fixed_at_creation() {
    let backend = Arc::new(MemoryBackend::new());
    let stronger = KdfParams {
        m_kib: 32 * 1024,
        t: 3,
        p: 1,
    };
    let inst = Instance::open_with(
        backend.clone(),
        InstanceOptions {
            kdf: Some(stronger),
            ..InstanceOptions::default()
        },
    )
    .unwrap();
    assert_eq!(inst.kdf_params(), stronger);
    drop(inst);
    // Reopened without options: the recorded parameters hold.
    assert_eq!(
        Instance::open(backend.clone()).unwrap().kdf_params(),
        stronger
    );
    // With other options: refused, not silently changed.
    let weaker = InstanceOptions {
        kdf: Some(KdfParams::MINIMUM),
        ..InstanceOptions::default()
    };
    assert!(matches!(
        Instance::open_with(backend, weaker),
        Err(Error::InvalidArgument(_))
    ));
    let too_weak = InstanceOptions {
        kdf: Some(KdfParams {
            m_kib: 1024,
            t: 1,
            p: 1,
        }),
        ..InstanceOptions::default()
    };
    assert!(Instance::open_with(Arc::new(MemoryBackend::new()), too_weak).is_err());
}

#[test]
fn concurrent_creations_of_one_name_have_one_winner() {
    let inst = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let inst = inst.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut won = Vec::new();
                for round in 0..10 {
                    won.push(inst.create_user(&format!("same{round}"), None).is_ok());
                    inst.create_user(&format!("own{t}-{round}"), None).unwrap();
                }
                won
            })
        })
        .collect();
    let results: Vec<Vec<bool>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for round in 0..10 {
        assert_eq!(
            results.iter().filter(|won| won[round]).count(),
            1,
            "round {round}"
        );
    }
    assert_eq!(inst.list_users().unwrap().len(), 10 + 80);
    for round in 0..10 {
        inst.login(&format!("same{round}"), None).unwrap();
    }
}

#[test]
fn the_first_user_is_the_admin() {
    let inst = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
    inst.create_user("first", None).unwrap();
    inst.create_user("second", None).unwrap();
    let first = inst.login("first", None).unwrap();
    let second = inst.login("second", None).unwrap();
    assert_eq!(
        first
            .admin_list_users()
            .unwrap()
            .iter()
            .filter(|u| u.admin)
            .count(),
        1
    );
    assert!(matches!(
        second.admin_list_users(),
        Err(Error::PermissionDenied(_))
    ));
}

/// Runs `step` on an instance whose backend stops at write `fail_at` (after `setup` ran on
/// the same storage, writing normally); returns the storage, to be opened again as after a
/// restart, the stopping backend (for its secrets), and whether `step` got through.
fn stop_during(
    setup: impl Fn(&Instance),
    step: impl Fn(&Instance) -> Result<(), Error>,
    fail_at: usize,
    crash: bool,
) -> (Arc<MemoryBackend>, Arc<Instrumented>, bool) {
    let storage = Arc::new(MemoryBackend::new());
    let stopping = Instrumented::stopping(storage.clone(), usize::MAX, false);
    setup(&Instance::open(stopping.clone()).unwrap());
    let secrets = stopping.secrets.lock().unwrap().clone();
    let stopping = Instrumented::stopping(storage.clone(), fail_at, crash);
    *stopping.secrets.lock().unwrap() = secrets;
    // Opening writes nothing more once set up; the step's writes are counted from 0.
    let inst = Instance::open(stopping.clone()).unwrap();
    let done = step(&inst).is_ok();
    (storage, stopping, done)
}

/// Runs `attempt` with the write to stop at: 0, 1, 2 and on, until an attempt gets through
/// (returns true). Returns how many attempts were stopped.
fn at_each_write(mut attempt: impl FnMut(usize) -> bool) -> usize {
    let mut fail_at = 0;
    while !attempt(fail_at) {
        fail_at += 1;
    }
    fail_at
}

/// A creation stopped at any write, by a crash or by an error, never leaves the name
/// taken by nobody: after a restart the user either logs in or can be created, with its
/// password. Nor does it leave a database or secrets nobody can reach: an error discards
/// what the attempt stored before its name was claimed, and a later open what a crash left.
#[test]
fn creating_a_user_stopped_at_any_write_leaves_a_usable_name() {
    for crash in [true, false] {
        let stopped = at_each_write(|fail_at| {
            let (storage, stopping, done) = stop_during(
                |inst| inst.create_user("first", None).unwrap(),
                |inst| inst.create_user("carol", Some("pw")),
                fail_at,
                crash,
            );
            let what = format!("stopped at write {fail_at} (crash: {crash})");
            let inst = open_discarding_abandoned(storage.clone());
            let listed = inst.list_users().unwrap().contains(&"carol".to_string());
            // Whether the attempt made the user: what it stored stays if so, and only then.
            let existed = match inst.login("carol", Some("pw")) {
                Ok(_) => true,
                Err(Error::AuthFailed) => {
                    assert!(!done, "{what}: created, yet no login");
                    false
                }
                Err(e) => panic!("{what}: {e}"),
            };
            // Before, a user whose creation stopped between its claim and its record logged
            // in but was not listed until then.
            assert_eq!(listed, existed, "{what}: listed before the first login");
            let roots = stopping.roots_stored();
            let roots_left = roots
                .iter()
                .filter(|r| storage.entry_meta(r).unwrap().is_some());
            assert_eq!(
                roots_left.count(),
                usize::from(existed),
                "{what}: databases"
            );
            let owners = stopping.secret_owners();
            // "first"'s, and carol's if the attempt made the user.
            assert_eq!(owners.len(), 1 + usize::from(existed), "{what}: secrets");
            if !existed {
                inst.create_user("carol", Some("pw"))
                    .unwrap_or_else(|e| panic!("{what}: the name stays taken: {e}"));
                inst.login("carol", Some("pw")).unwrap();
            }
            assert_eq!(inst.list_users().unwrap(), ["carol", "first"], "{what}");
            done
        });
        assert!(stopped >= 4, "too few writes to stop at ({stopped})");
    }
}

/// A user creation that stopped before claiming its name less than an hour ago may be one
/// still under way in another process: opening the storage leaves it alone by default.
#[test]
fn a_recent_unfinished_user_creation_is_left_to_its_creator() {
    // Stop at the name's claim: its secrets and database are stored by then.
    let mut fail_at = 0;
    let (storage, stopping) = loop {
        let (storage, stopping, done) = stop_during(
            |_| {},
            |inst| inst.create_user("erin", Some("pw")),
            fail_at,
            true,
        );
        assert!(!done, "the creation finished before its claim was stopped");
        if !stopping.secret_owners().is_empty()
            && storage.meta_get("username/erin").unwrap().is_none()
        {
            break (storage, stopping);
        }
        fail_at += 1;
    };
    let inst = Instance::open(storage.clone()).unwrap();
    assert!(inst.list_users().unwrap().is_empty());
    assert_eq!(stopping.secret_owners().len(), 1, "discarded young");
    drop(inst);
    open_discarding_abandoned(storage.clone());
    assert!(stopping.secret_owners().is_empty(), "never discarded");
}

/// A deletion stopped at any write leaves the user either gone (the name free again) or
/// still listed, and repeating the deletion then frees the name. A complete deletion leaves
/// nothing stored that names the account's key: its secrets and private records are erased.
#[test]
fn deleting_a_user_stopped_at_any_write_can_be_repeated() {
    let daves_key = std::sync::Mutex::new(String::new());
    let setup = |inst: &Instance| {
        inst.create_user("admin", None).unwrap();
        inst.create_user("dave", Some("pw")).unwrap();
        let dave = inst.login("dave", Some("pw")).unwrap();
        *daves_key.lock().unwrap() = dave.default_key().unwrap().to_text();
    };
    let stopped = at_each_write(|fail_at| {
        let (storage, stopping, done) = stop_during(
            setup,
            |inst| inst.login("admin", None)?.admin_delete_user("dave"),
            fail_at,
            true,
        );
        let what = format!("stopped at write {fail_at}");
        let inst = Instance::open(storage.clone()).unwrap();
        if inst.list_users().unwrap().contains(&"dave".to_string()) {
            assert!(!done, "{what}: deleted, yet listed");
            let admin = inst.login("admin", None).unwrap();
            admin.admin_delete_user("dave").unwrap();
        }
        assert_eq!(inst.list_users().unwrap(), ["admin"], "{what}");
        assert!(
            matches!(inst.login("dave", Some("pw")), Err(Error::AuthFailed)),
            "{what}"
        );
        if done {
            // A complete deletion erased every secret of the account.
            assert_eq!(stopping.secret_owners().len(), 1, "{what}");
        }
        let key = daves_key.lock().unwrap().clone().into_bytes();
        let stored = storage.raw_contents().unwrap();
        let naming = stored
            .iter()
            .filter(|bytes| bytes.windows(key.len()).any(|w| w == key));
        assert_eq!(
            naming.count(),
            0,
            "{what}: stored bytes still name dave's key"
        );
        inst.create_user("dave", Some("new")).unwrap();
        inst.login("dave", Some("new")).unwrap();
        done
    });
    assert!(stopped >= 2, "too few writes to stop at ({stopped})");
}

/// Creating a database stopped at any write (a crash or an error) leaves it either in the
/// user's list or not stored at all: never stored with nobody keeping it (nobody could even
/// find its id to forget it).
#[test]
fn creating_a_database_stopped_at_any_write_leaves_nothing_unkept() {
    for crash in [true, false] {
        let stopped = at_each_write(|fail_at| {
            let (storage, stopping, done) = stop_during(
                |inst| inst.create_user("u", None).unwrap(),
                |inst| inst.login("u", None)?.create_db("d").map(drop),
                fail_at,
                crash,
            );
            let what = format!("stopped at write {fail_at} (crash: {crash})");
            let inst = Instance::open(storage.clone()).unwrap();
            let user = inst.login("u", None).unwrap();
            let listed: Vec<_> = user.list_dbs().unwrap().iter().map(|d| d.id).collect();
            assert!(
                done <= (listed.len() == 1),
                "{what}: created, yet not listed"
            );
            for root in stopping.roots_stored() {
                if !listed.contains(&root) {
                    assert_eq!(
                        storage.entry_meta(&root).unwrap(),
                        None,
                        "{what}: stored, yet in nobody's list"
                    );
                }
            }
            done
        });
        assert!(stopped >= 2, "too few writes to stop at ({stopped})");
    }
}

/// Forgetting a database stopped at any write (a crash or an error) leaves it either in the
/// user's list, where forgetting it again finishes the job, or gone with its storage
/// reclaimed: never out of every list with its rows still stored.
#[test]
fn forgetting_a_database_stopped_at_any_write_can_be_repeated() {
    for crash in [true, false] {
        let stopped = at_each_write(|fail_at| {
            let created = std::sync::Mutex::new(None);
            let (storage, _, done) = stop_during(
                |inst| {
                    inst.create_user("u", None).unwrap();
                    let user = inst.login("u", None).unwrap();
                    let db = user.create_db("d").unwrap();
                    db.set("s", "k", "1").unwrap();
                    *created.lock().unwrap() = Some(db.id());
                },
                |inst| {
                    let id = created.lock().unwrap().expect("created by the set-up");
                    inst.login("u", None)?.forget_db(&id)
                },
                fail_at,
                crash,
            );
            let id = created.into_inner().unwrap().unwrap();
            let what = format!("stopped at write {fail_at} (crash: {crash})");
            let inst = Instance::open(storage.clone()).unwrap();
            let user = inst.login("u", None).unwrap();
            if !user.list_dbs().unwrap().is_empty() {
                assert!(!done, "{what}: forgotten, yet listed");
                user.forget_db(&id)
                    .unwrap_or_else(|e| panic!("{what}: forgetting again: {e}"));
            }
            assert!(user.list_dbs().unwrap().is_empty(), "{what}");
            assert_eq!(
                storage.entry_meta(&id).unwrap(),
                None,
                "{what}: out of the list, its rows still stored"
            );
            assert!(storage.tips(&id).unwrap().is_empty(), "{what}");
            done
        });
        // The rows' removal can be stopped; the removal of a revocation's undo record after
        // it fails nothing (the database is forgotten by then).
        assert!(stopped >= 1, "too few writes to stop at ({stopped})");
    }
}

/// The public keys (as text) whose sealed private key is in `storage`, among the secrets
/// `stopping` saw written (`key/<user id>/<key>`).
fn sealed_keys(stopping: &Instrumented, storage: &MemoryBackend) -> BTreeSet<String> {
    let secrets = stopping.secrets.lock().unwrap().clone();
    secrets
        .iter()
        .filter(|name| storage.secret_get(name).unwrap().is_some())
        .filter_map(|name| name.strip_prefix("key/")?.split_once('/'))
        .map(|(_, key)| key.to_string())
        .collect()
}

/// Removing a key stopped at any write by an error leaves no sealed private key in storage
/// but those of the keys the user lists once the removal is repeated: the first attempt may
/// leave the secret of a key no longer listed, and removing the key again erases it.
#[test]
fn removing_a_key_stopped_at_any_write_can_be_repeated() {
    let stopped = at_each_write(|fail_at| {
        let (storage, stopping, done) = stop_during(
            |inst| {
                inst.create_user("u", Some("pw")).unwrap();
                let user = inst.login("u", Some("pw")).unwrap();
                user.add_private_key(Some("extra")).unwrap();
            },
            |inst| {
                let user = inst.login("u", Some("pw"))?;
                let extra = user.list_keys()?.into_iter().find(|k| !k.default).unwrap();
                user.remove_key(&extra.public)
            },
            fail_at,
            false,
        );
        let what = format!("stopped at write {fail_at}");
        let inst = Instance::open(storage.clone()).unwrap();
        let user = inst.login("u", Some("pw")).unwrap();
        let listed = || -> BTreeSet<String> {
            let keys = user.list_keys().unwrap();
            keys.iter().map(|k| k.public.to_text()).collect()
        };
        for key in sealed_keys(&stopping, &storage).difference(&listed()) {
            assert!(!done, "{what}: removed, yet its secret stayed");
            let key = mnemo::crypto::PublicKey::parse(key).unwrap();
            user.remove_key(&key)
                .unwrap_or_else(|e| panic!("{what}: removing {key} again: {e}"));
            assert!(
                matches!(user.remove_key(&key), Err(Error::NotFound(_))),
                "{what}: removed twice"
            );
        }
        assert_eq!(sealed_keys(&stopping, &storage), listed(), "{what}");
        done
    });
    assert!(stopped >= 2, "too few writes to stop at ({stopped})");
}

/// Adding a key stopped at any write by an error leaves no sealed private key in storage
/// but those of the keys the user lists: a secret stored before its record failed is taken
/// back.
#[test]
fn adding_a_key_stopped_at_any_write_leaves_no_secret_unlisted() {
    let stopped = at_each_write(|fail_at| {
        let (storage, stopping, done) = stop_during(
            |inst| inst.create_user("u", Some("pw")).unwrap(),
            |inst| {
                inst.login("u", Some("pw"))?
                    .add_private_key(Some("extra"))
                    .map(drop)
            },
            fail_at,
            false,
        );
        let what = format!("stopped at write {fail_at}");
        let inst = Instance::open(storage.clone()).unwrap();
        let user = inst.login("u", Some("pw")).unwrap();
        let listed: BTreeSet<String> = (user.list_keys().unwrap().iter())
            .map(|k| k.public.to_text())
            .collect();
        assert_eq!(listed.len(), 1 + usize::from(done), "{what}");
        assert_eq!(sealed_keys(&stopping, &storage), listed, "{what}");
        done
    });
    assert!(stopped >= 2, "too few writes to stop at ({stopped})");
}

/// A creation that claimed the name and has not written its directory record yet (under
/// way in another process): a lookup of the name meanwhile writes the record (the account
/// was complete before the claim). (One stopped there by a crash is finished by the next
/// open: see `creating_a_user_stopped_at_any_write_leaves_a_usable_name`.)
#[test]
fn a_claimed_name_without_its_record_is_finished_by_the_next_lookup() {
    for lookup in ["login", "create"] {
        let storage = Arc::new(MemoryBackend::new());
        let watched = Instrumented::new(storage.clone());
        let creator = Instance::open(watched.clone()).unwrap();
        let other = Arc::new(Instance::open(storage.clone()).unwrap());
        let looked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (claimed, seen) = (storage.clone(), looked.clone());
        let looking = other.clone();
        // Before the creation's first write after its claim (its directory record).
        watched.before_writes(64, move || {
            if claimed.meta_get("username/erin").unwrap().is_none() || seen.swap(true, SeqCst) {
                return;
            }
            assert_eq!(looking.list_users().unwrap(), Vec::<String>::new());
            match lookup {
                "create" => assert!(matches!(
                    looking.create_user("erin", None),
                    Err(Error::AlreadyExists(_))
                )),
                _ => drop(looking.login("erin", None).unwrap()),
            }
        });
        creator.create_user("erin", None).unwrap();
        assert!(
            looked.load(SeqCst),
            "{lookup}: never looked up between claim and record"
        );
        for inst in [&creator, &*other] {
            assert_eq!(inst.list_users().unwrap(), ["erin"], "{lookup}");
            // The first user created is the admin, finished by whoever finished it.
            let erin = inst.login("erin", None).unwrap();
            assert!(erin.admin_list_users().unwrap()[0].admin, "{lookup}");
        }
    }
}

/// Adding a key stopped by a crash between its sealed seed and its record leaves the seed
/// listed nowhere; deleting the account erases it all the same: no secret of a deleted
/// account stays in storage, whatever it lists.
#[test]
fn deleting_an_account_erases_even_the_seeds_it_never_listed() {
    let stopped = at_each_write(|fail_at| {
        let (storage, stopping, done) = stop_during(
            |inst| {
                inst.create_user("admin", None).unwrap();
                inst.create_user("u", Some("pw")).unwrap();
            },
            |inst| {
                inst.login("u", Some("pw"))?
                    .add_private_key(Some("extra"))
                    .map(drop)
            },
            fail_at,
            true,
        );
        let what = format!("stopped at write {fail_at}");
        let inst = Instance::open(storage.clone()).unwrap();
        let admin = inst.login("admin", None).unwrap();
        let owners = stopping.secret_owners();
        assert_eq!(owners.len(), 2, "{what}: {owners:?}");
        admin.admin_delete_user("u").unwrap();
        assert_eq!(
            stopping.secret_owners().len(),
            1,
            "{what}: a secret of u stayed"
        );
        done
    });
    assert!(stopped >= 1, "too few writes to stop at ({stopped})");
}

/// Sync enabled while some of the users logged in log out: it succeeds, and what the users
/// still logged in track resumes. Before, the call failed LOGGED_OUT when a logout came
/// between its list of sessions and their resumption (30 of 40 trials in an audit), and
/// the users after that session in the list had nothing resumed.
#[test]
fn sync_enabled_while_users_log_out_resumes_the_others() {
    const LEAVING: usize = 8;
    let backend = Arc::new(MemoryBackend::new());
    {
        let inst = Instance::open(backend.clone()).unwrap();
        let sync = inst.enable_sync().unwrap();
        for n in 0..=LEAVING {
            inst.create_user(&format!("u{n}"), None).unwrap();
            let user = inst.login(&format!("u{n}"), None).unwrap();
            let db = user.create_db("d").unwrap();
            // Nobody listens there: the track stays, trying.
            sync.track(&user, "127.0.0.1:9", &db.id()).unwrap();
        }
    }
    for trial in 0..20 {
        let inst = Instance::open(backend.clone()).unwrap();
        let leaving: Vec<_> = (0..LEAVING)
            .map(|n| inst.login(&format!("u{n}"), None).unwrap())
            .collect();
        let staying = inst.login(&format!("u{LEAVING}"), None).unwrap();
        let start = Arc::new(Barrier::new(2));
        let logouts = {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                for user in leaving {
                    // Spread over the time sync takes to resume the sessions.
                    thread::sleep(std::time::Duration::from_micros(300));
                    user.logout();
                }
            })
        };
        start.wait();
        let enabled = inst.enable_sync();
        logouts.join().unwrap();
        let sync = enabled.unwrap_or_else(|e| panic!("trial {trial}: {e}"));
        let tracks = sync.tracks(&staying).unwrap();
        assert!(
            tracks.len() == 1 && tracks[0].running,
            "trial {trial}: the track of a user still logged in did not resume"
        );
    }
}

/// Sync enabled while storage fails resumes the tracks of the users logged in at the next
/// call, wherever the first call failed. Before, a call that made the engine and then failed
/// to resume left every later call answering OK with nothing resumed.
#[test]
fn sync_enabled_again_after_a_failed_resumption_resumes() {
    let watched = Instrumented::new(Arc::new(MemoryBackend::new()));
    {
        let inst = Instance::open(watched.clone()).unwrap();
        let sync = inst.enable_sync().unwrap();
        inst.create_user("u", None).unwrap();
        let user = inst.login("u", None).unwrap();
        let db = user.create_db("d").unwrap();
        // Nobody listens there: the track stays, trying.
        sync.track(&user, "127.0.0.1:9", &db.id()).unwrap();
    }
    let mut failed_resuming = 0;
    for reads in 0.. {
        let inst = Instance::open(watched.clone()).unwrap();
        let user = inst.login("u", None).unwrap();
        watched.fail_reads_after(reads);
        let first = inst.enable_sync();
        watched.resume_reads();
        match first {
            Ok(_) => break,
            Err(Error::Storage(_)) => {}
            Err(e) => panic!("after {reads} reads: {e}"),
        }
        failed_resuming += usize::from(inst.sync().is_ok());
        let sync = inst.enable_sync().unwrap();
        let tracks = sync.tracks(&user).unwrap();
        assert!(
            tracks.len() == 1 && tracks[0].running,
            "failed after {reads} reads, the track did not resume: {tracks:?}"
        );
    }
    assert!(failed_resuming > 0, "no read failed while resuming");
}

/// A key added while an admin deletes its account leaves no secret behind. Before, the
/// secret stored after the deletion erased the account's stayed (an audit found 11 to 50
/// per deletion racing a loop of additions).
#[test]
fn a_key_added_while_its_account_is_deleted_leaves_no_secret() {
    let storage = Arc::new(MemoryBackend::new());
    let watched = Instrumented::new(storage);
    let inst = Instance::open(watched.clone()).unwrap();
    inst.create_user("admin", None).unwrap();
    inst.create_user("dave", None).unwrap();
    let admin = inst.login("admin", None).unwrap();
    let dave = inst.login("dave", None).unwrap();
    assert_eq!(watched.secret_owners().len(), 2);
    // The deletion lands just before the new key's secret is stored.
    watched.before_writes(1, move || admin.admin_delete_user("dave").unwrap());
    let added = dave.add_private_key(None);
    assert!(
        matches!(added, Err(Error::PermissionDenied(_))),
        "{added:?}"
    );
    assert_eq!(
        watched.secret_owners().len(),
        1,
        "a secret of dave's is left"
    );
}

/// A user exists once its name is claimed: a creation whose directory record then fails to
/// be written answers OK, and the record is written by the next lookup (a login). Before, it
/// answered the record's error (BUSY in an audit, when erasing the name's earlier holder was
/// busy), for a user that existed (created again: ALREADY_EXISTS).
#[test]
fn a_creation_whose_record_fails_after_its_name_is_claimed_made_the_user() {
    let watched = Instrumented::new(Arc::new(MemoryBackend::new()));
    let inst = Instance::open(watched.clone()).unwrap();
    inst.create_user("admin", None).unwrap();
    // The claim is the creation's first metadata record; the commit after it, the record.
    let storage = watched.clone();
    watched.after_meta_insert(move || storage.roll_back_next_turn());
    let created = inst.create_user("gus", None);
    assert!(created.is_ok(), "{created:?}");
    assert!(matches!(
        inst.create_user("gus", None),
        Err(Error::AlreadyExists(_))
    ));
    inst.login("gus", None).unwrap();
    assert_eq!(inst.list_users().unwrap(), vec!["admin", "gus"]);
}

/// A login reads the account's key list, then each sealed key: a key another session of
/// the user removes in between (its record first, then its secret) is no longer one of its
/// keys. Before, the login failed CORRUPT ("the sealed private key ... is missing"; an audit
/// saw 20 in 18,000 logins racing key removals).
#[test]
fn a_login_racing_the_removal_of_a_key_by_another_session_logs_in() {
    let (watched, inst, session) = watched_logged_in("erin");
    let extra = session.add_private_key(Some("extra")).unwrap();
    // After the account's secret is read (and the key list with it), before the keys are.
    watched.before_secret_read(1, move || session.remove_key(&extra).unwrap());
    let login = inst.login("erin", None);
    let Ok(user) = login else { panic!("{login:?}") };
    assert_eq!(user.list_keys().unwrap().len(), 1);
}

/// A change of password, or of keys, that an admin's deletion of the account overtakes
/// answers as any call after the deletion does: PERMISSION_DENIED. Before, a password change
/// answered CORRUPT ("the account's secret is missing": 27 of 30 such races in an audit).
#[test]
fn a_password_change_overtaken_by_the_accounts_deletion_is_permission_denied() {
    let watched = Instrumented::new(Arc::new(MemoryBackend::new()));
    let inst = Instance::open(watched.clone()).unwrap();
    inst.create_user("admin", None).unwrap();
    inst.create_user("fay", None).unwrap();
    let admin = inst.login("admin", None).unwrap();
    let fay = inst.login("fay", None).unwrap();
    watched.before_secret_read(0, move || admin.admin_delete_user("fay").unwrap());
    let changed = fay.change_password(None, Some("new password"));
    assert!(
        matches!(changed, Err(Error::PermissionDenied(_))),
        "{changed:?}"
    );
}

/// A deletion frees the name only while it still names the deleted account: a name freed
/// meanwhile by a deletion in another process and taken by a new user there keeps its new
/// holder. Before, the name's claim was read and then deleted in two steps, and the new user
/// lost it (no longer listed, every login AUTH_FAILED).
#[test]
fn a_deletion_never_frees_the_name_of_a_user_created_since() {
    // Storages other processes can open.
    for storage in storages().into_iter().filter(|s| s.url().is_some()) {
        let name = storage.name();
        let watched = Instrumented::new(storage.open());
        let here = Instance::open(watched.clone()).unwrap();
        here.create_user("admin", None).unwrap();
        here.create_user("dave", Some("old")).unwrap();
        let there = Arc::new(Instance::open(storage.open()).unwrap());
        let elsewhere = there.clone();
        // Just before this deletion frees the name, another process deletes dave too and
        // creates a new dave.
        watched.before_meta_delete(move || {
            let admin = elsewhere.login("admin", None).unwrap();
            admin.admin_delete_user("dave").unwrap();
            elsewhere.create_user("dave", Some("new")).unwrap();
        });
        let admin = here.login("admin", None).unwrap();
        admin.admin_delete_user("dave").unwrap();
        for inst in [&here, &*there, &Instance::open(storage.open()).unwrap()] {
            assert_eq!(inst.list_users().unwrap(), ["admin", "dave"], "{name}");
            inst.login("dave", Some("new")).unwrap();
            let old = inst.login("dave", Some("old"));
            assert!(matches!(old, Err(Error::AuthFailed)), "{name}: {old:?}");
        }
    }
}

/// A deletion stopped by an error at any write leaves, on the running instance, a user who
/// is either there (listed, logs in, the name taken) or gone (none of those): never listed
/// yet unable to log in. Before, a deletion that had erased the secrets but not the record
/// left the user listed, with every login CORRUPT ("the account's secret is missing"),
/// wrong passwords included.
#[test]
fn a_user_whose_deletion_stopped_is_there_or_gone() {
    let setup = |inst: &Instance| {
        inst.create_user("admin", None).unwrap();
        inst.create_user("dave", Some("pw")).unwrap();
    };
    at_each_write(|fail_at| {
        let storage = Arc::new(MemoryBackend::new());
        setup(&Instance::open(storage.clone()).unwrap());
        let stopping = Instrumented::stopping(storage.clone(), fail_at, false);
        let inst = Instance::open(stopping).unwrap();
        let admin = inst.login("admin", None).unwrap();
        let done = admin.admin_delete_user("dave").is_ok();
        let what = format!("stopped at write {fail_at}");
        let listed = inst.list_users().unwrap().contains(&"dave".to_string());
        match inst.login("dave", Some("pw")) {
            Ok(_) => assert!(listed && !done, "{what}: logs in, yet not listed"),
            Err(Error::AuthFailed) => assert!(!listed, "{what}: listed, yet unknown"),
            Err(e) => panic!("{what}: login gave {e:?}"),
        }
        assert!(
            matches!(inst.login("dave", Some("no")), Err(Error::AuthFailed)),
            "{what}"
        );
        // The next open finishes a deletion that freed the name, and only such a one: a user
        // still there stays (before, an open erased him after any stopped deletion).
        let reopened = Instance::open(storage.clone()).unwrap();
        let still = reopened.list_users().unwrap().contains(&"dave".to_string());
        assert_eq!(
            still, listed,
            "{what}: the next open changed whether dave is there"
        );
        // Repeated, the deletion ends it, or finds nothing left to delete.
        match admin.admin_delete_user("dave") {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => panic!("{what}: deleting again gave {e:?}"),
        }
        assert_eq!(inst.list_users().unwrap(), ["admin"], "{what}");
        let inst = Instance::open(storage.clone()).unwrap();
        inst.create_user("dave", Some("new")).unwrap();
        inst.login("dave", Some("new")).unwrap();
        done
    });
}
