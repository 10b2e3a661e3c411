//! The `mnemo` VFS: SQLite's own `unix` VFS, except that the WAL's writes are gathered.
//!
//! SQLite appends each WAL frame with two `pwrite` calls (its 24-byte header, then the
//! page), so a durable commit of nine pages makes eighteen system calls before its `fsync`,
//! and a group commit of eight entries about 150. This shim passes every file to the `unix`
//! VFS untouched (the database file, its shared memory and locks included) except the WAL,
//! whose writes that follow one another in the file it keeps in one buffer and passes on
//! as one write. Measured on this project's 2-core host: a durable single-key commit about
//! 20% faster (BENCHMARKS.md).
//!
//! Why SQLite's guarantees hold: gathered bytes are passed on, in the order they were
//! written, before anything that could observe the file: a sync (so a commit is durable
//! when SQLite's sync returns, as before), a read, a truncation, a size query, a file
//! control, a close, and a write that does not follow the gathered ones. They are also
//! passed on as soon as a commit frame is complete (its header carries the database size),
//! even when its page does not fit the buffer, and a commit frame's header written alone
//! (SQLite rewriting checksums in place) at once: both before SQLite publishes the commit
//! to other connections through the shared memory, so a connection without syncs
//! (`synchronous` below `FULL`) never publishes frames that are not in the file. (mnemo's
//! connections commit with `FULL`, whose sync passes everything on in any case.) A failed
//! write is reported by the call that passes it on; SQLite then fails the commit, as it
//! would have had the write itself failed.
//!
//! Bounds: one buffer per open WAL (one per connection that writes), passed on before it
//! would hold more than [`MAX_GATHERED`] bytes; its capacity is kept for the next commit.
//!
//! This is one of the two places with `unsafe` code (the other is `src/ffi/`): SQLite calls
//! these functions through C function pointers with raw file structures.

use std::ffi::{c_int, c_void, CStr};
use std::mem::size_of;
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

use crate::error::{Error, Result};

/// The name connections open the shim with.
const NAME: &CStr = c"mnemo";
/// The VFS the shim passes files to.
const BASE: &CStr = c"unix";
/// Gathered bytes passed on in one write, at most: the largest write the `unix` VFS makes
/// in one call (128 KiB less one byte; it masks larger sizes to 17 bits). SQLite's own
/// writes are at most one page (64 KiB), so each fits.
const MAX_GATHERED: usize = 0x1_ffff;
/// Size of the WAL file's header; frames follow it.
const WAL_HEADER: i64 = 32;
/// Size of a WAL frame's header, written by SQLite in a call of its own.
const FRAME_HEADER: usize = 24;

/// Registers the shim (once per process) and returns the name to open connections with.
pub(super) fn name() -> Result<&'static CStr> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    match REGISTERED.get_or_init(register) {
        Ok(()) => Ok(NAME),
        Err(why) => Err(Error::Storage(why.clone())),
    }
}

/// The shim's VFS structure: SQLite sees `vfs`; `base` is where files are opened.
#[repr(C)]
struct Shim {
    vfs: ffi::sqlite3_vfs,
    base: *mut ffi::sqlite3_vfs,
}

/// An open WAL as SQLite sees it; the `unix` VFS's own file structure follows it in the
/// same allocation (SQLite allocates the shim's `szOsFile` bytes).
#[repr(C)]
struct WalFile {
    /// Its methods are [`WAL_METHODS`] once the file is open.
    file: ffi::sqlite3_file,
    /// The writes not yet passed on; owned (a `Box`) from open to close.
    gathered: *mut Gathered,
}

// The base file that follows a `WalFile` must be aligned as SQLite aligns allocations.
const _: () = assert!(size_of::<WalFile>() % 8 == 0);

/// Contiguous writes of a WAL not yet passed on.
struct Gathered {
    /// File offset of `bytes[0]`.
    start: i64,
    /// The bytes, in file order; at most [`MAX_GATHERED`].
    bytes: Vec<u8>,
    /// Where the page of the commit frame whose header came last goes: the write there
    /// completes the commit, and is passed on with what is gathered.
    commit_page_at: Option<i64>,
}

