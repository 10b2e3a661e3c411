//! Group commit: entries stored by several threads at about the same time share one SQLite
//! transaction, so one WAL sync makes all of them durable.
//!
//! Threads take the writer connection one at a time. A thread that finds no transaction open
//! begins one; a thread that finds one open (left by threads that wrote their rows and are
//! waiting) joins it, writing inside a savepoint so that a failure of its own undoes only its
//! rows. Having written, a thread commits at once when no other thread is queued for the
//! connection (so a lone writer is never delayed) or when the group holds [`MAX_GROUP`]
//! members; otherwise it leaves the transaction open for the next thread and waits for the
//! group's commit. Every caller returns only once its own rows are durable, or with the error
//! that stopped them. Any other use of the connection ([`GroupWriter::exclusive`]) commits an
//! open group first, so it never runs inside someone else's transaction.
//!
//! A commit can also take a **turn** ([`GroupWriter::turn`]): the writer is its thread's
//! alone, without its mutex being held, while the commit writes its rows and, if it must,
//! reads what it builds on; its reads ([`GroupWriter::in_turn`]) run on the writer, inside
//! the open group, so they see rows staged by earlier turns that are not durable yet. A
//! turn that ends with others queued leaves its rows staged ([`Staged`]) and its caller
//! waits for them after letting go of its database, so the next commit to the same database
//! can join the group. Threads on their way to a turn (waiting for a database's lock) count
//! as company for turns ([`GroupWriter::announce`]), but not for other writes: those wait
//! for their commit while their caller may hold the very lock such a thread waits for.
//!
//! Whoever waits for a group's commit waits at most [`SETTLE_AFTER`] for company, then
//! commits the group itself, so a thread that never comes delays others, never stops them.
//!
//! A thread waits for the writer (held by another thread's write, or its turn) at most the
//! file's busy timeout, then fails with [`Error::Busy`], as it would have waited for
//! another process's lock: a write waiting on another process makes those queued behind it
//! wait about that long, not that long once more for each write ahead. Only a member
//! committing the group its rows are in waits as long as it takes.

use std::cell::Cell;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::readers::BUSY_TIMEOUT;
use super::sql_error;
use crate::backend::Staged as StagedEntries;
use crate::error::{Error, Result};

/// Most writes that share one transaction: a bound on how long the first member of a busy
/// group waits for its commit.
pub const MAX_GROUP: usize = 64;

/// How long a staged commit waits for company before committing its group itself: a bound
/// for when the thread the group was left open for never takes its turn (its commit failed
/// on the way, or it waits on a long operation of its database). A group normally commits
/// within a few milliseconds.
pub const SETTLE_AFTER: Duration = Duration::from_millis(100);

/// How long a thread waits for the writer when it need not have it (ending an
/// announcement), or before looking again whether it still needs it (settling a group).
const GLANCE: Duration = Duration::from_millis(5);

thread_local! {
    /// The address of the [`GroupWriter`] whose turn this thread holds (0: none). Only
    /// compared, never dereferenced.
    static TURN_OF: Cell<usize> = const { Cell::new(0) };
}

/// The writer connection, with the group transaction open on it, if any.
pub struct GroupWriter {
    /// A lock with timed waits (std's has none): held while a statement runs, which may
    /// wait for another process's lock up to the busy timeout.
    writer: parking_lot::Mutex<Writer>,
    /// A thread holds a turn: nobody else may use the connection. Changed only by a thread
    /// holding `writer`; locked only for a moment (so that waiting for a turn to end is
    /// bounded, which waiting on `writer` with a condition variable would not be).
    turn: Mutex<bool>,
    /// Signalled when a turn ends.
    turn_ended: Condvar,
    /// A thread panicked while it held the writer outside a turn (a bug): the connection
    /// may be inside a transaction nobody will end, so every later use fails.
    broken: AtomicBool,
    /// Threads waiting for the writer to store an entry: while there are any, a member
    /// leaves the transaction open for them rather than committing.
    queued: AtomicUsize,
    /// Threads on their way to a turn ([`GroupWriter::announce`]): company for turns only.
    announced: AtomicUsize,
    /// [`SETTLE_AFTER`], in milliseconds (tests that need a staged commit to stay staged
    /// make it longer).
    settle_after_ms: AtomicU64,
    /// How long a thread waits for the writer: [`BUSY_TIMEOUT`], in milliseconds (tests
    /// make it shorter).
    lock_wait_ms: AtomicU64,
}

