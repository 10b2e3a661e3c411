//! Durability: acknowledged commits survive SIGKILL, damaged files give errors (never wrong
//! values), and processes sharing one PostgreSQL database converge.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mnemo::backend::{Backend, Cell, MemoryBackend, SqliteBackend, StateWrite};
use mnemo::entry::{Entry, EntryId};
use mnemo::{Database, Error, Instance, User};

use crate::support::{end_other_connections, postgres_storage, write_private, Rng, TempDir};

/// Runs this test binary again as a child doing `role` (see [`child_process`]).
pub(crate) fn spawn_child(role: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "durability::child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MNEMO_TEST_CHILD", role)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Reads a child's output to its end and checks it printed "done" and exited well.
pub(crate) fn wait_until_done(mut child: std::process::Child) {
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(|l| l.ok())
        .collect();
    assert!(
        lines.iter().any(|l| l == "done"),
        "the child did not finish: {lines:?}"
    );
    assert!(child.wait().unwrap().success());
}

pub(crate) fn open_user(url: &str) -> (Instance, User, Database) {
    let inst = Instance::open(mnemo::backend::open(url).unwrap()).unwrap();
    match inst.create_user("writer", None) {
        Ok(()) | Err(Error::AlreadyExists(_)) => {}
        Err(e) => panic!("{e}"),
    }
    let user = inst.login("writer", None).unwrap();
    let db = find_or_create_db(&user, "log");
    (inst, user, db)
}

fn find_or_create_db(user: &User, name: &str) -> Database {
    match user.find_db(name) {
        Ok(db) => db,
        Err(e) if e.is_not_found() => user.create_db(name).unwrap(),
        Err(e) => panic!("{e}"),
    }
}

/// Threads of a `threads` child (see [`child_process`]).
const CRASH_THREADS: usize = 6;

/// Not a test on its own: the body of the child processes the tests below start.
/// `crash|URL|START` commits keys from START on and prints "ack N" after each;
/// `threads|URL|ROUND` commits from [`CRASH_THREADS`] threads at once, half of them into
/// database "log" and half into "side", and prints "ack T N" after thread T's Nth commit;
/// `users|URL|START` creates users uN (no password) from START on, "ack N" after each;
/// `write|URL|DB|PREFIX|COUNT` commits COUNT keys into database DB;
/// `pull|URL|PEER|DB` syncs database DB from the peer at PEER as user "writer";
/// `open|URL|GO` waits for file GO to exist, opens an instance and prints its device id.
#[test]
#[ignore]
fn child_process() {
    let Ok(role) = std::env::var("MNEMO_TEST_CHILD") else {
        return;
    };
    let fields: Vec<&str> = role.split('|').collect();
    let mut out = std::io::stdout();
    writeln!(out).unwrap(); // the harness's "test … " line has no newline yet
    match fields[..] {
        ["crash", url, start] => {
            let (_inst, _user, db) = open_user(url);
            for i in start.parse::<u64>().unwrap().. {
                db.set("log", &format!("k{i}"), &i.to_string()).unwrap();
                writeln!(out, "ack {i}").unwrap();
                out.flush().unwrap();
            }
        }
        ["threads", url, round] => {
            let (_inst, user, log) = open_user(url);
            let side = find_or_create_db(&user, "side");
            let out = std::sync::Mutex::new(out);
            std::thread::scope(|scope| {
                for t in 0..CRASH_THREADS {
                    let (db, out) = (if t % 2 == 0 { &log } else { &side }, &out);
                    scope.spawn(move || {
                        for i in 0.. {
                            db.set("t", &format!("t{t}-r{round}-{i}"), &i.to_string())
                                .unwrap();
                            let mut out = out.lock().unwrap();
                            writeln!(out, "ack {t} {i}").unwrap();
                            out.flush().unwrap();
                        }
                    });
                }
            });
        }
        ["users", url, start] => {
            let inst = Instance::open(mnemo::backend::open(url).unwrap()).unwrap();
            for i in start.parse::<u64>().unwrap().. {
                inst.create_user(&format!("u{i}"), None).unwrap();
                writeln!(out, "ack {i}").unwrap();
                out.flush().unwrap();
            }
        }
        ["write", url, db_id, prefix, count] => {
            let (_inst, user, _) = open_user(url);
            let db = user.load_db(&EntryId::parse(db_id).unwrap()).unwrap();
            for i in 0..count.parse::<u32>().unwrap() {
                db.set("s", &format!("{prefix}{i}"), &i.to_string())
                    .unwrap();
            }
            writeln!(out, "done").unwrap();
        }
        ["pull", url, peer, db_id] => {
            let (inst, user, _) = open_user(url);
            let db = EntryId::parse(db_id).unwrap();
            writeln!(out, "pulling").unwrap();
            out.flush().unwrap();
            inst.enable_sync()
                .unwrap()
                .sync_db(&user, peer, &db)
                .unwrap();
            writeln!(out, "done").unwrap();
        }
        ["open", url, go] => {
            while !std::path::Path::new(go).exists() {
                std::thread::sleep(Duration::from_micros(200));
            }
            let inst = Instance::open(mnemo::backend::open(url).unwrap()).unwrap();
            writeln!(out, "device {}", inst.device_id()).unwrap();
            writeln!(out, "done").unwrap();
        }
        _ => panic!("unknown child role {role}"),
    }
}

