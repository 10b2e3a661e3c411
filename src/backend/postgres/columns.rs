//! Typed reads of the columns of the rows the server returns: a value of another type, or
//! a NULL where mnemo's schema has none (a table changed outside mnemo), is
//! [`Error::Corrupt`] naming the column, never a panic.

use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::error::{quoted, shown_safely, Error, Result};

/// [`Row`]'s columns, read as mnemo's schema types them.
pub(super) trait Columns {
    /// Column `i` as a `T`.
    fn col<'a, T: FromSql<'a>>(&'a self, i: usize) -> Result<T>;
}

impl Columns for Row {
    fn col<'a, T: FromSql<'a>>(&'a self, i: usize) -> Result<T> {
        self.try_get(i).map_err(|e| {
            let column = self.columns().get(i).map_or("?", |c| c.name());
            Error::Corrupt(format!(
                "postgres: stored column {} does not hold what mnemo wrote: {}",
                quoted(column),
                shown_safely(&e.to_string())
            ))
        })
    }
}
