//! Idle databases: an instance keeps only so many in memory, and never drops one that
//! something still needs (a handle, a subscription, an entry waiting for its parents).

use std::sync::mpsc::{channel, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use mnemo::backend::MemoryBackend;
use mnemo::database::{Change, Subscription};
use mnemo::entry::EntryId;
use mnemo::instance::InstanceOptions;
use mnemo::{Database, Instance, User};

use crate::support::Rng;

const IDLE_KEPT: usize = 4;
const LONG: Duration = Duration::from_secs(10);

/// An in-memory instance keeping `IDLE_KEPT` idle databases, with a user logged in.
fn keeping_few() -> (Instance, User) {
    let inst = keeping_few_instance();
    inst.create_user("ann", None).unwrap();
    let user = inst.login("ann", None).unwrap();
    (inst, user)
}

fn keeping_few_instance() -> Instance {
    let options = InstanceOptions {
        idle_databases_kept: Some(IDLE_KEPT),
        ..InstanceOptions::default()
    };
    Instance::open_with(Arc::new(MemoryBackend::new()), options).unwrap()
}

/// Creates `count` databases through `user`, each with one value, dropping every handle.
fn create_many(user: &User, count: usize) -> Vec<EntryId> {
    (0..count)
        .map(|i| {
            let db = user.create_db(&format!("other{i}")).unwrap();
            db.set("s", "k", &i.to_string()).unwrap();
            db.id()
        })
        .collect()
}

#[test]
fn an_instance_keeps_few_idle_databases_and_reads_the_dropped_ones_again() {
    let (inst, user) = keeping_few();
    let before = inst.databases_in_memory();
    let ids = create_many(&user, 40);
    let held = inst.databases_in_memory();
    assert!(
        held <= before + IDLE_KEPT + 1,
        "{before} before, {held} after"
    );
    for (i, id) in ids.iter().enumerate() {
        let db = user.load_db(id).unwrap();
        assert_eq!(db.get("s", "k").unwrap(), i.to_string());
        db.set("s", "k", "\"again\"").unwrap();
    }
    assert_eq!(user.list_dbs().unwrap().len(), 40);
    assert!(inst.databases_in_memory() <= before + IDLE_KEPT + 1);
}

/// Subscribes to `db` with a callback that reports each change's entry.
fn listening(db: &Database) -> (Subscription, Receiver<EntryId>) {
    let (heard_tx, heard) = channel();
    let heard_tx = Mutex::new(heard_tx);
    let sub = db
        .subscribe(Box::new(move |c: &Change| {
            let _ = heard_tx.lock().unwrap().send(c.entry);
        }))
        .unwrap();
    (sub, heard)
}

/// A subscription through one handle hears a commit through another: true only if both
/// handles share the database's core.
fn hears_each_other(first: &Database, second: &Database, value: &str) {
    let (_sub, heard) = listening(second);
    let id = first.set("s", "k", value).unwrap();
    assert_eq!(heard.recv_timeout(LONG), Ok(id));
}

#[test]
fn a_database_with_a_handle_is_kept() {
    let (_inst, user) = keeping_few();
    let kept = user.create_db("kept").unwrap();
    create_many(&user, 20);
    let again = user.load_db(&kept.id()).unwrap();
    hears_each_other(&kept, &again, "1");
}

#[test]
fn a_database_with_a_subscription_is_kept() {
    let (_inst, user) = keeping_few();
    let db = user.create_db("watched").unwrap();
    let id = db.id();
    let (_sub, heard) = listening(&db);
    drop(db);
    create_many(&user, 20);
    let written = user.load_db(&id).unwrap().set("s", "k", "1").unwrap();
    assert_eq!(heard.recv_timeout(LONG), Ok(written));
}

#[test]
fn an_entry_waiting_for_its_parent_is_kept() {
    let (_owner_inst, owner) = keeping_few();
    let db = owner.create_db("shared").unwrap();
    let parent = db.set("s", "k", "1").unwrap();
    let child = db.set("s", "k", "2").unwrap();
    let others: Vec<_> = (0..20)
        .map(|i| owner.create_db(&format!("other{i}")).unwrap())
        .collect();

    let relay = keeping_few_instance();
    let before = relay.databases_in_memory();
    relay
        .receive_entry(&db.entry_bytes(&db.id()).unwrap())
        .unwrap();
    let got = relay
        .receive_entry(&db.entry_bytes(&child).unwrap())
        .unwrap();
    assert!(got.pending, "{got:?}");
    // Databases the relay has not seen, arriving root first: a core each.
    for other in &others {
        relay
            .receive_entry(&other.entry_bytes(&other.id()).unwrap())
            .unwrap();
    }
    let got = relay
        .receive_entry(&db.entry_bytes(&parent).unwrap())
        .unwrap();
    assert_eq!(got.applied, vec![parent, child]);
    let held = relay.databases_in_memory();
    assert!(
        held <= before + IDLE_KEPT + 1,
        "{before} before, {held} after"
    );
}

#[test]
fn threads_opening_and_dropping_many_databases_lose_nothing() {
    let (inst, user) = keeping_few();
    let ids = create_many(&user, 12);
    let (_sub, heard) = listening(&user.load_db(&ids[0]).unwrap());
    let before = inst.databases_in_memory();
    let user = Arc::new(user);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (user, ids) = (user.clone(), ids.clone());
            thread::spawn(move || {
                let mut rng = Rng::new(t);
                (0..150)
                    .map(|n| {
                        let id = ids[rng.below(ids.len())];
                        let key = format!("t{t}-{n}");
                        user.load_db(&id).unwrap().set("w", &key, "1").unwrap();
                        (id, key)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let written: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    for (id, key) in &written {
        assert_eq!(user.load_db(id).unwrap().get("w", key).unwrap(), "1");
    }
    // Every commit to the watched database was announced, through whichever handle.
    for _ in written.iter().filter(|(id, _)| *id == ids[0]) {
        heard.recv_timeout(LONG).unwrap();
    }
    let watched = user.load_db(&ids[0]).unwrap();
    watched.flush_notifications(LONG).unwrap();
    assert_eq!(heard.try_recv(), Err(TryRecvError::Empty));
    assert!(inst.databases_in_memory() <= before + IDLE_KEPT);
}

/// Lowering the bound on an instance already holding many idle databases drops them down to
/// it at the next database opened; an unknown name or a value out of bounds changes nothing.
#[test]
fn a_lowered_bound_applies_from_the_next_database_opened() {
    let inst = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
    inst.create_user("ann", None).unwrap();
    let user = inst.login("ann", None).unwrap();
    let before = inst.databases_in_memory();
    create_many(&user, 40);
    assert_eq!(inst.databases_in_memory(), before + 40);

    let refused = inst.set_limits_by_name(&[("idle_databases_kept", 4), ("nope", 1)]);
    assert!(refused.is_err());
    assert!(inst
        .set_limits_by_name(&[("queued_notifications", 0)])
        .is_err());
    assert_eq!(inst.limits().idle_databases, 256);

    let limits = inst
        .set_limits_by_name(&[("idle_databases_kept", IDLE_KEPT as u64)])
        .unwrap();
    assert_eq!(limits.idle_databases, IDLE_KEPT);
    assert_eq!(inst.limits().idle_databases, IDLE_KEPT);
    create_many(&user, 1);
    let held = inst.databases_in_memory();
    assert!(
        held <= before + IDLE_KEPT + 1,
        "{before} before, {held} after"
    );
}

/// Options out of bounds are refused at open.
#[test]
fn limits_out_of_bounds_are_refused_at_open() {
    for options in [
        InstanceOptions {
            queued_notifications: Some(0),
            ..InstanceOptions::default()
        },
        InstanceOptions {
            idle_databases_kept: Some(usize::MAX),
            ..InstanceOptions::default()
        },
    ] {
        let opened = Instance::open_with(Arc::new(MemoryBackend::new()), options);
        assert!(opened.is_err());
    }
}
