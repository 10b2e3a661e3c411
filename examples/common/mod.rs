//! What the SQLite benchmark examples share: their arguments and their clean-up.

use std::path::{Path, PathBuf};

/// The arguments `[DIR] [COUNT]`: the directory to put files in (default the system temp
/// dir) and how many operations of each kind (default `full`, or `quick` with
/// `MNEMO_BENCH_QUICK=1`).
pub fn dir_and_count(full: usize, quick: usize) -> (PathBuf, usize) {
    let quick_run = std::env::var("MNEMO_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut args = std::env::args_os().skip(1);
    let dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let count = args
        .next()
        .map(|n| n.to_string_lossy().parse().expect("the count is a number"))
        .unwrap_or(if quick_run { quick } else { full });
    (dir, count)
}

/// Removes a SQLite file and its WAL and shared-memory files, if there.
pub fn remove_sqlite_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
}
