//! Concurrency stress: 8 threads sharing one instance, with a watchdog.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mnemo::entry::Entry;
use mnemo::Instance;

use crate::support::Rng;

#[test]
fn eight_threads_share_one_instance_without_losing_a_commit() {
    let inst = Instance::open(Arc::new(mnemo::backend::MemoryBackend::new())).unwrap();
    inst.create_user("owner", None).unwrap();
    let owner = inst.login("owner", None).unwrap();
    let shared = owner.create_db("shared").unwrap();
    let heard = Arc::new(AtomicU64::new(0));
    let counter = heard.clone();
    let _sub = shared
        .subscribe(Box::new(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        }))
        .unwrap();
    for t in 0..8 {
        inst.create_user(&format!("t{t}"), None).unwrap();
        shared
            .grant(
                &inst
                    .login(&format!("t{t}"), None)
                    .unwrap()
                    .default_key()
                    .unwrap(),
                mnemo::database::Permission::Write,
            )
            .unwrap();
    }
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let ops = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(3);
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let (inst, acknowledged, ops, db_id) =
                (inst.clone(), acknowledged.clone(), ops.clone(), shared.id());
            std::thread::spawn(move || {
                let mut rng = Rng::new(t);
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let user = inst.login(&format!("t{t}"), None).unwrap();
                    let own = user.create_db(&format!("own{t}-{i}")).unwrap();
                    let common = user.load_db(&db_id).unwrap();
                    for _ in 0..20 {
                        let key = format!("t{t}-{i}");
                        let value = rng.below(1000).to_string();
                        let db = if rng.below(2) == 0 { &common } else { &own };
                        db.set("s", &key, &value).unwrap();
                        if db.id() == db_id {
                            acknowledged
                                .lock()
                                .unwrap()
                                .push((key.clone(), value.clone()));
                        }
                        assert_eq!(db.get("s", &key).unwrap(), value);
                        i += 1;
                        ops.fetch_add(2, Ordering::Relaxed);
                    }
                    user.logout();
                    ops.fetch_add(2, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Watchdog: the workers must finish well after their deadline, or something deadlocked.
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::Acquire) {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "deadlock: workers still running after 60 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    for w in workers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Release);
    watchdog.join().unwrap();

    // Every acknowledged commit is readable, and the tips are real entries of the database.
    let acknowledged = acknowledged.lock().unwrap();
    for (key, value) in acknowledged.iter() {
        assert_eq!(&shared.get("s", key).unwrap(), value);
    }
    for tip in shared.tips().unwrap() {
        assert_eq!(
            Entry::decode(&shared.entry_bytes(&tip).unwrap())
                .unwrap()
                .database_id(),
            shared.id()
        );
    }
    // Subscribers heard every commit to the shared database (delivered asynchronously).
    let expected = acknowledged.len() as u64 + 8; // plus the 8 grants
    let wait = Instant::now();
    while heard.load(Ordering::Relaxed) < expected && wait.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(heard.load(Ordering::Relaxed), expected);
    eprintln!(
        "stress: {} operations, {} commits to the shared database",
        ops.load(Ordering::Relaxed),
        acknowledged.len()
    );
}

#[test]
fn a_whole_store_read_during_commits_on_sqlite_never_looks_damaged() {
    // get_all checks the rows it reads against the store's recorded row count; the two
    // must come from one snapshot even when a read connection runs beside a commit.
    let dir = crate::support::TempDir::new();
    let url = format!("sqlite:{}", dir.0.join("race.db").display());
    let inst = Instance::open(mnemo::backend::open(&url).unwrap()).unwrap();
    inst.create_user("w", None).unwrap();
    let user = inst.login("w", None).unwrap();
    let db = user.create_db("race").unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, done) = (db.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..300 {
                db.set("s", &format!("k{i}"), "1").unwrap();
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut reads = 0;
    while !done.load(Ordering::Acquire) {
        db.get_all("s").unwrap();
        reads += 1;
    }
    writer.join().unwrap();
    assert!(reads > 0);
    assert_eq!(db.get_all("s").unwrap().len(), 300);
}
