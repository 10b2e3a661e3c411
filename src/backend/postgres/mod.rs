//! `postgres://…`: an instance stored in PostgreSQL, shared by processes on many hosts.
//!
//! The same tables as the SQLite backend (prefixed `mnemo_`). Consistency between processes
//! comes from the server: one statement per stored entry (`PUT_ENTRY`), primary keys,
//! `ON CONFLICT` upserts that keep the winning cell, and inserts that fail on an existing key
//! (so two processes creating the same username: one wins). Each database's [`Version`] is a
//! row of `mnemo_heads` that every write moves on, so a process writes only on top of what
//! it read; a document write that another process's write overtook is stored by a
//! transaction comparing the rows it read (`put_entry_checking_reads`; `overtaken.rs`
//! remembers where that happens, to go there first). A change overtaken twice holds its
//! database's lock for the rest of its write turn (`turns.rs`). The schema version is
//! recorded and checked at connect; the schema is created (or upgraded from version 2 or 3)
//! under an advisory lock.
//!
//! Connections use TLS as the URL's `sslmode` and `sslrootcert` say, with libpq's meaning
//! (`options.rs` reads them, `tls.rs` is the connector). Each has TCP keepalive, the URL's
//! `lock_timeout` (a write waiting longer for a database's lock fails as busy; a
//! connection idle that long, at least 5 s, inside a transaction is ended by the server,
//! freeing its locks) and a limit on every wait for the server (`driver.rs`: connecting,
//! and each call). The instance's threads share up to the URL's `max_connections` of them
//! (`pool.rs`; those beyond one closed after the URL's `idle_timeout`); one the server
//! ended is made again before the call that would use it, once the server's word of it has
//! arrived (read when it sat idle [`NEWS_AFTER_IDLE`] or more, and given [`CHECK_WAIT`] to
//! arrive after [`CHECK_AFTER_IDLE`], or when another was found ended); one that ends while
//! in use fails a write, and a read is run again on another (`PostgresBackend::read`).

mod cert;
mod columns;
mod driver;
mod options;
mod overtaken;
mod pool;
#[cfg(test)]
mod stall_tests;
mod tls;
mod turns;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Statement};

use columns::Columns;
use driver::{Client, Failure, Statements, Transaction};
pub use options::{PostgresUrl, SslMode};
use overtaken::Overtaken;
use pool::{Lent, Pool};
use turns::Turns;

use super::range::KeyRange;
use super::rows;
use super::{
    not_stored, Backend, Cell, EntryMeta, EntryWrite, KeyedCells, Put, RangeLimit, StateWrite,
    Version,
};
use crate::entry::EntryId;
use crate::error::{quoted, shown_cut, Error, Result};

/// The schema this build reads and writes. Version 1 was a development schema, refused;
/// versions 2 ([`SCHEMA_V2`]) and 3 are upgraded at connect ([`UPGRADE_FROM_V2`], then
/// [`UPGRADE_FROM_V3`]).
pub const SCHEMA_VERSION: i32 = 4;
/// How long an upgrade of the schema may take (at connect, once per database).
const UPGRADE_LIMIT: Duration = Duration::from_secs(60 * 60);
/// Advisory lock key serialising schema creation: "mnem".
const SCHEMA_LOCK: i64 = 0x6d6e_656d;

/// Schema version 2. A new database is made with it and upgraded at once, so that every
/// database of this build has the same shape whatever its age.
const SCHEMA_V2: &str = r#"
CREATE TABLE mnemo_schema (version INTEGER NOT NULL);
CREATE TABLE mnemo_meta (key TEXT COLLATE "C" PRIMARY KEY, value BYTEA NOT NULL, chk BYTEA NOT NULL);
CREATE TABLE mnemo_entries (
    id BYTEA PRIMARY KEY, db BYTEA NOT NULL, height BIGINT NOT NULL, visible BYTEA NOT NULL,
    changes_settings BOOLEAN NOT NULL, bytes BYTEA NOT NULL, chk BYTEA NOT NULL);
CREATE TABLE mnemo_tips (
    db BYTEA NOT NULL, id BYTEA NOT NULL, height BIGINT NOT NULL, chk BYTEA NOT NULL,
    PRIMARY KEY (db, id));
CREATE TABLE mnemo_log (seq BIGSERIAL PRIMARY KEY, db BYTEA NOT NULL, id BYTEA NOT NULL);
CREATE INDEX mnemo_log_by_db ON mnemo_log (db, seq);
CREATE TABLE mnemo_cells (
    db BYTEA NOT NULL, store TEXT COLLATE "C" NOT NULL, key TEXT COLLATE "C" NOT NULL,
    height BIGINT NOT NULL, entry BYTEA NOT NULL, value TEXT, chk BYTEA NOT NULL,
    PRIMARY KEY (db, store, key));
CREATE TABLE mnemo_stores (
    db BYTEA NOT NULL, store TEXT COLLATE "C" NOT NULL, rows BIGINT NOT NULL, chk BYTEA NOT NULL,
    PRIMARY KEY (db, store));
CREATE TABLE mnemo_discarded (db BYTEA NOT NULL, id BYTEA NOT NULL, chk BYTEA NOT NULL, PRIMARY KEY (db, id));
CREATE TABLE mnemo_secrets (key TEXT COLLATE "C" PRIMARY KEY, value BYTEA NOT NULL, chk BYTEA NOT NULL);
"#;

/// The part of a key that `mnemo_cells` is indexed and ordered by: its first 512
/// characters (at most 2,048 bytes), so that an index entry (with the database id, a store
/// name of at most 255 bytes and the key's hash) stays under PostgreSQL's limit of 2,704
/// bytes, where a key (up to 4,096 bytes, and hidden rows' keys longer) would not. Ordering
/// by it and then by the key is ordering by the key (bytewise): a character prefix of UTF-8
/// text is a byte prefix.
macro_rules! key_head {
    ($text:literal) => {
        concat!("left(", $text, ", 512)")
    };
}

/// Brings a version 2 schema to this one (run under the schema lock; its time grows with
/// the cells stored):
/// - `mnemo_heads` holds each database's [`Version`]: its shape and its count (no row: 0
///   and 0). A forgotten database's row is kept, so no version comes back.
/// - `mnemo_cells` is keyed by its key's head ([`key_head`]) and SHA-256 instead of the
///   whole key, which PostgreSQL cannot index past about 2.7 KB.
const UPGRADE_FROM_V2: &str = concat!(
    "CREATE TABLE mnemo_heads (
    db BYTEA PRIMARY KEY, shape BIGINT NOT NULL, version BIGINT NOT NULL);
ALTER TABLE mnemo_cells ADD COLUMN key_hash BYTEA;
UPDATE mnemo_cells SET key_hash = sha256(convert_to(key, 'UTF8'));
ALTER TABLE mnemo_cells ALTER COLUMN key_hash SET NOT NULL, DROP CONSTRAINT mnemo_cells_pkey;
CREATE UNIQUE INDEX mnemo_cells_by_key ON mnemo_cells (db, store, ",
    key_head!("key"),
    ", key_hash);
UPDATE mnemo_schema SET version = 3;"
);

/// Brings a version 3 schema to this one: `mnemo_tips` is keyed by a slot per tip instead
/// of the tip's id, so that a commit replaces its parent's row in place ([`PUT_ENTRY`]).
/// Deleting the parent's row and inserting the entry's left a dead index entry per commit
/// until autovacuum, and every commit reads the tips through that index. A slot is the log
/// position of the entry that first held it; the tips kept take negative ones, which no log
/// position is.
const UPGRADE_FROM_V3: &str = "ALTER TABLE mnemo_tips ADD COLUMN slot BIGINT;
UPDATE mnemo_tips t SET slot = -n.n FROM (
    SELECT db, id, row_number() OVER (PARTITION BY db ORDER BY id) AS n FROM mnemo_tips
) n WHERE n.db = t.db AND n.id = t.id;
ALTER TABLE mnemo_tips ALTER COLUMN slot SET NOT NULL, DROP CONSTRAINT mnemo_tips_pkey,
    ADD PRIMARY KEY (db, slot);
UPDATE mnemo_schema SET version = 4;";

/// Moves database `$1`'s version on, shape and count, if it is still shape `$2` and count
/// `$3`, returning the new one (no row when it is not: another process wrote). An upsert
/// works on the newest row, whatever the statement's snapshot: see [`PUT_ENTRY`].
const ADVANCE_HEAD: &str = "INSERT INTO mnemo_heads AS h (db, shape, version) \
     VALUES ($1, $2::int8 + 1, $3::int8 + 1) \
     ON CONFLICT (db) DO UPDATE SET shape = h.shape + 1, version = h.version + 1 \
     WHERE h.shape = $2 AND h.version = $3 \
     RETURNING shape, version";

/// Connections to PostgreSQL with their prepared statements, shared by the instance's
/// threads (at most the URL's `max_connections`; `pool.rs`); one the server ended is made
/// again (see the module's documentation).
pub struct PostgresBackend {
    pool: Pool<Connection>,
    url: PostgresUrl,
    /// The schema holding mnemo's tables, the only one each connection looks them up in.
    schema: String,
    /// Databases whose document writes other processes' writes overtake.
    overtaken: Overtaken,
    /// The write turns running, with the connection each holds a database's lock on.
    turns: Turns<Connection>,
}

/// How many times a read is run on connections the server turns out to have closed: each
/// try after the first takes another, once every idle one was given [`CHECK_WAIT`] to say
/// it ended (several ended by one restart may say so a moment apart).
const READ_TRIES: usize = 3;
/// A connection idle this long reads what the server sent before a call uses it (without
/// waiting: microseconds; calls back to back skip it)...
const NEWS_AFTER_IDLE: Duration = Duration::from_millis(10);
/// ...and one idle this long is given [`CHECK_WAIT`] for it to arrive.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(5);
/// How long a connection waits for the server's word that it ended, when it sent none.
const CHECK_WAIT: Duration = Duration::from_millis(1);

