//! Freshness of signed requests: a time window and a memory of recent nonces.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

use super::wire::WINDOW_MS;
use crate::crypto::PublicKey;
use crate::error::{Error, Result};

/// Most nonces remembered at once by default (about 12 MiB; the limit
/// [`super::Limits::max_remembered_requests`]). Past it, expired ones are dropped; if none
/// has expired, a key holding less than its fair share (the capacity over the keys holding
/// nonces) takes the place of the oldest nonce of the key holding the most, and other
/// requests are refused with `MNEMO_STATUS_BUSY`. Only requests from keys that may read the
/// database are remembered, so strangers cannot fill it.
pub const CAPACITY: usize = 1 << 18;

/// Most nonces remembered for one signing key, out of `capacity`: a sixteenth, so that one
/// reader that sends requests as fast as it may (or dates them in the future, to be
/// remembered longer) is refused with `MNEMO_STATUS_BUSY` itself long before the memory is
/// full for everyone else. At the default [`CAPACITY`], a key whose requests carry the
/// current time reaches it only above about 54 requests a second, kept up for the 5-minute
/// window.
pub const fn per_key(capacity: usize) -> usize {
    capacity / 16
}

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
    /// Each nonce with when it may be forgotten.
    seen: HashMap<[u8; 16], u64>,
    /// Each key's nonces in `seen`, oldest first.
    by_key: HashMap<PublicKey, VecDeque<[u8; 16]>>,
    /// `(how many, key)` for every key in `by_key`: the largest holder is the last.
    holdings: BTreeSet<(usize, PublicKey)>,
    last_sweep_ms: u64,
}

impl Memory {
    /// Forgets expired nonces, unless a sweep ran less than [`SWEEP_EVERY_MS`] ago.
    fn sweep(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.last_sweep_ms) < SWEEP_EVERY_MS {
            return;
        }
        self.last_sweep_ms = now_ms;
        self.seen.retain(|_, expiry| *expiry > now_ms);
        let seen = &self.seen;
        self.by_key.retain(|_, nonces| {
            nonces.retain(|n| seen.contains_key(n));
            !nonces.is_empty()
        });
        self.holdings = self.by_key.iter().map(|(k, n)| (n.len(), *k)).collect();
    }

    fn held_by(&self, key: &PublicKey) -> usize {
        self.by_key.get(key).map_or(0, VecDeque::len)
    }

    /// Remembers `nonce` of `key` until `expiry`.
    fn insert(&mut self, key: &PublicKey, nonce: [u8; 16], expiry: u64) {
        let held = self.held_by(key);
        self.holdings.remove(&(held, *key));
        self.holdings.insert((held + 1, *key));
        self.by_key.entry(*key).or_default().push_back(nonce);
        self.seen.insert(nonce, expiry);
    }

    /// Makes room for `key` when the memory (of `capacity` nonces) is full: forgets the
    /// oldest nonce of the key holding the most, if that key holds more than its fair share
    /// and more than `key` would after its request. False when `key` is itself among the
    /// largest holders.
    fn make_room_for(&mut self, key: &PublicKey, capacity: usize) -> bool {
        let Some(&(most, largest)) = self.holdings.last() else {
            return false;
        };
        let keys = self.by_key.len() + usize::from(!self.by_key.contains_key(key));
        if most <= capacity / keys || most <= self.held_by(key) + 1 {
            return false;
        }
        self.holdings.remove(&(most, largest));
        let nonces = self.by_key.get_mut(&largest).expect("a holder has nonces");
        let oldest = nonces.pop_front().expect("a holder has nonces");
        self.seen.remove(&oldest);
        if nonces.is_empty() {
            self.by_key.remove(&largest);
        } else {
            self.holdings.insert((most - 1, largest));
        }
        true
    }
}

impl ReplayGuard {
    /// Accepts a request signed by `key`, made at `timestamp_ms` with `nonce`, once; refuses
    /// stale, future or replayed ones with [`Error::PermissionDenied`], and with
    /// [`Error::Busy`] when `key`'s share of the memory, `capacity` nonces, is full of live
    /// ones. Below a lowered capacity, what is held already is kept until it expires (the
    /// 5-minute window).
    pub fn check(
        &self,
        key: &PublicKey,
        timestamp_ms: u64,
        nonce: &[u8; 16],
        now_ms: u64,
        capacity: usize,
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
        let share = per_key(capacity);
        if memory.seen.len() >= capacity || memory.held_by(key) >= share {
            memory.sweep(now_ms);
        }
        if memory.held_by(key) >= share {
            return Err(Error::Busy(
                "server busy: too many recent requests signed by this key".into(),
            ));
        }
        if memory.seen.len() >= capacity && !memory.make_room_for(key, capacity) {
            return Err(Error::Busy("server busy: too many recent requests".into()));
        }
        memory.insert(key, *nonce, timestamp_ms + WINDOW_MS);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;

    const SHARE: usize = per_key(CAPACITY);

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
        for n in 0..SHARE {
            guard
                .check(&greedy, now + WINDOW_MS, &nonce(n), now, CAPACITY)
                .unwrap();
        }
        let next = nonce(SHARE);
        assert!(matches!(
            guard.check(&greedy, now, &next, now, CAPACITY),
            Err(Error::Busy(_))
        ));
        guard
            .check(&other, now, &nonce(SHARE + 1), now, CAPACITY)
            .unwrap();
        // A replay is still a replay, whoever sends it.
        assert!(matches!(
            guard.check(&other, now, &nonce(0), now, CAPACITY),
            Err(Error::PermissionDenied(_))
        ));
        // Once its nonces expire (and a sweep may run), the key is served again.
        let later = now + 2 * WINDOW_MS + 1;
        guard.check(&greedy, later, &next, later, CAPACITY).unwrap();
    }

