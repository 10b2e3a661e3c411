//! Engine benchmarks: commit and read cost against history length, and the crypto floor
//! of a commit (one Ed25519 signature plus one SHA-256 of the entry), in the same run.
//!
//! Run: `cargo bench --bench engine`. Compare `commit/after_N` with each other (flatness)
//! and with `floor/sign_plus_hash` (the ratio the issue asks for).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use mnemo::backend::MemoryBackend;
use mnemo::crypto::PrivateKey;
use mnemo::entry::EntryId;
use mnemo::{Database, Instance, User};

/// A database with `entries` single-key commits already in it (over 1,000 distinct keys).
fn database_with(entries: usize) -> (Instance, User, Database) {
    let inst = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
    inst.create_user("bench", None).unwrap();
    let user = inst.login("bench", None).unwrap();
    let db = user.create_db("bench").unwrap();
    for i in 0..entries {
        db.set("s", &format!("k{}", i % 1000), &i.to_string())
            .unwrap();
    }
    (inst, user, db)
}

fn floor(c: &mut Criterion) {
    let key = PrivateKey::generate().unwrap();
    // About the size of a single-key commit's signed bytes.
    let message = vec![7u8; 220];
    c.bench_function("floor/sign_plus_hash", |b| {
        b.iter(|| {
            let sig = key.sign(black_box(&message));
            black_box(EntryId::of_bytes(&[&message[..], &sig[..]].concat()))
        })
    });
}

fn commits(c: &mut Criterion) {
    for entries in [0usize, 1_000, 100_000] {
        let (_inst, _user, db) = database_with(entries);
        let mut n = 0u64;
        c.bench_function(&format!("commit/after_{entries}"), |b| {
            b.iter(|| {
                n += 1;
                db.set("s", "hot", &n.to_string()).unwrap()
            })
        });
    }
}

fn reads(c: &mut Criterion) {
    for entries in [100usize, 100_000] {
        let (_inst, _user, db) = database_with(entries);
        c.bench_function(&format!("read/after_{entries}"), |b| {
            b.iter(|| db.get("s", black_box("k42")).unwrap())
        });
    }
}

fn transactions(c: &mut Criterion) {
    let (_inst, _user, db) = database_with(0);
    c.bench_function("transaction/100_ops", |b| {
        b.iter_batched(
            || (),
            |_| {
                let mut txn = db.begin();
                for i in 0..100 {
                    txn.set("s", &format!("t{i}"), "1").unwrap();
                }
                txn.commit().unwrap()
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = floor, commits, reads, transactions
}
criterion_main!(benches);
