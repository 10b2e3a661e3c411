//! `sqlite:PATH`: the embedded default. One file (plus SQLite's WAL), bundled SQLite. The
//! file is made private and checked before SQLite opens it ([`file`]).
//!
//! Durability: WAL with `synchronous=FULL`; each stored entry is acknowledged only once the
//! SQL transaction holding it is committed, so an acknowledged commit survives a killed
//! process and a power loss. Entries stored by several threads at the same moment share one
//! transaction ([`group`]); connections open through a VFS shim ([`vfs`]) that passes each
//! commit's WAL frames to the file in one write instead of two per frame. One connection
//! writes, and reads use it too while it is idle (its page cache stays warm); a read that
//! finds it busy (a commit waiting for fsync, or a group transaction open) uses one of a
//! small pool of read-only connections ([`readers`]) instead of waiting. The schema version
//! is recorded in the file (`PRAGMA user_version`, with mnemo's `application_id`) and
//! checked at open; a file from a newer mnemo is refused, never rewritten, one of schema 2
//! upgraded in place. Opening reads a few header values and the schema only: its cost does
//! not grow with the file. SQL someone else added to the file (a trigger, a view, a changed
//! table) is refused at open or never runs ([`guard`]).
//!
//! The writer runs with `secure_delete` on: SQLite zeroes space as it frees it, including
//! the old places of rows it moves while rebalancing pages, so content deleted (a replaced
//! secret, a forgotten database) leaves no stale copy in free space. It costs some CPU and,
//! for pages freed whole, a write.

mod file;
mod group;
mod guard;
mod readers;
#[cfg(test)]
mod turn_tests;
mod vfs;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use super::range::{cell_bytes, KeyRange};
use super::rows;
use super::{Backend, Cell, EntryMeta, EntryWrite, Put, RangeLimit, Staged, StateWrite, Version};
use crate::entry::{EntryId, MAX_ENTRY_BYTES};
use crate::error::{Error, Result};
use group::{Exclusive, GroupWriter};
use readers::{Reader, Readers, BUSY_TIMEOUT};

/// `PRAGMA application_id` of mnemo files: "mnem".
const APPLICATION_ID: i64 = 0x6d6e_656d;
/// The schema this build reads and writes. Version 1 was a development schema (no row
/// counts, discarded entries or secrets table); files of it are refused. Version 2 kept the
/// storage order in a rowid table with an index and the tips in a table of their own (three
/// more B-trees written by every commit); its files are upgraded in place when opened
/// ([`upgrade_from_v2`]). Version 3 had the same tables as this one, but the builds that
/// wrote it do not keep the databases' versions ([`shape_key`]): its files are marked 4 at
/// open, so that such a build refuses a file that processes of this one share.
pub const SCHEMA_VERSION: i64 = 4;

/// The storage order of each database's entries, with its tips after each (see below); a
/// macro so that [`SCHEMA`] and [`upgrade_from_v2`] create the same table.
macro_rules! log_table {
    () => {
        "CREATE TABLE log (
    db BLOB NOT NULL, seq INTEGER NOT NULL, id BLOB NOT NULL, tips BLOB, chk BLOB NOT NULL,
    PRIMARY KEY (db, seq)) WITHOUT ROWID;"
    };
}

/// The columns of the secrets table (created with the schema, and again when rebuilt).
macro_rules! secrets_columns {
    () => {
        "(key TEXT PRIMARY KEY, value BLOB NOT NULL, chk BLOB NOT NULL) WITHOUT ROWID;"
    };
}

const SCHEMA: &str = concat!(
    "
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL, chk BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE entries (
    id BLOB PRIMARY KEY, db BLOB NOT NULL, height INTEGER NOT NULL, visible BLOB NOT NULL,
    changes_settings INTEGER NOT NULL, bytes BLOB NOT NULL, chk BLOB NOT NULL) WITHOUT ROWID;
",
    log_table!(),
    "
CREATE TABLE cells (
    db BLOB NOT NULL, store TEXT NOT NULL, key TEXT NOT NULL, height INTEGER NOT NULL,
    entry BLOB NOT NULL, value TEXT, chk BLOB NOT NULL,
    PRIMARY KEY (db, store, key)) WITHOUT ROWID;
CREATE TABLE stores (
    db BLOB NOT NULL, store TEXT NOT NULL, rows INTEGER NOT NULL, chk BLOB NOT NULL,
    PRIMARY KEY (db, store)) WITHOUT ROWID;
CREATE TABLE discarded (
    db BLOB NOT NULL, id BLOB NOT NULL, chk BLOB NOT NULL, PRIMARY KEY (db, id)) WITHOUT ROWID;
CREATE TABLE secrets ",
    secrets_columns!()
);
// What a commit writes, and why it is few B-tree pages: its entry row (`entries`, keyed by
// id, which every lookup uses), one row appended to the database's end of `log` that holds
// both its storage position and the database's tips after it (so `tips` is one read of the
// newest log row, and there is no tip table to change), its cells (`cells`, keyed the way
// scans read them) and the row counts of the stores it added rows to (`stores`). Log rows
// older than a database's newest keep the tips of their day (the upgrade from version 2
// recorded none for them); only the newest row's are read.

/// Prepared statements each connection keeps (rusqlite's default is 16): more than the
/// backend has, so none is parsed again after its first use.
const STATEMENT_CACHE: usize = 64;

/// Opens a connection to the file at `path` through the [`vfs`] shim (WAL writes gathered).
fn connect(path: &Path) -> Result<Connection> {
    // Not `SQLITE_OPEN_CREATE`: the file was created private by `file::prepare`, and one
    // removed since is not made again by a connection opened later. (Nor URIs: the path is
    // absolute, which SQLite never reads as one.)
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags_and_vfs(path, flags, vfs::name()?).map_err(sql_error)
}

/// Settings of every connection (the writer and the readers): a schema not trusted
/// ([`guard::distrust_schema`]), and statements kept prepared: the statement cache above,
/// and SQLite's query planner stability guarantee. Without it, a statement whose plan
/// could depend on a bound value (an equality on a parameter together with ORDER BY or
/// max(), as in "the newest log row of this database") is parsed and planned again on
/// every run after a new binding: about 5 us per statement here. mnemo never runs ANALYZE,
/// so no plan would have been better for a value.
fn tune(conn: &Connection) -> Result<()> {
    guard::distrust_schema(conn)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(sql_error)?;
    Ok(())
}

/// What [`SqliteBackend::scrubbed`] writes afresh after its change.
enum Rewrite {
    /// The secrets table, rebuilt in new pages (the old ones are freed, and zeroed).
    Secrets,
    /// The whole file.
    File,
}

/// What a change given to [`SqliteBackend::scrubbed`] did.
struct Changed<T> {
    /// What the change returns to its caller.
    result: T,
    /// Whether it replaced or deleted a row: only then are there old bytes to scrub.
    removed: bool,
}

/// Copies the secrets table into new pages and drops the old ones (inside a transaction).
const REBUILD_SECRETS: &str = concat!(
    "CREATE TABLE secrets_new ",
    secrets_columns!(),
    "INSERT INTO secrets_new (key, value, chk) SELECT key, value, chk FROM secrets;
DROP TABLE secrets;
ALTER TABLE secrets_new RENAME TO secrets;"
);

/// Runs `work` in a write transaction on `conn`: committed if it succeeds, rolled back if not.
fn in_transaction<T>(conn: &Connection, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql_error)?;
    let done = work(conn).and_then(|t| conn.execute_batch("COMMIT").map_err(sql_error).map(|()| t));
    if done.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    done
}