/// Two processes opening one file that does not exist yet, at the same moment: one
/// creates it (schema, device key, system databases), the other opens what it created.
#[test]
fn two_processes_creating_one_new_file_share_one_instance() {
    let dir = TempDir::new();
    for round in 0..8 {
        let file = dir.0.join(format!("new{round}.db"));
        let go = dir.0.join(format!("go{round}"));
        let role = format!("open|sqlite:{}|{}", file.display(), go.display());
        let children = [spawn_child(&role), spawn_child(&role)];
        std::thread::sleep(Duration::from_millis(150));
        std::fs::write(&go, b"").unwrap();
        let devices: Vec<String> = children.into_iter().map(device_reported).collect();
        assert_eq!(
            devices[0], devices[1],
            "round {round}: two instances in one file"
        );
        let inst = Instance::open(Arc::new(SqliteBackend::open(&file).unwrap())).unwrap();
        assert_eq!(inst.device_id().to_string(), devices[0]);
    }
}

/// The device id a child of role `open` printed; checks it finished well.
fn device_reported(mut child: std::process::Child) -> String {
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(|l| l.ok())
        .collect();
    assert!(child.wait().unwrap().success(), "a child failed: {lines:?}");
    lines
        .iter()
        .find_map(|l| l.strip_prefix("device ").map(str::to_string))
        .unwrap_or_else(|| panic!("no device id in {lines:?}"))
}

/// Starts a child doing `role`, SIGKILLs it `delay` after its first `ACKS_BEFORE_KILL`
/// acknowledgements (see [`acks_until_killed`]), and returns the last N it printed as
/// "ack N", if any.
fn kill_after(role: &str, delay: Duration) -> Option<u64> {
    acks_until_killed(role, delay)
        .iter()
        .filter_map(|ack| ack.parse::<u64>().ok())
        .next_back()
}

/// Acknowledgements a child makes before its kill's `delay` starts: counted from the
/// child's start, the delay was mostly spent starting the debug binary and opening the
/// file on a loaded machine, and the children then did too little for the tests' checks
/// (with four busy loops: "the children created too few users (76)").
const ACKS_BEFORE_KILL: usize = 10;

/// Starts a child doing `role`, SIGKILLs it `delay` after it printed its first
/// `ACKS_BEFORE_KILL` acknowledgements (or after 60 s without them), and returns what
/// followed "ack " on each line it printed.
fn acks_until_killed(role: &str, delay: Duration) -> Vec<String> {
    let mut child = spawn_child(role);
    let reader = BufReader::new(child.stdout.take().unwrap());
    let (counted, enough) = std::sync::mpsc::channel();
    let acks = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in reader.lines().map_while(|l| l.ok()) {
            if let Some(ack) = line.strip_prefix("ack ") {
                acks.push(ack.to_string());
                if acks.len() == ACKS_BEFORE_KILL {
                    let _ = counted.send(());
                }
            }
        }
        acks
    });
    let _ = enough.recv_timeout(Duration::from_secs(60));
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    acks.join().unwrap()
}

#[test]
fn sqlite_keeps_every_acknowledged_commit_through_sigkill() {
    let dir = TempDir::new();
    let url = format!("sqlite:{}", dir.0.join("crash.db").display());
    let mut rng = Rng::new(7);
    let mut next = 0u64;
    // The user and database exist before the first child starts, so that every child
    // spends its time committing (creating users is tested apart, below).
    drop(open_user(&url));
    for round in 0..30 {
        let last_acked = kill_after(
            &format!("crash|{url}|{next}"),
            Duration::from_millis(30 + rng.below(120) as u64),
        );

        let (_inst, _user, db) = open_user(&url);
        if let Some(last) = last_acked {
            for i in next..=last {
                assert_eq!(
                    db.get("log", &format!("k{i}")).unwrap(),
                    i.to_string(),
                    "round {round}: lost k{i}"
                );
            }
            next = last + 1;
        }
        // The history validates: every tip decodes and verifies.
        for tip in db.tips().unwrap() {
            Entry::decode(&db.entry_bytes(&tip).unwrap()).unwrap();
        }
        // A commit that may have been written but not acknowledged is there or not; either
        // way the reopened instance keeps writing.
        db.set("log", "reopened", &round.to_string()).unwrap();
    }
    assert!(
        next > 30,
        "the children committed too little to test anything ({next})"
    );
}

