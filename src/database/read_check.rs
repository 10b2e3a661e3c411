//! How long a database handle trusts its last finding that one of its keys may read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a handle trusts its last check that one of its keys may read the database,
/// while this process saw no change of the database's settings. Changes made here or
/// received here are seen at once; a revocation another process stores on a shared
/// storage (a `sqlite:` file, a PostgreSQL database) stops this handle's reads within this
/// time, when the next read looks at the settings again.
pub const READ_RECHECK_AFTER: Duration = Duration::from_secs(1);

/// When a handle last found reading allowed: at which settings generation, and when.
#[derive(Debug, Default)]
pub(super) struct ReadCheck {
    /// The settings generation of the last check that passed (0: none passed yet).
    generation: AtomicU64,
    /// [`monotonic_ms`] of that check.
    at_ms: AtomicU64,
}

impl ReadCheck {
    /// Whether a check that passed at `generation` is recent enough to trust now.
    pub(super) fn still_holds(&self, generation: u64) -> bool {
        self.generation.load(Ordering::Acquire) == generation
            && monotonic_ms().saturating_sub(self.at_ms.load(Ordering::Acquire))
                < READ_RECHECK_AFTER.as_millis() as u64
    }

    /// Records a check that passed at `generation`, now.
    pub(super) fn passed(&self, generation: u64) {
        self.at_ms.store(monotonic_ms(), Ordering::Release);
        self.generation.store(generation, Ordering::Release);
    }
}

/// Milliseconds since this process first asked (a clock that never goes back).
fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_holds_for_its_generation_only() {
        let check = ReadCheck::default();
        assert!(!check.still_holds(1), "no check passed yet");
        check.passed(1);
        assert!(check.still_holds(1));
        assert!(!check.still_holds(2), "the settings changed since");
    }

    #[test]
    fn a_check_expires() {
        let check = ReadCheck::default();
        check.passed(1);
        check.at_ms.store(0, Ordering::Release);
        std::thread::sleep(READ_RECHECK_AFTER);
        assert!(!check.still_holds(1));
    }
}
