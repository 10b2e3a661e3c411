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
    // The URL is not repeated: a connection string of another form (libpq's
    // `host=… password=…`) would put its password in the message.
    let (scheme, rest) = url
        .split_once(':')
        .ok_or_else(|| Error::invalid(format!("a backend URL has a scheme: {FORMS}")))?;
    match scheme {
        "memory" if rest.is_empty() => Ok(BackendUrl::Memory),
        "memory" => Err(Error::invalid(
            "the memory backend URL is exactly 'memory:'",
        )),
        "sqlite" if rest.is_empty() || rest.contains('\0') => {
            Err(Error::invalid("a sqlite URL names a file: sqlite:PATH"))
        }
        // SQLite's own name for a database in memory; mnemo's is `memory:`.
        "sqlite" if rest == ":memory:" => Err(Error::invalid(
            "sqlite::memory: is not a file: for storage in memory, use memory:",
        )),
        "sqlite" => Ok(BackendUrl::Sqlite(PathBuf::from(rest))),
        "postgres" | "postgresql" => Ok(BackendUrl::Postgres(PostgresUrl::parse(url)?)),
        _ if looks_like_a_scheme(scheme) => Err(Error::invalid(format!(
            "unknown backend scheme '{scheme}' (supported: {FORMS})"
        ))),
        _ => Err(Error::invalid(format!(
            "a backend URL begins with its scheme: {FORMS}"
        ))),
    }
}

/// The backend URLs mnemo takes, for messages.
const FORMS: &str = "memory:, sqlite:PATH, postgres://…";

/// Whether `text` could be a URL scheme (a letter, then letters, digits, `+`, `-` or `.`,
/// RFC 3986), short enough to name in a message: a mistyped one is worth showing, anything
/// else before a colon (part of a password, say) is not.
fn looks_like_a_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    text.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
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
            "sqlite::memory:",
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
