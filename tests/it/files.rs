//! SQLite files that someone else changed with SQL: a trigger, view, index or altered table
//! in a file handed over (a restored backup, a shared folder) must not decide what becomes
//! of the writes made to it afterwards.

use mnemo::backend::SqliteBackend;
use mnemo::crypto::PrivateKey;
use mnemo::database::Permission;
use mnemo::entry::EntryId;
use mnemo::{Database, Error, Instance};

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

// Rows changed by a program writing the file directly, with their row checks made again
// (anyone can: they are plain hashes). Reads may believe such rows (SECURITY.md); nothing
// may panic on them, and `verify` must find them.

/// The row check of an `entries` row, as the SQLite backend computes it.
fn entry_row_check(
    id: &[u8],
    db: &[u8],
    height: i64,
    visible: &[u8],
    changes_settings: bool,
    bytes: &[u8],
) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let height = (height as u64).to_be_bytes();
    let flag = [u8::from(changes_settings)];
    let mut hash = Sha256::new();
    for part in [id, db, &height[..], visible, &flag[..], bytes] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize()[..8].to_vec()
}

/// Stores `visible` (ids packed end to end) as the settings entries entry `id` sees, and
/// makes its row check again.
fn change_visible(path: &std::path::Path, id: &[u8], visible: &[u8]) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let (db, height, changes_settings, bytes): (Vec<u8>, i64, bool, Vec<u8>) = conn
        .query_row(
            "SELECT db, height, changes_settings, bytes FROM entries WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let chk = entry_row_check(id, &db, height, visible, changes_settings, &bytes);
    conn.execute(
        "UPDATE entries SET visible = ?2, chk = ?3 WHERE id = ?1",
        rusqlite::params![id, visible, chk],
    )
    .unwrap();
}