struct Writer {
    conn: Connection,
    open: Option<Group>,
    /// The turn stored an entry in the open group.
    staged_in_turn: bool,
    /// How a commit of a group holding rows the turn stored failed, if one did before the
    /// turn ended (a full group committed to make room, a rollback, a change of its own):
    /// the turn then fails, since rows it reported stored were not.
    lost_in_turn: Option<Error>,
    /// Commits let through before one fails (see [`GroupWriter::fail_commit_in`]);
    /// `usize::MAX`: none fails.
    #[cfg(test)]
    fail_commit_in: usize,
}

/// The transaction open on the writer and the threads waiting for its commit.
struct Group {
    outcome: Arc<Outcome>,
    members: usize,
}

/// How a group's commit ended, for the members waiting on it.
#[derive(Default)]
struct Outcome {
    ended: Mutex<Option<std::result::Result<(), Failure>>>,
    done: Condvar,
}

/// A failed commit, kept so that every member gets an error of its own.
#[derive(Clone)]
enum Failure {
    Corrupt(String),
    Storage(String),
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Error {
        match failure {
            Failure::Corrupt(m) => Error::Corrupt(m),
            Failure::Storage(m) => Error::Storage(format!("the shared commit failed: {m}")),
        }
    }
}

impl Outcome {
    fn publish(&self, result: &Result<()>) {
        let ended = result.as_ref().map(drop).map_err(|e| match e {
            Error::Corrupt(m) => Failure::Corrupt(m.clone()),
            e => Failure::Storage(e.to_string()),
        });
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(ended);
        self.done.notify_all();
    }

    /// How the group's commit ended, if it has.
    fn ended(&self) -> Option<Result<()>> {
        let ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        ended.clone().map(|e| e.map_err(Error::from))
    }

    /// Waits for the group's commit, for at most `limit` (`None`: the commit has not ended).
    /// The committing thread holds the writer while it runs; were it to panic there (leaving
    /// the writer broken), nobody would publish: `abandoned` is checked at least every second.
    fn wait_for(&self, limit: Duration, abandoned: impl Fn() -> bool) -> Option<Result<()>> {
        let deadline = Instant::now() + limit;
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(ended) = ended.as_ref() {
                return Some(ended.clone().map_err(Error::from));
            }
            if abandoned() {
                return Some(Err(Error::Internal(
                    "sqlite: the shared commit was abandoned (a panic while committing)".into(),
                )));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            ended = self
                .done
                .wait_timeout(ended, left.min(Duration::from_secs(1)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Rows a turn left in an open group: see [`GroupWriter::turn`].
pub struct Staged {
    writer: Arc<GroupWriter>,
    outcome: Arc<Outcome>,
}

impl StagedEntries for Staged {
    fn wait(&self) -> Result<()> {
        self.writer.wait_for_commit(&self.outcome)
    }

    fn settled(&self) -> Option<Result<()>> {
        self.outcome.ended()
    }

    fn settle_now(&self) -> Result<()> {
        self.writer.settle(&self.outcome)
    }
}

/// The writer connection, exclusively, with no transaction of others open on it.
pub struct Exclusive<'a>(Locked<'a>);

/// The writer, locked by this thread; left broken if the thread panics meanwhile (its
/// connection may be inside a transaction).
struct Locked<'a> {
    writer: parking_lot::MutexGuard<'a, Writer>,
    broken: &'a AtomicBool,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        &self.writer
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        &mut self.writer
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.broken.store(true, Ordering::Release);
        }
    }
}

impl std::ops::Deref for Exclusive<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0.conn
    }
}

impl std::ops::DerefMut for Exclusive<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0.conn
    }
}

impl GroupWriter {
    /// Wraps the connection that writes.
    pub fn new(conn: Connection) -> GroupWriter {
        GroupWriter {
            writer: parking_lot::Mutex::new(Writer {
                conn,
                open: None,
                staged_in_turn: false,
                lost_in_turn: None,
                #[cfg(test)]
                fail_commit_in: usize::MAX,
            }),
            turn: Mutex::new(false),
            turn_ended: Condvar::new(),
            broken: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            announced: AtomicUsize::new(0),
            settle_after_ms: AtomicU64::new(SETTLE_AFTER.as_millis() as u64),
            lock_wait_ms: AtomicU64::new(BUSY_TIMEOUT.as_millis() as u64),
        }
    }