struct Connection {
    client: Client,
    /// [`PUT_ENTRY`].
    put_entry: Statement,
    get_entry: Statement,
    /// [`Backend::entry_db`].
    get_entry_db: Statement,
    get_tips: Statement,
    get_tip_metas: Statement,
    /// [`GET_SETTINGS_CLOSURE`].
    get_settings_closure: Statement,
    get_cell: Statement,
    get_cells: Statement,
    /// The four forms of `range_sql`, at [`range_form`].
    get_range: [Statement; 4],
    insert_cell: Statement,
    get_rows: Statement,
    set_rows: Statement,
    mark_discarded: Statement,
    get_meta: Statement,
    lock_db: Statement,
    /// A database's lock at session level, for a turn ([`Backend::hold_for_turn`]).
    hold_db: Statement,
    release_db: Statement,
    /// [`ADVANCE_HEAD`].
    advance_head: Statement,
    get_head: Statement,
    /// [`GET_HEAD_AND_CELLS`].
    get_head_and_cells: Statement,
    get_log: Statement,
    last_log: Statement,
    /// The last position of each database of an array, in its order.
    last_logs: Statement,
    insert_meta: Statement,
    put_meta: Statement,
    delete_meta: Statement,
}

/// The error with its underlying cause (the driver's own message is often generic), with
/// the server's words escaped as a peer's are, and at most [`SERVER_WORDS_CHARS`] of them
/// ([`shown_cut`]): whoever answers on the server's address chooses them.
fn with_cause(e: &Failure) -> String {
    shown_cut(&e.to_string(), SERVER_WORDS_CHARS)
}

/// Most characters of an error's text an error message keeps (a hostile server sent one of
/// 64 MiB; a peer's are at most 4 KiB).
const SERVER_WORDS_CHARS: usize = 4096;

fn pg_error(e: Failure) -> Error {
    let text = format!("postgres: {}", with_cause(&e));
    let code = e.driver_error().and_then(|e| e.code());
    if code == Some(&SqlState::DATA_CORRUPTED) || code == Some(&SqlState::INDEX_CORRUPTED) {
        return Error::Corrupt(text);
    }
    if code == Some(&SqlState::LOCK_NOT_AVAILABLE) {
        // `lock_timeout` ran out: another process holds the lock (see `open_client`).
        return Error::Busy(text);
    }
    Error::Storage(text)
}

impl PostgresBackend {
    /// Connects to the server a `postgres://` URL names and checks (or creates) the schema.
    /// See [`PostgresBackend::connect_to`].
    pub fn connect(url: &str) -> Result<PostgresBackend> {
        PostgresBackend::connect_to(&PostgresUrl::parse(url)?)
    }

    /// Connects to the server of a checked URL, with TLS as its `sslmode` says (see
    /// [`SslMode`]), and checks (or creates) the schema. [`Error::InvalidArgument`] if the
    /// `sslrootcert` file cannot be read or holds no certificate; [`Error::Storage`] if the
    /// server cannot be reached, refuses TLS that the mode requires, presents a certificate
    /// the mode refuses, or refuses the login, and for a schema of another mnemo version.
    pub fn connect_to(url: &PostgresUrl) -> Result<PostgresBackend> {
        let mut client = open_client(url)?;
        check_or_create_schema(&mut client)?;
        let found = client
            .query_one(
                "SELECT n.nspname, n.oid = pg_my_temp_schema() FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = to_regclass('mnemo_schema')",
                &[],
            )
            .map_err(pg_error)?;
        let schema: String = found.col(0)?;
        if found.col::<bool>(1)? {
            // Its tables, and everything stored, would vanish with the connection.
            return Err(Error::invalid(
                "the URL's search_path selects the connection's temporary schema (pg_temp), \
                 whose tables vanish when the connection closes: name a schema of the database",
            ));
        }
        look_only_in(&mut client, &schema)?;
        let conn = Connection::prepare(client).map_err(pg_error)?;
        Ok(PostgresBackend {
            pool: Pool::new(conn, url.max_connections(), url.idle_timeout()),
            url: url.clone(),
            schema,
            overtaken: Overtaken::default(),
            turns: Turns::default(),
        })
    }

    /// A connection for one call: in a write turn that holds a database, the connection
    /// holding it ([`Backend::hold_for_turn`]); otherwise one of the pool ([`Self::lend`]).
    fn lock(&self) -> Result<Taken<'_>> {
        match self.turns.take_held() {
            Ok(Some(conn)) => Ok(Taken::Held(&self.turns, Some(conn))),
            Ok(None) => self.lend(false).map(Taken::Lent),
            // Another connection's write would wait for the lock this thread holds.
            Err(()) => Err(Error::Internal(
                "postgres: a call inside another while a database's lock is held".into(),
            )),
        }
    }

    /// A connection of the pool, for one call: an idle one the server has not ended, or a
    /// new one, or one another thread gives back within the URL's `lock_timeout` (then
    /// [`Error::Busy`]). `after_one_ended`: a connection was just found ended, so each idle
    /// one is looked at first.
    fn lend(&self, after_one_ended: bool) -> Result<Lent<'_, Connection>> {
        let make = || {
            let mut client = open_client(&self.url)?;
            look_only_in(&mut client, &self.schema)?;
            check_unchanged(&mut client)?;
            Connection::prepare(client).map_err(pg_error)
        };
        let found_ended = std::cell::Cell::new(after_one_ended);
        let usable = |c: &mut Connection, idle: Duration| {
            // A connection first reads what the server sent meanwhile: a server that ended
            // it (a restart, `idle_session_timeout`, an administrator) has said so, and it is
            // then seen closed and replaced, rather than failing this call. What has arrived
            // is read at once (not between calls back to back: they pay nothing); a
            // connection idle a while is given a moment for the word to arrive. (One that
            // vanished without a word fails the call.) Once one is found ended, the others
            // are given that moment too: a restart ends them all, and each would otherwise
            // fail a call of its own. (Inside the pool's lock: at most 1 ms per idle
            // connection, and only then.)
            if idle >= CHECK_AFTER_IDLE || found_ended.get() {
                c.client.settle(CHECK_WAIT);
            } else if idle >= NEWS_AFTER_IDLE {
                c.client.take_news();
            }
            let usable = c.client.is_usable();
            found_ended.set(found_ended.get() || !usable);
            usable
        };
        self.pool.take(usable, make, self.url.lock_timeout())
    }

    /// Runs `read`, which only reads, on a connection for one call ([`Self::lock`]). If a
    /// pooled connection fails it because the server had closed it (a restart, a failover,
    /// an administrator, the server's idle limits), `read` runs again on another
    /// connection, up to [`READ_TRIES`] times in all: reading changes nothing, so a
    /// restart fails no read once the server is back. (A write it cuts off still fails:
    /// whether the server did it is unknown.) A call that ran out of time is not run again:
    /// the server may be gone, and the wait would double.
    fn read<T>(&self, mut read: impl FnMut(&mut Connection) -> Result<T>) -> Result<T> {
        let mut c = self.lock()?;
        let mut tries = 1;
        loop {
            match read(&mut c) {
                Err(Error::Storage(_)) if tries < READ_TRIES && c.closed_while_lent() => {
                    drop(c);
                    c = Taken::Lent(self.lend(true)?);
                    tries += 1;
                }
                done => return done,
            }
        }
    }

    /// The rows of the prepared statement `pick` names, run with `params` ([`Self::read`]).
    fn query(
        &self,
        pick: fn(&Connection) -> &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        self.read(|c| {
            let statement = pick(c).clone(); // a shared handle: the client needs `c` mutably
            c.client.query(&statement, params).map_err(pg_error)
        })
    }

    /// The row, if any, of the prepared statement `pick` names, run with `params`
    /// ([`Self::read`]).
    fn query_opt(
        &self,
        pick: fn(&Connection) -> &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        self.read(|c| {
            let statement = pick(c).clone();
            c.client.query_opt(&statement, params).map_err(pg_error)
        })
    }
}

/// A connection taken for one call ([`PostgresBackend::lock`]).
enum Taken<'a> {
    Lent(Lent<'a, Connection>),
    /// The connection this thread's turn holds, given back to the turn when dropped.
    Held(&'a Turns<Connection>, Option<Connection>),
}

impl Deref for Taken<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            Taken::Lent(lent) => lent,
            Taken::Held(_, conn) => conn.as_ref().expect("held until dropped"),
        }
    }
}

impl DerefMut for Taken<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        match self {
            Taken::Lent(lent) => lent,
            Taken::Held(_, conn) => conn.as_mut().expect("held until dropped"),
        }
    }
}

impl Taken<'_> {
    /// Whether this is a pooled connection that the server (or the network) closed: its
    /// call failed for that alone. It is first given a moment to read what the server sent
    /// ([`CHECK_WAIT`]): a server ending a session says so, then closes it.
    fn closed_while_lent(&mut self) -> bool {
        match self {
            Taken::Lent(lent) => {
                lent.client.settle(CHECK_WAIT);
                lent.client.was_closed()
            }
            // The turn's hold went with its connection: its calls must fail.
            Taken::Held(..) => false,
        }
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Taken::Held(turns, conn) = self {
            if let Some(conn) = conn.take() {
                turns.give_back(conn);
            }
        }
    }
}

