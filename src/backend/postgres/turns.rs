//! The write turns running on a backend's threads ([`crate::backend::Backend::write_turn`]),
//! each with the connection it holds a database's lock on, if any
//! ([`crate::backend::Backend::hold_for_turn`]). A thread's calls during its turn run on the
//! connection it holds: that connection's writes take the same lock again at transaction
//! level, which PostgreSQL always grants to the session holding it, while another
//! connection's would wait for the turn to end. So a call made while another call of the
//! same thread has that connection (none does) is refused rather than sent elsewhere, and
//! turns do not nest (no caller begins one inside another).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::{self, ThreadId};

use crate::entry::EntryId;

/// A thread's turn: the database held and the connection holding it, once asked.
struct Turn<C> {
    thread: ThreadId,
    held: Option<Held<C>>,
}

/// A connection holding a database's lock at session level, and the database. The
/// connection is `None` while a call of the turn's thread uses it.
pub(super) struct Held<C> {
    pub db: EntryId,
    pub conn: Option<C>,
    /// The connection's `idle_session_timeout` before the hold bounded it, to set again
    /// (`None`: the server has no such setting).
    pub idle_limit_before: Option<String>,
}

/// The turns running now.
pub(super) struct Turns<C> {
    running: Mutex<Vec<Turn<C>>>,
    /// How many of them hold a database: while none does, every call of the backend (reads
    /// included) learns that it has no held connection to use without taking the mutex.
    holding: AtomicUsize,
}

impl<C> Default for Turns<C> {
    fn default() -> Self {
        Turns {
            running: Mutex::new(Vec::new()),
            holding: AtomicUsize::new(0),
        }
    }
}

impl<C> Turns<C> {
    fn running(&self) -> MutexGuard<'_, Vec<Turn<C>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This thread's turn.
    fn mine(running: &mut [Turn<C>]) -> Option<&mut Turn<C>> {
        let me = thread::current().id();
        running.iter_mut().find(|t| t.thread == me)
    }

    /// Begins a turn on this thread; false (nothing begun) if it holds one already.
    pub fn begin(&self) -> bool {
        let mut running = self.running();
        if Self::mine(&mut running).is_some() {
            return false;
        }
        running.push(Turn {
            thread: thread::current().id(),
            held: None,
        });
        true
    }

    /// Ends this thread's turn, returning what it held.
    pub fn end(&self) -> Option<Held<C>> {
        let me = thread::current().id();
        let mut running = self.running();
        let at = running.iter().position(|t| t.thread == me)?;
        let held = running.remove(at).held;
        if held.is_some() {
            self.holding.fetch_sub(1, Ordering::Release);
        }
        held
    }

    /// The database this thread's turn holds: `None` outside a turn, `Some(None)` in a turn
    /// that holds none yet.
    pub fn held_db(&self) -> Option<Option<EntryId>> {
        let mut running = self.running();
        Self::mine(&mut running).map(|t| t.held.as_ref().map(|h| h.db))
    }

    /// Records that this thread's turn holds `db` through `conn` (with the idle limit to
    /// set again when it ends).
    pub fn hold(&self, db: EntryId, conn: C, idle_limit_before: Option<String>) {
        if let Some(turn) = Self::mine(&mut self.running()) {
            self.holding.fetch_add(1, Ordering::Release);
            turn.held = Some(Held {
                db,
                conn: Some(conn),
                idle_limit_before,
            });
        }
    }

    /// Takes the connection this thread's turn holds, for one call (given back with
    /// [`Turns::give_back`]): `Ok(None)` when it holds none, `Err(())` when another call of
    /// this thread has it.
    #[allow(clippy::result_unit_err)]
    pub fn take_held(&self) -> Result<Option<C>, ()> {
        // This thread's own hold, if any, was counted before this call (program order).
        if self.holding.load(Ordering::Acquire) == 0 {
            return Ok(None);
        }
        let mut running = self.running();
        match Self::mine(&mut running).and_then(|t| t.held.as_mut()) {
            None => Ok(None),
            Some(held) => held.conn.take().map(Some).ok_or(()),
        }
    }

    /// Gives back the connection [`Turns::take_held`] took.
    pub fn give_back(&self, conn: C) {
        let mut running = self.running();
        if let Some(held) = Self::mine(&mut running).and_then(|t| t.held.as_mut()) {
            held.conn = Some(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_lends_what_it_holds_to_its_own_thread_only() {
        let turns = Turns::<u32>::default();
        let db = EntryId::from_bytes([7; 32]);
        assert_eq!(turns.held_db(), None);
        assert!(turns.begin());
        assert!(!turns.begin(), "turns do not nest");
        assert_eq!(turns.held_db(), Some(None));
        assert_eq!(turns.take_held(), Ok(None));
        turns.hold(db, 1, None);
        assert_eq!(turns.held_db(), Some(Some(db)));
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(turns.held_db(), None);
                assert_eq!(turns.take_held(), Ok(None));
            });
        });
        assert_eq!(turns.take_held(), Ok(Some(1)));
        assert_eq!(turns.take_held(), Err(()), "one call at a time");
        turns.give_back(1);
        let held = turns.end().expect("held");
        assert_eq!((held.db, held.conn), (db, Some(1)));
        assert_eq!(turns.held_db(), None);
        assert_eq!(
            turns.holding.load(Ordering::Acquire),
            0,
            "calls skip the mutex again"
        );
    }
}
