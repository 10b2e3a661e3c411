//! Hearing about changes: watchers (`Database::watch`, a bounded queue with a readable
//! descriptor) and subscriptions that end without waiting for their callbacks.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use mnemo::database::{Change, Event, Events, Origin, EVENTS_CAPACITY, MAX_WATCHERS};
use mnemo::{Database, Error, Instance};

use crate::support::logged_in;

const LONG: Duration = Duration::from_secs(10);

/// Whether the watcher's descriptor is readable now, peeked (`recv` with `MSG_PEEK`, which
/// leaves the byte in place) through a duplicate that shares the socket. `TcpStream` only
/// lends its stable `peek` to the Unix socket: no TCP call is made on it.
fn readable(events: &Events) -> bool {
    let dup = TcpStream::from(events.as_fd().try_clone_to_owned().unwrap());
    match dup.peek(&mut [0u8]) {
        Ok(n) => n > 0,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("peek: {e}"),
    }
}

fn change(db: &Database, entry: mnemo::entry::EntryId, remote: bool) -> Event {
    let origin = if remote { Origin::Sync } else { Origin::Local };
    Event::Change(Change {
        db: db.id(),
        entry,
        origin,
    })
}

#[test]
fn a_watcher_reads_local_commits_in_order_and_times_out_when_idle() {
    let (_inst, user) = logged_in("alice");
    let db = user.create_db("d").unwrap();
    let before = db.set("s", "k", "0").unwrap(); // made before the watch: not seen
    let events = db.watch().unwrap();
    assert!(!readable(&events));
    let started = Instant::now();
    assert_eq!(events.next(Duration::from_millis(50)), None);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(50) && waited < LONG,
        "{waited:?}"
    );
    assert_eq!(events.next(Duration::ZERO), None);

    let ids: Vec<_> = (0..3)
        .map(|i| db.set("s", "k", &i.to_string()).unwrap())
        .collect();
    assert!(readable(&events));
    for id in &ids {
        assert_ne!(*id, before);
        assert_eq!(events.next(Duration::ZERO), Some(change(&db, *id, false)));
    }
    // Empty again: the descriptor is no longer readable.
    assert!(!readable(&events));
    assert_eq!(events.next(Duration::ZERO), None);
}

#[test]
fn next_wakes_when_a_commit_arrives_from_another_thread() {
    let (_inst, user) = logged_in("alice");
    let db = user.create_db("d").unwrap();
    let events = db.watch().unwrap();
    let writer = db.clone();
    let handle = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        writer.set("s", "k", "1").unwrap()
    });
    let got = events.next(LONG);
    let id = handle.join().unwrap();
    assert_eq!(got, Some(change(&db, id, false)));
}

#[test]
fn an_overflow_is_reported_where_changes_were_dropped() {
    let (_inst, user) = logged_in("alice");
    let db = user.create_db("d").unwrap();
    let events = db.watch().unwrap();
    let ids: Vec<_> = (0..EVENTS_CAPACITY + 3)
        .map(|i| db.set("s", "k", &i.to_string()).unwrap())
        .collect();
    for id in &ids[..EVENTS_CAPACITY] {
        assert_eq!(events.next(Duration::ZERO), Some(change(&db, *id, false)));
    }
    assert_eq!(events.next(Duration::ZERO), Some(Event::Overflow(3)));
    assert!(!readable(&events));
    // The watch goes on after an overflow.
    let later = db.set("s", "k", "\"later\"").unwrap();
    assert_eq!(events.next(Duration::ZERO), Some(change(&db, later, false)));
}

#[test]
fn an_overflow_marker_keeps_its_place_among_later_changes() {
    let (_inst, user) = logged_in("alice");
    let db = user.create_db("d").unwrap();
    let events = db.watch().unwrap();
    let first: Vec<_> = (0..EVENTS_CAPACITY + 1)
        .map(|i| db.set("s", "k", &i.to_string()).unwrap())
        .collect();
    // Reading one makes room for one more change, queued after the marker.
    assert_eq!(
        events.next(Duration::ZERO),
        Some(change(&db, first[0], false))
    );
    let again = db.set("s", "k", "\"again\"").unwrap();
    for id in &first[1..EVENTS_CAPACITY] {
        assert_eq!(events.next(Duration::ZERO), Some(change(&db, *id, false)));
    }
    assert_eq!(events.next(Duration::ZERO), Some(Event::Overflow(1)));
    assert_eq!(events.next(Duration::ZERO), Some(change(&db, again, false)));
    assert_eq!(events.next(Duration::ZERO), None);
}