/// Several threads committing at once share transactions (group commit), and commits to one
/// database build on one another before the previous one is durable: a process killed among
/// them keeps every commit it acknowledged, in both databases, and their histories verify.
#[test]
fn concurrent_commits_acknowledged_survive_sigkill() {
    let dir = TempDir::new();
    let url = format!("sqlite:{}", dir.0.join("threads.db").display());
    let mut rng = Rng::new(13);
    {
        let (_inst, user, _log) = open_user(&url);
        find_or_create_db(&user, "side");
    }
    let mut acknowledged = 0usize;
    for round in 0..12 {
        let delay = Duration::from_millis(80 + rng.below(200) as u64);
        let mut last = [None::<u64>; CRASH_THREADS];
        for ack in acks_until_killed(&format!("threads|{url}|{round}"), delay) {
            let (t, i) = ack.split_once(' ').expect("ack T N");
            let (t, i) = (t.parse::<usize>().unwrap(), i.parse::<u64>().unwrap());
            assert_eq!(
                last[t].map_or(0, |l| l + 1),
                i,
                "thread {t} acknowledged out of order"
            );
            last[t] = Some(i);
            acknowledged += 1;
        }

        let (_inst, user, log) = open_user(&url);
        let side = find_or_create_db(&user, "side");
        for (t, last) in last.iter().enumerate() {
            let db = if t % 2 == 0 { &log } else { &side };
            for i in last.map_or(0..0, |last| 0..last + 1) {
                assert_eq!(
                    db.get("t", &format!("t{t}-r{round}-{i}")).ok(),
                    Some(i.to_string()),
                    "round {round}: thread {t} lost commit {i}"
                );
            }
        }
        for db in [&log, &side] {
            db.verify().unwrap_or_else(|e| panic!("round {round}: {e}"));
            db.set("t", "reopened", &round.to_string()).unwrap();
        }
    }
    assert!(
        acknowledged > 100,
        "the children committed too little to test anything ({acknowledged})"
    );
}

/// Processes killed while creating users: every acknowledged user logs in, and the one
/// being created when the kill came either logs in or can be created again (its name is
/// never left taken by an account nobody can use).
#[test]
fn users_created_through_sigkill_log_in_or_can_be_created_again() {
    let dir = TempDir::new();
    let url = format!("sqlite:{}", dir.0.join("users.db").display());
    let mut rng = Rng::new(11);
    let mut next = 0u64;
    for round in 0..12 {
        let acked = kill_after(
            &format!("users|{url}|{next}"),
            Duration::from_millis(100 + rng.below(400) as u64),
        )
        .map_or(next, |last| last + 1);

        let inst = Instance::open(mnemo::backend::open(&url).unwrap()).unwrap();
        for i in next..acked {
            inst.login(&format!("u{i}"), None)
                .unwrap_or_else(|e| panic!("round {round}: acknowledged u{i}: {e}"));
        }
        // The user being created when the kill came.
        let name = format!("u{acked}");
        match inst.login(&name, None) {
            Ok(_) => {}
            Err(Error::AuthFailed) => {
                inst.create_user(&name, None)
                    .unwrap_or_else(|e| panic!("round {round}: {name} stays taken: {e}"));
                inst.login(&name, None).unwrap();
            }
            Err(e) => panic!("round {round}: {name}: {e}"),
        }
        next = acked + 1;
    }
    assert!(next > 100, "the children created too few users ({next})");
}

#[test]
fn damaged_sqlite_files_give_errors_never_wrong_values() {
    let dir = TempDir::new();
    let pristine = dir.0.join("pristine.db");
    let url = format!("sqlite:{}", pristine.display());
    let expected: Vec<(String, String)> = (0..200)
        .map(|i| (format!("k{i}"), format!("\"value {i}\"")))
        .collect();
    {
        let (_inst, _user, db) = open_user(&url);
        for (k, v) in &expected {
            db.set("s", k, v).unwrap();
        }
    }
    let original = std::fs::read(&pristine).unwrap();
    let (mut ok, mut errors, mut missing, mut unreachable) = (0, 0, 0, 0);
    let mut rng = Rng::new(11);
    for case in 0..120 {
        let mut bytes = original.clone();
        match case % 3 {
            0 => bytes.truncate(rng.below(bytes.len())),
            1 => {
                let at = rng.below(bytes.len() - 16);
                for b in &mut bytes[at..at + 1 + rng.below(16)] {
                    *b = rng.next() as u8;
                }
            }
            _ => {
                let at = 4096 + rng.below(bytes.len() - 4096);
                bytes[at] ^= 1 << rng.below(8);
            }
        }
        let path = dir.0.join(format!("damaged{case}.db"));
        write_private(&path, &bytes);
        let outcome = std::panic::catch_unwind(|| read_all(&path, &expected));
        match outcome.expect("damage must never panic") {
            Ok(found_missing) => {
                ok += 1;
                missing += found_missing;
            }
            Err(Error::Corrupt(_) | Error::Storage(_)) => errors += 1,
            // The damage hit the rows that lead to the data (the account, the database's
            // root): it is unreachable, not wrong.
            Err(Error::NotFound(_) | Error::AuthFailed | Error::PermissionDenied(_)) => {
                unreachable += 1
            }
            Err(e) => panic!("case {case}: unexpected error kind {e:?}"),
        }
    }
    eprintln!(
        "damaged files: {ok} read without a wrong value ({missing} keys unreachable), \
         {unreachable} with the data unreachable, {errors} refused"
    );
    assert!(errors > 0);
}

