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

/// A thread whose waits for room end when it is told to stop (as a sync track's thread is,
/// so that stopping it from inside a callback it waits for returns at once): before, it
/// waited out [`NOTIFICATION_ROOM_WAIT`] for each entry it had left, and `untrack` called
/// from a callback with a full queue took 10 s per entry (an audit: 199 s for 20).
#[test]
fn a_wait_for_room_ends_once_its_thread_is_told_to_stop() {
    let (_inst, user) = queueing(1, "ann");
    let db = user.create_db("d").unwrap();
    let gate = Gate::default();
    let (_sub, heard) = gated(&db, &gate);
    let _opener = gate.opened_at_the_end();
    let first = db.set("s", "k", "1").unwrap();
    let (stop, made) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let writer = {
        let (db, stop, made) = (db.clone(), stop.clone(), made.clone());
        thread::spawn(move || {
            mnemo::database::end_waits_for_room_when(stop);
            let id = db.set("s", "k", "2").unwrap();
            made.fetch_add(1, Ordering::AcqRel);
            id
        })
    };
    stops_at(&made, 0);
    let stopped = Instant::now();
    stop.store(true, Ordering::Release);
    reaches(&made, 1);
    assert!(stopped.elapsed() < NOTIFICATION_ROOM_WAIT / 2);
    gate.open();
    heard_in_order(&heard, &[first, writer.join().unwrap()]);
}

/// A callback's commit to another instance's database does not wait for that instance's
/// callbacks: two instances' callbacks writing to each other's databases waited 10 s for
/// each other at every commit (an audit: 40 s for four round trips).
#[test]
fn a_callback_commits_to_another_instance_without_waiting_for_its_callbacks() {
    let (_a, ann) = queueing(1, "ann");
    let (_b, bob) = queueing(1, "bob");
    let (db_a, db_b) = (ann.create_db("a").unwrap(), bob.create_db("b").unwrap());
    let gate = Gate::default();
    let (_sub_b, heard_b) = gated(&db_b, &gate);
    let _opener = gate.opened_at_the_end();
    let held = db_b.set("s", "held", "1").unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    let (sent_tx, sent) = channel();
    let sent_tx = Mutex::new(sent_tx);
    let _sub_a = {
        let (db_b, made) = (db_b.clone(), made.clone());
        db_a.subscribe(Box::new(move |_: &Change| {
            let id = db_b.set("s", "from a", "1").unwrap();
            made.fetch_add(1, Ordering::AcqRel);
            let _ = sent_tx.lock().unwrap().send(id);
        }))
        .unwrap()
    };
    let started = Instant::now();
    db_a.set("s", "go", "1").unwrap();
    reaches(&made, 1);
    assert!(started.elapsed() < NOTIFICATION_ROOM_WAIT / 2);
    gate.open();
    let from_a = sent.recv_timeout(LONG).unwrap();
    heard_in_order(&heard_b, &[held, from_a]);
}
