//! Floors for the C ABI benchmark (`benches/abi_bench.c`): what the cheapest possible
//! version of each operation costs on this machine, measured with mnemo's own crypto.
//!
//! - `sign_ns`: one Ed25519 signature of 220 bytes (about a single-key commit's signed bytes).
//! - `verify_ns`: one Ed25519 verification of that signature.
//! - `sign_hash_ns`: one signature plus one SHA-256 of the signed bytes: the crypto a
//!   single-key commit cannot avoid (the floor of a commit on the memory backend).
//! - `argon2_ns`: one Argon2id derivation with the instance default (`KdfParams::MINIMUM`,
//!   19 MiB, t=2, p=1), warm (after warm-up calls): the floor of a password login.
//!   `argon2_first_call_ns`: the first call in the process (fresh memory).
//! - `write_fsync_ns`: one 4 KiB write appended to a file in DIR, then `fsync`: the floor of
//!   a durable commit on the SQLite backend (WAL, `synchronous=FULL`; the bundled SQLite
//!   has no `HAVE_FDATASYNC`, so it calls `fsync`). The file grows by 4 KiB each time.
//! - `overwrite_fsync_ns`: the same, overwriting blocks already in the file (it does not
//!   grow), as SQLite's WAL does after a checkpoint wraps it around.
//!
//! Run: `cargo run --release --example bench_floors -- [DIR]` (DIR: where the fsync file
//! goes, default the system temp dir; use the directory the SQLite bench writes to).
//! `MNEMO_BENCH_QUICK=1` takes fewer samples.
//!
//! Output: one machine-readable line per floor, `floor <name> <median ns>`, for C to parse,
//! and a comment line (starting with `#`) per floor with the sample count and p99.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mnemo::crypto::password::derive_key;
use mnemo::crypto::{KdfParams, PrivateKey};
use mnemo::entry::EntryId;

/// Times `op` once per sample, for at least `min_samples` samples and until `min_time` has
/// passed (at most `max_samples`). Returns the sorted per-call times in nanoseconds.
fn sample(
    min_samples: usize,
    max_samples: usize,
    min_time: Duration,
    mut op: impl FnMut(),
) -> Vec<u64> {
    let mut out = Vec::with_capacity(min_samples);
    let start = Instant::now();
    while out.len() < max_samples && (out.len() < min_samples || start.elapsed() < min_time) {
        let t = Instant::now();
        op();
        out.push(t.elapsed().as_nanos() as u64);
    }
    out.sort_unstable();
    out
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn report(name: &str, sorted: &[u64]) {
    println!("floor {name} {}", quantile(sorted, 0.5));
    println!(
        "# {name}: n={} median={} ns p99={} ns min={} ns",
        sorted.len(),
        quantile(sorted, 0.5),
        quantile(sorted, 0.99),
        sorted[0]
    );
}

fn main() {
    let quick = std::env::var("MNEMO_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let (fast_n, slow_n, warm_n, fsync_n) = if quick {
        (500, 5, 12, 100)
    } else {
        (5000, 15, 12, 500)
    };
    let min_time = Duration::from_millis(if quick { 100 } else { 500 });

    let key = PrivateKey::generate().expect("generate an Ed25519 key");
    let public = key.public_key();
    let message = vec![7u8; 220];

    // Warm up caches and CPU frequency.
    for _ in 0..200 {
        black_box(key.sign(black_box(&message)));
    }

    let signs = sample(fast_n, 10 * fast_n, min_time, || {
        black_box(key.sign(black_box(&message)));
    });
    report("sign_ns", &signs);

    let signature = key.sign(&message);
    let verifies = sample(fast_n, 10 * fast_n, min_time, || {
        public
            .verify(black_box(&message), black_box(&signature))
            .expect("signature verifies");
    });
    report("verify_ns", &verifies);

    // A commit signs its bytes, appends the signature, and hashes the result for its id.
    let mut signed = Vec::with_capacity(message.len() + 64);
    let sign_hashes = sample(fast_n, 10 * fast_n, min_time, || {
        let sig = key.sign(black_box(&message));
        signed.clear();
        signed.extend_from_slice(&message);
        signed.extend_from_slice(&sig);
        black_box(EntryId::of_bytes(&signed));
    });
    report("sign_hash_ns", &sign_hashes);

    let hashes = sample(fast_n, 10 * fast_n, min_time, || {
        black_box(EntryId::of_bytes(black_box(&signed)));
    });
    report("sha256_284b_ns", &hashes);

    // Argon2id allocates its 19 MiB block array (zeroed, 64-byte aligned) on every call. In
    // a new process the first calls are slower (1.5-2x here): glibc hands out fresh pages
    // (RSS grows ~19 MiB a call, ~4,900 page faults) for several calls before it reuses
    // freed memory. A long-lived instance logs users in at the warm speed, so the floor is
    // the median after 12 warm-up calls. The first (cold) call is reported too.
    let salt = [9u8; 16];
    let argon_cold = sample(1, 1, Duration::ZERO, || {
        black_box(derive_key(b"correct horse", &salt, KdfParams::MINIMUM).expect("Argon2id"));
    });
    for _ in 0..warm_n {
        black_box(derive_key(b"correct horse", &salt, KdfParams::MINIMUM).expect("Argon2id"));
    }
    let argons = sample(slow_n, slow_n, Duration::ZERO, || {
        black_box(derive_key(b"correct horse", &salt, KdfParams::MINIMUM).expect("Argon2id"));
    });
    report("argon2_ns", &argons);
    report("argon2_first_call_ns", &argon_cold);

    let path = dir.join(format!("mnemo-bench-fsync-{}.tmp", std::process::id()));
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let block = [0x5au8; 4096];
    file.write_all(&block).expect("write");
    file.sync_all().expect("fsync");
    let fsyncs = sample(fsync_n, fsync_n, Duration::ZERO, || {
        file.write_all(&block).expect("write 4 KiB");
        file.sync_all().expect("fsync");
    });
    report("write_fsync_ns", &fsyncs);

    // The same into blocks already on disk (the file does not grow): what SQLite's WAL does
    // once it wraps around after a checkpoint.
    let region = 256u64;
    file.sync_all().expect("fsync");
    let mut next = 0u64;
    let overwrites = sample(fsync_n, fsync_n, Duration::ZERO, || {
        file.write_all_at(&block, (next % region) * 4096)
            .expect("overwrite 4 KiB");
        next += 1;
        file.sync_all().expect("fsync");
    });
    drop(file);
    std::fs::remove_file(&path).expect("remove the fsync file");
    report("overwrite_fsync_ns", &overwrites);
    println!("# write_fsync_dir: {}", dir.display());
}
