//! `mnemo_backend`: a storage backend before an instance takes it.

use std::ffi::c_char;
use std::sync::Arc;

use super::guard::{guard, guard_void};
use super::handle::{out_param, Handle};
use super::status::mnemo_status;
use super::strings;
use crate::backend::{self, Backend};

/// An opened storage backend, not yet owned by an instance. Freed with
/// `mnemo_backend_free`, or consumed by `mnemo_instance_open`.
pub struct mnemo_backend {
    pub(crate) inner: Arc<dyn Backend>,
}

impl Handle for mnemo_backend {
    const NAME: &'static str = "mnemo_backend";
}

/// Opens the storage backend named by `url`.
///
/// - `url`: borrowed, required. Supported: "memory:" (in-process; nothing survives the
///   process), "sqlite:PATH" (one file, created with mode 0600 if absent, following a
///   symbolic link; refused with MNEMO_STATUS_STORAGE if other users may read or write it
///   or another user owns it (or its "-wal", "-shm" or "-journal" file), if it has a second
///   name (a hard link), or if it is not a regular file; PATH is a plain path, never an
///   SQLite "file:" URI) and
///   "postgres://user:password@host:port/dbname?options" (also "postgresql://…"; connects
///   at once; percent-encode reserved characters in values). While the file is open here,
///   open it with no other SQLite in this process (Python's sqlite3 module, a tool linked
///   with its own SQLite): closing it there releases this process's locks on it (POSIX
///   locks belong to the process), and another process's writes may then corrupt it. Other
///   processes may open it.
/// - TLS to PostgreSQL, as libpq's options say: "sslmode=disable" (plain), "prefer" (the
///   default: TLS if the server offers it, else plain), "require" (TLS or fail),
///   "verify-ca" (TLS, and the server's certificate must chain to one of the PEM file
///   "sslrootcert=PATH", or be one of them), "verify-full" (that, and the URL's host name
///   or IP address must be in the certificate's subjectAltName). "prefer" and "require"
///   check nothing of the certificate unless "sslrootcert" is given (then as "verify-ca").
///   "verify-ca" and "verify-full" need "sslrootcert" (~/.postgresql is not read; "system"
///   is not supported); "allow" and client certificates are not supported. Other options
///   (application_name, connect_timeout, channel_binding, hostaddr, keepalives_idle,
///   tcp_user_timeout, …) go to the driver, which reads times in seconds. Left out, they
///   are application_name "mnemo", connect_timeout 10, keepalives_idle 60,
///   keepalives_interval 10, keepalives_retries 6 and tcp_user_timeout 120: a dead server
///   fails an idle connection's next call, or a waiting call, within about two minutes.
///   connect_timeout bounds the whole of connecting (TCP, TLS and login): a server that
///   accepts the connection and never answers fails this call, or a later one that
///   connects, with MNEMO_STATUS_STORAGE. A connect_timeout of 0 or less (libpq: wait
///   forever) means the default, 10 s: every wait is bounded. The URL's search_path (in
///   "options") may name a schema, not the connection's temporary one (pg_temp, whose
///   tables vanish with it: MNEMO_STATUS_INVALID_ARGUMENT).
/// - PostgreSQL "lock_timeout=MS" (1 to 3600000; default 30000): how long a write waits for
///   a database another process is writing before it fails with MNEMO_STATUS_BUSY. A
///   connection the server ended (a restart, a failover, the server's
///   idle_session_timeout, an administrator) is replaced before a call uses it once the
///   server's word of it has arrived, if it sat idle 10 ms or more (one idle 5 s or more
///   is given 1 ms for the word to arrive); a read on one that ends while in use, or
///   before the word arrived, is asked again on another connection (3 tries in all, each
///   within the bounds below), and a write fails with MNEMO_STATUS_STORAGE (whether the
///   server did it is unknown: read it back) and the next call connects again
///   (also when the server ended them all, as a restart does: one write fails, not one per
///   connection). While the server is down or starting, calls fail at once with
///   MNEMO_STATUS_STORAGE; the instance connects again by itself when it is back.
/// - PostgreSQL "max_connections=N" (1 to 64; default 4): how many connections the instance
///   keeps, shared by its threads (made as calls need them). A call that finds them all in
///   use waits for one, behind the calls already waiting (first come first served), at
///   most lock_timeout, then fails with MNEMO_STATUS_BUSY, and one that then connects
///   waits up to connect_timeout more.
/// - Writes of this process's threads take turns: those to one database in the order they
///   came, and on SQLite those to any database of the file for its one writer connection.
///   A write waits for those ahead of it at most lock_timeout (SQLite: 10 s for the
///   database's, 10 s for the file's writer; "memory:": as long as they take), then fails
///   with MNEMO_STATUS_BUSY (nothing written): however many wait behind a storage that
///   stops answering or a lock another process keeps, none waits once more for each write
///   ahead of it. Each wait has its own bound, and one call may meet several in turn, so
///   they add up: on PostgreSQL, pooled connections (a write takes one for its reads, then
///   for its turn), the database's earlier writes, then its lock in the server (measured
///   with lock_timeout=1000: up to 3.4 s before MNEMO_STATUS_BUSY); on SQLite, the
///   database's earlier writes, the file's writer, then another process's lock on the
///   file (measured: up to 20 s). With a small lock_timeout, threads writing hard under
///   load may see MNEMO_STATUS_BUSY now and then (measured: 36 threads in 3 processes
///   writing 32 databases, lock_timeout=1000, max_connections=4, the CPUs busy: 0.36% of
///   writes, most of them waiting for a connection); the default of 30 s leaves room.
/// - PostgreSQL "idle_timeout=MS" (1 to 3600000; default 60000): connections beyond one
///   that stay idle that long are closed, by a thread of the backend's own (running only
///   while it holds more than one connection), so a quiet instance holds one.
/// - PostgreSQL "call_timeout=MS" (1 to 3600000; default 60000): a call waits for the
///   server's answer at most lock_timeout and call_timeout together, then fails with
///   MNEMO_STATUS_STORAGE ("did not answer"), and its connection is closed (whether the
///   server carried out a write it was waiting for is unknown, as when a connection
///   breaks). A schema upgrade at open has an hour.
/// - Several processes may open one "sqlite:" file or PostgreSQL database, and write one
///   mnemo database: a change is stored only if no other process changed what it builds
///   on since it read it (settings and which stores hold documents; for a settings change,
///   anything of that database; for a document write, the documents it writes); otherwise
///   it is worked out again. From its third try on it is worked out holding the database's
///   lock in storage (PostgreSQL: that database's; SQLite: the file's, so writes to every
///   database in it), so other processes' writes wait for that one change (a few
///   milliseconds; at most their lock_timeout or, on SQLite, 10 s, then
///   MNEMO_STATUS_BUSY, as for any write that waits that long) and it is stored:
///   writers that never pause cannot keep a revocation out (up to 16 tries, then
///   MNEMO_STATUS_BUSY). The other way round, each settings change makes the writes other
///   processes are working out start over: settings changed without pause slow them
///   (eight writers on PostgreSQL, about 700 commits/s, fell to about 50). A process that
///   stops while it holds a PostgreSQL database's lock (paused, frozen, asleep) has its
///   connection ended by the server once idle for lock_timeout (at least 5 s), which frees
///   the lock: inside a write's transaction on any server; while a change holds the
///   database for its further tries, on PostgreSQL 14 or later (an older server keeps
///   that lock until the process goes on or its connection dies). mnemo sets these limits
///   on its own connections, over the role's or the database's: jit off (its statements
///   are short: compiling them took about 100 ms at their first run on each connection),
///   idle_in_transaction_session_timeout always, idle_session_timeout only while a
///   connection holds a database's lock (otherwise the role's or database's setting ends
///   idle pooled connections, which are then made again). Writes waiting behind the
///   stopped process have waited their lock_timeout by then and fail with
///   MNEMO_STATUS_BUSY; the next get in.
///   The lock is held by a session, so a connection pooler between mnemo and the server
///   must pool sessions, not transactions. A database handle open in
///   one process finds out within one second that another process revoked its keys: reads
///   then fail with MNEMO_STATUS_PERMISSION_DENIED. Subscriptions and watches hear the
///   other processes' changes (`mnemo_db_subscribe`).
/// - `out`: receives a new backend handle, owned by the caller: pass it to
///   `mnemo_instance_open` (which consumes it) or free it with `mnemo_backend_free`.
///
/// Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (a NULL argument, invalid
/// UTF-8, an unknown or malformed URL, an unknown option or sslmode, "verify-ca" or
/// "verify-full" without "sslrootcert", an sslrootcert file that cannot be read or holds
/// no certificate), MNEMO_STATUS_STORAGE (the file cannot be opened or created, is from a
/// newer mnemo or not a mnemo file; the server is unreachable, refuses the login, refuses
/// TLS that the sslmode requires, or presents a certificate the sslmode refuses),
/// MNEMO_STATUS_CORRUPT (the file is damaged or not a database, or its schema was changed
/// outside mnemo: in a SQLite file, a trigger, view, index or table added, or a table made
/// again with other columns, keys or collations; in PostgreSQL, a trigger or rule on
/// mnemo's tables, row-level security that applies to its role, one of them replaced by a
/// view or found in another schema than the others, while other changes there (a column
/// or index added, a column's type) are not looked for; the message names it),
/// MNEMO_STATUS_BUSY (another process kept the file or the schema locked past the wait).
/// No message repeats a PostgreSQL URL or its password. Thread-safe.
/// (Debug builds only, for tests: "mnemo-test:panic" panics inside this function and
/// returns MNEMO_STATUS_INTERNAL.)
#[no_mangle]
#[must_use]
pub unsafe extern "C" fn mnemo_backend_open(
    url: *const c_char,
    out: *mut *mut mnemo_backend,
) -> mnemo_status {
    guard(|| {
        let out = out_param(out, "out")?;
        let url = strings::arg(url, "url")?;
        forced_panic_for_tests(url);
        let inner = backend::open(url)?;
        *out = mnemo_backend { inner }.into_raw();
        Ok(())
    })
}

/// Debug builds only (the test suite's): the URL "mnemo-test:panic" panics inside this
/// exported function, so the tests can prove that a panic becomes MNEMO_STATUS_INTERNAL
/// with its message and that the library keeps working. Release builds have no such URL.
fn forced_panic_for_tests(url: &str) {
    if cfg!(debug_assertions) && url == "mnemo-test:panic" {
        panic!("forced panic for the tests (debug builds only)");
    }
}

/// Frees a backend that was not passed to `mnemo_instance_open`. NULL is a no-op.
///
/// `backend` is NULL or a live backend handle that is not used again. Thread-safe, as long
/// as no other thread is using `backend`.
#[no_mangle]
pub unsafe extern "C" fn mnemo_backend_free(backend: *mut mnemo_backend) {
    guard_void(|| mnemo_backend::free(backend))
}