/// A new connection to the server of `url`, with the URL's settings and mnemo's bounds
/// ([`PostgresUrl::driver_config`]), TLS as its `sslmode` says and the URL's lock timeout,
/// made within [`PostgresUrl::connect_limit`]; its calls wait at most
/// [`PostgresUrl::call_limit`].
fn open_client(url: &PostgresUrl) -> Result<Client> {
    let config = url.driver_config()?;
    let (connect_limit, call_limit) = (url.connect_limit(), url.call_limit());
    let connected = match url.ssl_mode() {
        SslMode::Disable => Client::connect(&config, NoTls, connect_limit, call_limit),
        mode => {
            let tls = tls::MakeRustlsConnect::new(mode, url.root_cert())?;
            Client::connect(&config, tls, connect_limit, call_limit)
        }
    };
    let mut client = connected
        .map_err(|e| Error::Storage(format!("cannot connect to PostgreSQL: {}", with_cause(&e))))?;
    // A process stopped inside a transaction (paused, frozen, a laptop asleep) would keep
    // the locks it took until it goes on or its connection dies: the server ends it once
    // idle that long, which frees them (the call it goes on with fails, and the next
    // connects again). No JIT compilation: mnemo's statements are short, and the server
    // compiled some of them (a database's settings, a commit's rows) at their first run on
    // each connection, about 100 ms each: opening 32 databases took 3.5 s, not 40 ms.
    let session = format!(
        "SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}; SET jit = off",
        url.lock_timeout().as_millis(),
        holder_idle_limit(url).as_millis()
    );
    client.batch_execute(&session).map_err(pg_error)?;
    Ok(client)
}

fn check_or_create_schema(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction().map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .map_err(pg_error)?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('mnemo_schema') IS NOT NULL", &[])
        .map_err(pg_error)?
        .col(0)?;
    if !exists {
        tx.batch_execute(SCHEMA_V2).map_err(pg_error)?;
        tx.batch_execute("INSERT INTO mnemo_schema (version) VALUES (2);")
            .map_err(pg_error)?;
        tx.batch_execute(UPGRADE_FROM_V2).map_err(pg_error)?;
        tx.batch_execute(UPGRADE_FROM_V3).map_err(pg_error)?;
        return tx.commit().map_err(pg_error);
    }
    let version: i32 = tx
        .query_opt("SELECT max(version) FROM mnemo_schema", &[])
        .map_err(pg_error)?
        .map(|r| r.col::<Option<i32>>(0))
        .transpose()?
        .flatten()
        .ok_or_else(|| Error::Storage("postgres: mnemo_schema holds no version".into()))?;
    if version > SCHEMA_VERSION {
        return Err(Error::Storage(format!(
            "the database has mnemo schema version {version}, written by a newer mnemo; \
             this one reads version {SCHEMA_VERSION}"
        )));
    }
    // An upgrade's time grows with what is stored: it has longer than a call.
    if version == 2 {
        tx.batch_execute_within(UPGRADE_FROM_V2, UPGRADE_LIMIT)
            .map_err(pg_error)?;
    }
    if version == 2 || version == 3 {
        tx.batch_execute_within(UPGRADE_FROM_V3, UPGRADE_LIMIT)
            .map_err(pg_error)?;
    } else if version != SCHEMA_VERSION {
        return Err(Error::Storage(format!(
            "unknown mnemo schema version {version}"
        )));
    }
    check_unchanged(&mut tx)?;
    tx.commit().map_err(pg_error)
}

/// Makes `client` look up tables in `schema` alone (`search_path`), the one that held
/// mnemo's tables when the backend connected: a table of the same name put in a schema
/// ahead of it later is not taken for mnemo's.
fn look_only_in(client: &mut impl Statements, schema: &str) -> Result<()> {
    client
        .query_one(
            "SELECT set_config('search_path', quote_ident($1), false)",
            &[&schema],
        )
        .map(drop)
        .map_err(pg_error)
}

/// [`Error::Corrupt`] naming the first change [`CHANGED_OUTSIDE_MNEMO`] finds.
fn check_unchanged(client: &mut impl Statements) -> Result<()> {
    let Some(change) = client
        .query_opt(CHANGED_OUTSIDE_MNEMO, &[&&TABLES[..]])
        .map_err(pg_error)?
    else {
        return Ok(());
    };
    let what: String = change.col(0)?;
    Err(Error::Corrupt(format!(
        "postgres: mnemo's tables were changed outside mnemo ({}); they are not used",
        shown_cut(&what, 256)
    )))
}

/// mnemo's tables.
const TABLES: [&str; 10] = [
    "mnemo_schema",
    "mnemo_entries",
    "mnemo_tips",
    "mnemo_log",
    "mnemo_cells",
    "mnemo_stores",
    "mnemo_discarded",
    "mnemo_meta",
    "mnemo_secrets",
    "mnemo_heads",
];

/// The first change made outside mnemo to its tables (`$1`, as the connection's
/// `search_path` finds them) that would decide what becomes of its reads and writes: a
/// trigger or a rule on one (SQL of someone else's, run with mnemo's rights as it writes),
/// row-level security that applies to mnemo's role (rows hidden from it; an owner is not
/// subject to it unless forced), one that is not a plain table (a view), or
/// one found in another schema than `mnemo_schema` (a copy put ahead of it in the path).
const CHANGED_OUTSIDE_MNEMO: &str = "\
WITH mine AS (SELECT to_regclass(name) AS id FROM unnest($1::text[]) AS name), \
tables AS (SELECT c.* FROM pg_class c JOIN mine ON c.oid = mine.id) \
SELECT format('a trigger %I on %I', t.tgname, c.relname) FROM pg_trigger t \
    JOIN tables c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal \
UNION ALL SELECT format('a rule %I on %I', r.rulename, c.relname) FROM pg_rewrite r \
    JOIN tables c ON c.oid = r.ev_class WHERE r.rulename <> '_RETURN' \
UNION ALL SELECT format('row-level security on %I', relname) FROM tables \
    WHERE row_security_active(oid) \
UNION ALL SELECT format('%I, which is not a table', relname) FROM tables WHERE relkind <> 'r' \
UNION ALL SELECT format('%I, in schema %I apart from mnemo_schema', c.relname, n.nspname) \
    FROM tables c JOIN pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relnamespace <> (SELECT relnamespace FROM pg_class \
        WHERE oid = to_regclass('mnemo_schema')) \
LIMIT 1";

