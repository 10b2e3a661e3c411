//! Change notifications: callbacks run on one library thread per instance, in commit order,
//! never while mnemo holds a lock the callback could need.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock, RwLock, TryLockError};
use std::thread::{self, JoinHandle};

use crate::entry::EntryId;
use crate::error::{Error, Result};

/// One change to a database, as a subscriber sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// The database.
    pub db: EntryId,
    /// The entry that changed it.
    pub entry: EntryId,
    /// True when the entry came from elsewhere (sync), false for a local commit.
    pub remote: bool,
}

/// A subscriber's callback.
pub type Callback = Box<dyn Fn(&Change) + Send>;

struct Slot {
    active: AtomicBool,
    /// Held by the notifier thread while it runs the callback; taken (and so dropped) when
    /// the subscription ends.
    callback: Mutex<Option<Callback>>,
}

/// The subscribers of one database.
#[derive(Default)]
pub(crate) struct Subscribers {
    slots: RwLock<Vec<Arc<Slot>>>,
}

struct Event {
    slots: Vec<Arc<Slot>>,
    change: Change,
}

/// The thread that runs one instance's callbacks, started on first use and joined when the
/// last handle that could notify is gone.
#[derive(Default)]
pub(crate) struct Notifier {
    started: OnceLock<Started>,
}

struct Started {
    sender: Mutex<Sender<Event>>,
    thread: JoinHandle<()>,
}

impl Notifier {
    fn sender(&self) -> Result<&Mutex<Sender<Event>>> {
        self.start().map(|s| &s.sender)
    }

    fn start(&self) -> Result<&Started> {
        if let Some(started) = self.started.get() {
            return Ok(started);
        }
        let (tx, rx) = channel::<Event>();
        let handle = thread::Builder::new()
            .name("mnemo-notify".into())
            .spawn(move || {
                for event in rx {
                    for slot in &event.slots {
                        deliver(slot, &event.change);
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the notification thread: {e}")))?;
        // A racing caller may have started one first; then ours sees its sender dropped
        // and ends at once.
        let _ = self.started.set(Started {
            sender: Mutex::new(tx),
            thread: handle,
        });
        Ok(self
            .started
            .get()
            .expect("set just now or by a racing caller"))
    }

    fn is_notifier_thread(&self) -> bool {
        self.started
            .get()
            .is_some_and(|s| s.thread.thread().id() == thread::current().id())
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(Started { sender, thread }) = self.started.take() {
            drop(sender); // ends the thread's loop once queued events are delivered
            if thread.thread().id() != thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

fn deliver(slot: &Slot, change: &Change) {
    let mut callback = slot.callback.lock().unwrap_or_else(|p| p.into_inner());
    if slot.active.load(Ordering::Acquire) {
        if let Some(cb) = callback.as_ref() {
            let _ = catch_unwind(AssertUnwindSafe(|| cb(change)));
        }
    }
    // The callback may have ended its own subscription; finish ending it now.
    if !slot.active.load(Ordering::Acquire) {
        drop(callback.take());
    }
}

impl Subscribers {
    /// Queues `change` for every current subscriber. Costs nothing without subscribers.
    pub(crate) fn notify(&self, notifier: &Notifier, change: Change) {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner()).clone();
        if slots.is_empty() {
            return;
        }
        if let Ok(sender) = notifier.sender() {
            let _ = sender
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .send(Event { slots, change });
        }
    }
}

/// A live subscription. Dropping it (or [`Subscription::cancel`]) ends it: afterwards the
/// callback is never called again and has been dropped.
pub struct Subscription {
    slot: Arc<Slot>,
    subscribers: Arc<Subscribers>,
    notifier: Arc<Notifier>,
}

impl Subscription {
    pub(crate) fn start(
        subscribers: Arc<Subscribers>,
        notifier: Arc<Notifier>,
        callback: Callback,
    ) -> Result<Self> {
        notifier.sender()?;
        let slot = Arc::new(Slot {
            active: AtomicBool::new(true),
            callback: Mutex::new(Some(callback)),
        });
        subscribers
            .slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot.clone());
        Ok(Subscription {
            slot,
            subscribers,
            notifier,
        })
    }

    /// Ends the subscription (the same as dropping it).
    pub fn cancel(self) {}
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.slot.active.store(false, Ordering::Release);
        self.subscribers
            .slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| !Arc::ptr_eq(s, &self.slot));
        let taken = if self.notifier.is_notifier_thread() {
            // Inside a callback: if it is this subscription's own, the notifier drops it
            // when the callback returns.
            match self.slot.callback.try_lock() {
                Ok(mut cb) => cb.take(),
                Err(TryLockError::Poisoned(p)) => p.into_inner().take(),
                Err(TryLockError::WouldBlock) => None,
            }
        } else {
            // Waits for a call in progress on the notifier thread to finish.
            self.slot
                .callback
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
        };
        drop(taken);
    }
}