/// The value of `key` that `query` (selecting `value, chk` by key) finds on `conn`, its row
/// check verified ([`Error::Corrupt`] naming `what` otherwise).
fn checked_value(conn: &Connection, query: &str, key: &str, what: &str) -> Result<Option<Vec<u8>>> {
    let row = conn
        .prepare_cached(query)
        .and_then(|mut s| {
            s.query_row(params![key], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()
        })
        .map_err(sql_error)?;
    match row {
        Some((value, chk)) => {
            rows::verify(&chk, &[key.as_bytes(), &value], what)?;
            Ok(Some(value))
        }
        None => Ok(None),
    }
}

/// Runs `read` on `conn` in one read transaction, so that its reads come from one snapshot
/// (unless `conn` is already in a transaction: in a commit's turn, the writer may be in the
/// open group).
fn in_snapshot<T>(conn: &Connection, read: impl FnOnce() -> Result<T>) -> Result<T> {
    let snapshot = if conn.is_autocommit() {
        Some(conn.unchecked_transaction().map_err(sql_error)?)
    } else {
        None
    };
    let done = read()?;
    if let Some(snapshot) = snapshot {
        snapshot.finish().map_err(sql_error)?;
    }
    Ok(done)
}

/// The cells of `store` of `db` that `stmt` (selecting `height, entry, value, chk, key`, in
/// key order, after `after` if given) finds with `bound`, each row's check verified, and
/// each key checked to come after the one before (a damaged B-tree can list a page of rows
/// twice or out of order).
fn keyed_cells(
    stmt: &mut rusqlite::CachedStatement<'_>,
    bound: impl rusqlite::Params,
    (db, store, after): (&EntryId, &str, Option<&str>),
    limit: RangeLimit,
) -> Result<Vec<(String, Cell)>> {
    let mut rows = stmt
        .query_map(bound, |r| Ok((cell_row(r)?, r.get::<_, String>(4)?)))
        .map_err(sql_error)?;
    let mut out = Vec::new();
    let mut spent = 0;
    // The next row is stepped to (and its value read) only while there is room for it.
    while limit.has_room_after(spent) {
        let Some(row) = rows.next() else { break };
        let (raw, key) = row.map_err(sql_error)?;
        let last = out
            .last()
            .map_or(after, |(last, _): &(String, _)| Some(last));
        rows::verify_rises(last, key.as_str(), "keys")?;
        let cell = checked_cell(db, store, &key, raw)?;
        spent += cell_bytes(&key, cell.value.as_deref());
        out.push((key, cell));
    }
    Ok(out)
}

/// A mnemo instance's storage in one SQLite file.
pub struct SqliteBackend {
    /// The one connection that writes, shared by concurrent commits ([`group`]).
    writer: Arc<GroupWriter>,
    readers: Readers,
}

/// How long the rewrite and the checkpoint after a scrubbed change wait for other
/// connections (the writer is held meanwhile) before they are left for later
/// ([`finish_scrub`]).
const SCRUB_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Maps SQLite's errors: damaged files and values of another type than mnemo writes (tables
/// changed outside mnemo) are [`Error::Corrupt`], the file locked by another connection
/// (after the busy timeout) [`Error::Busy`], the rest [`Error::Storage`].
fn sql_error(e: rusqlite::Error) -> Error {
    let not_written_by_mnemo = matches!(
        e,
        rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
    );
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            Error::Corrupt(format!("sqlite: {e}"))
        }
        // Another connection kept the file locked past the busy timeout: retry later, as
        // PostgreSQL's lock timeout says.
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Busy(format!(
            "sqlite: the file is locked by another connection (a write waits up to {} s): {e}",
            BUSY_TIMEOUT.as_secs()
        )),
        _ if not_written_by_mnemo => Error::Corrupt(format!(
            "sqlite: a stored value is not of the type mnemo writes ({e})"
        )),
        _ => Error::Storage(format!("sqlite: {e}")),
    }
}

impl SqliteBackend {
    /// Most read-only connections a backend keeps open; more concurrent reads wait.
    pub const MAX_READERS: usize = readers::MAX_READERS;

    /// Opens (creating with mode 0600 if absent) the mnemo file at `path`, once it is known
    /// to be a regular file of one name that other users may not read or write.
    pub fn open(path: &Path) -> Result<SqliteBackend> {
        // Another process creating the file at the same moment is fine: the schema is
        // written once, in one transaction, whoever gets there first.
        let path = &file::prepare(path)?;
        let conn = connect(path)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
        // Before anything is written to it (entering WAL mode writes its header); in one
        // read transaction, as another process may be writing the schema meanwhile.
        conn.execute_batch("BEGIN").map_err(sql_error)?;
        let foreign = refuse_foreign(&conn, path);
        conn.execute_batch("ROLLBACK").map_err(sql_error)?;
        foreign?;
        let mode = enter_wal_mode(&conn)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Storage(format!(
                "sqlite: cannot use WAL mode (got {mode})"
            )));
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA secure_delete=ON")
            .map_err(sql_error)?;
        tune(&conn)?;
        check_or_create_schema(&conn, path)?;
        // A scrub a change left pending is finished now if the file is free soon enough;
        // otherwise a later forget, scrubbed change or open tries again.
        let _ = finish_scrub(&conn, true);
        Ok(SqliteBackend {
            writer: Arc::new(GroupWriter::new(conn)),
            readers: Readers::new(path.to_path_buf()),
        })
    }

    /// Sets how long a staged commit waits for company before committing its group itself
    /// (for tests that keep a commit staged).
    #[cfg(test)]
    pub(crate) fn set_settle_after(&self, limit: std::time::Duration) {
        self.writer.set_settle_after(limit);
    }

    /// Lets `commits` storage commits of entries through, then fails the next one (rolled
    /// back), for tests of what a failed commit leaves.
    #[cfg(test)]
    pub(crate) fn fail_commit_in(&self, commits: usize) {
        self.writer.fail_commit_in(commits);
    }

    /// The writer connection for a change of its own (no group transaction open on it).
    fn writer(&self) -> Result<Exclusive<'_>> {
        self.writer.exclusive()
    }

    /// Runs `change` (on the secrets table, or a forgotten database's rows) so that what it
    /// replaces or deletes does not stay in the file. `secure_delete` (always on) zeroes a
    /// deleted row where it lies, but SQLite may have left copies of it in the unused space
    /// of other pages when it moved rows between pages (seen here: a forgotten database's
    /// value found in a live page after the delete, in 31 of 40 trials of a table keyed at
    /// random). So the pages that held such rows are written afresh: the secrets table is
    /// rebuilt (it is small), after a forget the whole file (`VACUUM`: time in proportion to
    /// the file's size; forgetting is rare). Then a checkpoint copies the new pages into the
    /// database file and truncates the WAL, which held the old ones. The change records both
    /// as pending in its own transaction ([`mark_scrub_pending`]) and is committed first, so
    /// it succeeds either way: what cannot be finished now (another process's lock, or for
    /// the checkpoint its read snapshot, kept past [`SCRUB_WAIT`]; no room on the disk for
    /// the copy; a crash) is finished later ([`finish_scrub`]): a rewrite by the next forget
    /// or open of the file, a checkpoint by the next scrubbed change or open. The old bytes
    /// stay meanwhile (a checkpoint's, at most until the file's last connection closes).
    ///
    /// A change that removed nothing (a new secret, a delete of one not there) skips both:
    /// the copies its own page moves may leave are of rows still live, all in the secrets
    /// table's pages, and the rebuild that follows their own replacement or delete frees
    /// those pages (`secure_delete` zeroes freed pages) and truncates the WAL.
    fn scrubbed<T>(
        &self,
        rewrite: Rewrite,
        change: impl FnOnce(&Connection) -> Result<Changed<T>>,
    ) -> Result<T> {
        let conn = self.writer()?;
        let changed = match rewrite {
            // The change and the rebuild commit together: a failed rebuild undoes the change.
            Rewrite::Secrets => in_transaction(&conn, |conn| {
                let changed = change(conn)?;
                if changed.removed {
                    conn.execute_batch(REBUILD_SECRETS).map_err(sql_error)?;
                    mark_scrub_pending(conn, Rewrite::Secrets)?;
                }
                Ok(changed)
            })?,
            // The change recorded its scrub as pending, in its own transaction.
            Rewrite::File => change(&conn)?,
        };
        // The change is committed whatever comes of this: its caller is told it succeeded,
        // and what cannot be finished now stays recorded for the next.
        let _ = finish_scrub(&conn, matches!(rewrite, Rewrite::File));
        Ok(changed.result)
    }

    /// A connection to read with: the writer if it is idle (or in this thread's write turn,
    /// where reads see what is staged), else a pooled reader.
    fn reader(&self) -> Result<ReadConnection<'_>> {
        match self.writer.try_idle()? {
            Some(idle) => Ok(ReadConnection::Writer(idle)),
            None => self.readers.get().map(ReadConnection::Pooled),
        }
    }
}

/// A connection borrowed for reading.
enum ReadConnection<'a> {
    /// The writer, idle when borrowed.
    Writer(Exclusive<'a>),
    /// A read-only connection from the pool.
    Pooled(Reader<'a>),
}

impl std::ops::Deref for ReadConnection<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            ReadConnection::Writer(conn) => conn,
            ReadConnection::Pooled(conn) => conn,
        }
    }
}

/// The metadata records of a scrub ([`SqliteBackend::scrubbed`]) not finished yet: the
/// whole file is to be rewritten (`VACUUM`), and the WAL checkpointed and truncated.
/// Written with the change that removes rows, each deleted once its step is done. Each
/// holds a random mark, so that a step deletes only the record it found, never one that
/// another process's change wrote again meanwhile for a scrub of its own.
const REWRITE_PENDING_KEY: &str = "scrub/rewrite";
const CHECKPOINT_PENDING_KEY: &str = "scrub/checkpoint";

/// Records in transaction `tx` that a scrub step is pending (`key`, a new mark).
fn mark_pending(tx: &Connection, key: &str) -> Result<()> {
    set_meta(tx, key, &crate::crypto::random::bytes::<16>()?)
}

/// Records, in the open transaction of a change that removes rows, the scrub it needs:
/// for [`Rewrite::File`] the file's rewrite, and for both kinds the checkpoint after it.
fn mark_scrub_pending(tx: &Connection, rewrite: Rewrite) -> Result<()> {
    if matches!(rewrite, Rewrite::File) {
        mark_pending(tx, REWRITE_PENDING_KEY)?;
    }
    mark_pending(tx, CHECKPOINT_PENDING_KEY)
}