/// Opens a damaged file and reads every expected key. A read may fail or (if the damage hit
/// the key itself) find nothing, but must never return a different value.
fn read_all(path: &std::path::Path, expected: &[(String, String)]) -> Result<usize, Error> {
    let inst = Instance::open(Arc::new(SqliteBackend::open(path)?))?;
    let user = inst.login("writer", None)?;
    let db = user.find_db("log")?;
    let mut missing = 0;
    for (k, v) in expected {
        match db.get("s", k) {
            Ok(found) => assert_eq!(&found, v, "a damaged file returned a wrong value for {k}"),
            Err(e) if e.is_not_found() => missing += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(missing)
}

#[test]
fn sqlite_refuses_files_of_a_newer_schema_or_another_program() {
    let dir = TempDir::new();
    let path = dir.0.join("v.db");
    drop(SqliteBackend::open(&path).unwrap());
    set_schema_version_in_header(&path, 99).unwrap();
    let err = SqliteBackend::open(&path)
        .err()
        .expect("newer schema refused");
    assert!(
        matches!(&err, Error::Storage(m) if m.contains("newer")),
        "{err}"
    );
    let other = dir.0.join("other.db");
    write_private(
        &other,
        b"this is not a database at all, just some text that is long enough",
    );
    assert!(matches!(
        SqliteBackend::open(&other),
        Err(Error::Corrupt(_) | Error::Storage(_))
    ));
    assert!(matches!(
        SqliteBackend::open(&dir.0),
        Err(Error::Storage(_))
    ));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

/// A file of schema 3 (the same tables, written by builds that keep no versions of the
/// databases) is marked 4 when opened, so that those builds refuse it from then on.
#[test]
fn sqlite_files_of_schema_3_are_marked_4_when_opened() {
    let dir = TempDir::new();
    let path = dir.0.join("v3.db");
    {
        let (_inst, _user, db) = open_user(&format!("sqlite:{}", path.display()));
        db.set("s", "k", "1").unwrap();
    }
    set_schema_version_in_header(&path, 3).unwrap();
    {
        let (_inst, _user, db) = open_user(&format!("sqlite:{}", path.display()));
        assert_eq!(db.get("s", "k").unwrap(), "1");
        db.set("s", "k", "2").unwrap();
        db.verify().unwrap();
    }
    let header = std::fs::read(&path).unwrap();
    assert_eq!(u32::from_be_bytes(header[60..64].try_into().unwrap()), 4);
}

/// Sets SQLite's `user_version` (mnemo's schema version) by editing the file header: it is
/// the big-endian integer at byte offset 60.
fn set_schema_version_in_header(path: &std::path::Path, version: u32) -> std::io::Result<()> {
    let mut bytes = std::fs::read(path)?;
    bytes[60..64].copy_from_slice(&version.to_be_bytes());
    std::fs::write(path, bytes)
}

#[test]
fn two_processes_writing_one_postgres_database_converge() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    let (_inst, _user, db) = open_user(&url);
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|p| spawn_child(&format!("write|{url}|{}|{p}|40", db.id())))
        .collect();
    for child in children {
        wait_until_done(child);
    }
    let (_inst2, _user2, fresh) = open_user(&url);
    assert_eq!(fresh.id(), db.id());
    for p in ["a", "b"] {
        for i in 0..40 {
            assert_eq!(fresh.get("s", &format!("{p}{i}")).unwrap(), i.to_string());
        }
    }
    // Concurrent writers may leave several tips; the next commit merges them into one.
    let merge = fresh.set("s", "merged", "true").unwrap();
    assert_eq!(fresh.tips().unwrap(), vec![merge]);
    assert_eq!(db.tips().unwrap(), vec![merge]);
}

/// The server ending mnemo's idle connection (a restart, a failover, an administrator,
/// `idle_session_timeout`) is noticed before the next call uses it: that call connects
/// again and succeeds.
#[test]
fn a_connection_the_server_ended_while_idle_is_made_again_for_the_next_call() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    let (_inst, _user, db) = open_user(&url);
    db.set("s", "before", "1").unwrap();
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    assert_eq!(end_other_connections(&mut admin), 1);
    // Idle long enough to be checked before it is used.
    std::thread::sleep(Duration::from_millis(5100));
    assert_eq!(db.get("s", "before").unwrap(), "1");
    db.set("s", "after", "2").unwrap();
    assert_eq!(db.get("s", "before").unwrap(), "1");
    assert_eq!(db.get("s", "after").unwrap(), "2");
}

