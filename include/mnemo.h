/*
 * mnemo: an embedded, multi-user, signed and syncable database.
 *
 * Generated from src/ffi/ by build.rs with cbindgen. Do not edit.
 *
 * Conventions (they hold for every function below):
 * - Every fallible function returns mnemo_status (int32_t, 0 = MNEMO_STATUS_OK) and its
 *   result must be checked. The MNEMO_STATUS_* constants are int literals, and int is
 *   int32_t on every platform mnemo builds for, so their type is mnemo_status; binding
 *   generators that type a macro by its sign need telling (bindgen:
 *   --default-macro-constant-type signed). include/mnemo_ffi.h declares the same API
 *   without any macro, for cffi, LuaJIT and other FFIs that read declarations.
 * - The error message is per thread. Every function that returns mnemo_status clears the
 *   calling thread's message when it starts and sets it when it fails; functions that
 *   return anything else (the _free functions, mnemo_txn_abort, mnemo_status_str,
 *   mnemo_version, mnemo_last_error_message, ...) never change it. So read
 *   mnemo_last_error_message() on the thread that made the failing call, before that
 *   thread's next status-returning call (docs/other-languages.md: FFIs that hop threads).
 * - Out-parameters are set to NULL (a length to 0) on entry and written only on success,
 *   except that mnemo_db_get_into reports the size it needs with
 *   MNEMO_STATUS_BUFFER_TOO_SMALL. A buffer the caller provides with its capacity is
 *   never written past that capacity.
 * - Strings in are NUL-terminated UTF-8 whatever the process's locale (mnemo never reads
 *   it), borrowed for the call: a binding encodes them itself. Strings out are UTF-8, owned
 *   by the caller and freed with mnemo_string_free(). Lists and records are JSON text.
 * - Each handle has a mnemo_<type>_free() that accepts NULL. Handles may be used from
 *   several threads at once unless a function says otherwise.
 * - mnemo runs threads of its own and is not fork-safe: the child of a process that used
 *   mnemo must not call it at all, not even to free handles made before the fork (fork
 *   before using mnemo, or exec).
 * - A panic inside mnemo never crosses into C: it becomes MNEMO_STATUS_INTERNAL.
 */

#ifndef MNEMO_H
#define MNEMO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MNEMO_VERSION_MAJOR 0
#define MNEMO_VERSION_MINOR 1
#define MNEMO_VERSION_PATCH 0
#define MNEMO_VERSION_NUMBER 1000
#define MNEMO_VERSION_STRING "0.1.0"
/** The ABI version: the N in the SONAME libmnemo.so.N. */
#define MNEMO_ABI_VERSION 0

/** Marks functions whose status must be checked. */
#if defined(__GNUC__) || defined(__clang__)
#define MNEMO_MUST_USE __attribute__((warn_unused_result))
#else
#define MNEMO_MUST_USE
#endif


/**
 * An opened storage backend, not yet owned by an instance. Freed with
 * `mnemo_backend_free`, or consumed by `mnemo_instance_open`.
 */
typedef struct mnemo_backend mnemo_backend;

/**
 * A cursor over the live keys of one store, made by `mnemo_db_cursor`. It holds its own
 * reference to the database (it stays usable after `mnemo_db_free` of the handle it came
 * from) and at most one page of cells. NOT safe to use from several threads at once.
 */
typedef struct mnemo_cursor mnemo_cursor;

/**
 * A database handle. Safe to use from several threads at once.
 *
 * Once the database is reclaimed by `mnemo_user_forget_db` (nobody on the instance keeps
 * it), every call that reads or writes it through a handle, cursor, transaction or watch
 * still open on it fails with MNEMO_STATUS_NOT_FOUND ("... was forgotten on this
 * instance"), whether or not that function lists the status; freeing them stays safe.
 */
typedef struct mnemo_database mnemo_database;

/**
 * A watcher's queue of changes (see `mnemo_db_watch`). Thread-safe: several threads may
 * call `mnemo_events_next` on it at once (each event goes to exactly one of them); no call
 * may still be running on it when it is freed.
 */
typedef struct mnemo_events mnemo_events;

/**
 * An open instance. Safe to use from several threads at once.
 */
typedef struct mnemo_instance mnemo_instance;

/**
 * A live subscription. Safe to free from any thread, including from its own callback;
 * freeing never waits for a callback.
 */
typedef struct mnemo_subscription mnemo_subscription;

/**
 * One reference to an instance's sync engine. Safe to use from several threads at once.
 * A call that takes a user acts only for a session of this engine's own instance (or of
 * another instance opened on the same storage, which has the same device identity): a
 * session of an instance with another identity fails with MNEMO_STATUS_INVALID_ARGUMENT.
 */
typedef struct mnemo_sync mnemo_sync;

/**
 * An open transaction. NOT safe to use from several threads at once.
 */
typedef struct mnemo_txn mnemo_txn;

/**
 * A logged-in user's session, holding decrypted keys until `mnemo_user_logout`.
 * Safe to use from several threads at once.
 */
typedef struct mnemo_user mnemo_user;

/**
 * The result of every fallible mnemo function: `MNEMO_STATUS_OK` (0) or an error code.
 */
typedef int32_t mnemo_status;

/**
 * A change callback: `user_data` first, then the database id and the entry id (both
 * "sha256:…", valid only during the call), then `remote`: 1 when the change came from
 * sync, 0 for a local commit (an `int32_t`, not a C `bool`, so that every FFI maps it the
 * same way).
 * It must return normally: ending the thread from inside it (`pthread_exit`, `longjmp` out
 * of it, a C++ exception) aborts the process, since the thread is mnemo's.
 */
typedef void (*mnemo_change_cb)(void *user_data, const char *db_id, const char *entry_id, int32_t remote);

/**
 * Releases `user_data` when a subscription ends.
 */
typedef void (*mnemo_destroy_cb)(void *user_data);

/**
 * Success.
 */
#define MNEMO_STATUS_OK 0

/**
 * NULL where not allowed, bad UTF-8, malformed id, key, name or JSON, bad URL.
 */
#define MNEMO_STATUS_INVALID_ARGUMENT 1

/**
 * No such user, database, key, stored value or peer.
 */
#define MNEMO_STATUS_NOT_FOUND 2

/**
 * The username (or other unique name) is taken.
 */
#define MNEMO_STATUS_ALREADY_EXISTS 3

/**
 * Wrong password or unknown user: deliberately indistinguishable.
 */
#define MNEMO_STATUS_AUTH_FAILED 4

/**
 * The key lacks the permission, or the user is disabled.
 */
#define MNEMO_STATUS_PERMISSION_DENIED 5

/**
 * The user session behind this handle has logged out.
 */
#define MNEMO_STATUS_LOGGED_OUT 6

/**
 * Sync is not enabled on this instance.
 */
#define MNEMO_STATUS_SYNC_DISABLED 7

/**
 * Peer unreachable, timeout, or protocol error.
 */
#define MNEMO_STATUS_NETWORK 8

/**
 * Backend I/O or database error.
 */
#define MNEMO_STATUS_STORAGE 9

/**
 * Stored or received data fails validation.
 */
#define MNEMO_STATUS_CORRUPT 10

/**
 * A caught panic or a broken invariant inside mnemo.
 */
#define MNEMO_STATUS_INTERNAL 11

/**
 * A documented limit was reached (a peer's connections, request rate or queue, entries
 * waiting for their parents, other processes changing a shared database 16 times while
 * one change was worked out): nothing was changed; retry later.
 */
#define MNEMO_STATUS_BUSY 12

/**
 * A buffer the caller provided cannot hold the result and its NUL (`mnemo_db_get_into`):
 * nothing usable was written, the result's length was reported; retry with a larger one.
 */
