//! Change notifications: callbacks run on one library thread per instance, in commit order,
//! never while mnemo holds a lock the callback could need; watchers ([`super::events`])
//! get the same changes in their own bounded queues.
//!
//! Ending a subscription never waits for the notification thread. A notification is queued
//! for a subscription when its change is committed; every notification queued before the
//! subscription ends is still delivered, and the callback is dropped (so its C `destroy`
//! runs) right after the last one: by the thread that ends the subscription if nothing is
//! queued or running for it then, otherwise by the notification thread.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use super::events::EventQueue;
use crate::entry::EntryId;
use crate::error::{Error, Result};

/// One change to a database, as a subscriber sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// The database.
    pub db: EntryId,
    /// The entry that changed it.
    pub entry: EntryId,
    /// Where it came from.
    pub origin: Origin,
}

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A commit through this instance.
    Local,
    /// An entry received from elsewhere (sync brought it).
    Sync,
    /// An entry another process stored in the same storage (heard by polling it).
    OtherProcess,
}

impl Origin {
    /// Its name in events: `"local"`, `"sync"` or `"other_process"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Sync => "sync",
            Origin::OtherProcess => "other_process",
        }
    }
}

impl Change {
    /// True when the entry came from elsewhere than a commit through this instance (sync, or
    /// another process writing the same storage).
    pub fn remote(&self) -> bool {
        self.origin != Origin::Local
    }
}

/// A subscriber's callback.
pub type Callback = Box<dyn Fn(&Change) + Send>;

/// How many changes may wait for an instance's callbacks by default: while its callbacks
/// are this many behind, a change to a database with subscribers waits for them first
/// (`Notifier::wait_for_room`), so that a slow callback slows the changes it is told of
/// instead of its queue growing without bound (about 100 bytes a change). Changes made from
/// inside a callback (of any instance) do not wait, so callbacks that commit can grow a
/// queue past this number, by what they commit.
pub const MAX_QUEUED_NOTIFICATIONS: usize = 65_536;

/// The longest a change waits for room among the queued notifications; past it, it goes on
/// and is queued all the same (a callback stuck for good slows changes to one per this
/// long and thread, and never stops them).
pub const NOTIFICATION_ROOM_WAIT: Duration = Duration::from_secs(10);