/// A full-store read on PostgreSQL takes the rows and their recorded count from one
/// snapshot: another instance adding keys meanwhile never makes it report rows missing.
#[test]
fn full_store_reads_on_postgres_never_see_a_count_ahead_of_the_rows() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    let (_inst, _user, db) = open_user(&url);
    db.set("s", "first", "0").unwrap();
    let (_inst2, _user2, reader) = open_user(&url);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..300 {
                db.set("s", &format!("k{i}"), &i.to_string()).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut reads = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let rows = reader
                .get_all("s")
                .unwrap_or_else(|e| panic!("read {reads}: {e}"));
            assert!(!rows.is_empty());
            reads += 1;
        }
    });
    assert_eq!(reader.get_all("s").unwrap().len(), 301);
}

/// 300 files, each the same database with one random byte flipped. Whatever is damaged, a
/// read never gives a wrong value, and a full-store read or a verification never answers OK
/// with a row missing or altered.
#[test]
fn single_byte_flips_never_give_a_wrong_value_or_hide_a_lost_row() {
    let dir = TempDir::new();
    let (pristine, expected) = written_file(&dir, 60);
    let original = std::fs::read(&pristine).unwrap();
    let mut rng = Rng::new(300);
    let (mut full, mut refused, mut unreachable) = (0, 0, 0);
    for case in 0..300 {
        let mut bytes = original.clone();
        let at = rng.below(bytes.len());
        let flip = 1 + rng.below(255) as u8;
        bytes[at] ^= flip;
        let path = dir.0.join(format!("flip{case}.db"));
        write_private(&path, &bytes);
        let outcome = std::panic::catch_unwind(|| read_everything(&path, &expected));
        let outcome = outcome.unwrap_or_else(|panic| {
            // Kept for a look: the pristine file differs from run to run.
            let kept = std::env::temp_dir().join(format!("mnemo-flip-{}.db", std::process::id()));
            let _ = std::fs::copy(&pristine, &kept);
            panic!(
                "case {case} (byte {at} xored with {flip}, pristine file kept at {}): damage \
                 must never panic, and it panicked: {}",
                kept.display(),
                panic_message(&*panic)
            )
        });
        match outcome {
            Ok(()) => full += 1,
            Err(Error::Corrupt(_) | Error::Storage(_)) => refused += 1,
            Err(Error::NotFound(_) | Error::AuthFailed | Error::PermissionDenied(_)) => {
                unreachable += 1
            }
            Err(e) => panic!("case {case} (byte {at}): unexpected error kind {e:?}"),
        }
        let _ = std::fs::remove_file(&path);
    }
    eprintln!(
        "single-byte flips: {full} read whole and verified, {refused} refused, \
         {unreachable} with the data unreachable"
    );
    assert!(refused > 0 && full > 0);
}