#[test]
fn a_watcher_hears_entries_applied_from_elsewhere_as_remote() {
    let (_inst, owner) = logged_in("owner");
    let db = owner.create_db("d").unwrap();
    let (peer, reader) = logged_in("reader");
    let grant = db
        .grant(
            &reader.default_key().unwrap(),
            mnemo::database::Permission::Read,
        )
        .unwrap();
    for id in [db.id(), grant] {
        peer.receive_entry(&db.entry_bytes(&id).unwrap()).unwrap();
    }
    let copy = reader.load_db(&db.id()).unwrap();
    let events = copy.watch().unwrap();
    let id = db.set("s", "k", "1").unwrap();
    peer.receive_entry(&db.entry_bytes(&id).unwrap()).unwrap();
    assert_eq!(events.next(Duration::ZERO), Some(change(&db, id, true)));
    // A duplicate is not a change.
    peer.receive_entry(&db.entry_bytes(&id).unwrap()).unwrap();
    assert_eq!(events.next(Duration::ZERO), None);
}

#[test]
fn watchers_are_independent_and_a_dropped_one_stops() {
    let (_inst, user) = logged_in("alice");
    let db = user.create_db("d").unwrap();
    let (a, b) = (db.watch().unwrap(), db.watch().unwrap());
    let id = db.set("s", "k", "1").unwrap();
    assert_eq!(a.next(Duration::ZERO), Some(change(&db, id, false)));
    drop(a);
    assert_eq!(b.next(Duration::ZERO), Some(change(&db, id, false)));
    db.set("s", "k", "2").unwrap();
    assert!(b.next(Duration::ZERO).is_some());
}

/// The instance's count of live watchers, as its stats report it.
fn watchers_live(inst: &Instance) -> u64 {
    let stats = inst.stats().unwrap();
    let live = stats
        .iter()
        .find(|(name, _)| *name == "watchers")
        .unwrap()
        .1;
    assert_eq!(live, inst.watchers() as u64);
    live
}

/// A watch refused under the instance's `watchers` limit, whose message names it.
fn refused(watch: mnemo::Result<Events>, limit: usize) {
    match watch {
        Err(Error::Busy(message)) => assert!(
            message.contains(&format!("limit watchers ({limit})")),
            "{message}"
        ),
        other => panic!("a watch past the limit: {other:?}"),
    }
}

#[test]
fn watchers_are_counted_across_the_instance_and_refused_past_its_limit() {
    let (inst, user) = logged_in("alice");
    assert_eq!(MAX_WATCHERS, 1024);
    assert_eq!(inst.limits().watchers, MAX_WATCHERS);
    assert!(inst.limits().by_name().contains(&("watchers", 1024)));
    assert_eq!(watchers_live(&inst), 0);
    let (a, b) = (user.create_db("a").unwrap(), user.create_db("b").unwrap());

    inst.set_limits_by_name(&[("watchers", 2)]).unwrap();
    let first = a.watch().unwrap();
    let second = b.watch().unwrap(); // another database, the same count
    assert_eq!(watchers_live(&inst), 2);
    refused(a.watch(), 2);
    refused(b.watch(), 2);
    assert_eq!(watchers_live(&inst), 2);
    drop(first);
    assert_eq!(watchers_live(&inst), 1);
    let third = a.watch().unwrap();

    // Lowered below the number live: those are kept, and hear on; new ones wait for room.
    inst.set_limits_by_name(&[("watchers", 1)]).unwrap();
    assert_eq!(watchers_live(&inst), 2);
    refused(a.watch(), 1);
    let id = a.set("s", "k", "1").unwrap();
    assert_eq!(third.next(Duration::ZERO), Some(change(&a, id, false)));
    drop(second);
    refused(b.watch(), 1);
    drop(third);
    assert_eq!(watchers_live(&inst), 0);
    let again = b.watch().unwrap();
    drop(again);

    // 0 refuses every watch; a refused one holds nothing.
    inst.set_limits_by_name(&[("watchers", 0)]).unwrap();
    refused(a.watch(), 0);
    assert_eq!(watchers_live(&inst), 0);
    let bounds = inst.set_limits_by_name(&[("watchers", (1 << 20) + 1)]);
    assert!(
        matches!(bounds, Err(Error::InvalidArgument(_))),
        "{bounds:?}"
    );
    inst.set_limits_by_name(&[("watchers", 1 << 20)]).unwrap();
    assert_eq!(inst.limits().watchers, 1 << 20);
}

#[test]
fn a_watcher_gives_its_place_back_also_after_its_database_is_gone() {
    let (inst, user) = logged_in("alice");
    inst.set_limits_by_name(&[("watchers", 1)]).unwrap();
    let db = user.create_db("d").unwrap();
    let id = db.id();
    let events = db.watch().unwrap();
    // Forgotten, and its handle dropped: its core leaves the instance; the watcher stays.
    user.forget_db(&id).unwrap();
    drop(db);
    assert_eq!(watchers_live(&inst), 1);
    let other = user.create_db("other").unwrap();
    refused(other.watch(), 1);
    drop(events);
    assert_eq!(watchers_live(&inst), 0);
    drop(other.watch().unwrap());
    // One that outlives its instance gives its place back to nobody, harmlessly.
    let late = other.watch().unwrap();
    drop((inst, user, other));
    drop(late);
}

/// Reports, when dropped, the thread that dropped it (the callback's `destroy`).
struct DropProbe(Sender<ThreadId>);

impl Drop for DropProbe {
    fn drop(&mut self) {
        let _ = self.0.send(thread::current().id());
    }
}

