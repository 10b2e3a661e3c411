//! PostgreSQL: schemas of earlier versions upgraded at connect, the table of tips (which
//! every commit reads and changes), and the connections an instance's threads share.

use std::time::{Duration, Instant};

use mnemo::backend::{Backend, PostgresBackend, RangeLimit};
use mnemo::crypto::PrivateKey;
use mnemo::database::Permission;

use mnemo::entry::EntryId;
use mnemo::{Database, Error, Instance, User};

use crate::durability::open_user;
use crate::foreign::{on_tips, ops};
use crate::processes::TwoProcesses;
use crate::support::{end_other_connections, postgres_storage, Storage};

/// A connection to the test database of `url`, beside mnemo's.
fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

/// Waits until `n` statements wait for an advisory lock (a database's, held by a test).
fn wait_for_lock_waiters(watcher: &mut postgres::Client, n: i64) {
    // Only this database's: tests running meanwhile wait for locks in their own.
    let query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let deadline = Instant::now() + Duration::from_secs(20);
    while watcher.query_one(query, &[]).unwrap().get::<_, i64>(0) < n {
        assert!(
            Instant::now() < deadline,
            "{n} statements never waited for the lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Takes database `db`'s lock, as a commit of another process would, until rolled back.
fn hold_lock<'a>(holder: &'a mut postgres::Client, db: &Database) -> postgres::Transaction<'a> {
    let mut held = holder.transaction().unwrap();
    held.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(encode($1, 'hex'), 0))",
        &[&&db.id().as_bytes()[..]],
    )
    .unwrap();
    held
}

/// The schema version recorded.
fn schema_version(admin: &mut postgres::Client) -> i32 {
    let query = "SELECT max(version) FROM mnemo_schema";
    admin.query_one(query, &[]).unwrap().get(0)
}

/// Undoes version 4's change: tips keyed by their id, without slots.
fn back_to_version_3(admin: &mut postgres::Client) {
    admin
        .batch_execute(
            "ALTER TABLE mnemo_tips DROP COLUMN slot, ADD PRIMARY KEY (db, id); \
             UPDATE mnemo_schema SET version = 3;",
        )
        .unwrap();
}

/// A PostgreSQL database that an earlier mnemo left at schema version 2 (without the
/// databases' versions, its cells keyed by their whole key, tips keyed by their id) is
/// brought to this version at connect, its data kept.
#[test]
fn a_postgres_schema_of_version_2_is_upgraded_at_connect() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    {
        let (_inst, _user, db) = open_user(&url);
        db.set("s", "k", "1").unwrap();
    }
    let mut admin = admin(&url);
    back_to_version_3(&mut admin);
    // Back to version 2's shape: no versions, cells keyed by the whole key.
    admin
        .batch_execute(
            "DROP TABLE mnemo_heads; DROP INDEX mnemo_cells_by_key; \
             ALTER TABLE mnemo_cells DROP COLUMN key_hash, ADD PRIMARY KEY (db, store, key); \
             UPDATE mnemo_schema SET version = 2;",
        )
        .unwrap();
    let (_inst, _user, db) = open_user(&url);
    assert_eq!(db.get("s", "k").unwrap(), "1");
    db.set("s", "k", "2").unwrap();
    db.verify().unwrap();
    assert_eq!(schema_version(&mut admin), 4);
    let heads: i64 = admin
        .query_one("SELECT count(*) FROM mnemo_heads", &[])
        .unwrap()
        .get(0);
    assert!(heads >= 1);
    let long = "k".repeat(4096);
    db.set("s", &long, "3").unwrap();
    assert_eq!(db.get("s", &long).unwrap(), "3");
    assert_eq!(db.scan("s", "", None, 0).unwrap().len(), 2);
}

/// A schema of version 3 (tips keyed by their id) is brought to version 4 at connect: a
/// database with two tips keeps both, and the next commit merges them.
#[test]
fn a_postgres_schema_of_version_3_is_upgraded_at_connect() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    let tips = {
        let (_inst, _user, db) = open_user(&url);
        let writer = PrivateKey::generate().unwrap();
        db.grant(&writer.public_key(), Permission::Write).unwrap();
        let beside = on_tips(&db, &writer, ops("s", "beside", "1"));
        db.set("s", "k", "1").unwrap();
        db.receive(beside.bytes()).unwrap();
        let mut tips = db.tips().unwrap();
        tips.sort();
        assert_eq!(tips.len(), 2);
        tips
    };
    let mut admin = admin(&url);
    back_to_version_3(&mut admin);
    let (_inst, _user, db) = open_user(&url);
    assert_eq!(schema_version(&mut admin), 4);
    assert_eq!(db.tips().unwrap(), tips);
    let slots: Vec<i64> = admin
        .query("SELECT slot FROM mnemo_tips ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(slots.iter().all(|s| *s < 0), "{slots:?}");
    let merge = db.set("s", "k", "2").unwrap();
    assert_eq!(db.tips().unwrap(), vec![merge]);
    assert_eq!(db.get("s", "beside").unwrap(), "1");
    db.verify().unwrap();
}

