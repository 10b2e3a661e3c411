//! The connections one instance keeps to PostgreSQL, shared by its threads: a call takes an
//! idle one, or makes one while there are fewer than the pool's size, or waits for one to
//! come back. So a read does not wait behind another thread's commit (which may itself wait
//! for a database's lock, up to `lock_timeout`), and commits to different databases go to
//! the server side by side. After a burst of calls, the connections beyond one that then
//! stay idle for the pool's idle limit (the URL's `idle_timeout`) are closed by a thread of
//! the pool's own, which runs only while the pool holds more than one connection: an
//! instance that has gone quiet holds one connection to the server, not `max_connections`.
//! Threads waiting for a connection are served first come first.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::line::{self, Line};

/// Connections of one pool: those idle, each with when it came back (the most recent
/// last: that one is lent first, so the ones at the front are those idle longest), and how
/// many are lent or being made.
struct Connections<C> {
    idle: Vec<(C, Instant)>,
    out: usize,
    /// The threads waiting for a connection.
    line: Line,
    /// A thread closes the connections idle too long ([`close_idle`]).
    closer_running: bool,
    /// The pool is being dropped: its closer ends.
    stopping: bool,
}

impl<C> Connections<C> {
    /// Takes out the idle connections that have waited `limit` or longer, except the one
    /// the pool keeps when none is lent, to be closed by the caller outside the lock.
    fn take_stale(&mut self, limit: Duration) -> Vec<C> {
        let keep = usize::from(self.out == 0);
        let stale = self
            .idle
            .iter()
            .take_while(|(_, since)| since.elapsed() >= limit)
            .count()
            .min(self.idle.len().saturating_sub(keep));
        self.idle.drain(..stale).map(|(conn, _)| conn).collect()
    }

    /// Connections held, idle or lent (or being made).
    fn held(&self) -> usize {
        self.idle.len() + self.out
    }

    /// True when a connection can be lent: one is idle, or there is room to make one (in a
    /// pool of `size`).
    fn can_lend(&self, size: usize) -> bool {
        !self.idle.is_empty() || self.out < size
    }

    /// True while the pool holds more connections than the one it keeps.
    fn beyond_one(&self) -> bool {
        self.held() > 1
    }

    /// How long until the connection idle longest has waited `limit` (`limit` when none is
    /// idle: one given back later waits at least that).
    fn until_next_stale(&self, limit: Duration) -> Duration {
        self.idle
            .first()
            .map_or(limit, |(_, since)| limit.saturating_sub(since.elapsed()))
    }
}

/// What a pool shares with its closer thread.
struct Shared<C> {
    connections: Mutex<Connections<C>>,
    /// Tells the closer that the pool is going.
    stop: Condvar,
    size: usize,
    idle_limit: Duration,
}

impl<C> Shared<C> {
    fn connections(&self) -> MutexGuard<'_, Connections<C>> {
        line::lock(&self.connections)
    }
}

/// At most `size` connections of type `C`.
pub(super) struct Pool<C: Send + 'static> {
    shared: Arc<Shared<C>>,
    /// The closer thread last started (it may have ended since), joined when the pool goes.
    closer: Mutex<Option<JoinHandle<()>>>,
    /// False in tests of the closing done by [`Pool::take`] alone.
    closes_in_background: bool,
}

/// A connection taken from a [`Pool`], back in it when dropped.
pub(super) struct Lent<'a, C: Send + 'static> {
    pool: &'a Pool<C>,
    conn: Option<C>,
}