/// A B-tree page naming one of its children in place of another (one byte changed, as a
/// bit flip on disk can do) makes SQLite return a page of rows twice and another not at
/// all, each row passing its own check. The log read again from a position already passed
/// kept a verification reading on forever (14 GB in ten minutes); two children swapped give
/// every row of a store once, in the wrong order, with the recorded count right. Both are
/// refused as damage now.
#[test]
fn rows_read_twice_or_out_of_order_are_refused() {
    let dir = TempDir::new();
    let (pristine, expected) = written_file(&dir, 300);
    let original = std::fs::read(&pristine).unwrap();
    let root_of = |table: &str| root_page(&pristine, table);

    // Each child under an interior page of the log named again in place of the one after it:
    // its rows are read twice, the next one's never. In place of the rightmost, where the
    // database's rows were, it kept a verification reading the log on forever.
    let mut refused = 0;
    let log = interior_pages(&original, root_of("log"));
    for (i, (_, before), (at, _)) in adjacent_children(&log) {
        let mut damaged = original.clone();
        damaged[at..at + 4].copy_from_slice(&before.to_be_bytes());
        let path = dir.0.join(format!("log{i}.db"));
        write_private(&path, &damaged);
        let (done, outcome) = std::sync::mpsc::channel();
        let wanted = expected.clone();
        std::thread::spawn(move || {
            let _ = done.send(std::panic::catch_unwind(|| {
                read_everything(&path, &wanted).map_err(|e| e.to_string())
            }));
        });
        let result = outcome
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                // The reader goes on, taking memory without bound: end the process.
                eprintln!("reading with child {i} named twice did not end");
                std::process::abort()
            })
            .unwrap_or_else(|panic| panic!("damage panicked: {}", panic_message(&*panic)));
        refused += usize::from(result.is_err_and(|e| e.contains("read out of order")));
    }
    assert!(
        refused > 0,
        "no damaged log was refused as read out of order"
    );

    // Two of the cells' children swapped: SQLite itself returns every row of the store once
    // (when both come after the child its first row is in, where reads seek to).
    let cells = interior_pages(&original, root_of("cells"));
    let path = dir.0.join("cells.db");
    let out_of_order = adjacent_children(&cells).any(|(_, (a, first), (b, second))| {
        let mut damaged = original.clone();
        damaged[a..a + 4].copy_from_slice(&second.to_be_bytes());
        damaged[b..b + 4].copy_from_slice(&first.to_be_bytes());
        write_private(&path, &damaged);
        let keys = store_keys(&path, "s").unwrap_or_default(); // damaged beyond reading
        let mut sorted = keys.clone();
        sorted.sort();
        // Only the store's own rows moved (each once), and out of order.
        sorted.iter().eq(expected.iter().map(|(key, _)| key)) && sorted != keys
    });
    assert!(out_of_order, "no swap put the store's rows out of order");
    let inst = Instance::open(Arc::new(SqliteBackend::open(&path).unwrap())).unwrap();
    let user = inst.login("writer", None).unwrap();
    let db = user.find_db("log").unwrap();
    match db.get_all("s") {
        Err(Error::Corrupt(why)) => assert!(why.contains("read out of order"), "{why}"),
        other => panic!("a store read out of order answered {other:?}"),
    }
    // Pages of a scan, each after the last key of the one before, never go back, and end
    // (rows lost to the damage, which nothing counts for a range, may be missing).
    let mut after: Option<String> = None;
    let mut read = 0;
    loop {
        match db.scan("s", "", after.as_deref(), 7) {
            Ok(page) if page.is_empty() => break,
            Ok(page) => {
                let keys: Vec<&String> = page.iter().map(|(key, _)| key).collect();
                assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
                assert!(after.as_ref().is_none_or(|after| keys[0] > after));
                read += page.len();
                assert!(read <= expected.len(), "the pages went back");
                after = Some(keys[keys.len() - 1].clone());
            }
            Err(Error::Corrupt(_)) => break,
            Err(e) => panic!("{e}"),
        }
    }
}

/// A divider of the cells' B-tree damaged (found by flipping each byte of its interior pages
/// in turn) so that a point read goes past keys that a full read still finds: `get` said
/// NOT_FOUND for live keys while `get_all` and `verify` answered OK (the damaged-file
/// audit). A verification looks every key up by itself too.
#[test]
fn verify_finds_keys_a_damaged_divider_hides_from_point_reads() {
    let dir = TempDir::new();
    let (pristine, expected) = written_file(&dir, 300);
    let original = std::fs::read(&pristine).unwrap();
    let path = dir.0.join("divider.db");
    let interior = interior_pages(&original, root_page(&pristine, "cells"));
    let size = page_size(&original);
    // A page's cells lie between its lowest cell and its end (an interior page has at least
    // one cell beside its rightmost child).
    let mut bytes = interior.iter().flat_map(|children| {
        let cells = children[..children.len() - 1].iter().map(|(at, _)| *at);
        let start = cells.min().expect("an interior page has a cell");
        start..(start / size + 1) * size
    });
    let hidden = bytes.find_map(|at| {
        let mut damaged = original.clone();
        damaged[at] ^= 1;
        write_private(&path, &damaged);
        let missed = keys_point_reads_miss(&path, &expected).ok()?;
        if missed.is_empty() {
            return None;
        }
        let inst = Instance::open(Arc::new(SqliteBackend::open(&path).ok()?)).ok()?;
        let db = inst.login("writer", None).ok()?.find_db("log").ok()?;
        let whole = db.get_all("s").is_ok_and(|all| all == expected);
        whole.then_some((db, missed))
    });
    let (db, missed) = hidden.expect("no flipped divider byte hid a key from point reads only");
    assert!(db.get("s", &missed[0]).unwrap_err().is_not_found());
    match db.verify() {
        Err(Error::Corrupt(why)) => assert!(why.contains("looked up one key at a time"), "{why}"),
        other => panic!("a key hidden from point reads was verified as {other:?}"),
    }
}