#define MNEMO_STATUS_BUFFER_TOO_SMALL 13

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * Opens the storage backend named by `url`.
 *
 * - `url`: borrowed, required. Supported: "memory:" (in-process; nothing survives the
 *   process), "sqlite:PATH" (one file, created with mode 0600 if absent, following a
 *   symbolic link; refused with MNEMO_STATUS_STORAGE if other users may read or write it
 *   or another user owns it (or its "-wal", "-shm" or "-journal" file), if it has a second
 *   name (a hard link), or if it is not a regular file; PATH is a plain path, never an
 *   SQLite "file:" URI) and
 *   "postgres://user:password@host:port/dbname?options" (also "postgresql://…"; connects
 *   at once; percent-encode reserved characters in values). While the file is open here,
 *   open it with no other SQLite in this process (Python's sqlite3 module, a tool linked
 *   with its own SQLite): closing it there releases this process's locks on it (POSIX
 *   locks belong to the process), and another process's writes may then corrupt it. Other
 *   processes may open it.
 * - TLS to PostgreSQL, as libpq's options say: "sslmode=disable" (plain), "prefer" (the
 *   default: TLS if the server offers it, else plain), "require" (TLS or fail),
 *   "verify-ca" (TLS, and the server's certificate must chain to one of the PEM file
 *   "sslrootcert=PATH", or be one of them), "verify-full" (that, and the URL's host name
 *   or IP address must be in the certificate's subjectAltName). "prefer" and "require"
 *   check nothing of the certificate unless "sslrootcert" is given (then as "verify-ca").
 *   "verify-ca" and "verify-full" need "sslrootcert" (~/.postgresql is not read; "system"
 *   is not supported); "allow" and client certificates are not supported. Other options
 *   (application_name, connect_timeout, channel_binding, hostaddr, keepalives_idle,
 *   tcp_user_timeout, …) go to the driver, which reads times in seconds. Left out, they
 *   are application_name "mnemo", connect_timeout 10, keepalives_idle 60,
 *   keepalives_interval 10, keepalives_retries 6 and tcp_user_timeout 120: a dead server
 *   fails an idle connection's next call, or a waiting call, within about two minutes.
 *   connect_timeout bounds the whole of connecting (TCP, TLS and login): a server that
 *   accepts the connection and never answers fails this call, or a later one that
 *   connects, with MNEMO_STATUS_STORAGE. A connect_timeout of 0 or less (libpq: wait
 *   forever) means the default, 10 s: every wait is bounded. The URL's search_path (in
 *   "options") may name a schema, not the connection's temporary one (pg_temp, whose
 *   tables vanish with it: MNEMO_STATUS_INVALID_ARGUMENT).
 * - PostgreSQL "lock_timeout=MS" (1 to 3600000; default 30000): how long a write waits for
 *   a database another process is writing before it fails with MNEMO_STATUS_BUSY. A
 *   connection the server ended (a restart, a failover, the server's
 *   idle_session_timeout, an administrator) is replaced before a call uses it once the
 *   server's word of it has arrived, if it sat idle 10 ms or more (one idle 5 s or more
 *   is given 1 ms for the word to arrive); a read on one that ends while in use, or
 *   before the word arrived, is asked again on another connection (3 tries in all, each
 *   within the bounds below), and a write fails with MNEMO_STATUS_STORAGE (whether the
 *   server did it is unknown: read it back) and the next call connects again
 *   (also when the server ended them all, as a restart does: one write fails, not one per
 *   connection). While the server is down or starting, calls fail at once with
 *   MNEMO_STATUS_STORAGE; the instance connects again by itself when it is back.
 * - PostgreSQL "max_connections=N" (1 to 64; default 4): how many connections the instance
 *   keeps, shared by its threads (made as calls need them). A call that finds them all in
 *   use waits for one, behind the calls already waiting (first come first served), at
 *   most lock_timeout, then fails with MNEMO_STATUS_BUSY, and one that then connects
 *   waits up to connect_timeout more.
 * - Writes of this process's threads take turns: those to one database in the order they
 *   came, and on SQLite those to any database of the file for its one writer connection.
 *   A write waits for those ahead of it at most lock_timeout (SQLite: 10 s for the
 *   database's, 10 s for the file's writer; "memory:": as long as they take), then fails
 *   with MNEMO_STATUS_BUSY (nothing written): however many wait behind a storage that
 *   stops answering or a lock another process keeps, none waits once more for each write
 *   ahead of it. Each wait has its own bound, and one call may meet several in turn, so
 *   they add up: on PostgreSQL, pooled connections (a write takes one for its reads, then
 *   for its turn), the database's earlier writes, then its lock in the server (measured
 *   with lock_timeout=1000: up to 3.4 s before MNEMO_STATUS_BUSY); on SQLite, the
 *   database's earlier writes, the file's writer, then another process's lock on the
 *   file (measured: up to 20 s). With a small lock_timeout, threads writing hard under
 *   load may see MNEMO_STATUS_BUSY now and then (measured: 36 threads in 3 processes
 *   writing 32 databases, lock_timeout=1000, max_connections=4, the CPUs busy: 0.36% of
 *   writes, most of them waiting for a connection); the default of 30 s leaves room.
 * - PostgreSQL "idle_timeout=MS" (1 to 3600000; default 60000): connections beyond one
 *   that stay idle that long are closed, by a thread of the backend's own (running only
 *   while it holds more than one connection), so a quiet instance holds one.
 * - PostgreSQL "call_timeout=MS" (1 to 3600000; default 60000): a call waits for the
 *   server's answer at most lock_timeout and call_timeout together, then fails with
 *   MNEMO_STATUS_STORAGE ("did not answer"), and its connection is closed (whether the
 *   server carried out a write it was waiting for is unknown, as when a connection
 *   breaks). A schema upgrade at open has an hour.
 * - Several processes may open one "sqlite:" file or PostgreSQL database, and write one
 *   mnemo database: a change is stored only if no other process changed what it builds
 *   on since it read it (settings and which stores hold documents; for a settings change,
 *   anything of that database; for a document write, the documents it writes); otherwise
 *   it is worked out again. From its third try on it is worked out holding the database's
 *   lock in storage (PostgreSQL: that database's; SQLite: the file's, so writes to every
 *   database in it), so other processes' writes wait for that one change (a few
 *   milliseconds; at most their lock_timeout or, on SQLite, 10 s, then
 *   MNEMO_STATUS_BUSY, as for any write that waits that long) and it is stored:
 *   writers that never pause cannot keep a revocation out (up to 16 tries, then
 *   MNEMO_STATUS_BUSY). The other way round, each settings change makes the writes other
 *   processes are working out start over: settings changed without pause slow them
 *   (eight writers on PostgreSQL, about 700 commits/s, fell to about 50). A process that
 *   stops while it holds a PostgreSQL database's lock (paused, frozen, asleep) has its
 *   connection ended by the server once idle for lock_timeout (at least 5 s), which frees
 *   the lock: inside a write's transaction on any server; while a change holds the
 *   database for its further tries, on PostgreSQL 14 or later (an older server keeps
 *   that lock until the process goes on or its connection dies). mnemo sets these limits
 *   on its own connections, over the role's or the database's: jit off (its statements
 *   are short: compiling them took about 100 ms at their first run on each connection),
 *   idle_in_transaction_session_timeout always, idle_session_timeout only while a
 *   connection holds a database's lock (otherwise the role's or database's setting ends
 *   idle pooled connections, which are then made again). Writes waiting behind the
 *   stopped process have waited their lock_timeout by then and fail with
 *   MNEMO_STATUS_BUSY; the next get in.
 *   The lock is held by a session, so a connection pooler between mnemo and the server
 *   must pool sessions, not transactions. A database handle open in
 *   one process finds out within one second that another process revoked its keys: reads
 *   then fail with MNEMO_STATUS_PERMISSION_DENIED. Subscriptions and watches hear the
 *   other processes' changes (`mnemo_db_subscribe`).
 * - `out`: receives a new backend handle, owned by the caller: pass it to
 *   `mnemo_instance_open` (which consumes it) or free it with `mnemo_backend_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (a NULL argument, invalid
 * UTF-8, an unknown or malformed URL, an unknown option or sslmode, "verify-ca" or
 * "verify-full" without "sslrootcert", an sslrootcert file that cannot be read or holds
 * no certificate), MNEMO_STATUS_STORAGE (the file cannot be opened or created, is from a
 * newer mnemo or not a mnemo file; the server is unreachable, refuses the login, refuses
 * TLS that the sslmode requires, or presents a certificate the sslmode refuses),
 * MNEMO_STATUS_CORRUPT (the file is damaged or not a database, or its schema was changed
 * outside mnemo: in a SQLite file, a trigger, view, index or table added, or a table made
 * again with other columns, keys or collations; in PostgreSQL, a trigger or rule on
 * mnemo's tables, row-level security that applies to its role, one of them replaced by a
 * view or found in another schema than the others, while other changes there (a column
 * or index added, a column's type) are not looked for; the message names it),
 * MNEMO_STATUS_BUSY (another process kept the file or the schema locked past the wait).
 * No message repeats a PostgreSQL URL or its password. Thread-safe.
 * (Debug builds only, for tests: "mnemo-test:panic" panics inside this function and
 * returns MNEMO_STATUS_INTERNAL.)
 */
MNEMO_MUST_USE mnemo_status mnemo_backend_open(const char *url, struct mnemo_backend **out);

/**
 * Frees a backend that was not passed to `mnemo_instance_open`. NULL is a no-op.
 *
 * `backend` is NULL or a live backend handle that is not used again. Thread-safe, as long
 * as no other thread is using `backend`.
 */
void mnemo_backend_free(struct mnemo_backend *backend);

/**
 * The database's id, "sha256:<64 hex digits>" (the id of its root entry).
 *
 * - `out_id`: receives an owned string; free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK or MNEMO_STATUS_INVALID_ARGUMENT (NULL argument). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_id(const struct mnemo_database *db, char **out_id);

/**
 * Sets `key` in `store` to a JSON value, as one signed commit.
 *
 * - `store`: 1 to 255 bytes; names starting with '_' are reserved.
 * - `key`: 1 to 4096 bytes.
 * - `json`: any JSON value (object, array, string, number, true, false, null) nested at
 *   most 127 levels deep, its strings Unicode (an escape of half a surrogate pair alone,
 *   such as "\ud800", is refused); stored in canonical form (no white space, object keys
 *   sorted, numbers with all their digits: no rounding, no 64-bit limit; only the integer
 *   -0 is stored as 0). An object with a key twice is refused (never stored with one of its
 *   values lost). The object key "$serde_json::private::Number" is reserved: an object
 *   with it as first key, as written or once sorted, is refused (after a key that sorts
 *   before it, such as "!", it is an ordinary key).
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad
 * store name or key, malformed JSON, a key twice in an object, the reserved key first, an
 * entry over 16 MiB: a value takes all but a few hundred bytes of it),
 * MNEMO_STATUS_LOGGED_OUT (the session ended), MNEMO_STATUS_PERMISSION_DENIED,
 * MNEMO_STATUS_STORAGE. Nothing is stored on failure. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_set(struct mnemo_database *db, const char *store, const char *key, const char *json);

/**
 * Sets a new generated key of `store` to a JSON value, as one signed commit, and returns
 * the key: 32 lower-case hex digits, the first 12 the time in milliseconds, the rest random
 * (UUIDv7-like). Keys are unique, and those one process makes sort (bytewise, as
 * `mnemo_db_scan` orders keys) in the order it made them, even when the clock goes back.
 *
 * - `store`: 1 to 255 bytes; names starting with '_' are reserved.
 * - `json`: any JSON value, as for `mnemo_db_set`.
 * - `out_key`: receives the new key, owned; free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad or
 * reserved store name, malformed JSON, an entry over 16 MiB), MNEMO_STATUS_LOGGED_OUT (the
 * session ended), MNEMO_STATUS_PERMISSION_DENIED, MNEMO_STATUS_STORAGE. Nothing is stored
 * on failure. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_insert(struct mnemo_database *db, const char *store, const char *json, char **out_key);

/**
 * Reads the JSON value of `key` in `store`.
 *
 * - `out_json`: receives the value in canonical JSON text, owned; free it with
 *   `mnemo_string_free`.
 *
 * Reserved stores may be read: "_settings" holds the database's "name" and its
 * `"auth/<public key>"` grants.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad
 * store name or key), MNEMO_STATUS_NOT_FOUND (never set, or deleted),
 * MNEMO_STATUS_PERMISSION_DENIED (none of the session's keys may read the database any
 * more: read was revoked), MNEMO_STATUS_CORRUPT, MNEMO_STATUS_STORAGE. Reading works after
 * the session logged out. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_get(const struct mnemo_database *db, const char *store, const char *key, char **out_json);

/**
 * Reads the JSON value of `key` in `store` into a buffer the caller provides: the form of
 * `mnemo_db_get` that allocates nothing for the caller to free, like snprintf. On success
 * `buf` holds the value in canonical JSON text and a terminating NUL, and `*out_len` its
 * length without the NUL. When the value does not fit (it needs `*out_len + 1` bytes),
 * the call returns MNEMO_STATUS_BUFFER_TOO_SMALL with `*out_len` set to the value's
 * length and `buf` holding only "" (never a partial value): call again with a buffer of at
 * least `*out_len + 1` bytes (a value is at most 16 MiB). `buf` NULL with `cap` 0 asks for
 * the length only (MNEMO_STATUS_BUFFER_TOO_SMALL then, as a value is never empty).
 *
 * - `store`: NUL-terminated UTF-8, 1 to 255 bytes.
 * - `key`: NUL-terminated UTF-8, 1 to 4096 bytes.
 * - `buf`: `cap` bytes owned by the caller, written only within them; optional: NULL
 *   only with `cap` 0. Cleared on entry (`buf[0]` set to NUL when `cap` > 0), so it holds
 *   "" after any failure; it must not overlap `store` or `key` (the clearing would change
 *   them).
 * - `cap`: the size of `buf` in bytes, the NUL's byte included.
 * - `out_len`: required; set to 0 on entry, then to the value's length in bytes (without
 *   the NUL) on success and with MNEMO_STATUS_BUFFER_TOO_SMALL; 0 after other failures.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_BUFFER_TOO_SMALL (the value is `cap` bytes or
 * longer), MNEMO_STATUS_INVALID_ARGUMENT (NULL db, store, key or out_len, NULL buf with a
 * `cap` other than 0, bad UTF-8, bad store name or key), MNEMO_STATUS_NOT_FOUND (never
 * set, or deleted), MNEMO_STATUS_PERMISSION_DENIED (read was revoked),
 * MNEMO_STATUS_CORRUPT, MNEMO_STATUS_STORAGE. Reading works after the session logged out.
 * Thread-safe (each thread with its own buffer).
 */
MNEMO_MUST_USE mnemo_status mnemo_db_get_into(const struct mnemo_database *db, const char *store, const char *key, char *buf, size_t cap, size_t *out_len);

/**
 * Deletes `key` from `store`, as one signed commit (a tombstone that merges like a write).
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad or
 * reserved store name, bad key), MNEMO_STATUS_NOT_FOUND (the key has no value),
 * MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_PERMISSION_DENIED, MNEMO_STATUS_STORAGE.
 * Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_delete(struct mnemo_database *db, const char *store, const char *key);

/**
 * Every live key of `store` with its value, as one JSON object: {"key": value, ...}
 * ({} for an empty or unknown store).
 *
 * - `out_json`: receives an owned string; free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad
 * store name), MNEMO_STATUS_PERMISSION_DENIED (read was revoked), MNEMO_STATUS_CORRUPT
 * (stored rows of the store are missing or damaged), MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_get_all(const struct mnemo_database *db, const char *store, char **out_json);

/**
 * A page of the live keys of `store` in bytewise key order (by UTF-8 bytes, whatever the
 * backend), as a JSON array of [key, value] pairs: [["a", 1], ["b", {"x": true}], ...]
 * ([] when none). Pass the last key of a page as `after` to get the next page. Reads through
 * the store's key index: a page costs O(page size), not O(store).
 *
 * - `store`: 1 to 255 bytes. Reserved stores may be read.
 * - `prefix`: optional; only keys starting with these bytes (0 to 4096 bytes). NULL or ""
 *   means every key.
 * - `after`: optional; only keys that sort after this key (which need not exist). NULL
 *   means from the first key.
 * - `limit`: at most this many pairs; 0 means no limit (the whole store, or the rest of it:
 *   page with a limit for large stores, or use `mnemo_db_cursor`).
 * - `out_json`: receives an owned string; free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL db, store or out_json, bad
 * UTF-8, bad store name, a prefix over 4096 bytes, a bad `after` key),
 * MNEMO_STATUS_PERMISSION_DENIED (read was revoked), MNEMO_STATUS_CORRUPT (a stored row is
 * damaged), MNEMO_STATUS_STORAGE. Reading works after the session logged out. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_scan(const struct mnemo_database *db, const char *store, const char *prefix, const char *after, size_t limit, char **out_json);

/**
 * Opens a cursor over the live keys of `store` in bytewise key order, for
 * `mnemo_cursor_next`, which yields each key and value as plain strings. The cursor reads
 * 256 cells at a time, or fewer once they hold 4 MiB of keys and values (at least one), so
 * it never holds the whole store, and holds its own reference to the database: it stays
 * usable after `db` is freed.
 *
 * - `store`: 1 to 255 bytes. Reserved stores may be read.
 * - `prefix`: optional; only keys starting with these bytes (0 to 4096 bytes). NULL or ""
 *   means every key.
 * - `after`: optional; only keys that sort after this key. NULL means from the first key.
 * - `out`: receives a new cursor handle, owned by the caller; free it with
 *   `mnemo_cursor_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL db, store or out, bad UTF-8,
 * bad store name, a prefix over 4096 bytes, a bad `after` key),
 * MNEMO_STATUS_PERMISSION_DENIED (read was revoked). Thread-safe; the cursor itself is not
 * (use it from one thread at a time).
 */