/// Commits cost what the first one did: they leave no dead rows behind in the index of the
/// tips, which every commit reads (a commit replaces its parent's tip in place), and the
/// read of the tips never scans the table of entries. (Deleting and inserting tip rows left
/// an index entry per commit until autovacuum, each read of the tips went through all of
/// them, and the plan PostgreSQL kept for that read scanned every entry: 740 us a commit at
/// first, 2.7 ms after 12,000.)
#[test]
fn postgres_commits_cost_what_the_first_did() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    let mut admin = admin(&url);
    let mut query_i64 = |query: &str| -> i64 { admin.query_one(query, &[]).unwrap().get(0) };
    let index_pages = "SELECT sum(pg_relation_size(indexrelid) \
                       / current_setting('block_size')::int8)::int8 \
                       FROM pg_index WHERE indrelid = 'mnemo_tips'::regclass";
    let (before, after) = {
        let (_inst, _user, db) = open_user(&url);
        db.set("s", "k", "0").unwrap();
        let before = query_i64(index_pages);
        for i in 1..400 {
            db.set("s", "k", &i.to_string()).unwrap();
        }
        assert_eq!(db.tips().unwrap().len(), 1);
        db.verify().unwrap();
        (before, query_i64(index_pages))
    };
    assert!(
        after <= before,
        "the index of tips grew from {before} to {after} pages"
    );
    let scanned = table_statistic(&mut admin, "seq_tup_read", "mnemo_entries");
    assert!(
        scanned < 400,
        "{scanned} rows of mnemo_entries read by scanning it whole"
    );
}

/// A document write that another process's write to another document overtook reads its
/// cells again by key, whatever the number of documents: the rows it fetches do not grow
/// with the database.
#[test]
fn a_document_write_overtaken_by_another_reads_its_cells_again_by_key() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    let p = TwoProcesses::on(&storage);
    let documents = 300;
    for i in 0..documents {
        p.theirs.set_path("s", &format!("d{i}"), "/a", "1").unwrap();
    }
    let overtaken = 60;
    for i in 0..overtaken {
        let in_between = p.theirs.clone();
        p.watched.before_writes(1, move || {
            in_between
                .set_path("s", &format!("d{i}"), "/b", "2")
                .unwrap();
        });
        p.mine.set_path("s", "k", "/a", &i.to_string()).unwrap();
    }
    p.mine.verify().unwrap();
    drop(p);
    let mut admin = admin(&url);
    let fetched = table_statistic(&mut admin, "idx_tup_fetch", "mnemo_cells");
    // About 5 a write; reading every cell of the database at each overtaken write, 155,000.
    let writes = documents + 2 * overtaken;
    assert!(
        fetched < 40 * writes,
        "{fetched} rows of mnemo_cells fetched for {writes} writes"
    );
}

/// Column `column` of `pg_stat_user_tables` (rows read so far) for `table`, once every
/// other connection to the test database ended: a server process counts what it read into
/// the statistics as it ends.
fn table_statistic(admin: &mut postgres::Client, column: &str, table: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let others = "SELECT count(*) FROM pg_stat_activity \
                  WHERE datname = current_database() AND pid <> pg_backend_pid()";
    while admin.query_one(others, &[]).unwrap().get::<_, i64>(0) > 0 {
        assert!(Instant::now() < deadline, "mnemo's connections did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
    let query = format!(
        "SELECT coalesce(sum({column}), 0)::int8 FROM pg_stat_user_tables \
         WHERE relname = '{table}'"
    );
    admin.query_one(&query, &[]).unwrap().get(0)
}

/// A commit whose statement began before another process's commit to the same database
/// (it waited for the database's lock meanwhile) keeps the other's tip: both commits had
/// the same parent, and the other put its entry in that parent's place first.
#[test]
fn a_postgres_commit_keeps_the_tip_another_put_in_its_parents_place() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    let (_inst, _user, first) = open_user(&url);
    first.set("s", "k", "0").unwrap();
    let (_inst2, _user2, second) = open_user(&url);
    assert_eq!(second.get("s", "k").unwrap(), "0");
    let mut watcher = admin(&url);
    // Hold the database's lock: both commits read the tips, start their statement, and
    // wait; the lock goes to them in the order they asked.
    let mut holder = admin(&url);
    let held = hold_lock(&mut holder, &first);
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| first.set("s", "a", "1").unwrap());
        wait_for_lock_waiters(&mut watcher, 1);
        let b = scope.spawn(|| second.set("s", "b", "1").unwrap());
        wait_for_lock_waiters(&mut watcher, 2);
        held.rollback().unwrap();
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut tips = first.tips().unwrap();
    tips.sort();
    let mut both = vec![a, b];
    both.sort();
    assert_eq!(tips, both);
    assert_eq!(second.get("s", "a").unwrap(), "1");
    let merge = second.set("s", "merged", "1").unwrap();
    assert_eq!(first.tips().unwrap(), vec![merge]);
    first.verify().unwrap();
}