impl Connection {
    /// `client` with every statement the backend runs prepared, all sent at once (one round
    /// trip to the server rather than one each).
    fn prepare(mut client: Client) -> std::result::Result<Connection, Failure> {
        // Each statement is listed first, by its place; all are prepared together below.
        let mut listed: Vec<String> = Vec::new();
        let mut p = |sql: &str| {
            listed.push(sql.to_string());
            listed.len() - 1
        };
        let put_entry = p(PUT_ENTRY);
        let get_entry =
            p("SELECT db, height, visible, changes_settings, bytes, chk FROM mnemo_entries WHERE id = $1");
        let get_entry_db = p("SELECT db FROM mnemo_entries WHERE id = $1");
        let get_tips = p("SELECT id, height, chk FROM mnemo_tips WHERE db = $1 ORDER BY id");
        // A tip without its entry reads as NULLs on the right, reported as damage. Each
        // tip's entry is looked up by its key (LATERAL ... LIMIT 1): as a plain join, the
        // plan PostgreSQL keeps for the statement, made while `mnemo_entries` is small,
        // scanned the whole table at every commit until the next ANALYZE.
        let get_tip_metas = p(
            "SELECT t.id, t.height, t.chk, e.db, e.height, e.visible, e.changes_settings, \
             e.bytes, e.chk FROM mnemo_tips t LEFT JOIN LATERAL (SELECT * FROM mnemo_entries \
             WHERE id = t.id LIMIT 1) e ON true WHERE t.db = $1 ORDER BY t.id",
        );
        let get_settings_closure = p(GET_SETTINGS_CLOSURE);
        let get_cell = p(concat!(
            "SELECT height, entry, value, chk FROM mnemo_cells WHERE db = $1 AND store = $2 AND ",
            key_head!("key"),
            " = ",
            key_head!("$3"),
            " COLLATE \"C\" AND key = $3 COLLATE \"C\""
        ));
        let get_cells = p(concat!(
            "SELECT height, entry, value, chk, key, key_hash = sha256(convert_to(key, 'UTF8')) \
             FROM mnemo_cells WHERE db = $1 AND store = $2 ORDER BY ",
            key_head!("key"),
            ", key"
        ));
        // In the order of `range_form`.
        let get_range = [
            p(&range_sql(false, false)),
            p(&range_sql(false, true)),
            p(&range_sql(true, false)),
            p(&range_sql(true, true)),
        ];
        let insert_cell = p(
            "INSERT INTO mnemo_cells (db, store, key, height, entry, value, chk, key_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, sha256(convert_to($3, 'UTF8'))) \
             ON CONFLICT DO NOTHING",
        );
        let get_rows = p("SELECT rows, chk FROM mnemo_stores WHERE db = $1 AND store = $2");
        let set_rows = p(
            "INSERT INTO mnemo_stores (db, store, rows, chk) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (db, store) DO UPDATE SET rows = excluded.rows, chk = excluded.chk",
        );
        let mark_discarded = p(
            "INSERT INTO mnemo_discarded (db, id, chk) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        );
        let get_meta = p("SELECT value, chk FROM mnemo_meta WHERE key = $1");
        let insert_meta = p(
            "INSERT INTO mnemo_meta (key, value, chk) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        );
        let put_meta = p(
            "INSERT INTO mnemo_meta (key, value, chk) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, chk = excluded.chk",
        );
        let delete_meta =
            p("DELETE FROM mnemo_meta WHERE key = $1 AND ($2::bytea IS NULL OR value = $2)");
        // Serialises stores per database across processes, so log positions are handed out
        // in commit order and a reader paging by position never skips a late commit.
        let lock_db = p("SELECT pg_advisory_xact_lock(hashtextextended(encode($1, 'hex'), 0))");
        let hold_db = p("SELECT pg_advisory_lock(hashtextextended(encode($1, 'hex'), 0))");
        let release_db = p("SELECT pg_advisory_unlock(hashtextextended(encode($1, 'hex'), 0))");
        let last_log = p("SELECT max(seq) FROM mnemo_log WHERE db = $1");
        let last_logs = p("SELECT (SELECT max(seq) FROM mnemo_log WHERE db = d) \
             FROM unnest($1::bytea[]) WITH ORDINALITY AS t(d, i) ORDER BY i");
        let advance_head = p(ADVANCE_HEAD);
        let get_head = p("SELECT shape, version FROM mnemo_heads WHERE db = $1");
        let get_head_and_cells = p(GET_HEAD_AND_CELLS);
        let get_log =
            p("SELECT seq, id FROM mnemo_log WHERE db = $1 AND seq > $2 ORDER BY seq LIMIT $3");
        let prepared = client.prepare_all(&listed)?;
        let statement = |place: usize| prepared[place].clone();
        Ok(Connection {
            client,
            put_entry: statement(put_entry),
            get_entry: statement(get_entry),
            get_entry_db: statement(get_entry_db),
            get_tips: statement(get_tips),
            get_tip_metas: statement(get_tip_metas),
            get_settings_closure: statement(get_settings_closure),
            get_cell: statement(get_cell),
            get_cells: statement(get_cells),
            get_range: get_range.map(statement),
            insert_cell: statement(insert_cell),
            get_rows: statement(get_rows),
            set_rows: statement(set_rows),
            mark_discarded: statement(mark_discarded),
            get_meta: statement(get_meta),
            lock_db: statement(lock_db),
            hold_db: statement(hold_db),
            release_db: statement(release_db),
            advance_head: statement(advance_head),
            get_head: statement(get_head),
            get_head_and_cells: statement(get_head_and_cells),
            get_log: statement(get_log),
            last_log: statement(last_log),
            last_logs: statement(last_logs),
            insert_meta: statement(insert_meta),
            put_meta: statement(put_meta),
            delete_meta: statement(delete_meta),
        })
    }
}

/// The query of [`Backend::cells_range`]: `$1` db, `$2` store, `$3` the lower bound (`>=` when
/// `inclusive`, else `>`), `$4` live only, `$5` the limit in cells and `$6` in bytes (NULL:
/// none) and, when `bounded`, `$7` the upper bound. Comparisons and order are `COLLATE "C"`
/// (bytewise, as the columns are declared). The bounds on the keys' heads ([`key_head`])
/// follow from those on the keys, and let the index (db, store, head) serve the range and the
/// order; keys that share a head (rare: 512 equal characters) are sorted among themselves
/// (PostgreSQL 13 and later sort only those; earlier ones sort the whole range before the
/// limit). The bytes before each row are summed as the index is read (`octet_length` reads a
/// stored value's length, not the value), and only rows that start within the byte limit are
/// sent.
fn range_sql(inclusive: bool, bounded: bool) -> String {
    let (head, lower, upper) = (key_head!("key"), key_head!("$3"), key_head!("$7"));
    let order = format!("{head} COLLATE \"C\", key COLLATE \"C\"");
    let size = "octet_length(key) + coalesce(octet_length(value), 0)";
    format!(
        "SELECT height, entry, value, chk, key FROM (\
         SELECT height, entry, value, chk, key, \
         sum({size}) OVER (ORDER BY {order} ROWS UNBOUNDED PRECEDING) - ({size}) AS before \
         FROM mnemo_cells \
         WHERE db = $1 AND store = $2 AND {head} >= {lower} COLLATE \"C\" \
         AND key {} $3 COLLATE \"C\"{} \
         AND (value IS NOT NULL OR NOT $4::boolean) \
         ORDER BY {order} LIMIT $5) page \
         WHERE $6::bigint IS NULL OR before < $6 ORDER BY key COLLATE \"C\"",
        if inclusive { ">=" } else { ">" },
        if bounded {
            format!(" AND {head} <= {upper} COLLATE \"C\" AND key < $7 COLLATE \"C\"")
        } else {
            String::new()
        },
    )
}

/// Where [`Connection::get_range`] keeps the prepared form of `range_sql(inclusive, bounded)`.
fn range_form(inclusive: bool, bounded: bool) -> usize {
    usize::from(inclusive) * 2 + usize::from(bounded)
}

/// Stores one entry and all it changes in one statement: one round trip, atomic and
/// durable as the single statement's own transaction. `$1` id, `$2` db, `$3` height, `$4`
/// the packed visible settings tips, `$5` changes settings, `$6` bytes, `$7` the entry's
/// check, `$8` its parents, `$9` its tip's check, `$10`..`$16` the cells it writes by column
/// (store, key, height, entry, value, check, replace), `$17` its discarded mark's check
/// (NULL: not discarded), `$18` and `$19` the shape and count of the database's version the
/// writer expects, `$20` whether the count must match too, `$21` 1 if the entry moves the
/// shape on (else 0). Returns the database's version after, and whether the entry was new
/// and the version before was the one expected, count too ([`Put::directly_after`]; a
/// database without a version row is at the first version). No row: the version did not
/// match, and nothing was written.
///
/// - The database's advisory lock comes first (everything else reads `entry`, which reads
///   `head`, which reads `locked`), so log positions follow commit order across processes,
///   as `lock_db` does.
/// - `head` moves the database's version on only if it matches (as [`ADVANCE_HEAD`]); every
///   write reads `entry`, which is empty otherwise.
/// - Nothing changes if the entry is already stored: every write reads `entry`, empty then.
/// - The statement's snapshot may predate the lock (another process's commit to the same
///   database may land in between), so nothing here decides by reading the snapshot:
///   cells and row counts are upserts, which see and lock the newest row. A cell is kept
///   over the stored one as [`super::CellWrite::keeps_over`] says; `xmax = 0` marks the
///   rows it inserted (an updated row carries the updater's lock), which the row counts
///   add. The entry takes the slot of its parent tip with the lowest one (`retipped`: an
///   update in place, no new index entry), or a new slot, its log position, when no parent
///   is a tip any more; its other parents' tips go. An update or delete that finds its row
///   changed since the snapshot checks it again as it is now (PostgreSQL's rule for READ
///   COMMITTED), so a tip another process put in a parent's slot meanwhile is kept.
/// - Cells are found by their key's head (`left(key, 512)`, [`key_head`]) and SHA-256, as
///   `mnemo_cells_by_key` indexes them.
/// - A row count's check ([`rows::store_check`]) is computed here with `sha256`, over the
///   same length-prefixed parts. A count whose recorded check fails becomes NULL, so the
///   statement fails on the column's NOT NULL (`put_entry` reports it as corrupt).
const PUT_ENTRY: &str = r#"
WITH locked AS (
    SELECT pg_advisory_xact_lock(hashtextextended(encode($2::bytea, 'hex'), 0))
), head AS (
    INSERT INTO mnemo_heads AS h (db, shape, version)
    SELECT $2, $18::int8 + $21::int8, $19::int8 + 1 FROM locked
    ON CONFLICT (db) DO UPDATE SET shape = h.shape + $21::int8, version = h.version + 1
    WHERE h.shape = $18 AND (NOT $20::boolean OR h.version = $19)
    RETURNING shape, version, xmax = 0 AS inserted
), entry AS (
    INSERT INTO mnemo_entries (id, db, height, visible, changes_settings, bytes, chk)
    SELECT $1::bytea, $2, $3::int8, $4::bytea, $5::boolean, $6::bytea, $7::bytea FROM head
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), logged AS (
    INSERT INTO mnemo_log (db, id) SELECT $2, id FROM entry RETURNING seq
), retipped AS (
    UPDATE mnemo_tips t SET id = e.id, height = $3, chk = $9::bytea FROM entry e
    WHERE t.db = $2 AND t.id = ANY ($8::bytea[])
        AND t.slot = (SELECT min(slot) FROM mnemo_tips WHERE db = $2 AND id = ANY ($8::bytea[]))
    RETURNING t.slot
), untipped AS (
    DELETE FROM mnemo_tips WHERE db = $2 AND id = ANY ($8::bytea[]) AND EXISTS (SELECT FROM entry)
        AND slot NOT IN (SELECT slot FROM retipped)
), tipped AS (
    INSERT INTO mnemo_tips (db, slot, id, height, chk)
    SELECT $2, seq, id, $3, $9::bytea FROM entry, logged WHERE NOT EXISTS (SELECT FROM retipped)
), writes AS (
    SELECT store COLLATE "C" AS store, key COLLATE "C" AS key, height, entry, value, chk, replace
    FROM unnest($10::text[], $11::text[], $12::int8[], $13::bytea[], $14::text[], $15::bytea[],
                $16::boolean[]) AS w (store, key, height, entry, value, chk, replace)
), cells AS (
    INSERT INTO mnemo_cells AS c (db, store, key, height, entry, value, chk, key_hash)
    SELECT $2, store, key, height, entry, value, chk, sha256(convert_to(key, 'UTF8'))
    FROM writes WHERE EXISTS (SELECT FROM entry)
    ON CONFLICT (db, store, left(key, 512), key_hash) DO UPDATE
        SET height = excluded.height, entry = excluded.entry, value = excluded.value,
            chk = excluded.chk
        WHERE (excluded.height, excluded.entry) > (c.height, c.entry)
            OR (excluded.store, excluded.key) IN (SELECT store, key FROM writes WHERE replace)
    RETURNING c.store, c.xmax = 0 AS inserted
), added AS (
    SELECT store, count(*) AS n,
        int8send(octet_length($2)) || $2 || int8send(octet_length(convert_to(store, 'UTF8')))
            || convert_to(store, 'UTF8') || int8send(8) AS prefix
    FROM cells WHERE inserted GROUP BY store
), counted AS (
    INSERT INTO mnemo_stores AS s (db, store, rows, chk)
    SELECT $2, store, n, substr(sha256(prefix || int8send(n)), 1, 8) FROM added
    ON CONFLICT (db, store) DO UPDATE
        SET rows = (SELECT s.rows + a.n FROM added a WHERE a.store = s.store
                    AND s.chk = substr(sha256(a.prefix || int8send(s.rows)), 1, 8)),
            chk = (SELECT substr(sha256(a.prefix || int8send(s.rows + a.n)), 1, 8)
                   FROM added a WHERE a.store = s.store)
), discarded AS (
    INSERT INTO mnemo_discarded (db, id, chk) SELECT $2, id, $17::bytea FROM entry
    WHERE $17 IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT shape, version, EXISTS (SELECT FROM entry)
    AND CASE WHEN inserted THEN $18 = 0 AND $19 = 0 ELSE version = $19 + 1 END
FROM head
"#;

/// The cells of an [`EntryWrite`] by column: [`PUT_ENTRY`]'s array parameters.
#[derive(Default)]
struct CellColumns<'a> {
    store: Vec<&'a str>,
    key: Vec<&'a str>,
    height: Vec<i64>,
    entry: Vec<&'a [u8]>,
    value: Vec<Option<&'a str>>,
    chk: Vec<Vec<u8>>,
    replace: Vec<bool>,
}

/// Makes the space of replaced secrets reusable at once (old row versions otherwise stay
/// until autovacuum). Best effort: PostgreSQL does not zero the space, and a failure here
/// (another transaction in the way) leaves the old version to autovacuum.
fn vacuum_secrets(client: &mut Client) {
    let _ = client.batch_execute("VACUUM mnemo_secrets");
}

/// Adds `added` new rows to each store's recorded row count.
fn count_rows(
    tx: &mut Transaction<'_>,
    (get_rows, set_rows): (&Statement, &Statement),
    db: &EntryId,
    added: &BTreeMap<&str, u64>,
) -> Result<()> {
    for (store, n) in added {
        let recorded = {
            let row = tx
                .query_opt(get_rows, &[&&db.as_bytes()[..], store])
                .map_err(pg_error)?;
            checked_rows(db, store, row)?.unwrap_or(0)
        };
        let rows = recorded + n;
        tx.execute(
            set_rows,
            &[
                &&db.as_bytes()[..],
                store,
                &i64_of(rows)?,
                &rows::store_check(db, store, rows),
            ],
        )
        .map_err(pg_error)?;
    }
    Ok(())
}

/// The row count recorded for `store`, checked; `None` if the store has no rows.
fn recorded_rows(
    client: &mut impl Statements,
    get_rows: &Statement,
    db: &EntryId,
    store: &str,
) -> Result<Option<u64>> {
    let row = client
        .query_opt(get_rows, &[&&db.as_bytes()[..], &store])
        .map_err(pg_error)?;
    checked_rows(db, store, row)
}

fn checked_rows(db: &EntryId, store: &str, row: Option<Row>) -> Result<Option<u64>> {
    let Some(row) = row else {
        return Ok(None);
    };
    let rows = rows::height_of(row.col(0)?)?;
    if rows::store_check(db, store, rows) != row.col::<&[u8]>(1)? {
        return Err(Error::Corrupt(format!(
            "the row count of store '{store}' fails its integrity check"
        )));
    }
    Ok(Some(rows))
}

fn mark_discarded(
    tx: &mut Transaction<'_>,
    mark: &Statement,
    db: &EntryId,
    ids: &[EntryId],
) -> Result<()> {
    for id in ids {
        tx.execute(
            mark,
            &[
                &&db.as_bytes()[..],
                &&id.as_bytes()[..],
                &rows::discarded_check(db, id),
            ],
        )
        .map_err(pg_error)?;
    }
    Ok(())
}

/// [`Backend::put_entry`]'s error for `e`: a row count [`PUT_ENTRY`] found failing its check
/// is damage.
fn put_entry_error(e: Failure) -> Error {
    let db_error = e.driver_error().and_then(|e| e.as_db_error());
    let count_failed = db_error.is_some_and(|d| {
        d.code() == &SqlState::NOT_NULL_VIOLATION
            && d.table() == Some("mnemo_stores")
            && d.column() == Some("rows")
    });
    if count_failed {
        // PUT_ENTRY makes a count NULL when the recorded one fails its check.
        return Error::Corrupt("the row count of a store fails its integrity check".into());
    }
    pg_error(e)
}

/// What a document write reads, in one round trip (read ahead: [`Backend::cells_at`]; and
/// again when it was overtaken: [`put_entry_checking_reads`]): the cells of database `$1`
/// at the stores `$2` and keys `$3` that are stored, each with its place in those arrays
/// (from 1), and a row numbered 0 with the database's version (NULLs: the first version).
/// Cell columns first, as [`checked_cell`] reads them. Each cell is looked up by its key
/// (`LATERAL ... LIMIT 2`: a second row of a key, which only a change outside mnemo makes,
/// is found and refused): as a join, the plan kept for the statement hashed the keys and
/// read every cell of the database.
const GET_HEAD_AND_CELLS: &str = concat!(
    "SELECT c.height, c.entry, c.value, c.chk, w.n, NULL::int8, NULL::int8 \
     FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS w (store, key, n) \
     CROSS JOIN LATERAL (SELECT height, entry, value, chk FROM mnemo_cells \
         WHERE db = $1 AND store = w.store COLLATE \"C\" AND ",
    key_head!("key"),
    " = ",
    key_head!("w.key"),
    " COLLATE \"C\" AND key = w.key COLLATE \"C\" LIMIT 2) c \
     UNION ALL SELECT NULL, NULL, NULL, NULL, 0, h.shape, h.version \
     FROM (SELECT) one LEFT JOIN mnemo_heads h ON h.db = $1"
);

/// [`Backend::settings_closure`] in one round trip: the entries of ids `$1` and, again and
/// again, those each entry found sees (its `visible` column, ids of 32 bytes end to end),
/// each once (`UNION`: a cycle, which only a change outside mnemo makes, ends too); then
/// each id with its entry's columns, NULLs where it is not stored. Each entry is looked up
/// by its key (`LATERAL ... LIMIT 1`), as in the tips' statement, so the plan kept for the
/// statement never scans the table per step.
const GET_SETTINGS_CLOSURE: &str = "WITH RECURSIVE closure (id) AS (\
     SELECT t FROM unnest($1::bytea[]) t \
     UNION SELECT substring(e.visible FROM g * 32 + 1 FOR 32) FROM closure c \
     CROSS JOIN LATERAL (SELECT visible FROM mnemo_entries WHERE id = c.id LIMIT 1) e \
     CROSS JOIN LATERAL generate_series(0, length(e.visible) / 32 - 1) g) \
     SELECT c.id, e.db, e.height, e.visible, e.changes_settings, e.bytes, e.chk FROM closure c \
     LEFT JOIN LATERAL (SELECT * FROM mnemo_entries WHERE id = c.id LIMIT 1) e ON true";

/// The index of [`PUT_ENTRY`]'s parameter `$20`, whether the count must match too.
const COUNT_MUST_MATCH: usize = 19;

/// Stores the entry of `w` with [`PUT_ENTRY`] (`params`, the count not compared) in a
/// transaction that takes the database's lock first, so that what it reads next is current:
/// only if the database's shape and the cells `w` read still hold
/// ([`super::EntryWrite::reads`]). `None`, and nothing written, otherwise. With it, whether
/// another write overtook this one (the count moved on since `w`'s version).
fn put_entry_checking_reads(
    c: &mut Connection,
    w: &EntryWrite<'_>,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(Option<Put>, bool)> {
    let db = &w.meta.db;
    let tx = RefCell::new(c.client.transaction().map_err(pg_error)?);
    tx.borrow_mut()
        .execute(&c.lock_db, &[&&db.as_bytes()[..]])
        .map_err(pg_error)?;
    let keys: Vec<(&str, &str)> = (w.reads.cells.iter())
        .map(|(store, key, _)| (store.as_str(), key.as_str()))
        .collect();
    let (now, cells) = head_and_cells_in(&mut *tx.borrow_mut(), &c.get_head_and_cells, db, &keys)?;
    let holds = now.same_shape(&w.expected)
        && w.reads.still_hold(
            |store, key| Ok(cells.get(&(store, key)).cloned().flatten()),
            |store, prefix| {
                let wanted = (store, prefix, None);
                range_in(
                    &mut *tx.borrow_mut(),
                    &c.get_range,
                    db,
                    wanted,
                    RangeLimit::NONE,
                    false,
                )
            },
        )?;
    let overtaken = now != w.expected;
    if !holds {
        return Ok((None, overtaken)); // rolled back as `tx` drops
    }
    let mut tx = tx.into_inner();
    let row = tx
        .query_opt(&c.put_entry, params)
        .map_err(put_entry_error)?;
    tx.commit().map_err(pg_error)?;
    Ok((row.map(|row| put_of(&row)).transpose()?, overtaken))
}

/// Cells found by store and key (`None`: not stored).
type FoundCells<'r> = BTreeMap<(&'r str, &'r str), Option<Cell>>;

/// Database `db`'s [`Version`] and the cells at `keys` (store, key) that are stored, as
/// `client` sees them, with `statement` ([`GET_HEAD_AND_CELLS`]).
fn head_and_cells_in<'r>(
    client: &mut impl Statements,
    statement: &Statement,
    db: &EntryId,
    keys: &[(&'r str, &'r str)],
) -> Result<(Version, FoundCells<'r>)> {
    let (stores, names): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    let found = client
        .query(statement, &[&&db.as_bytes()[..], &stores, &names])
        .map_err(pg_error)?;
    let mut version = Version::default();
    let mut cells: FoundCells = keys.iter().map(|&at| (at, None)).collect();
    let mut seen = vec![false; keys.len()];
    for row in &found {
        let place = usize::try_from(row.col::<i64>(4)? - 1).ok();
        match place.and_then(|i| Some((i, keys.get(i)?))) {
            Some((i, &(store, key))) => {
                if std::mem::replace(&mut seen[i], true) {
                    return Err(second_row(store, key, 2));
                }
                let cell = checked_cell(db, store, key, row)?;
                cells.insert((store, key), Some(cell));
            }
            None if row.col::<Option<i64>>(5)?.is_some() => {
                version = Version::new(stored_part(row, 5)?, stored_part(row, 6)?);
            }
            None => {} // no version row: the first version
        }
    }
    Ok((version, cells))
}

/// Database `db`'s [`Version`] as `client` sees it, `get_head` its statement (no row: the
/// first version).
fn version_in(client: &mut impl Statements, get_head: &Statement, db: &EntryId) -> Result<Version> {
    let head = client
        .query_opt(get_head, &[&&db.as_bytes()[..]])
        .map_err(pg_error)?;
    head.map_or(Ok(Version::default()), |row| version_of(&row))
}

/// [`Backend::cell`] as `client` sees it, `get_cell` its statement.
fn cell_in(
    client: &mut impl Statements,
    get_cell: &Statement,
    db: &EntryId,
    store: &str,
    key: &str,
) -> Result<Option<Cell>> {
    let rows = client
        .query(get_cell, &[&&db.as_bytes()[..], &store, &key])
        .map_err(pg_error)?;
    match &rows[..] {
        [] => Ok(None),
        [row] => checked_cell(db, store, key, row).map(Some),
        [..] => Err(second_row(store, key, rows.len())),
    }
}

/// The error for `n` rows found holding one key of a store. The unique index holds one row
/// per key and key hash: a hash changed outside mnemo let a write add a second row.
fn second_row(store: &str, key: &str, n: usize) -> Error {
    Error::Corrupt(format!(
        "postgres: {n} rows hold key {} of store {}: mnemo's tables were changed outside mnemo",
        quoted(key),
        quoted(store)
    ))
}

/// [`Backend::cells_range`] of `(store, prefix, after)` as `client` sees it, `get_range`
/// its statements.
fn range_in(
    client: &mut impl Statements,
    get_range: &[Statement; 4],
    db: &EntryId,
    (store, prefix, after): (&str, &str, Option<&str>),
    limit: RangeLimit,
    live_only: bool,
) -> Result<KeyedCells> {
    let Some(range) = KeyRange::new(prefix, after) else {
        return Ok(Vec::new());
    };
    let at_most = |n: usize| (n != 0).then(|| i64::try_from(n).unwrap_or(i64::MAX));
    let (cells, bytes) = (at_most(limit.cells), at_most(limit.bytes));
    let db_bytes: &[u8] = db.as_bytes();
    let mut bound: Vec<&(dyn ToSql + Sync)> =
        vec![&db_bytes, &store, &range.lower, &live_only, &cells, &bytes];
    if let Some(upper) = &range.upper {
        bound.push(upper);
    }
    let statement = &get_range[range_form(range.inclusive, range.upper.is_some())];
    let found = client.query(statement, &bound).map_err(pg_error)?;
    let mut cells: KeyedCells = Vec::with_capacity(found.len());
    for row in &found {
        let key: String = row.col(4)?;
        if cells.last().is_some_and(|(last, _)| *last == key) {
            return Err(second_row(store, &key, 2)); // rows come in key order
        }
        let cell = checked_cell(db, store, &key, row)?;
        cells.push((key, cell));
    }
    Ok(cells)
}

fn i64_of(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::invalid("a height beyond 2^63 cannot be stored"))
}

