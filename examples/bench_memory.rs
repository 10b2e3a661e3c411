//! Memory of the in-memory backend: resident memory added by storing N single-key commits,
//! as a multiple of the encoded size of those entries (the bytes that are the data).
//!
//! Run: `cargo run --release --example bench_memory [ENTRIES]` (default 100000).

use std::sync::Arc;

use mnemo::backend::MemoryBackend;
use mnemo::Instance;

/// Resident memory now, from /proc/self/statm (pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let entries: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let inst = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
    inst.create_user("u", None).unwrap();
    let user = inst.login("u", None).unwrap();
    let db = user.create_db("d").unwrap();
    let before = rss_bytes();
    let mut encoded = 0u64;
    for i in 0..entries {
        let id = db.set("s", &format!("k{i}"), &i.to_string()).unwrap();
        if i % 1000 == 0 {
            encoded += db.entry_bytes(&id).unwrap().len() as u64 * 1000;
        }
    }
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "{entries} single-key commits: encoded ~{:.1} MiB, resident memory grew {:.1} MiB = {:.2}x the encoded size",
        encoded as f64 / 1048576.0,
        grown as f64 / 1048576.0,
        grown as f64 / encoded as f64
    );
}