/// A callback that reports each change and its thread, then waits at `gate` (if any).
fn blocking_callback(
    heard: Sender<(Change, ThreadId)>,
    gate: Option<Arc<Barrier>>,
    destroyed: Sender<ThreadId>,
) -> mnemo::database::Callback {
    let probe = DropProbe(destroyed);
    let heard = Mutex::new(heard);
    Box::new(move |c: &Change| {
        let _ = &probe;
        let _ = heard.lock().unwrap().send((*c, thread::current().id()));
        if let Some(gate) = &gate {
            gate.wait();
        }
    })
}

#[test]
fn dropping_a_subscription_with_nothing_queued_destroys_it_on_the_dropping_thread() {
    let (_inst, user) = logged_in("alice");
    let db = user.create_db("d").unwrap();
    let (heard_tx, heard) = channel();
    let (destroyed_tx, destroyed) = channel();
    let sub = db
        .subscribe(blocking_callback(heard_tx, None, destroyed_tx))
        .unwrap();
    db.set("s", "k", "1").unwrap();
    heard.recv_timeout(LONG).unwrap();
    db.flush_notifications(LONG).unwrap();
    drop(sub);
    assert_eq!(destroyed.try_recv(), Ok(thread::current().id()));
    db.set("s", "k", "2").unwrap();
    db.flush_notifications(LONG).unwrap();
    assert!(heard.try_recv().is_err());
}

#[test]
fn dropping_a_subscription_never_waits_and_queued_changes_are_still_delivered() {
    let (_inst, user) = logged_in("alice");
    let db = user.create_db("d").unwrap();
    let gate = Arc::new(Barrier::new(2));
    let (heard_tx, heard) = channel();
    let (destroyed_tx, destroyed) = channel();
    let sub = db
        .subscribe(blocking_callback(
            heard_tx,
            Some(gate.clone()),
            destroyed_tx,
        ))
        .unwrap();
    let ids: Vec<_> = (0..3)
        .map(|i| db.set("s", "k", &i.to_string()).unwrap())
        .collect();
    let (first, library_thread) = heard.recv_timeout(LONG).unwrap();
    assert_eq!(first.entry, ids[0]);
    assert_ne!(library_thread, thread::current().id());
    // The callback is blocked at the gate: dropping returns anyway, destroying nothing.
    drop(sub);
    assert!(destroyed.try_recv().is_err());
    // The flush cannot finish while the callback is blocked.
    assert!(matches!(
        db.flush_notifications(Duration::from_millis(20)),
        Err(Error::Busy(_))
    ));
    let after = db.set("s", "k", "\"after\"").unwrap();
    // Release the three queued calls; the commit after the drop is not delivered.
    for id in &ids {
        gate.wait();
        if id != ids.last().unwrap() {
            let (c, t) = heard.recv_timeout(LONG).unwrap();
            assert!(c.entry != after && t == library_thread);
        }
    }
    db.flush_notifications(LONG).unwrap();
    assert!(heard.try_recv().is_err());
    assert_eq!(destroyed.recv_timeout(LONG), Ok(library_thread));
}

#[test]
fn a_subscription_dropped_from_its_own_callback_is_destroyed_after_it_returns() {
    let (_inst, user) = logged_in("alice");
    let db = user.create_db("d").unwrap();
    let holder: Arc<Mutex<Option<mnemo::database::Subscription>>> = Arc::default();
    let (destroyed_tx, destroyed) = channel();
    let (heard_tx, heard) = channel();
    let probe = DropProbe(destroyed_tx);
    let inner = holder.clone();
    let heard_tx = Mutex::new(heard_tx);
    let sub = db
        .subscribe(Box::new(move |c: &Change| {
            let _ = &probe;
            let _ = heard_tx.lock().unwrap().send(c.entry);
            drop(inner.lock().unwrap().take());
        }))
        .unwrap();
    *holder.lock().unwrap() = Some(sub);
    let first = db.set("s", "k", "1").unwrap();
    db.flush_notifications(LONG).unwrap();
    assert_eq!(heard.try_recv(), Ok(first));
    let library_thread = destroyed.try_recv().unwrap();
    assert_ne!(library_thread, thread::current().id());
    db.set("s", "k", "2").unwrap();
    db.flush_notifications(LONG).unwrap();
    assert!(heard.try_recv().is_err());
}

#[test]
fn flushing_from_inside_a_callback_is_refused_instead_of_waiting_for_itself() {
    let (_inst, user) = logged_in("alice");
    let db = user.create_db("d").unwrap();
    let (tx, rx) = channel();
    let inner = db.clone();
    let tx = Mutex::new(tx);
    let _sub = db
        .subscribe(Box::new(move |_: &Change| {
            let result = inner.flush_notifications(LONG);
            let _ = tx
                .lock()
                .unwrap()
                .send(matches!(result, Err(Error::Busy(_))));
        }))
        .unwrap();
    db.set("s", "k", "1").unwrap();
    assert_eq!(rx.recv_timeout(LONG), Ok(true));
}