MNEMO_MUST_USE mnemo_status mnemo_db_cursor(const struct mnemo_database *db, const char *store, const char *prefix, const char *after, struct mnemo_cursor **out);

/**
 * Gives `pubkey` a permission on this database, as a signed change to its settings.
 * Needs an admin more senior than `pubkey`: admins are ordered by priority (the creator is
 * 0, the most senior), an admin grant is one step junior to the admin making it, and no
 * admin changes its own grant (so the creator is never demoted, and a database always keeps
 * an admin). Granting again replaces the permission (and re-activates a revoked key). A
 * demotion discards the key's entries this change had not seen (docs/security-model.md).
 *
 * - `pubkey`: `"ed25519:<base64url>"`, e.g. from `mnemo_user_get_signing_key`.
 * - `permission`: "admin", "write" or "read".
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
 * malformed key or permission), MNEMO_STATUS_PERMISSION_DENIED (this handle's key is not an
 * admin, or not one senior to `pubkey`, or `pubkey` is its own key), MNEMO_STATUS_LOGGED_OUT,
 * MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_grant(struct mnemo_database *db, const char *pubkey, const char *permission);

/**
 * Revokes `pubkey`: entries it signs on top of this change are rejected everywhere, and
 * its entries this change had not seen (written concurrently, e.g. offline) are discarded
 * wherever this change arrives: they stay stored, with no effect (docs/security-model.md).
 * Needs an admin more senior than `pubkey` (see `mnemo_db_grant`; the creator cannot be
 * revoked).
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
 * malformed key), MNEMO_STATUS_PERMISSION_DENIED (this handle's key is not an admin senior
 * to `pubkey`; checked first), MNEMO_STATUS_NOT_FOUND (the key holds no active grant),
 * MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_revoke(struct mnemo_database *db, const char *pubkey);

/**
 * Checks everything stored of the database against its entries: every entry's bytes hash
 * to its id and its signature verifies, what is stored beside each entry agrees with it,
 * and the whole state (every store's values, the tips, the entries discarded by
 * revocations) is exactly what the entries make of it, each key found by a read of its
 * whole store and when looked up by itself (as `mnemo_db_get` does). Damage that removed,
 * altered or added rows is reported, never passed over. Reads every entry of the database: its cost
 * grows with the history (ordinary reads check each row, and full-store reads the row
 * count, as they go).
 *
 * Returns MNEMO_STATUS_OK (all agrees), MNEMO_STATUS_INVALID_ARGUMENT (NULL handle),
 * MNEMO_STATUS_CORRUPT (something differs; the message says what), MNEMO_STATUS_PERMISSION_DENIED
 * (read was revoked), MNEMO_STATUS_BUSY (commits kept changing the database during the
 * check; retry), MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_verify(const struct mnemo_database *db);

/**
 * The database's current tips (entries without children), as a sorted JSON array of ids:
 * ["sha256:…", …]. At most 1,024, the most parents an entry has: an entry from elsewhere
 * that would add one more is refused (MNEMO_STATUS_BUSY; sync asks for it again later) until
 * a writer's commit merges them.
 *
 * - `out_json`: receives an owned string; free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
 * MNEMO_STATUS_PERMISSION_DENIED (read was revoked), MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_tips(const struct mnemo_database *db, char **out_json);

/**
 * Starts a transaction: its operations commit together as one entry, or not at all.
 *
 * - `out`: receives a new transaction handle, owned by the caller; end it with
 *   `mnemo_txn_commit` or `mnemo_txn_abort` (each frees it).
 *
 * Returns MNEMO_STATUS_OK or MNEMO_STATUS_INVALID_ARGUMENT (NULL argument). Thread-safe;
 * the transaction itself is not (use it from one thread at a time).
 */
MNEMO_MUST_USE mnemo_status mnemo_db_begin(struct mnemo_database *db, struct mnemo_txn **out);

/**
 * Calls `cb` after every change to this database: each local commit (remote = false), and
 * each entry applied from sync or stored by another process in the same "sqlite:" file or
 * PostgreSQL database (remote = true; those are heard within "other_processes_poll_ms" of
 * `mnemo_instance_limits`, 200 ms by default, from when the subscription began).
 *
 * - `cb`: required. It runs on a library thread (one per instance, in commit order), never
 *   while mnemo holds a lock, so it may call mnemo functions; its string arguments are
 *   valid only during the call. Changes wait for callbacks that fall behind: while 65,536
 *   notifications are queued (`mnemo_instance_set_limits` changes that number), a commit
 *   or received entry of a database with callbacks first waits for them, up to 10 s, and
 *   then goes on, the queue past that number (changes made from inside a callback, of
 *   any instance, never wait). The last handle of the instance to be freed
 *   (`mnemo_instance_free` says which) waits until the callbacks have run for every change
 *   already queued.
 * - `user_data`: passed to `cb` and `destroy` unchanged; may be NULL.
 * - `destroy`: optional; called exactly once with `user_data` when the subscription ends
 *   (`mnemo_subscription_free`, which says on which thread), after the last call of `cb`.
 *   If this function fails, whatever the status, mnemo has not kept `user_data` and never
 *   calls `destroy` or `cb`: `user_data` is still the caller's to release.
 * - `out`: receives a new subscription handle, owned by the caller, freed with
 *   `mnemo_subscription_free`. It lasts until then, also once `db` is freed: changes
 *   made through any handle on the database are announced, also after read is revoked
 *   from the keys of `db`'s session (their ids, not their values, which reads then
 *   refuse): free it when you revoke.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL db, cb or out),
 * MNEMO_STATUS_NOT_FOUND (the database was forgotten on this instance),
 * MNEMO_STATUS_PERMISSION_DENIED (read was revoked), MNEMO_STATUS_STORAGE,
 * MNEMO_STATUS_INTERNAL (the notification thread, or the one that hears other processes,
 * could not start). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_subscribe(struct mnemo_database *db, mnemo_change_cb cb, void *user_data, mnemo_destroy_cb destroy, struct mnemo_subscription **out);

/**
 * Frees a database handle. NULL is a no-op. The database itself stays stored. Freed after
 * `mnemo_instance_free` as the instance's last handle, it waits for queued change
 * callbacks as `mnemo_instance_free` says.
 *
 * `db` is NULL or a live database handle that is not used again. Thread-safe, as long as
 * no other thread is using `db`.
 */
void mnemo_db_free(struct mnemo_database *db);

/**
 * Sets the part of `key`'s JSON value at `pointer` to `json`, as one signed commit.
 * Concurrent writes of different paths of one value (on other devices) both survive the
 * merge; writes of the same path: the last writer wins, by (height, entry id). A whole-value
 * `mnemo_db_set` replaces every path write older than it and none newer. Arrays merge
 * whole: a path into an array (an index, or "-") is written as that whole array as it is
 * here, so of two concurrent appends to one array, one wins. The key's merged value is
 * read and stored whole by each write, so a write costs time in proportion to the value's
 * size: keep a large collection (thousands of fields) in separate keys, not in one value.
 *
 * - `pointer`: a JSON Pointer (RFC 6901), e.g. "/address/city" ("~1" is '/', "~0" is '~');
 *   at most 32 tokens and 4096 bytes. "" is the whole value (like `mnemo_db_set`).
 * - `json`: the JSON value to put there. Missing objects on the way are created; a value on
 *   the way that is neither an object nor an array is replaced by an object. Array
 *   elements are addressed by index; the array's length or "-" appends; any other token
 *   into an array (a name, an index past the length) is refused, as it would replace the
 *   array.
 *   The pointer's tokens plus the value's nesting are at most 100 levels. The key
 *   reserved in `mnemo_db_set`'s values may not be a token of `pointer` either.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad
 * store name or key, malformed pointer or JSON, a token into an array that neither indexes
 * nor appends to it, nested too deep, the reserved key), MNEMO_STATUS_LOGGED_OUT,
 * MNEMO_STATUS_PERMISSION_DENIED, MNEMO_STATUS_STORAGE. Nothing is stored on failure.
 * Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_set_path(struct mnemo_database *db, const char *store, const char *key, const char *pointer, const char *json);

/**
 * Reads the part of `key`'s JSON value at `pointer` (RFC 6901; "" is the whole value).
 *
 * - `out_json`: receives that part in canonical JSON text, owned; free it with
 *   `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad
 * store name, key or pointer), MNEMO_STATUS_NOT_FOUND (the key has no value, or nothing is
 * at `pointer`), MNEMO_STATUS_PERMISSION_DENIED (read was revoked), MNEMO_STATUS_CORRUPT,
 * MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_get_path(const struct mnemo_database *db, const char *store, const char *key, const char *pointer, char **out_json);

/**
 * Every change of `key` in `store`, newest first (by height, then entry id), as a JSON
 * array of objects: {"entry": id, "key": signing public key, "height": n} with
 * "value": the whole value set, or "deleted": true, or "patch": {pointer: value, ...} for
 * path writes. Changes that lost a merge are listed too; entries discarded by a
 * revocation made no change and are not. A key never written gives [].
 *
 * - `limit`: at most this many changes, the newest; 0 for all.
 * - `out_json`: receives an owned string; free it with `mnemo_string_free`.
 *
 * Costs one read per change of the key. Returns MNEMO_STATUS_OK,
 * MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad store name or key),
 * MNEMO_STATUS_PERMISSION_DENIED (read was revoked), MNEMO_STATUS_CORRUPT,
 * MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_history(const struct mnemo_database *db, const char *store, const char *key, size_t limit, char **out_json);

/**
 * The next key of the scan and its value, in bytewise key order. After the last key it
 * returns MNEMO_STATUS_OK with both out-parameters NULL (and keeps doing so).
 *
 * - `out_key`: receives the key, an owned string without JSON quoting; free it with
 *   `mnemo_string_free`. NULL after the last key.
 * - `out_value`: receives the value as canonical JSON text, owned; free it with
 *   `mnemo_string_free`. NULL after the last key.
 *
 * Every 256 keys (sooner when they average over 16 KiB: a page stops once it holds 4 MiB)
 * the cursor reads the next page from storage (after the last key it returned, so keys
 * committed meanwhile further on are seen); a read that fails leaves the cursor where it
 * was, and the call may be repeated.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
 * MNEMO_STATUS_PERMISSION_DENIED (read was revoked since the cursor was made),
 * MNEMO_STATUS_CORRUPT (a stored row is damaged), MNEMO_STATUS_STORAGE. Not thread-safe:
 * use a cursor from one thread at a time.
 */