/// Finishes the scrub that changes left pending ([`mark_scrub_pending`]): when `rewrite`
/// (after a forget, at open: the steps that may take time in proportion to the file), the
/// whole file's rewrite; then the checkpoint that copies the WAL into the file and
/// truncates it, also when the rewrite failed (it needs no room on the disk, and a secret's
/// scrub waits on it). Each step waits up to [`SCRUB_WAIT`] for other connections (another
/// process's lock; for the checkpoint, also its readers of older pages; this process's
/// writes wait meanwhile), and deletes its record once done, if the record still holds the
/// mark read before. A step that fails or cannot finish in time stays recorded, for the
/// next scrubbed change or open. Returns the first error.
fn finish_scrub(conn: &Connection, rewrite: bool) -> Result<()> {
    let mark = |key| meta_value(conn, key);
    let done = |key, mark: Vec<u8>| delete_meta(conn, key, Some(&mark)).map(drop);
    conn.busy_timeout(SCRUB_WAIT).map_err(sql_error)?;
    let rewritten = match mark(REWRITE_PENDING_KEY) {
        // The rewrite's new pages are in the WAL, the file still holds the old ones until
        // a checkpoint: one is recorded before the rewrite's record goes.
        Ok(Some(found)) if rewrite => (conn.execute_batch("VACUUM").map_err(sql_error))
            .and_then(|()| mark_pending(conn, CHECKPOINT_PENDING_KEY))
            .and_then(|()| done(REWRITE_PENDING_KEY, found)),
        found => found.map(drop),
    };
    let checkpointed = match mark(CHECKPOINT_PENDING_KEY) {
        Ok(Some(found)) => checkpoint_truncate(conn).and_then(|finished| {
            if finished {
                done(CHECKPOINT_PENDING_KEY, found)
            } else {
                Ok(())
            }
        }),
        found => found.map(drop),
    };
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
    rewritten.and(checkpointed)
}

/// Copies the WAL into the file and truncates it, waiting for readers of older pages as
/// long as the connection's busy timeout says; whether it finished.
fn checkpoint_truncate(conn: &Connection) -> Result<bool> {
    let busy = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(sql_error)?;
    Ok(busy == 0)
}

/// Creates the schema in a new file, or checks an existing one. Runs in one write
/// transaction, so two processes opening one new file at once: one creates, the other then
/// finds it made.
/// Switches the file to WAL mode (a no-op once it is). The first switch takes an
/// exclusive lock without waiting on the busy handler, so a process creating the file at
/// the same moment makes it fail with "database is locked": retried for up to
/// [`BUSY_TIMEOUT`].
fn enter_wal_mode(conn: &Connection) -> Result<String> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)) {
            Err(e)
                if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            answer => return answer.map_err(sql_error),
        }
    }
}

fn check_or_create_schema(conn: &Connection, path: &Path) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql_error)?;
    let checked = schema_in_transaction(conn, path);
    let end = if checked.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    conn.execute_batch(end).map_err(sql_error)?;
    checked
}

