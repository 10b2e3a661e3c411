//! What a file changed with SQL by someone else may not do. A trigger, view or index added
//! to a mnemo file, or a table made again with other columns, keys or collations, would
//! decide what becomes of the writes made to it afterwards (a trigger deleting each new
//! row loses acknowledged commits; a key compared without case makes two keys one). Every
//! connection runs with triggers and views off, SQLite's defensive mode on and the schema
//! untrusted ([`distrust_schema`]), and a file is opened only if its schema is the one
//! mnemo makes ([`check_schema`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;

use rusqlite::config::DbConfig;
use rusqlite::types::Value;
use rusqlite::Connection;

use super::{sql_error, REBUILD_SECRETS, SCHEMA};
use crate::error::{quoted, Error, Result};

/// Tables SQLite itself adds to a file: `ANALYZE`'s statistics and the counters of
/// `AUTOINCREMENT` (which version 2 of the schema used, so upgraded files keep it).
const SQLITE_OWN_TABLES: [&str; 5] = [
    "sqlite_sequence",
    "sqlite_stat1",
    "sqlite_stat2",
    "sqlite_stat3",
    "sqlite_stat4",
];

/// Sets `conn` to run no trigger and no view, to refuse the SQL that could corrupt a file
/// (defensive mode) and to call no function with side effects from the schema.
pub(super) fn distrust_schema(conn: &Connection) -> Result<()> {
    for (setting, on) in [
        (DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false),
        (DbConfig::SQLITE_DBCONFIG_ENABLE_VIEW, false),
        (DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true),
        (DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false),
    ] {
        conn.set_db_config(setting, on).map_err(sql_error)?;
    }
    Ok(())
}

/// Fails with [`Error::Corrupt`] unless the schema of `conn`'s file is [`SCHEMA`] as mnemo
/// creates it: the same tables with the same columns, keys and collations, and nothing
/// else but the tables SQLite adds itself. Names read from the file are quoted.
pub(super) fn check_schema(conn: &Connection, path: &Path) -> Result<()> {
    let made = made()?;
    let refuse = |what: String| {
        Err(Error::Corrupt(format!(
            "{}: its schema was changed outside mnemo ({what}); it is not opened",
            path.display()
        )))
    };
    let found = objects(conn)?;
    for (kind, name) in found.keys() {
        let sqlite_own = kind == "table" && SQLITE_OWN_TABLES.contains(&name.as_str());
        if !sqlite_own && !made.objects.contains_key(&(kind.clone(), name.clone())) {
            return refuse(format!("found {kind} {}", quoted(name)));
        }
    }
    // The statements mnemo runs made these tables: nothing more to compare.
    if made
        .objects
        .iter()
        .all(|(object, made_by)| found.get(object).is_some_and(|sql| made_by.contains(sql)))
    {
        return Ok(());
    }
    // Only mnemo's tables and SQLite's own are left: their shapes are few lines.
    let shapes = shapes(conn)?;
    for (table, lines) in &made.shapes {
        let Some(have) = shapes.get(table) else {
            return refuse(format!("no table {}", quoted(table)));
        };
        if let Some(differs) = have.difference(lines).next() {
            return refuse(format!("table {}: {}", quoted(table), quoted(differs)));
        }
        if let Some(missing) = lines.difference(have).next() {
            return refuse(format!("table {} lacks {}", quoted(table), quoted(missing)));
        }
    }
    Ok(())
}

/// A schema as [`check_schema`] compares it.
struct Layout {
    /// Every object, as (type, name), with each statement that made it as mnemo made it
    /// (the secrets table is rebuilt, and so renamed, after each change).
    objects: BTreeMap<(String, String), BTreeSet<Option<String>>>,
    /// What decides how each table stores and compares its rows ([`shapes`]).
    shapes: BTreeMap<String, BTreeSet<String>>,
}

/// The layout of [`SCHEMA`], worked out once (in a database in memory, where the secrets
/// table is then rebuilt to learn how that leaves its statement).
fn made() -> Result<&'static Layout> {
    static MADE: OnceLock<Layout> = OnceLock::new();
    if let Some(layout) = MADE.get() {
        return Ok(layout);
    }
    let reference = Connection::open_in_memory().map_err(sql_error)?;
    reference.execute_batch(SCHEMA).map_err(sql_error)?;
    let fresh = objects(&reference)?;
    let shapes = shapes(&reference)?;
    reference
        .execute_batch(REBUILD_SECRETS)
        .map_err(sql_error)?;
    let mut layout = Layout {
        objects: BTreeMap::new(),
        shapes,
    };
    for (object, sql) in fresh.into_iter().chain(objects(&reference)?) {
        layout.objects.entry(object).or_default().insert(sql);
    }
    Ok(MADE.get_or_init(|| layout))
}

