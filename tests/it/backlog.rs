//! Callbacks that fall behind: the notifications queued for them are bounded, so changes
//! to a database with callbacks wait for them (for a while) instead of queuing without end.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mnemo::backend::MemoryBackend;
use mnemo::database::{Change, Permission, NOTIFICATION_ROOM_WAIT};
use mnemo::entry::EntryId;
use mnemo::instance::InstanceOptions;
use mnemo::{Database, Instance, User};

const LONG: Duration = Duration::from_secs(10);

/// An in-memory instance whose callbacks may fall `queued` notifications behind, with a
/// passwordless user `name` logged in.
fn queueing(queued: usize, name: &str) -> (Instance, User) {
    let options = InstanceOptions {
        queued_notifications: Some(queued),
        ..InstanceOptions::default()
    };
    let inst = Instance::open_with(Arc::new(MemoryBackend::new()), options).unwrap();
    inst.create_user(name, None).unwrap();
    let user = inst.login(name, None).unwrap();
    (inst, user)
}

/// A gate callbacks wait at until it opens.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn pass(&self) {
        let (open, moved) = &*self.0;
        let guard = open.lock().unwrap();
        drop(moved.wait_while(guard, |open| !*open).unwrap());
    }

    fn open(&self) {
        let (open, moved) = &*self.0;
        *open.lock().unwrap() = true;
        moved.notify_all();
    }

    /// Opens the gate when dropped: a test that fails with the callback held at it then
    /// ends instead of waiting for the notification thread forever.
    fn opened_at_the_end(&self) -> impl Drop {
        struct Opener(Gate);
        impl Drop for Opener {
            fn drop(&mut self) {
                self.0.open();
            }
        }
        Opener(self.clone())
    }
}

/// Subscribes to `db` with a callback that waits at `gate`, then reports the change.
fn gated(db: &Database, gate: &Gate) -> (mnemo::database::Subscription, Receiver<EntryId>) {
    let (heard_tx, heard) = channel();
    let heard_tx = Mutex::new(heard_tx);
    let gate = gate.clone();
    let sub = db
        .subscribe(Box::new(move |c: &Change| {
            gate.pass();
            let _ = heard_tx.lock().unwrap().send(c.entry);
        }))
        .unwrap();
    (sub, heard)
}

/// Waits until `count` reaches `at_least` (the test fails after a long while).
fn reaches(count: &AtomicUsize, at_least: usize) {
    let deadline = Instant::now() + 3 * LONG;
    while count.load(Ordering::Acquire) < at_least {
        assert!(Instant::now() < deadline, "stuck at {count:?}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until `count` reaches `at`, then checks that it stays there a moment: the change
/// after it waits for room.
fn stops_at(count: &AtomicUsize, at: usize) {
    reaches(count, at);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(count.load(Ordering::Acquire), at);
}

/// Takes a notification for each of `ids`, and checks they came in that order.
fn heard_in_order(heard: &Receiver<EntryId>, ids: &[EntryId]) {
    let got: Vec<_> = ids
        .iter()
        .map(|_| heard.recv_timeout(LONG).unwrap())
        .collect();
    assert_eq!(got, ids);
}

#[test]
fn commits_wait_for_callbacks_that_fall_behind_and_go_on_after_a_while() {
    let (_inst, user) = queueing(4, "ann");
    let db = user.create_db("d").unwrap();
    let gate = Gate::default();
    let (_sub, heard) = gated(&db, &gate);
    let _opener = gate.opened_at_the_end();
    let made = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (db, made) = (db.clone(), made.clone());
        thread::spawn(move || {
            (0..8)
                .map(|i| {
                    let id = db.set("s", "k", &i.to_string()).unwrap();
                    made.fetch_add(1, Ordering::AcqRel);
                    id
                })
                .collect::<Vec<_>>()
        })
    };
    // The callback holds the first change at the gate; three more queue behind it, and
    // the fifth commit waits for room.
    stops_at(&made, 4);
    // A callback stuck for good slows commits down; it does not stop them.
    let waiting = Instant::now();
    reaches(&made, 5);
    assert!(waiting.elapsed() >= NOTIFICATION_ROOM_WAIT / 2);
    gate.open();
    heard_in_order(&heard, &writer.join().unwrap());
}

#[test]
fn entries_from_elsewhere_wait_for_callbacks_that_fall_behind() {
    let (_origin, owner) = queueing(4, "owner");
    let db = owner.create_db("d").unwrap();
    let (peer, reader) = queueing(2, "reader");
    let grant = db
        .grant(&reader.default_key().unwrap(), Permission::Read)
        .unwrap();
    for id in [db.id(), grant] {
        peer.receive_entry(&db.entry_bytes(&id).unwrap()).unwrap();
    }
    let gate = Gate::default();
    let (_sub, heard) = gated(&reader.load_db(&db.id()).unwrap(), &gate);
    let _opener = gate.opened_at_the_end();
    let ids: Vec<_> = (0..4)
        .map(|i| db.set("s", "k", &i.to_string()).unwrap())
        .collect();
    let taken = Arc::new(AtomicUsize::new(0));
    let receiver = {
        let (ids, taken) = (ids.clone(), taken.clone());
        let bytes: Vec<_> = ids.iter().map(|id| db.entry_bytes(id).unwrap()).collect();
        thread::spawn(move || {
            for entry in bytes {
                peer.receive_entry(&entry).unwrap();
                taken.fetch_add(1, Ordering::AcqRel);
            }
        })
    };
    stops_at(&taken, 2);
    gate.open();
    receiver.join().unwrap();
    heard_in_order(&heard, &ids);
}

#[test]
fn a_callback_that_commits_does_not_wait_for_itself() {
    let (_inst, user) = queueing(1, "ann");
    let db = user.create_db("d").unwrap();
    let (heard_tx, heard) = channel();
    let heard_tx = Mutex::new(heard_tx);
    let inner = db.clone();
    let first = AtomicBool::new(true);
    let _sub = db
        .subscribe(Box::new(move |c: &Change| {
            if first.swap(false, Ordering::AcqRel) {
                for i in 0..3 {
                    inner.set("s", "inner", &i.to_string()).unwrap();
                }
            }
            let _ = heard_tx.lock().unwrap().send(c.entry);
        }))
        .unwrap();
    let outer = db.set("s", "k", "1").unwrap();
    // Waiting for itself, each inner commit would hold the callback for a long while.
    db.flush_notifications(NOTIFICATION_ROOM_WAIT / 2).unwrap();
    assert_eq!(heard.recv_timeout(LONG), Ok(outer));
    for _ in 0..3 {
        heard.recv_timeout(LONG).unwrap();
    }
}