/// Refuses a file another program or a newer mnemo wrote, reading its header and nothing
/// else: `Ok(true)` for an empty one (no schema yet), `Ok(false)` for a mnemo file this
/// build may read.
fn refuse_foreign(conn: &Connection, path: &Path) -> Result<bool> {
    let pragma = |name: &str| -> Result<i64> {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .map_err(sql_error)
    };
    let (app, version) = (pragma("application_id")?, pragma("user_version")?);
    if app == 0 && version == 0 {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(sql_error)?;
        if tables != 0 {
            return Err(Error::Storage(format!(
                "{} is an SQLite file but not a mnemo one",
                path.display()
            )));
        }
        return Ok(true);
    }
    if app != APPLICATION_ID {
        return Err(Error::Storage(format!(
            "{} is not a mnemo file",
            path.display()
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(Error::Storage(format!(
            "{} has schema version {version}, written by a newer mnemo; this one reads version {SCHEMA_VERSION}",
            path.display()
        )));
    }
    Ok(false)
}

fn schema_in_transaction(conn: &Connection, path: &Path) -> Result<()> {
    // Again inside the transaction: another process may have written the schema since.
    if refuse_foreign(conn, path)? {
        return conn
            .execute_batch(&format!(
                "{SCHEMA} PRAGMA application_id={APPLICATION_ID}; PRAGMA user_version={SCHEMA_VERSION};"
            ))
            .map_err(sql_error);
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_error)?;
    match version {
        2 => upgrade_from_v2(conn)?,
        3 => conn
            .execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION};"))
            .map_err(sql_error)?,
        SCHEMA_VERSION => {}
        _ => {
            let path = path.display();
            return Err(Error::Storage(format!(
                "{path} has schema version {version}, from a development build before this \
                 one; it cannot be read"
            )));
        }
    }
    guard::check_schema(conn, path)
}

/// Upgrades a version-2 file to this version inside the open schema transaction: the storage
/// order moves into the new `log` with the positions it had (sync cursors held on them stay
/// valid; later positions continue after each database's last), each database's newest
/// row records the tips from the old `tips` table (checked), and the old tables go.
fn upgrade_from_v2(conn: &Connection) -> Result<()> {
    conn.execute_batch(concat!("ALTER TABLE log RENAME TO log_v2;", log_table!()))
        .map_err(sql_error)?;
    {
        let mut read = conn
            .prepare("SELECT db, seq, id FROM log_v2 ORDER BY db, seq")
            .map_err(sql_error)?;
        let mut rows_v2 = read.query([]).map_err(sql_error)?;
        let mut write = conn
            .prepare("INSERT INTO log (db, seq, id, tips, chk) VALUES (?1, ?2, ?3, NULL, ?4)")
            .map_err(sql_error)?;
        while let Some(row) = rows_v2.next().map_err(sql_error)? {
            let (db, seq, id): (Vec<u8>, i64, Vec<u8>) = (
                row.get(0).map_err(sql_error)?,
                row.get(1).map_err(sql_error)?,
                row.get(2).map_err(sql_error)?,
            );
            let (db, position, id) = (
                rows::id_of(&db)?,
                rows::position_of(seq)?,
                rows::id_of(&id)?,
            );
            write
                .execute(params![
                    db.as_bytes(),
                    seq,
                    id.as_bytes(),
                    rows::log_check(&db, position, &id, None)
                ])
                .map_err(sql_error)?;
        }
    }
    // With max(), SQLite takes the bare column `id` from the row holding the maximum.
    let newest: Vec<(Vec<u8>, i64, Vec<u8>)> = conn
        .prepare("SELECT db, max(seq), id FROM log GROUP BY db")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(sql_error)?;
    for (db, seq, id) in newest {
        let db = rows::id_of(&db)?;
        let mut tips = Vec::new();
        let mut read = conn
            .prepare("SELECT id, height, chk FROM tips WHERE db = ?1 ORDER BY id")
            .map_err(sql_error)?;
        let mut found = read.query(params![db.as_bytes()]).map_err(sql_error)?;
        while let Some(row) = found.next().map_err(sql_error)? {
            let (id, height, chk): (Vec<u8>, i64, Vec<u8>) = (
                row.get(0).map_err(sql_error)?,
                row.get(1).map_err(sql_error)?,
                row.get(2).map_err(sql_error)?,
            );
            let (id, height) = (rows::id_of(&id)?, rows::height_of(height)?);
            if rows::tip_check(&db, &id, height) != chk {
                return Err(Error::Corrupt(
                    "a stored tip fails its integrity check".into(),
                ));
            }
            tips.push((id, height));
        }
        if tips.is_empty() {
            return Err(Error::Corrupt(
                "a database with stored entries has no tips".into(),
            ));
        }
        let position = rows::position_of(seq)?;
        let packed = rows::pack_tips(&tips);
        let chk = rows::log_check(&db, position, &rows::id_of(&id)?, Some(&packed));
        conn.execute(
            "UPDATE log SET tips = ?3, chk = ?4 WHERE db = ?1 AND seq = ?2",
            params![db.as_bytes(), seq, packed, chk],
        )
        .map_err(sql_error)?;
    }
    conn.execute_batch(&format!(
        "DROP TABLE log_v2; DROP TABLE tips; PRAGMA user_version={SCHEMA_VERSION};"
    ))
    .map_err(sql_error)
}

fn i64_of(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::invalid("a height beyond 2^63 cannot be stored"))
}

impl Backend for SqliteBackend {
    fn version(&self, db: &EntryId) -> Result<Version> {
        let conn = self.reader()?;
        // Both counters from one snapshot.
        in_snapshot(&conn, || version_in(&conn, db))
    }

    fn put_entry(&self, w: &EntryWrite<'_>) -> Result<Option<Put>> {
        let mut after = None;
        self.writer.write_in_group(|conn| {
            after = write_entry(conn, w)?;
            Ok(())
        })?;
        Ok(after)
    }

    fn write_turn(
        &self,
        announced: bool,
        work: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Option<Arc<dyn Staged>>> {
        self.writer.turn(announced, work)
    }

    /// The file's write lock, for every database in it (`GroupWriter::hold`, `group.rs`).
    fn hold_for_turn(&self, _db: &EntryId) -> Result<()> {
        self.writer.hold()
    }

    fn announce_write(&self) {
        self.writer.announce();
    }

    fn withdraw_write(&self) {
        self.writer.withdraw();
    }

    fn shared_with_other_processes(&self) -> bool {
        true
    }

    /// The busy timeout of the file's connections (10 s).
    fn lock_wait(&self) -> Option<std::time::Duration> {
        Some(BUSY_TIMEOUT)
    }

    /// The writer and the read connections open.
    fn connections_open(&self) -> usize {
        1 + self.readers.open()
    }

    /// The scrub records in the file (`scrub/rewrite`, `scrub/checkpoint`),
    /// whichever process's change left them.
    fn scrub_steps_pending(&self) -> Result<u64> {
        let conn = self.reader()?;
        let mut pending = 0;
        for key in [REWRITE_PENDING_KEY, CHECKPOINT_PENDING_KEY] {
            pending += u64::from(meta_value(&conn, key)?.is_some());
        }
        Ok(pending)
    }

    fn get_entry(&self, id: &EntryId) -> Result<Option<Vec<u8>>> {
        Ok(self.entry_row(id)?.map(|(_, bytes)| bytes))
    }

    fn entry_meta(&self, id: &EntryId) -> Result<Option<EntryMeta>> {
        Ok(self.entry_row(id)?.map(|(meta, _)| meta))
    }

    fn entry_db(&self, id: &EntryId) -> Result<Option<EntryId>> {
        let db: Option<Vec<u8>> = self
            .reader()?
            .prepare_cached("SELECT db FROM entries WHERE id = ?1")
            .and_then(|mut s| s.query_row([id.as_bytes()], |r| r.get(0)).optional())
            .map_err(sql_error)?;
        db.map(|db| rows::id_of(&db)).transpose()
    }

    fn tips(&self, db: &EntryId) -> Result<Vec<(EntryId, u64)>> {
        let conn = self.reader()?;
        Ok(newest_log_row(&conn, db)?
            .map(|(_, tips)| tips)
            .unwrap_or_default())
    }

    fn cell(&self, db: &EntryId, store: &str, key: &str) -> Result<Option<Cell>> {
        cell_in(&*self.reader()?, db, store, key)
    }

    fn cells(&self, db: &EntryId, store: &str) -> Result<Vec<(String, Cell)>> {
        let conn = self.reader()?;
        // The rows and their recorded count from the same snapshot: a commit landing
        // between two autocommit reads would look like a missing row.
        let (out, recorded) = in_snapshot(&conn, || {
            let mut stmt = conn
                .prepare_cached("SELECT height, entry, value, chk, key FROM cells WHERE db = ?1 AND store = ?2 ORDER BY key")
                .map_err(sql_error)?;
            let bound = params![db.as_bytes(), store];
            let out = keyed_cells(&mut stmt, bound, (db, store, None), RangeLimit::NONE)?;
            Ok((out, recorded_rows(&conn, db, store)?.unwrap_or(0)))
        })?;
        rows::verify_row_count(store, recorded, out.len())?;
        Ok(out)
    }

    fn cells_range(
        &self,
        db: &EntryId,
        store: &str,
        prefix: &str,
        after: Option<&str>,
        limit: RangeLimit,
        live_only: bool,
    ) -> Result<Vec<(String, Cell)>> {
        cells_range_in(&*self.reader()?, db, store, prefix, after, limit, live_only)
    }

    fn stores(&self, db: &EntryId) -> Result<Vec<String>> {
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare_cached("SELECT store FROM stores WHERE db = ?1 ORDER BY store")
            .map_err(sql_error)?;
        let names = stmt
            .query_map(params![db.as_bytes()], |r| r.get::<_, String>(0))
            .map_err(sql_error)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql_error)?;
        Ok(names)
    }

    fn discarded(&self, db: &EntryId) -> Result<Vec<EntryId>> {
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare_cached("SELECT id, chk FROM discarded WHERE db = ?1 ORDER BY id")
            .map_err(sql_error)?;
        let rows = stmt
            .query_map(params![db.as_bytes()], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(sql_error)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, chk) = row.map_err(sql_error)?;
            let id = rows::id_of(&id)?;
            if rows::discarded_check(db, &id) != chk {
                return Err(Error::Corrupt(
                    "a discarded-entry mark fails its integrity check".into(),
                ));
            }
            out.push(id);
        }
        Ok(out)
    }

    fn replace_state(&self, db: &EntryId, state: &StateWrite<'_>) -> Result<Option<Version>> {
        let mut conn = self.writer()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        if version_in(&tx, db)? != state.expected {
            return Ok(None); // rolled back as `tx` drops: nothing was written
        }
        for table in ["cells", "stores", "discarded"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE db = ?1"),
                params![db.as_bytes()],
            )
            .map_err(sql_error)?;
        }
        let mut added: BTreeMap<String, u64> = BTreeMap::new();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO cells (db, store, key, height, entry, value, chk) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql_error)?;
            for (store, key, cell) in &state.cells {
                insert
                    .execute(params![
                        db.as_bytes(),
                        store,
                        key,
                        i64_of(cell.height)?,
                        cell.entry.as_bytes(),
                        cell.value,
                        rows::cell_check(db, store, key, cell),
                    ])
                    .map_err(sql_error)?;
                count_added(&mut added, store);
            }
        }
        count_rows(&tx, db, &added)?;
        mark_discarded(&tx, db, state.discarded)?;
        let after = advance_shape(&tx, db)?;
        tx.commit().map_err(sql_error)?;
        Ok(Some(after))
    }

    fn entries_after(&self, db: &EntryId, after: u64, limit: usize) -> Result<Vec<(u64, EntryId)>> {
        let conn = self.reader()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, id, tips, chk FROM log WHERE db = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(sql_error)?;
        let rows = stmt
            .query_map(
                params![db.as_bytes(), i64_of(after)?, limit as i64],
                log_row,
            )
            .map_err(sql_error)?;
        let mut out: Vec<(u64, EntryId)> = Vec::new();
        for row in rows {
            let (seq, id, _) = checked_log_row(db, row.map_err(sql_error)?)?;
            let last = out.last().map_or(after, |(last, _)| *last);
            rows::verify_rises(Some(&last), &seq, "log positions")?;
            out.push((seq, id));
        }
        Ok(out)
    }

    fn last_position(&self, db: &EntryId) -> Result<u64> {
        let conn = self.reader()?;
        let last: Option<i64> = conn
            .prepare_cached("SELECT max(seq) FROM log WHERE db = ?1")
            .and_then(|mut s| s.query_row(params![db.as_bytes()], |r| r.get(0)))
            .map_err(sql_error)?;
        rows::position_of(last.unwrap_or(0))
    }

    fn entry_count(&self, db: &EntryId) -> Result<u64> {
        let conn = self.reader()?;
        let count: i64 = conn
            .prepare_cached("SELECT count(*) FROM log WHERE db = ?1")
            .and_then(|mut s| s.query_row(params![db.as_bytes()], |r| r.get(0)))
            .map_err(sql_error)?;
        Ok(count.unsigned_abs())
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        meta_value(&*self.reader()?, key)
    }

    fn meta_insert_new(&self, key: &str, value: &[u8]) -> Result<bool> {
        let conn = self.writer()?;
        let n = conn
            .prepare_cached("INSERT OR IGNORE INTO meta (key, value, chk) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![key, value, rows::meta_check(key, value)]))
            .map_err(sql_error)?;
        Ok(n == 1)
    }

    fn meta_put(&self, key: &str, value: &[u8]) -> Result<()> {
        set_meta(&*self.writer()?, key, value)
    }

    fn meta_delete(&self, key: &str, only_if: Option<&[u8]>) -> Result<bool> {
        delete_meta(&*self.writer()?, key, only_if)
    }

    fn meta_delete_prefix(&self, prefix: &str) -> Result<u64> {
        // A range of the key's index, not a scan of the table.
        let Some(range) = KeyRange::new(prefix, None) else {
            return Ok(0);
        };
        let n = (self.writer()?)
            .prepare_cached("DELETE FROM meta WHERE key >= ?1 AND (?2 IS NULL OR key < ?2)")
            .and_then(|mut s| s.execute(params![range.lower, range.upper]))
            .map_err(sql_error)?;
        Ok(n as u64)
    }

    fn secret_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let query = "SELECT value, chk FROM secrets WHERE key = ?1";
        checked_value(&*self.reader()?, query, key, "secret")
    }

    fn secret_put(&self, key: &str, value: &[u8], replacing: Option<&[u8]>) -> Result<bool> {
        let chk = rows::meta_check(key, value);
        self.scrubbed(Rewrite::Secrets, |conn| {
            // What a write replaces is what there is to scrub: an insert replaces nothing.
            let inserted = replacing.is_none()
                && conn
                    .prepare_cached(
                        "INSERT INTO secrets (key, value, chk) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (key) DO NOTHING",
                    )
                    .and_then(|mut s| s.execute(params![key, value, chk]))
                    .map_err(sql_error)?
                    == 1;
            let replaced = !inserted
                && conn
                    .prepare_cached(
                        "UPDATE secrets SET value = ?2, chk = ?3 WHERE key = ?1 \
                         AND (?4 IS NULL OR value = ?4)",
                    )
                    .and_then(|mut s| s.execute(params![key, value, chk, replacing]))
                    .map_err(sql_error)?
                    == 1;
            Ok(Changed {
                result: inserted || replaced,
                removed: replaced,
            })
        })
    }

    fn secret_delete(&self, key: &str) -> Result<bool> {
        self.scrubbed(Rewrite::Secrets, |conn| {
            let n = conn
                .prepare_cached("DELETE FROM secrets WHERE key = ?1")
                .and_then(|mut s| s.execute(params![key]))
                .map_err(sql_error)?;
            Ok(Changed {
                result: n == 1,
                removed: n == 1,
            })
        })
    }

    fn secret_names(&self, prefix: &str) -> Result<Vec<String>> {
        let conn = self.reader()?;
        let mut statement = conn
            .prepare_cached(
                "SELECT key FROM secrets WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
            )
            .map_err(sql_error)?;
        let names = statement
            .query_map(params![prefix], |row| row.get::<_, String>(0))
            .map_err(sql_error)?;
        names.collect::<rusqlite::Result<_>>().map_err(sql_error)
    }

    fn forget_database(&self, db: &EntryId, decided_at: Version) -> Result<bool> {
        self.scrubbed(Rewrite::File, |conn| {
            in_transaction(conn, |tx| forget_rows(tx, db, decided_at))
        })
    }
}

