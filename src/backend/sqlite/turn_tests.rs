//! Write turns ([`super::group`]): rows a turn leaves staged are read by later turns and by
//! nobody else, and every way a staged commit ends.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Instant;

use super::group::SETTLE_AFTER;
use super::tests::{put, remove, temp_file, wal_commits};
use super::SqliteBackend;
use crate::backend::Backend;
use crate::entry::EntryId;
use crate::error::Error;

/// A SQLite file, removed with its companions when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

/// A new file holding the root of [`db`], committed.
fn open() -> (TempFile, SqliteBackend) {
    let file = TempFile(temp_file());
    let backend = SqliteBackend::open(&file.0).unwrap();
    put(&backend, db(), 0, 0, &[]);
    (file, backend)
}

/// The database the tests store in; its entry `n` is [`entry`] `n`.
fn db() -> EntryId {
    EntryId::from_bytes([9; 32])
}

fn entry(n: u8) -> EntryId {
    EntryId::from_bytes([n; 32])
}

/// Stores entry `n` of [`db`] on top of entry `n - 1` in a turn of its own, with another
/// thread announced (left so: its turn never comes) so that the rows stay staged.
fn staged_turn(backend: &SqliteBackend, n: u8) -> std::sync::Arc<dyn crate::backend::Staged> {
    let parent = if n == 1 { db() } else { entry(n - 1) };
    backend.announce_write();
    backend
        .write_turn(false, &mut || {
            put(backend, db(), n, u64::from(n), &[parent]);
            Ok(())
        })
        .unwrap()
        .expect("another thread is announced: the rows stay staged")
}

#[test]
fn a_turn_reads_what_earlier_turns_staged_and_nobody_else_does() {
    let (file, backend) = open();
    let commits = wal_commits(&file.0);
    let first = staged_turn(&backend, 1);
    assert!(first.settled().is_none());
    // Outside a turn (here, or on any other thread) only committed rows are read.
    assert_eq!(backend.tips(&db()).unwrap(), vec![(db(), 0)]);
    assert_eq!(wal_commits(&file.0), commits);

    // The announced thread's turn: reads on the writer, inside the open group.
    let second = backend
        .write_turn(true, &mut || {
            assert_eq!(backend.tips(&db())?, vec![(entry(1), 1)]);
            assert_eq!(backend.get_entry(&entry(1))?, Some(vec![1]));
            assert!(backend.cells(&db(), "s")?.is_empty()); // no transaction begun in it
            put(&backend, db(), 2, 2, &[entry(1)]);
            Ok(())
        })
        .unwrap();
    assert!(
        second.is_none(),
        "nobody else on the way: committed as the turn ended"
    );
    assert!(matches!(first.settled(), Some(Ok(()))));
    assert_eq!(
        wal_commits(&file.0),
        commits + 1,
        "both turns' entries in one commit"
    );
    assert_eq!(backend.tips(&db()).unwrap(), vec![(entry(2), 2)]);
}

#[test]
fn a_withdrawn_announcement_commits_the_group_left_open_for_it() {
    let (_file, backend) = open();
    let staged = staged_turn(&backend, 1);
    backend.withdraw_write();
    assert!(matches!(staged.settled(), Some(Ok(()))));
    assert_eq!(backend.tips(&db()).unwrap(), vec![(entry(1), 1)]);
}

#[test]
fn a_staged_commit_nobody_joins_commits_itself_after_a_while() {
    let (_file, backend) = open();
    let staged = staged_turn(&backend, 1);
    let waited = Instant::now();
    staged.wait().unwrap(); // the announced thread never comes
    assert!(waited.elapsed() >= SETTLE_AFTER);
    assert_eq!(backend.tips(&db()).unwrap(), vec![(entry(1), 1)]);
    backend.withdraw_write(); // nothing open: nothing to do
}

#[test]
fn settling_a_staged_commit_commits_its_group_at_once() {
    let (_file, backend) = open();
    let staged = staged_turn(&backend, 1);
    staged.settle_now().unwrap();
    assert!(matches!(staged.settled(), Some(Ok(()))));
    assert_eq!(backend.tips(&db()).unwrap(), vec![(entry(1), 1)]);
    backend.withdraw_write();
}

#[test]
fn a_turn_failing_after_it_stored_commits_what_it_stored() {
    let (_file, backend) = open();
    backend.announce_write();
    let failed = backend.write_turn(false, &mut || {
        put(&backend, db(), 1, 1, &[db()]);
        Err(Error::invalid("a later step failed"))
    });
    assert!(matches!(failed, Err(Error::InvalidArgument(_))));
    // Never left staged with nobody to wait for it.
    assert_eq!(backend.tips(&db()).unwrap(), vec![(entry(1), 1)]);
    backend.withdraw_write();
}

