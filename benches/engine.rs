//! Engine benchmarks: commit and read cost against history length, and the crypto floor
//! of a commit (one Ed25519 signature plus one SHA-256 of the entry), in the same run.
//!
//! Run: `cargo bench --bench engine`. Compare `commit/after_N` with each other (flatness)
//! and with `floor/sign_plus_hash` (the ratio the issue asks for). `arrival/*` is the cost
//! of a revocation arriving after N entries of its target that it had not seen (the state
//! is worked out again from every entry), against a data entry arriving at the same point;
//! `verify/after_N` is `Database::verify` over N entries. `decode/256_*` decodes and verifies
//! a batch of 256 entries from elsewhere one by one and with `entry::decode_all` (on up to
//! `MAX_DECODE_THREADS` cores), as sync does with each page it receives.
//! `commit/300_grants_one_discarded` against `commit/300_grants` is what a settings change
//! discarded somewhere in a database's history costs each commit.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use mnemo::backend::MemoryBackend;
use mnemo::crypto::PrivateKey;
use mnemo::database::settings::{auth_key, auth_value};
use mnemo::database::{Grant, Permission};
use mnemo::entry::{Entry, EntryContent, EntryId, Op, Ops};
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

/// A commit in a database holding `grants` read grants, and (if `discarded`) a settings
/// change discarded on arrival: an admin's grant made offline while the owner revoked the
/// admin. A commit there checks that its author's permission does not come from it.
fn commits_beside_a_discarded_change(c: &mut Criterion) {
    for (grants, discarded) in [(300, false), (300, true)] {
        let (inst, _user, db) = database_with(0);
        let admin = PrivateKey::generate().unwrap();
        db.grant(&admin.public_key(), Permission::Admin).unwrap();
        let mut ops = Ops::new();
        ops.entry("_settings".into()).or_default().insert(
            auth_key(&PrivateKey::generate().unwrap().public_key()),
            Op::Set(auth_value(Grant::active(Permission::Write, None))),
        );
        let offline = EntryContent {
            db: Some(db.id()),
            parents: db.tips().unwrap(),
            height: db.height().unwrap() + 1,
            ops,
            author: admin.public_key(),
        }
        .sign(&admin)
        .unwrap();
        if discarded {
            db.revoke(&admin.public_key()).unwrap();
            let received = inst.receive_entry(offline.bytes()).unwrap();
            assert_eq!(received.discarded, vec![offline.id()]);
        }
        for _ in 0..grants {
            let reader = PrivateKey::generate().unwrap().public_key();
            db.grant(&reader, Permission::Read).unwrap();
        }
        let mut n = 0u64;
        let name = match discarded {
            true => format!("commit/{grants}_grants_one_discarded"),
            false => format!("commit/{grants}_grants"),
        };
        c.bench_function(&name, |b| {
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

/// Operations setting `key` of `store` to `json`.
fn set(store: &str, key: &str, json: &str) -> Ops {
    let mut ops = Ops::new();
    ops.entry(store.into())
        .or_default()
        .insert(key.into(), Op::Set(json.into()));
    ops
}

/// An entry of `ops` signed by `author` on `parents`.
fn signed(author: &PrivateKey, db: Option<EntryId>, parents: &[&Entry], ops: Ops) -> Entry {
    EntryContent {
        db,
        parents: parents.iter().map(|p| p.id()).collect(),
        height: parents
            .iter()
            .map(|p| p.content().height + 1)
            .max()
            .unwrap_or(0),
        ops,
        author: author.public_key(),
    }
    .sign(author)
    .unwrap()
}

/// A database (root, a write grant, then `unseen` commits by the writer) and two entries
/// on the grant, both concurrent with the writer's commits: the writer's revocation, and
/// a data entry by the creator.
fn history(unseen: usize) -> (Vec<Entry>, Entry, Entry) {
    let (creator, writer) = (
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
    );
    let grant_of = |key: &PrivateKey, grant: Grant| {
        set(
            "_settings",
            &auth_key(&key.public_key()),
            &auth_value(grant),
        )
    };
    let mut root_ops = grant_of(&creator, Grant::active(Permission::Admin, Some(0)));
    root_ops
        .get_mut("_settings")
        .unwrap()
        .insert("name".into(), Op::Set("\"bench\"".into()));
    let root = signed(&creator, None, &[], root_ops);
    let db = Some(root.id());
    let write = Grant::active(Permission::Write, None);
    let grant = signed(&creator, db, &[&root], grant_of(&writer, write));
    let mut entries = vec![root, grant.clone()];
    for i in 0..unseen {
        let last = entries.last().unwrap().clone();
        entries.push(signed(
            &writer,
            db,
            &[&last],
            set("s", &format!("k{}", i % 1000), "1"),
        ));
    }
    let revocation = signed(&creator, db, &[&grant], grant_of(&writer, write.revoked()));
    let data = signed(&creator, db, &[&grant], set("s", "other", "2"));
    (entries, revocation, data)
}

fn arrivals(c: &mut Criterion) {
    for unseen in [1_000usize, 10_000] {
        let (entries, revocation, data) = history(unseen);
        let replica = || {
            let inst = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
            for e in &entries {
                inst.receive_entry(e.bytes()).unwrap();
            }
            inst
        };
        for (name, arriving) in [("revocation", &revocation), ("data", &data)] {
            c.bench_function(&format!("arrival/{name}_after_{unseen}_unseen"), |b| {
                b.iter_batched(
                    replica,
                    // The instance is returned so that dropping it is not timed.
                    |inst| {
                        inst.receive_entry(arriving.bytes()).unwrap();
                        inst
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
}

fn verify(c: &mut Criterion) {
    for entries in [1_000usize, 10_000] {
        let (_inst, _user, db) = database_with(entries);
        c.bench_function(&format!("verify/after_{entries}"), |b| {
            b.iter(|| db.verify().unwrap())
        });
    }
}

fn decoding(c: &mut Criterion) {
    let author = PrivateKey::generate().unwrap();
    let root = signed(&author, None, &[], set("s", "k", "0"));
    let batch: Vec<Vec<u8>> = (0..256)
        .map(|i| {
            let ops = set("s", &format!("k{i}"), &i.to_string());
            signed(&author, Some(root.id()), &[&root], ops)
                .bytes()
                .to_vec()
        })
        .collect();
    c.bench_function("decode/256_one_by_one", |b| {
        b.iter(|| {
            for bytes in &batch {
                black_box(Entry::decode(bytes).unwrap());
            }
        })
    });
    c.bench_function("decode/256_decode_all", |b| {
        // The batch is moved in (each entry keeps its bytes): its copy is made outside the
        // timing.
        b.iter_batched(
            || batch.clone(),
            |batch| black_box(mnemo::entry::decode_all(batch)),
            BatchSize::SmallInput,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = floor, commits, commits_beside_a_discarded_change, reads, transactions, decoding
}
criterion_group! {
    name = whole_history;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = arrivals, verify
}
criterion_main!(benches, whole_history);
