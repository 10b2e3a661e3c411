//! SQLite files that someone else changed with SQL: a trigger, view, index or altered table
//! in a file handed over (a restored backup, a shared folder) must not decide what becomes
//! of the writes made to it afterwards.

use mnemo::backend::SqliteBackend;
use mnemo::Error;

use crate::durability::open_user;
use crate::support::TempDir;

/// A mnemo file holding one value (`s`/`k` = 1), closed.
fn a_file_with_one_value(dir: &TempDir, name: &str) -> std::path::PathBuf {
    let path = dir.0.join(name);
    let (_inst, _user, db) = open_user(&format!("sqlite:{}", path.display()));
    db.set("s", "k", "1").unwrap();
    path
}

/// Runs `sql` on the file at `path` with a plain connection of its own.
fn change_with_sql(path: &std::path::Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

#[test]
fn a_file_whose_schema_was_changed_outside_mnemo_is_refused_at_open() {
    let dir = TempDir::new();
    let changes = [
        (
            "a trigger that deletes each new cell as it is written",
            "CREATE TRIGGER lose AFTER INSERT ON cells \
             BEGIN DELETE FROM cells WHERE db = NEW.db AND key = NEW.key; END;",
            "lose",
        ),
        (
            "a view",
            "CREATE VIEW everything AS SELECT * FROM cells;",
            "everything",
        ),
        (
            "an index",
            "CREATE INDEX by_value ON cells (value);",
            "by_value",
        ),
        ("a table", "CREATE TABLE notes (x);", "notes"),
        (
            "keys compared without case (two keys become one)",
            "CREATE TABLE c2 (db BLOB NOT NULL, store TEXT NOT NULL, \
             key TEXT NOT NULL COLLATE NOCASE, height INTEGER NOT NULL, entry BLOB NOT NULL, \
             value TEXT, chk BLOB NOT NULL, PRIMARY KEY (db, store, key)) WITHOUT ROWID; \
             INSERT INTO c2 SELECT * FROM cells; DROP TABLE cells; \
             ALTER TABLE c2 RENAME TO cells;",
            "cells",
        ),
        (
            "a primary key dropped (a key may then have two rows)",
            "CREATE TABLE s2 (db BLOB NOT NULL, store TEXT NOT NULL, rows INTEGER NOT NULL, \
             chk BLOB NOT NULL); INSERT INTO s2 SELECT * FROM stores; DROP TABLE stores; \
             ALTER TABLE s2 RENAME TO stores;",
            "stores",
        ),
    ];
    for (i, (what, sql, named)) in changes.iter().enumerate() {
        let path = a_file_with_one_value(&dir, &format!("changed{i}.db"));
        change_with_sql(&path, sql);
        match SqliteBackend::open(&path) {
            Err(Error::Corrupt(message)) => {
                assert!(
                    message.contains(named) && message.contains("outside mnemo"),
                    "{what}: {message}"
                )
            }
            Err(e) => panic!("{what}: refused with {e:?}, not as corrupt"),
            Ok(_) => panic!("a file with {what} was opened"),
        }
    }
}

#[test]
fn what_sqlite_itself_adds_to_a_file_is_no_reason_to_refuse_it() {
    let dir = TempDir::new();
    let path = a_file_with_one_value(&dir, "analyzed.db");
    // Someone ran ANALYZE with the sqlite3 shell: SQLite's own statistics tables appear.
    change_with_sql(&path, "ANALYZE;");
    let (_inst, _user, db) = open_user(&format!("sqlite:{}", path.display()));
    assert_eq!(db.get("s", "k").unwrap(), "1");
}

#[test]
fn a_trigger_added_while_the_file_is_open_never_runs() {
    let dir = TempDir::new();
    let path = a_file_with_one_value(&dir, "open.db");
    let (_inst, _user, db) = open_user(&format!("sqlite:{}", path.display()));
    db.set("s", "warm", "0").unwrap();
    change_with_sql(
        &path,
        "CREATE TRIGGER lose AFTER INSERT ON cells \
         BEGIN DELETE FROM cells WHERE db = NEW.db AND key = NEW.key; END;",
    );
    db.set("s", "k2", "2").unwrap();
    assert_eq!(
        db.get("s", "k2").unwrap(),
        "2",
        "an acknowledged write was lost"
    );
}