/// Deletes every row of database `db` in the open transaction if its version is still
/// `decided_at` ([`Backend::forget_database`]), and records the file's rewrite as pending
/// when it deleted any.
fn forget_rows(tx: &Connection, db: &EntryId, decided_at: Version) -> Result<Changed<bool>> {
    if version_in(tx, db)? != decided_at {
        return Ok(Changed {
            result: false,
            removed: false,
        });
    }
    // Positions are never handed out twice: a copy of `db` stored again continues after
    // this one's last, so a peer's cursor on this file's positions skips nothing of it.
    let last = newest_log_row(tx, db)?.map_or(0, |(seq, _)| seq);
    if last > counter_in(tx, FORGOTTEN_POSITIONS_KEY)? {
        set_counter(tx, FORGOTTEN_POSITIONS_KEY, last)?;
    }
    let id = db.as_bytes();
    // `entries` is keyed by entry id alone: its rows of `db` are found through `log`.
    let mut deleted = tx
        .execute(
            "DELETE FROM entries WHERE id IN (SELECT id FROM log WHERE db = ?1)",
            params![id],
        )
        .map_err(sql_error)?;
    for table in ["log", "cells", "stores", "discarded"] {
        deleted += tx
            .execute(&format!("DELETE FROM {table} WHERE db = ?1"), params![id])
            .map_err(sql_error)?;
    }
    deleted += tx
        .execute("DELETE FROM meta WHERE key = ?1", params![shape_key(db)])
        .map_err(sql_error)?;
    if deleted > 0 {
        mark_scrub_pending(tx, Rewrite::File)?;
    }
    Ok(Changed {
        result: true,
        removed: deleted > 0,
    })
}

/// The metadata record of database `db`'s [`Version`] shape: the value [`SHAPES_KEY`] had
/// when a write last moved it on (absent: 0). The version's count is its newest log
/// position. Removed when the database is forgotten; shapes are never handed out twice,
/// so no version comes back.
fn shape_key(db: &EntryId) -> String {
    format!("shape/{db}")
}

/// The metadata record counting every move of any database's shape: where shapes come from.
const SHAPES_KEY: &str = "shapes";

/// The metadata record of the last log position handed out to a database since forgotten
/// (absent: 0): the first entry of a database stored after that is at the position after it.
const FORGOTTEN_POSITIONS_KEY: &str = "forgotten-positions";

/// The counter in metadata record `key` (0 if absent).
fn counter_in(conn: &Connection, key: &str) -> Result<u64> {
    let Some(value) = meta_value(conn, key)? else {
        return Ok(0);
    };
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| Error::Corrupt(format!("{key} is not a counter")))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Sets the counter in metadata record `key`, in the open transaction.
fn set_counter(tx: &Connection, key: &str, value: u64) -> Result<()> {
    set_meta(tx, key, &value.to_be_bytes())
}

/// Metadata record `key` as `conn` sees it, its row check verified.
fn meta_value(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>> {
    checked_value(
        conn,
        "SELECT value, chk FROM meta WHERE key = ?1",
        key,
        "metadata",
    )
}

/// Deletes metadata record `key` through `conn` if it holds `only_if` (`None`: whatever it
/// holds); whether it did.
fn delete_meta(conn: &Connection, key: &str, only_if: Option<&[u8]>) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM meta WHERE key = ?1 AND (?2 IS NULL OR value = ?2)")
        .and_then(|mut s| s.execute(params![key, only_if]))
        .map_err(sql_error)?;
    Ok(n == 1)
}

/// Writes metadata record `key` through `conn`, replacing what was there.
fn set_meta(conn: &Connection, key: &str, value: &[u8]) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value, chk) VALUES (?1, ?2, ?3) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, chk = excluded.chk",
    )
    .and_then(|mut s| s.execute(params![key, value, rows::meta_check(key, value)]))
    .map_err(sql_error)?;
    Ok(())
}

/// The [`Version`] of `db` as `conn` sees it.
fn version_in(conn: &Connection, db: &EntryId) -> Result<Version> {
    let count = newest_log_row(conn, db)?.map_or(0, |(seq, _)| seq);
    Ok(Version::new(counter_in(conn, &shape_key(db))?, count))
}

/// Moves `db`'s shape on, in the open transaction, and returns its version after.
fn advance_shape(tx: &Connection, db: &EntryId) -> Result<Version> {
    let shape = counter_in(tx, SHAPES_KEY)? + 1;
    set_counter(tx, SHAPES_KEY, shape)?;
    set_counter(tx, &shape_key(db), shape)?;
    version_in(tx, db)
}

/// Writes the rows of `w` in the open transaction if `db`'s version still matches the one
/// `w` expects ([`Backend::put_entry`]), and returns the version after (unchanged if its
/// entry is already stored); `None` when it moved on, and nothing is written.
fn write_entry(tx: &Connection, w: &EntryWrite<'_>) -> Result<Option<Put>> {
    let newest = newest_log_row(tx, &w.meta.db)?;
    let shape = counter_in(tx, &shape_key(&w.meta.db))?;
    let count = newest.as_ref().map_or(0, |(seq, _)| *seq);
    let now = Version::new(shape, count);
    let db_id = &w.meta.db;
    if !w.fits(now)
        || !w.reads.still_hold(
            |store, key| cell_in(tx, db_id, store, key),
            |store, prefix| cells_range_in(tx, db_id, store, prefix, None, RangeLimit::NONE, false),
        )?
    {
        return Ok(None);
    }
    let db = w.meta.db.as_bytes();
    let height = i64_of(w.meta.height)?;
    // Every stored cell was written by an ancestor of a tip, no higher than it: a write of
    // an entry above every tip can only win (see the cells below).
    let above_every_tip = newest
        .as_ref()
        .is_none_or(|(_, tips)| tips.iter().all(|(_, tip)| *tip < w.meta.height));
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO entries (id, db, height, visible, changes_settings, bytes, chk) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![
                w.id.as_bytes(),
                db,
                height,
                rows::pack_ids(&w.meta.settings_visible),
                w.meta.changes_settings,
                w.bytes,
                rows::entry_check(&w.id, &w.meta, w.bytes),
            ])
        })
        .map_err(sql_error)?;
    if inserted == 0 {
        // Already stored.
        return Ok(Some(Put {
            version: now,
            directly_after: false,
        }));
    }
    append_to_log(tx, &w.meta.db, newest, &w.id, w.meta.height, w.parents)?;
    let mut added: BTreeMap<String, u64> = BTreeMap::new();
    let mut insert = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO cells (db, store, key, height, entry, value, chk) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(sql_error)?;
    let mut replace = tx
        .prepare_cached(
            "UPDATE cells SET height = ?4, entry = ?5, value = ?6, chk = ?7 \
             WHERE db = ?1 AND store = ?2 AND key = ?3 AND (?8 OR (?4, ?5) > (height, entry))",
        )
        .map_err(sql_error)?;
    w.cells.each(&mut |write| {
        let (store, key, cell) = (&write.store, &write.key, &write.cell);
        let (check, height) = (
            rows::cell_check(&w.meta.db, store, key, cell),
            i64_of(cell.height)?,
        );
        // The insert binds the first seven; the replace also whether to replace regardless.
        let row: [&dyn rusqlite::ToSql; 8] = [
            &db,
            store,
            key,
            &height,
            cell.entry.as_bytes(),
            &cell.value,
            &check,
            &write.replace,
        ];
        if insert.execute(&row[..7]).map_err(sql_error)? == 1 {
            count_added(&mut added, store);
        } else if replace.execute(&row[..]).map_err(sql_error)? == 0 && above_every_tip {
            // A newer cell than every tip: the newest log row read is an older one (a
            // damaged file), and the write would be lost while its commit answers OK.
            return Err(Error::Corrupt(
                "a stored value is newer than the database's newest log row: the file is \
                 damaged"
                    .into(),
            ));
        }
        Ok(())
    })?;
    count_rows(tx, &w.meta.db, &added)?;
    if w.discarded {
        mark_discarded(tx, &w.meta.db, &[w.id])?;
    }
    let version = if w.reshapes {
        advance_shape(tx, &w.meta.db)?
    } else {
        Version::new(shape, count + 1)
    };
    Ok(Some(Put {
        version,
        directly_after: now == w.expected,
    }))
}

