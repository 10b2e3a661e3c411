//! Ordered scans of a store: pages by key through the store's key index, and a cursor that
//! pages by itself.

use std::collections::VecDeque;

use super::{check_key, check_prefix, check_store, Database};
use crate::backend::{cell_bytes, RangeLimit};
use crate::error::Result;

/// How many cells a [`Cursor`] reads from storage at a time, at most.
pub const CURSOR_PAGE: usize = 256;

/// How many bytes of keys and values a [`Cursor`] reads from storage at a time, at most,
/// besides one cell: a page ends once its cells hold this much (4 MiB), so a cursor holds less
/// than this plus one value (at most 16 MiB), not [`CURSOR_PAGE`] values of any size.
pub const CURSOR_PAGE_BYTES: usize = 4 << 20;

/// What one read of a [`Cursor`] takes.
const CURSOR_READ: RangeLimit = RangeLimit {
    cells: CURSOR_PAGE,
    bytes: CURSOR_PAGE_BYTES,
};

impl Database {
    /// The live keys of `store` that start with `prefix` (empty: every key) and sort after
    /// `after` (`None`: from the first), with their JSON text, in bytewise key order (by
    /// UTF-8 bytes), at most `limit` of them (0: no limit). Pass the last key of one page as
    /// `after` to get the next. Costs O(keys returned, plus tombstones passed over), not
    /// O(store). Reserved stores may be read. [`crate::Error::InvalidArgument`] for a bad
    /// store name, a prefix over 4096 bytes or holding NUL, a bad `after` key;
    /// [`crate::Error::PermissionDenied`] once read was revoked; [`crate::Error::Corrupt`] for
    /// a damaged row.
    pub fn scan(
        &self,
        store: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        self.scan_within(store, prefix, after, RangeLimit::cells(limit))
    }

    /// [`Database::scan`] of no more than `limit` allows.
    fn scan_within(
        &self,
        store: &str,
        prefix: &str,
        after: Option<&str>,
        limit: RangeLimit,
    ) -> Result<Vec<(String, String)>> {
        check_scan(store, prefix, after)?;
        self.check_read()?;
        Ok(self
            .core
            .backend()
            .cells_range(&self.core.id(), store, prefix, after, limit, true)?
            .into_iter()
            .filter_map(|(k, c)| c.value.map(|v| (k, v)))
            .collect())
    }

    /// A cursor over what [`Database::scan`] with no limit would return, read
    /// [`CURSOR_PAGE`] cells (or [`CURSOR_PAGE_BYTES`]) at a time. It sees commits made
    /// while it runs from where it has got to (each page is read when needed, after the last
    /// key returned). Fails as `scan` does, for its arguments at once, for reads as the
    /// cursor goes.
    pub fn cursor(&self, store: &str, prefix: &str, after: Option<&str>) -> Result<Cursor> {
        check_scan(store, prefix, after)?;
        self.check_read()?;
        Ok(Cursor {
            db: self.clone(),
            store: store.to_string(),
            prefix: prefix.to_string(),
            after: after.map(str::to_string),
            page: VecDeque::new(),
            done: false,
        })
    }
}

fn check_scan(store: &str, prefix: &str, after: Option<&str>) -> Result<()> {
    check_store(store)?;
    check_prefix(prefix)?;
    after.map_or(Ok(()), check_key)
}

/// The live keys of a store in order, with their JSON text, read a page at a time: made by
/// [`Database::cursor`]. It holds its own handle on the database and at most one page.
#[derive(Debug)]
pub struct Cursor {
    db: Database,
    store: String,
    prefix: String,
    /// The last key read from storage.
    after: Option<String>,
    /// Read but not yet returned.
    page: VecDeque<(String, String)>,
    /// The last page read was not full: nothing follows.
    done: bool,
}

impl Cursor {
    /// The next key and its JSON text, or `None` after the last. A failed read (e.g. read
    /// revoked) leaves the cursor where it was, so the call may be repeated.
    pub fn next_cell(&mut self) -> Result<Option<(String, String)>> {
        // Checked at every step, not only when a page is read: once read is revoked (or the
        // database forgotten), the keys the cursor holds are no more handed out than `get`
        // would give them.
        self.db.check_read()?;
        if self.page.is_empty() && !self.done {
            let page = self.db.scan_within(
                &self.store,
                &self.prefix,
                self.after.as_deref(),
                CURSOR_READ,
            )?;
            let bytes = page.iter().map(|(k, v)| cell_bytes(k, Some(v))).sum();
            self.done = page.len() < CURSOR_PAGE && CURSOR_READ.has_room_after(bytes);
            if let Some((last, _)) = page.last() {
                self.after = Some(last.clone());
            }
            self.page = page.into();
        }
        Ok(self.page.pop_front())
    }
}

impl Iterator for Cursor {
    type Item = Result<(String, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_cell().transpose()
    }
}
