//! Group commit: entries stored by several threads at about the same time share one SQLite
//! transaction, so one WAL sync makes all of them durable.
//!
//! Threads take the writer connection in turn. A thread that finds no transaction open
//! begins one; a thread that finds one open (left by threads that wrote their rows and are
//! waiting) joins it, writing inside a savepoint so that a failure of its own undoes only its
//! rows. Having written, a thread commits at once when no other thread is queued for the
//! connection (so a lone writer is never delayed) or when the group holds [`MAX_GROUP`]
//! members; otherwise it leaves the transaction open for the next thread and waits for the
//! group's commit. Every caller returns only once its own rows are durable, or with the error
//! that stopped them. Any other use of the connection ([`GroupWriter::exclusive`]) commits an
//! open group first, so it never runs inside someone else's transaction.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use rusqlite::Connection;

use super::sql_error;
use crate::error::{Error, Result};

/// Most writes that share one transaction: a bound on how long the first member of a busy
/// group waits for its commit.
pub const MAX_GROUP: usize = 64;

/// The writer connection, with the group transaction open on it, if any.
pub struct GroupWriter {
    writer: Mutex<Writer>,
    /// Threads waiting for the writer to store an entry: while there are any, a member
    /// leaves the transaction open for them rather than committing.
    queued: AtomicUsize,
}

struct Writer {
    conn: Connection,
    open: Option<Group>,
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

    /// Waits for the group's commit. The committing thread holds the writer while it runs;
    /// were it to panic there (leaving the lock poisoned), nobody would publish: `abandoned`
    /// is checked every second for that.
    fn wait(&self, abandoned: impl Fn() -> bool) -> Result<()> {
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(ended) = ended.as_ref() {
                return ended.clone().map_err(Error::from);
            }
            if abandoned() {
                return Err(Error::Internal(
                    "sqlite: the shared commit was abandoned (a panic while committing)".into(),
                ));
            }
            ended = self
                .done
                .wait_timeout(ended, Duration::from_secs(1))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// The writer connection, exclusively, with no transaction of others open on it.
pub struct Exclusive<'a>(MutexGuard<'a, Writer>);

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
            writer: Mutex::new(Writer { conn, open: None }),
            queued: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Writer>> {
        self.writer
            .lock()
            .map_err(|_| Error::Internal("sqlite connection lock poisoned".into()))
    }

    /// The writer for a change of its own (or a read that must see the newest state): an
    /// open group is committed first.
    pub fn exclusive(&self) -> Result<Exclusive<'_>> {
        let mut writer = self.lock()?;
        if writer.open.is_some() {
            // Its members get the outcome; this caller goes on either way (if the commit
            // failed, SQLite has rolled it back and the connection is idle).
            let _ = writer.commit_group();
        }
        Ok(Exclusive(writer))
    }

    /// Threads queued for the writer to store an entry (for tests that line them up).
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The writer if it is idle right now (not locked, no group open), to read on.
    pub fn try_idle(&self) -> Result<Option<Exclusive<'_>>> {
        match self.writer.try_lock() {
            Ok(writer) if writer.open.is_none() => Ok(Some(Exclusive(writer))),
            Ok(_) | Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Poisoned(_)) => {
                Err(Error::Internal("sqlite connection lock poisoned".into()))
            }
        }
    }

    /// Runs `write` (one entry's rows) in the group transaction and returns once they are
    /// durable, or with the error that undid them.
    pub fn write_in_group(&self, write: impl FnOnce(&Connection) -> Result<()>) -> Result<()> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let locked = self.lock();
        self.queued.fetch_sub(1, Ordering::AcqRel);
        let mut writer = locked?;
        if writer.open.as_ref().is_some_and(|g| g.members >= MAX_GROUP) {
            let _ = writer.commit_group(); // its members get the outcome
        }
        let written = if writer.open.is_some() {
            writer.write_as_member(write)
        } else {
            writer.begin_with(write)
        };
        let Some(group) = writer.open.as_mut() else {
            return written; // an error: nothing of this caller's is left open
        };
        if let Err(e) = written {
            // Its rows are undone; the others' stay, and someone must commit them.
            if self.queued.load(Ordering::Acquire) == 0 {
                let _ = writer.commit_group();
            }
            return Err(e);
        }
        group.members += 1;
        if self.queued.load(Ordering::Acquire) == 0 || group.members >= MAX_GROUP {
            return writer.commit_group();
        }
        let outcome = group.outcome.clone();
        drop(writer);
        outcome.wait(|| self.writer.is_poisoned())
    }
}

impl Writer {
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
            group.outcome.publish(&Err(Error::Storage(
                "sqlite: another write in the same transaction failed and rolled it back".into(),
            )));
        }
        written
    }

    /// Commits the open group and tells its members how it ended; returns that.
    fn commit_group(&mut self) -> Result<()> {
        let group = self.open.take().expect("commit_group needs an open group");
        let result = self.run("COMMIT");
        if result.is_err() && !self.conn.is_autocommit() {
            let _ = self.run("ROLLBACK");
        }
        group.outcome.publish(&result);
        result
    }
}