MNEMO_MUST_USE mnemo_status mnemo_cursor_next(struct mnemo_cursor *cursor, char **out_key, char **out_value);

/**
 * Frees a cursor. NULL is a no-op. The database stays open through its other handles.
 * Freed after `mnemo_instance_free` as the instance's last handle, it waits for queued
 * change callbacks as `mnemo_instance_free` says.
 *
 * `cursor` is NULL or a live cursor that is not used again. Thread-safe, as long as no
 * other thread is using `cursor`.
 */
void mnemo_cursor_free(struct mnemo_cursor *cursor);

/**
 * Starts watching a database without a callback: every change from now on, each local
 * commit and each entry applied from sync or stored by another process (as
 * `mnemo_db_subscribe` hears them), is queued in the returned handle, for the
 * caller to take with `mnemo_events_next` on a thread of its own choosing, or to wait for
 * through the descriptor of `mnemo_events_fd`. Changes are queued in the order they were
 * made to the database, also when several threads commit at once.
 *
 * The queue holds at most 1024 changes. When it is full, later changes are not queued but
 * counted, and `mnemo_events_next` reports the count, in order, as `{"overflow":n}`: a
 * lost change is always reported, never silently dropped.
 *
 * - `out`: receives a new handle, owned by the caller, freed with `mnemo_events_free`. As a
 *   subscription, it goes on hearing changes (their ids) after read is revoked from the
 *   keys of `db`'s session: free it when you revoke.
 *
 * An instance keeps at most 1024 watchers at once by default, across its databases (the
 * "watchers" limit of `mnemo_instance_set_limits`; the count is "watchers" of
 * `mnemo_instance_stats`): free those you no longer read.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL db or out),
 * MNEMO_STATUS_PERMISSION_DENIED (read was revoked), MNEMO_STATUS_BUSY (the instance has
 * as many watchers as its "watchers" limit allows), MNEMO_STATUS_STORAGE,
 * MNEMO_STATUS_INTERNAL (the system could not make the descriptor, or the thread that
 * hears other processes). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_watch(struct mnemo_database *db, struct mnemo_events **out);

/**
 * Takes the oldest pending event, waiting up to `timeout_ms` milliseconds for one
 * (0: do not wait).
 *
 * - `out_json`: receives an owned string (free it with `mnemo_string_free`), or NULL when
 *   no event came within `timeout_ms`. An event is either a change,
 *   `{"db":"sha256:…","entry":"sha256:…","origin":"local","remote":false}` (`origin`:
 *   "local" for a commit through this instance, "sync" for an entry sync brought,
 *   "other_process" for one another process stored in the same SQLite file or PostgreSQL
 *   database; `remote` is false for "local", true otherwise), or `{"overflow":n}`: n
 *   changes were dropped here because the queue was full.
 *
 * Returns MNEMO_STATUS_OK (with an event, or NULL on timeout), MNEMO_STATUS_INVALID_ARGUMENT
 * (NULL events or out_json). Thread-safe: see `mnemo_events`.
 */
MNEMO_MUST_USE mnemo_status mnemo_events_next(struct mnemo_events *events, uint32_t timeout_ms, char **out_json);

/**
 * A file descriptor that is readable exactly while events are pending, for poll, select,
 * epoll, asyncio or libuv to wait on (then call `mnemo_events_next`). It is a socket, not
 * an eventfd: only wait for it to be readable; never read from, write to or close it.
 * It stays valid until `mnemo_events_free`.
 *
 * - `out_fd`: receives the descriptor; set to -1 on failure.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL events or out_fd).
 * Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_events_fd(const struct mnemo_events *events, int *out_fd);

/**
 * Stops the watch and frees the handle, with any events still pending; its descriptor is
 * closed, and its place under the instance's "watchers" limit given back (also after the
 * database handle and the instance were freed). NULL is a no-op. Never waits for anything.
 *
 * `events` is NULL or a live handle that is not used again. Thread-safe, as long as no
 * other thread is using `events`.
 */
void mnemo_events_free(struct mnemo_events *events);

/**
 * Opens an instance on `backend`, creating the device identity (an Ed25519 key) on first
 * open. Discards what user creations that stopped before claiming their name (a crash) at
 * least an hour ago left stored (see `mnemo_instance_create_user`).
 *
 * - `backend`: required; consumed on success and on failure (do not use or free it after).
 * - `out`: receives a new instance handle, owned by the caller, freed with
 *   `mnemo_instance_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
 * MNEMO_STATUS_STORAGE or MNEMO_STATUS_CORRUPT (the backend failed or holds bad data).
 * Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_instance_open(struct mnemo_backend *backend, struct mnemo_instance **out);

/**
 * Opens an instance like `mnemo_instance_open`, choosing the Argon2id cost of passwords
 * when the instance is created: memory `m_kib` KiB, `t` passes, `p` lanes. Each must be at
 * least the default (19456 KiB, 2, 1), so passwords are never weaker by accident, and at
 * most 1048576 KiB (1 GiB), 64 passes, 16 lanes. The
 * parameters are recorded at creation; opening an existing instance with different ones
 * fails rather than change them.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, parameters out of
 * bounds or different from the recorded ones), MNEMO_STATUS_STORAGE,
 * MNEMO_STATUS_CORRUPT. Consumes `backend` on success and on failure. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_instance_open_with_argon2(struct mnemo_backend *backend, uint32_t m_kib, uint32_t t, uint32_t p, struct mnemo_instance **out);

/**
 * Closes an instance handle. NULL is a no-op. Users and databases opened through it stay
 * valid until they are freed themselves. The last of these handles to go (this one, or a
 * database, cursor, transaction or sync handle freed after it) waits until the change callbacks
 * (`mnemo_db_subscribe`) have run for every change already queued, the one running
 * included, so it takes as long as they do: never free it while holding a lock such a
 * callback waits for. From inside one of those callbacks it does not wait (it would wait
 * for itself); nor does it when freed by a callback of another instance while this
 * instance's callbacks are waiting for that other instance to go (each instance's last
 * handle freed by the other's callback): the callbacks still queued then run after it
 * returns.
 *
 * `instance` is NULL or a live instance handle that is not used again. Thread-safe, as
 * long as no other thread is using `instance`.
 */
void mnemo_instance_free(struct mnemo_instance *instance);

/**
 * The device's public identity, `"ed25519:<base64url>"`, stable for the instance's life.
 *
 * - `out_pubkey`: receives an owned string; free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK or MNEMO_STATUS_INVALID_ARGUMENT (NULL argument). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_instance_device_id(const struct mnemo_instance *instance, char **out_pubkey);

/**
 * Writes the limits on what this instance holds in memory for its databases, as a JSON
 * object of numbers. By default: {"idle_databases_kept":256,
 * "queued_notifications":65536, "waiting_entries_per_database":100000,
 * "waiting_bytes_per_database":16777216, "waiting_bytes":67108864,
 * "waiting_time_ms":600000, "other_processes_poll_ms":200, "watchers":1024}.
 * "idle_databases_kept": databases nothing refers to (no handle, subscription, event queue,
 * sync track or watch, no entry waiting for its parents) kept in memory for reuse; past
 * it, the least recently used are dropped and read from storage again when next used.
 * "queued_notifications": change notifications waiting for `mnemo_db_subscribe` callbacks
 * past which a commit or received entry of a database with callbacks waits for them (up
 * to 10 s each time, and never from inside a callback).
 * The "waiting_" limits bound the entries received from peers before their parents, which
 * wait, invisible, in memory until the parents come: at most so many entries and bytes in
 * one database, so many bytes across the instance (an entry counts its encoding plus 320
 * bytes, 32 per parent and 320 more per missing parent: at least the memory it holds, its
 * encoding and what the waiting area keeps of it), and so long each (while sync is
 * enabled, every database is swept for those that waited past their time a quarter of that
 * time apart, at most 10 s; otherwise a database drops its own when next used); past them,
 * entries are refused with MNEMO_STATUS_BUSY, and a later sync round brings them again.
 * "other_processes_poll_ms": how often each database with a subscription or watch
 * (`mnemo_db_subscribe`, `mnemo_db_watch`) is checked for entries other processes stored
 * in the same "sqlite:" file or PostgreSQL database, which its subscribers then hear: one
 * read of all their positions each time (one round trip on PostgreSQL), and the new
 * entries of those that moved.
 * "watchers": watchers (`mnemo_db_watch`) live at once across the instance's databases,
 * each holding two descriptors and a queue of up to 1024 changes (about 72 KiB when full);
 * past it, `mnemo_db_watch` fails with MNEMO_STATUS_BUSY until one is freed with
 * `mnemo_events_free`.
 *
 * - `out_json`: receives the object; owned, free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_instance_limits(const struct mnemo_instance *instance, char **out_json);

/**
 * Changes some of the limits `mnemo_instance_limits` lists: `limits_json` is a JSON object
 * naming each limit to change with its new value, a whole number; the others keep theirs.
 * The change is all or nothing, and applies from now on: idle databases past a lowered
 * bound are dropped when the next database is opened, and entries already waiting past
 * a lowered "waiting_" bound stay until their parents come or their (new) time is up,
 * and watchers past a lowered "watchers" are kept, new ones refused until fewer are live.
 * "idle_databases_kept" must be from 0 to 1048576, "queued_notifications" from 1 to
 * 16777216 (each takes about 100 bytes while it waits), "waiting_entries_per_database"
 * from 0 to 16777216, "waiting_bytes_per_database" and "waiting_bytes" from 0 to
 * 1099511627776 (0: no entry waits), "waiting_time_ms" from 1 to 86400000 (a day),
 * "other_processes_poll_ms" from 10 to 3600000 (an hour; applies at once), "watchers"
 * from 0 to 1048576 (0: every watch is refused).
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not a
 * JSON object of whole numbers, an unknown name or one named twice, a value out of its
 * bounds; nothing changed). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_instance_set_limits(struct mnemo_instance *instance, const char *limits_json);

/**
 * Writes what this instance holds now, against its limits, as a JSON object of numbers:
 * {"databases_in_memory":n, "notifications_queued":n, "waiting_entry_bytes":n,
 * "databases_polled":n, "storage_connections":n, "password_derivations":n,
 * "scrubs_pending":n, "watchers":n}.
 * "databases_in_memory": databases whose state is held in memory (the system databases,
 * those in use and the idle ones kept; see `mnemo_instance_limits`).
 * "notifications_queued": change notifications not yet delivered to every
 * `mnemo_db_subscribe` callback. "waiting_entry_bytes": entries received from peers that
 * wait, invisible, for their parents (at most "waiting_bytes" of `mnemo_instance_limits`,
 * unless it was lowered since they came). "databases_polled": databases checked every
 * "other_processes_poll_ms" for entries other processes stored (those with a subscription
 * or watch, on a "sqlite:" file or PostgreSQL). "storage_connections": connections open
 * to the storage (on "sqlite:", the writer and up to 4 readers; on PostgreSQL, up to the
 * URL's "max_connections", those beyond one closed after "idle_timeout"; 0 for
 * "memory:"). "password_derivations": Argon2id derivations (logins, user creations and
 * password changes with a password) computing now in this process, of every instance: at
 * most one per core the process may use (16 at most), each holding its memory (19 MiB by
 * default); others wait for their turn up to 60 s, then fail with MNEMO_STATUS_BUSY.
 * "scrubs_pending": on "sqlite:", the steps of a scrub not finished yet, read from the file
 * (0 to 2: the file's rewrite after a forget, the checkpoint of the WAL after a forget or
 * a sealed secret replaced or removed, see `mnemo_user_forget_db`), left by this process or
 * another; while it is not 0, removed values or keys may still be in the file or its WAL.
 * The next open of the file, or forget that reclaims a database, tries both again; the next
 * change of sealed secrets (a key added or removed, a user created or deleted, a password
 * changed), the checkpoint. 0 for "memory:" and PostgreSQL (which keeps old row versions
 * until vacuumed).
 * "watchers": watchers (`mnemo_db_watch`) not yet freed, across the instance's databases
 * (at most "watchers" of `mnemo_instance_limits`, unless it was lowered since they
 * started).
 * Counts may change as soon as they are read: for monitoring, not for decisions.
 *
 * - `out_json`: receives the object; owned, free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
 * MNEMO_STATUS_STORAGE, MNEMO_STATUS_CORRUPT or MNEMO_STATUS_BUSY (reading
 * "scrubs_pending" from a "sqlite:" file failed; BUSY after waiting up to 10 s for another
 * process that holds the file locked). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_instance_stats(const struct mnemo_instance *instance, char **out_json);

/**
 * Creates a user account with a fresh Ed25519 key and a private user database (holding its
 * sealed keys and the databases it tracks). The first user created is the instance admin.
 *
 * - `username`: required; 1 to 64 bytes of UTF-8 without control characters.
 * - `password`: NULL for a passwordless user, whose private keys are stored unsealed
 *   (anyone who can read the storage can use them); otherwise 1 to 1024 bytes: the keys are
 *   sealed with AES-256-GCM under a key derived from it with Argon2id. The password itself
 *   is never stored.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL handle or username, bad
 * UTF-8, a name or password out of bounds), MNEMO_STATUS_ALREADY_EXISTS (the name is
 * taken), MNEMO_STATUS_STORAGE, MNEMO_STATUS_BUSY (the call took over an hour, as in a
 * process suspended part-way, and an open of the storage meanwhile discarded it as
 * abandoned: nothing of it is left; create the user again; or no turn to derive the
 * password within 60 s, see "password_derivations" in `mnemo_instance_stats`).
 * Thread-safe; concurrent creations of one name: one wins. Crash-safe: if the process dies
 * part-way (or the call fails), the name is either free again or belongs to the complete
 * account, which then logs in. What a creation that died before its name was claimed had
 * stored is discarded by the first open of the storage an hour or more later (a failed
 * call discards its own at once).
 */
