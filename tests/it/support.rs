//! Shared helpers: a seeded random generator, quick fixtures, an instrumented backend.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mnemo::backend::{
    Backend, Cell, EntryMeta, EntryWrite, MemoryBackend, Put, RangeLimit, Staged, StateWrite,
    Version,
};
use mnemo::entry::EntryId;
use mnemo::instance::InstanceOptions;
use mnemo::{Database, Error, Instance, User};

/// xorshift64*: small, seeded, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// A fresh in-memory instance.
pub fn instance() -> Instance {
    Instance::open(Arc::new(MemoryBackend::new())).unwrap()
}

/// A fresh instance with a passwordless user logged in.
pub fn logged_in(name: &str) -> (Instance, User) {
    let inst = instance();
    inst.create_user(name, None).unwrap();
    let user = inst.login(name, None).unwrap();
    (inst, user)
}

/// [`logged_in`] on an [`Instrumented`] memory backend, which is returned too.
pub fn watched_logged_in(name: &str) -> (Arc<Instrumented>, Instance, User) {
    let watched = Instrumented::new(Arc::new(MemoryBackend::new()));
    let inst = Instance::open(watched.clone()).unwrap();
    inst.create_user(name, None).unwrap();
    let user = inst.login(name, None).unwrap();
    (watched, inst, user)
}

/// Every live key of `store`, as (key, json) pairs.
pub fn state(db: &Database, store: &str) -> Vec<(String, String)> {
    db.get_all(store).unwrap()
}

/// What `backend` holds of database `db`: its tips and the live keys of `store`. For
/// replicas where no user may open the database (they only relay it).
pub fn stored(
    backend: &dyn Backend,
    db: &EntryId,
    store: &str,
) -> (Vec<EntryId>, Vec<(String, String)>) {
    let tips = backend
        .tips(db)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let cells = backend
        .cells(db, store)
        .unwrap()
        .into_iter()
        .filter_map(|(k, c)| c.value.map(|v| (k, v)))
        .collect();
    (tips, cells)
}

/// Where a conformance test keeps its data: each `open` is a fresh connection to the same
/// storage, as a restarted process would make.
pub enum Storage {
    Memory(Arc<MemoryBackend>),
    Sqlite(TempDir),
    Postgres {
        url: String,
        admin_url: String,
        name: String,
    },
}

