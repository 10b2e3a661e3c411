//! The file a `sqlite:` path names, made private and checked before SQLite opens it.
//!
//! The file holds the device's secret key and the accounts' sealed keys, so it must be
//! readable by its owner alone, and SQLite must open exactly the file checked:
//!
//! - The path is made absolute: SQLite reads a name starting with `file:` as a URI (its
//!   parameters obeyed, the file it names created with SQLite's default mode), and the pool's
//!   read connections, opened later, must not follow the process's working directory.
//! - The file is created owner-only (0600) if absent. A symbolic link is followed, so the
//!   file it names (a dangling link's target included) is the one created private.
//! - Anything but a regular file is refused before it is opened (a device opened for writing
//!   may act on it), as is a file with more than one name: SQLite keeps the WAL beside the
//!   name it was given, so two processes opening one file by two names would each write a
//!   WAL of their own into it, and corrupt it.
//! - A file that other users may read or write, or that another user owns, is refused: it
//!   would give them the device's key (or let them change it). So is a WAL, shared-memory
//!   or rollback journal file beside it (`-wal`, `-shm`, `-journal`) that is not as private:
//!   SQLite opens one it finds as it is, and the WAL holds the file's newest pages.
//!
//! What the checks cannot see: a file given another name, other permissions or another
//! owner while it is open, or put in the place of the one checked (by whoever may write
//! its directory) between the check and SQLite's open of it, or a read connection's later.
//! The owner is known on Linux (from `/proc/self/status`); elsewhere only the permissions
//! are checked.

use std::fs::{Metadata, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Permission bits for anyone but the owner.
const OTHERS: u32 = 0o077;

/// The absolute path of the mnemo file `path` names, created owner-only if absent, once it
/// is known to be one SQLite may open (see the module's documentation).
pub(super) fn prepare(path: &Path) -> Result<PathBuf> {
    let path = std::path::absolute(path)
        .map_err(|e| Error::Storage(format!("{}: {e}", path.display())))?;
    let shown = path.display();
    // Following links: the file it would open. Checked before opening it, as devices act on
    // being opened.
    if let Ok(found) = std::fs::metadata(&path) {
        refuse_unusual(&path, &found)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::Storage(format!("cannot open {shown} to read and write: {e}")))?;
    let opened = file
        .metadata()
        .map_err(|e| Error::Storage(format!("{shown}: {e}")))?;
    // Again on what was opened: it may have been replaced since it was looked at.
    refuse_unusual(&path, &opened)?;
    let owner = own_uid();
    refuse_shared(&path, &opened, owner)?;
    // SQLite names these after the file's real path, links resolved.
    let real = std::fs::canonicalize(&path).map_err(|e| Error::Storage(format!("{shown}: {e}")))?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut beside = real.clone().into_os_string();
        beside.push(suffix);
        let beside = PathBuf::from(beside);
        if let Ok(found) = std::fs::symlink_metadata(&beside) {
            if found.file_type().is_symlink() {
                return Err(Error::Storage(format!(
                    "{} is a symbolic link: SQLite would not open it",
                    beside.display()
                )));
            }
            refuse_unusual(&beside, &found)?;
            refuse_shared(&beside, &found, owner)?;
        }
    }
    Ok(path)
}

/// Refuses a file other users may read or write, or that another user than `owner` (this
/// process's, when known) owns.
fn refuse_shared(path: &Path, found: &Metadata, owner: Option<u32>) -> Result<()> {
    let shown = path.display();
    let mode = found.permissions().mode() & 0o777;
    if mode & OTHERS != 0 {
        return Err(Error::Storage(format!(
            "{shown} may be read or written by other users (mode {mode:04o}): it holds this \
             device's secret key; make it private to its owner (chmod 600) to open it"
        )));
    }
    if owner.is_some_and(|owner| owner != found.uid()) {
        return Err(Error::Storage(format!(
            "{shown} is owned by another user (uid {}), who can read it: it holds this \
             device's secret key; open only files of this process's user",
            found.uid()
        )));
    }
    Ok(())
}

/// The user id this process's files are made with (its file-system user id), on Linux.
fn own_uid() -> Option<u32> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    // "Uid:" then the real, effective, saved and file-system ids.
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let ids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    ids.split_whitespace().nth(3)?.parse().ok()
}

/// Refuses what is not a regular file with one name.
fn refuse_unusual(path: &Path, found: &Metadata) -> Result<()> {
    let shown = path.display();
    if found.is_dir() {
        return Err(Error::Storage(format!("{shown} is a directory")));
    }
    if !found.is_file() {
        return Err(Error::Storage(format!(
            "{shown} is not a regular file (a device, a pipe or a socket)"
        )));
    }
    if found.nlink() > 1 {
        return Err(Error::Storage(format!(
            "{shown} has {} names (hard links): SQLite keeps its WAL beside the name it \
             opens, so processes opening it by different names would corrupt it; keep one",
            found.nlink()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mnemo-file-{}-{}",
            std::process::id(),
            crate::crypto::random::hex_token::<4>().unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_file_is_private_whatever_names_it() {
        let dir = dir();
        let plain = dir.join("plain.db");
        assert_eq!(prepare(&plain).unwrap(), plain);
        assert_eq!(mode(&plain), 0o600);
        // A dangling link: its target is created, private.
        let target = dir.join("target.db");
        let link = dir.join("link.db");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        prepare(&link).unwrap();
        assert_eq!(mode(&target), 0o600);
        // A name SQLite would read as a URI is a plain name, made absolute.
        let cwd = std::env::current_dir().unwrap();
        let uri_like = Path::new("file:x.db?mode=ro");
        assert_eq!(prepare(&dir.join(uri_like)).unwrap(), dir.join(uri_like));
        let relative = prepare(Path::new("mnemo-file-test-relative.db")).unwrap();
        assert_eq!(relative, cwd.join("mnemo-file-test-relative.db"));
        std::fs::remove_file(relative).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn shared_linked_and_unusual_files_are_refused() {
        let dir = dir();
        let shared = dir.join("shared.db");
        std::fs::write(&shared, b"").unwrap();
        for loose in [0o644, 0o640, 0o606, 0o660] {
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(loose)).unwrap();
            let err = prepare(&shared).unwrap_err().to_string();
            assert!(
                err.contains("other users") && err.contains("chmod 600"),
                "{err}"
            );
        }
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o600)).unwrap();
        prepare(&shared).unwrap();
        let second_name = dir.join("second.db");
        std::fs::hard_link(&shared, &second_name).unwrap();
        for name in [&shared, &second_name] {
            let err = prepare(name).unwrap_err().to_string();
            assert!(err.contains("2 names (hard links)"), "{err}");
        }
        let err = prepare(&dir).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        std::fs::remove_file(&second_name).unwrap();
        // A WAL planted beside it, as readable: refused, named.
        let wal = dir.join("shared.db-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = prepare(&shared).unwrap_err().to_string();
        assert!(
            err.contains("shared.db-wal") && err.contains("other users"),
            "{err}"
        );
        std::fs::remove_file(&wal).unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere"), &wal).unwrap();
        let err = prepare(&shared).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        std::fs::remove_file(&wal).unwrap();
        prepare(&shared).unwrap();
        // Another user's file, private to them (only root can make one here).
        if std::os::unix::fs::chown(&shared, Some(65534), None).is_ok() && own_uid() == Some(0) {
            let err = prepare(&shared).unwrap_err().to_string();
            assert!(err.contains("owned by another user (uid 65534)"), "{err}");
        }
        let err = prepare(Path::new("/dev/null")).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