    /// The writer, once no other thread holds it or its turn: waits at most the lock wait
    /// ([`BUSY_TIMEOUT`]), then [`Error::Busy`].
    fn lock(&self) -> Result<Locked<'_>> {
        self.lock_within(Duration::from_millis(
            self.lock_wait_ms.load(Ordering::Relaxed),
        ))
    }

    /// The writer, waited for at most `within`.
    fn lock_within(&self, within: Duration) -> Result<Locked<'_>> {
        let deadline = Instant::now() + within;
        let kept = || {
            Error::Busy(format!(
                "sqlite: this process's other writes to the file kept its writer for more \
                 than {} ms (waiting for another process's lock, or a long change); retry",
                within.as_millis()
            ))
        };
        loop {
            if !self.in_turn() && !self.wait_for_no_turn(deadline) {
                return Err(kept());
            }
            let writer = self.writer.try_lock_until(deadline).ok_or_else(kept)?;
            // Another thread may have begun a turn since: then wait for it too.
            if self.in_turn() || !*self.turn_held() {
                if self.broken.load(Ordering::Acquire) {
                    return Err(broken());
                }
                return Ok(Locked {
                    writer,
                    broken: &self.broken,
                });
            }
        }
    }

    /// Waits until no thread holds a turn, until `deadline` at most; false if one still
    /// does then.
    fn wait_for_no_turn(&self, deadline: Instant) -> bool {
        let mut turn = self.turn_held();
        while *turn {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            turn = self
                .turn_ended
                .wait_timeout(turn, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Whether a thread holds a turn (see [`GroupWriter::turn`]).
    fn turn_held(&self) -> std::sync::MutexGuard<'_, bool> {
        self.turn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while this thread holds a turn of this writer.
    pub fn in_turn(&self) -> bool {
        TURN_OF.with(Cell::get) == self as *const GroupWriter as usize
    }

    /// Counts this thread as on its way to a turn it will take (`turn(true, ..)`) or
    /// withdraw ([`GroupWriter::withdraw`]).
    pub fn announce(&self) {
        self.announced.fetch_add(1, Ordering::AcqRel);
    }

    /// Ends an announcement without a turn. Were this the last thread a group was left open
    /// for, the group is committed now, unless another thread keeps the writer past
    /// [`GLANCE`] (which then commits it, or its members do after [`SETTLE_AFTER`]).
    pub fn withdraw(&self) {
        self.announced.fetch_sub(1, Ordering::AcqRel);
        if self.company_for_turns() == 0 {
            if let Ok(mut writer) = self.lock_within(GLANCE) {
                if writer.open.is_some() && self.company_for_turns() == 0 {
                    let _ = writer.commit_group(); // its members get the outcome
                }
            }
        }
    }

    /// Threads a turn's rows may wait for: those queued for the writer and those on their
    /// way to a turn.
    fn company_for_turns(&self) -> usize {
        self.queued.load(Ordering::Acquire) + self.announced.load(Ordering::Acquire)
    }

    /// Runs `work` as a turn: see the module's documentation. Entries `work` stores with
    /// [`GroupWriter::write_in_group`] are written into the group and left there when
    /// others are queued (returned as [`Staged`]); otherwise the group is committed before
    /// this returns. `announced`: this thread called [`GroupWriter::announce`] for it.
    /// Fails when a commit of rows the turn stored failed, also one made before it ended.
    /// A turn asked for inside this thread's turn is part of it: `work` runs at once, and
    /// the outer turn commits what it stores.
    pub fn turn(
        self: &Arc<Self>,
        announced: bool,
        work: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Option<Arc<dyn StagedEntries>>> {
        if self.in_turn() {
            if announced {
                self.announced.fetch_sub(1, Ordering::AcqRel);
            }
            return work().map(|()| None);
        }
        let waiting = if announced {
            &self.announced
        } else {
            self.queued.fetch_add(1, Ordering::AcqRel);
            &self.queued
        };
        let locked = self.lock();
        waiting.fetch_sub(1, Ordering::AcqRel);
        let mut writer = locked?;
        *self.turn_held() = true;
        writer.staged_in_turn = false;
        writer.lost_in_turn = None;
        drop(writer);
        let holder = TurnHolder::take(self);
        let worked = work();
        let mut writer = holder.end();
        let staged = std::mem::take(&mut writer.staged_in_turn);
        // Rows built on the lost ones are committed (what the turn read after the loss was
        // storage's truth), and the turn fails.
        let worked = match writer.lost_in_turn.take() {
            Some(lost) => worked.and(Err(lost)),
            None => worked,
        };
        let queued = self.company_for_turns();
        let Some(group) = writer.open.as_ref() else {
            return worked.map(|()| None); // nothing open: what was stored is committed
        };
        if group.members == 0 {
            // Opened by `hold` and nothing stored in it: the file's lock goes with it.
            let committed = writer.commit_group();
            return worked.and(committed).map(|()| None);
        }
        let full = group.members >= MAX_GROUP;
        if staged && worked.is_ok() && queued > 0 && !full {
            return Ok(Some(Arc::new(Staged {
                writer: self.clone(),
                outcome: group.outcome.clone(),
            })));
        }
        // Rows of a turn that failed after storing them are committed now, so that they
        // are never left staged with nobody knowing of them. A group of others' rows only
        // is left to the queued threads.
        if staged || queued == 0 || full {
            let committed = writer.commit_group();
            return worked.and(committed).map(|()| None);
        }
        worked.map(|()| None)
    }

    /// In this thread's turn: opens the group's transaction now unless one is open (a full
    /// one is committed first), so that the file's write lock is this process's until the
    /// group commits: other processes' writes wait, what the turn reads next stays current,
    /// and the turn's next entry joins this transaction (a write through
    /// [`GroupWriter::exclusive`] commits it first). Waits for another process's
    /// transaction as any write does (the busy timeout).
    pub fn hold(&self) -> Result<()> {
        if !self.in_turn() {
            return Err(Error::Internal(
                "sqlite: the file's lock was asked for outside a write turn".into(),
            ));
        }
        let mut writer = self.lock()?;
        if writer.open.as_ref().is_some_and(|g| g.members >= MAX_GROUP) {
            let _ = writer.commit_group(); // its members get the outcome; a loss is noted
        }
        if writer.open.is_none() {
            writer.begin_with(|_| Ok(()))?;
        }
        Ok(())
    }

    /// The writer for a change of its own (or a read that must see the newest state): an
    /// open group is committed first. In a turn that stored into it, a failed commit fails
    /// this too: what the turn goes on to write may build on the rows it undid.
    pub fn exclusive(&self) -> Result<Exclusive<'_>> {
        let mut writer = self.lock()?;
        if writer.open.is_some() {
            // Its members get the outcome; another caller goes on either way (if the
            // commit failed, SQLite has rolled it back and the connection is idle).
            let committed = writer.commit_group();
            if self.in_turn() && writer.staged_in_turn {
                committed?;
            }
        }
        Ok(Exclusive(writer))
    }

    /// Sets how long a staged commit waits for company (for tests that keep one staged).
    #[cfg(test)]
    pub fn set_settle_after(&self, limit: Duration) {
        self.settle_after_ms
            .store(limit.as_millis() as u64, Ordering::Relaxed);
    }

    /// Sets how long a thread waits for the writer (for tests of that bound).
    #[cfg(test)]
    pub fn set_lock_wait(&self, limit: Duration) {
        self.lock_wait_ms
            .store(limit.as_millis() as u64, Ordering::Relaxed);
    }

    /// Lets `commits` group commits through, then fails the next one (rolled back), for
    /// tests of what a failed storage commit leaves.
    #[cfg(test)]
    pub fn fail_commit_in(&self, commits: usize) {
        self.writer.lock().fail_commit_in = commits;
    }

    /// Threads queued for the writer to store an entry (for tests that line them up).
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The writer if it is idle right now (not locked, no group open, no turn), to read on;
    /// or, in this thread's turn, the writer with the open group (whose rows the reads see).
    pub fn try_idle(&self) -> Result<Option<Exclusive<'_>>> {
        if self.in_turn() {
            return self.lock().map(|writer| Some(Exclusive(writer)));
        }
        if self.broken.load(Ordering::Acquire) {
            return Err(broken());
        }
        match self.writer.try_lock() {
            Some(writer) if writer.open.is_none() && !*self.turn_held() => {
                Ok(Some(Exclusive(Locked {
                    writer,
                    broken: &self.broken,
                })))
            }
            Some(_) | None => Ok(None),
        }
    }

    /// Runs `write` (one entry's rows) in the group transaction and returns once they are
    /// durable, or with the error that undid them.
    /// In a turn, the rows are only written into the group (see [`GroupWriter::turn`]).
    pub fn write_in_group(&self, write: impl FnOnce(&Connection) -> Result<()>) -> Result<()> {
        if self.in_turn() {
            let mut writer = self.lock()?;
            writer.stage(write)?;
            writer.staged_in_turn = true;
            return Ok(());
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        let locked = self.lock();
        self.queued.fetch_sub(1, Ordering::AcqRel);
        let mut writer = locked?;
        let written = writer.stage(write);
        let Some(group) = writer.open.as_ref() else {
            return written; // an error: nothing of this caller's is left open
        };
        if let Err(e) = written {
            // Its rows are undone; the others' stay, and someone must commit them.
            if self.queued.load(Ordering::Acquire) == 0 {
                let _ = writer.commit_group();
            }
            return Err(e);
        }
        if self.queued.load(Ordering::Acquire) == 0 || group.members >= MAX_GROUP {
            return writer.commit_group();
        }
        let outcome = group.outcome.clone();
        drop(writer);
        self.wait_for_commit(&outcome)
    }

    /// Waits for the commit of `outcome`'s group: at most [`SETTLE_AFTER`] for company,
    /// then it is committed now.
    fn wait_for_commit(&self, outcome: &Arc<Outcome>) -> Result<()> {
        let limit = Duration::from_millis(self.settle_after_ms.load(Ordering::Relaxed));
        match outcome.wait_for(limit, || self.broken.load(Ordering::Acquire)) {
            Some(ended) => ended,
            None => self.settle(outcome),
        }
    }

    /// Commits `outcome`'s group now unless it has ended; returns how it ended. Waits for
    /// the writer as long as it takes (the caller's rows are in the group), looking every
    /// [`GLANCE`] whether whoever holds it ended the group meanwhile (a change that commits
    /// the group, then rewrites the file, holds it for long).
    fn settle(&self, outcome: &Arc<Outcome>) -> Result<()> {
        let mut writer = loop {
            if let Some(ended) = outcome.ended() {
                return ended;
            }
            match self.lock_within(GLANCE) {
                Ok(writer) => break writer,
                Err(Error::Busy(_)) => continue,
                Err(e) => return Err(e),
            }
        };
        let still_open = writer
            .open
            .as_ref()
            .is_some_and(|g| Arc::ptr_eq(&g.outcome, outcome));
        if still_open {
            let _ = writer.commit_group(); // published to every member, this one too
        }
        // A group leaves the writer only through `commit_group` or a rollback, both of
        // which publish how it ended while holding the writer.
        outcome.ended().unwrap_or_else(|| {
            Err(Error::Internal(
                "sqlite: a shared commit ended unreported".into(),
            ))
        })
    }
}

/// This thread's hold on a turn; ends it when dropped (also if the turn's work panics: the
/// open group is then rolled back, so that no half-written rows are committed).
struct TurnHolder<'a> {
    writer: &'a GroupWriter,
    before: usize,
}

impl<'a> TurnHolder<'a> {
    fn take(writer: &'a GroupWriter) -> TurnHolder<'a> {
        let before = TURN_OF.with(|t| t.replace(writer as *const GroupWriter as usize));
        TurnHolder { writer, before }
    }

    /// Ends the turn and returns the writer, still locked.
    fn end(self) -> Locked<'a> {
        let writer = self.release();
        let broken = &self.writer.broken;
        std::mem::forget(self);
        Locked { writer, broken }
    }

    fn release(&self) -> parking_lot::MutexGuard<'a, Writer> {
        TURN_OF.with(|t| t.set(self.before));
        let writer = self.writer.writer.lock();
        *self.writer.turn_held() = false;
        self.writer.turn_ended.notify_all();
        writer
    }
}