impl Storage {
    pub fn name(&self) -> &'static str {
        match self {
            Storage::Memory(_) => "memory",
            Storage::Sqlite(_) => "sqlite",
            Storage::Postgres { .. } => "postgres",
        }
    }

    /// The backend URL (memory storage has none that reopens it).
    pub fn url(&self) -> Option<String> {
        match self {
            Storage::Memory(_) => None,
            Storage::Sqlite(dir) => Some(format!("sqlite:{}", dir.0.join("mnemo.db").display())),
            Storage::Postgres { url, .. } => Some(url.clone()),
        }
    }

    pub fn open(&self) -> Arc<dyn Backend> {
        match self {
            Storage::Memory(m) => m.clone(),
            _ => mnemo::backend::open(&self.url().unwrap()).unwrap(),
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Storage::Postgres {
            admin_url, name, ..
        } = self
        {
            if let Ok(mut admin) = postgres::Client::connect(admin_url, postgres::NoTls) {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

/// Writes `bytes` to the file at `path`, created private (0600) if absent, as mnemo wants its
/// files (a copy put in place of one, a damaged file made for a test).
pub fn write_private(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(bytes).unwrap();
}

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "mnemo-test-{}",
            mnemo::crypto::random::hex_token::<8>().unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty PostgreSQL database on the test server, if `MNEMO_TEST_POSTGRES_URL`
/// names one (the test command starts a server and sets it); otherwise the skip is printed.
pub fn postgres_storage() -> Option<Storage> {
    let Ok(admin_url) = std::env::var("MNEMO_TEST_POSTGRES_URL") else {
        eprintln!("postgres: skipped (set MNEMO_TEST_POSTGRES_URL to run it)");
        return None;
    };
    let name = format!(
        "mnemo_test_{}",
        mnemo::crypto::random::hex_token::<8>().unwrap()
    );
    let mut admin =
        postgres::Client::connect(&admin_url, postgres::NoTls).expect("the test PostgreSQL server");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let base = admin_url.rsplit_once('/').unwrap().0;
    Some(Storage::Postgres {
        url: format!("{base}/{name}"),
        admin_url,
        name,
    })
}

/// Opens an instance on `backend` that discards every user creation left unclaimed, however
/// recent (the default spares those under an hour old: their creator may still be at work).
pub fn open_discarding_abandoned(backend: Arc<dyn Backend>) -> Instance {
    let options = InstanceOptions {
        abandoned_after: Some(Duration::ZERO),
        ..InstanceOptions::default()
    };
    Instance::open_with(backend, options).unwrap()
}

/// One fresh storage of every kind. PostgreSQL is included when the test server is
/// configured; otherwise the skip is printed (the test command never skips it).
pub fn storages() -> Vec<Storage> {
    let mut all = vec![
        Storage::Memory(Arc::new(MemoryBackend::new())),
        Storage::Sqlite(TempDir::new()),
    ];
    all.extend(postgres_storage());
    all
}

/// Sends one raw HTTP/1.1 POST of `body` to `path` at `addr` and returns the status code and
/// the response body (`Connection: close`, so the body ends with the stream).
pub fn http_post(addr: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut request = post_head(addr, path, body.len() as u64).into_bytes();
    request.extend_from_slice(body);
    http_exchange(addr, &request).expect("an HTTP response")
}

/// The head of a POST announcing a body of `length` bytes.
pub fn post_head(addr: &str, path: &str, length: u64) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
    )
}

/// Writes `request` (as far as the server reads it) in a TLS connection made as a fresh
/// device, and returns the response it gets, if any, within 30 s.
pub fn http_exchange(addr: &str, request: &[u8]) -> Option<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut stream = tls_connect(addr)?;
    let _ = stream.write_all(request);
    let _ = stream.flush();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    parse_response(&response)
}

/// A TLS connection to the listener at `addr`, as a fresh device (`None` if the listener
/// refuses it).
pub fn tls_connect(
    addr: &str,
) -> Option<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    let device = std::sync::Arc::new(mnemo::crypto::PrivateKey::generate().unwrap());
    let key = device.public_key();
    let identity = mnemo::sync::TlsIdentity::new(device, key).unwrap();
    let config = identity.client_config(None).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut connection = rustls::ClientConnection::new(config, mnemo::sync::server_name()).unwrap();
    let mut tcp = tcp;
    while connection.is_handshaking() {
        connection.complete_io(&mut tcp).ok()?;
    }
    Some(rustls::StreamOwned::new(connection, tcp))
}

/// Splits a complete HTTP/1.1 response into its status code and body.
pub fn parse_response(response: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response[end + 4..].to_vec()))
}

