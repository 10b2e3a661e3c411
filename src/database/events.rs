//! Change events without callbacks: each watcher has a bounded queue that the caller reads
//! on its own thread, and a file descriptor that is readable while events are pending, for
//! poll, epoll, asyncio or libuv to wait on.
//!
//! The queue holds at most [`EVENTS_CAPACITY`] changes. When it is full, further changes are
//! counted, not queued, and the reader gets an [`Event::Overflow`] with the count at the
//! place where they were dropped: an overflow is always reported, never silent.
//!
//! An instance keeps at most so many watchers at once, across its databases (the `watchers`
//! limit, [`MAX_WATCHERS`] by default): each holds a queue (about 72 KiB when full) and two
//! descriptors, so a caller that never frees its watchers would otherwise run the process
//! out of both. Past it, a watch fails with [`Error::Busy`] until one is dropped.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::subscribe::{Change, Subscribers};
use crate::error::{Error, Result};

/// How many changes a watcher's queue holds before it counts the next ones as dropped.
pub const EVENTS_CAPACITY: usize = 1024;

/// How many watchers an instance keeps at once by default, over all its databases: 1,024
/// full queues take about 72 MiB, and 2,048 descriptors.
pub const MAX_WATCHERS: usize = 1024;

/// The count of an instance's live watchers, and the bound on it in force; shared by the
/// cores of all its databases.
pub(crate) struct WatcherBudget {
    live: AtomicUsize,
    max: AtomicUsize,
}

impl WatcherBudget {
    /// No watcher yet, at most `max` at once.
    pub(crate) fn new(max: usize) -> Self {
        WatcherBudget {
            live: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
        }
    }

    /// Watchers live now (each until its [`Events`] is dropped).
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Most watchers at once.
    pub(crate) fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Changes that bound for the watches to come: those live past a lowered one are kept.
    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// A place for one more watcher, given back when dropped; [`Error::Busy`] when as many
    /// as the bound allows are live.
    pub(crate) fn take(self: &Arc<Self>) -> Result<WatcherPlace> {
        let max = self.max();
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < max).then_some(live + 1)
            })
            .map_err(|_| {
                Error::Busy(format!(
                    "as many watchers are live on this instance as its limit watchers ({max}) \
                     allows: drop one, or raise it"
                ))
            })?;
        Ok(WatcherPlace(self.clone()))
    }
}

/// One watcher's place in its instance's [`WatcherBudget`], held while the watcher lives.
pub(crate) struct WatcherPlace(Arc<WatcherBudget>);

impl Drop for WatcherPlace {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a watcher reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A change to the database.
    Change(Change),
    /// This many changes, at this place in the order, were dropped because the queue was
    /// full (the reader fell more than [`EVENTS_CAPACITY`] changes behind).
    Overflow(u64),
}

/// One watcher's queue, shared by its [`Events`] and the database's subscribers.
pub(crate) struct EventQueue {
    items: Mutex<Items>,
    arrived: Condvar,
    /// Written one byte when the queue becomes non-empty.
    signal: UnixStream,
    /// The descriptor readers poll: it holds one byte exactly while the queue is non-empty.
    readable: UnixStream,
}

/// The queued events: at most [`EVENTS_CAPACITY`] changes, and overflow counts between
/// them (never two in a row, so at most one more than there are changes).
#[derive(Default)]
struct Items {
    events: VecDeque<Event>,
    /// How many of `events` are changes.
    changes: usize,
}

impl Items {
    fn pop(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        if matches!(event, Event::Change(_)) {
            self.changes -= 1;
        }
        Some(event)
    }
}

