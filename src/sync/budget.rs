//! A budget of bytes that many tasks share: each takes room before it holds anything and
//! gives it back when done, so what they hold together stays bounded.
//!
//! Room is counted in units of [`UNIT`] bytes on a tokio semaphore: any amount asked for
//! takes at least one unit, and a budget holds a request of its own size (both rounded
//! up). Those waiting for room get it first come, first served. Used for a listener's
//! request bodies and replies (`net/listener.rs`) and for the entries a client's rounds
//! receive (`received.rs`); each says in its own words why it is busy.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;

use crate::error::{Error, Result};

/// Room is counted in units of this many bytes.
const UNIT: usize = 1024;

/// Room for a number of bytes in all, shared by whoever takes from it.
pub(in crate::sync) struct ByteBudget {
    units: Arc<Semaphore>,
    /// The room in all, in bytes (the limit it was made for).
    bytes: usize,
}

/// Room taken from a [`ByteBudget`], given back when dropped.
#[derive(Debug)]
pub(in crate::sync) struct Room(OwnedSemaphorePermit);

impl ByteBudget {
    /// Room for `bytes` in all.
    pub(in crate::sync) fn new(bytes: usize) -> ByteBudget {
        ByteBudget {
            // Rounded up, as what is asked for is: room for `bytes` holds a request of `bytes`.
            units: Arc::new(Semaphore::new(bytes.div_ceil(UNIT))),
            bytes,
        }
    }

    /// The room in all, in bytes.
    pub(in crate::sync) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Room for `bytes`, if it is free now.
    pub(in crate::sync) fn try_take(&self, bytes: usize) -> Option<Room> {
        let units = units_of(bytes).ok()?;
        self.units
            .clone()
            .try_acquire_many_owned(units)
            .ok()
            .map(Room)
    }

    /// Room for `bytes`, waiting for it up to `wait` (first come, first served); after
    /// that, [`Error::Busy`] with the message `busy` returns (each user of a budget says
    /// which limit was reached). Awaited inside the tokio runtime, which drives the timer.
    pub(in crate::sync) async fn take_within(
        &self,
        bytes: usize,
        wait: Duration,
        busy: impl FnOnce() -> String,
    ) -> Result<Room> {
        let units = self.units.clone().acquire_many_owned(units_of(bytes)?);
        match timeout(wait, units).await {
            Ok(Ok(permit)) => Ok(Room(permit)),
            Ok(Err(_)) => Err(Error::Internal("a byte budget was closed".into())),
            Err(_) => Err(Error::Busy(busy())),
        }
    }
}

impl Room {
    /// Keeps room for `bytes` only, giving the rest back.
    pub(in crate::sync) fn keep(&mut self, bytes: usize) {
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
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn room_is_rounded_up_taken_given_back_in_part_and_waited_for_in_turn() {
        let busy = || "no room".to_string();
        // A budget of a size that is not a whole number of units holds a request of its size.
        let odd = ByteBudget::new(22_020_097);
        assert!(odd.try_take(22_020_097).is_some());
        let budget = ByteBudget::new(10 * UNIT);
        assert_eq!(budget.bytes(), 10 * UNIT);
        let mut first = budget.try_take(8 * UNIT).unwrap();
        assert!(budget.try_take(3 * UNIT).is_none());
        // What is not used goes back at once (a byte over a unit keeps two).
        first.keep(UNIT + 1);
        let second = budget.try_take(8 * UNIT).unwrap();
        // Asking for nothing still takes a unit.
        assert!(budget.try_take(0).is_none());
        let err = budget
            .take_within(UNIT, Duration::from_millis(20), busy)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Busy(ref m) if m == "no room"), "{err}");
        // In turn: a first waiter asking for more is served before a later one asking for
        // less, even when the room freed meanwhile would do for the later one.
        let wait = Duration::from_secs(10);
        let large = budget.take_within(8 * UNIT, wait, busy);
        let small = budget.take_within(UNIT, wait, busy);
        tokio::pin!(large, small);
        assert!(large.as_mut().now_or_never().is_none());
        assert!(small.as_mut().now_or_never().is_none());
        drop(first);
        assert!(
            small.as_mut().now_or_never().is_none(),
            "served out of turn"
        );
        drop(second);
        let both = (large.await.unwrap(), small.await.unwrap());
        assert!(budget.try_take(2 * UNIT).is_none());
        drop(both);
        assert!(budget.try_take(10 * UNIT).is_some());
    }
}