/// A read on one thread does not wait for another thread's commit to the same database,
/// which waits for the database's lock (held here as another process's commit would): the
/// instance's threads share several connections (`max_connections`, 4 by default).
#[test]
fn a_read_does_not_wait_behind_a_commit_waiting_for_a_lock() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    let (_inst, _user, db) = open_user(&format!("{url}?lock_timeout=20000"));
    db.set("s", "k", "1").unwrap();
    let mut watcher = admin(&url);
    let mut holder = admin(&url);
    let held = hold_lock(&mut holder, &db);
    std::thread::scope(|scope| {
        let commit = scope.spawn(|| db.set("s", "k", "2"));
        wait_for_lock_waiters(&mut watcher, 1);
        let started = Instant::now();
        assert_eq!(db.get("s", "k").unwrap(), "1");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the read waited"
        );
        assert!(!commit.is_finished());
        held.rollback().unwrap();
        commit.join().unwrap().unwrap();
    });
    assert_eq!(db.get("s", "k").unwrap(), "2");
}

/// Runs `turn` while another connection is ready to take database `db`'s lock (as another
/// process's write would) once told to by the first function `turn` is given; the second
/// says whether it still waits. Returns what `turn` returned, and when the other connection
/// got the lock.
fn while_another_waits<T>(
    url: &str,
    db: &Database,
    turn: impl FnOnce(&dyn Fn(), &dyn Fn() -> bool) -> T,
) -> (T, Instant) {
    let mut other = admin(url);
    std::thread::scope(|scope| {
        let (go, told) = std::sync::mpsc::channel::<()>();
        let other = &mut other;
        let waiting = scope.spawn(move || {
            told.recv().unwrap();
            hold_lock(other, db).rollback().unwrap();
            Instant::now()
        });
        let turned = turn(&|| go.send(()).unwrap(), &|| !waiting.is_finished());
        (turned, waiting.join().unwrap())
    })
}

/// A write turn holding a database (`Backend::hold_for_turn`, what a change other processes
/// kept overtaking asks for) keeps every other connection's write to it waiting until the
/// turn ends, while its own calls go on; the lock goes with the turn, and the connection
/// back to the pool.
#[test]
fn a_turn_holding_a_database_keeps_other_writes_out_until_it_ends() {
    let Some((_storage, url, (_inst, _user, db))) = holding_one_key() else {
        return;
    };
    let backend = PostgresBackend::connect(&format!("{url}?lock_timeout=1000")).unwrap();
    let id = db.id();
    let mut watcher = admin(&url);
    let before = backend.version(&id).unwrap();
    let (ended, other_got_it) = while_another_waits(&url, &db, |start, other_waits| {
        let mut work_ended = None;
        backend
            .write_turn(false, &mut || {
                backend.hold_for_turn(&id)?;
                backend.hold_for_turn(&id)?; // held already: nothing more
                start();
                wait_for_lock_waiters(&mut watcher, 1);
                // Its own calls run on the connection holding the lock.
                assert_eq!(backend.version(&id)?, before);
                assert_eq!(backend.tips(&id)?.len(), 1);
                assert_eq!(backend.connections_open(), 1, "no other connection made");
                std::thread::sleep(Duration::from_millis(200));
                assert!(other_waits());
                work_ended = Some(Instant::now()); // the lock goes as the turn ends, after
                Ok(())
            })
            .unwrap();
        work_ended.unwrap()
    });
    assert!(other_got_it >= ended);
    assert_eq!(
        backend.connections_open(),
        1,
        "the connection that held it is back"
    );
    assert!(matches!(
        backend.hold_for_turn(&id),
        Err(Error::Internal(_))
    ));
    // Its idle limit, bounded while it held the lock (see the next test), is as before.
    std::thread::sleep(Duration::from_millis(5500));
    assert_eq!(backend.version(&id).unwrap(), before);
}

