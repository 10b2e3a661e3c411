//! Freshness of signed requests: a time window and a memory of recent nonces.

use std::collections::HashMap;
use std::sync::Mutex;

use super::wire::WINDOW_MS;
use crate::error::{Error, Result};
/// Most nonces remembered at once (about 12 MiB); past it, expired ones are dropped, and if
/// none has expired requests are refused with `MNEMO_STATUS_BUSY`. Only requests from keys
/// that may read the database are remembered, so strangers cannot fill it.
pub const CAPACITY: usize = 1 << 18;

/// Nonces seen within the window; a second use of one is a replay.
#[derive(Default)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<[u8; 16], u64>>,
}

impl ReplayGuard {
    /// Accepts a request made at `timestamp_ms` with `nonce` once; refuses stale, future or
    /// replayed ones with [`Error::PermissionDenied`].
    pub fn check(&self, timestamp_ms: u64, nonce: &[u8; 16], now_ms: u64) -> Result<()> {
        if timestamp_ms.abs_diff(now_ms) > WINDOW_MS {
            return Err(Error::PermissionDenied(
                "request timestamp is outside the accepted window".into(),
            ));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= CAPACITY {
            seen.retain(|_, expiry| *expiry > now_ms);
            if seen.len() >= CAPACITY {
                return Err(Error::Busy("server busy: too many recent requests".into()));
            }
        }
        if seen.insert(*nonce, timestamp_ms + WINDOW_MS).is_some() {
            return Err(Error::PermissionDenied("replayed request".into()));
        }
        Ok(())
    }
}