/// Appends `id` (at `height`, with `parents`) to the end of `db`'s log, after its `newest`
/// row, recording the tips of `db` after it: the newest row's tips less `parents`, plus `id`.
fn append_to_log(
    tx: &Connection,
    db: &EntryId,
    newest: Option<(u64, Tips)>,
    id: &EntryId,
    height: u64,
    parents: &[EntryId],
) -> Result<()> {
    let (seq, mut tips) = match newest {
        Some((seq, tips)) => (seq + 1, tips),
        None => (counter_in(tx, FORGOTTEN_POSITIONS_KEY)? + 1, Vec::new()),
    };
    tips.retain(|(tip, _)| !parents.contains(tip));
    tips.push((*id, height));
    tips.sort_unstable();
    let packed = rows::pack_tips(&tips);
    let (stored_seq, chk) = (i64_of(seq)?, rows::log_check(db, seq, id, Some(&packed)));
    tx.prepare_cached("INSERT INTO log (db, seq, id, tips, chk) VALUES (?1, ?2, ?3, ?4, ?5)")
        .and_then(|mut s| {
            s.execute(params![
                db.as_bytes(),
                stored_seq,
                id.as_bytes(),
                packed,
                chk
            ])
        })
        .map_err(sql_error)?;
    Ok(())
}

/// Selects the newest log row of database ?1.
const NEWEST_LOG_ROW: &str =
    "SELECT seq, id, tips, chk FROM log WHERE db = ?1 ORDER BY seq DESC LIMIT 1";

/// The newest log row of `db` (`None` if it has none): its position and the tips of `db`,
/// checked.
fn newest_log_row(conn: &Connection, db: &EntryId) -> Result<Option<(u64, Tips)>> {
    let row = conn
        .prepare_cached(NEWEST_LOG_ROW)
        .and_then(|mut s| s.query_row(params![db.as_bytes()], log_row).optional())
        .map_err(sql_error)?;
    let Some(row) = row else {
        return Ok(None);
    };
    match checked_log_row(db, row)? {
        (seq, _, Some(tips)) => Ok(Some((seq, tips))),
        (_, _, None) => Err(Error::Corrupt(
            "the newest log row of a database records no tips".into(),
        )),
    }
}

/// A database's tips with their heights, sorted by id.
type Tips = Vec<(EntryId, u64)>;

/// A log row as read: position, entry id, packed tips, check.
type RawLogRow = (i64, Vec<u8>, Option<Vec<u8>>, Vec<u8>);

fn log_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawLogRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

/// A log row of `db` with its check verified: position, entry id and tips (if recorded).
fn checked_log_row(
    db: &EntryId,
    (seq, id, tips, chk): RawLogRow,
) -> Result<(u64, EntryId, Option<Tips>)> {
    let (seq, id) = (rows::position_of(seq)?, rows::id_of(&id)?);
    if rows::log_check(db, seq, &id, tips.as_deref()) != chk {
        return Err(Error::Corrupt(
            "a stored log row fails its integrity check".into(),
        ));
    }
    let tips = tips.as_deref().map(rows::unpack_tips).transpose()?;
    Ok((seq, id, tips))
}

/// Counts one more row added to `store` in `added`.
fn count_added(added: &mut BTreeMap<String, u64>, store: &str) {
    match added.get_mut(store) {
        Some(n) => *n += 1,
        None => {
            added.insert(store.to_string(), 1);
        }
    }
}

/// Adds `added` new rows to each store's recorded row count.
fn count_rows(tx: &Connection, db: &EntryId, added: &BTreeMap<String, u64>) -> Result<()> {
    for (store, n) in added {
        let recorded = recorded_rows(tx, db, store)?.unwrap_or(0);
        let rows = recorded + n;
        let (stored, chk) = (i64_of(rows)?, rows::store_check(db, store, rows));
        tx.prepare_cached(
            "INSERT INTO stores (db, store, rows, chk) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (db, store) DO UPDATE SET rows = excluded.rows, chk = excluded.chk",
        )
        .and_then(|mut s| s.execute(params![db.as_bytes(), store, stored, chk]))
        .map_err(sql_error)?;
    }
    Ok(())
}

/// The row count recorded for `store`, checked; `None` if the store has no rows.
fn recorded_rows(conn: &Connection, db: &EntryId, store: &str) -> Result<Option<u64>> {
    let row = conn
        .prepare_cached("SELECT rows, chk FROM stores WHERE db = ?1 AND store = ?2")
        .and_then(|mut s| {
            s.query_row(params![db.as_bytes(), store], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()
        })
        .map_err(sql_error)?;
    let Some((rows, chk)) = row else {
        return Ok(None);
    };
    let rows = rows::height_of(rows)?;
    if rows::store_check(db, store, rows) != chk {
        return Err(Error::Corrupt(format!(
            "the row count of store '{store}' fails its integrity check"
        )));
    }
    Ok(Some(rows))
}

fn mark_discarded(tx: &Connection, db: &EntryId, ids: &[EntryId]) -> Result<()> {
    let mut insert = tx
        .prepare_cached("INSERT OR IGNORE INTO discarded (db, id, chk) VALUES (?1, ?2, ?3)")
        .map_err(sql_error)?;
    for id in ids {
        insert
            .execute(params![
                db.as_bytes(),
                id.as_bytes(),
                rows::discarded_check(db, id)
            ])
            .map_err(sql_error)?;
    }
    Ok(())
}

/// The cell of `key` in `store` of `db`, as `conn` sees it ([`Backend::cell`]).
fn cell_in(conn: &Connection, db: &EntryId, store: &str, key: &str) -> Result<Option<Cell>> {
    let row = conn
        .prepare_cached(
            "SELECT height, entry, value, chk FROM cells WHERE db = ?1 AND store = ?2 AND key = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![db.as_bytes(), store, key], cell_row)
                .optional()
        })
        .map_err(sql_error)?;
    row.map(|r| checked_cell(db, store, key, r)).transpose()
}

/// [`Backend::cells_range`] as `conn` sees it.
fn cells_range_in(
    conn: &Connection,
    db: &EntryId,
    store: &str,
    prefix: &str,
    after: Option<&str>,
    limit: RangeLimit,
    live_only: bool,
) -> Result<Vec<(String, Cell)>> {
    let Some(range) = KeyRange::new(prefix, after) else {
        return Ok(Vec::new());
    };
    // Bounds on `key` after equalities on `db` and `store`: SQLite seeks the primary key
    // (BINARY collation, i.e. bytewise) and reads only the rows it returns, plus the
    // tombstones it skips. LIMIT -1 is no limit.
    let sql = format!(
        "SELECT height, entry, value, chk, key FROM cells \
         WHERE db = ?1 AND store = ?2 AND key {} ?3{} AND (?4 = 0 OR value IS NOT NULL) \
         ORDER BY key LIMIT ?5",
        if range.inclusive { ">=" } else { ">" },
        if range.upper.is_some() {
            " AND key < ?6"
        } else {
            ""
        },
    );
    let most = if limit.cells == 0 {
        -1
    } else {
        i64::try_from(limit.cells).unwrap_or(i64::MAX)
    };
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_error)?;
    let db_bytes: &[u8] = db.as_bytes();
    let mut bound: Vec<&dyn rusqlite::ToSql> =
        vec![&db_bytes, &store, &range.lower, &live_only, &most];
    if let Some(upper) = &range.upper {
        bound.push(upper);
    }
    let after = (!range.inclusive).then_some(range.lower.as_str());
    keyed_cells(&mut stmt, bound.as_slice(), (db, store, after), limit)
}

type RawCell = (i64, Vec<u8>, Option<String>, Vec<u8>);

fn cell_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawCell> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn checked_cell(
    db: &EntryId,
    store: &str,
    key: &str,
    (height, entry, value, chk): RawCell,
) -> Result<Cell> {
    let cell = Cell {
        height: rows::height_of(height)?,
        entry: rows::id_of(&entry)?,
        value,
    };
    if rows::cell_check(db, store, key, &cell) != chk {
        return Err(Error::Corrupt(
            "a stored value fails its integrity check".into(),
        ));
    }
    Ok(cell)
}

