//! Change events without callbacks: each watcher has a bounded queue that the caller reads
//! on its own thread, and a file descriptor that is readable while events are pending, for
//! poll, epoll, asyncio or libuv to wait on.
//!
//! The queue holds at most [`EVENTS_CAPACITY`] changes. When it is full, further changes are
//! counted, not queued, and the reader gets an [`Event::Overflow`] with the count at the
//! place where they were dropped: an overflow is always reported, never silent.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::subscribe::{Change, Subscribers};
use crate::error::{Error, Result};

/// How many changes a watcher's queue holds before it counts the next ones as dropped.
pub const EVENTS_CAPACITY: usize = 1024;

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
}

impl Events {
    /// Registers a new queue with a database's subscribers; [`Error::Internal`] if the
    /// system cannot make the descriptor.
    pub(crate) fn start(subscribers: Arc<Subscribers>) -> Result<Self> {
        let queue = Arc::new(EventQueue::new()?);
        subscribers.add_watcher(queue.clone());
        Ok(Events { queue, subscribers })
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