#[test]
fn a_panic_in_a_turn_rolls_its_group_back_and_frees_the_writer() {
    let (_file, backend) = open();
    let first = staged_turn(&backend, 1);
    backend.announce_write();
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        backend.write_turn(true, &mut || {
            put(&backend, db(), 2, 2, &[entry(1)]);
            panic!("a bug in the turn's work");
        })
    }));
    assert!(panicked.is_err());
    assert!(matches!(first.settled(), Some(Err(Error::Storage(_)))));
    assert_eq!(backend.tips(&db()).unwrap(), vec![(db(), 0)]);
    assert_eq!(backend.get_entry(&entry(1)).unwrap(), None);
    // The writer is free and no turn is left behind: a plain store commits at once.
    backend.withdraw_write();
    put(&backend, db(), 1, 1, &[db()]);
    assert_eq!(backend.tips(&db()).unwrap(), vec![(entry(1), 1)]);
}

#[test]
fn a_turn_holding_the_file_keeps_other_connections_writes_out_until_it_ends() {
    let (file, backend) = open();
    let elsewhere = SqliteBackend::open(&file.0).unwrap(); // as another process would
    let held_until_written = |store: bool| {
        // Another thread on its way to a turn: a group of rows would be left open for it.
        backend.announce_write();
        std::thread::scope(|s| {
            let (mut writer, mut work_ended) = (None, None);
            backend
                .write_turn(false, &mut || {
                    backend.hold_for_turn(&db())?;
                    let other = s.spawn(|| {
                        elsewhere.meta_put("k", b"v").unwrap();
                        Instant::now()
                    });
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    assert!(!other.is_finished(), "the file is held");
                    if store {
                        put(&backend, db(), 1, 1, &[db()]);
                    }
                    writer = Some(other);
                    work_ended = Some(Instant::now());
                    Ok(())
                })
                .unwrap();
            // Let go of as the turn ended; with rows stored, once they are committed.
            let held_until = if store {
                let now = Instant::now();
                backend.withdraw_write(); // the rows were left staged for it
                now
            } else {
                work_ended.unwrap()
            };
            assert!(writer.unwrap().join().unwrap() >= held_until);
        });
        if !store {
            backend.withdraw_write();
        }
    };
    held_until_written(false); // a hold with nothing stored ends with its turn
    held_until_written(true);
    assert_eq!(elsewhere.tips(&db()).unwrap(), vec![(entry(1), 1)]);
    // Outside a turn there is nothing to hold the lock until.
    assert!(matches!(
        backend.hold_for_turn(&db()),
        Err(Error::Internal(_))
    ));
}

#[test]
fn a_turn_asked_for_inside_a_turn_is_part_of_it() {
    let (file, backend) = open();
    let commits = wal_commits(&file.0);
    let outer = backend
        .write_turn(false, &mut || {
            put(&backend, db(), 1, 1, &[db()]);
            let inner = backend.write_turn(false, &mut || {
                put(&backend, db(), 2, 2, &[entry(1)]);
                Ok(())
            })?;
            assert!(inner.is_none(), "left to the outer turn");
            assert_eq!(wal_commits(&file.0), commits, "nothing committed inside");
            assert_eq!(backend.tips(&db())?, vec![(entry(2), 2)]);
            Ok(())
        })
        .unwrap();
    assert!(outer.is_none());
    assert_eq!(wal_commits(&file.0), commits + 1, "one commit for both");
    assert_eq!(backend.tips(&db()).unwrap(), vec![(entry(2), 2)]);
}

#[test]
fn a_turn_whose_stored_rows_were_rolled_back_fails_and_stores_nothing_after() {
    let (_file, backend) = open();
    let turn = backend.write_turn(false, &mut || {
        put(&backend, db(), 1, 1, &[db()]);
        // A write that fails having rolled the whole transaction back (as SQLite does on a
        // full disk, say): the turn's entry 1 goes with it.
        let failed = backend.writer.write_in_group(|conn| {
            conn.execute_batch("ROLLBACK").unwrap();
            Err(Error::Storage("no room left (test)".into()))
        });
        assert!(failed.is_err());
        // Entry 2 would build on entry 1: refused.
        let on_top = backend
            .writer
            .write_in_group(|_| panic!("written after the loss"));
        assert!(matches!(on_top, Err(Error::Storage(_))), "{on_top:?}");
        Ok(())
    });
    assert!(matches!(turn, Err(Error::Storage(_))), "{:?}", turn.err());
    assert_eq!(backend.tips(&db()).unwrap(), vec![(db(), 0)]);
    // The next turn stores as ever.
    backend
        .write_turn(false, &mut || {
            put(&backend, db(), 1, 1, &[db()]);
            Ok(())
        })
        .unwrap();
    assert_eq!(backend.tips(&db()).unwrap(), vec![(entry(1), 1)]);
}
