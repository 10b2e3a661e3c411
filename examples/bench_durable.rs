//! Durable commits on `sqlite:` against plain SQLite, alternating in one process: batches
//! of mnemo single-key commits (`Database::set` on a SQLite file) and batches of one-row
//! transactions of plain SQLite (the same bundled build, WAL, `synchronous=FULL`, a
//! key/value table), in the same directory, so that noise from the machine falls on both.
//! The C benchmark compares with a baseline measured minutes apart; this is the figure the
//! issue's target ("durable single-key commit ≥ 0.8× plain SQLite") is read from.
//!
//! Run: `cargo run --release --example bench_durable -- [DIR] [COMMITS]` (DIR: the file
//! system to measure, default the system temp dir; COMMITS of each kind, default 3000,
//! 300 with `MNEMO_BENCH_QUICK=1`). Prints one row in the table format of `make bench`.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};

use mnemo::Instance;

mod common;
use common::remove_sqlite_files;

/// Commits of each kind per batch: long enough to amortise switching, short enough that a
/// burst of noise spans both kinds.
const BATCH: usize = 50;

fn value(i: usize) -> String {
    format!("{{\"n\":{i},\"text\":\"the quick brown fox\"}}")
}

fn plain_sqlite(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open the plain SQLite file");
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .expect("WAL mode");
    assert!(mode.eq_ignore_ascii_case("wal"), "journal mode {mode}");
    conn.execute_batch(
        "PRAGMA synchronous=FULL; \
         CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;",
    )
    .expect("plain SQLite schema");
    conn
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    let (dir, commits) = common::dir_and_count(3000, 300);

    let tag = std::process::id();
    let (mnemo_path, plain_path) = (
        dir.join(format!("mnemo-durable-{tag}.db")),
        dir.join(format!("mnemo-durable-plain-{tag}.db")),
    );
    let backend = mnemo::backend::open(&format!("sqlite:{}", mnemo_path.display()))
        .expect("open the mnemo file");
    let inst = Instance::open(backend).expect("open the instance");
    inst.create_user("bench", None).expect("create the user");
    let user = inst.login("bench", None).expect("log in");
    let db = user.create_db("durable").expect("create the database");
    let mut plain = plain_sqlite(&plain_path);

    let mnemo_one = |i: usize| {
        db.set("bench", &format!("k{i:07}"), &value(i))
            .expect("mnemo commit");
    };
    let mut plain_one = |i: usize| {
        let tx = plain
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        tx.prepare_cached("INSERT INTO kv (key, value) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![format!("k{i:07}"), value(i)]))
            .expect("insert one row");
        tx.commit().expect("commit");
    };
    // Warm-up: caches, the files' first pages, the statement caches.
    for i in 0..BATCH {
        mnemo_one(i);
        plain_one(i);
    }

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut i, mut round) = (BATCH, 0);
    while ours.len() < commits {
        // Each round runs a batch of each, the first kind alternating between rounds.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_mnemo in order {
            for _ in 0..BATCH {
                let t = Instant::now();
                if is_mnemo {
                    mnemo_one(i);
                    ours.push(t.elapsed());
                } else {
                    plain_one(i);
                    theirs.push(t.elapsed());
                }
                i += 1;
            }
        }
        round += 1;
    }
    drop(db);
    drop(user);
    drop(inst);
    remove_sqlite_files(&mnemo_path);
    remove_sqlite_files(&plain_path);

    let (m, p) = (median(&mut ours), median(&mut theirs));
    let (m_ns, p_ns) = (m.as_nanos() as f64, p.as_nanos() as f64);
    // The row format of benches/abi_bench.c.
    println!(
        "{:<7} {:<44} {:>8} {:>10} {:>10} {:>10}  rate {:.2}x plain SQLite one-row txn ({:.1} us), alternating",
        "sqlite",
        "durable commit vs plain SQLite, alternating",
        ours.len(),
        format!("{:.1} us", m_ns / 1e3),
        "-",
        format!("{:.0}/s", 1e9 / m_ns),
        p_ns / m_ns,
        p_ns / 1e3,
    );
}
