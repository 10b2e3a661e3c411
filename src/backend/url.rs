//! Opening a backend from its URL.

use std::sync::Arc;

use super::{Backend, MemoryBackend};
use crate::error::{Error, Result};

/// Opens the backend a URL names. Supported now: `memory:`.
pub fn open(url: &str) -> Result<Arc<dyn Backend>> {
    let (scheme, _rest) = url.split_once(':').ok_or_else(|| {
        Error::invalid(format!("backend URL '{url}' has no scheme (try 'memory:')"))
    })?;
    match scheme {
        "memory" if _rest.is_empty() => Ok(Arc::new(MemoryBackend::new())),
        "memory" => Err(Error::invalid(
            "the memory backend URL is exactly 'memory:'",
        )),
        "sqlite" | "postgres" | "postgresql" => Err(Error::invalid(format!(
            "the '{scheme}' backend is not available in this build yet; use 'memory:'"
        ))),
        _ => Err(Error::invalid(format!(
            "unknown backend scheme '{scheme}' (supported: memory:)"
        ))),
    }
}