/// Every object in the schema of `conn`'s main database, as (type, name), with the
/// statement that made it: tables, indexes (SQLite's own for constraints too, made by no
/// statement), views and triggers.
fn objects(conn: &Connection) -> Result<BTreeMap<(String, String), Option<String>>> {
    let mut query = conn
        .prepare("SELECT type, name, sql FROM main.sqlite_schema")
        .map_err(sql_error)?;
    let rows = query
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
        .map_err(sql_error)?;
    rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
}

/// What decides how each table of `conn`'s main database stores and compares its rows, a
/// line each: whether it has row ids, each column (type, NOT NULL, place in the primary
/// key, default) and each column of each index on it (collation, order, unique, partial).
fn shapes(conn: &Connection) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut shapes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Each query joins every table of the file to a pragma describing it.
    let mut add = |columns: &str, pragmas: &str, labels: &[&str]| -> Result<()> {
        let sql = format!(
            "SELECT t.name, {columns} FROM main.sqlite_schema AS t, {pragmas} \
             WHERE t.type = 'table' AND t.name NOT LIKE 'sqlite%'"
        );
        let mut query = conn.prepare(&sql).map_err(sql_error)?;
        let mut rows = query.query([]).map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            let words = (0..labels.len())
                .map(|i| Ok(format!("{} {}", labels[i], shown(row.get(i + 1)?))))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_error)?;
            let table: String = row.get(0).map_err(sql_error)?;
            shapes.entry(table).or_default().insert(words.join(", "));
        }
        Ok(())
    };
    // The connection has no temporary or attached tables: these rows are the file's.
    add(
        "l.wr, l.strict",
        "pragma_table_list(t.name) AS l",
        &["without rowid", "strict"],
    )?;
    add(
        "c.name, c.type, c.\"notnull\", c.pk, c.dflt_value, c.hidden",
        "pragma_table_xinfo(t.name) AS c",
        &[
            "column", "type", "not null", "key part", "default", "hidden",
        ],
    )?;
    add(
        "x.name, x.coll, x.\"desc\", l.\"unique\", l.origin, l.partial, x.seqno, x.key",
        "pragma_index_list(t.name) AS l, pragma_index_xinfo(l.name) AS x",
        &[
            "index column",
            "collation",
            "descending",
            "unique",
            "made by",
            "partial",
            "place",
            "key",
        ],
    )?;
    Ok(shapes)
}

/// A value a schema pragma returned, as a word of a [`shapes`] line.
fn shown(value: Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Integer(n) => n.to_string(),
        Value::Real(x) => x.to_string(),
        Value::Text(text) => text,
        Value::Blob(bytes) => format!("{} bytes", bytes.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_distrusting_connection_runs_no_trigger_or_view_and_is_defensive() {
        let conn = Connection::open_in_memory().unwrap();
        distrust_schema(&conn).unwrap();
        let setting = |which| conn.db_config(which).unwrap();
        assert!(!setting(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER));
        assert!(!setting(DbConfig::SQLITE_DBCONFIG_ENABLE_VIEW));
        assert!(setting(DbConfig::SQLITE_DBCONFIG_DEFENSIVE));
        assert!(!setting(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA));
        // Defensive: the schema cannot be written as a table.
        conn.execute_batch("CREATE TABLE t (x); PRAGMA writable_schema=ON;")
            .unwrap();
        let edit = conn.execute("UPDATE sqlite_schema SET sql = 'CREATE TABLE t (y)'", []);
        assert!(edit.is_err(), "the schema table was written");
    }

    #[test]
    fn the_schema_mnemo_makes_passes_its_own_check_and_no_other_does() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        check_schema(&conn, Path::new("x")).unwrap();
        // Made again under another name, as a rebuild of the secrets table does: the
        // statement differs, the shape does not.
        conn.execute_batch(
            "CREATE TABLE m2 (key TEXT PRIMARY KEY, value BLOB NOT NULL, chk BLOB NOT NULL) \
             WITHOUT ROWID; DROP TABLE meta; ALTER TABLE m2 RENAME TO meta;",
        )
        .unwrap();
        check_schema(&conn, Path::new("x")).unwrap();
        conn.execute_batch("CREATE TABLE b (k)").unwrap();
        let refused = check_schema(&conn, Path::new("x")).unwrap_err();
        assert!(refused.to_string().contains("found table 'b'"), "{refused}");
    }
}