impl EventQueue {
    fn new() -> Result<Self> {
        let (signal, readable) = UnixStream::pair()
            .map_err(|e| Error::Internal(format!("cannot make an event descriptor: {e}")))?;
        for end in [&signal, &readable] {
            end.set_nonblocking(true)
                .map_err(|e| Error::Internal(format!("cannot set up an event descriptor: {e}")))?;
        }
        Ok(EventQueue {
            items: Mutex::default(),
            arrived: Condvar::new(),
            signal,
            readable,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Items> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `change`, or counts it as dropped when the queue is full. Never blocks.
    pub(crate) fn push(&self, change: Change) {
        let mut items = self.lock();
        let was_empty = items.events.is_empty();
        if items.changes < EVENTS_CAPACITY {
            items.events.push_back(Event::Change(change));
            items.changes += 1;
        } else if let Some(Event::Overflow(n)) = items.events.back_mut() {
            *n += 1;
        } else {
            items.events.push_back(Event::Overflow(1));
        }
        if was_empty {
            // One byte into an empty socket buffer cannot block or fail short of the
            // system being out of memory; the condition variable wakes `next` regardless.
            let _ = (&self.signal).write(&[1]);
        }
        drop(items);
        self.arrived.notify_one();
    }

    /// Takes the oldest event, waiting up to `timeout` for one.
    fn pop(&self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        let mut items = self.lock();
        loop {
            if let Some(event) = items.pop() {
                if items.events.is_empty() {
                    self.drain();
                } else {
                    // Others may wait too: the next one takes the next event.
                    self.arrived.notify_one();
                }
                return Some(event);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            items = self
                .arrived
                .wait_timeout(items, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Empties the descriptor (the queue just became empty; called under its lock).
    fn drain(&self) {
        let mut buf = [0u8; 16];
        loop {
            match (&self.readable).read(&mut buf) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return, // WouldBlock: empty
            }
        }
    }
}

/// A watcher on one database: every change, local or remote, from its creation on, queued
/// for the owner to read with [`Events::next`] (at most [`EVENTS_CAPACITY`] changes; see
/// [`Event::Overflow`]). Dropping it stops the watch.
///
/// Safe to share between threads: each event goes to exactly one caller of `next`.
pub struct Events {
    queue: Arc<EventQueue>,
    subscribers: Arc<Subscribers>,
    /// Given back to the instance's count when the watcher is dropped (after the database's
    /// core, too).
    _place: WatcherPlace,
}

impl Events {
    /// Registers a new queue with a database's subscribers, in `place` (taken from the
    /// instance's [`WatcherBudget`]); [`Error::Internal`] if the system cannot make the
    /// descriptor.
    pub(crate) fn start(subscribers: Arc<Subscribers>, place: WatcherPlace) -> Result<Self> {
        let queue = Arc::new(EventQueue::new()?);
        subscribers.add_watcher(queue.clone());
        Ok(Events {
            queue,
            subscribers,
            _place: place,
        })
    }

    /// The oldest pending event, waiting up to `timeout` for one (zero: do not wait);
    /// `None` when none came in time.
    pub fn next(&self, timeout: Duration) -> Option<Event> {
        self.queue.pop(timeout)
    }
}

/// The descriptor is readable exactly while events are pending (a socket holding one
/// byte); only poll it, never read from or write to it. It stays valid while `self` lives.
impl AsFd for Events {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queue.readable.as_fd()
    }
}

impl AsRawFd for Events {
    fn as_raw_fd(&self) -> RawFd {
        self.queue.readable.as_raw_fd()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.subscribers.remove_watcher(&self.queue);
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("pending", &self.queue.lock().events.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_holds_the_72_kib_the_docs_say() {
        assert_eq!(std::mem::size_of::<Event>() * EVENTS_CAPACITY, 72 << 10);
    }

    #[test]
    fn places_are_taken_up_to_the_bound_and_given_back_when_dropped() {
        let budget = Arc::new(WatcherBudget::new(2));
        let (a, b) = (budget.take().unwrap(), budget.take().unwrap());
        match budget.take() {
            Err(Error::Busy(message)) => assert!(message.contains("limit watchers (2)")),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("a third place under a bound of 2"),
        }
        assert_eq!(budget.live(), 2);
        budget.set_max(1);
        drop(a);
        assert!(budget.take().is_err(), "1 live under a bound of 1");
        drop(b);
        assert_eq!(budget.live(), 0);
        let c = budget.take().unwrap();
        assert_eq!(budget.live(), 1);
        drop(c);
        budget.set_max(0);
        assert!(budget.take().is_err());
        assert_eq!(budget.live(), 0);
    }
}
