//! Threads waiting their turn for something, first come first served, each for at most a
//! time of its own. What they wait for (a lock, a pooled connection) lives in the caller's
//! mutex beside its [`Line`]; only the thread first in line is woken when it may have come
//! free, so a newcomer never takes it ahead of a thread that has waited longer.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::thread::Thread;
use std::time::Instant;

/// The threads waiting, first come first; kept inside the caller's mutex.
#[derive(Default)]
pub struct Line {
    waiting: VecDeque<(u64, Thread)>,
    next_ticket: u64,
}

impl Line {
    /// True when no thread waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// How many threads wait.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Wakes the thread first in line, if any: called whenever what it waits for may have
    /// come free (a wake for nothing is harmless: the thread looks, and waits again).
    pub fn wake_first(&self) {
        if let Some((_, first)) = self.waiting.front() {
            first.unpark();
        }
    }

    fn join(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.waiting.push_back((ticket, std::thread::current()));
        ticket
    }

    fn is_first(&self, ticket: u64) -> bool {
        self.waiting.front().is_some_and(|(t, _)| *t == ticket)
    }
}

/// Locks `mutex`; a poisoned one is taken as it is (callers change their state only in
/// steps that cannot panic half-way).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Joins the line `line_of` finds in `state` (locked from `mutex`) and waits, the lock
/// released, until this thread is first in line and `ready` holds, at most until
/// `deadline` (`None`: as long as it takes). Returns the state locked, this thread out of
/// the line; `None` when the time ran out (it left the line, and the thread after it was
/// woken in its place). The caller wakes the next in line if, once it took its share, what
/// they wait for is still there.
pub fn wait_turn<'a, T>(
    mutex: &'a Mutex<T>,
    mut state: MutexGuard<'a, T>,
    line_of: fn(&mut T) -> &mut Line,
    ready: impl Fn(&T) -> bool,
    deadline: Option<Instant>,
) -> Option<MutexGuard<'a, T>> {
    let ticket = line_of(&mut state).join();
    loop {
        if line_of(&mut state).is_first(ticket) && ready(&state) {
            line_of(&mut state).waiting.pop_front();
            return Some(state);
        }
        drop(state);
        // Woken by `unpark` when first in line (a wake that came before the park is kept),
        // or at any time for no reason: the line is looked at again either way.
        match deadline {
            None => std::thread::park(),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    let mut state = lock(mutex);
                    let line = line_of(&mut state);
                    line.waiting.retain(|(t, _)| *t != ticket);
                    line.wake_first();
                    return None;
                }
                std::thread::park_timeout(deadline - now);
            }
        }
        state = lock(mutex);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// A counter of free places and its line, and who took places, in order.
    #[derive(Default)]
    struct Places {
        free: usize,
        line: Line,
        served: Vec<usize>,
    }

    fn line_of(places: &mut Places) -> &mut Line {
        &mut places.line
    }

    /// Takes a place for `who` within `wait` (`false`: none came free).
    fn take(places: &Mutex<Places>, wait: Duration, who: usize) -> bool {
        let state = lock(places);
        let ready = |p: &Places| p.free > 0;
        let deadline = Some(Instant::now() + wait);
        let Some(mut state) = wait_turn(places, state, line_of, ready, deadline) else {
            return false;
        };
        state.free -= 1;
        state.served.push(who);
        if state.free > 0 {
            state.line.wake_first();
        }
        true
    }

    fn give_back(places: &Mutex<Places>) {
        let mut state = lock(places);
        state.free += 1;
        state.line.wake_first();
    }

    #[test]
    fn waiters_are_served_in_the_order_they_came() {
        let places = Arc::new(Mutex::new(Places::default()));
        let mut waiters = Vec::new();
        for n in 0..4 {
            let shared = places.clone();
            waiters.push(std::thread::spawn(move || {
                assert!(take(&shared, Duration::from_secs(30), n));
            }));
            // Each in line before the next starts.
            while lock(&places).line.len() <= n {
                std::thread::yield_now();
            }
        }
        for _ in 0..4 {
            give_back(&places);
        }
        waiters.into_iter().for_each(|w| w.join().unwrap());
        assert_eq!(lock(&places).served, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_waiter_that_gives_up_lets_the_next_in_and_several_places_serve_several() {
        let places = Arc::new(Mutex::new(Places::default()));
        let started = Instant::now();
        assert!(!take(&places, Duration::from_millis(50), 0));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(lock(&places).line.is_empty());
        // Two wait; two places given back at once: the first takes one and wakes the next.
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let places = places.clone();
                std::thread::spawn(move || take(&places, Duration::from_secs(30), 1))
            })
            .collect();
        while lock(&places).line.len() < 2 {
            std::thread::yield_now();
        }
        {
            let mut state = lock(&places);
            state.free = 2;
            state.line.wake_first();
        }
        assert!(waiters.into_iter().all(|w| w.join().unwrap()));
    }
}
