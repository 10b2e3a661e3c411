//! Room for the entries an engine's rounds hold as a client: received from peers and not
//! stored yet (being decoded, checked or stored).
//!
//! One round holds at most a reply being received and a few being checked (bounded in
//! bytes, see `round.rs`), but rounds run at once in any number: one per track, and one per
//! application thread calling `sync_db`. So each request for entries first takes room for
//! its largest reply from the engine's budget ([`super::Limits::max_received_bytes`]),
//! gives back what the reply did not use once it is in, and keeps the rest until its
//! entries are stored. A round finding no room first stores what it holds (so it never
//! waits for room it holds itself), then waits up to the engine's `queue_timeout`.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;

use crate::error::{Error, Result};

/// Room is counted in units of this many bytes.
const UNIT: usize = 1024;

/// An engine's room for received entries.
pub(super) struct ReceivedBudget {
    units: Arc<Semaphore>,
    /// The room in all, in bytes (the limit it was made for).
    bytes: usize,
}

/// Room taken from a [`ReceivedBudget`], given back when dropped.
#[derive(Debug)]
pub(super) struct Room(OwnedSemaphorePermit);

impl ReceivedBudget {
    /// Room for `bytes` in all.
    pub(super) fn new(bytes: usize) -> ReceivedBudget {
        ReceivedBudget {
            // Rounded up, as what is asked for is: room for `bytes` holds a reply of `bytes`.
            units: Arc::new(Semaphore::new(bytes.div_ceil(UNIT))),
            bytes,
        }
    }

    /// The room in all, in bytes.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Room for `bytes`, if it is free now.
    pub(super) fn try_take(&self, bytes: usize) -> Option<Room> {
        let units = units_of(bytes).ok()?;
        self.units
            .clone()
            .try_acquire_many_owned(units)
            .ok()
            .map(Room)
    }

    /// Room for `bytes`, waiting for it up to `wait` (first come, first served);
    /// [`Error::Busy`] after.
    pub(super) fn take(&self, runtime: &Runtime, bytes: usize, wait: Duration) -> Result<Room> {
        let units = units_of(bytes)?;
        let units = self.units.clone().acquire_many_owned(units);
        // The timer is made inside the runtime, which drives it.
        let waited = runtime.block_on(async { timeout(wait, units).await });
        match waited {
            Ok(Ok(permit)) => Ok(Room(permit)),
            Ok(Err(_)) => Err(Error::Internal("the received-entries budget closed".into())),
            Err(_) => Err(Error::Busy(format!(
                "no room for a reply of up to {bytes} bytes within {} ms: other rounds hold \
                 the {} bytes of received entries this engine allows (max_received_bytes)",
                wait.as_millis(),
                self.bytes
            ))),
        }
    }
}

impl Room {
    /// Keeps room for `bytes` only, giving the rest back.
    pub(super) fn keep(&mut self, bytes: usize) {
        let keep = units_of(bytes).map_or(usize::MAX, |units| units as usize);
        let spare = self.0.num_permits().saturating_sub(keep);
        drop(self.0.split(spare));
    }
}

/// The units `bytes` take (at least one).
fn units_of(bytes: usize) -> Result<u32> {
    u32::try_from(bytes.div_ceil(UNIT).max(1))
        .map_err(|_| Error::invalid(format!("{bytes} bytes of room is too much to ask for")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn room_is_taken_given_back_in_part_and_waited_for() {
        let budget = ReceivedBudget::new(10 * UNIT);
        let mut first = budget.try_take(8 * UNIT).unwrap();
        assert!(budget.try_take(3 * UNIT).is_none());
        // What the reply did not use goes back at once.
        first.keep(UNIT + 1);
        let second = budget.try_take(8 * UNIT).unwrap();
        assert!(budget.try_take(1).is_none());
        let err = budget
            .take(&runtime(), UNIT, Duration::from_millis(20))
            .unwrap_err();
        assert!(matches!(err, Error::Busy(_)), "{err}");
        assert!(err.to_string().contains("max_received_bytes"), "{err}");
        drop(second);
        let third = budget
            .take(&runtime(), 8 * UNIT, Duration::from_millis(20))
            .unwrap();
        drop((first, third));
        assert!(budget.try_take(10 * UNIT).is_some());
        // A budget of a size that is not a whole number of units holds a reply of its size.
        let odd = ReceivedBudget::new(22_020_097);
        assert!(odd.try_take(22_020_097).is_some());
    }
}