impl<C: Send + 'static> Pool<C> {
    /// A pool of at most `size` connections (at least 1), holding `first`, closing those
    /// beyond one after `idle_limit` idle.
    pub(super) fn new(first: C, size: usize, idle_limit: Duration) -> Pool<C> {
        Pool {
            shared: Arc::new(Shared {
                connections: Mutex::new(Connections {
                    idle: vec![(first, Instant::now())],
                    out: 0,
                    line: Line::default(),
                    closer_running: false,
                    stopping: false,
                }),
                stop: Condvar::new(),
                size: size.max(1),
                idle_limit,
            }),
            closer: Mutex::new(None),
            closes_in_background: true,
        }
    }

    fn connections(&self) -> MutexGuard<'_, Connections<C>> {
        self.shared.connections()
    }

    /// Connections held now, idle or lent (or being made).
    pub(super) fn open(&self) -> usize {
        self.connections().held()
    }

    /// An idle connection that is still `usable` (told how long it was idle, it may look
    /// briefly; others are dropped), or a new one from `make` while there are fewer than the
    /// pool's size; otherwise waits for one to come back, behind the threads already
    /// waiting, at most `wait`, then [`Error::Busy`]. A failure of `make` frees its place.
    /// Connections idle too long are closed first (if the closer thread could not start).
    pub(super) fn take(
        &self,
        usable: impl Fn(&mut C, Duration) -> bool,
        make: impl FnOnce() -> Result<C>,
        wait: Duration,
    ) -> Result<Lent<'_, C>> {
        let deadline = Instant::now() + wait;
        let mut connections = self.connections();
        let stale = connections.take_stale(self.shared.idle_limit);
        if !stale.is_empty() {
            drop(connections);
            drop(stale); // closing may wait on the network: not while holding the lock
            connections = self.connections();
        }
        let size = self.shared.size;
        if !connections.line.is_empty() || !connections.can_lend(size) {
            let free = |c: &Connections<C>| c.can_lend(size);
            connections = line::wait_turn(
                &self.shared.connections,
                connections,
                |c| &mut c.line,
                free,
                Some(deadline),
            )
            .ok_or_else(|| {
                Error::Busy(format!(
                    "no connection to PostgreSQL came free within {} ms (max_connections={size})",
                    wait.as_millis(),
                ))
            })?;
        }
        while let Some((mut conn, since)) = connections.idle.pop() {
            if usable(&mut conn, since.elapsed()) {
                connections.out += 1;
                self.wake_next_if_free(&connections);
                return Ok(self.lend(conn));
            }
        }
        // None idle (or none usable: their places are free), so there is room.
        connections.out += 1;
        self.wake_next_if_free(&connections);
        drop(connections);
        match make() {
            Ok(conn) => Ok(self.lend(conn)),
            Err(e) => {
                let mut connections = self.connections();
                connections.out -= 1;
                connections.line.wake_first();
                Err(e)
            }
        }
    }

    /// Wakes the thread first in line if a connection can still be lent.
    fn wake_next_if_free(&self, connections: &Connections<C>) {
        if connections.can_lend(self.shared.size) {
            connections.line.wake_first();
        }
    }

    /// Takes back a connection [`Lent::keep`] kept (`None`: it was closed, its place is
    /// freed).
    pub(super) fn give_back(&self, conn: Option<C>) {
        drop(Lent { pool: self, conn });
    }

    fn lend(&self, conn: C) -> Lent<'_, C> {
        Lent {
            pool: self,
            conn: Some(conn),
        }
    }

    /// Starts the closer thread unless it runs, while the pool holds more than one
    /// connection. If it cannot start, [`Pool::take`] closes what waited too long.
    fn start_closer(&self, connections: &mut Connections<C>) {
        if !self.closes_in_background || connections.closer_running || !connections.beyond_one() {
            return;
        }
        let shared = self.shared.clone();
        let started = std::thread::Builder::new()
            .name("mnemo-pg-idle".into())
            .spawn(move || close_idle(&shared));
        if let Ok(handle) = started {
            connections.closer_running = true;
            // The one it replaces has ended or is ending (it found one connection or none).
            *self.closer.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        }
    }
}

/// The closer thread: closes the connections beyond one as they pass the idle limit, and
/// ends once the pool holds one connection (or none) or is dropped.
fn close_idle<C>(shared: &Shared<C>) {
    let mut connections = shared.connections();
    while !connections.stopping {
        let stale = connections.take_stale(shared.idle_limit);
        if !stale.is_empty() {
            drop(connections);
            drop(stale); // closing may wait on the network: not while holding the lock
            connections = shared.connections();
            continue;
        }
        if !connections.beyond_one() {
            connections.closer_running = false;
            return;
        }
        let wait = connections.until_next_stale(shared.idle_limit);
        connections = shared
            .stop
            .wait_timeout(connections, wait)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

impl<C: Send + 'static> Drop for Pool<C> {
    fn drop(&mut self) {
        self.connections().stopping = true;
        self.shared.stop.notify_all();
        let closer = self
            .closer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(closer) = closer {
            let _ = closer.join();
        }
    }
}

impl<C: Send + 'static> Lent<'_, C> {
    /// The connection, kept by the caller past this borrow of the pool: it still counts as
    /// lent until given back with [`Pool::give_back`].
    pub(super) fn keep(mut self) -> C {
        let conn = self.conn.take().expect("lent until dropped");
        std::mem::forget(self); // holds nothing else to drop: the pool's count stays
        conn
    }
}

impl<C: Send + 'static> Deref for Lent<'_, C> {
    type Target = C;

    fn deref(&self) -> &C {
        self.conn.as_ref().expect("lent until dropped")
    }
}

impl<C: Send + 'static> DerefMut for Lent<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        self.conn.as_mut().expect("lent until dropped")
    }
}

