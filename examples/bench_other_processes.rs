//! Hearing other processes: two instances on one SQLite file (or one PostgreSQL database)
//! stand for two processes.
//!
//! 1. Latency: one instance commits, the other's subscription hears it (polled every
//!    `other_processes_poll_ms`); the time from the commit's return to the callback.
//! 2. Cost: durable single-key commits of an instance whose database has a subscriber (so
//!    it is polled, and each poll after a commit reads the new entry back), against the
//!    same with no subscriber; and, with a subscriber throughout, polled every 10 ms
//!    against polled once an hour (the cost of the polling alone). Alternating batches in
//!    this process.
//!
//! Run: `cargo run --release --example bench_other_processes -- [DIR|URL] [COMMITS]` (DIR:
//! the file system to use, default the system temp dir; or a `postgres://` URL, whose
//! database gets one more user and database; COMMITS per kind, default 1000, 200 with
//! `MNEMO_BENCH_QUICK=1`).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use mnemo::database::{Change, Subscription};
use mnemo::{Database, Error, Instance, User};

mod common;

/// Commits of each kind per batch in the cost comparison.
const BATCH: usize = 50;
/// Commits heard per poll interval in the latency measurement.
const HEARD: usize = 40;

fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort_unstable();
    samples[(samples.len() - 1) * p / 100]
}

/// Both "processes" on the storage `url` names: each instance, a session and its handle
/// on one database.
struct Pair {
    instances: (Instance, Instance),
    _users: (User, User),
    dbs: (Database, Database),
}

fn pair(url: &str) -> Pair {
    let open = || Instance::open(mnemo::backend::open(url).expect("open")).unwrap();
    let (one, other) = (open(), open());
    match one.create_user("u", None) {
        Ok(()) | Err(Error::AlreadyExists(_)) => {} // a server used before
        Err(e) => panic!("{e}"),
    }
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
    set_poll(p, poll_ms);
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
        "heard from the other process, poll {poll_ms} ms: median {:.1} ms, p90 {:.1} ms \
         ({HEARD} commits)",
        percentile(&mut samples, 50).as_secs_f64() * 1e3,
        percentile(&mut samples, 90).as_secs_f64() * 1e3,
    );
}

/// Median durable commit of `db` in each of two settings, `commits` of each in alternating
/// batches: `set_up(true)` or `set_up(false)` runs before each batch, and what it returns
/// is kept for the batch.
fn alternating<T>(db: &Database, commits: usize, mut set_up: impl FnMut(bool) -> T) -> (f64, f64) {
    let (mut first, mut second) = (Vec::with_capacity(commits), Vec::with_capacity(commits));
    for batch in 0..commits / BATCH {
        for is_first in [batch % 2 == 0, batch % 2 == 1] {
            let _kept = set_up(is_first);
            let samples = if is_first { &mut first } else { &mut second };
            for i in 0..BATCH {
                let started = Instant::now();
                db.set("s", &format!("c{i}"), &batch.to_string()).unwrap();
                samples.push(started.elapsed());
            }
        }
    }
    let us = |samples: &mut Vec<Duration>| percentile(samples, 50).as_secs_f64() * 1e6;
    (us(&mut first), us(&mut second))
}

fn set_poll(p: &Pair, poll_ms: u64) {
    p.instances
        .0
        .set_limits_by_name(&[("other_processes_poll_ms", poll_ms)])
        .unwrap();
}

/// Commits with a subscriber (polled every 200 ms) and without, alternating.
fn cost_of_a_subscriber(p: &Pair, commits: usize) {
    set_poll(p, 200);
    let db = &p.dbs.0;
    let (heard, alone) = alternating(db, commits, |with| with.then(|| subscribe(db)));
    println!(
        "durable commit, poll 200 ms: {heard:.1} us with a subscriber, {alone:.1} us \
         without: {:.2}x",
        heard / alone,
    );
}

/// Commits with a subscriber throughout, polled every 10 ms or once an hour, alternating.
fn cost_of_polling(p: &Pair, commits: usize) {
    let db = &p.dbs.0;
    let _subscribed = subscribe(db);
    let (often, hourly) = alternating(db, commits, |often| {
        set_poll(p, if often { 10 } else { 3_600_000 })
    });
    println!(
        "durable commit with a subscriber: {often:.1} us polled every 10 ms, {hourly:.1} us \
         polled hourly: {:.2}x",
        often / hourly,
    );
}

fn main() {
    let (dir, commits) = common::dir_and_count(1000, 200);
    let server = dir
        .to_str()
        .filter(|d| d.starts_with("postgres://") || d.starts_with("postgresql://"));
    let path = dir.join(format!(
        "mnemo-bench-other-processes-{}.db",
        std::process::id()
    ));
    let url = server.map_or_else(|| format!("sqlite:{}", path.display()), str::to_string);
    let p = pair(&url);
    let kind = if server.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!("storage: {kind}");
    latency(&p, 200);
    latency(&p, 10);
    cost_of_a_subscriber(&p, commits);
    cost_of_polling(&p, commits);
    drop(p);
    if server.is_none() {
        common::remove_sqlite_files(&path);
    }
}
