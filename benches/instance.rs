//! Instance and account benchmarks: opening an instance that holds 1,000 users and 1,000
//! databases versus an empty one (must be flat: opening reads no directory), passwordless
//! login, database creation, and a password login as a multiple of one Argon2id hash with
//! the same parameters, measured in the same run.
//!
//! Run: `cargo bench --bench instance`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use mnemo::backend::SqliteBackend;
use mnemo::crypto::{password, KdfParams};
use mnemo::Instance;

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mnemo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn open(path: &Path) -> Instance {
    Instance::open(Arc::new(SqliteBackend::open(path).unwrap())).unwrap()
}

fn opening(c: &mut Criterion) {
    let empty = temp_file("empty.db");
    drop(open(&empty));
    let full = temp_file("full.db");
    {
        let inst = open(&full);
        for u in 0..1000 {
            inst.create_user(&format!("user{u}"), None).unwrap();
        }
        let user = inst.login("user0", None).unwrap();
        for d in 0..1000 {
            user.create_db(&format!("db{d}")).unwrap();
        }
    }
    c.bench_function("open/sqlite_empty", |b| b.iter(|| black_box(open(&empty))));
    c.bench_function("open/sqlite_1000_users_1000_dbs", |b| {
        b.iter(|| black_box(open(&full)))
    });
}

fn accounts(c: &mut Criterion) {
    let inst = Instance::open(Arc::new(mnemo::backend::MemoryBackend::new())).unwrap();
    inst.create_user("nopw", None).unwrap();
    inst.create_user("pw", Some("a password")).unwrap();
    c.bench_function("login/passwordless", |b| {
        b.iter(|| black_box(inst.login("nopw", None).unwrap()))
    });
    let user = inst.login("nopw", None).unwrap();
    let mut n = 0;
    c.bench_function("create_db", |b| {
        b.iter(|| {
            n += 1;
            black_box(user.create_db(&format!("d{n}")).unwrap())
        })
    });
    let params = inst.kdf_params();
    assert_eq!(params, KdfParams::MINIMUM);
    let mut slow = c.benchmark_group("argon2id");
    slow.sample_size(20);
    slow.bench_function("floor/one_hash", |b| {
        b.iter(|| black_box(password::derive_key(b"a password", &[7u8; 16], params).unwrap()))
    });
    slow.bench_function("login/password", |b| {
        b.iter(|| black_box(inst.login("pw", Some("a password")).unwrap()))
    });
    slow.bench_function("login/wrong_password", |b| {
        b.iter(|| black_box(inst.login("pw", Some("wrong")).is_err()))
    });
    slow.bench_function("login/unknown_user", |b| {
        b.iter(|| black_box(inst.login("nobody", Some("x")).is_err()))
    });
    slow.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = opening, accounts
}
criterion_main!(benches);