/// A process that stops while its turn holds a database (paused, frozen) keeps the others'
/// writes out for at most the lock wait (at least 5 s): the server ends the holding
/// connection once it has been idle that long (`idle_session_timeout`), which frees the
/// lock; the turn's next call fails, and the connection is made again for the next.
#[test]
fn a_stalled_turn_holds_a_database_for_at_most_the_lock_wait() {
    let Some((_storage, url, (_inst, _user, db))) = holding_one_key() else {
        return;
    };
    let backend = PostgresBackend::connect(&format!("{url}?lock_timeout=300")).unwrap();
    let id = db.id();
    let before = backend.version(&id).unwrap();
    let ((stalled, ended), other_got_it) = while_another_waits(&url, &db, |start, _| {
        let stalled = backend.write_turn(false, &mut || {
            backend.hold_for_turn(&id)?;
            start();
            std::thread::sleep(Duration::from_secs(7)); // stopped, as far as the server sees
            backend.version(&id).map(drop)
        });
        (stalled.map(drop), Instant::now())
    });
    assert!(matches!(stalled, Err(Error::Storage(_))), "{stalled:?}");
    assert!(other_got_it + Duration::from_secs(1) < ended);
    assert_eq!(backend.version(&id).unwrap(), before);
    assert!(ended.elapsed() < Duration::from_secs(20));
}

/// The connections an instance made for a burst of calls are closed once they stayed idle
/// for the URL's `idle_timeout`, without waiting for another call: a quiet instance holds
/// one connection to the server.
#[test]
fn connections_beyond_one_are_closed_once_idle_without_another_call() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    let app = "mnemo-idle-test";
    let options = format!("lock_timeout=20000&idle_timeout=1000&application_name={app}");
    let (_inst, _user, db) = open_user(&format!("{url}?{options}"));
    db.set("s", "k", "1").unwrap();
    let mut watcher = admin(&url);
    let mut mnemos = || -> i64 {
        let query = "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND application_name = $1";
        watcher.query_one(query, &[&app]).unwrap().get(0)
    };
    open_a_second_connection(&url, &db);
    assert_eq!(mnemos(), 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while mnemos() > 1 {
        assert!(Instant::now() < deadline, "the idle connection stayed open");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(db.get("s", "k").unwrap(), "2");
}

/// Makes `db`'s instance open a second connection to the server at `url`: a read while a
/// commit (key `k` of store `s` from "1" to "2") waits for the database's lock, which
/// another connection holds meanwhile.
fn open_a_second_connection(url: &str, db: &Database) {
    let mut holder = admin(url);
    let held = hold_lock(&mut holder, db);
    std::thread::scope(|scope| {
        let commit = scope.spawn(|| db.set("s", "k", "2"));
        wait_for_lock_waiters(&mut admin(url), 1);
        assert_eq!(db.get("s", "k").unwrap(), "1");
        held.rollback().unwrap();
        commit.join().unwrap().unwrap();
    });
}

/// Every connection of the pool ended at once (a restart), each idle for less than the
/// check: a write using the first fails (a read is asked again), and the next call
/// connects again, rather than each ended connection failing a call of its own.
#[test]
fn connections_the_server_ended_together_fail_one_call_not_one_each() {
    let Some((_storage, url, (_inst, _user, db))) = holding_one_key() else {
        return;
    };
    open_a_second_connection(&url, &db);
    assert!(end_other_connections(&mut admin(&url)) >= 2);
    assert_eq!(db.get("s", "k").unwrap(), "2");
    db.set("s", "k", "3").unwrap();
    assert_eq!(db.get("s", "k").unwrap(), "3");
}

/// A call whose connection the server ended just before (a restart, a failover, an
/// administrator) succeeds, the first one after the restart included: the connection is
/// seen ended before it is used (and a read failed by it would be asked again on a new
/// one). (Before, each call here failed with `Storage`.)
#[test]
fn a_call_on_a_connection_the_server_ended_succeeds() {
    let Some((_storage, url, (_inst, _user, db))) = holding_one_key() else {
        return;
    };
    let backend = PostgresBackend::connect(&url).unwrap();
    let id = db.id();
    let (tip, _) = backend.tips(&id).unwrap()[0];
    let secrets = backend.secret_names("").unwrap();
    type Read = fn(&PostgresBackend, &EntryId, &EntryId, &str) -> mnemo::Result<bool>;
    let reads: [(&str, Read); 18] = [
        ("version", |b, db, _, _| {
            Ok(b.version(db)? != Default::default())
        }),
        ("get_entry", |b, _, tip, _| Ok(b.get_entry(tip)?.is_some())),
        ("entry_meta", |b, _, tip, _| {
            Ok(b.entry_meta(tip)?.is_some())
        }),
        ("settings_closure", |b, _, tip, _| {
            Ok(!b.settings_closure(&[*tip])?.is_empty())
        }),
        ("tips", |b, db, _, _| Ok(b.tips(db)?.len() == 1)),
        ("tip_metas", |b, db, _, _| Ok(b.tip_metas(db)?.len() == 1)),
        ("cell", |b, db, _, _| Ok(b.cell(db, "s", "k")?.is_some())),
        ("cells_at", |b, db, _, _| {
            Ok(b.cells_at(db, &[("s", "k")])?[0].is_some())
        }),
        ("cells", |b, db, _, _| Ok(b.cells(db, "s")?.len() == 1)),
        ("cells_range", |b, db, _, _| {
            let found = b.cells_range(db, "s", "", None, RangeLimit::NONE, true)?;
            Ok(found.len() == 1)
        }),
        ("stores", |b, db, _, _| {
            Ok(b.stores(db)?.contains(&"s".to_string()))
        }),
        ("discarded", |b, db, _, _| Ok(b.discarded(db)?.is_empty())),
        ("entries_after", |b, db, _, _| {
            Ok(!b.entries_after(db, 0, 10)?.is_empty())
        }),
        ("last_position", |b, db, _, _| Ok(b.last_position(db)? > 0)),
        ("last_positions", |b, db, _, _| {
            Ok(b.last_positions(&[*db])?[0] > 0)
        }),
        ("meta_get", |b, _, _, _| {
            Ok(b.meta_get("no such key")?.is_none())
        }),
        ("secret_get", |b, _, _, secret| {
            Ok(b.secret_get(secret)?.is_some())
        }),
        ("secret_names", |b, _, _, _| {
            Ok(!b.secret_names("")?.is_empty())
        }),
    ];
    let mut admin = admin(&url);
    for (name, read) in reads {
        assert!(end_other_connections(&mut admin) >= 1);
        let found = read(&backend, &id, &tip, &secrets[0]);
        assert!(matches!(found, Ok(true)), "{name}: {found:?}");
    }
    // A write finds the connection ended before it uses it (the server's word of it has
    // arrived, and it was idle long enough to look): it is made again, and succeeds.
    for value in [b"x", b"y"] {
        assert!(end_other_connections(&mut admin) >= 1);
        std::thread::sleep(Duration::from_millis(20));
        backend.meta_put("restart-test", value).unwrap();
        assert_eq!(backend.meta_get("restart-test").unwrap().unwrap(), value);
    }
}

/// The server lists mnemo's connections as "mnemo" when the URL does not name them.
#[test]
fn connections_are_called_mnemo_on_the_server() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    let (_inst, _user, _db) = open_user(&url);
    let names: Vec<String> = admin(&url)
        .query(
            "SELECT application_name FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n == "mnemo"),
        "{names:?}"
    );
}

