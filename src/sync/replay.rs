//! Freshness of signed requests: a time window and a memory of recent nonces.

use std::collections::HashMap;
use std::sync::Mutex;

use super::wire::WINDOW_MS;
use crate::crypto::PublicKey;
use crate::error::{Error, Result};

/// Most nonces remembered at once (about 12 MiB); past it, expired ones are dropped, and if
/// none has expired requests are refused with `MNEMO_STATUS_BUSY`. Only requests from keys
/// that may read the database are remembered, so strangers cannot fill it.
pub const CAPACITY: usize = 1 << 18;

/// Most nonces remembered for one signing key: a sixteenth of [`CAPACITY`], so that one
/// reader that sends requests as fast as it may (or dates them in the future, to be
/// remembered longer) is refused with `MNEMO_STATUS_BUSY` itself long before the memory is
/// full for everyone else. A key whose requests carry the current time reaches it only
/// above about 54 requests a second, kept up for the 5-minute window.
pub const PER_KEY: usize = CAPACITY / 16;

/// Least time between two sweeps of expired nonces (each walks the whole memory), so that a
/// key at its share cannot make every one of its requests pay for one.
const SWEEP_EVERY_MS: u64 = 1_000;

/// Nonces seen within the window; a second use of one is a replay.
#[derive(Default)]
pub struct ReplayGuard {
    memory: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    /// Each nonce with when it may be forgotten and the key that used it.
    seen: HashMap<[u8; 16], (u64, PublicKey)>,
    /// How many of `seen` each key holds.
    per_key: HashMap<PublicKey, usize>,
    last_sweep_ms: u64,
}

impl Memory {
    /// Forgets expired nonces, unless a sweep ran less than [`SWEEP_EVERY_MS`] ago.
    fn sweep(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.last_sweep_ms) < SWEEP_EVERY_MS {
            return;
        }
        self.last_sweep_ms = now_ms;
        let per_key = &mut self.per_key;
        self.seen.retain(|_, (expiry, key)| {
            let keep = *expiry > now_ms;
            if !keep {
                if let Some(n) = per_key.get_mut(key) {
                    *n -= 1;
                }
            }
            keep
        });
        per_key.retain(|_, n| *n > 0);
    }

    fn held_by(&self, key: &PublicKey) -> usize {
        self.per_key.get(key).copied().unwrap_or(0)
    }
}

impl ReplayGuard {
    /// Accepts a request signed by `key`, made at `timestamp_ms` with `nonce`, once; refuses
    /// stale, future or replayed ones with [`Error::PermissionDenied`], and with
    /// [`Error::Busy`] when the memory, or `key`'s share of it, is full of live nonces.
    pub fn check(
        &self,
        key: &PublicKey,
        timestamp_ms: u64,
        nonce: &[u8; 16],
        now_ms: u64,
    ) -> Result<()> {
        if timestamp_ms.abs_diff(now_ms) > WINDOW_MS {
            return Err(Error::PermissionDenied(
                "request timestamp is outside the accepted window".into(),
            ));
        }
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        if memory.seen.contains_key(nonce) {
            return Err(Error::PermissionDenied("replayed request".into()));
        }
        if memory.seen.len() >= CAPACITY || memory.held_by(key) >= PER_KEY {
            memory.sweep(now_ms);
        }
        if memory.seen.len() >= CAPACITY {
            return Err(Error::Busy("server busy: too many recent requests".into()));
        }
        if memory.held_by(key) >= PER_KEY {
            return Err(Error::Busy(
                "server busy: too many recent requests signed by this key".into(),
            ));
        }
        memory.seen.insert(*nonce, (timestamp_ms + WINDOW_MS, *key));
        *memory.per_key.entry(*key).or_default() += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;

    fn nonce(n: usize) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
        bytes
    }

    #[test]
    fn one_key_at_its_share_is_refused_alone_until_its_nonces_expire() {
        let guard = ReplayGuard::default();
        let greedy = PrivateKey::generate().unwrap().public_key();
        let other = PrivateKey::generate().unwrap().public_key();
        let now = 10 * WINDOW_MS;
        // Dated as far in the future as accepted: remembered the longest.
        for n in 0..PER_KEY {
            guard
                .check(&greedy, now + WINDOW_MS, &nonce(n), now)
                .unwrap();
        }
        let next = nonce(PER_KEY);
        assert!(matches!(
            guard.check(&greedy, now, &next, now),
            Err(Error::Busy(_))
        ));
        guard.check(&other, now, &nonce(PER_KEY + 1), now).unwrap();
        // A replay is still a replay, whoever sends it.
        assert!(matches!(
            guard.check(&other, now, &nonce(0), now),
            Err(Error::PermissionDenied(_))
        ));
        // Once its nonces expire (and a sweep may run), the key is served again.
        let later = now + 2 * WINDOW_MS + 1;
        guard.check(&greedy, later, &next, later).unwrap();
    }

    #[test]
    fn stale_future_and_replayed_requests_are_refused() {
        let guard = ReplayGuard::default();
        let key = PrivateKey::generate().unwrap().public_key();
        let now = 10 * WINDOW_MS;
        for stale in [now - WINDOW_MS - 1, now + WINDOW_MS + 1] {
            assert!(matches!(
                guard.check(&key, stale, &nonce(1), now),
                Err(Error::PermissionDenied(_))
            ));
        }
        guard.check(&key, now, &nonce(1), now).unwrap();
        assert!(matches!(
            guard.check(&key, now, &nonce(1), now + 1),
            Err(Error::PermissionDenied(_))
        ));
    }
}