fn checked_cell(db: &EntryId, store: &str, key: &str, row: &Row) -> Result<Cell> {
    let cell = Cell {
        height: rows::height_of(row.col(0)?)?,
        entry: rows::id_of(row.col::<&[u8]>(1)?)?,
        value: row.col(2)?,
    };
    if rows::cell_check(db, store, key, &cell) != row.col::<&[u8]>(3)? {
        return Err(Error::Corrupt(
            "a stored value fails its integrity check".into(),
        ));
    }
    Ok(cell)
}

/// The tip of `db` in `row` (id, height, check), its check verified.
fn checked_tip(db: &EntryId, row: &Row) -> Result<(EntryId, u64)> {
    let (id, height) = (rows::id_of(row.col(0)?)?, rows::height_of(row.col(1)?)?);
    rows::verify(
        row.col(2)?,
        &[db.as_bytes(), id.as_bytes(), &height.to_be_bytes()],
        "tip",
    )?;
    Ok((id, height))
}

/// The entry `id` in `row` from column `at` on (db, height, visible, changes_settings,
/// bytes, check): its metadata and bytes, its check verified.
fn checked_entry(id: &EntryId, row: &Row, at: usize) -> Result<(EntryMeta, Vec<u8>)> {
    let meta = EntryMeta {
        db: rows::id_of(row.col(at)?)?,
        height: rows::height_of(row.col(at + 1)?)?,
        settings_visible: rows::unpack_ids(row.col(at + 2)?)?,
        changes_settings: row.col(at + 3)?,
    };
    let bytes: Vec<u8> = row.col(at + 4)?;
    if rows::entry_check(id, &meta, &bytes) != row.col::<&[u8]>(at + 5)? {
        return Err(Error::Corrupt(format!(
            "stored entry {id} fails its integrity check"
        )));
    }
    Ok((meta, bytes))
}

