//! The lock that lets this process's writers of one database in one at a time, in the
//! order they came, each waiting at most a bound of its own: however many queue behind a
//! writer that the storage keeps waiting, none waits longer than the bound.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

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
    /// The threads waiting, first come first.
    line: VecDeque<Waiter>,
    next_ticket: u64,
    /// The last holder panicked; told to the next holder, then cleared.
    holder_panicked: bool,
}

struct Waiter {
    ticket: u64,
    thread: Thread,
}

impl State {
    /// Wakes the thread next in line, if any, unless the lock is held.
    fn wake_next(&self) {
        if let (false, Some(next)) = (self.held, self.line.front()) {
            next.thread.unpark();
        }
    }
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
        if !state.held && state.line.is_empty() {
            return Some(self.hand_over(&mut state));
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.line.push_back(Waiter {
            ticket,
            thread: std::thread::current(),
        });
        let deadline = within.and_then(|w| Instant::now().checked_add(w));
        loop {
            if !state.held && state.line.front().is_some_and(|w| w.ticket == ticket) {
                state.line.pop_front();
                return Some(self.hand_over(&mut state));
            }
            drop(state);
            // Woken by `unpark` when next in line (a wake that came first is kept), or at
            // any time for no reason: the line is looked at again either way.
            match deadline {
                None => std::thread::park(),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        let mut state = self.state();
                        state.line.retain(|w| w.ticket != ticket);
                        // This thread may have been next: the one after it goes instead.
                        state.wake_next();
                        return None;
                    }
                    std::thread::park_timeout(deadline - now);
                }
            }
            state = self.state();
        }
    }

    fn hand_over(&self, state: &mut State) -> Taken<'_> {
        state.held = true;
        Taken {
            guard: WriteGuard { lock: self },
            after_panic: std::mem::take(&mut state.holder_panicked),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding `state`; a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.lock.state();
        state.held = false;
        state.holder_panicked |= std::thread::panicking();
        state.wake_next();
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
