//! Hearing other processes: two instances on one SQLite file stand for two processes.
//!
//! 1. Latency: one instance commits, the other's subscription hears it (polled every
//!    `other_processes_poll_ms`); the time from the commit's return to the callback.
//! 2. Cost: durable single-key commits of an instance whose database has a subscriber (so
//!    it is polled, and each poll after a commit reads the new entry back), against the
//!    same with no subscriber; and, with a subscriber throughout, polled every 10 ms
//!    against polled once an hour (the cost of the polling alone). Alternating batches in
//!    this process.
//!
//! Run: `cargo run --release --example bench_other_processes -- [DIR] [COMMITS]` (DIR: the
//! file system to use, default the system temp dir; COMMITS per kind, default 1000, 200
//! with `MNEMO_BENCH_QUICK=1`).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mnemo::backend::SqliteBackend;
use mnemo::database::{Change, Subscription};
use mnemo::{Database, Instance, User};

mod common;

/// Commits of each kind per batch in the cost comparison.
const BATCH: usize = 50;
/// Commits heard per poll interval in the latency measurement.
const HEARD: usize = 40;

fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort_unstable();
    samples[(samples.len() - 1) * p / 100]
}

/// Both "processes" on the file at `path`: each instance, a session and its handle on one
/// database.
struct Pair {
    instances: (Instance, Instance),
    _users: (User, User),
    dbs: (Database, Database),
}

fn pair(path: &std::path::Path) -> Pair {
    let open = || Instance::open(Arc::new(SqliteBackend::open(path).expect("open"))).unwrap();
    let (one, other) = (open(), open());
    one.create_user("u", None).unwrap();
    let (mine, theirs) = (
        one.login("u", None).unwrap(),
        other.login("u", None).unwrap(),
    );
    let db = mine.create_db("d").unwrap();
    let their_db = theirs.load_db(&db.id()).unwrap();
    Pair {
        instances: (one, other),
        _users: (mine, theirs),
        dbs: (db, their_db),
    }
}

fn subscribe(db: &Database) -> (Subscription, mpsc::Receiver<(Change, Instant)>) {
    let (sender, heard) = mpsc::channel();
    let subscription = db
        .subscribe(Box::new(move |change: &Change| {
            let _ = sender.send((*change, Instant::now()));
        }))
        .unwrap();
    (subscription, heard)
}

fn latency(p: &Pair, poll_ms: u64) {
    p.instances
        .0
        .set_limits_by_name(&[("other_processes_poll_ms", poll_ms)])
        .unwrap();
    let (_subscription, heard) = subscribe(&p.dbs.0);
    let mut samples = Vec::with_capacity(HEARD);
    for i in 0..HEARD {
        let id = p.dbs.1.set("s", &format!("l{poll_ms}-{i}"), "1").unwrap();
        let committed = Instant::now();
        loop {
            let (change, at) = heard.recv_timeout(Duration::from_secs(30)).expect("heard");
            if change.entry == id {
                samples.push(at.saturating_duration_since(committed));
                break;
            }
        }
    }
    println!(
        "heard from the other process, poll {poll_ms} ms: median {:.1} ms, p90 {:.1} ms ({HEARD} commits)",
        percentile(&mut samples, 50).as_secs_f64() * 1e3,
        percentile(&mut samples, 90).as_secs_f64() * 1e3,
    );
}

fn cost(p: &Pair, commits: usize, poll_ms: u64) {
    p.instances
        .0
        .set_limits_by_name(&[("other_processes_poll_ms", poll_ms)])
        .unwrap();
    let db = &p.dbs.0;
    let mut alone = Vec::with_capacity(commits);
    let mut heard = Vec::with_capacity(commits);
    for batch in 0..commits / BATCH {
        for with_subscriber in [batch % 2 == 0, batch % 2 == 1] {
            let subscription = with_subscriber.then(|| subscribe(db));
            let samples = if with_subscriber {
                &mut heard
            } else {
                &mut alone
            };
            for i in 0..BATCH {
                let started = Instant::now();
                db.set("s", &format!("c{i}"), &batch.to_string()).unwrap();
                samples.push(started.elapsed());
            }
            drop(subscription);
        }
    }
    let (alone, heard) = (percentile(&mut alone, 50), percentile(&mut heard, 50));
    println!(
        "durable commit, poll {poll_ms} ms: {:.1} us with a subscriber, {:.1} us without: {:.2}x",
        heard.as_secs_f64() * 1e6,
        alone.as_secs_f64() * 1e6,
        heard.as_secs_f64() / alone.as_secs_f64(),
    );
}

/// Commits with a subscriber throughout, polled every 10 ms or once an hour, alternating.
fn cost_of_polling(p: &Pair, commits: usize) {
    let db = &p.dbs.0;
    let (_subscription, _heard) = subscribe(db);
    let mut often = Vec::with_capacity(commits);
    let mut hourly = Vec::with_capacity(commits);
    for batch in 0..commits / BATCH {
        for polled_often in [batch % 2 == 0, batch % 2 == 1] {
            let poll_ms = if polled_often { 10 } else { 3_600_000 };
            p.instances
                .0
                .set_limits_by_name(&[("other_processes_poll_ms", poll_ms)])
                .unwrap();
            let samples = if polled_often {
                &mut often
            } else {
                &mut hourly
            };
            for i in 0..BATCH {
                let started = Instant::now();
                db.set("s", &format!("p{i}"), &batch.to_string()).unwrap();
                samples.push(started.elapsed());
            }
        }
    }
    let (often, hourly) = (percentile(&mut often, 50), percentile(&mut hourly, 50));
    println!(
        "durable commit with a subscriber: {:.1} us polled every 10 ms, {:.1} us polled hourly: {:.2}x",
        often.as_secs_f64() * 1e6,
        hourly.as_secs_f64() * 1e6,
        often.as_secs_f64() / hourly.as_secs_f64(),
    );
}

fn main() {
    let (dir, commits) = common::dir_and_count(1000, 200);
    let path = dir.join(format!(
        "mnemo-bench-other-processes-{}.db",
        std::process::id()
    ));
    let p = pair(&path);
    latency(&p, 200);
    latency(&p, 10);
    cost(&p, commits, 200);
    cost_of_polling(&p, commits);
    drop(p);
    common::remove_sqlite_files(&path);
}