/// The keys of `expected` that a point read of the SQLite file at `path` misses, when a full
/// read of store "s" finds them all in order (an error otherwise).
fn keys_point_reads_miss(
    path: &std::path::Path,
    expected: &[(String, String)],
) -> rusqlite::Result<Vec<String>> {
    let keys = store_keys(path, "s")?;
    if !keys.iter().eq(expected.iter().map(|(key, _)| key)) {
        return Err(rusqlite::Error::InvalidQuery);
    }
    let conn = rusqlite::Connection::open(path)?;
    let mut found = conn.prepare(
        "SELECT count(*) FROM cells WHERE db = (SELECT db FROM cells WHERE store = 's' LIMIT 1) \
         AND store = 's' AND key = ?1",
    )?;
    let mut missed = Vec::new();
    for key in keys {
        if found.query_row([&key], |r| r.get::<_, i64>(0))? == 0 {
            missed.push(key);
        }
    }
    Ok(missed)
}

/// The root page of `table` in the SQLite file at `path`.
fn root_page(path: &std::path::Path, table: &str) -> u32 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
        [table],
        |r| r.get(0),
    )
    .unwrap()
}

/// The keys of `store` in the SQLite file at `path`, in the order SQLite reads them for
/// mnemo (along the primary key).
fn store_keys(path: &std::path::Path, store: &str) -> rusqlite::Result<Vec<String>> {
    let conn = rusqlite::Connection::open(path)?;
    let db: Vec<u8> = conn.query_row("SELECT db FROM cells WHERE store = ?1", [store], |r| {
        r.get(0)
    })?;
    let mut stmt =
        conn.prepare("SELECT key FROM cells WHERE db = ?1 AND store = ?2 ORDER BY key")?;
    let rows = stmt.query_map(rusqlite::params![db, store], |r| r.get(0))?;
    rows.collect()
}

/// A child pointer of an interior B-tree page: where its 4 bytes are in the file, and the
/// page they name.
type Child = (usize, u32);

/// The children of each interior page of the B-tree rooted at page `root` of the SQLite
/// file `file` (an index B-tree, as mnemo's tables are), each page's rightmost last.
fn interior_pages(file: &[u8], root: u32) -> Vec<Vec<Child>> {
    let size = page_size(file);
    let mut out = Vec::new();
    let mut pages = vec![root];
    while let Some(page) = pages.pop() {
        let start = (page as usize - 1) * size;
        let header = start + if page == 1 { 100 } else { 0 };
        if file[header] == 0x02 {
            let children = children(file, start, header);
            pages.extend(children.iter().map(|(_, child)| *child));
            out.push(children);
        }
    }
    assert!(!out.is_empty(), "the table fills more than one page");
    out
}

/// The page size of the SQLite file `file`, from its header.
fn page_size(file: &[u8]) -> usize {
    match u16::from_be_bytes([file[16], file[17]]) {
        1 => 65536,
        size => size as usize,
    }
}

/// Each pair of children next to each other under one of `pages`, numbered.
fn adjacent_children(pages: &[Vec<Child>]) -> impl Iterator<Item = (usize, Child, Child)> + '_ {
    let pairs = pages.iter().flat_map(|children| children.windows(2));
    pairs.enumerate().map(|(i, pair)| (i, pair[0], pair[1]))
}

/// The child pointers of the interior page at `start` in `file` whose header is at
/// `header`, the rightmost last.
fn children(file: &[u8], start: usize, header: usize) -> Vec<Child> {
    let count = u16::from_be_bytes([file[header + 3], file[header + 4]]) as usize;
    let named = |at: usize| (at, u32::from_be_bytes(file[at..at + 4].try_into().unwrap()));
    let mut out: Vec<(usize, u32)> = (0..count)
        .map(|i| {
            let slot = header + 12 + 2 * i;
            named(start + u16::from_be_bytes([file[slot], file[slot + 1]]) as usize)
        })
        .collect();
    out.push(named(header + 8));
    out
}

/// A SQLite file in `dir` where writer's database "log" holds `count` keys in store "s",
/// each written by a commit of its own, and those keys with their values in key order (as
/// a full-store read answers).
fn written_file(dir: &TempDir, count: usize) -> (std::path::PathBuf, Vec<(String, String)>) {
    let pristine = dir.0.join("pristine.db");
    let mut expected: Vec<(String, String)> = (0..count)
        .map(|i| (format!("k{i}"), format!("\"value {i}\"")))
        .collect();
    expected.sort();
    let (_inst, _user, db) = open_user(&format!("sqlite:{}", pristine.display()));
    for (k, v) in &expected {
        db.set("s", k, v).unwrap();
    }
    (pristine, expected)
}