impl Backend for PostgresBackend {
    fn shared_with_other_processes(&self) -> bool {
        true
    }

    /// The pool's connections, idle or lent.
    fn connections_open(&self) -> usize {
        self.pool.open()
    }

    /// The URL's `lock_timeout`.
    fn lock_wait(&self) -> Option<std::time::Duration> {
        Some(self.url.lock_timeout())
    }

    /// Runs `work` as a turn that may hold a database ([`Backend::hold_for_turn`]): the lock
    /// is released when it ends (or, should releasing fail, the connection holding it is
    /// closed, which releases it). A turn asked for inside this thread's turn is part of it.
    fn write_turn(
        &self,
        _announced: bool,
        work: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Option<Arc<dyn crate::backend::Staged>>> {
        if self.turns.held_db().is_some() {
            return work().map(|()| None);
        }
        let turn = TurnGuard::begin(self)?;
        let worked = work();
        drop(turn);
        worked.map(|()| None)
    }

    /// Takes the database's advisory lock at session level on a connection set aside for
    /// this thread's turn (waiting at most the URL's `lock_timeout`, then [`Error::Busy`]).
    fn hold_for_turn(&self, db: &EntryId) -> Result<()> {
        match self.turns.held_db() {
            None => Err(Error::Internal(
                "postgres: a database's lock was asked for outside a write turn".into(),
            )),
            Some(Some(held)) if held == *db => Ok(()),
            Some(Some(held)) => Err(Error::Internal(format!(
                "postgres: a write turn holding database {held} asked for {db}'s lock too"
            ))),
            Some(None) => {
                let mut lent = self.lend(false)?;
                let c = &mut *lent;
                // A holder that stops going on (a paused or frozen process) is cut off by
                // the server once idle that long, which frees the lock. Bounded before the
                // lock is asked for: the server may grant it while the process is stopped.
                // PostgreSQL before 14 has no such setting: there it is held until the
                // process goes on.
                let limit = holder_idle_limit(&self.url).as_millis();
                let held = c
                    .client
                    .query_one(BOUND_IDLE_SESSION, &[&limit.to_string()])
                    .and_then(|row| {
                        let before = row.try_get::<_, Option<String>>(0).ok().flatten();
                        c.client.execute(&c.hold_db, &[&&db.as_bytes()[..]])?;
                        Ok(before)
                    });
                match held {
                    Ok(before) => {
                        self.turns.hold(*db, lent.keep(), before);
                        Ok(())
                    }
                    Err(e) => {
                        // The lock may be held, or come later, by a session nobody uses:
                        // closing the connection ends it.
                        drop(lent.keep());
                        self.pool.give_back(None);
                        Err(pg_error(e))
                    }
                }
            }
        }
    }

    fn version(&self, db: &EntryId) -> Result<Version> {
        self.read(|c| version_in(&mut c.client, &c.get_head, db))
    }

    fn put_entry(&self, w: &EntryWrite<'_>) -> Result<Option<Put>> {
        let db: &[u8] = w.meta.db.as_bytes();
        let parents: Vec<&[u8]> = w.parents.iter().map(|p| &p.as_bytes()[..]).collect();
        // The statement takes every cell at once, in its array parameters.
        let mut writes = Vec::new();
        w.cells.each(&mut |write| {
            writes.push(write.clone());
            Ok(())
        })?;
        let mut cells = CellColumns::default();
        for write in &writes {
            let cell = &write.cell;
            cells.store.push(&write.store);
            cells.key.push(&write.key);
            cells.height.push(i64_of(cell.height)?);
            cells.entry.push(&cell.entry.as_bytes()[..]);
            cells.value.push(cell.value.as_deref());
            cells
                .chk
                .push(rows::cell_check(&w.meta.db, &write.store, &write.key, cell));
            cells.replace.push(write.replace);
        }
        let discarded = w
            .discarded
            .then(|| rows::discarded_check(&w.meta.db, &w.id));
        let Some((shape, count)) = stored_version(w.expected) else {
            return Ok(None);
        };
        let reshapes = i64::from(w.reshapes);
        let mut params: [&(dyn ToSql + Sync); 21] = [
            &&w.id.as_bytes()[..],
            &db,
            &i64_of(w.meta.height)?,
            &rows::pack_ids(&w.meta.settings_visible),
            &w.meta.changes_settings,
            &w.bytes,
            &rows::entry_check(&w.id, &w.meta, w.bytes),
            &parents,
            &rows::tip_check(&w.meta.db, &w.id, w.meta.height),
            &cells.store,
            &cells.key,
            &cells.height,
            &cells.entry,
            &cells.value,
            &cells.chk,
            &cells.replace,
            &discarded,
            &shape,
            &count,
            // At COUNT_MUST_MATCH. The statement cannot compare the cells a write read (its
            // snapshot may predate the lock): first it is tried with the count instead (one
            // round trip)...
            &w.counts_exactly(),
            &reshapes,
        ];
        let mut guard = self.lock()?;
        let c = &mut *guard;
        let compares_reads = !w.exact && !w.reads.is_empty();
        if !compares_reads || !self.overtaken.was(&w.meta.db) {
            let row = c
                .client
                .query_opt(&c.put_entry, &params)
                .map_err(put_entry_error)?;
            if row.is_some() || !compares_reads {
                return row.map(|row| put_of(&row)).transpose();
            }
        }
        // ...and when another write moved the count on (or overtook the last document write
        // to this database: the try would most likely fail), again with the cells compared.
        params[COUNT_MUST_MATCH] = &false;
        let (put, overtaken) = put_entry_checking_reads(c, w, &params)?;
        self.overtaken.record(&w.meta.db, overtaken);
        Ok(put)
    }

    fn get_entry(&self, id: &EntryId) -> Result<Option<Vec<u8>>> {
        Ok(self.entry_row(id)?.map(|(_, bytes)| bytes))
    }

    fn entry_meta(&self, id: &EntryId) -> Result<Option<EntryMeta>> {
        Ok(self.entry_row(id)?.map(|(meta, _)| meta))
    }

    fn entry_db(&self, id: &EntryId) -> Result<Option<EntryId>> {
        self.query_opt(|c| &c.get_entry_db, &[&&id.as_bytes()[..]])?
            .map(|row| rows::id_of(&row.col::<Vec<u8>>(0)?))
            .transpose()
    }

    fn settings_closure(&self, tips: &[EntryId]) -> Result<Vec<(EntryId, EntryMeta, Vec<u8>)>> {
        let ids: Vec<&[u8]> = tips.iter().map(|id| &id.as_bytes()[..]).collect();
        let found = self.query(|c| &c.get_settings_closure, &[&ids])?;
        found
            .iter()
            .map(|row| {
                let id = rows::id_of(row.col(0)?)?;
                if row.col::<Option<&[u8]>>(1)?.is_none() {
                    return Err(not_stored(&id));
                }
                let (meta, bytes) = checked_entry(&id, row, 1)?;
                Ok((id, meta, bytes))
            })
            .collect()
    }

    fn tips(&self, db: &EntryId) -> Result<Vec<(EntryId, u64)>> {
        let found = self.query(|c| &c.get_tips, &[&&db.as_bytes()[..]])?;
        let tips = found
            .iter()
            .map(|row| checked_tip(db, row))
            .collect::<Result<Vec<_>>>()?;
        rows::check_tips_distinct(tips.iter().map(|(id, _)| id))?;
        Ok(tips)
    }

    fn tip_metas(&self, db: &EntryId) -> Result<Vec<(EntryId, EntryMeta)>> {
        let found = self.query(|c| &c.get_tip_metas, &[&&db.as_bytes()[..]])?;
        let tips = found
            .iter()
            .map(|row| {
                let (id, _) = checked_tip(db, row)?;
                if row.col::<Option<&[u8]>>(3)?.is_none() {
                    return Err(Error::Corrupt(format!("tip {id} is not stored")));
                }
                Ok((id, checked_entry(&id, row, 3)?.0))
            })
            .collect::<Result<Vec<_>>>()?;
        rows::check_tips_distinct(tips.iter().map(|(id, _)| id))?;
        Ok(tips)
    }

    fn cell(&self, db: &EntryId, store: &str, key: &str) -> Result<Option<Cell>> {
        self.read(|c| cell_in(&mut c.client, &c.get_cell, db, store, key))
    }

    fn cells_at(&self, db: &EntryId, keys: &[(&str, &str)]) -> Result<Vec<Option<Cell>>> {
        let (_, found) =
            self.read(|c| head_and_cells_in(&mut c.client, &c.get_head_and_cells, db, keys))?;
        Ok(keys
            .iter()
            .map(|k| found.get(k).cloned().flatten())
            .collect())
    }

    fn cells(&self, db: &EntryId, store: &str) -> Result<Vec<(String, Cell)>> {
        // The rows and their count from one snapshot: another process's commit between two
        // autocommit reads would make the count disagree with the rows.
        let (found, recorded) = self.read(|c| {
            let mut snapshot = c.client.snapshot().map_err(pg_error)?;
            let found = snapshot
                .query(&c.get_cells, &[&&db.as_bytes()[..], &store])
                .map_err(pg_error)?;
            let recorded = recorded_rows(&mut snapshot, &c.get_rows, db, store)?.unwrap_or(0);
            // Checked once the snapshot is over: a large store's checks must not keep a
            // transaction open past the server's idle limit (`open_client`).
            snapshot.commit().map_err(pg_error)?;
            Ok((found, recorded))
        })?;
        let cells = found
            .iter()
            .map(|row| {
                let key: String = row.col(4)?;
                let cell = checked_cell(db, store, &key, row)?;
                if !row.col::<bool>(5)? {
                    // Writes would no longer find the row by its hash, and add another.
                    return Err(Error::Corrupt(format!(
                        "postgres: the row of key {} of store {} has another key's hash",
                        quoted(&key),
                        quoted(store)
                    )));
                }
                Ok((key, cell))
            })
            .collect::<Result<Vec<_>>>()?;
        rows::verify_row_count(store, recorded, cells.len())?;
        Ok(cells)
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
        let wanted = (store, prefix, after);
        self.read(|c| range_in(&mut c.client, &c.get_range, db, wanted, limit, live_only))
    }

    fn stores(&self, db: &EntryId) -> Result<Vec<String>> {
        let found = self.read(|c| {
            c.client
                .query(
                    "SELECT store FROM mnemo_stores WHERE db = $1 ORDER BY store",
                    &[&&db.as_bytes()[..]],
                )
                .map_err(pg_error)
        })?;
        found.iter().map(|r| r.col(0)).collect()
    }

    fn discarded(&self, db: &EntryId) -> Result<Vec<EntryId>> {
        let found = self.read(|c| {
            c.client
                .query(
                    "SELECT id, chk FROM mnemo_discarded WHERE db = $1 ORDER BY id",
                    &[&&db.as_bytes()[..]],
                )
                .map_err(pg_error)
        })?;
        found
            .iter()
            .map(|row| {
                let id = rows::id_of(row.col::<&[u8]>(0)?)?;
                if rows::discarded_check(db, &id) != row.col::<&[u8]>(1)? {
                    return Err(Error::Corrupt(
                        "a discarded-entry mark fails its integrity check".into(),
                    ));
                }
                Ok(id)
            })
            .collect()
    }

    fn replace_state(&self, db: &EntryId, state: &StateWrite<'_>) -> Result<Option<Version>> {
        let Some((shape, count)) = stored_version(state.expected) else {
            return Ok(None);
        };
        let mut guard = self.lock()?;
        let c = &mut *guard;
        let mut tx = c.client.transaction().map_err(pg_error)?;
        let id: &[u8] = db.as_bytes();
        tx.execute(&c.lock_db, &[&id]).map_err(pg_error)?;
        let Some(head) = tx
            .query_opt(&c.advance_head, &[&id, &shape, &count])
            .map_err(pg_error)?
        else {
            return Ok(None); // rolled back as `tx` drops: nothing was written
        };
        let after = version_of(&head)?;
        for table in ["mnemo_cells", "mnemo_stores", "mnemo_discarded"] {
            tx.execute(&format!("DELETE FROM {table} WHERE db = $1"), &[&id])
                .map_err(pg_error)?;
        }
        let mut added: BTreeMap<&str, u64> = BTreeMap::new();
        for (store, key, cell) in &state.cells {
            let cell_chk = rows::cell_check(db, store, key, cell);
            tx.execute(
                &c.insert_cell,
                &[
                    &id,
                    store,
                    key,
                    &i64_of(cell.height)?,
                    &&cell.entry.as_bytes()[..],
                    &cell.value,
                    &cell_chk,
                ],
            )
            .map_err(pg_error)?;
            *added.entry(store).or_default() += 1;
        }
        count_rows(&mut tx, (&c.get_rows, &c.set_rows), db, &added)?;
        mark_discarded(&mut tx, &c.mark_discarded, db, state.discarded)?;
        tx.commit().map_err(pg_error)?;
        Ok(Some(after))
    }

    fn entries_after(&self, db: &EntryId, after: u64, limit: usize) -> Result<Vec<(u64, EntryId)>> {
        let found = self.query(
            |c| &c.get_log,
            &[&&db.as_bytes()[..], &i64_of(after)?, &(limit as i64)],
        )?;
        found
            .iter()
            .map(|row| {
                Ok((
                    rows::position_of(row.col(0)?)?,
                    rows::id_of(row.col::<&[u8]>(1)?)?,
                ))
            })
            .collect()
    }

    fn last_position(&self, db: &EntryId) -> Result<u64> {
        let row = self.read(|c| {
            (c.client.query_one(&c.last_log, &[&&db.as_bytes()[..]])).map_err(pg_error)
        })?;
        rows::position_of(row.col::<Option<i64>>(0)?.unwrap_or(0))
    }

    fn entry_count(&self, db: &EntryId) -> Result<u64> {
        // Not prepared ahead on every connection: read only when a peer lists many entries
        // held here (see `sync::progress`).
        let row = self.read(|c| {
            let count = "SELECT count(*) FROM mnemo_log WHERE db = $1";
            (c.client.query_one(count, &[&&db.as_bytes()[..]])).map_err(pg_error)
        })?;
        Ok(row.col::<i64>(0)?.unsigned_abs())
    }

    fn last_positions(&self, dbs: &[EntryId]) -> Result<Vec<u64>> {
        let ids: Vec<&[u8]> = dbs.iter().map(|db| &db.as_bytes()[..]).collect();
        self.query(|c| &c.last_logs, &[&ids])?
            .iter()
            .map(|row| rows::position_of(row.col::<Option<i64>>(0)?.unwrap_or(0)))
            .collect()
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let Some(row) = self.query_opt(|c| &c.get_meta, &[&key])? else {
            return Ok(None);
        };
        let value: Vec<u8> = row.col(0)?;
        rows::verify(row.col(1)?, &[key.as_bytes(), &value], "metadata")?;
        Ok(Some(value))
    }

    fn meta_insert_new(&self, key: &str, value: &[u8]) -> Result<bool> {
        let mut c = self.lock()?;
        let c = &mut *c;
        let chk = rows::meta_check(key, value);
        let n = c
            .client
            .execute(&c.insert_meta, &[&key, &value, &chk])
            .map_err(pg_error)?;
        Ok(n == 1)
    }

    fn meta_put(&self, key: &str, value: &[u8]) -> Result<()> {
        let mut c = self.lock()?;
        let c = &mut *c;
        let chk = rows::meta_check(key, value);
        c.client
            .execute(&c.put_meta, &[&key, &value, &chk])
            .map_err(pg_error)?;
        Ok(())
    }

    fn meta_delete(&self, key: &str, only_if: Option<&[u8]>) -> Result<bool> {
        let mut c = self.lock()?;
        let c = &mut *c;
        Ok(c.client
            .execute(&c.delete_meta, &[&key, &only_if])
            .map_err(pg_error)?
            == 1)
    }

    fn meta_delete_prefix(&self, prefix: &str) -> Result<u64> {
        // A range of the key's index (its collation is "C": byte order).
        let Some(range) = KeyRange::new(prefix, None) else {
            return Ok(0);
        };
        let mut c = self.lock()?;
        c.client
            .execute(
                "DELETE FROM mnemo_meta WHERE key >= $1 AND ($2::text IS NULL OR key < $2)",
                &[&range.lower, &range.upper],
            )
            .map_err(pg_error)
    }

    fn secret_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let row = self.read(|c| {
            c.client
                .query_opt(
                    "SELECT value, chk FROM mnemo_secrets WHERE key = $1",
                    &[&key],
                )
                .map_err(pg_error)
        })?;
        match row {
            Some(row) => {
                let value: Vec<u8> = row.col(0)?;
                rows::verify(row.col(1)?, &[key.as_bytes(), &value], "secret")?;
                Ok(Some(value))
            }
            None => Ok(None),
        }
    }

