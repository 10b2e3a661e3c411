//! Generated keys for [`Database::insert`]: unique, and ordered by the time they were made.
//!
//! A key is 128 bits written as 32 lower-case hex digits (fixed width, so bytewise order is
//! numeric order): the high 48 bits are the Unix time in milliseconds, the low 80 bits are
//! random (as in UUIDv7, without its version and variant bits). Within one process every key
//! is greater than the one before: when the clock stands still or goes back, the next key is
//! the last one plus one. Keys of different processes or machines are unique by their
//! random bits (a collision within one millisecond has odds of about 2^-80 per pair).

use std::sync::Mutex;

use super::{now_ms, Database};
use crate::crypto::random;
use crate::entry::EntryId;
use crate::error::{Error, Result};

/// The last key made in this process (0: none yet).
static LAST: Mutex<u128> = Mutex::new(0);

/// The milliseconds part: 48 bits (enough until the year 10889).
const TIME_BITS: u32 = 48;
/// The random part.
const RANDOM_BITS: u32 = 128 - TIME_BITS;

/// A new key, greater than every key this process made before.
pub(crate) fn new_key() -> Result<String> {
    let bytes = random::bytes::<10>()?;
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let key = next_key(*last, now_ms(), bytes)?;
    *last = key;
    Ok(format!("{key:032x}"))
}

/// The key after `last` made at `now_ms` with `random` bits.
fn next_key(last: u128, now_ms: u64, random: [u8; 10]) -> Result<u128> {
    let mut low = [0u8; 16];
    low[6..].copy_from_slice(&random);
    let time = u128::from(now_ms) & ((1u128 << TIME_BITS) - 1);
    let fresh = (time << RANDOM_BITS) | u128::from_be_bytes(low);
    if fresh > last {
        return Ok(fresh);
    }
    last.checked_add(1)
        .ok_or_else(|| Error::Internal("generated keys are exhausted".into()))
}

impl Database {
    /// Sets a new generated key of `store` to the JSON text `json`, as one commit, and
    /// returns the key with the entry's id. Keys are 32 lower-case hex digits, unique, and
    /// those made by one process sort (bytewise) in the order they were made: see
    /// [`Database::scan`]. Fails as [`Database::set`] does.
    pub fn insert(&self, store: &str, json: &str) -> Result<(String, EntryId)> {
        let key = new_key()?;
        let entry = self.set(store, &key, json)?;
        Ok((key, entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_time_then_random_bits() {
        let key = next_key(0, 0x0123_4567_89ab, [0xff; 10]).unwrap();
        assert_eq!(format!("{key:032x}"), "0123456789abffffffffffffffffffff");
        let key = next_key(0, 1, [0; 10]).unwrap();
        assert_eq!(format!("{key:032x}"), "00000000000100000000000000000000");
    }

    #[test]
    fn keys_grow_when_the_clock_stands_still_or_goes_back() {
        let first = next_key(0, 1_000, [0x80; 10]).unwrap();
        let same_ms_lower_random = next_key(first, 1_000, [0x01; 10]).unwrap();
        assert_eq!(same_ms_lower_random, first + 1);
        let clock_back = next_key(same_ms_lower_random, 999, [0xff; 10]).unwrap();
        assert_eq!(clock_back, first + 2);
        let later = next_key(clock_back, 1_001, [0; 10]).unwrap();
        assert_eq!(later, 1_001u128 << RANDOM_BITS);
        assert!(next_key(u128::MAX, 1, [0; 10]).is_err());
    }

    #[test]
    fn keys_made_in_a_row_are_unique_fixed_width_and_increasing() {
        let keys: Vec<String> = (0..1000).map(|_| new_key().unwrap()).collect();
        assert!(keys.iter().all(|k| k.len() == 32
            && k.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))));
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }
}