/// The newest entry of database `db` in the file at `path` that changes settings or (with
/// `settings` false) that does not, with the settings entries it sees (packed).
fn newest_entry(path: &std::path::Path, db: &EntryId, settings: bool) -> (Vec<u8>, Vec<u8>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT id, visible FROM entries WHERE db = ?1 AND changes_settings = ?2 \
         ORDER BY height DESC LIMIT 1",
        rusqlite::params![db.as_bytes(), settings],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// A closed file whose database has a grant (a settings entry besides its root), then a
/// value; with the database's id.
fn a_file_with_a_grant(dir: &TempDir, name: &str) -> (std::path::PathBuf, EntryId) {
    let path = dir.0.join(name);
    let (_inst, _user, db) = open_user(&format!("sqlite:{}", path.display()));
    let other = PrivateKey::generate().unwrap().public_key();
    db.grant(&other, Permission::Write).unwrap();
    db.set("s", "k", "1").unwrap();
    (path, db.id())
}

/// Opens the file at `path` as the user of [`open_user`] and runs `read` on its database
/// (found, or the error finding it).
fn read_back<T>(path: &std::path::Path, read: impl FnOnce(Result<Database, Error>) -> T) -> T {
    let url = format!("sqlite:{}", path.display());
    let inst = Instance::open(mnemo::backend::open(&url).unwrap()).unwrap();
    let user = inst.login("writer", None).unwrap();
    read(user.find_db("log"))
}

#[test]
fn settings_links_changed_into_a_cycle_are_corrupt_not_a_panic() {
    let dir = TempDir::new();
    for (i, what) in ["itself", "a newer entry"].into_iter().enumerate() {
        let (path, db) = a_file_with_a_grant(&dir, &format!("cycle{i}.db"));
        let (grant, grant_sees) = newest_entry(&path, &db, true);
        let (changed, visible) = match i {
            0 => (grant.clone(), [grant_sees, grant].concat()),
            // The root, which the grant sees, made to see the grant.
            _ => (grant_sees, grant),
        };
        change_visible(&path, &changed, &visible);
        // Before, each of these panicked (an index past the end, in the settings closure).
        read_back(&path, |found| {
            let outcome = found.and_then(|db| db.get("s", "k").and(db.verify()));
            match outcome {
                Err(Error::Corrupt(message)) => assert!(
                    message.contains("is not below it"),
                    "a settings entry seeing {what}: {message}"
                ),
                other => panic!("a settings entry seeing {what}: {other:?}"),
            }
        });
    }
}

#[test]
fn verify_finds_settings_links_that_are_not_an_entrys_parents() {
    let dir = TempDir::new();
    let (path, db) = a_file_with_a_grant(&dir, "links.db");
    // The value's entry made to see the root only, not the grant its parent is: as a forged
    // grant would be brought into effect.
    let (_, grant_sees) = newest_entry(&path, &db, true);
    let (value, value_sees) = newest_entry(&path, &db, false);
    assert_ne!(value_sees, grant_sees);
    change_visible(&path, &value, &grant_sees);
    read_back(&path, |found| {
        let db = found.unwrap();
        assert_eq!(db.get("s", "k").unwrap(), "1");
        // Before, verify answered Ok: nothing compared the links with the parents'.
        match db.verify() {
            Err(Error::Corrupt(message)) => {
                assert!(message.contains("not its parents'"), "{message}")
            }
            other => panic!("verify answered {other:?}"),
        }
    });
}

/// Runs `read` on the database of the file at `path` and expects [`Error::Corrupt`] saying
/// `says`.
fn corrupt_when_read<T: std::fmt::Debug>(
    path: &std::path::Path,
    says: &str,
    read: impl FnOnce(&Database) -> Result<T, Error>,
) {
    read_back(path, |found| match found.and_then(|db| read(&db)) {
        Err(Error::Corrupt(message)) => assert!(message.contains(says), "{message}"),
        other => panic!("expected corrupt data ({says}), got {other:?}"),
    });
}

#[test]
fn a_stored_entry_larger_than_any_entry_is_corrupt_unread() {
    // Before, its bytes were read whole (a 300 MB one took 650 MB of memory) before the
    // size was looked at; now only their length is.
    let dir = TempDir::new();
    let (path, db) = a_file_with_a_grant(&dir, "entry.db");
    let (value, _) = newest_entry(&path, &db, false);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (height, visible): (i64, Vec<u8>) = conn
        .query_row(
            "SELECT height, visible FROM entries WHERE id = ?1",
            [&value],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let bytes = vec![7u8; 20 << 20];
    let chk = entry_row_check(&value, db.as_bytes(), height, &visible, false, &bytes);
    conn.execute(
        "UPDATE entries SET bytes = ?2, chk = ?3 WHERE id = ?1",
        rusqlite::params![value, bytes, chk],
    )
    .unwrap();
    read_back(&path, |found| match found.and_then(|db| db.verify()) {
        // Found before decoding (which would say "entry is larger than ...").
        Err(Error::Corrupt(message)) => assert!(
            message.starts_with("stored entry ") && message.contains("is larger than 16777216"),
            "{message}"
        ),
        other => panic!("a 20 MiB entry gave {other:?}"),
    });
}

#[test]
fn a_document_larger_than_an_entry_is_stored_and_read() {
    // A key's value is its base and every newer path write merged: past any one entry's
    // 16 MiB (an earlier cap on stored rows refused the second write as corrupt).
    let dir = TempDir::new();
    let path = dir.0.join("document.db");
    let (_inst, _user, db) = open_user(&format!("sqlite:{}", path.display()));
    let part = format!("\"{}\"", "x".repeat(9 << 20));
    db.set_path("s", "doc", "/a", &part).unwrap();
    db.set_path("s", "doc", "/b", &part).unwrap();
    drop(db);
    read_back(&path, |found| {
        let value = found.unwrap().get("s", "doc").unwrap();
        assert_eq!(value.len(), 2 * part.len() + "{\"a\":,\"b\":}".len());
    });
}

#[test]
fn stored_values_of_another_type_are_corrupt() {
    let dir = TempDir::new();
    let path = a_file_with_one_value(&dir, "typed.db");
    change_with_sql(
        &path,
        "UPDATE cells SET height = 'ten' WHERE store = 's' AND key = 'k'",
    );
    // Before: STORAGE, an error an application may retry for ever.
    corrupt_when_read(&path, "not of the type mnemo writes", |db| db.get("s", "k"));
}

#[test]
fn stored_tips_naming_an_entry_twice_are_corrupt() {
    use sha2::{Digest, Sha256};
    let dir = TempDir::new();
    let (path, db) = a_file_with_a_grant(&dir, "tips.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (seq, id, tips): (i64, Vec<u8>, Vec<u8>) = conn
        .query_row(
            "SELECT seq, id, tips FROM log WHERE db = ?1 ORDER BY seq DESC LIMIT 1",
            [db.as_bytes()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let doubled = [&tips[..], &tips[..]].concat();
    let seq_bytes = (seq as u64).to_be_bytes();
    let mut hash = Sha256::new();
    for part in [
        &b"log"[..],
        db.as_bytes(),
        &seq_bytes,
        &id,
        &[1u8],
        &doubled,
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let chk = hash.finalize()[..8].to_vec();
    conn.execute(
        "UPDATE log SET tips = ?3, chk = ?4 WHERE db = ?1 AND seq = ?2",
        rusqlite::params![db.as_bytes(), seq, doubled, chk],
    )
    .unwrap();
    corrupt_when_read(&path, "name an entry twice", |db| db.set("s", "k2", "2"));
}
