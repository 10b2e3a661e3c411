//! `postgres://…`: an instance stored in PostgreSQL, shared by processes on many hosts.
//!
//! The same tables as the SQLite backend (prefixed `mnemo_`). Consistency between processes
//! comes from the server: one transaction per stored entry, primary keys, `ON CONFLICT`
//! upserts that keep the winning cell, and inserts that fail on an existing key (so two
//! processes creating the same username: one wins). The schema version is recorded and
//! checked at connect; the schema is created under an advisory lock.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, Config, NoTls, Statement};

use super::rows;
use super::{Backend, Cell, EntryMeta, EntryWrite};
use crate::entry::EntryId;
use crate::error::{Error, Result};

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: i32 = 1;
/// Advisory lock key serialising schema creation: "mnem".
const SCHEMA_LOCK: i64 = 0x6d6e_656d;

const SCHEMA: &str = r#"
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
"#;

/// A connection to PostgreSQL with its prepared statements.
pub struct PostgresBackend {
    conn: Mutex<Connection>,
}

struct Connection {
    client: Client,
    insert_entry: Statement,
    get_entry: Statement,
    drop_tip: Statement,
    add_tip: Statement,
    get_tips: Statement,
    upsert_cell: Statement,
    get_cell: Statement,
    get_cells: Statement,
    get_meta: Statement,
    lock_db: Statement,
    append_log: Statement,
    get_log: Statement,
    last_log: Statement,
    insert_meta: Statement,
    delete_meta: Statement,
}