thread_local! {
    /// On a notification thread: the address of its notifier's [`Progress`] (0 elsewhere).
    /// Compared instead of thread ids: `thread::current()` would allocate a handle for a C
    /// caller's thread that is never freed.
    static NOTIFYING_FOR: Cell<usize> = const { Cell::new(0) };
    /// Once set, this flag ends the calling thread's waits for room (see
    /// [`end_waits_for_room_when`]).
    static WAITS_END_WHEN: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// How often a wait for room looks at the flag of [`end_waits_for_room_when`].
const STOP_CHECK: Duration = Duration::from_millis(50);

/// From now on, the calling thread's waits for room among queued notifications end once
/// `flag` is set (looked at every 50 ms): for a background thread that whoever stops it
/// then waits for, and that may be stopped from inside the very callbacks it waits for.
/// For the library's own threads (a sync track's): it lasts as long as the thread.
#[doc(hidden)]
pub fn end_waits_for_room_when(flag: Arc<AtomicBool>) {
    WAITS_END_WHEN.with(|w| *w.borrow_mut() = Some(flag));
}

/// One subscription as the notifier sees it.
struct Slot {
    state: Mutex<SlotState>,
}

struct SlotState {
    /// The callback; `None` while the notification thread runs it, and once dropped.
    callback: Option<Callback>,
    /// Notifications queued for this subscription and not yet delivered (the one running
    /// included).
    queued: usize,
    /// Set when the subscription ends: nothing more is queued for it.
    ended: bool,
    /// Set when it ends dropping what is queued ([`Subscription::end_dropping_queued`]):
    /// the notifications still queued are counted done without a call.
    dropping: bool,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one more queued notification; false once the subscription has ended.
    fn enqueue(&self) -> bool {
        let mut state = self.lock();
        if state.ended {
            return false;
        }
        state.queued += 1;
        true
    }

    /// Counts one queued notification as done (after `callback`, which it had taken, ran).
    /// Drops the callback, in this thread, if the subscription has ended and this was its
    /// last notification.
    fn done(&self, callback: Option<Callback>) {
        let finished = {
            let mut state = self.lock();
            state.queued = state.queued.saturating_sub(1);
            // Dropping what is queued, the callback goes right after the call under way.
            if state.ended && (state.queued == 0 || state.dropping) {
                callback.or_else(|| state.callback.take())
            } else {
                if callback.is_some() {
                    state.callback = callback;
                }
                None
            }
        };
        drop(finished); // outside the lock: a C destroy may call mnemo
    }
}

/// The subscribers and watchers of one database.
#[derive(Default)]
pub(crate) struct Subscribers {
    slots: RwLock<Vec<Arc<Slot>>>,
    watchers: RwLock<Vec<Arc<EventQueue>>>,
}

struct Event {
    slots: Vec<Arc<Slot>>,
    change: Change,
}

/// The thread that runs one instance's callbacks, started on first use and joined when the
/// last handle that could notify is gone.
pub(crate) struct Notifier {
    started: OnceLock<Started>,
    progress: Arc<Progress>,
    /// Notifications queued (sent, not yet delivered) past which changes wait for room.
    max_queued: AtomicU64,
}

/// How many events the notification thread has finished (every callback of each run).
#[derive(Default)]
struct Progress {
    delivered: Mutex<u64>,
    advanced: Condvar,
}

struct Started {
    queue: Mutex<Queue>,
    thread: JoinHandle<()>,
}

/// The sending side of the notification thread's channel, with a count of what was sent.
struct Queue {
    sender: Sender<Event>,
    sent: u64,
}

impl Notifier {
    /// A notifier whose changes wait for room once `max_queued` notifications are queued
    /// (see [`MAX_QUEUED_NOTIFICATIONS`]).
    pub(crate) fn bounded(max_queued: usize) -> Self {
        Notifier {
            started: OnceLock::new(),
            progress: Arc::default(),
            max_queued: AtomicU64::new(max_queued.max(1) as u64),
        }
    }

    /// Notifications queued now: sent to the notification thread and not yet delivered to
    /// every callback (the one being delivered included).
    pub(crate) fn queued(&self) -> u64 {
        let Some(started) = self.started.get() else {
            return 0;
        };
        let sent = started.queue.lock().unwrap_or_else(|p| p.into_inner()).sent;
        let delivered = *self
            .progress
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        sent.saturating_sub(delivered)
    }

    /// How many notifications may be queued before changes wait for room.
    pub(crate) fn max_queued(&self) -> usize {
        usize::try_from(self.max_queued.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// Changes that bound (at least 1); changes waiting now see it when they next look.
    pub(crate) fn set_max_queued(&self, max_queued: usize) {
        let max = u64::try_from(max_queued.max(1)).unwrap_or(u64::MAX);
        // Stored under the lock waiters check it under, so none misses the wake-up.
        let _delivered = self
            .progress
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.max_queued.store(max, Ordering::Relaxed);
        self.progress.advanced.notify_all();
    }

    /// Waits while the callbacks are `max_queued` notifications behind or more, for at most
    /// [`NOTIFICATION_ROOM_WAIT`]. Callers hold no lock (a callback may need it to finish).
    /// Never waits on a notification thread (any instance's): a callback's own changes
    /// would wait for it to return, and two instances' callbacks writing to each other's
    /// databases for each other. Ends early once the flag of [`end_waits_for_room_when`]
    /// is set.
    pub(crate) fn wait_for_room(&self) {
        let Some(started) = self.started.get() else {
            return; // nothing was ever queued
        };
        if NOTIFYING_FOR.with(|n| n.get()) != 0 {
            return;
        }
        let stop = WAITS_END_WHEN.with(|w| w.borrow().clone());
        let deadline = Instant::now() + NOTIFICATION_ROOM_WAIT;
        loop {
            if stop.as_ref().is_some_and(|s| s.load(Ordering::Acquire)) {
                return;
            }
            let sent = started.queue.lock().unwrap_or_else(|p| p.into_inner()).sent;
            let delivered = self
                .progress
                .delivered
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let left = deadline.saturating_duration_since(Instant::now());
            let max_queued = self.max_queued.load(Ordering::Relaxed);
            if sent.saturating_sub(*delivered) < max_queued || left.is_zero() {
                return;
            }
            // Woken after each notification delivered; `sent` is read again then.
            let slice = if stop.is_some() {
                left.min(STOP_CHECK)
            } else {
                left
            };
            drop(
                self.progress
                    .advanced
                    .wait_timeout(delivered, slice)
                    .unwrap_or_else(|p| p.into_inner()),
            );
        }
    }

    fn start(&self) -> Result<&Started> {
        if let Some(started) = self.started.get() {
            return Ok(started);
        }
        let (tx, rx) = channel::<Event>();
        let progress = self.progress.clone();
        let handle = thread::Builder::new()
            .name("mnemo-notify".into())
            .spawn(move || {
                NOTIFYING_FOR.with(|n| n.set(Arc::as_ptr(&progress) as usize));
                for event in rx {
                    for slot in &event.slots {
                        deliver(slot, &event.change);
                    }
                    *progress.delivered.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    progress.advanced.notify_all();
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the notification thread: {e}")))?;
        // A racing caller may have started one first; then ours sees its sender dropped
        // and ends at once.
        let _ = self.started.set(Started {
            queue: Mutex::new(Queue {
                sender: tx,
                sent: 0,
            }),
            thread: handle,
        });
        Ok(self
            .started
            .get()
            .expect("set just now or by a racing caller"))
    }

    /// Whether the calling thread is this notifier's own.
    fn is_own_thread(&self) -> bool {
        NOTIFYING_FOR.with(|n| n.get()) == Arc::as_ptr(&self.progress) as usize
    }

    /// Queues `change` for `slots` (each already counted by [`Slot::enqueue`]).
    fn send(&self, started: &Started, slots: Vec<Arc<Slot>>, change: Change) {
        let mut queue = started.queue.lock().unwrap_or_else(|p| p.into_inner());
        match queue.sender.send(Event { slots, change }) {
            Ok(()) => queue.sent += 1,
            // The thread is gone (only if it panicked outside a callback): the notifications
            // will never run, so they are no longer queued.
            Err(unsent) => {
                drop(queue);
                for slot in &unsent.0.slots {
                    slot.done(None);
                }
            }
        }
    }

    /// Waits until every callback queued before this call has run, or `timeout` passes
    /// ([`Error::Busy`]). Fails at once with [`Error::Busy`] on the notification thread
    /// itself (from inside a callback), where it would wait for itself.
    pub(crate) fn flush(&self, timeout: Duration) -> Result<()> {
        let Some(started) = self.started.get() else {
            return Ok(()); // no callback was ever queued
        };
        if self.is_own_thread() {
            return Err(Error::Busy(
                "cannot wait for change callbacks from inside one (it would wait for itself)"
                    .into(),
            ));
        }
        let target = started.queue.lock().unwrap_or_else(|p| p.into_inner()).sent;
        let deadline = Instant::now() + timeout;
        let mut delivered = self
            .progress
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while *delivered < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Busy(format!(
                    "{} change notifications still queued or running after {} ms",
                    target - *delivered,
                    timeout.as_millis()
                )));
            }
            delivered = self
                .progress
                .advanced
                .wait_timeout(delivered, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(Started { queue, thread }) = self.started.take() {
            drop(queue); // ends the thread's loop once queued events are delivered
            if !self.is_own_thread() {
                join_unless_it_waits_for_us(thread);
            }
        }
    }
}

/// The notification threads being joined: each joining thread, with the thread it joins.
static JOINING: Mutex<Vec<(ThreadId, ThreadId)>> = Mutex::new(Vec::new());

/// Joins notification thread `thread`, unless it is itself waiting, through a chain of such
/// joins, for the calling thread: two callbacks of two instances each freeing the other's
/// last handle would otherwise wait for each other for good. Then it returns at once, and
/// `thread` ends by itself once its callbacks have run.
fn join_unless_it_waits_for_us(thread: JoinHandle<()>) {
    let (us, them) = (thread::current().id(), thread.thread().id());
    {
        let mut joining = JOINING.lock().unwrap_or_else(|p| p.into_inner());
        // No cycle is ever recorded, so the chain ends.
        let mut at = them;
        while let Some(&(_, next)) = joining.iter().find(|(joiner, _)| *joiner == at) {
            if next == us {
                return;
            }
            at = next;
        }
        joining.push((us, them));
    }
    let _ = thread.join();
    let mut joining = JOINING.lock().unwrap_or_else(|p| p.into_inner());
    joining.retain(|(joiner, _)| *joiner != us);
}

/// Runs one queued notification of `slot`, unless its callback was already dropped or its
/// queued notifications are being dropped.
fn deliver(slot: &Slot, change: &Change) {
    let callback = {
        let mut state = slot.lock();
        match state.dropping {
            true => None,
            false => state.callback.take(),
        }
    };
    if let Some(cb) = callback.as_ref() {
        let _ = catch_unwind(AssertUnwindSafe(|| cb(change)));
    }
    slot.done(callback);
}

impl Subscribers {
    /// True when some callback or watcher hears this database's changes.
    pub(crate) fn any(&self) -> bool {
        self.has_callbacks()
            || !self
                .watchers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
    }

    /// True when some callback is subscribed (its changes are queued for the notifier).
    pub(crate) fn has_callbacks(&self) -> bool {
        !self
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Queues `change` for every current watcher and subscriber. Costs nothing without
    /// either.
    pub(crate) fn notify(&self, notifier: &Notifier, change: Change) {
        for queue in self
            .watchers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            queue.push(change);
        }
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner()).clone();
        if slots.is_empty() {
            return;
        }
        let Ok(started) = notifier.start() else {
            return; // every live subscription started it: it cannot fail now
        };
        let slots: Vec<Arc<Slot>> = slots.into_iter().filter(|s| s.enqueue()).collect();
        if !slots.is_empty() {
            notifier.send(started, slots, change);
        }
    }

    /// Adds a watcher's queue.
    pub(crate) fn add_watcher(&self, queue: Arc<EventQueue>) {
        self.watchers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(queue);
    }

    /// Removes a watcher's queue: it receives nothing more.
    pub(crate) fn remove_watcher(&self, queue: &Arc<EventQueue>) {
        self.watchers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|q| !Arc::ptr_eq(q, queue));
    }
}

/// A live subscription. Dropping it (or [`Subscription::cancel`]) ends it at once, without
/// waiting: changes committed afterwards are not delivered to it; notifications queued
/// before are still delivered, on the notification thread, and the callback is dropped
/// right after the last one (by the dropping thread when none is queued or running).
pub struct Subscription {
    slot: Arc<Slot>,
    subscribers: Arc<Subscribers>,
}

impl Subscription {
    /// Registers `callback` with a database's subscribers, starting the notification thread
    /// if needed ([`Error::Internal`] if it cannot start).
    pub(crate) fn start(
        subscribers: Arc<Subscribers>,
        notifier: &Notifier,
        callback: Callback,
    ) -> Result<Self> {
        notifier.start()?;
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState {
                callback: Some(callback),
                queued: 0,
                ended: false,
                dropping: false,
            }),
        });
        subscribers
            .slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot.clone());
        Ok(Subscription { slot, subscribers })
    }

    /// Ends the subscription (the same as dropping it).
    pub fn cancel(self) {}

    /// Ends the subscription, dropping the notifications still queued for it: the callback
    /// runs at most once more (a call the notification thread has already begun), and is
    /// dropped right after it, on that thread; with no call under way, here, before this
    /// returns.
    pub fn end_dropping_queued(self) {
        let idle_callback = {
            let mut state = self.slot.lock();
            state.dropping = true;
            state.callback.take() // there unless a call is under way
        };
        drop(self); // ended: nothing more is queued
        drop(idle_callback);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.subscribers
            .slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| !Arc::ptr_eq(s, &self.slot));
        let finished = {
            let mut state = self.slot.lock();
            state.ended = true;
            if state.queued == 0 {
                state.callback.take()
            } else {
                None // the notification thread drops it after the last one
            }
        };
        drop(finished);
    }
}