MNEMO_MUST_USE mnemo_status mnemo_instance_create_user(struct mnemo_instance *instance, const char *username, const char *password);

/**
 * Logs a user in and returns a session holding the user's decrypted keys.
 *
 * - `password`: NULL for a passwordless user.
 * - `out`: receives a new user handle, owned by the caller; end it with
 *   `mnemo_user_logout`, which wipes the keys and frees the handle.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL handle, username or out,
 * bad UTF-8), MNEMO_STATUS_AUTH_FAILED (unknown user, wrong password, a password missing
 * or given where none is set: indistinguishable, in the same time),
 * MNEMO_STATUS_PERMISSION_DENIED (right password, but an admin disabled the account),
 * MNEMO_STATUS_STORAGE, MNEMO_STATUS_CORRUPT, MNEMO_STATUS_BUSY (no turn to derive the
 * password within 60 s, for a known user or not alike: see "password_derivations" in
 * `mnemo_instance_stats`).
 * Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_instance_login(struct mnemo_instance *instance, const char *username, const char *password, struct mnemo_user **out);

/**
 * Every username, sorted, as a JSON array of strings: ["alice","bob"].
 *
 * - `out_json`: receives an owned string; free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
 * MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_instance_list_users(const struct mnemo_instance *instance, char **out_json);

/**
 * Enables sync on this instance: creates the `_sync` system database (cursors and peers)
 * and the instance's one sync engine. Idempotent: calling it again (from any thread)
 * makes nothing new and succeeds. What the users logged in now track resumes in the
 * background; if resuming it fails, sync stays enabled, the call returns the failure and
 * the next call resumes again.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL handle),
 * MNEMO_STATUS_STORAGE, or what resuming failed with (MNEMO_STATUS_BUSY,
 * MNEMO_STATUS_CORRUPT, …). Thread-safe.
 *
 * `instance` is NULL or a live instance handle.
 */
MNEMO_MUST_USE mnemo_status mnemo_instance_enable_sync(struct mnemo_instance *instance);

/**
 * A new reference to the instance's sync engine.
 *
 * - `out`: receives a new sync handle, owned by the caller, freed with `mnemo_sync_free`
 *   (each handle is one reference; the engine lives while any handle or the instance does).
 *   A handle stays safe to use and to free after `mnemo_instance_free`, but once the
 *   instance is freed and each of its users logged out or freed (database handles still
 *   open do not count), its calls that need the instance fail with
 *   MNEMO_STATUS_INVALID_ARGUMENT ("the instance behind this sync engine is closed") and
 *   its listeners answer requests with an error their peers see as MNEMO_STATUS_NETWORK.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
 * MNEMO_STATUS_SYNC_DISABLED (call `mnemo_instance_enable_sync` first). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_instance_sync(struct mnemo_instance *instance, struct mnemo_sync **out);

/**
 * The library's version as a static string, e.g. "0.1.0". Never NULL; do not free.
 * Thread-safe.
 */
const char *mnemo_version(void);

/**
 * The library's version as MAJOR*1000000 + MINOR*1000 + PATCH, to compare with
 * MNEMO_VERSION_NUMBER from the header the program was compiled against. Thread-safe.
 */
uint32_t mnemo_version_number(void);

/**
 * The message of the last failed mnemo call on this thread, or NULL if the last call
 * succeeded. Every function returning mnemo_status clears it when it starts and sets it
 * when it fails; no other function changes it (so strings may be freed first). Borrowed:
 * valid until this thread's next call of a function returning mnemo_status; do not free.
 * UTF-8. Never contains passwords or private keys. Thread-safe (the message is per thread:
 * read it on the thread that made the failing call).
 */
const char *mnemo_last_error_message(void);

/**
 * The static name of a status code, e.g. "MNEMO_STATUS_NOT_FOUND"; unknown codes give
 * "MNEMO_STATUS_UNKNOWN". Never NULL, never fails; do not free. Thread-safe.
 */
const char *mnemo_status_str(mnemo_status status);

/**
 * Frees a string that mnemo returned through a `char **` out-parameter.
 * `s` may be NULL (no-op). Passing any other pointer is undefined behaviour. Thread-safe.
 *
 * `s` is NULL or a string returned by mnemo that is not used again.
 */
void mnemo_string_free(char *s);

/**
 * Ends a subscription, without waiting: it never blocks on a callback that is queued or
 * running on the library thread, so it may be called from any thread, including one that a
 * callback is waiting for, and from the subscription's own callback.
 *
 * - Changes committed after this call are not delivered to the subscription.
 * - Notifications already queued when it is called (changes committed before it) are still
 *   delivered, on the library thread, after it returns: none is silently dropped.
 *   `mnemo_db_flush_notifications` waits for them.
 * - `destroy(user_data)` runs exactly once, after the last call of `cb`: before this
 *   function returns, on the calling thread, when no notification for the subscription is
 *   queued or running; otherwise on the library thread, right after the last one returns
 *   (so when freed from inside its own callback: on the library thread, once that callback
 *   and any still queued have returned).
 *
 * NULL is a no-op. Thread-safe: may be called from any thread.
 */
void mnemo_subscription_free(struct mnemo_subscription *subscription);

/**
 * Ends a subscription as `mnemo_subscription_free` does, except that the notifications
 * still queued for it are dropped: `cb` runs at most once more (a call the library thread
 * has already begun, which this does not wait for), never for a change not yet being
 * delivered. `destroy(user_data)` runs exactly once, after that call if there is one (on
 * the library thread, right after it returns), else before this function returns, on the
 * calling thread. For a program, or a language runtime, that is shutting down and must not
 * be called back. `mnemo_db_flush_notifications` counts the dropped notifications as
 * delivered once the library thread has passed them, without calling `cb`.
 *
 * NULL is a no-op. Thread-safe: may be called from any thread, including from the
 * subscription's own callback.
 */
void mnemo_subscription_cancel(struct mnemo_subscription *subscription);

