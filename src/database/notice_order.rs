//! The order in which a database's changes are announced to its subscribers and watchers:
//! the order they were made in. Commits to one database may end together (they can share
//! one storage commit) and their threads then wake in any order, so each change takes a
//! ticket while its maker holds the database's write lock, and is announced only once the
//! changes with earlier tickets have been.

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long an announcement waits for earlier ones (normally a thread's wake-up away)
/// before it goes on out of order rather than wait longer.
pub(super) const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// Tickets given out and announced.
#[derive(Default)]
pub(super) struct NoticeOrder {
    line: Mutex<Line>,
    moved: Condvar,
}

#[derive(Default)]
struct Line {
    /// The number the next ticket gets.
    issued: u64,
    /// Every ticket numbered below this is done (announced or given up).
    done_below: u64,
    /// Tickets done out of turn (at or above `done_below`).
    done_early: BTreeSet<u64>,
    /// Tickets waiting for their turn (the lone commit's case, none, needs no wake-up).
    waiting: usize,
}

impl Line {
    fn done(&mut self, number: u64) {
        if number != self.done_below {
            self.done_early.insert(number);
            return;
        }
        self.done_below += 1;
        while self.done_early.remove(&self.done_below) {
            self.done_below += 1;
        }
    }
}

impl NoticeOrder {
    /// The next place in line. Take it while holding the database's write lock, so that
    /// places follow the order changes are made in.
    pub(super) fn ticket(&self) -> Ticket<'_> {
        let mut line = self.line();
        let number = line.issued;
        line.issued += 1;
        Ticket {
            order: self,
            number,
            used: false,
        }
    }

    fn line(&self) -> MutexGuard<'_, Line> {
        self.line.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks ticket `number` done and wakes the tickets waiting, if any.
    fn done(&self, mut line: MutexGuard<'_, Line>, number: u64) {
        line.done(number);
        if line.waiting > 0 {
            self.moved.notify_all();
        }
    }
}

/// A place in line. Dropped unused (its change was not made), it gives its place up at once.
pub(super) struct Ticket<'a> {
    order: &'a NoticeOrder,
    number: u64,
    used: bool,
}

impl Ticket<'_> {
    /// Runs `announce` once the earlier tickets are done (or [`WAIT_LIMIT`] has passed),
    /// then lets the next one go.
    pub(super) fn announce(mut self, announce: impl FnOnce()) {
        self.used = true;
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut line = self.order.line();
        while line.done_below < self.number {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            line.waiting += 1;
            line = self
                .order
                .moved
                .wait_timeout(line, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            line.waiting -= 1;
        }
        // Announced under the line's lock: the next ticket cannot slip in between.
        announce();
        self.order.done(line, self.number);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.order.done(self.order.line(), self.number);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_announced_in_ticket_order_whatever_order_their_threads_finish() {
        let order = NoticeOrder::default();
        let seen = Mutex::new(Vec::new());
        let mut tickets: Vec<_> = (0..5).map(|_| Some(order.ticket())).collect();
        std::thread::scope(|scope| {
            // The latest first (given time to go ahead); ticket 2's change is not made.
            for n in [4, 3, 1, 0] {
                let ticket = tickets[n].take().unwrap();
                let seen = &seen;
                scope.spawn(move || ticket.announce(|| seen.lock().unwrap().push(n)));
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(tickets[2].take());
        });
        assert_eq!(seen.into_inner().unwrap(), vec![0, 1, 3, 4]);
        assert_eq!(order.line().done_below, 5);
    }
}