impl SqliteBackend {
    fn entry_row(&self, id: &EntryId) -> Result<Option<(EntryMeta, Vec<u8>)>> {
        let conn = self.reader()?;
        // The bytes are read only if no larger than an entry can be (their length is known
        // without reading them): a larger blob is not mnemo's, and is not taken into memory.
        let row = conn
            .prepare_cached(
                "SELECT db, height, visible, changes_settings, \
                 CASE WHEN length(bytes) <= ?2 THEN bytes END, chk FROM entries WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.query_row(params![id.as_bytes(), MAX_ENTRY_BYTES as i64], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, bool>(3)?,
                        r.get::<_, Option<Vec<u8>>>(4)?,
                        r.get::<_, Vec<u8>>(5)?,
                    ))
                })
                .optional()
            })
            .map_err(sql_error)?;
        let Some((db, height, visible, changes_settings, bytes, chk)) = row else {
            return Ok(None);
        };
        let bytes = bytes.ok_or_else(|| {
            Error::Corrupt(format!(
                "stored entry {id} is larger than {MAX_ENTRY_BYTES} bytes"
            ))
        })?;
        let meta = EntryMeta {
            db: rows::id_of(&db)?,
            height: rows::height_of(height)?,
            settings_visible: rows::unpack_ids(&visible)?,
            changes_settings,
        };
        if rows::entry_check(id, &meta, &bytes) != chk {
            return Err(Error::Corrupt(format!(
                "stored entry {id} fails its integrity check"
            )));
        }
        Ok(Some((meta, bytes)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use crate::backend::{CellReads, CellWrite};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    pub(super) fn temp_file() -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "mnemo-sqlite-unit-{}.db",
            crate::crypto::random::hex_token::<8>().unwrap()
        ))
    }

    pub(super) fn remove(path: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    pub(super) fn put(
        backend: &SqliteBackend,
        db: EntryId,
        n: u8,
        height: u64,
        parents: &[EntryId],
    ) -> EntryId {
        // Entry n of `db` (n = 0: its root, whose id is the database's).
        let id = if n == 0 {
            db
        } else {
            EntryId::from_bytes([n; 32])
        };
        let meta = EntryMeta {
            db,
            height,
            settings_visible: Vec::new(),
            changes_settings: false,
        };
        backend
            .put_entry(&EntryWrite {
                id,
                meta,
                bytes: &[n],
                parents,
                cells: &Vec::new(),
                discarded: false,
                expected: backend.version(&db).unwrap(),
                exact: false,
                reads: CellReads::default(),
                reshapes: false,
            })
            .unwrap()
            .expect("nothing else writes");
        id
    }

    /// Rewrites a version-3 file's log and tips the way version 2 kept them.
    fn downgrade_to_v2(path: &Path) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE tips (
                 db BLOB NOT NULL, id BLOB NOT NULL, height INTEGER NOT NULL, chk BLOB NOT NULL,
                 PRIMARY KEY (db, id)) WITHOUT ROWID;
             CREATE TABLE log_v2 (seq INTEGER PRIMARY KEY AUTOINCREMENT, db BLOB NOT NULL, id BLOB NOT NULL);
             INSERT INTO log_v2 (db, id) SELECT db, id FROM log ORDER BY seq, db;",
        )
        .unwrap();
        let newest: Vec<(Vec<u8>, Vec<u8>)> = conn
            .prepare("SELECT db, tips FROM log AS l WHERE seq = (SELECT max(seq) FROM log WHERE db = l.db)")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for (db, tips) in newest {
            let db = rows::id_of(&db).unwrap();
            for (id, height) in rows::unpack_tips(&tips).unwrap() {
                conn.execute(
                    "INSERT INTO tips (db, id, height, chk) VALUES (?1, ?2, ?3, ?4)",
                    params![
                        db.as_bytes(),
                        id.as_bytes(),
                        height as i64,
                        rows::tip_check(&db, &id, height)
                    ],
                )
                .unwrap();
            }
        }
        conn.execute_batch(
            "DROP TABLE log; ALTER TABLE log_v2 RENAME TO log;
             CREATE INDEX log_by_db ON log (db, seq); PRAGMA user_version=2; COMMIT;",
        )
        .unwrap();
    }

    #[test]
    fn a_version_2_file_is_upgraded_keeping_positions_and_tips() {
        let path = temp_file();
        let (a, b) = (
            EntryId::from_bytes([0xa0; 32]),
            EntryId::from_bytes([0xb0; 32]),
        );
        {
            let backend = SqliteBackend::open(&path).unwrap();
            put(&backend, a, 0, 0, &[]);
            put(&backend, b, 0, 0, &[]);
            let a1 = put(&backend, a, 1, 1, &[a]);
            put(&backend, a, 2, 1, &[a]); // a second tip beside a1
            put(&backend, b, 3, 1, &[b]);
            assert_eq!(backend.tips(&a).unwrap().len(), 2);
            assert_eq!(backend.tips(&a).unwrap()[0], (a1, 1));
        }
        // Version 2 numbered entries across databases: a's positions become 1, 3, 5.
        downgrade_to_v2(&path);
        let conn = Connection::open(&path).unwrap();
        let before: Vec<(i64, Vec<u8>)> = conn
            .prepare("SELECT seq, id FROM log WHERE db = ?1 ORDER BY seq")
            .unwrap()
            .query_map([a.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        drop(conn);

        let backend = SqliteBackend::open(&path).unwrap();
        let after = backend.entries_after(&a, 0, 100).unwrap();
        let expected: Vec<(u64, EntryId)> = before
            .iter()
            .map(|(seq, id)| (*seq as u64, rows::id_of(id).unwrap()))
            .collect();
        assert_eq!(after, expected);
        assert_eq!(expected.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 3, 5]);
        let tips = backend.tips(&a).unwrap();
        assert_eq!(tips.len(), 2);
        let last = backend.last_position(&a).unwrap();
        assert_eq!(last, expected.last().unwrap().0);
        // The next entry continues after the database's last position and merges its tips.
        let parents: Vec<EntryId> = tips.iter().map(|(id, _)| *id).collect();
        let merged = put(&backend, a, 4, 2, &parents);
        assert_eq!(backend.tips(&a).unwrap(), vec![(merged, 2)]);
        assert_eq!(backend.last_position(&a).unwrap(), last + 1);
        assert_eq!(backend.tips(&b).unwrap().len(), 1);
        let conn = backend.writer().unwrap();
        let leftovers: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('tips', 'log_v2', 'log_by_db')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(leftovers, 0);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        drop(conn);
        drop(backend);
        remove(&path);
    }

    /// Commits in the WAL (frames that end a transaction), counted since it was last reset.
    pub(super) fn wal_commits(path: &Path) -> usize {
        let wal = std::fs::read(format!("{}-wal", path.display())).unwrap_or_default();
        if wal.len() < 32 {
            return 0;
        }
        let page = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
        let salt = &wal[16..24];
        let (mut commits, mut at) = (0, 32);
        // Frames carry the header's salt; older ones left from before a reset do not.
        while at + 24 + page <= wal.len() && &wal[at + 8..at + 16] == salt {
            if wal[at + 4..at + 8] != [0; 4] {
                commits += 1;
            }
            at += 24 + page;
        }
        commits
    }

    /// Starts one thread per write, each storing its entry, once they are all queued for
    /// the writer (held here until then); returns each one's result.
    fn queued_writes(
        backend: &Arc<SqliteBackend>,
        writes: Vec<(EntryId, u64, u64)>,
    ) -> Vec<Result<()>> {
        let held = backend.writer().unwrap();
        let n = writes.len();
        let threads: Vec<_> = writes
            .into_iter()
            .map(|(db, entry_height, cell_height)| {
                let backend = backend.clone();
                std::thread::spawn(move || {
                    let meta = EntryMeta {
                        db,
                        height: entry_height,
                        settings_visible: Vec::new(),
                        changes_settings: false,
                    };
                    let cell = CellWrite {
                        store: "s".into(),
                        key: "k".into(),
                        cell: Cell {
                            height: cell_height,
                            entry: db,
                            value: Some("1".into()),
                        },
                        replace: false,
                    };
                    backend
                        .put_entry(&EntryWrite {
                            id: db,
                            meta,
                            bytes: b"root",
                            parents: &[],
                            cells: &vec![cell],
                            discarded: false,
                            expected: Version::default(),
                            exact: false,
                            reads: CellReads::default(),
                            reshapes: false,
                        })
                        .map(drop)
                })
            })
            .collect();
        while backend.writer.queued() < n {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(held);
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    #[test]
    fn statements_are_not_prepared_again_for_each_binding() {
        let path = temp_file();
        let backend = SqliteBackend::open(&path).unwrap();
        let db = EntryId::from_bytes([1; 32]);
        let mut parent = put(&backend, db, 0, 0, &[]);
        for n in 1..10u8 {
            parent = put(&backend, db, n, u64::from(n), &[parent]);
            backend.tips(&EntryId::from_bytes([n + 100; 32])).unwrap();
        }
        let conn = backend.writer().unwrap();
        let stmt = conn.prepare_cached(NEWEST_LOG_ROW).unwrap();
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
        drop(stmt);
        drop(conn);
        drop(backend);
        remove(&path);
    }

    #[test]
    fn concurrent_commits_share_one_transaction() {
        let path = temp_file();
        let backend = Arc::new(SqliteBackend::open(&path).unwrap());
        let dbs: Vec<EntryId> = (1..=8).map(|n| EntryId::from_bytes([n; 32])).collect();
        let before = wal_commits(&path);
        let results = queued_writes(&backend, dbs.iter().map(|db| (*db, 0, 0)).collect());
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        assert_eq!(wal_commits(&path), before + 1, "eight writes, one commit");
        for db in &dbs {
            assert_eq!(backend.tips(db).unwrap(), vec![(*db, 0)]);
            assert!(backend.cell(db, "s", "k").unwrap().is_some());
        }
        // A lone write commits at once: another connection sees it when it returns.
        let lone = EntryId::from_bytes([9; 32]);
        queued_writes(&backend, vec![(lone, 0, 0)])
            .remove(0)
            .unwrap();
        assert_eq!(
            backend
                .readers
                .get()
                .unwrap()
                .query_row(
                    "SELECT count(*) FROM entries WHERE id = ?1",
                    [lone.as_bytes()],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap(),
            1
        );
        drop(backend);
        remove(&path);
    }

    #[test]
    fn a_failing_write_in_a_group_undoes_only_its_own_rows() {
        let path = temp_file();
        let backend = Arc::new(SqliteBackend::open(&path).unwrap());
        // Whichever thread gets the writer first, the failing one begins the group, joins
        // it or ends it: each round has fresh databases.
        for round in 0..5u8 {
            let id = |n: u8| EntryId::from_bytes([round * 3 + n; 32]);
            let (a, bad, c) = (id(1), id(2), id(3));
            // `bad`'s entry and log rows are written before its cell fails (a height
            // beyond 2^63).
            let results = queued_writes(&backend, vec![(a, 0, 0), (bad, 0, u64::MAX), (c, 0, 0)]);
            assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
            assert!(
                matches!(results[1], Err(Error::InvalidArgument(_))),
                "{results:?}"
            );
            assert_eq!(backend.get_entry(&bad).unwrap(), None);
            assert_eq!(backend.tips(&bad).unwrap(), vec![]);
            for good in [a, c] {
                assert_eq!(backend.tips(&good).unwrap(), vec![(good, 0)]);
            }
        }
        drop(backend);
        remove(&path);
    }

    #[test]
    fn reads_go_on_while_the_writer_is_busy_and_the_pool_is_bounded() {
        let path = temp_file();
        let backend = Arc::new(SqliteBackend::open(&path).unwrap());
        assert!(backend.meta_insert_new("k", b"v").unwrap());

        // While a commit holds the writer (as during its fsync), reads still complete.
        let writing = backend.writer().unwrap();
        let (done, finished) = mpsc::channel();
        let reader = backend.clone();
        std::thread::spawn(move || {
            let _ = done.send(reader.meta_get("k").map(|v| v.unwrap()));
        });
        let read = finished.recv_timeout(Duration::from_secs(10));
        drop(writing);
        assert_eq!(read.expect("the read waited for the writer").unwrap(), b"v");

        // With the writer busy and every read connection taken, one more read waits.
        let writing = backend.writer().unwrap();
        let held: Vec<Reader<'_>> = (0..SqliteBackend::MAX_READERS)
            .map(|_| backend.readers.get().unwrap())
            .collect();
        let (done, finished) = mpsc::channel();
        let reader = backend.clone();
        let waiter = std::thread::spawn(move || {
            let _ = done.send(reader.meta_get("k").is_ok());
        });
        assert!(finished.recv_timeout(Duration::from_millis(200)).is_err());
        drop(held);
        drop(writing);
        assert!(finished.recv_timeout(Duration::from_secs(10)).unwrap());
        waiter.join().unwrap();
        drop(backend);
        remove(&path);
    }

    /// A write waits for the writer, held by another thread's write or turn, at most the
    /// lock wait, then fails busy (writes queued behind one that waits for another
    /// process's lock each wait about that long, not once more for each write ahead).
    #[test]
    fn a_write_waits_for_the_writer_at_most_the_lock_wait() {
        let path = temp_file();
        let backend = Arc::new(SqliteBackend::open(&path).unwrap());
        backend.writer.set_lock_wait(Duration::from_millis(100));
        let busy = |backend: &SqliteBackend| {
            let started = std::time::Instant::now();
            let put = backend.meta_put("k", b"v");
            assert!(
                matches!(&put, Err(Error::Busy(m)) if m.contains("kept its writer")),
                "{put:?}"
            );
            assert!(started.elapsed() >= Duration::from_millis(100));
        };
        // Held by a write of another thread (as while it waits for another process's lock).
        let writing = backend.writer().unwrap();
        let other = backend.clone();
        std::thread::spawn(move || busy(&other)).join().unwrap();
        drop(writing);
        // Held by another thread's turn.
        let (go_on, told) = mpsc::channel::<()>();
        let (taken, turn_taken) = mpsc::channel::<()>();
        let holder = backend.clone();
        let turn = std::thread::spawn(move || {
            holder.write_turn(false, &mut || {
                taken.send(()).unwrap();
                told.recv().unwrap();
                Ok(())
            })
        });
        turn_taken.recv().unwrap();
        busy(&backend);
        // Ending an announcement, which may commit a group left open, does not wait for it.
        backend.announce_write();
        backend.withdraw_write();
        go_on.send(()).unwrap();
        assert!(turn.join().unwrap().unwrap().is_none());
        backend.meta_put("k", b"v").unwrap();
        assert_eq!(backend.meta_get("k").unwrap().unwrap(), b"v");
        drop(backend);
        remove(&path);
    }

    /// A thread that panics holding the writer outside a turn leaves its connection in a
    /// state nobody knows: every later write fails (internal error), none panics or hangs.
    #[test]
    fn a_panic_holding_the_writer_fails_later_writes() {
        let path = temp_file();
        let backend = Arc::new(SqliteBackend::open(&path).unwrap());
        let panicking = backend.clone();
        let ended = std::thread::spawn(move || {
            let _writing = panicking.writer().unwrap();
            panic!("a write that panicked (as the test means)");
        })
        .join();
        assert!(ended.is_err());
        let put = backend.meta_put("k", b"v");
        assert!(
            matches!(&put, Err(Error::Internal(m)) if m.contains("panicked")),
            "{put:?}"
        );
        drop(backend);
        remove(&path);
    }

    /// A forget whose scrub another process keeps out still succeeds: holding the file's
    /// lock past the wait keeps out the rewrite (and the checkpoint after it), a read
    /// snapshot the checkpoint alone. What was kept out stays recorded: the next forget or
    /// open finishes it, a secret's change the checkpoint.
    #[test]
    fn a_forget_whose_scrub_is_kept_out_succeeds_and_the_scrub_comes_later() {
        let path = temp_file();
        let backend = SqliteBackend::open(&path).unwrap();
        let other = Connection::open(&path).unwrap();
        let pending = |b: &SqliteBackend| {
            [REWRITE_PENDING_KEY, CHECKPOINT_PENDING_KEY]
                .map(|key| b.meta_get(key).unwrap().is_some())
        };
        // Forgets database `n` while `other` keeps the scrub out from the moment the
        // delete commits (`keep_out`, run as the change ends, before `finish_scrub`)
        // until after the forget returned.
        let forget_kept_out = |backend: &SqliteBackend, n: u8, keep_out: &str| {
            let db = EntryId::from_bytes([n; 32]);
            put(backend, db, 0, 0, &[]);
            let decided_at = backend.version(&db).unwrap();
            let forgot = backend.scrubbed(Rewrite::File, |conn| {
                let forgot = in_transaction(conn, |tx| forget_rows(tx, &db, decided_at));
                other.execute_batch(keep_out).unwrap();
                forgot
            });
            assert!(forgot.unwrap(), "the forget happened");
            assert_eq!(backend.tips(&db).unwrap(), vec![]);
            let left = pending(backend);
            let steps = left.iter().filter(|&&step| step).count() as u64;
            assert_eq!(backend.scrub_steps_pending().unwrap(), steps);
            other.execute_batch("ROLLBACK").unwrap();
            left
        };
        let holding_the_lock = "BEGIN IMMEDIATE";
        let reading = "BEGIN; SELECT count(*) FROM meta";
        assert_eq!(pending(&backend), [false, false]);
        assert_eq!(forget_kept_out(&backend, 1, holding_the_lock), [true, true]);
        assert_eq!(forget_kept_out(&backend, 2, holding_the_lock), [true, true]);
        // A secret's change finishes the checkpoint only; the next forget (here of a
        // database not stored) finishes both ...
        assert!(!backend.secret_delete("nothing").unwrap());
        assert_eq!(pending(&backend), [true, false]);
        let absent = EntryId::from_bytes([8; 32]);
        assert!(backend
            .forget_database(&absent, Version::default())
            .unwrap());
        assert_eq!(pending(&backend), [false, false]);
        // ... and the checkpoint a read snapshot kept out, the next scrubbed change.
        assert_eq!(forget_kept_out(&backend, 3, reading), [false, true]);
        assert!(!backend.secret_delete("nothing").unwrap());
        assert_eq!(pending(&backend), [false, false]);
        // ... or the next open.
        assert_eq!(forget_kept_out(&backend, 4, holding_the_lock), [true, true]);
        drop(backend);
        let backend = SqliteBackend::open(&path).unwrap();
        assert_eq!(pending(&backend), [false, false]);
        assert_eq!(forget_kept_out(&backend, 5, reading), [false, true]);
        drop(backend);
        let backend = SqliteBackend::open(&path).unwrap();
        assert_eq!(pending(&backend), [false, false]);
        assert_eq!(backend.scrub_steps_pending().unwrap(), 0);
        drop((backend, other));
        remove(&path);
    }
}