impl Drop for TurnHolder<'_> {
    fn drop(&mut self) {
        let mut writer = self.release();
        if let Some(group) = writer.open.take() {
            if !writer.conn.is_autocommit() {
                let _ = writer.run("ROLLBACK");
            }
            group.outcome.publish(&Err(Error::Internal(
                "sqlite: a commit sharing this transaction panicked; it was rolled back".into(),
            )));
        }
    }
}

impl Writer {
    /// Writes `write`'s rows into the open group as a new member, beginning a group if none
    /// is open (or the open one is full: it is committed first). On success the group is
    /// open and holds them; on failure they are undone. In a turn whose stored rows were
    /// lost ([`Writer::lost_in_turn`]), fails writing nothing.
    fn stage(&mut self, write: impl FnOnce(&Connection) -> Result<()>) -> Result<()> {
        if self.open.as_ref().is_some_and(|g| g.members >= MAX_GROUP) {
            let _ = self.commit_group(); // its members get the outcome; a loss is noted
        }
        if let Some(lost) = &self.lost_in_turn {
            // Rows this turn stored are gone: nothing more is written on top of them.
            return Err(lost.clone());
        }
        if self.open.is_some() {
            self.write_as_member(write)?;
        } else {
            self.begin_with(write)?;
        }
        if let Some(group) = self.open.as_mut() {
            group.members += 1;
        }
        Ok(())
    }