/// The server's words in an error are escaped, as a peer's are: a server (or whoever
/// answers on its address) cannot forge log lines or drive a terminal through mnemo's error
/// messages.
#[test]
fn a_servers_error_text_is_escaped() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    let (_inst, _user, db) = open_user(&url);
    admin(&url)
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             RAISE EXCEPTION E'no\\nINFO forged\\x1b[2J'; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON mnemo_entries \
             FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .unwrap();
    let refused = db.set("s", "k", "1").unwrap_err();
    let message = refused.to_string();
    assert!(matches!(refused, Error::Storage(_)), "{message}");
    assert!(
        message.contains("no\\u{a}INFO forged\\u{1b}[2J"),
        "{message}"
    );
}

/// A process that holds a database's lock and stalls makes another process's commit fail
/// with Busy after the lock timeout (`lock_timeout` in the URL, 30 s by default), never
/// wait for ever.
/// The test server's fresh database (kept while the first value lives) opened with
/// `lock_timeout=300`, the writer's instance, session and database holding key `k` set to
/// 1, and another connection to hold that database's lock with; `None` without the server.
fn with_a_short_lock_wait() -> Option<(Storage, (Instance, User, Database), postgres::Client)> {
    let storage = postgres_storage()?;
    let opened = open_user(&format!("{}?lock_timeout=300", storage.url().unwrap()));
    opened.2.set("s", "k", "1").unwrap();
    let other = admin(&storage.url().unwrap());
    Some((storage, opened, other))
}

#[test]
fn a_commit_waiting_for_a_stalled_postgres_lock_gives_up_busy() {
    let Some((_storage, (_inst, _user, db), mut stalled)) = with_a_short_lock_wait() else {
        return;
    };
    let lock = hold_lock(&mut stalled, &db);
    let started = Instant::now();
    assert!(matches!(db.set("s", "k", "2"), Err(Error::Busy(_))));
    assert!(started.elapsed() < Duration::from_secs(20));
    lock.rollback().unwrap();
    db.set("s", "k", "3").unwrap();
    assert_eq!(db.get("s", "k").unwrap(), "3");
}

