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
//!
//! The room is a [`ByteBudget`]; this module adds the blocking wait rounds use and the
//! error that names `max_received_bytes`.

use std::time::Duration;

use tokio::runtime::Runtime;

use super::budget::ByteBudget;
pub(super) use super::budget::Room;
use crate::error::Result;

/// An engine's room for received entries.
pub(super) struct ReceivedBudget(ByteBudget);

impl ReceivedBudget {
    /// Room for `bytes` in all (rounded up: room for `bytes` holds a reply of `bytes`).
    pub(super) fn new(bytes: usize) -> ReceivedBudget {
        ReceivedBudget(ByteBudget::new(bytes))
    }

    /// The room in all, in bytes.
    pub(super) fn bytes(&self) -> usize {
        self.0.bytes()
    }

    /// Room for `bytes`, if it is free now.
    pub(super) fn try_take(&self, bytes: usize) -> Option<Room> {
        self.0.try_take(bytes)
    }

    /// Room for `bytes`, waiting for it on `runtime` up to `wait` (first come, first
    /// served); [`crate::error::Error::Busy`] naming `max_received_bytes` after.
    pub(super) fn take(&self, runtime: &Runtime, bytes: usize, wait: Duration) -> Result<Room> {
        let busy = || {
            format!(
                "no room for a reply of up to {bytes} bytes within {} ms: other rounds hold \
                 the {} bytes of received entries this engine allows (max_received_bytes)",
                wait.as_millis(),
                self.bytes()
            )
        };
        runtime.block_on(self.0.take_within(bytes, wait, busy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    const UNIT: usize = 1024;

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