/// A backend around another that counts the entries read back, tracks the secrets it
/// holds, and can stop writing at a chosen write: from write number `fail_at` on, every
/// write fails (a crash: nothing after it lands), or only that one (an error the caller
/// sees and cleans up after).
pub struct Instrumented {
    inner: Arc<dyn Backend>,
    /// Calls of `get_entry`.
    pub entry_reads: AtomicUsize,
    /// Calls of `entry_meta` (not of `entry_db`, which reads no entry).
    pub entry_meta_reads: AtomicUsize,
    /// Calls of `last_position` and `last_positions`.
    pub position_reads: AtomicUsize,
    /// Calls of `tips` and `tip_metas`.
    tip_reads: AtomicUsize,
    /// Calls of `cell`, and of `cells_at` (see [`Instrumented::cell_reads`]).
    cell_reads: AtomicUsize,
    cells_at_reads: AtomicUsize,
    /// The most bytes of keys and values one `cells_range` returned.
    pub most_range_bytes: AtomicUsize,
    writes: AtomicUsize,
    /// Storage commits asked for: write turns (not one inside another) and entries stored
    /// outside a turn (see [`Instrumented::storage_commits`]).
    commits: AtomicUsize,
    fail_at: AtomicUsize,
    crash: bool,
    /// The next write turn fails as a storage commit that rolled back (see
    /// [`Instrumented::roll_back_next_turn`]); `in_rolled_back_turn` while it runs.
    roll_back_turn: AtomicBool,
    in_rolled_back_turn: AtomicBool,
    /// Every read fails while set; set by the first entry stored after
    /// [`Instrumented::fail_reads_after_next_put`].
    reads_fail: AtomicBool,
    fail_reads_after_put: AtomicBool,
    /// Reads left before every read fails ([`Instrumented::fail_reads_after`]); `usize::MAX`:
    /// no such count.
    reads_until_failure: AtomicUsize,
    /// Run before each of the next entries or secrets stored, with how many more (see
    /// [`Instrumented::before_writes`]).
    before_write: Mutex<(usize, Option<Hook>)>,
    /// Run before each of the next replacements of a database's state, with how many more
    /// (see [`Instrumented::before_state_replacements`]).
    before_replacement: Mutex<(usize, Option<Hook>)>,
    /// Run once before the next database is forgotten ([`Instrumented::before_forget`]).
    before_forget: Mutex<Option<Hook>>,
    /// Run once before the next metadata record is deleted
    /// ([`Instrumented::before_meta_delete`]).
    before_meta_delete: Mutex<Option<Hook>>,
    /// Run once before a secret is read, after as many more reads as the count says
    /// ([`Instrumented::before_secret_read`]).
    before_secret_read: Mutex<(usize, Option<Hook>)>,
    /// Run once after the next metadata record is inserted
    /// ([`Instrumented::after_meta_insert`]).
    after_meta_insert: Mutex<Option<Hook>>,
    /// Holds sync handlers' entry lookups together (see [`Instrumented::gather_sync_lookups`]).
    gathering: Gathering,
    /// The root entries stored (the databases created) through this backend.
    roots: Mutex<Vec<EntryId>>,
    pub secrets: Mutex<BTreeSet<String>>,
}

/// Work a test runs inside a backend call.
type Hook = Box<dyn FnMut() + Send>;

thread_local! {
    /// This thread is inside a write turn of an [`Instrumented`] backend.
    static IN_TURN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Lookups held until enough wait at once: shows how many requests a listener handles side
/// by side.
#[derive(Default)]
struct Gathering {
    state: Mutex<GatheringState>,
    arrived: Condvar,
}

#[derive(Default)]
struct GatheringState {
    /// How many lookups to gather; 0: none is held.
    wanted: usize,
    patience: Duration,
    waiting: usize,
    most: usize,
    /// Set once `wanted` waited at once: from then on, nothing is held.
    gathered: bool,
}

impl Gathering {
    /// Holds a lookup made on a sync thread as [`Instrumented::gather_sync_lookups`] says.
    fn arrive(&self) {
        let on_sync_thread = std::thread::current().name() == Some("mnemo-sync");
        let mut state = self.state.lock().unwrap();
        if !on_sync_thread || state.wanted == 0 || state.gathered {
            return;
        }
        state.waiting += 1;
        state.most = state.most.max(state.waiting);
        if state.waiting >= state.wanted {
            state.gathered = true;
            self.arrived.notify_all();
        }
        let deadline = Instant::now() + state.patience;
        while !state.gathered {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Out of patience: the others go on too.
                state.gathered = true;
                self.arrived.notify_all();
                break;
            }
            state = self.arrived.wait_timeout(state, left).unwrap().0;
        }
        state.waiting -= 1;
    }
}

impl Instrumented {
    /// Passes everything through.
    pub fn new(inner: Arc<dyn Backend>) -> Arc<Instrumented> {
        Instrumented::stopping(inner, usize::MAX, false)
    }

    /// Stops writing at write `fail_at` (counted from 0), for good if `crash`.
    pub fn stopping(inner: Arc<dyn Backend>, fail_at: usize, crash: bool) -> Arc<Instrumented> {
        Arc::new(Instrumented {
            inner,
            entry_reads: AtomicUsize::new(0),
            entry_meta_reads: AtomicUsize::new(0),
            position_reads: AtomicUsize::new(0),
            tip_reads: AtomicUsize::new(0),
            cell_reads: AtomicUsize::new(0),
            cells_at_reads: AtomicUsize::new(0),
            most_range_bytes: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            commits: AtomicUsize::new(0),
            fail_at: AtomicUsize::new(fail_at),
            crash,
            roll_back_turn: AtomicBool::new(false),
            in_rolled_back_turn: AtomicBool::new(false),
            reads_fail: AtomicBool::new(false),
            fail_reads_after_put: AtomicBool::new(false),
            reads_until_failure: AtomicUsize::new(usize::MAX),
            before_write: Mutex::default(),
            before_replacement: Mutex::default(),
            before_forget: Mutex::default(),
            before_meta_delete: Mutex::default(),
            before_secret_read: Mutex::default(),
            after_meta_insert: Mutex::default(),
            gathering: Gathering::default(),
            roots: Mutex::default(),
            secrets: Mutex::default(),
        })
    }

