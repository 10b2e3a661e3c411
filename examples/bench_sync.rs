//! Sync benchmark: bringing an empty peer up to date over loopback, compared with this
//! machine's single-core Ed25519 verification rate measured in the same run; pulling 600
//! settings entries (grants) against pulling 600 data entries; the latency from a commit on
//! one instance to the change callback on the other, both ways between a tracking peer and
//! the listener it tracks; peak memory.
//!
//! Run: `cargo run --release --example bench_sync [ENTRIES] [DIR]` (default 100000 entries;
//! the SQLite file in DIR, default the system's temporary directory). With
//! `MNEMO_BENCH_QUICK=1` only the catch-up, three times (default 5000 entries), printed as
//! one row of `make bench`'s table, then the same catch-up into a SQLite file (durable: the
//! entries received share storage commits) as a second row, against the first.

use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mnemo::backend::MemoryBackend;
use mnemo::crypto::PrivateKey;
use mnemo::database::Permission;
use mnemo::Instance;

#[allow(dead_code)] // only its clean-up is used here
mod common;
use common::remove_sqlite_files;

fn instance(name: &str) -> (Instance, mnemo::User) {
    instance_on(name, None)
}

/// An instance with user `name` logged in, in memory or (`file`) in a new SQLite file.
fn instance_on(name: &str, file: Option<&Path>) -> (Instance, mnemo::User) {
    let backend = match file {
        None => Arc::new(MemoryBackend::new()),
        Some(path) => {
            remove_sqlite_files(path);
            mnemo::backend::open(&format!("sqlite:{}", path.display())).unwrap()
        }
    };
    let inst = Instance::open(backend).unwrap();
    inst.create_user(name, None).unwrap();
    let user = inst.login(name, None).unwrap();
    (inst, user)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Single-core Ed25519 verifications per second of entry-sized messages: the floor. Each
/// is ed25519-dalek's `verify_strict` with the key decompressed first, the library's own
/// strict check of one signature alone. (mnemo's check, `crypto::strict`, gives the same
/// verdicts for less work: it skips decompressing `R`, and sync keeps the keys of a batch
/// decompressed.)
fn verify_rate(n: usize) -> f64 {
    let key = PrivateKey::generate().unwrap();
    let message = vec![7u8; 220];
    let signature = ed25519_dalek::Signature::from_bytes(&key.sign(&message));
    let public = *key.public_key().as_bytes();
    let start = Instant::now();
    for _ in 0..n {
        ed25519_dalek::VerifyingKey::from_bytes(&public)
            .and_then(|k| k.verify_strict(&message, &signature))
            .unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Brings an empty peer up to date with a database of `entries` entries over loopback:
/// entries pulled, seconds taken, and the peak RSS in MiB before it started.
fn catch_up(entries: usize) -> (usize, f64, f64) {
    catch_up_into(entries, None)
}

/// [`catch_up`], the peer in memory or (`file`) in a new SQLite file (removed after).
fn catch_up_into(entries: usize, file: Option<&Path>) -> (usize, f64, f64) {
    let (a, alice) = instance("alice");
    let db = alice.create_db("big").unwrap();
    for i in 0..entries {
        db.set("s", &format!("k{}", i % 10_000), &i.to_string())
            .unwrap();
    }
    let addr = a.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    let (b, bob) = instance_on("bob", file);
    db.grant(&bob.default_key().unwrap(), Permission::Read)
        .unwrap();
    let rss_before = peak_rss_mib();
    let sync_b = b.enable_sync().unwrap();
    let start = Instant::now();
    let report = sync_b.sync_db(&bob, &addr, &db.id()).unwrap();
    let taken = (report.pulled, start.elapsed().as_secs_f64(), rss_before);
    drop((sync_b, bob, b));
    if let Some(path) = file {
        remove_sqlite_files(path);
    }
    taken
}

/// Where the SQLite catch-up's file goes: the directory argument after `ENTRIES`, else the
/// system's temporary directory.
fn sqlite_file() -> PathBuf {
    let dir = std::env::args_os()
        .nth(2)
        .map_or_else(std::env::temp_dir, PathBuf::from);
    dir.join(format!("mnemo-bench-sync-{}.db", std::process::id()))
}

/// `MNEMO_BENCH_QUICK=1` (for `make bench`): three catch-ups of `entries` (default 5,000),
/// each between two measurements of the floor (the machine's speed drifts, so each
/// catch-up is compared with the floor around it), as one row of the benchmark table: per
/// entry, the median and slowest; the median of the three ratios.
fn quick(entries: usize) {
    let floor_checks = entries.clamp(2_000, 10_000);
    let mut floor = verify_rate(floor_checks);
    let mut runs: Vec<(f64, f64)> = (0..3)
        .map(|_| {
            let (pulled, secs, _) = catch_up(entries);
            let after = verify_rate(floor_checks);
            let around = (floor + after) / 2.0;
            floor = after;
            (secs / pulled as f64, around)
        })
        .collect();
    let mut floors: Vec<f64> = runs.iter().map(|(_, f)| *f).collect();
    floors.sort_by(f64::total_cmp);
    let (median, slowest, ratio) = summary(&mut runs, |(per, floor)| 1.0 / per / floor);
    let note = format!(
        "{ratio:.2}x single-core verify ({:.1}k/s, same run)",
        floors[1] / 1e3
    );
    print_row(
        "memory",
        "sync catch-up, empty peer over loopback",
        entries,
        (median, slowest),
        &note,
    );
    // Into a SQLite file: each catch-up beside one into memory (the machine drifts).
    let file = sqlite_file();
    let mut runs: Vec<(f64, f64)> = (0..3)
        .map(|_| {
            let (pulled, secs, _) = catch_up_into(entries, Some(&file));
            let (in_memory, memory_secs, _) = catch_up(entries);
            (secs / pulled as f64, memory_secs / in_memory as f64)
        })
        .collect();
    let (median, slowest, ratio) = summary(&mut runs, |(file, memory)| memory / file);
    let note = format!("{ratio:.2}x the catch-up into memory (same run)");
    print_row(
        "sqlite",
        "sync catch-up into a file, durable",
        entries,
        (median, slowest),
        &note,
    );
}

/// Of three runs, each (seconds per entry, what it is compared with): the median and the
/// slowest seconds per entry, and the median of the ratios `ratio` gives.
fn summary(runs: &mut [(f64, f64)], ratio: impl Fn(&(f64, f64)) -> f64) -> (f64, f64, f64) {
    let mut ratios: Vec<f64> = runs.iter().map(ratio).collect();
    ratios.sort_by(f64::total_cmp);
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    (runs[1].0, runs[2].0, ratios[1])
}

/// One row of `make bench`'s table: the median and slowest seconds per entry (`times`),
/// the median's rate, and `note`.
fn print_row(storage: &str, what: &str, entries: usize, times: (f64, f64), note: &str) {
    let (median, slowest) = times;
    println!(
        "{:<7} {:<44} {:>8} {:>10} {:>10} {:>10}  {note}",
        storage,
        what,
        entries,
        format!("{:.1} us", median * 1e6),
        format!("{:.1} us", slowest * 1e6),
        format!("{:.1}k/s", 1e-3 / median),
    );
}

fn main() {
    let quick_mode = std::env::var_os("MNEMO_BENCH_QUICK").is_some_and(|v| v == "1");
    let entries: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(if quick_mode { 5_000 } else { 100_000 });
    if quick_mode {
        return quick(entries);
    }

    let verify_rate = verify_rate(20_000);
    let (pulled, elapsed, rss_before) = catch_up(entries);
    let rate = pulled as f64 / elapsed;
    println!("initial sync: {pulled} entries in {elapsed:.2} s = {rate:.0} entries/s");
    println!(
        "floor: Ed25519 verify (one core) = {verify_rate:.0}/s; sync rate = {:.2}x the floor",
        rate / verify_rate
    );
    println!(
        "peak RSS: {:.0} MiB before the sync, {:.0} MiB after",
        rss_before,
        peak_rss_mib()
    );

    // Settings entries against data entries: each settings entry is checked against the
    // settings its parents see; that must not cost more than a data entry's check.
    let pull = |settings: bool| -> f64 {
        let (src, owner) = instance("owner");
        let db = owner.create_db("kinds").unwrap();
        for i in 0..600 {
            if settings {
                let key = PrivateKey::generate().unwrap();
                db.grant(&key.public_key(), Permission::Read).unwrap();
            } else {
                db.set("s", &format!("k{i}"), "1").unwrap();
            }
        }
        let addr = src.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
        let (dst, reader) = instance("reader");
        db.grant(&reader.default_key().unwrap(), Permission::Read)
            .unwrap();
        let start = Instant::now();
        dst.enable_sync()
            .unwrap()
            .sync_db(&reader, &addr, &db.id())
            .unwrap();
        start.elapsed().as_secs_f64()
    };
    let (data, settings) = (pull(false), pull(true));
    println!(
        "pull 600 data entries: {:.0} ms; 600 settings entries: {:.0} ms ({:.2}x)",
        data * 1e3,
        settings * 1e3,
        settings / data
    );

    // Latency: A tracks B (pushes on commit); B's subscriber hears each change.
    let (c, carol) = instance("carol");
    let shared = carol.create_db("latency").unwrap();
    let (d, dave) = instance("dave");
    shared
        .grant(&dave.default_key().unwrap(), Permission::Write)
        .unwrap();
    let addr_d = d.enable_sync().unwrap().listen("127.0.0.1:0").unwrap();
    // D pulls the database first (a listener stores only what its users asked for).
    let sync_c = c.enable_sync().unwrap();
    let addr_c = sync_c.listen("127.0.0.1:0").unwrap();
    d.sync()
        .unwrap()
        .sync_db(&dave, &addr_c, &shared.id())
        .unwrap();
    sync_c.track(&carol, &addr_d, &shared.id()).unwrap();
    let copy = dave.load_db(&shared.id()).unwrap();
    let (median, p99) = latency(&shared, &copy);
    println!(
        "commit on the tracking side to callback on the listener (push on commit): median {:.2} ms, p99 {:.2} ms",
        median * 1e3,
        p99 * 1e3
    );
    let (median, p99) = latency(&copy, &shared);
    println!(
        "commit on the listener to callback on the tracking side (watch): median {:.2} ms, p99 {:.2} ms",
        median * 1e3,
        p99 * 1e3
    );
}

/// Commits 200 times on `from` and times each until `to`'s subscriber hears it: the median
/// and 99th percentile, in seconds.
fn latency(from: &mnemo::Database, to: &mnemo::Database) -> (f64, f64) {
    let (tx, rx) = channel();
    let _sub = to
        .subscribe(Box::new(move |change| {
            let _ = tx.send(change.entry);
        }))
        .unwrap();
    let mut latencies = Vec::new();
    for i in 0..200 {
        let start = Instant::now();
        let id = from.set("s", "k", &i.to_string()).unwrap();
        loop {
            let heard = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the change reached the peer");
            if heard == id {
                break;
            }
        }
        latencies.push(start.elapsed());
    }
    latencies.sort();
    (
        percentile(&latencies, 0.5).as_secs_f64(),
        percentile(&latencies, 0.99).as_secs_f64(),
    )
}