impl<C: Send + 'static> Drop for Lent<'_, C> {
    fn drop(&mut self) {
        let mut connections = self.pool.connections();
        connections.out -= 1;
        if let Some(conn) = self.conn.take() {
            connections.idle.push((conn, Instant::now()));
        }
        self.pool.start_closer(&mut connections);
        connections.line.wake_first();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A connection numbered in the order it was made; `usable` unless `closed`.
    struct Fake {
        number: usize,
        closed: bool,
    }

    fn make(made: &AtomicUsize) -> impl FnOnce() -> Result<Fake> + '_ {
        || {
            let number = made.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Fake {
                number,
                closed: false,
            })
        }
    }

    fn usable(conn: &mut Fake, _idle: Duration) -> bool {
        !conn.closed
    }

    const WAIT: Duration = Duration::from_millis(50);
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn an_idle_connection_is_lent_again_before_another_is_made() {
        let made = AtomicUsize::new(0);
        let pool = Pool::new(make(&made)().unwrap(), 3, HOUR);
        let first = pool.take(usable, make(&made), WAIT).unwrap().number;
        let again = pool.take(usable, make(&made), WAIT).unwrap().number;
        assert_eq!((first, again, made.load(Ordering::SeqCst)), (1, 1, 1));
    }

    #[test]
    fn connections_are_made_up_to_the_size_then_a_taker_waits_and_gives_up_busy() {
        let made = AtomicUsize::new(0);
        let pool = Pool::new(make(&made)().unwrap(), 2, HOUR);
        let a = pool.take(usable, make(&made), WAIT).unwrap();
        let b = pool.take(usable, make(&made), WAIT).unwrap();
        assert_eq!((a.number, b.number), (1, 2));
        let started = Instant::now();
        let third = pool.take(usable, make(&made), WAIT);
        assert!(matches!(third, Err(Error::Busy(_))), "{:?}", third.err());
        assert!(started.elapsed() >= WAIT);
        assert_eq!(made.load(Ordering::SeqCst), 2);
        drop(a);
        assert_eq!(pool.take(usable, make(&made), WAIT).unwrap().number, 1);
    }

    #[test]
    fn a_waiting_taker_gets_the_connection_given_back() {
        let made = Arc::new(AtomicUsize::new(0));
        let pool = Arc::new(Pool::new(make(&made)().unwrap(), 1, HOUR));
        let held = pool.take(usable, make(&made), WAIT).unwrap();
        let waiter = {
            let (pool, made) = (pool.clone(), made.clone());
            std::thread::spawn(move || {
                let lent = pool.take(usable, make(&made), Duration::from_secs(20));
                lent.map(|c| c.number)
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        assert_eq!(waiter.join().unwrap().unwrap(), 1);
        assert_eq!(made.load(Ordering::SeqCst), 1);
    }

    /// A connection given back goes to the thread that waited longest, not to one that
    /// asks just then; waiters are served in the order they came. (Before, any thread
    /// could take it: under load some waited past their bound while others got in.)
    #[test]
    fn waiting_takers_are_served_in_the_order_they_came() {
        let made = Arc::new(AtomicUsize::new(0));
        let pool = Arc::new(Pool::new(make(&made)().unwrap(), 1, HOUR));
        let held = pool.take(usable, make(&made), WAIT).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiters: Vec<_> = (0..3)
            .map(|n| {
                let (shared, made, tx) = (pool.clone(), made.clone(), tx.clone());
                let waiter = std::thread::spawn(move || {
                    let lent = shared.take(usable, make(&made), Duration::from_secs(20));
                    tx.send(n).unwrap();
                    // Kept a moment, so that a newcomer would find it given back.
                    std::thread::sleep(Duration::from_millis(100));
                    lent.map(|c| c.number)
                });
                while pool.connections().line.len() <= n {
                    std::thread::yield_now();
                }
                waiter
            })
            .collect();
        drop(held);
        // A newcomer asking now waits behind all three, and gives up first.
        let newcomer = pool.take(usable, make(&made), WAIT);
        assert!(matches!(newcomer, Err(Error::Busy(_))), "a newcomer got in");
        let order: Vec<_> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(order, vec![0, 1, 2]);
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap().unwrap(), 1);
        }
    }

    /// How many connections `pool` holds idle.
    fn idle(pool: &Pool<Fake>) -> usize {
        pool.connections().idle.len()
    }

    #[test]
    fn connections_idle_past_the_limit_are_closed_at_the_next_take_but_one_is_kept() {
        let made = AtomicUsize::new(0);
        let limit = Duration::from_millis(40);
        let mut pool = Pool::new(make(&made)().unwrap(), 3, limit);
        pool.closes_in_background = false;
        let burst: Vec<_> = (0..3)
            .map(|_| pool.take(usable, make(&made), WAIT).unwrap())
            .collect();
        drop(burst);
        assert_eq!(idle(&pool), 3);
        // Taken again at once: nothing has waited long enough.
        drop(pool.take(usable, make(&made), WAIT).unwrap());
        assert_eq!(idle(&pool), 3);
        std::thread::sleep(limit * 2);
        let lent = pool.take(usable, make(&made), WAIT).unwrap();
        assert_eq!((idle(&pool), made.load(Ordering::SeqCst)), (0, 3));
        drop(lent);
        std::thread::sleep(limit * 2);
        // The one kept when none is lent.
        drop(pool.take(usable, make(&made), WAIT).unwrap());
        assert_eq!((idle(&pool), made.load(Ordering::SeqCst)), (1, 3));
    }

    /// Waits up to 10 s for `done`.
    fn within_10s(done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    #[test]
    fn connections_idle_past_the_limit_are_closed_without_a_call_and_the_closer_ends() {
        let made = AtomicUsize::new(0);
        let pool = Pool::new(make(&made)().unwrap(), 3, Duration::from_millis(40));
        assert!(
            !pool.connections().closer_running,
            "one connection: no closer"
        );
        let burst: Vec<_> = (0..3)
            .map(|_| pool.take(usable, make(&made), WAIT).unwrap())
            .collect();
        drop(burst);
        assert!(within_10s(|| idle(&pool) == 1), "{} idle", idle(&pool));
        assert!(within_10s(|| !pool.connections().closer_running));
        // Another burst starts another closer.
        let burst: Vec<_> = (0..2)
            .map(|_| pool.take(usable, make(&made), WAIT).unwrap())
            .collect();
        drop(burst);
        assert!(within_10s(|| idle(&pool) == 1), "{} idle", idle(&pool));
        assert_eq!(made.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn dropping_a_pool_ends_its_closer_at_once() {
        let made = AtomicUsize::new(0);
        let pool = Pool::new(make(&made)().unwrap(), 2, HOUR);
        let burst: Vec<_> = (0..2)
            .map(|_| pool.take(usable, make(&made), WAIT).unwrap())
            .collect();
        drop(burst);
        assert!(pool.connections().closer_running);
        let (dropped, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(pool);
            dropped.send(()).unwrap();
        });
        done.recv_timeout(Duration::from_secs(10))
            .expect("the pool's drop waited for its closer's hour");
    }

    #[test]
    fn a_closed_connection_is_dropped_and_a_failed_one_frees_its_place() {
        let made = AtomicUsize::new(0);
        let pool = Pool::new(make(&made)().unwrap(), 1, HOUR);
        pool.take(usable, make(&made), WAIT).unwrap().closed = true;
        assert_eq!(pool.take(usable, make(&made), WAIT).unwrap().number, 2);
        pool.take(usable, make(&made), WAIT).unwrap().closed = true;
        let refused = pool.take(usable, || Err(Error::Storage("down".into())), WAIT);
        assert!(matches!(refused, Err(Error::Storage(_))));
        assert_eq!(pool.take(usable, make(&made), WAIT).unwrap().number, 3);
    }
}