    fn write<T>(&self, write: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        let fail_at = self.fail_at.load(Ordering::SeqCst);
        if n == fail_at || (self.crash && n > fail_at) {
            return Err(Error::Storage("stopped here by the test".into()));
        }
        write()
    }

    fn read<T>(&self, read: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let counted =
            self.reads_until_failure
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    (left != usize::MAX && left > 0).then(|| left - 1)
                });
        if counted == Ok(1) {
            self.reads_fail.store(true, Ordering::SeqCst);
        }
        if self.reads_fail.load(Ordering::SeqCst) {
            return Err(Error::Storage("reads stopped by the test".into()));
        }
        read()
    }

    /// Makes every read fail from the moment the next entry is stored, until
    /// [`Instrumented::resume_reads`].
    pub fn fail_reads_after_next_put(&self) {
        self.fail_reads_after_put.store(true, Ordering::SeqCst);
    }

    /// Makes every read fail once `reads` more have passed (at once for 0), until
    /// [`Instrumented::resume_reads`].
    pub fn fail_reads_after(&self, reads: usize) {
        self.reads_until_failure.store(reads, Ordering::SeqCst);
        self.reads_fail.store(reads == 0, Ordering::SeqCst);
    }

    /// Ends [`Instrumented::fail_reads_after_next_put`] and [`Instrumented::fail_reads_after`].
    pub fn resume_reads(&self) {
        self.reads_until_failure.store(usize::MAX, Ordering::SeqCst);
        self.fail_reads_after_put.store(false, Ordering::SeqCst);
        self.reads_fail.store(false, Ordering::SeqCst);
    }

    /// Runs `work` just before each of the next `times` entries or secrets is stored (after
    /// what its writer read to work out its rows): another process's change landing in
    /// between.
    pub fn before_writes(&self, times: usize, work: impl FnMut() + Send + 'static) {
        *self.before_write.lock().unwrap() = (times, Some(Box::new(work)));
    }

    fn run_before_write(&self) {
        run_counted(&self.before_write);
    }

    /// Runs `work` just before each of the next `times` replacements of a database's state
    /// (after the state was worked out from every entry): another process's change landing
    /// in between, which makes the replacement stale.
    pub fn before_state_replacements(&self, times: usize, work: impl FnMut() + Send + 'static) {
        *self.before_replacement.lock().unwrap() = (times, Some(Box::new(work)));
    }

    /// Runs `work` once, just before the next database's rows are removed (after the
    /// instance decided that nobody keeps it): another process's change landing in between.
    pub fn before_forget(&self, work: impl FnMut() + Send + 'static) {
        *self.before_forget.lock().unwrap() = Some(Box::new(work));
    }

    fn run_before_forget(&self) {
        run_once(&self.before_forget);
    }

    /// Runs `work` once, just before the next metadata record is deleted (after its deleter
    /// read what made it decide to): another process's change landing in between.
    pub fn before_meta_delete(&self, work: impl FnMut() + Send + 'static) {
        *self.before_meta_delete.lock().unwrap() = Some(Box::new(work));
    }

    /// From now on, each entry lookup made on a sync engine's thread (a request handler) waits
    /// until `wanted` of them wait at once, or one has waited `patience`; then they all go
    /// on, and nothing more is held.
    pub fn gather_sync_lookups(&self, wanted: usize, patience: Duration) {
        let mut state = self.gathering.state.lock().unwrap();
        *state = GatheringState {
            wanted,
            patience,
            ..GatheringState::default()
        };
    }

    /// The most sync entry lookups that waited at once since
    /// [`Instrumented::gather_sync_lookups`].
    pub fn most_sync_lookups_at_once(&self) -> usize {
        self.gathering.state.lock().unwrap().most
    }

    /// The databases whose root entry was stored through this backend (created here).
    pub fn roots_stored(&self) -> Vec<EntryId> {
        self.roots.lock().unwrap().clone()
    }

    /// How many single cells (`cell`) and batches of cells (`cells_at`) were read so far.
    pub fn cell_reads(&self) -> (usize, usize) {
        (
            self.cell_reads.load(Ordering::SeqCst),
            self.cells_at_reads.load(Ordering::SeqCst),
        )
    }

    /// How many times the tips were read so far.
    pub fn tip_reads(&self) -> usize {
        self.tip_reads.load(Ordering::SeqCst)
    }

    /// How many writes were attempted so far (the failed one included).
    pub fn writes_tried(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    /// Storage commits asked for so far: a write turn makes one commit of what it stores
    /// (one begun inside another is part of it), and an entry stored outside a turn one.
    pub fn storage_commits(&self) -> usize {
        self.commits.load(Ordering::SeqCst)
    }

    /// Makes the `k`-th write from now (counted from 0) fail, and only that one.
    pub fn fail_write_in(&self, k: usize) -> usize {
        let at = self.writes_tried() + k;
        self.fail_at.store(at, Ordering::SeqCst);
        at
    }

    /// Makes the next write turn (a local commit) end as if its storage commit failed and
    /// rolled back: the entries it stores are not kept, and the turn fails.
    pub fn roll_back_next_turn(&self) {
        self.roll_back_turn.store(true, Ordering::SeqCst);
    }

    /// The user ids whose secrets (`account/<id>`, `key/<id>/<key>`), among those written
    /// through this backend or set in `secrets`, are still stored (whoever deleted the rest).
    pub fn secret_owners(&self) -> BTreeSet<String> {
        let secrets = self.secrets.lock().unwrap().clone();
        secrets
            .iter()
            .filter(|k| self.inner.secret_get(k).unwrap().is_some())
            .filter_map(|k| k.split('/').nth(1).map(str::to_string))
            .collect()
    }
}