/// The error with its underlying cause (the driver's own message is often generic).
fn with_cause(e: &postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

fn pg_error(e: postgres::Error) -> Error {
    if e.code() == Some(&SqlState::DATA_CORRUPTED) || e.code() == Some(&SqlState::INDEX_CORRUPTED) {
        return Error::Corrupt(format!("postgres: {e}"));
    }
    Error::Storage(format!("postgres: {}", with_cause(&e)))
}

impl PostgresBackend {
    /// Connects to the server a `postgres://` URL names and checks (or creates) the schema.
    pub fn connect(url: &str) -> Result<PostgresBackend> {
        let mut config: Config = url
            .parse()
            .map_err(|e| Error::invalid(format!("malformed postgres URL: {e}")))?;
        config.connect_timeout(Duration::from_secs(10));
        let mut client = config.connect(NoTls).map_err(|e| {
            Error::Storage(format!("cannot connect to PostgreSQL: {}", with_cause(&e)))
        })?;
        check_or_create_schema(&mut client)?;
        let conn = Connection::prepare(client).map_err(pg_error)?;
        Ok(PostgresBackend {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| Error::Internal("postgres connection lock poisoned".into()))
    }
}

fn check_or_create_schema(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction().map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .map_err(pg_error)?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('mnemo_schema') IS NOT NULL", &[])
        .map_err(pg_error)?
        .get(0);
    if !exists {
        tx.batch_execute(SCHEMA).map_err(pg_error)?;
        tx.execute(
            "INSERT INTO mnemo_schema (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )
        .map_err(pg_error)?;
        return tx.commit().map_err(pg_error);
    }
    let version: i32 = tx
        .query_opt("SELECT max(version) FROM mnemo_schema", &[])
        .map_err(pg_error)?
        .and_then(|r| r.get::<_, Option<i32>>(0))
        .ok_or_else(|| Error::Storage("postgres: mnemo_schema holds no version".into()))?;
    if version > SCHEMA_VERSION {
        return Err(Error::Storage(format!(
            "the database has mnemo schema version {version}, written by a newer mnemo; \
             this one reads version {SCHEMA_VERSION}"
        )));
    }
    if version != SCHEMA_VERSION {
        return Err(Error::Storage(format!(
            "unknown mnemo schema version {version}"
        )));
    }
    tx.commit().map_err(pg_error)
}

impl Connection {
    fn prepare(mut client: Client) -> std::result::Result<Connection, postgres::Error> {
        let mut p = |sql: &str| client.prepare(sql);
        let insert_entry = p(
            "INSERT INTO mnemo_entries (id, db, height, visible, changes_settings, bytes, chk) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        )?;
        let get_entry =
            p("SELECT db, height, visible, changes_settings, bytes, chk FROM mnemo_entries WHERE id = $1")?;
        let drop_tip = p("DELETE FROM mnemo_tips WHERE db = $1 AND id = $2")?;
        let add_tip = p("INSERT INTO mnemo_tips (db, id, height, chk) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")?;
        let get_tips = p("SELECT id, height, chk FROM mnemo_tips WHERE db = $1 ORDER BY id")?;
        let upsert_cell = p(
            "INSERT INTO mnemo_cells AS c (db, store, key, height, entry, value, chk) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (db, store, key) DO UPDATE SET height = excluded.height, \
             entry = excluded.entry, value = excluded.value, chk = excluded.chk \
             WHERE (excluded.height, excluded.entry) > (c.height, c.entry)",
        )?;
        let get_cell = p("SELECT height, entry, value, chk FROM mnemo_cells WHERE db = $1 AND store = $2 AND key = $3")?;
        let get_cells =
            p("SELECT height, entry, value, chk, key FROM mnemo_cells WHERE db = $1 AND store = $2 ORDER BY key")?;
        let get_meta = p("SELECT value, chk FROM mnemo_meta WHERE key = $1")?;
        let insert_meta = p(
            "INSERT INTO mnemo_meta (key, value, chk) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )?;
        let delete_meta = p("DELETE FROM mnemo_meta WHERE key = $1")?;
        // Serialises stores per database across processes, so log positions are handed out
        // in commit order and a reader paging by position never skips a late commit.
        let lock_db = p("SELECT pg_advisory_xact_lock(hashtextextended(encode($1, 'hex'), 0))")?;
        let append_log = p("INSERT INTO mnemo_log (db, id) VALUES ($1, $2)")?;
        let last_log = p("SELECT max(seq) FROM mnemo_log WHERE db = $1")?;
        let get_log =
            p("SELECT seq, id FROM mnemo_log WHERE db = $1 AND seq > $2 ORDER BY seq LIMIT $3")?;
        Ok(Connection {
            client,
            insert_entry,
            get_entry,
            drop_tip,
            add_tip,
            get_tips,
            upsert_cell,
            get_cell,
            get_cells,
            get_meta,
            lock_db,
            append_log,
            get_log,
            last_log,
            insert_meta,
            delete_meta,
        })
    }
}

fn i64_of(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::invalid("a height beyond 2^63 cannot be stored"))
}

fn checked_cell(db: &EntryId, store: &str, key: &str, row: &postgres::Row) -> Result<Cell> {
    let cell = Cell {
        height: rows::height_of(row.get(0))?,
        entry: rows::id_of(row.get::<_, &[u8]>(1))?,
        value: row.get(2),
    };
    if rows::cell_check(db, store, key, &cell) != row.get::<_, &[u8]>(3) {
        return Err(Error::Corrupt(
            "a stored value fails its integrity check".into(),
        ));
    }
    Ok(cell)
}

impl Backend for PostgresBackend {
    fn put_entry(&self, w: &EntryWrite<'_>) -> Result<()> {
        let mut guard = self.lock()?;
        let c = &mut *guard;
        let mut tx = c.client.transaction().map_err(pg_error)?;
        let db: &[u8] = w.meta.db.as_bytes();
        let height = i64_of(w.meta.height)?;
        let visible = rows::pack_ids(&w.meta.settings_visible);
        let chk = rows::entry_check(&w.id, &w.meta, w.bytes);
        tx.execute(&c.lock_db, &[&db]).map_err(pg_error)?;
        let inserted = tx
            .execute(
                &c.insert_entry,
                &[
                    &&w.id.as_bytes()[..],
                    &db,
                    &height,
                    &visible,
                    &w.meta.changes_settings,
                    &w.bytes,
                    &chk,
                ],
            )
            .map_err(pg_error)?;
        if inserted == 0 {
            return Ok(()); // already stored; the transaction rolls back
        }
        tx.execute(&c.append_log, &[&db, &&w.id.as_bytes()[..]])
            .map_err(pg_error)?;
        for parent in w.parents {
            tx.execute(&c.drop_tip, &[&db, &&parent.as_bytes()[..]])
                .map_err(pg_error)?;
        }
        let tip_chk = rows::tip_check(&w.meta.db, &w.id, w.meta.height);
        tx.execute(&c.add_tip, &[&db, &&w.id.as_bytes()[..], &height, &tip_chk])
            .map_err(pg_error)?;
        for (store, key, cell) in &w.cells {
            let cell_chk = rows::cell_check(&w.meta.db, store, key, cell);
            tx.execute(
                &c.upsert_cell,
                &[
                    &db,
                    store,
                    key,
                    &i64_of(cell.height)?,
                    &&cell.entry.as_bytes()[..],
                    &cell.value,
                    &cell_chk,
                ],
            )
            .map_err(pg_error)?;
        }
        tx.commit().map_err(pg_error)
    }

    fn get_entry(&self, id: &EntryId) -> Result<Option<Vec<u8>>> {
        Ok(self.entry_row(id)?.map(|(_, bytes)| bytes))
    }

    fn entry_meta(&self, id: &EntryId) -> Result<Option<EntryMeta>> {
        Ok(self.entry_row(id)?.map(|(meta, _)| meta))
    }

    fn tips(&self, db: &EntryId) -> Result<Vec<(EntryId, u64)>> {
        let mut c = self.lock()?;
        let c = &mut *c;
        let found = c
            .client
            .query(&c.get_tips, &[&&db.as_bytes()[..]])
            .map_err(pg_error)?;
        found
            .iter()
            .map(|row| {
                let (id, height) = (rows::id_of(row.get(0))?, rows::height_of(row.get(1))?);
                rows::verify(
                    row.get(2),
                    &[db.as_bytes(), id.as_bytes(), &height.to_be_bytes()],
                    "tip",
                )?;
                Ok((id, height))
            })
            .collect()
    }

    fn cell(&self, db: &EntryId, store: &str, key: &str) -> Result<Option<Cell>> {
        let mut c = self.lock()?;
        let c = &mut *c;
        let row = c
            .client
            .query_opt(&c.get_cell, &[&&db.as_bytes()[..], &store, &key])
            .map_err(pg_error)?;
        row.map(|r| checked_cell(db, store, key, &r)).transpose()
    }

    fn cells(&self, db: &EntryId, store: &str) -> Result<Vec<(String, Cell)>> {
        let mut c = self.lock()?;
        let c = &mut *c;
        let found = c
            .client
            .query(&c.get_cells, &[&&db.as_bytes()[..], &store])
            .map_err(pg_error)?;
        found
            .iter()
            .map(|row| {
                let key: String = row.get(4);
                let cell = checked_cell(db, store, &key, row)?;
                Ok((key, cell))
            })
            .collect()
    }

    fn entries_after(&self, db: &EntryId, after: u64, limit: usize) -> Result<Vec<(u64, EntryId)>> {
        let mut c = self.lock()?;
        let c = &mut *c;
        let found = c
            .client
            .query(
                &c.get_log,
                &[&&db.as_bytes()[..], &i64_of(after)?, &(limit as i64)],
            )
            .map_err(pg_error)?;
        found
            .iter()
            .map(|row| {
                Ok((
                    rows::position_of(row.get(0))?,
                    rows::id_of(row.get::<_, &[u8]>(1))?,
                ))
            })
            .collect()
    }

    fn last_position(&self, db: &EntryId) -> Result<u64> {
        let mut c = self.lock()?;
        let c = &mut *c;
        let row = c
            .client
            .query_one(&c.last_log, &[&&db.as_bytes()[..]])
            .map_err(pg_error)?;
        rows::position_of(row.get::<_, Option<i64>>(0).unwrap_or(0))
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut c = self.lock()?;
        let c = &mut *c;
        let Some(row) = c.client.query_opt(&c.get_meta, &[&key]).map_err(pg_error)? else {
            return Ok(None);
        };
        let value: Vec<u8> = row.get(0);
        rows::verify(row.get(1), &[key.as_bytes(), &value], "metadata")?;
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

    fn meta_delete(&self, key: &str) -> Result<bool> {
        let mut c = self.lock()?;
        let c = &mut *c;
        Ok(c.client
            .execute(&c.delete_meta, &[&key])
            .map_err(pg_error)?
            == 1)
    }
}

impl PostgresBackend {
    fn entry_row(&self, id: &EntryId) -> Result<Option<(EntryMeta, Vec<u8>)>> {
        let mut c = self.lock()?;
        let c = &mut *c;
        let Some(row) = c
            .client
            .query_opt(&c.get_entry, &[&&id.as_bytes()[..]])
            .map_err(pg_error)?
        else {
            return Ok(None);
        };
        let meta = EntryMeta {
            db: rows::id_of(row.get(0))?,
            height: rows::height_of(row.get(1))?,
            settings_visible: rows::unpack_ids(row.get(2))?,
            changes_settings: row.get(3),
        };
        let bytes: Vec<u8> = row.get(4);
        if rows::entry_check(id, &meta, &bytes) != row.get::<_, &[u8]>(5) {
            return Err(Error::Corrupt(format!(
                "stored entry {id} fails its integrity check"
            )));
        }
        Ok(Some((meta, bytes)))
    }
}