/**
 * Waits until every subscription callback for the changes committed before this call has
 * run: those of every database of `db`'s instance, including notifications still queued
 * for subscriptions freed meanwhile (and their `destroy`, when it runs on the library
 * thread). Events queues (`mnemo_db_watch`) are not callbacks and are not waited for.
 *
 * - `timeout_ms`: the longest wait, in milliseconds; 0 only checks.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL db), MNEMO_STATUS_BUSY
 * (`timeout_ms` passed first, the message says how many notifications are left; or called
 * from inside a callback, on the library thread, where it would wait for itself).
 * Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_db_flush_notifications(struct mnemo_database *db, uint32_t timeout_ms);

/**
 * Serves other instances over TLS 1.3 on `addr` (e.g. "127.0.0.1:0" for any free port),
 * from the engine's own threads, until `mnemo_sync_unlisten` or until the sync engine is
 * gone (the instance and every sync handle freed); once the instance is closed (see
 * `mnemo_instance_sync`) it still accepts connections but answers every request with an
 * error. Several listeners may run at once. Every connection proves this device's id
 * (its Ed25519 key) to the client, and the client must prove its own; there is no
 * plaintext mode. Anyone can connect; a database is served only to requests signed by a
 * key with at least read permission on it. Everything a connection can hold is bounded
 * (connections in all and per address, TLS handshakes, request size and rate, time to send
 * a request, memory for bodies; see SECURITY.md for each default): over a bound, a peer
 * gets MNEMO_STATUS_BUSY or its connection is closed, and the listener keeps serving
 * others.
 *
 * - `out_bound_addr`: receives the address bound, e.g. "127.0.0.1:40123"; owned, free it
 *   with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not a
 * "host:port" address), MNEMO_STATUS_NETWORK (cannot bind). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_listen(struct mnemo_sync *sync, const char *addr, char **out_bound_addr);

/**
 * Stops the listener this engine started at `bound_addr` (the address `mnemo_sync_listen`
 * returned): its socket is closed before this returns, so new connections are refused and
 * the port may be bound again; TLS handshakes under way are dropped, watches held are
 * answered at once, and each open connection finishes the request it is handling, if
 * any, then closes. Other listeners, tracking and rounds this instance starts go on.
 * Tickets naming that address stop working until something listens there again.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not an
 * "ip:port" address), MNEMO_STATUS_NOT_FOUND (no listener of this engine is bound
 * there, e.g. already stopped). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_unlisten(struct mnemo_sync *sync, const char *bound_addr);

/**
 * Connects to the peer listening at `peer_addr` in TLS 1.3, in which each side proves its
 * device id (the handshake is signed with the device's Ed25519 key), and returns the
 * peer's. `peer_addr` is "host:port", or `"ed25519:<key>@host:port"` to accept only the
 * device with that id (a pinned address; tickets pin theirs): any other device at that
 * address is refused. Every other function taking a peer address accepts the same forms.
 *
 * - `out_peer_device_id`: receives the peer's verified device id, "ed25519:…"; owned, free
 *   it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not a
 * "host:port" address with a port from 1 to 65535, a malformed pinned id),
 * MNEMO_STATUS_NETWORK (unreachable, timeout, a TLS handshake that fails, a peer that does
 * not prove the pinned id, or that the listener closed because it is at its connection
 * limits). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_connect(struct mnemo_sync *sync, const char *peer_addr, char **out_peer_device_id);

/**
 * One blocking, bidirectional round for database `db_id` with the peer at `peer_addr`,
 * as `user`: exchanges tips, pulls the entries this instance lacks (in bounded pages),
 * then pushes the entries the peer lacks. Requests are signed with the user's key of
 * highest permission on the local copy, and if the peer refuses it, with each of the
 * user's other keys in turn (a key rotated: granted anew, the old one revoked); for a
 * database not here yet, with each key in turn (default first) until the peer accepts
 * one. So the peer learns the public keys tried. Every entry received is verified before
 * it becomes visible; invalid ones are dropped. Afterwards `mnemo_user_load_db` opens a
 * database pulled for the first time. Rounds with a peer go on from where the last one
 * got in each direction. If a pull that rejected nothing (or stopped busy on entries
 * waiting for parents it did not send) leaves tips the peer named missing here, or a push
 * that had nothing to send leaves the peer's tips (asked again) all here but different
 * (its storage restored from a backup: what it lost, and what waits there for lost
 * parents), the pull or the push starts again from the beginning,
 * each at most once an hour for each database with each device (so a tip this side
 * rejects, or an entry the peer refuses, brings the same listing and error back hourly).
 * Before the first entry goes out, the peer must prove that its device holds copies for a
 * key that may read the database in this copy: a holder proof, signed by that key and
 * naming the device the peer proved in the TLS handshake. A device whose users' keys were
 * all revoked, one whose users were never granted read, and one answering at a bare
 * address in place of another are pushed nothing (they may still be pulled from). An
 * instance makes a holder proof with each key of a user when that user logs in with sync
 * enabled (or is logged in when sync is enabled), adds a key, or syncs, tracks or asks
 * for a database. Calling this also records that a user here asked for the database: from
 * then on this instance's listener takes it when a peer pushes it (a listener stores no
 * database nobody here asked for), even if this round failed.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
 * malformed id or address), MNEMO_STATUS_PERMISSION_DENIED (no key of the user has
 * permission on the peer's copy, the peer refused some of our entries, the peer does not
 * hold the database and nobody there asked for it, or the peer proved no key that may read
 * it here: nothing was pushed, what was pulled is kept), MNEMO_STATUS_NOT_FOUND (neither
 * side holds the database, or this process forgot it while the round pulled it: what came
 * after is not taken), MNEMO_STATUS_CORRUPT (the peer sent
 * entries that failed verification (past 1,024 the round stops), pages that make no
 * progress, or, pulling the database for the first time, no root entry; the valid entries
 * were applied), MNEMO_STATUS_NETWORK (unreachable, a request over 30 s, the round over 10 min),
 * MNEMO_STATUS_BUSY (the peer could not take some of our entries now: a limit, or its
 * storage failed; or this instance's room for entries waiting for their parents is at a
 * limit, or 1,024 entries the peer sent this round wait for parents it did not send, or
 * the database here is at its 1,024 tips, which a writer's commit merges (or
 * brings the refused entry in with it); retry later), MNEMO_STATUS_LOGGED_OUT,
 * MNEMO_STATUS_STORAGE. After BUSY or STORAGE nothing is skipped: the next round asks for
 * and offers again every entry that was not stored, but for entries left waiting for
 * parents the peer did not send (they wait here, until their parents come from anywhere
 * or they expire). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_db(struct mnemo_sync *sync, struct mnemo_user *user, const char *peer_addr, const char *db_id);

/**
 * Keeps database `db_id` in sync with the peer at `peer_addr`, as `user`, in the
 * background: first one round like `mnemo_sync_db` if the database is not here yet, then a
 * push soon after every local commit (or one another process stores in the same storage,
 * heard as `mnemo_db_subscribe` hears it), a pull soon after every commit of the peer's (a
 * pull every second as a fallback), and retries while rounds fail (the peer unreachable
 * or refusing), waiting twice as long after each failure, from 100 ms up to 5 s (and
 * sooner after a local commit); the watch backs off alike, from 0.5 s to 60 s. Rounds,
 * and the watches that hear the peer's commits, come at most every 250 ms: commits made
 * faster share one, so a track of a database written steadily sends
 * a few dozen signed requests a second at most (a peer refuses a key that sends more than
 * about 54 a second, over all its tracks and rounds, with MNEMO_STATUS_BUSY).
 * Subscriptions on the database see remote changes (remote = true). Tracking is recorded
 * in the instance: after a restart, it resumes by itself when the user logs in with sync
 * enabled (or when sync is enabled while the user is logged in), accepting only the device
 * that answered the first round that succeeded (or the one `peer_addr` pins); from that
 * round on it accepts only that device in this session too. It lasts until
 * `mnemo_sync_untrack`; it pauses while the sync engine is gone or the user is logged out.
 * Tracking the same database and peer again changes nothing. A database already here is
 * tracked even while the peer is unreachable; one not here yet must first be pulled
 * successfully. Each track keeps a connection and a watch of its own at its peer, within
 * the peer's limits per address ("max_watches_per_address" 16, "max_connections_per_address"
 * 32 and "max_requests_in_flight_per_address" 4 by default, see `mnemo_sync_limits`): past
 * about 16 tracks with one peer, rounds fail at those limits and changes arrive late (100
 * tracks with one peer, measured: 15 s for one change each to reach them all); for many
 * databases with one peer, `mnemo_sync_db` in a loop (or raising the peer's limits) does
 * better.
 *
 * Returns the statuses of `mnemo_sync_db` (from the first round): MNEMO_STATUS_OK,
 * MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, …),
 * MNEMO_STATUS_PERMISSION_DENIED, MNEMO_STATUS_NOT_FOUND, MNEMO_STATUS_CORRUPT,
 * MNEMO_STATUS_NETWORK, MNEMO_STATUS_BUSY (also: as many tracks run as the sync limit
 * "max_tracks" allows, 256 by default), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE.
 * Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_track(struct mnemo_sync *sync, struct mnemo_user *user, const char *peer_addr, const char *db_id);

/**
 * Stops keeping database `db_id` in sync with the peer at `peer_addr` (its host and port;
 * a pinned id is ignored) for `user`, and forgets it: it no longer resumes at login. A
 * round in progress sends no further request; this waits at most for the one in flight
 * (`request_timeout_ms`, see `mnemo_sync_limits`), also when the round is waiting for
 * change callbacks to catch up (it stops waiting), so it may be called from inside one.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
 * malformed id or address), MNEMO_STATUS_NOT_FOUND (the user does not track that database
 * with that peer), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_untrack(struct mnemo_sync *sync, struct mnemo_user *user, const char *peer_addr, const char *db_id);

/**
 * Lists what `user` tracks (`mnemo_sync_track`), with how each is doing, as a JSON array of
 * objects ordered by database then peer: `{"db", "peer", "device", "running",
 * "last_synced_ms", "last_error"}`. "peer" is the `host:port` `mnemo_sync_untrack` takes;
 * "device" the peer's device id it accepts (pinned, or the one that answered its first
 * round that succeeded; null before any did); "running" whether it runs in this process
 * (a recorded track does not while its database is not here); "last_synced_ms" when its
 * last round succeeded, in milliseconds since the Unix epoch (null when none did since it
 * started in this process); "last_error" why its last round failed (null after a
 * success). For showing sync status: it may change as soon as it is read.
 *
 * - `out_json`: receives the array; owned, free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, a session of
 * another instance), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_tracks(struct mnemo_sync *sync, struct mnemo_user *user, char **out_json);

/**
 * Waits until every local commit made before this call on a tracked database has been
 * pushed to its peer, or `timeout_ms` milliseconds pass.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL handle), MNEMO_STATUS_NETWORK
 * (timed out; the message says why the pushes are behind). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_flush(struct mnemo_sync *sync, uint32_t timeout_ms);

/**
 * Writes the sync engine's limits as a JSON object of numbers: each bound on what peers may
 * hold of a listener and on what rounds may take (time, memory), by name. Counts and sizes in bytes
 * are as they are; times are in milliseconds and their names end in "_ms". The defaults:
 * {"max_connections":256, "max_connections_per_address":32, "max_requests_in_flight":16,
 * "max_requests_in_flight_per_address":4, "requests_per_second_per_address":1000,
 * "request_burst_per_address":2000, "max_message_bytes":33554432,
 * "max_buffered_bytes":67108864, "max_header_bytes":16384, "idle_timeout_ms":20000,
 * "evict_idle_after_ms":1000, "body_timeout_ms":30000, "queue_timeout_ms":10000,
 * "max_tracked_addresses":4096, "max_watches":128, "max_watches_per_address":16,
 * "max_remembered_requests":262144, "max_access_requests_per_database":64, "max_access_requests":1024, "max_tracks":256,
 * "watch_timeout_ms":25000, "connect_timeout_ms":5000, "request_timeout_ms":30000,
 * "round_deadline_ms":600000, "max_received_bytes":134217728} (SECURITY.md says what each
 * stops).
 * "max_buffered_bytes": request bodies and unwritten replies counted in memory at once;
 * bodies being decoded and checked take more than they are counted for (up to about 4
 * times this at peak, measured: SECURITY.md).
 * "max_received_bytes": as a client, entries received from peers and not yet stored,
 * across all of the engine's rounds (tracks and `mnemo_sync_db` calls): each request for
 * entries takes room for the largest reply ("max_message_bytes") before it is sent and
 * gives back what the reply did not use; a round finding no room first stores what it
 * holds, then waits up to "queue_timeout_ms" and fails with MNEMO_STATUS_BUSY (a track
 * tries again at its next round). Entries being decoded and checked take about twice what
 * they are counted for.
 * "evict_idle_after_ms": a listener holding "max_connections" makes room for a new one by
 * closing an idle connection (no request being handled on it nor its reply being written,
 * or still in its handshake): the one idle longest of an address holding at least two
 * more than the newcomer's, or else the one idle longest of all if idle that long;
 * otherwise the new one is closed.
 * "max_remembered_requests": signed requests whose nonces the engine's listeners
 * remember, so that each is accepted once in its 5-minute window (about 48 bytes each; a
 * sixteenth per signing key; past it, MNEMO_STATUS_BUSY: at the least, 1024, a key may
 * sign 64 requests in 5 minutes, too few for a peer syncing every few seconds).
 * "max_access_requests_per_database"
 * and "max_access_requests": access requests (`mnemo_sync_request_access`) kept for one
 * database and in all, pending or rejected, each for 7 days; when full, a new request
 * takes the place of the oldest rejected one, or is refused with MNEMO_STATUS_BUSY.
 * "max_tracks": tracks (`mnemo_sync_track`) running at once, each on a thread of its own;
 * one more is refused with MNEMO_STATUS_BUSY, and a login resumes at most that many (the
 * others stay recorded, listed by `mnemo_sync_tracks` as not running).
 *
 * - `out_json`: receives the object; owned, free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_limits(const struct mnemo_sync *sync, char **out_json);

/**
 * Writes what the sync engine runs now, and what its listeners refused, as a JSON object
 * of numbers: {"listeners":n, "open_connections":n, "requests_in_flight":n, "watches":n,
 * "tracks":n, "requests_refused_busy":n, "connections_refused":n}: listeners started and
 * not stopped, connections open on them (see "max_connections" in `mnemo_sync_limits`),
 * requests they are handling ("max_requests_in_flight") and watches they hold (a tracking
 * peer's wait for the next change; "max_watches"), databases kept in sync in the
 * background (one per user, database and peer; see `mnemo_sync_track`); then, counted
 * since sync was enabled over every listener, stopped ones too: requests answered
 * MNEMO_STATUS_BUSY (a limit reached: raise it with `mnemo_sync_set_limits` if these
 * grow under legitimate load; or storage that another process kept locked past the wait,
 * see "lock_timeout" in `mnemo_backend_open`) and connections closed at once because the listener or
 * their address was at its connection or request limit. Counts may change as soon as
 * they are read: for monitoring, not for decisions.
 *
 * - `out_json`: receives the object; owned, free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_stats(const struct mnemo_sync *sync, char **out_json);

/**
 * Changes some of the sync engine's limits: `limits_json` is a JSON object naming each
 * limit to change (the names `mnemo_sync_limits` lists) with its new value, a whole
 * number; the others keep theirs. The change is all or nothing. Listeners started
 * afterwards and every round started afterwards use the new limits; listeners already
 * running keep theirs, except "max_remembered_requests", one memory shared by every
 * listener, which applies at once (lowered, what it holds beyond goes as it expires), and
 * the access-request limits, which apply to the next request (requests kept beyond a
 * lowered bound stay until approved, replaced or expired), and "max_tracks", which applies
 * to the next track and login (lowered, it stops no track running). Counts (connections,
 * requests in flight, watches, addresses and requests remembered, tracks) must be from 1
 * to 1048576
 * ("max_remembered_requests" from 1024), access requests from 1 to 65536, requests per
 * second and bursts from 1 to 4294967295, times from 1 ms to a day (86400000),
 * "max_message_bytes" from 22020096 (a batch holding the largest entry) to 33554432 (the
 * protocol's largest message), "max_buffered_bytes" and "max_received_bytes" at least
 * "max_message_bytes" and at most 1 TiB, "max_header_bytes" from 8192 to 1048576, and
 * "watch_timeout_ms" less than
 * "request_timeout_ms". A listener runs up to its "max_requests_in_flight" handlers at
 * once, on threads made as they are needed (at most 512 per engine, over all its
 * listeners) and ended after 10 s without work.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not a
 * JSON object of whole numbers, an unknown name or one named twice, a value out of its
 * bounds; nothing changed). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_set_limits(struct mnemo_sync *sync, const char *limits_json);

/**
 * Drops this reference to the sync engine. NULL is a no-op. Other references and the
 * instance keep the engine alive; when the last goes, listeners and tracking stop. Freed
 * after `mnemo_instance_free` as the instance's last handle, it waits for queued change
 * callbacks as `mnemo_instance_free` says.
 * Thread-safe, as long as no other thread is using this handle.
 */
