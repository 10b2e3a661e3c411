//! Read-only connections to one SQLite file. With WAL, a reader sees the last committed
//! state while the one writer commits and waits for fsync, so reads never queue behind a
//! durable write.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

use super::sql_error;
use crate::error::{Error, Result};

/// Most read-only connections open at once per backend; a read beyond waits for one.
/// Each connection keeps its own page cache (SQLite's default: up to 2 MiB).
pub const MAX_READERS: usize = 4;
/// How long a read waits for a free connection before giving up with a storage error.
const WAIT_FOR_READER: Duration = Duration::from_secs(10);
/// How long SQLite itself retries a locked file (a checkpoint, another process).
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A bounded pool of read-only connections, opened on demand.
pub(super) struct Readers {
    path: PathBuf,
    pool: Mutex<Pool>,
    returned: Condvar,
}

struct Pool {
    idle: Vec<Connection>,
    open: usize,
}

impl Readers {
    /// Readers of the file at `path` (opened when first needed).
    pub(super) fn new(path: PathBuf) -> Self {
        Readers {
            path,
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        }
    }

    /// Read connections open now, lent or idle.
    pub(super) fn open(&self) -> usize {
        self.lock().open
    }

    /// A connection for reading, returned to the pool when dropped.
    pub(super) fn get(&self) -> Result<Reader<'_>> {
        let mut pool = self.lock();
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok(Reader {
                    readers: self,
                    conn: Some(conn),
                });
            }
            if pool.open < MAX_READERS {
                pool.open += 1;
                drop(pool);
                return match self.open_one() {
                    Ok(conn) => Ok(Reader {
                        readers: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            let (guard, waited) = self
                .returned
                .wait_timeout(pool, WAIT_FOR_READER)
                .unwrap_or_else(|p| p.into_inner());
            pool = guard;
            if waited.timed_out() && pool.idle.is_empty() {
                return Err(Error::Storage(format!(
                    "sqlite: all {MAX_READERS} read connections stayed busy for {} s",
                    WAIT_FOR_READER.as_secs()
                )));
            }
        }
    }

    fn open_one(&self) -> Result<Connection> {
        let conn = super::connect(&self.path)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
        conn.execute_batch("PRAGMA query_only=ON")
            .map_err(sql_error)?;
        super::tune(&conn)?;
        Ok(conn)
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection borrowed from [`Readers`].
pub(super) struct Reader<'a> {
    readers: &'a Readers,
    conn: Option<Connection>,
}

impl Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.readers.lock().idle.push(conn);
            self.readers.returned.notify_one();
        }
    }
}
