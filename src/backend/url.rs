//! Backend URLs: parsing (pure, no side effect) and opening.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Backend, MemoryBackend, PostgresBackend, PostgresUrl, SqliteBackend};
use crate::error::{Error, Result};

/// A parsed backend URL.
#[derive(Debug, PartialEq, Eq)]
pub enum BackendUrl {
    /// `memory:`
    Memory,
    /// `sqlite:PATH`
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`: its TLS options checked by mnemo, the rest by the
    /// PostgreSQL driver's parser.
    Postgres(PostgresUrl),
}

/// Parses a backend URL without opening anything: `memory:`, `sqlite:PATH` or
/// `postgres://…` (also `postgresql://…`; see [`PostgresUrl::parse`]).
/// [`Error::InvalidArgument`] otherwise.
pub fn parse(url: &str) -> Result<BackendUrl> {
    let (scheme, rest) = url.split_once(':').ok_or_else(|| {
        Error::invalid(format!(
            "backend URL '{url}' has no scheme (memory:, sqlite:PATH, postgres://…)"
        ))
    })?;
    match scheme {
        "memory" if rest.is_empty() => Ok(BackendUrl::Memory),
        "memory" => Err(Error::invalid(
            "the memory backend URL is exactly 'memory:'",
        )),
        "sqlite" if rest.is_empty() || rest.contains('\0') => {
            Err(Error::invalid("a sqlite URL names a file: sqlite:PATH"))
        }
        "sqlite" => Ok(BackendUrl::Sqlite(PathBuf::from(rest))),
        "postgres" | "postgresql" => Ok(BackendUrl::Postgres(PostgresUrl::parse(url)?)),
        _ => Err(Error::invalid(format!(
            "unknown backend scheme '{scheme}' (supported: memory:, sqlite:PATH, postgres://…)"
        ))),
    }
}

/// Opens the backend a URL names (see [`parse`]).
pub fn open(url: &str) -> Result<Arc<dyn Backend>> {
    Ok(match parse(url)? {
        BackendUrl::Memory => Arc::new(MemoryBackend::new()),
        BackendUrl::Sqlite(path) => Arc::new(SqliteBackend::open(&path)?),
        BackendUrl::Postgres(url) => Arc::new(PostgresBackend::connect_to(&url)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_without_side_effects() {
        assert_eq!(parse("memory:").unwrap(), BackendUrl::Memory);
        assert_eq!(
            parse("sqlite:/x/y.db").unwrap(),
            BackendUrl::Sqlite("/x/y.db".into())
        );
        assert!(matches!(
            parse("postgres://u@h:5432/d").unwrap(),
            BackendUrl::Postgres(_)
        ));
        for bad in [
            "",
            "memory",
            "memory:x",
            "sqlite:",
            "nosuch:x",
            "postgres://u@h:notaport/d",
            "postgres:u@h/d",
            "postgres://u@h/d?sslmode=bogus",
            "postgres://u@h/d?sslmode=verify-full",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