    fn run(&self, sql: &str) -> Result<()> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(sql_error)
    }

    /// Begins a group transaction with `write` as its first member; on failure nothing is
    /// left open.
    fn begin_with(&mut self, write: impl FnOnce(&Connection) -> Result<()>) -> Result<()> {
        self.run("BEGIN IMMEDIATE")?;
        if let Err(e) = write(&self.conn) {
            if !self.conn.is_autocommit() {
                let _ = self.run("ROLLBACK");
            }
            return Err(e);
        }
        self.open = Some(Group {
            outcome: Arc::default(),
            members: 0,
        });
        Ok(())
    }

    /// Adds `write` to the open group inside a savepoint: its failure undoes its rows only
    /// (or, when SQLite had to roll the whole transaction back, fails the group).
    fn write_as_member(&mut self, write: impl FnOnce(&Connection) -> Result<()>) -> Result<()> {
        self.run("SAVEPOINT member")?;
        let written = write(&self.conn);
        let undone = match &written {
            Ok(()) => return self.run("RELEASE member"),
            Err(_) if self.conn.is_autocommit() => Err(()),
            Err(_) => self
                .run("ROLLBACK TO member")
                .and_then(|()| self.run("RELEASE member"))
                .map_err(drop),
        };
        if undone.is_err() {
            let group = self.open.take().expect("a member joins an open group");
            if !self.conn.is_autocommit() {
                let _ = self.run("ROLLBACK");
            }
            let lost = Err(Error::Storage(
                "sqlite: another write in the same transaction failed and rolled it back".into(),
            ));
            group.outcome.publish(&lost);
            self.note_if_lost(&lost);
        }
        written
    }

    /// Commits the open group and tells its members how it ended; returns that. A failure
    /// in a turn that stored into the group is noted for the turn's end.
    fn commit_group(&mut self) -> Result<()> {
        let group = self.open.take().expect("commit_group needs an open group");
        let result = match self.commit_fails_now() {
            true => Err(Error::Storage(
                "sqlite: the commit failed (a test's)".into(),
            )),
            false => self.run("COMMIT"),
        };
        if result.is_err() && !self.conn.is_autocommit() {
            let _ = self.run("ROLLBACK");
        }
        group.outcome.publish(&result);
        self.note_if_lost(&result);
        result
    }

    /// Whether this commit is to fail, as a test asked ([`GroupWriter::fail_commit_in`]).
    #[cfg(test)]
    fn commit_fails_now(&mut self) -> bool {
        match self.fail_commit_in {
            usize::MAX => false,
            0 => {
                self.fail_commit_in = usize::MAX;
                true
            }
            _ => {
                self.fail_commit_in -= 1;
                false
            }
        }
    }

    /// No commit fails on purpose outside tests.
    #[cfg(not(test))]
    fn commit_fails_now(&mut self) -> bool {
        false
    }

    /// Notes `ended`, how a group ended, for the turn's end when it failed and the turn
    /// stored into it (see [`Writer::lost_in_turn`]).
    fn note_if_lost(&mut self, ended: &Result<()>) {
        if let Err(e) = ended {
            if self.staged_in_turn && self.lost_in_turn.is_none() {
                self.lost_in_turn = Some(e.clone());
            }
        }
    }
}

/// What a use of a broken writer fails with.
fn broken() -> Error {
    Error::Internal(
        "sqlite: a write panicked while it held the file's writer, which may be left inside \
         a transaction; open the storage again"
            .into(),
    )
}