/// Takes the hook out of `slot` and runs it, if one was set.
impl Instrumented {
    /// Runs `work` once, just after the next metadata record is inserted (a name claimed,
    /// say), before its writer goes on.
    pub fn after_meta_insert(&self, work: impl FnMut() + Send + 'static) {
        *self.after_meta_insert.lock().unwrap() = Some(Box::new(work));
    }

    /// Runs `work` once, just before a secret is read, after `after` more secret reads
    /// (another session's change landing between a reader's reads).
    pub fn before_secret_read(&self, after: usize, work: impl FnMut() + Send + 'static) {
        *self.before_secret_read.lock().unwrap() = (after, Some(Box::new(work)));
    }

    fn run_before_secret_read(&self) {
        let mut hook = self.before_secret_read.lock().unwrap();
        if hook.0 > 0 {
            hook.0 -= 1;
            return;
        }
        let work = hook.1.take();
        drop(hook);
        if let Some(mut work) = work {
            work();
        }
    }
}

/// Runs the hook in `slot` if it has runs left, and counts this one.
fn run_counted(slot: &Mutex<(usize, Option<Hook>)>) {
    let mut hook = slot.lock().unwrap();
    if hook.0 == 0 {
        return;
    }
    hook.0 -= 1;
    let mut work = hook.1.take().expect("set with a count");
    drop(hook);
    work();
    let mut hook = slot.lock().unwrap();
    if hook.0 > 0 {
        hook.1 = Some(work);
    }
}

fn run_once(slot: &Mutex<Option<Hook>>) {
    let hook = slot.lock().unwrap().take();
    if let Some(mut work) = hook {
        work();
    }
}

impl Backend for Instrumented {
    fn shared_with_other_processes(&self) -> bool {
        self.inner.shared_with_other_processes()
    }
    fn connections_open(&self) -> usize {
        self.inner.connections_open()
    }
    fn lock_wait(&self) -> Option<std::time::Duration> {
        self.inner.lock_wait()
    }

