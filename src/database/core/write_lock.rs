//! The lock that lets this process's writers of one database in one at a time, in the
//! order they came, each waiting at most a bound of its own: however many queue behind a
//! writer that the storage keeps waiting, none waits longer than the bound.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::line::{self, Line};

/// A first-come, first-served lock with timed waits. A holder that panics (a bug, caught
/// at the C boundary) frees it, and the next to take it is told so. Only the thread next
/// in line is woken when it is freed.
#[derive(Default)]
pub(super) struct WriteLock {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    held: bool,
    /// The threads waiting.
    line: Line,
    /// The last holder panicked; told to the next holder, then cleared.
    holder_panicked: bool,
}

/// The lock, held until dropped.
pub(super) struct WriteGuard<'a> {
    lock: &'a WriteLock,
}

/// A turn at the lock.
pub(super) struct Taken<'a> {
    pub(super) guard: WriteGuard<'a>,
    /// The holder before panicked, so what it was changing may be half done.
    pub(super) after_panic: bool,
}

impl WriteLock {
    /// Waits for the lock behind those already waiting, at most `within` (`None`: as long
    /// as it takes). `None` when the time ran out first.
    pub(super) fn take(&self, within: Option<Duration>) -> Option<Taken<'_>> {
        let mut state = self.state();
        if state.held || !state.line.is_empty() {
            let deadline = within.and_then(|w| Instant::now().checked_add(w));
            let free = |state: &State| !state.held;
            state = line::wait_turn(&self.state, state, |s| &mut s.line, free, deadline)?;
        }
        state.held = true;
        Some(Taken {
            guard: WriteGuard { lock: self },
            after_panic: std::mem::take(&mut state.holder_panicked),
        })
    }

    /// Whether a thread waits in line for the lock now.
    pub(super) fn has_waiters(&self) -> bool {
        !self.state().line.is_empty()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding `state`; a poisoned one is still consistent.
        line::lock(&self.state)
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.lock.state();
        state.held = false;
        state.holder_panicked |= std::thread::panicking();
        state.line.wake_first();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Arc;

    #[test]
    fn a_waiter_gives_up_after_its_bound_and_the_next_still_gets_in() {
        let lock = Arc::new(WriteLock::default());
        let held = lock.take(None).unwrap();
        let started = Instant::now();
        assert!(lock.take(Some(Duration::from_millis(50))).is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                let taken = lock.take(Some(Duration::from_secs(30))).is_some();
                tx.send(taken).unwrap();
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        assert!(rx.recv_timeout(Duration::from_secs(30)).unwrap());
        waiter.join().unwrap();
    }

    #[test]
    fn waiters_get_in_in_the_order_they_came() {
        let lock = Arc::new(WriteLock::default());
        let held = lock.take(None).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut waiters = Vec::new();
        for n in 0..4 {
            let (waiter, tx) = (lock.clone(), tx.clone());
            waiters.push(std::thread::spawn(move || {
                let _turn = waiter.take(Some(Duration::from_secs(30))).unwrap();
                tx.send(n).unwrap();
            }));
            // Each in line before the next starts.
            while lock.state().line.len() <= n {
                std::thread::yield_now();
            }
        }
        drop(held);
        let order: Vec<_> = (0..4).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(order, vec![0, 1, 2, 3]);
        waiters.into_iter().for_each(|w| w.join().unwrap());
    }

    #[test]
    fn the_holder_after_a_panic_is_told_once() {
        let lock = Arc::new(WriteLock::default());
        let panicking = lock.clone();
        let ended = std::thread::spawn(move || {
            let _turn = panicking.take(None).unwrap();
            panic!("a holder that panicked (as the test means)");
        })
        .join();
        assert!(ended.is_err());
        assert!(lock.take(None).unwrap().after_panic);
        assert!(!lock.take(None).unwrap().after_panic);
    }
}