/// Registers the shim with SQLite: a copy of the `unix` VFS with its own `xOpen` and room
/// for a [`WalFile`] before the base file.
fn register() -> std::result::Result<(), String> {
    // SAFETY: sqlite3_vfs_find takes a NUL-terminated name and initialises SQLite if needed;
    // a VFS it returns stays valid (the `unix` VFS is never unregistered by mnemo).
    let base = unsafe { ffi::sqlite3_vfs_find(BASE.as_ptr()) };
    if base.is_null() {
        return Err("sqlite: the unix VFS is not available".into());
    }
    // SAFETY: `base` points to a live sqlite3_vfs; copying it copies plain data and function
    // pointers, which the `unix` VFS shares between its own variants in the same way.
    let mut vfs = unsafe { ptr::read(base) };
    vfs.szOsFile += size_of::<WalFile>() as c_int;
    vfs.zName = NAME.as_ptr();
    vfs.pNext = ptr::null_mut();
    vfs.xOpen = Some(open);
    // The shim lives as long as the process: SQLite keeps a pointer to it once registered.
    let shim = Box::leak(Box::new(Shim { vfs, base }));
    // SAFETY: `shim.vfs` is a complete VFS that outlives every connection.
    let rc = unsafe { ffi::sqlite3_vfs_register(&mut shim.vfs, 0) };
    if rc != ffi::SQLITE_OK {
        return Err(format!("sqlite: cannot register the mnemo VFS (code {rc})"));
    }
    Ok(())
}

/// `xOpen`: a WAL gets [`WAL_METHODS`] around the base file; any other file is the base
/// VFS's own, opened in place.
unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes the VFS it was registered with: the `vfs` field of a `Shim`.
    let base = unsafe { (*vfs.cast::<Shim>()).base };
    // SAFETY: `base` is the live `unix` VFS.
    let Some(base_open) = (unsafe { (*base).xOpen }) else {
        return ffi::SQLITE_CANTOPEN;
    };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // SAFETY: `file` has room for the base's file structure (our szOsFile is larger).
        return unsafe { base_open(base, name, file, flags, out_flags) };
    }
    let inner = base_file(file);
    // SAFETY: `inner` lies inside SQLite's allocation of szOsFile bytes, with room for the
    // base's structure after the `WalFile`.
    let rc = unsafe { base_open(base, name, inner, flags, out_flags) };
    let wal = file.cast::<WalFile>();
    if rc != ffi::SQLITE_OK {
        // SAFETY: as above; a base file that set its methods must be closed even on failure.
        unsafe {
            if !(*inner).pMethods.is_null() {
                if let Some(close) = (*(*inner).pMethods).xClose {
                    close(inner);
                }
            }
            (*wal).file.pMethods = ptr::null();
        }
        return rc;
    }
    let gathered = Box::new(Gathered {
        start: 0,
        bytes: Vec::new(),
        commit_page_at: None,
    });
    // SAFETY: `wal` is SQLite's allocation for this file, ours to fill in.
    unsafe {
        (*wal).gathered = Box::into_raw(gathered);
        (*wal).file.pMethods = &WAL_METHODS;
    }
    ffi::SQLITE_OK
}

/// Version 1 methods: SQLite uses neither shared memory nor memory mapping on a WAL.
static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// The base VFS's file structure, which follows the `WalFile` at `file`.
fn base_file(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    file.cast::<u8>().wrapping_add(size_of::<WalFile>()).cast()
}

/// Calls the base file's method `$method` with `$file`'s base structure and the arguments;
/// a base file without that method is an I/O error.
macro_rules! base_call {
    ($file:expr, $method:ident $(, $arg:expr)*) => {{
        let inner = base_file($file);
        // SAFETY: the base file was opened by `open` and stays open until `close`.
        match unsafe { (*(*inner).pMethods).$method } {
            // SAFETY: arguments are SQLite's own, passed through unchanged.
            Some(method) => unsafe { method(inner $(, $arg)*) },
            None => ffi::SQLITE_IOERR,
        }
    }};
}

/// Passes on what is gathered for `$file`, then calls the base file's `$method` as
/// [`base_call!`] does; a failed pass-on is returned instead.
macro_rules! pass_on_then {
    ($file:expr, $method:ident $(, $arg:expr)*) => {
        // SAFETY: SQLite calls methods of one file one at a time.
        match unsafe { pass_on_all($file) } {
            ffi::SQLITE_OK => base_call!($file, $method $(, $arg)*),
            failed => failed,
        }
    };
}

/// The writes gathered for the WAL at `file`.
///
/// # Safety
/// `file` is an open WAL of this shim, used by one connection (SQLite serialises calls on
/// a file), and no other reference to its `Gathered` is live.
unsafe fn gathered<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Gathered {
    // SAFETY: per the contract above; `open` set `gathered` before any other method runs.
    unsafe { &mut *(*file.cast::<WalFile>()).gathered }
}