    #[test]
    fn keys_that_fill_the_memory_together_make_room_for_another() {
        let guard = ReplayGuard::default();
        let now = 10 * WINDOW_MS;
        let greedy: Vec<PublicKey> = (0..CAPACITY / SHARE)
            .map(|_| PrivateKey::generate().unwrap().public_key())
            .collect();
        let mut n = 0;
        for key in &greedy {
            for _ in 0..SHARE {
                guard
                    .check(key, now + WINDOW_MS, &nonce(n), now, CAPACITY)
                    .unwrap();
                n += 1;
            }
        }
        // The memory is full of live nonces, and the greedy keys are at their share.
        assert!(matches!(
            guard.check(&greedy[0], now, &nonce(n), now, CAPACITY),
            Err(Error::Busy(_))
        ));
        // Another key is served, in place of the oldest nonces of the largest holders...
        let other = PrivateKey::generate().unwrap().public_key();
        for i in 0..100 {
            guard
                .check(&other, now, &nonce(n + 1 + i), now, CAPACITY)
                .unwrap();
        }
        let memory = guard.memory.lock().unwrap();
        assert_eq!(memory.seen.len(), CAPACITY);
        assert_eq!(memory.held_by(&other), 100);
        assert!(greedy.iter().all(|k| memory.held_by(k) >= SHARE - 100));
        drop(memory);
        // ...while the nonces kept are still refused as replays.
        assert!(matches!(
            guard.check(&other, now, &nonce(n - 1), now, CAPACITY),
            Err(Error::PermissionDenied(_))
        ));
    }

    #[test]
    fn a_full_memory_refuses_the_keys_holding_the_most() {
        let guard = ReplayGuard::default();
        let now = 10 * WINDOW_MS;
        let keys: Vec<PublicKey> = (0..CAPACITY / SHARE)
            .map(|_| PrivateKey::generate().unwrap().public_key())
            .collect();
        for (i, key) in keys.iter().enumerate() {
            for j in 0..SHARE - 1 {
                guard
                    .check(key, now, &nonce(i * SHARE + j), now, CAPACITY)
                    .unwrap();
            }
        }
        let last = CAPACITY - 1;
        let latecomer = PrivateKey::generate().unwrap().public_key();
        for i in 0..CAPACITY / SHARE {
            guard
                .check(&latecomer, now, &nonce(last + 1 + i), now, CAPACITY)
                .unwrap();
        }
        // The memory is full again, and this key is among those holding the most: it is
        // not made room for.
        assert!(matches!(
            guard.check(&keys[0], now, &nonce(2 * CAPACITY), now, CAPACITY),
            Err(Error::Busy(_))
        ));
    }

    #[test]
    fn the_capacity_given_bounds_the_memory_and_each_key_share() {
        let guard = ReplayGuard::default();
        let now = 10 * WINDOW_MS;
        let small = 1024;
        let keys: Vec<PublicKey> = (0..17)
            .map(|_| PrivateKey::generate().unwrap().public_key())
            .collect();
        let mut n = 0;
        let mut check = |key: &PublicKey, capacity: usize| {
            n += 1;
            guard.check(key, now, &nonce(n), now, capacity)
        };
        // A sixteenth each: 64 of 1,024.
        for _ in 0..per_key(small) {
            check(&keys[0], small).unwrap();
        }
        assert!(matches!(check(&keys[0], small), Err(Error::Busy(_))));
        // At the default capacity the same key has room again.
        check(&keys[0], CAPACITY).unwrap();
        // Sixteen keys at their share fill the small memory; a seventeenth takes the place
        // of the largest holder's oldest nonce, and the memory stays at its bound.
        for key in &keys[1..16] {
            for _ in 0..per_key(small) {
                check(key, small).unwrap();
            }
        }
        check(&keys[16], small).unwrap();
        assert_eq!(guard.memory.lock().unwrap().seen.len(), small);
    }

    #[test]
    fn stale_future_and_replayed_requests_are_refused() {
        let guard = ReplayGuard::default();
        let key = PrivateKey::generate().unwrap().public_key();
        let now = 10 * WINDOW_MS;
        for stale in [now - WINDOW_MS - 1, now + WINDOW_MS + 1] {
            assert!(matches!(
                guard.check(&key, stale, &nonce(1), now, CAPACITY),
                Err(Error::PermissionDenied(_))
            ));
        }
        guard.check(&key, now, &nonce(1), now, CAPACITY).unwrap();
        assert!(matches!(
            guard.check(&key, now, &nonce(1), now + 1, CAPACITY),
            Err(Error::PermissionDenied(_))
        ));
    }
}