/// Writes of this process's threads queued behind one that the server keeps waiting each
/// give up after about their own bound, not one bound per write ahead of them: before,
/// the k-th waited k times `lock_timeout` (3 s for the tenth here).
#[test]
fn writes_queued_behind_a_stalled_one_each_give_up_within_their_bound() {
    let Some((_storage, (_inst, _user, db), mut stalled)) = with_a_short_lock_wait() else {
        return;
    };
    let lock = hold_lock(&mut stalled, &db);
    let started = Instant::now();
    let waited: Vec<_> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..10)
            .map(|n| {
                let db = &db;
                scope.spawn(move || {
                    let written = db.set("s", &format!("w{n}"), "2");
                    (written, started.elapsed())
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (written, _) in &waited {
        assert!(matches!(written, Err(Error::Busy(_))), "{written:?}");
    }
    let longest = waited.iter().map(|(_, took)| *took).max().unwrap();
    // Each waits at most 300 ms for the writes ahead, then 300 ms for the server's lock.
    assert!(longest < Duration::from_millis(1800), "{longest:?}");
    lock.rollback().unwrap();
    db.set("s", "k", "3").unwrap();
    assert_eq!(db.get("s", "k").unwrap(), "3");
}

/// The test server's fresh database (kept while the first value lives) with its URL, and
/// the writer's instance, session and database holding key `k` set to 1; `None` without
/// the test server.
fn holding_one_key() -> Option<(Storage, String, (Instance, User, Database))> {
    let storage = postgres_storage()?;
    let url = storage.url().unwrap();
    let opened = open_user(&url);
    opened.2.set("s", "k", "1").unwrap();
    Some((storage, url, opened))
}

/// Columns changed to hold what mnemo never writes (here NULL, where its schema has none)
/// are corrupt data, found where they are read: before, reading them panicked, and a panic
/// in a write left the database unable to write until the instance was opened again.
#[test]
fn a_column_holding_what_mnemo_never_writes_is_corrupt_not_a_panic() {
    let Some((_storage, url, (_inst, _user, db))) = holding_one_key() else {
        return;
    };
    let mut admin = admin(&url);
    admin
        .batch_execute(
            "ALTER TABLE mnemo_cells ALTER COLUMN chk DROP NOT NULL; \
             UPDATE mnemo_cells SET chk = NULL;",
        )
        .unwrap();
    match db.get("s", "k") {
        Err(Error::Corrupt(message)) => assert!(message.contains("'chk'"), "{message}"),
        other => panic!("a NULL check read back as {other:?}"),
    }
    admin
        .batch_execute(
            "ALTER TABLE mnemo_heads ALTER COLUMN version DROP NOT NULL; \
             UPDATE mnemo_heads SET version = NULL;",
        )
        .unwrap();
    match db.set("s", "k2", "2") {
        Err(Error::Corrupt(message)) => assert!(message.contains("'version'"), "{message}"),
        other => panic!("a write on a NULL version gave {other:?}"),
    }
}

/// A cell row whose key hash was changed outside mnemo is corrupt: `verify` (and every read
/// of the whole store) says so at once, and a key a write then gave a second row reads as
/// corrupt, also in a scan and in a write that reads it first. Before, `verify` passed it,
/// and after the next write the key failed every read with STORAGE ("unexpected number of
/// rows"), for good; a scan listed the key twice, and a write reading it took either row.
#[test]
fn a_cells_key_hash_changed_outside_mnemo_is_corrupt() {
    let Some((_storage, url, (_inst, _user, db))) = holding_one_key() else {
        return;
    };
    admin(&url)
        .batch_execute("UPDATE mnemo_cells SET key_hash = '\\x00' WHERE key = 'k'")
        .unwrap();
    match db.verify() {
        Err(Error::Corrupt(message)) => assert!(message.contains("hash"), "{message}"),
        other => panic!("verify of a changed key hash gave {other:?}"),
    }
    db.set("s", "k", "2").unwrap();
    match db.get("s", "k") {
        Err(Error::Corrupt(message)) => assert!(message.contains("2 rows"), "{message}"),
        other => panic!("a key with two rows read back as {other:?}"),
    }
    match db.scan("s", "", None, 0) {
        Err(Error::Corrupt(message)) => assert!(message.contains("2 rows"), "{message}"),
        other => panic!("a scan over a key with two rows gave {other:?}"),
    }
    match db.set_path("s", "k", "/a", "1") {
        Err(Error::Corrupt(message)) => assert!(message.contains("2 rows"), "{message}"),
        other => panic!("a write reading a key with two rows gave {other:?}"),
    }
    // What a document write reads ahead (or again, when overtaken) in one round trip.
    let backend = PostgresBackend::connect(&url).unwrap();
    match backend.cells_at(&db.id(), &[("s", "k")]) {
        Err(Error::Corrupt(message)) => assert!(message.contains("2 rows"), "{message}"),
        other => panic!("a write's read ahead of a key with two rows gave {other:?}"),
    }
}

/// A database whose tip rows were deleted outside mnemo, its entries still stored, is
/// corrupt: before, a write answered NOT_FOUND ("forgotten, perhaps by another process").
#[test]
fn a_database_whose_tips_were_deleted_is_corrupt() {
    let Some((_storage, url, (_inst, _user, db))) = holding_one_key() else {
        return;
    };
    admin(&url)
        .execute(
            "DELETE FROM mnemo_tips WHERE db = $1",
            &[&&db.id().as_bytes()[..]],
        )
        .unwrap();
    let inst = Instance::open(mnemo::backend::open(&url).unwrap()).unwrap();
    let user = inst.login("writer", None).unwrap();
    match user.find_db("log").and_then(|db| db.set("s", "k2", "2")) {
        Err(Error::Corrupt(message)) => assert!(message.contains("no tips"), "{message}"),
        other => panic!("a database without tips gave {other:?}"),
    }
}

/// The server's words in an error are cut to 4,096 characters: a server (or whoever
/// answers on its address) decides their size.
#[test]
fn a_servers_error_text_is_cut_short() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    let (_inst, _user, db) = open_user(&url);
    admin(&url)
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             RAISE EXCEPTION '%', repeat('x', 1000000); END $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON mnemo_entries \
             FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .unwrap();
    let message = db.set("s", "k", "1").unwrap_err().to_string();
    assert!(message.len() < 4096 + 200, "{} bytes", message.len());
    assert!(
        message.contains(&format!("{}...", "x".repeat(100))),
        "{message}"
    );
}

/// Tip rows copied (with their checks, which anyone can make) are corrupt data: before,
/// they were taken as a commit's parents (200,000 copies: INVALID_ARGUMENT, "at most 1024
/// parents", for every write).
#[test]
fn stored_tips_naming_an_entry_twice_are_corrupt() {
    let Some((_storage, url, (_inst, _user, db))) = holding_one_key() else {
        return;
    };
    admin(&url)
        .execute(
            "INSERT INTO mnemo_tips (db, id, height, chk, slot) \
             SELECT db, id, height, chk, slot - 1000000 FROM mnemo_tips WHERE db = $1",
            &[&&db.id().as_bytes()[..]],
        )
        .unwrap();
    let inst = Instance::open(mnemo::backend::open(&url).unwrap()).unwrap();
    let user = inst.login("writer", None).unwrap();
    match user.find_db("log").and_then(|db| db.set("s", "k2", "2")) {
        Err(Error::Corrupt(message)) => assert!(message.contains("twice"), "{message}"),
        other => panic!("copied tips gave {other:?}"),
    }
}

/// mnemo's tables changed outside mnemo in ways that would decide what becomes of its reads
/// and writes are refused when the backend connects, as a SQLite file's are: before, a
/// trigger copying the secrets table elsewhere ran on every commit, and a copy of a table
/// put ahead in `search_path` received new accounts' secrets.
#[test]
fn tables_changed_outside_mnemo_are_refused_at_connect() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    drop(open_user(&url));
    let changes = [
        (
            "CREATE FUNCTION copy() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RETURN NEW; END $$; \
             CREATE TRIGGER copy BEFORE INSERT ON mnemo_secrets \
             FOR EACH ROW EXECUTE FUNCTION copy();",
            "DROP TRIGGER copy ON mnemo_secrets; DROP FUNCTION copy();",
            "a trigger copy on mnemo_secrets",
        ),
        (
            "CREATE RULE keep AS ON DELETE TO mnemo_cells DO INSTEAD NOTHING;",
            "DROP RULE keep ON mnemo_cells;",
            "a rule keep on mnemo_cells",
        ),
        (
            "CREATE SCHEMA ahead; \
             CREATE TABLE ahead.mnemo_secrets (LIKE public.mnemo_secrets INCLUDING ALL); \
             DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = ahead, public', \
             current_database()); END $$;",
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET search_path', \
             current_database()); END $$; DROP SCHEMA ahead CASCADE;",
            "mnemo_secrets, in schema ahead apart from mnemo_schema",
        ),
    ];
    let mut admin = admin(&url);
    for (change, undo, named) in changes {
        admin.batch_execute(change).unwrap();
        match mnemo::backend::open(&url) {
            Err(Error::Corrupt(message)) => assert!(
                message.contains(named) && message.contains("outside mnemo"),
                "{named}: {message}"
            ),
            Err(e) => panic!("{named}: refused with {e:?}, not as corrupt"),
            Ok(_) => panic!("{named}: opened"),
        }
        admin.batch_execute(undo).unwrap();
        mnemo::backend::open(&url).unwrap_or_else(|e| panic!("after undoing {named}: {e}"));
    }
}

/// A connection made after the backend connected (one the server ended, replaced) finds
/// changes made meanwhile, and looks for mnemo's tables only in the schema that held them
/// at connect: a copy of one put ahead in `search_path` later is never written to.
#[test]
fn a_later_connection_finds_changes_and_keeps_to_mnemos_schema() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    let (inst, _user, db) = open_user(&url);
    db.set("s", "k", "1").unwrap();
    let mut admin = admin(&url);
    admin
        .batch_execute(
            "CREATE SCHEMA ahead; \
             CREATE TABLE ahead.mnemo_secrets (LIKE public.mnemo_secrets INCLUDING ALL); \
             DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = ahead, public', \
             current_database()); END $$; \
             CREATE FUNCTION copy() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RETURN NEW; END $$; \
             CREATE TRIGGER copy BEFORE INSERT ON mnemo_cells \
             FOR EACH ROW EXECUTE FUNCTION copy();",
        )
        .unwrap();
    end_other_connections(&mut admin);
    // The first call may meet the ended connection; the next ones make a new one.
    let refused = (0..3).find_map(|_| match db.set("s", "k", "2") {
        Err(Error::Corrupt(message)) => Some(message),
        _ => None,
    });
    let refused = refused.expect("a new connection did not find the trigger");
    assert!(
        refused.contains("a trigger copy on mnemo_cells"),
        "{refused}"
    );
    let mut admin = self::admin(&url);
    admin
        .batch_execute("DROP TRIGGER copy ON mnemo_cells; DROP FUNCTION copy();")
        .unwrap();
    db.set("s", "k", "2").unwrap();
    inst.create_user("bob", Some("pw")).unwrap();
    inst.login("bob", Some("pw")).unwrap();
    let copied: i64 = admin
        .query_one("SELECT count(*) FROM ahead.mnemo_secrets", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        copied, 0,
        "secrets were written to the copy ahead in the path"
    );
}

