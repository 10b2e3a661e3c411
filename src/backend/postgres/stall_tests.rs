//! Connections: what mnemo sets on its own; those the server ends: one of mnemo's stopped
//! inside a transaction (a paused or frozen process) is ended by the server, which frees
//! the locks it held; a read the server cuts off is run again on another connection. Needs
//! the test server (`MNEMO_TEST_POSTGRES_URL`, which the test command sets); skipped
//! otherwise.

use std::time::{Duration, Instant};

use super::driver::Statements;
use super::*;

/// mnemo's connections compile no statement (JIT): the server compiled a database's
/// settings query and a commit's at their first run on each connection, about 100 ms each.
#[test]
fn connections_compile_no_statement() {
    let Ok(server) = std::env::var("MNEMO_TEST_POSTGRES_URL") else {
        eprintln!("postgres: skipped (set MNEMO_TEST_POSTGRES_URL to run it)");
        return;
    };
    let mut client = open_client(&PostgresUrl::parse(&server).unwrap()).unwrap();
    let jit: String = client.query_one("SHOW jit", &[]).unwrap().col(0).unwrap();
    assert_eq!(jit, "off");
}

#[test]
fn a_transaction_left_idle_frees_its_locks_after_the_lock_wait() {
    let Ok(server) = std::env::var("MNEMO_TEST_POSTGRES_URL") else {
        eprintln!("postgres: skipped (set MNEMO_TEST_POSTGRES_URL to run it)");
        return;
    };
    let url = PostgresUrl::parse(&format!("{server}?lock_timeout=300")).unwrap();
    let mut stalled = open_client(&url).unwrap();
    // A key of this test's own: tests running meanwhile take others.
    let key = i64::from(std::process::id()) << 20 | 0x5_7a11;
    let mut tx = stalled.transaction().unwrap();
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
        .unwrap();
    let stopped = Instant::now(); // as far as the server sees: no statement comes

    let mut other = postgres::Client::connect(&server, postgres::NoTls).unwrap();
    let mut waits = other.transaction().unwrap();
    waits
        .batch_execute("SET LOCAL lock_timeout = 20000")
        .unwrap();
    waits
        .execute("SELECT pg_advisory_xact_lock($1)", &[&key])
        .expect("the stalled connection's lock is freed within the wait");
    let freed_after = stopped.elapsed();
    assert!(
        freed_after >= MIN_HOLDER_IDLE - Duration::from_millis(50),
        "{freed_after:?}"
    );
    waits.rollback().unwrap();

    let next = tx.query_one("SELECT 1", &[]).map(drop).map_err(pg_error);
    assert!(matches!(next, Err(Error::Storage(_))), "{next:?}");
    drop(tx);
    assert!(!stalled.is_usable());
    // A connection made again for the next call is bounded the same way.
    let mut again = open_client(&url).unwrap();
    let limit: String = again
        .query_one("SHOW idle_in_transaction_session_timeout", &[])
        .unwrap()
        .col(0)
        .unwrap();
    assert_eq!(limit, "5s");
}

/// A read whose connection the server ends while it runs is run again on another
/// connection, up to [`READ_TRIES`] times in all; then the error is the caller's.
#[test]
fn a_read_cut_off_by_the_server_is_run_again_on_another_connection() {
    let Ok(server) = std::env::var("MNEMO_TEST_POSTGRES_URL") else {
        eprintln!("postgres: skipped (set MNEMO_TEST_POSTGRES_URL to run it)");
        return;
    };
    let backend = PostgresBackend::connect(&server).unwrap();
    let cut_off = |c: &mut Connection| -> Result<i32> {
        let ended = c
            .client
            .batch_execute("SELECT pg_terminate_backend(pg_backend_pid())");
        assert!(ended.is_err(), "the server ends the call");
        ended.map_err(pg_error).and(Ok(0))
    };
    let mut runs = 0;
    let found = backend.read(|c| {
        runs += 1;
        if runs < READ_TRIES {
            return cut_off(c);
        }
        c.client
            .query_one("SELECT 1", &[])
            .map_err(pg_error)?
            .col(0)
    });
    assert_eq!(found.unwrap(), 1);
    assert_eq!(runs, READ_TRIES);

    let mut runs = 0;
    let failed = backend.read(|c| {
        runs += 1;
        cut_off(c)
    });
    assert!(matches!(failed, Err(Error::Storage(_))), "{failed:?}");
    assert_eq!(runs, READ_TRIES);
}