void mnemo_sync_free(struct mnemo_sync *sync);

/**
 * Makes a share ticket for database `db_id`, which this instance holds: a text
 * ("mnemo:…") naming the database, where this engine listens, and this device's id,
 * signed by the device. Hand it to whoever should ask for access; it grants nothing by
 * itself, and a ticket altered in any way is refused. The addresses are those given to
 * `mnemo_sync_advertise`, else those the engine's listeners are bound to (except
 * wildcard ones such as 0.0.0.0).
 *
 * - `out_ticket`: receives the ticket; owned, free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
 * malformed id, no address to name: not listening, or only on a wildcard address with
 * nothing advertised), MNEMO_STATUS_NOT_FOUND (the database is not here),
 * MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_share(struct mnemo_sync *sync, const char *db_id, char **out_ticket);

/**
 * Adds `addr` ("host:port": a public name or a forwarded port, as peers reach this
 * device) to the addresses tickets name, in place of the listeners' own. At most 8.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not a
 * "host:port" address with a port from 1 to 65535, more than 8 addresses). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_advertise(struct mnemo_sync *sync, const char *addr);

/**
 * Asks the device a ticket names for `permission` on its database, as `user`: the request
 * is signed by the user's default key, which the admins there see (with this device's id)
 * and, if they approve, grant. Connects only to the device the ticket names, trying its
 * addresses in turn. Asking again while the request waits changes nothing (or its
 * permission); after a rejection, asking again is refused.
 *
 * - `ticket`: from `mnemo_sync_share` on the other device.
 * - `permission`: "read", "write" or "admin".
 * - `out_request_id`: receives the request's id ("req-" and 16 hex digits, made from the
 *   database's id and the key: the same on both devices); owned, free it with
 *   `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK (also when the key holds the permission already),
 * MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a malformed or altered ticket,
 * a malformed permission), MNEMO_STATUS_PERMISSION_DENIED (an admin rejected this key's
 * request; the device no longer holds the database), MNEMO_STATUS_BUSY (too many requests
 * wait there, or this key's request there was made or last changed less than a minute ago,
 * or changed its permission 3 times already: it then waits as it is until answered or expired),
 * MNEMO_STATUS_NETWORK (no address of the ticket answered as its device, or the device
 * answered with an id other than the request's), MNEMO_STATUS_LOGGED_OUT,
 * MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_request_access(struct mnemo_sync *sync, struct mnemo_user *user, const char *ticket, const char *permission, char **out_request_id);

/**
 * Lists the access requests waiting on this instance for databases where one of
 * `admin_user`'s keys is admin, as a JSON array of objects
 * `{"id", "db", "key", "permission", "device", "requested_at"}` (`requested_at` in
 * milliseconds since the Unix epoch). Requests are kept 7 days, at most 64 per database
 * and 1024 in all (the sync limits "max_access_requests_per_database" and
 * "max_access_requests"), and survive restarts. A request whose key already holds the
 * permission asked (granted otherwise, or by an approval a crash stopped before it
 * removed the request) is no longer waiting: it is not listed, and `mnemo_sync_approve`
 * and `mnemo_sync_reject` answer MNEMO_STATUS_NOT_FOUND (revoke to keep such a key out).
 *
 * - `out_json`: receives the array; owned, free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
 * MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_list_requests(struct mnemo_sync *sync, struct mnemo_user *admin_user, char **out_json);

/**
 * Approves access request `request_id`: grants its key the permission asked, signed by
 * `admin_user`'s admin key (a junior admin, for "admin"). The asker can then
 * `mnemo_sync_join`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not a
 * request id: "req-" and 16 lower-case hex digits),
 * MNEMO_STATUS_NOT_FOUND (no such pending request on a database this user administers),
 * MNEMO_STATUS_PERMISSION_DENIED (this user's admin key may not grant that key, see
 * `mnemo_db_grant`), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_approve(struct mnemo_sync *sync, struct mnemo_user *admin_user, const char *request_id);

/**
 * Rejects access request `request_id`: the asker's key gets MNEMO_STATUS_PERMISSION_DENIED
 * when it joins or asks again, until the rejection expires (7 days).
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, not a
 * request id: "req-" and 16 lower-case hex digits),
 * MNEMO_STATUS_NOT_FOUND (no such pending request on a database this user administers),
 * MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_reject(struct mnemo_sync *sync, struct mnemo_user *admin_user, const char *request_id);

/**
 * Sets the auto-approve policy of database `db_id`: access requests for at most
 * `permission` are granted as they arrive, signed by `admin_user`'s admin key, while a
 * session of that user is logged in here with sync enabled; requests arriving otherwise
 * wait, and are granted when that user next logs in with sync enabled. Requests already
 * waiting that the policy covers are granted now. The policy is kept across restarts. A key
 * the database revoked is never granted by a policy: its request waits for an admin. A key
 * that still holds a grant may ask for more, a demoted one too: the policy grants it up to
 * its level (to keep a key below a level, revoke it or lower the policy).
 *
 * - `permission`: "read", "write" or "admin"; NULL means no policy (it removes one).
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL sync, user or id, bad
 * UTF-8, a malformed id or permission), MNEMO_STATUS_PERMISSION_DENIED (no key of this
 * user is admin of the database, or it is not here), MNEMO_STATUS_LOGGED_OUT,
 * MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_auto_approve(struct mnemo_sync *sync, struct mnemo_user *admin_user, const char *db_id, const char *permission);

/**
 * Pulls the database a ticket names from the device it names, as `user`, once an admin
 * there approved the user's access request; afterwards `mnemo_user_load_db` (or
 * `mnemo_user_find_db`) opens it, and `mnemo_sync_track` keeps it in sync.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
 * malformed or altered ticket), MNEMO_STATUS_PERMISSION_DENIED (not approved yet, or
 * rejected), and the other statuses of `mnemo_sync_db`. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_sync_join(struct mnemo_sync *sync, struct mnemo_user *user, const char *ticket);

/**
 * Adds "set `key` in `store` to `json`" to the transaction; nothing is visible before
 * `mnemo_txn_commit`. A later operation on the same key replaces this one.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, bad or
 * reserved store name, bad key, malformed JSON, or the transaction would take more than an
 * entry's 16 MiB with it; the transaction is unchanged and stays usable). Not thread-safe:
 * use a transaction from one thread at a time.
 */
MNEMO_MUST_USE mnemo_status mnemo_txn_set(struct mnemo_txn *txn, const char *store, const char *key, const char *json);

/**
 * Adds "set the part of `key`'s value at `pointer` to `json`" to the transaction, as
 * `mnemo_db_set_path` describes. It builds on earlier operations on the same key in this
 * transaction, in the order they were added: on a value set here it edits that value; it
 * replaces earlier writes of the same path and of paths under it; a path into an array
 * writes that array as the database and this transaction's earlier writes leave it (the
 * key's value is read from the database for that, at its first path write here).
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (as for `mnemo_txn_set`: NULL
 * argument, bad UTF-8, over 16 MiB, which a whole array written may reach; or a bad
 * pointer, a token into an array that neither indexes nor appends to it, or a write nested
 * too deep, a whole array included; the transaction is unchanged
 * and stays usable), and, from reading the key's value at its first path write here, what
 * `mnemo_db_get` returns besides NOT_FOUND (MNEMO_STATUS_PERMISSION_DENIED,
 * MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_CORRUPT, MNEMO_STATUS_STORAGE). Not thread-safe:
 * use a transaction from one thread at a time.
 */
MNEMO_MUST_USE mnemo_status mnemo_txn_set_path(struct mnemo_txn *txn, const char *store, const char *key, const char *pointer, const char *json);

/**
 * Adds "delete `key` from `store`" to the transaction.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (as for `mnemo_txn_set`: NULL
 * argument, bad UTF-8, bad or reserved store name, bad key, over 16 MiB),
 * MNEMO_STATUS_NOT_FOUND (the key has no value in the database or earlier in this
 * transaction), MNEMO_STATUS_STORAGE. Not thread-safe: use a transaction from one thread
 * at a time.
 */
MNEMO_MUST_USE mnemo_status mnemo_txn_delete(struct mnemo_txn *txn, const char *store, const char *key);

/**
 * Commits every operation of the transaction as one signed entry, across all the stores it
 * touches: all of it becomes visible, or none. Frees `txn`, on success and on failure.
 *
 * - `out_entry_id`: optional; receives the new entry's id (owned, free with
 *   `mnemo_string_free`).
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL txn, no operations, or an
 * entry over 16 MiB with the parents it has: each tip of the database takes 32 bytes),
 * MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_PERMISSION_DENIED, MNEMO_STATUS_STORAGE.
 * Not thread-safe: no other thread may use `txn` during or after the call.
 */
MNEMO_MUST_USE mnemo_status mnemo_txn_commit(struct mnemo_txn *txn, char **out_entry_id);

/**
 * Discards the transaction and frees it. NULL is a no-op. Freed after
 * `mnemo_instance_free` as the instance's last handle, it waits for queued change
 * callbacks as `mnemo_instance_free` says (so does `mnemo_txn_commit`). Not thread-safe:
 * no other thread may use `txn` during or after the call.
 */
void mnemo_txn_abort(struct mnemo_txn *txn);