/// `url` with `user` in place of its user (the test cluster trusts local logins).
fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (_, place) = rest.split_once('@').unwrap();
    format!("{scheme}://{user}@{place}")
}

/// Row-level security on mnemo's tables is refused only where it applies to mnemo's role
/// (forced on the tables' owner here; a superuser is never subject to it): enabled alone,
/// as a hardening step, it does not stop the owner, and mnemo connects.
#[test]
fn row_level_security_is_refused_where_it_applies_to_mnemo() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    let role = format!("mnemo_owner_{}", std::process::id());
    let mut admin = admin(&url);
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT CREATE ON SCHEMA public TO {role};"
        ))
        .unwrap();
    let owner_url = as_user(&url, &role);
    drop(open_user(&owner_url));
    admin
        .batch_execute("ALTER TABLE mnemo_entries ENABLE ROW LEVEL SECURITY;")
        .unwrap();
    mnemo::backend::open(&owner_url).unwrap();
    admin
        .batch_execute("ALTER TABLE mnemo_entries FORCE ROW LEVEL SECURITY;")
        .unwrap();
    let refused = mnemo::backend::open(&owner_url);
    admin
        .batch_execute(&format!(
            "REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}; DROP ROLE {role};"
        ))
        .unwrap();
    match refused {
        Err(Error::Corrupt(message)) => {
            assert!(
                message.contains("row-level security on mnemo_entries"),
                "{message}"
            )
        }
        Err(e) => panic!("refused with {e:?}, not as corrupt"),
        Ok(_) => panic!("opened with row-level security forced on mnemo's role"),
    }
}

/// mnemo's tables in a schema whose name needs quoting (made there because it came first in
/// `search_path`) are used as they are: each connection looks only in that schema.
#[test]
fn tables_in_a_schema_named_with_capitals_are_used() {
    let Some(storage) = postgres_storage() else {
        return;
    };
    let url = storage.url().unwrap();
    admin(&url)
        .batch_execute(
            "CREATE SCHEMA \"My App\"; \
             DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = \"My App\"', \
             current_database()); END $$;",
        )
        .unwrap();
    let (_inst, _user, db) = open_user(&url);
    db.set("s", "k", "1").unwrap();
    let (_inst, _user, db) = open_user(&url);
    assert_eq!(db.get("s", "k").unwrap(), "1");
    let placed: String = admin(&url)
        .query_one(
            "SELECT relnamespace::regnamespace::text FROM pg_class WHERE relname = 'mnemo_cells'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(placed, "\"My App\"");
}