/// Writes what is gathered for `file` to the base file, in one call; the buffer is empty
/// afterwards whatever the outcome.
fn pass_on(file: *mut ffi::sqlite3_file, gathered: &mut Gathered) -> c_int {
    if gathered.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    // At most MAX_GATHERED, or one write of SQLite's (a page): fits a c_int.
    let amount = gathered.bytes.len() as c_int;
    let data = gathered.bytes.as_ptr().cast::<c_void>();
    let rc = base_call!(file, xWrite, data, amount, gathered.start);
    gathered.bytes.clear();
    rc
}

/// Passes on what is gathered for `file` (see [`gathered`] for the contract).
unsafe fn pass_on_all(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarded contract.
    pass_on(file, unsafe { gathered(file) })
}

/// True for the header of a commit frame: a frame header whose "database size" is set.
fn is_commit_frame_header(data: &[u8], offset: i64) -> bool {
    offset >= WAL_HEADER && data.len() == FRAME_HEADER && data[4..8] != [0; 4]
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let Ok(len) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: SQLite calls methods of one file one at a time.
    let gathered = unsafe { gathered(file) };
    // Decided before anything is passed on below (a full buffer passes on without it).
    let completes_commit = gathered.commit_page_at.take() == Some(offset);
    let end = gathered.start + gathered.bytes.len() as i64;
    let full = gathered.bytes.len() + len > MAX_GATHERED;
    if !gathered.bytes.is_empty() && (end != offset || full) {
        let rc = pass_on(file, gathered);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    // SAFETY: SQLite passes `amount` readable bytes at `data`.
    let data = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
    if gathered.bytes.is_empty() {
        gathered.start = offset;
    }
    gathered.bytes.extend_from_slice(data);
    if completes_commit {
        return pass_on(file, gathered);
    }
    if is_commit_frame_header(data, offset) {
        gathered.commit_page_at = Some(offset + FRAME_HEADER as i64);
        // Alone in the buffer, it may be a header rewritten in place (after overwriting
        // frames, SQLite rewrites the checksums of its transaction's frames, each read
        // first), whose page never follows before the commit is published: passed on now.
        if gathered.bytes.len() == FRAME_HEADER {
            return pass_on(file, gathered);
        }
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let wal = file.cast::<WalFile>();
    // SAFETY: `open` made `gathered` with Box::into_raw; close runs once, last.
    let mut gathered = unsafe { Box::from_raw((*wal).gathered) };
    // SAFETY: the file is ours until SQLite clears its methods after this call.
    unsafe { (*wal).gathered = ptr::null_mut() };
    let passed = pass_on(file, &mut gathered);
    let closed = base_call!(file, xClose);
    if passed != ffi::SQLITE_OK {
        passed
    } else {
        closed
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    data: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    pass_on_then!(file, xRead, data, amount, offset)
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    pass_on_then!(file, xTruncate, size)
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    pass_on_then!(file, xSync, flags)
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    pass_on_then!(file, xFileSize, size)
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    pass_on_then!(file, xFileControl, op, arg)
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    base_call!(file, xLock, level)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    base_call!(file, xUnlock, level)
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    base_call!(file, xCheckReservedLock, out)
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    base_call!(file, xSectorSize)
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    base_call!(file, xDeviceCharacteristics)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rusqlite::{params, Connection, OpenFlags};

    use super::super::tests::{remove, temp_file};
    use super::*;

    /// A connection to `path` on `vfs`, in WAL mode with the given `synchronous`, with the
    /// table `t (k, v)` the tests write (created by the first connection).
    fn open_on(path: &Path, vfs: &CStr, synchronous: &str) -> Connection {
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "synchronous", synchronous)
            .unwrap();
        conn.execute_batch("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB)")
            .unwrap();
        conn
    }

    /// Write system calls (`write`, `pwrite`, ...) this thread has made: Linux's per-thread
    /// I/O accounting.
    fn writes_so_far() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io")
            .expect("/proc/thread-self/io (per-thread I/O accounting) is needed");
        io.lines()
            .find_map(|line| line.strip_prefix("syscw:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("a syscw line")
    }

    /// Write system calls of one durable commit of a 40 KiB value on `vfs` (the table's
    /// creation in `open_on` wrote the WAL's header before it).
    fn writes_of_one_commit(vfs: &CStr) -> u64 {
        let path = temp_file();
        let conn = open_on(&path, vfs, "FULL");
        let before = writes_so_far();
        conn.execute("INSERT INTO t (v) VALUES (zeroblob(40960))", [])
            .unwrap();
        let writes = writes_so_far() - before;
        drop(conn);
        remove(&path);
        writes
    }

    #[test]
    fn a_commit_of_many_pages_is_one_write() {
        let unix = writes_of_one_commit(BASE);
        let gathered = writes_of_one_commit(name().unwrap());
        // Eleven frames or more (ten overflow pages, the table's leaf), two writes each.
        assert!(unix >= 22, "the unix VFS made {unix} writes");
        assert_eq!(gathered, 1, "the unix VFS made {unix} writes");
    }

    /// The WAL a connection has open, as SQLite's file structure.
    fn wal_of(conn: &Connection) -> *mut ffi::sqlite3_file {
        let mut wal: *mut ffi::sqlite3_file = ptr::null_mut();
        // SAFETY: the handle is the live connection's; this file control writes one pointer.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_JOURNAL_POINTER,
                (&mut wal as *mut *mut ffi::sqlite3_file).cast(),
            )
        };
        assert_eq!(rc, ffi::SQLITE_OK);
        assert!(!wal.is_null());
        wal
    }

    /// Gathered bytes are in the file before a read, a size query, a truncation or a sync: the
    /// shim's methods called directly on a live WAL, past its last frame.
    #[test]
    fn reads_sizes_and_truncations_see_the_gathered_writes() {
        let path = temp_file();
        let conn = open_on(&path, name().unwrap(), "FULL");
        let wal = wal_of(&conn);
        // SAFETY: the WAL stays open while `conn` is, and only this thread uses `conn`.
        unsafe {
            assert!(ptr::eq((*wal).pMethods, &WAL_METHODS));
            let size = |expected: i64| {
                let mut size = 0;
                assert_eq!(file_size(wal, &mut size), ffi::SQLITE_OK);
                assert_eq!(size, expected);
            };
            let read_back = |len: usize, offset: i64| {
                let mut bytes = vec![0u8; len];
                let rc = read(wal, bytes.as_mut_ptr().cast(), len as c_int, offset);
                assert_eq!(rc, ffi::SQLITE_OK);
                bytes
            };
            let mut end = 0;
            assert_eq!(file_size(wal, &mut end), ffi::SQLITE_OK);
            assert_eq!(
                write(wal, b"gathered".as_ptr().cast(), 8, end),
                ffi::SQLITE_OK
            );
            assert_eq!(read_back(8, end), b"gathered");
            assert_eq!(
                write(wal, b"more".as_ptr().cast(), 4, end + 8),
                ffi::SQLITE_OK
            );
            size(end + 12);
            assert_eq!(
                write(wal, b"last".as_ptr().cast(), 4, end + 12),
                ffi::SQLITE_OK
            );
            assert_eq!(truncate(wal, end + 10), ffi::SQLITE_OK);
            size(end + 10);
            assert_eq!(read_back(10, end), b"gatheredmo");
            // A sync: the bytes are in the file for anyone who reads it.
            assert_eq!(
                write(wal, b"synced".as_ptr().cast(), 6, end + 10),
                ffi::SQLITE_OK
            );
            assert_eq!(sync(wal, ffi::SQLITE_SYNC_NORMAL), ffi::SQLITE_OK);
            let file = std::fs::read(format!("{}-wal", path.display())).unwrap();
            assert_eq!(&file[end as usize..], b"gatheredmosynced");
            assert_eq!(truncate(wal, end), ffi::SQLITE_OK);
        }
        drop(conn);
        remove(&path);
    }

    /// A frame header as SQLite writes it: page number, then the database size in pages,
    /// which only a commit frame sets; the rest (salts, checksums) does not matter here.
    fn frame_header(commit: bool) -> [u8; FRAME_HEADER] {
        let mut header = [0u8; FRAME_HEADER];
        header[3] = 2;
        header[7] = u8::from(commit) * 9;
        header
    }

    /// A commit frame is in the file as soon as its page is written, even when that page
    /// does not fit the buffer (which is passed on first), and a commit frame's header
    /// written alone (a header rewritten in place) is in the file at once: no sync follows
    /// either under `synchronous` below `FULL`. The shim's methods called directly on a
    /// live WAL, past its last frame.
    #[test]
    fn commit_frames_are_in_the_file_without_a_sync() {
        let path = temp_file();
        let conn = open_on(&path, name().unwrap(), "OFF");
        let wal = wal_of(&conn);
        let on_disk = || std::fs::read(format!("{}-wal", path.display())).unwrap();
        let page = vec![0x5a; 4096];
        // SAFETY: the WAL stays open while `conn` is, and only this thread uses `conn`.
        unsafe {
            let write_at = |bytes: &[u8], offset: i64| {
                let rc = write(wal, bytes.as_ptr().cast(), bytes.len() as c_int, offset);
                assert_eq!(rc, ffi::SQLITE_OK);
            };
            let mut end = 0;
            assert_eq!(file_size(wal, &mut end), ffi::SQLITE_OK);
            // Frames filling the buffer but for the commit frame's header.
            let filler = vec![0x11; MAX_GATHERED - FRAME_HEADER - 100];
            write_at(&filler, end);
            let header_at = end + filler.len() as i64;
            write_at(&frame_header(true), header_at);
            write_at(&page, header_at + FRAME_HEADER as i64);
            let file = on_disk();
            assert_eq!(
                file.len() as i64,
                header_at + (FRAME_HEADER + page.len()) as i64
            );
            assert_eq!(&file[file.len() - page.len()..], &page[..]);
            // A commit frame's header alone, over the one above.
            let mut rewritten = frame_header(true);
            rewritten[20] = 0xcc;
            write_at(&rewritten, header_at);
            let at = header_at as usize;
            assert_eq!(&on_disk()[at..at + FRAME_HEADER], &rewritten[..]);
            assert_eq!(truncate(wal, end), ffi::SQLITE_OK);
        }
        drop(conn);
        remove(&path);
    }

    /// Row `k`'s value in `round`: 3,000 bytes that differ between rows and rounds.
    fn value(k: usize, round: usize) -> Vec<u8> {
        (0..3000)
            .map(|i| (i * 7 + k * 13 + round * 101) as u8)
            .collect()
    }

    /// Reads every row of `t` through `conn` and compares it with `expected`.
    fn check_rows(conn: &Connection, expected: &[Vec<u8>]) {
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let mut stmt = conn.prepare("SELECT k, v FROM t ORDER BY k").unwrap();
        let rows: Vec<(usize, Vec<u8>)> = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)? as usize, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows.len(), expected.len());
        for (k, v) in rows {
            assert!(v == expected[k], "row {k} differs");
        }
    }

    /// A transaction far larger than the page cache (SQLite writes pages to the WAL before
    /// the commit, reads them back and overwrites them in place, then rewrites the frames'
    /// checksums) and than the buffer: another connection, reading the file through the
    /// unix VFS, finds every row.
    #[test]
    fn a_transaction_larger_than_the_cache_and_the_buffer_reads_back_intact() {
        let path = temp_file();
        let writer = open_on(&path, name().unwrap(), "FULL");
        writer.execute_batch("PRAGMA cache_size=16").unwrap();
        let mut expected: Vec<Vec<u8>> = (0..400).map(|k| value(k, 0)).collect();
        writer.execute_batch("BEGIN").unwrap();
        for (k, v) in expected.iter().enumerate() {
            writer
                .execute("INSERT INTO t (k, v) VALUES (?1, ?2)", params![k as i64, v])
                .unwrap();
        }
        for k in (0..400).step_by(3) {
            expected[k] = value(k, 1);
            writer
                .execute(
                    "UPDATE t SET v = ?2 WHERE k = ?1",
                    params![k as i64, expected[k]],
                )
                .unwrap();
        }
        writer.execute_batch("COMMIT").unwrap();
        check_rows(&writer, &expected);
        let reader = open_on(&path, BASE, "FULL");
        check_rows(&reader, &expected);
        drop((reader, writer));
        remove(&path);
    }

    /// Without syncs (`synchronous=OFF`) nothing passes the buffer on at commit but the
    /// commit frame itself: each commit must be in the file before SQLite publishes it, or
    /// the reader below would read pages that are not there. Transactions of 1 to 45 rows
    /// (about as many frames) put the commit frame at every place in the buffer, including
    /// where its page no longer fits.
    #[test]
    fn a_commit_without_a_sync_is_in_the_file_before_other_connections_see_it() {
        let path = temp_file();
        let writer = open_on(&path, name().unwrap(), "OFF");
        let reader = open_on(&path, BASE, "FULL");
        let mut expected = Vec::new();
        for rows in 1..=45 {
            writer.execute_batch("BEGIN").unwrap();
            for _ in 0..rows {
                let k = expected.len();
                expected.push(value(k, 0));
                writer
                    .execute(
                        "INSERT INTO t (k, v) VALUES (?1, ?2)",
                        params![k as i64, expected[k]],
                    )
                    .unwrap();
            }
            writer.execute_batch("COMMIT").unwrap();
            check_rows(&reader, &expected);
        }
        drop((reader, writer));
        remove(&path);
    }
}