    fn secret_put(&self, key: &str, value: &[u8], replacing: Option<&[u8]>) -> Result<bool> {
        let mut c = self.lock()?;
        let chk = rows::meta_check(key, value);
        let written = match replacing {
            None => c.client.execute(
                "INSERT INTO mnemo_secrets (key, value, chk) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, chk = excluded.chk",
                &[&key, &value, &chk],
            ),
            Some(old) => c.client.execute(
                "UPDATE mnemo_secrets SET value = $2, chk = $3 WHERE key = $1 AND value = $4",
                &[&key, &value, &chk, &old],
            ),
        }
        .map_err(pg_error)?;
        vacuum_secrets(&mut c.client);
        Ok(written == 1)
    }

    fn secret_delete(&self, key: &str) -> Result<bool> {
        let mut c = self.lock()?;
        let n = c
            .client
            .execute("DELETE FROM mnemo_secrets WHERE key = $1", &[&key])
            .map_err(pg_error)?;
        vacuum_secrets(&mut c.client);
        Ok(n == 1)
    }

    fn secret_names(&self, prefix: &str) -> Result<Vec<String>> {
        let rows = self.read(|c| {
            c.client
                .query(
                    "SELECT key FROM mnemo_secrets WHERE left(key, char_length($1)) = $1 \
                     ORDER BY key",
                    &[&prefix],
                )
                .map_err(pg_error)
        })?;
        rows.iter().map(|row| row.col(0)).collect()
    }