/// The message a panic was raised with.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(message), _) => message,
        (_, Some(message)) => message,
        _ => "(not a message)",
    }
}

/// Opens a damaged copy and reads the store every way: each key (a value, if any, must be
/// right), the whole store and a verification (if either answers, it must be all of it).
fn read_everything(path: &std::path::Path, expected: &[(String, String)]) -> Result<(), Error> {
    let inst = Instance::open(Arc::new(SqliteBackend::open(path)?))?;
    let user = inst.login("writer", None)?;
    let db = user.find_db("log")?;
    for (k, v) in expected {
        match db.get("s", k) {
            Ok(found) => assert_eq!(&found, v, "a damaged file returned a wrong value for {k}"),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    let all = db.get_all("s")?;
    assert_eq!(
        all, expected,
        "a full-store read answered without every row"
    );
    db.verify()?;
    Ok(())
}

/// A verification ends while another thread commits as fast as it can: it checks the entries
/// stored when it started, and answers OK or BUSY ("kept changing"). It read on to the end
/// of the log, which a writer faster than the check kept moving: it never returned (the
/// review of the thirty-sixth session's change, on memory storage).
#[test]
fn verify_ends_while_a_faster_writer_commits() {
    let (_inst, _user, db) = open_user("memory:");
    for i in 0..100 {
        db.set("s", &format!("k{i}"), "0").unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                db.set("s", &format!("w{}", i % 1000), &i.to_string())
                    .unwrap();
                i += 1;
            }
        })
    };
    let (done, outcome) = std::sync::mpsc::channel();
    let checked = db.clone();
    std::thread::spawn(move || done.send(checked.verify()));
    let result = outcome.recv_timeout(Duration::from_secs(120));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    match result.expect("verify did not end while a writer committed") {
        Ok(()) | Err(Error::Busy(_)) => {}
        Err(e) => panic!("{e}"),
    }
}

/// State rewritten behind the library's back (valid row checks, as a program writing the
/// file itself would leave them) is answered by reads, which trust storage, but
/// `verify` recomputes everything from the signed entries and names the difference.
#[test]
fn verify_finds_state_that_no_entry_made() {
    let backend = Arc::new(MemoryBackend::new());
    let inst = Instance::open(backend.clone()).unwrap();
    inst.create_user("writer", None).unwrap();
    let user = inst.login("writer", None).unwrap();
    let db = user.create_db("log").unwrap();
    db.set("s", "balance", "10").unwrap();
    let owner = db.set("s", "owner", "\"ann\"").unwrap();
    db.verify().unwrap();

    // Every cell as stored, with one value forged.
    let stores = backend.stores(&db.id()).unwrap();
    let mut stored: Vec<(String, String, Cell)> = Vec::new();
    for store in &stores {
        for (key, cell) in backend.cells(&db.id(), store).unwrap() {
            stored.push((store.clone(), key, cell));
        }
    }
    let discarded = backend.discarded(&db.id()).unwrap();
    let write_marked = |cells: &[(String, String, Cell)], discarded: &[EntryId]| {
        let cells = cells
            .iter()
            .map(|(s, k, c)| (s.as_str(), k.as_str(), c.clone()))
            .collect();
        let state = StateWrite {
            cells,
            discarded,
            expected: backend.version(&db.id()).unwrap(),
        };
        backend.replace_state(&db.id(), &state).unwrap().unwrap();
    };
    let write = |cells: &[(String, String, Cell)]| write_marked(cells, &discarded);
    let mut forged = stored.clone();
    let balance = forged
        .iter_mut()
        .find(|(s, k, _)| s == "s" && k == "balance");
    balance.unwrap().2.value = Some("1000000".into());
    write(&forged);
    assert_eq!(db.get("s", "balance").unwrap(), "1000000");
    match db.verify() {
        Err(Error::Corrupt(message)) => assert!(message.contains("'s'"), "{message}"),
        other => panic!("a forged cell passed verification: {other:?}"),
    }

    // A row nobody wrote, in a store nobody wrote, and a row missing, are differences too.
    let mut extra = stored.clone();
    extra.push(("other".into(), "k".into(), stored[0].2.clone()));
    write(&extra);
    assert!(matches!(db.verify(), Err(Error::Corrupt(_))));
    write(&stored[1..]);
    assert!(matches!(db.verify(), Err(Error::Corrupt(_))));

    // An entry in effect marked discarded: the message names it.
    write_marked(&stored, &[owner]);
    match db.verify() {
        Err(Error::Corrupt(message)) => assert!(
            message.contains(&format!(
                "entry {owner} is marked discarded but takes effect"
            )),
            "{message}"
        ),
        other => panic!("a forged mark passed verification: {other:?}"),
    }
    write(&stored);
    db.verify().unwrap();
}