/**
 * Creates a database with this user's default key as its admin, and adds it to the user's
 * list. A creation that fails part-way (an error, a crash) leaves nothing stored outside
 * every list: the database is either listed or not stored.
 *
 * - `name`: required, UTF-8, 1 to 255 bytes; names need not be unique.
 * - `out`: receives a new database handle, owned by the caller, freed with `mnemo_db_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, empty
 * name or one over 255 bytes), MNEMO_STATUS_PERMISSION_DENIED (the account was deleted),
 * MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_create_db(struct mnemo_user *user, const char *name, struct mnemo_database **out);

/**
 * Opens a database stored on this instance by its id, and tracks it in the user's list.
 * The handle signs with the user's key of highest permission on the database. Only a
 * database one of the user's keys may at least read opens: system databases and other
 * users' private databases never do.
 *
 * - `db_id`: "sha256:<64 hex digits>", e.g. from `mnemo_db_id` on another device.
 * - `out`: receives a new database handle, owned by the caller, freed with `mnemo_db_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
 * malformed id), MNEMO_STATUS_NOT_FOUND (not on this instance, or none of the user's keys
 * may read it: the same answer, so the user learns nothing of databases it may not open;
 * sync it first, or ask its owner for a grant), MNEMO_STATUS_PERMISSION_DENIED (the
 * account was deleted), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_load_db(struct mnemo_user *user, const char *db_id, struct mnemo_database **out);

/**
 * Opens the database named `name` among those the user tracks (created or loaded) and may
 * still read. When
 * several tracked databases share the name, the one tracked first is opened (ties: the
 * smallest id); use `mnemo_user_list_dbs` and `mnemo_user_load_db` to choose another.
 *
 * - `out`: receives a new database handle, owned by the caller, freed with `mnemo_db_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8),
 * MNEMO_STATUS_NOT_FOUND (no tracked database has that name),
 * MNEMO_STATUS_PERMISSION_DENIED (the account was deleted), MNEMO_STATUS_LOGGED_OUT,
 * MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_find_db(struct mnemo_user *user, const char *name, struct mnemo_database **out);

/**
 * The databases the user tracks and may still read (those `mnemo_user_load_db` opens), as
 * a JSON array sorted by name then id: [{"id":"sha256:…","name":"notes"}, …].
 *
 * - `out_json`: receives an owned string; free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
 * MNEMO_STATUS_PERMISSION_DENIED (the account was deleted), MNEMO_STATUS_LOGGED_OUT,
 * MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_list_dbs(struct mnemo_user *user, char **out_json);

/**
 * Removes a database from the user's list: it no longer shows in `mnemo_user_list_dbs` or
 * opens through `mnemo_user_find_db`, and what this user tracks of it with sync stops (and
 * no longer resumes at login). When no user of the instance keeps it any more, its storage
 * is reclaimed: every row of it is deleted (SQLite zeroes them and rewrites the file, so no
 * copy stays in it: this takes time in proportion to the file's size, and this process's
 * writes to the file wait for it at most 10 s, then fail with MNEMO_STATUS_BUSY; if the
 * rewrite, or
 * the checkpoint of the WAL after it, is kept out (another process's lock on the file past
 * 1 s, or for the checkpoint its read snapshot; a full disk; a crash), the forget still
 * succeeds, the bytes stay meanwhile, and the next forget or open of the file finishes it,
 * taking that time then; PostgreSQL keeps old row versions until vacuumed, and a row of the database's id and
 * version, so that other processes still holding it see it changed), and database
 * handles still open on it fail with MNEMO_STATUS_NOT_FOUND (in other processes sharing the storage too). Forgetting is
 * local: grants in the database's settings stay as they are, also on other replicas; while
 * another user of the instance keeps it, `mnemo_user_load_db` adds it to the list again,
 * and once reclaimed, syncing it from a peer brings it back (at storage positions after
 * any it had here: the instance keeps one number, the last position any database it
 * forgot reached, so peers that pulled it from here before get all of the new copy from
 * where they were). Another user of this instance
 * loading it at the same moment either keeps it (it is not reclaimed) or waits and gets
 * MNEMO_STATUS_NOT_FOUND. A process sharing the storage that writes to the database after
 * this one found that nobody keeps it (a user there loaded it just then) keeps it stored:
 * the reclaiming then deletes nothing, and no write it acknowledged is lost (a handle
 * loaded there that has not written yet gets MNEMO_STATUS_NOT_FOUND). A write from a handle
 * whose user no longer keeps it (or a peer's push) landing at that moment makes it look
 * again, up to 4 times, whether anybody keeps it; then it stays stored. Writes that land
 * before that look, from this user's other handles too, go with the database: nobody
 * keeps it. The database leaves the list last: if forgetting stops part-way (an error, a
 * crash), it is still in the user's list, and forgetting it again finishes the job. (On a
 * full disk the rows can be deleted and the writes after fail: the call fails with
 * MNEMO_STATUS_STORAGE, the database no longer opens, nor shows in
 * `mnemo_user_list_dbs`, and a forget once there is room again succeeds.)
 *
 * - `db_id`: "sha256:<64 hex digits>", a database in the user's list.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
 * malformed id), MNEMO_STATUS_NOT_FOUND (not in the user's list),
 * MNEMO_STATUS_PERMISSION_DENIED (a system database of the instance, or the account was
 * deleted), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_forget_db(struct mnemo_user *user, const char *db_id);

/**
 * Generates a new Ed25519 key for the user, stored like the others (sealed under the
 * password, or unsealed for a passwordless user). The private key never leaves mnemo. A
 * crash during the call may leave the new key stored but never listed: unused and granted
 * nothing, it stays sealed with the others until the account is deleted. With sync
 * enabled, the device also makes the key's holder proof (see `mnemo_sync_db`), so that
 * peers push it what the key may read; if that fails, the next login or sync makes it.
 *
 * - `display_name`: optional (NULL: none), at most 255 bytes.
 * - `out_pubkey`: receives the new public key, `"ed25519:<base64url>"`; owned, free it with
 *   `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL user or out, bad UTF-8, a
 * name too long), MNEMO_STATUS_PERMISSION_DENIED (the account was deleted),
 * MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_add_private_key(struct mnemo_user *user, const char *display_name, char **out_pubkey);

/**
 * The user's keys as a JSON array sorted by public key:
 * [{"pubkey":"ed25519:…","name":"default","default":true}, …] ("name" may be null).
 *
 * - `out_json`: receives an owned string; free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
 * MNEMO_STATUS_PERMISSION_DENIED (the account was deleted), MNEMO_STATUS_LOGGED_OUT,
 * MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_list_keys(struct mnemo_user *user, char **out_json);

/**
 * Removes one of the user's keys: its record goes, and its sealed private key is erased
 * from storage (as `mnemo_user_change_password` erases a replaced secret). This session
 * stops signing with it at once; other sessions of the same user hold it until they log
 * out. Database handles that sign with it then fail to write. Grants the key holds in
 * databases' settings stay (revoke them with `mnemo_db_revoke` first if they matter). The
 * device's holder proof by the key is marked gone (see `mnemo_sync_db`): peers stop
 * pushing to this device what only that key may read (a device that kept a copy of the
 * proof can still show it: revoke the key's read to cut a device off). If it fails after the record went (MNEMO_STATUS_STORAGE),
 * calling it again erases the sealed key that was left.
 *
 * - `pubkey`: `"ed25519:<base64url>"`, one of the user's keys other than the default.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
 * malformed key, the default key: make another the default first), MNEMO_STATUS_NOT_FOUND
 * (the user has no such key), MNEMO_STATUS_PERMISSION_DENIED (the account was deleted),
 * MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_remove_key(struct mnemo_user *user, const char *pubkey);

/**
 * Makes one of the user's keys the default: it signs the databases the user creates from
 * now on and comes first among equals when a signing key is chosen. Stored: it holds at
 * the next login.
 *
 * - `pubkey`: `"ed25519:<base64url>"`, one of the user's keys.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
 * malformed key), MNEMO_STATUS_NOT_FOUND (the user has no such key, or another session
 * added it since this one logged in: log in again), MNEMO_STATUS_PERMISSION_DENIED (the
 * account was deleted), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_set_default_key(struct mnemo_user *user, const char *pubkey);

/**
 * The public key the user signs database `db_id` with: the user's key with the highest
 * permission on it (the default key first among equals). Give it to a database's admin to
 * be granted access (`mnemo_db_grant`).
 *
 * - `out_pubkey`: receives `"ed25519:<base64url>"`; owned, free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
 * malformed id), MNEMO_STATUS_NOT_FOUND (the database is not on this instance, or none of
 * the user's keys has a permission on it), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE.
 * Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_get_signing_key(struct mnemo_user *user, const char *db_id, char **out_pubkey);

/**
 * Changes the user's password; the old password stops working at once. The sealed
 * secret it locked is overwritten in place (not kept in any history), so the file holds
 * no copy that the old password, or no password, opens (on PostgreSQL old row versions
 * stay until vacuumed: see docs/security-model.md).
 *
 * - `old_pw`: the current password; NULL for a passwordless user.
 * - `new_pw`: the new password (1 to 1024 bytes); NULL makes the user passwordless (its
 *   keys are then as good as unsealed to anyone holding the file).
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL user, bad UTF-8, a new
 * password out of bounds), MNEMO_STATUS_AUTH_FAILED (`old_pw` is wrong),
 * MNEMO_STATUS_PERMISSION_DENIED (the account was deleted), MNEMO_STATUS_LOGGED_OUT,
 * MNEMO_STATUS_STORAGE, MNEMO_STATUS_BUSY (no turn to derive a password within 60 s: see
 * "password_derivations" in `mnemo_instance_stats`). Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_change_password(struct mnemo_user *user, const char *old_pw, const char *new_pw);

/**
 * Every user of the instance with status and role, as a JSON array sorted by name:
 * [{"username":"alice","status":"active","admin":true}, …] (status "active" or
 * "disabled"). Admin only: the first user created is the instance admin.
 *
 * - `out_json`: receives an owned string; free it with `mnemo_string_free`.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument),
 * MNEMO_STATUS_PERMISSION_DENIED (not the admin), MNEMO_STATUS_LOGGED_OUT,
 * MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_admin_list_users(struct mnemo_user *user, char **out_json);

/**
 * Disables another user's account (admin only): it can no longer log in (a right password
 * then gives MNEMO_STATUS_PERMISSION_DENIED). Sessions already open go on until logout.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, the
 * admin's own name), MNEMO_STATUS_NOT_FOUND (no such user), MNEMO_STATUS_PERMISSION_DENIED
 * (not the admin), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_admin_disable(struct mnemo_user *user, const char *username);

/**
 * Re-enables a disabled account (admin only). Enabling an active account changes nothing.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, a
 * malformed username), MNEMO_STATUS_NOT_FOUND (no such user),
 * MNEMO_STATUS_PERMISSION_DENIED (not the admin), MNEMO_STATUS_LOGGED_OUT,
 * MNEMO_STATUS_STORAGE. Thread-safe.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_admin_enable(struct mnemo_user *user, const char *username);

/**
 * Deletes another user's account (admin only): it can no longer log in and its name can be
 * reused. Its sealed keys and private records (its key and database lists) are erased,
 * and the device's holder proofs by its keys are marked gone (see `mnemo_sync_db`); the
 * databases it created or kept stay.
 *
 * Returns MNEMO_STATUS_OK, MNEMO_STATUS_INVALID_ARGUMENT (NULL argument, bad UTF-8, the
 * admin's own name), MNEMO_STATUS_NOT_FOUND (no such user), MNEMO_STATUS_PERMISSION_DENIED
 * (not the admin), MNEMO_STATUS_LOGGED_OUT, MNEMO_STATUS_STORAGE, MNEMO_STATUS_BUSY (a
 * session of that user changed its account meanwhile: delete it again). Thread-safe.
 * A deletion stopped part-way (an error, a crash) leaves the user either there, as before,
 * or gone (not listed, no login, the name free): never in between. Repeating it, or, for a
 * user gone, the next `mnemo_instance_open` of the storage, erases what it left.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_admin_delete(struct mnemo_user *user, const char *username);

/**
 * Logs the user out: wipes the session's decrypted keys and frees the handle (on success
 * and on failure; do not use `user` afterwards). Databases opened through this session stay
 * readable but refuse writes with MNEMO_STATUS_LOGGED_OUT.
 *
 * Returns MNEMO_STATUS_OK or MNEMO_STATUS_INVALID_ARGUMENT (NULL handle). Not to be called
 * while another thread uses the same handle.
 *
 * `user` is NULL or a live user handle that is not used again.
 */
MNEMO_MUST_USE mnemo_status mnemo_user_logout(struct mnemo_user *user);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* MNEMO_H */