    fn version(&self, db: &EntryId) -> Result<Version, Error> {
        self.read(|| self.inner.version(db))
    }
    fn put_entry(&self, write: &EntryWrite<'_>) -> Result<Option<Put>, Error> {
        if self.in_rolled_back_turn.load(Ordering::SeqCst) {
            // Written into a transaction that will roll back (directly after what the writer
            // read, as a real write would be: the writer must forget it when the turn fails).
            return Ok(Some(Put {
                version: write.expected,
                directly_after: true,
            }));
        }
        self.run_before_write();
        if !IN_TURN.with(std::cell::Cell::get) {
            self.commits.fetch_add(1, Ordering::SeqCst);
        }
        let stored = self.write(|| self.inner.put_entry(write))?;
        if stored.is_some() && write.id == write.meta.db {
            self.roots.lock().unwrap().push(write.id);
        }
        if self.fail_reads_after_put.swap(false, Ordering::SeqCst) {
            self.reads_fail.store(true, Ordering::SeqCst);
        }
        Ok(stored)
    }
    fn hold_for_turn(&self, db: &EntryId) -> Result<(), Error> {
        if self.in_rolled_back_turn.load(Ordering::SeqCst) {
            return Ok(()); // a turn of its own, not the inner backend's
        }
        self.inner.hold_for_turn(db)
    }
    fn write_turn(
        &self,
        announced: bool,
        work: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<Option<Arc<dyn Staged>>, Error> {
        if IN_TURN.with(std::cell::Cell::get) {
            return self.inner.write_turn(announced, work);
        }
        self.commits.fetch_add(1, Ordering::SeqCst);
        IN_TURN.with(|in_turn| in_turn.set(true));
        // Left also if `work` panics.
        struct Leave;
        impl Drop for Leave {
            fn drop(&mut self) {
                IN_TURN.with(|in_turn| in_turn.set(false));
            }
        }
        let _leave = Leave;
        if !self.roll_back_turn.swap(false, Ordering::SeqCst) {
            return self.inner.write_turn(announced, work);
        }
        self.in_rolled_back_turn.store(true, Ordering::SeqCst);
        let worked = work();
        self.in_rolled_back_turn.store(false, Ordering::SeqCst);
        worked.and(Err(Error::Storage(
            "the turn's commit failed (test)".into(),
        )))
    }
    fn get_entry(&self, id: &EntryId) -> Result<Option<Vec<u8>>, Error> {
        self.entry_reads.fetch_add(1, Ordering::Relaxed);
        self.read(|| self.inner.get_entry(id))
    }
    fn entry_db(&self, id: &EntryId) -> Result<Option<EntryId>, Error> {
        self.gathering.arrive();
        self.read(|| self.inner.entry_db(id))
    }
    fn entry_meta(&self, id: &EntryId) -> Result<Option<EntryMeta>, Error> {
        self.entry_meta_reads.fetch_add(1, Ordering::Relaxed);
        self.gathering.arrive();
        self.read(|| self.inner.entry_meta(id))
    }
    fn tips(&self, db: &EntryId) -> Result<Vec<(EntryId, u64)>, Error> {
        self.tip_reads.fetch_add(1, Ordering::SeqCst);
        self.read(|| self.inner.tips(db))
    }
    fn tip_metas(&self, db: &EntryId) -> Result<Vec<(EntryId, EntryMeta)>, Error> {
        self.tip_reads.fetch_add(1, Ordering::SeqCst);
        self.read(|| self.inner.tip_metas(db))
    }
    fn cell(&self, db: &EntryId, store: &str, key: &str) -> Result<Option<Cell>, Error> {
        self.cell_reads.fetch_add(1, Ordering::SeqCst);
        self.read(|| self.inner.cell(db, store, key))
    }
    fn cells_at(&self, db: &EntryId, keys: &[(&str, &str)]) -> Result<Vec<Option<Cell>>, Error> {
        self.cells_at_reads.fetch_add(1, Ordering::SeqCst);
        self.read(|| self.inner.cells_at(db, keys))
    }
    fn cells(&self, db: &EntryId, store: &str) -> Result<Vec<(String, Cell)>, Error> {
        self.read(|| self.inner.cells(db, store))
    }
    fn cells_range(
        &self,
        db: &EntryId,
        store: &str,
        prefix: &str,
        after: Option<&str>,
        limit: RangeLimit,
        live_only: bool,
    ) -> Result<Vec<(String, Cell)>, Error> {
        let found = self.read(|| {
            self.inner
                .cells_range(db, store, prefix, after, limit, live_only)
        })?;
        let bytes = (found.iter())
            .map(|(k, c)| k.len() + c.value.as_ref().map_or(0, String::len))
            .sum();
        self.most_range_bytes.fetch_max(bytes, Ordering::SeqCst);
        Ok(found)
    }
    fn stores(&self, db: &EntryId) -> Result<Vec<String>, Error> {
        self.read(|| self.inner.stores(db))
    }
    fn discarded(&self, db: &EntryId) -> Result<Vec<EntryId>, Error> {
        self.read(|| self.inner.discarded(db))
    }
    fn replace_state(
        &self,
        db: &EntryId,
        state: &StateWrite<'_>,
    ) -> Result<Option<Version>, Error> {
        run_counted(&self.before_replacement);
        self.write(|| self.inner.replace_state(db, state))
    }
    fn entries_after(
        &self,
        db: &EntryId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, EntryId)>, Error> {
        self.read(|| self.inner.entries_after(db, after, limit))
    }
    fn last_position(&self, db: &EntryId) -> Result<u64, Error> {
        self.position_reads.fetch_add(1, Ordering::Relaxed);
        self.read(|| self.inner.last_position(db))
    }
    fn entry_count(&self, db: &EntryId) -> Result<u64, Error> {
        self.position_reads.fetch_add(1, Ordering::Relaxed);
        self.read(|| self.inner.entry_count(db))
    }
    fn last_positions(&self, dbs: &[EntryId]) -> Result<Vec<u64>, Error> {
        self.position_reads.fetch_add(1, Ordering::Relaxed);
        self.read(|| self.inner.last_positions(dbs))
    }
    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.read(|| self.inner.meta_get(key))
    }
    fn meta_insert_new(&self, key: &str, value: &[u8]) -> Result<bool, Error> {
        let inserted = self.write(|| self.inner.meta_insert_new(key, value))?;
        run_once(&self.after_meta_insert);
        Ok(inserted)
    }
    fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.write(|| self.inner.meta_put(key, value))
    }
    fn meta_delete(&self, key: &str, only_if: Option<&[u8]>) -> Result<bool, Error> {
        run_once(&self.before_meta_delete);
        self.write(|| self.inner.meta_delete(key, only_if))
    }
    fn meta_delete_prefix(&self, prefix: &str) -> Result<u64, Error> {
        self.write(|| self.inner.meta_delete_prefix(prefix))
    }
    fn secret_get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.run_before_secret_read();
        self.read(|| self.inner.secret_get(key))
    }
    fn secret_put(&self, key: &str, value: &[u8], replacing: Option<&[u8]>) -> Result<bool, Error> {
        self.run_before_write();
        let put = self.write(|| self.inner.secret_put(key, value, replacing))?;
        if put {
            self.secrets.lock().unwrap().insert(key.to_string());
        }
        Ok(put)
    }
    fn secret_names(&self, prefix: &str) -> Result<Vec<String>, Error> {
        self.read(|| self.inner.secret_names(prefix))
    }
    fn secret_delete(&self, key: &str) -> Result<bool, Error> {
        let deleted = self.write(|| self.inner.secret_delete(key))?;
        self.secrets.lock().unwrap().remove(key);
        Ok(deleted)
    }
    fn forget_database(&self, db: &EntryId, decided_at: Version) -> Result<bool, Error> {
        self.run_before_forget();
        self.write(|| self.inner.forget_database(db, decided_at))
    }
}

/// Ends every other connection to `admin`'s database (mnemo's, say), as a server restart or
/// an administrator would, and waits until their server processes are gone (termination is
/// a signal), at most 10 s. Returns how many there were.
pub fn end_other_connections(admin: &mut postgres::Client) -> i64 {
    let mut others = |what: &str| -> i64 {
        let query = format!(
            "SELECT {what} FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()"
        );
        admin.query_one(&query, &[]).unwrap().get(0)
    };
    let ended = others("count(pg_terminate_backend(pid))");
    let deadline = Instant::now() + Duration::from_secs(10);
    while others("count(*)") > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    ended
}