    fn forget_database(&self, db: &EntryId, decided_at: Version) -> Result<bool> {
        let mut guard = self.lock()?;
        let c = &mut *guard;
        let mut tx = c.client.transaction().map_err(pg_error)?;
        let id: &[u8] = db.as_bytes();
        tx.execute(&c.lock_db, &[&id]).map_err(pg_error)?;
        // Read after the lock, so current: a write that got the lock first is seen.
        if version_in(&mut tx, &c.get_head, db)? != decided_at {
            return Ok(false); // rolled back as `tx` drops
        }
        // `mnemo_entries` is keyed by entry id alone: its rows of `db` are found through
        // `mnemo_log`.
        tx.execute(
            "DELETE FROM mnemo_entries WHERE id IN (SELECT id FROM mnemo_log WHERE db = $1)",
            &[&id],
        )
        .map_err(pg_error)?;
        for table in [
            "mnemo_log",
            "mnemo_tips",
            "mnemo_cells",
            "mnemo_stores",
            "mnemo_discarded",
        ] {
            tx.execute(&format!("DELETE FROM {table} WHERE db = $1"), &[&id])
                .map_err(pg_error)?;
        }
        tx.execute(
            "INSERT INTO mnemo_heads AS h (db, shape, version) VALUES ($1, 1, 1) \
             ON CONFLICT (db) DO UPDATE SET shape = h.shape + 1, version = h.version + 1",
            &[&id],
        )
        .map_err(pg_error)?;
        tx.commit().map_err(pg_error)?;
        Ok(true)
    }
}

/// How long a connection holding a database's lock (inside a transaction, or for a turn)
/// may stay idle before the server ends it, which frees the lock: the URL's `lock_timeout`
/// (what the writes kept waiting wait), at least [`MIN_HOLDER_IDLE`].
fn holder_idle_limit(url: &PostgresUrl) -> Duration {
    url.lock_timeout().max(MIN_HOLDER_IDLE)
}

/// The least of [`holder_idle_limit`]: mnemo's own work between two statements of a
/// transaction or a turn (checking the rows of a large range it read, working out
/// settings) must not end it, even on a loaded machine.
const MIN_HOLDER_IDLE: Duration = Duration::from_secs(5);

/// Sets the session's `idle_session_timeout` to `$1` (milliseconds), returning the one
/// before (NULL, and nothing set, on a server without the setting: before PostgreSQL 14):
/// for a connection holding a database ([`Backend::hold_for_turn`]).
const BOUND_IDLE_SESSION: &str = "SELECT current_setting('idle_session_timeout', true), \
     CASE WHEN current_setting('idle_session_timeout', true) IS NOT NULL \
     THEN set_config('idle_session_timeout', $1, false) END";

/// Releases database `$1`'s lock held at session level, and sets `idle_session_timeout`
/// back to `$2`.
const RELEASE_AND_UNBOUND: &str =
    "SELECT pg_advisory_unlock(hashtextextended(encode($1, 'hex'), 0)), \
     set_config('idle_session_timeout', $2, false)";

/// A write turn of [`PostgresBackend`] on this thread; when it ends (dropped, also by a
/// panic of its work), the database it held is released and its connection given back.
struct TurnGuard<'a>(&'a PostgresBackend);

impl<'a> TurnGuard<'a> {
    fn begin(backend: &'a PostgresBackend) -> Result<TurnGuard<'a>> {
        if !backend.turns.begin() {
            return Err(Error::Internal(
                "postgres: a write turn begun inside another".into(),
            ));
        }
        Ok(TurnGuard(backend))
    }
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        let Some(held) = self.0.turns.end() else {
            return;
        };
        let Some(mut conn) = held.conn else {
            return; // a call still has it: impossible once the turn's work returned
        };
        if !conn.client.is_usable() {
            // Broken (a call ran out of time) or ended by the server: closed, not asked.
            drop(conn);
            self.0.pool.give_back(None);
            return;
        }
        let db: &[u8] = held.db.as_bytes();
        let row = match &held.idle_limit_before {
            None => conn.client.query_one(&conn.release_db, &[&db]),
            Some(before) => conn.client.query_one(RELEASE_AND_UNBOUND, &[&db, before]),
        };
        let released = row
            .map_err(drop)
            .and_then(|row| row.try_get::<_, bool>(0).map_err(drop));
        // A connection that could not say it released the lock is closed: that does.
        self.0
            .pool
            .give_back(matches!(released, Ok(true)).then_some(conn));
    }
}

/// A [`Version`]'s shape and count as stored; `None` for one that no row can hold, so not
/// the current one.
fn stored_version(version: Version) -> Option<(i64, i64)> {
    Some((
        i64::try_from(version.shape).ok()?,
        i64::try_from(version.count).ok()?,
    ))
}

/// The [`Version`] in a row's first two columns (shape, count).
fn version_of(row: &Row) -> Result<Version> {
    Ok(Version::new(stored_part(row, 0)?, stored_part(row, 1)?))
}

/// Column `i` of `row`, a shape or count of a stored [`Version`].
fn stored_part(row: &Row, i: usize) -> Result<u64> {
    u64::try_from(row.col::<i64>(i)?)
        .map_err(|_| Error::Corrupt("a database version is negative".into()))
}

/// What [`PUT_ENTRY`] returned: the version after, and whether nothing came between.
fn put_of(row: &Row) -> Result<Put> {
    Ok(Put {
        version: version_of(row)?,
        directly_after: row.col(2)?,
    })
}

impl PostgresBackend {
    fn entry_row(&self, id: &EntryId) -> Result<Option<(EntryMeta, Vec<u8>)>> {
        let Some(row) = self.query_opt(|c| &c.get_entry, &[&&id.as_bytes()[..]])? else {
            return Ok(None);
        };
        checked_entry(id, &row, 0).map(Some)
    }
}
