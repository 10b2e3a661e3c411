//! Opening a backend from its URL.

use std::path::Path;
use std::sync::Arc;

use super::{Backend, MemoryBackend, PostgresBackend, SqliteBackend};
use crate::error::{Error, Result};

/// Opens the backend a URL names: `memory:`, `sqlite:PATH` or `postgres://…` (also
/// `postgresql://…`).
pub fn open(url: &str) -> Result<Arc<dyn Backend>> {
    let (scheme, rest) = url.split_once(':').ok_or_else(|| {
        Error::invalid(format!(
            "backend URL '{url}' has no scheme (memory:, sqlite:PATH, postgres://…)"
        ))
    })?;
    match scheme {
        "memory" if rest.is_empty() => Ok(Arc::new(MemoryBackend::new())),
        "memory" => Err(Error::invalid(
            "the memory backend URL is exactly 'memory:'",
        )),
        "sqlite" if rest.is_empty() => {
            Err(Error::invalid("a sqlite URL names a file: sqlite:PATH"))
        }
        "sqlite" => Ok(Arc::new(SqliteBackend::open(Path::new(rest))?)),
        "postgres" | "postgresql" => Ok(Arc::new(PostgresBackend::connect(url)?)),
        _ => Err(Error::invalid(format!(
            "unknown backend scheme '{scheme}' (supported: memory:, sqlite:PATH, postgres://…)"
        ))),
    }
}
