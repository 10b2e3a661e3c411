//! Randomness from the operating system.

use crate::error::{Error, Result};

/// Returns `N` bytes from the operating system's random source.
pub fn bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    fill(&mut out)?;
    Ok(out)
}

/// Fills `out` from the operating system's random source, where it is (for a secret that
/// must not be copied on its way to where it lives).
pub fn fill(out: &mut [u8]) -> Result<()> {
    getrandom::getrandom(out)
        .map_err(|e| Error::Internal(format!("operating-system randomness failed: {e}")))
}

/// `N` random bytes as lower-case hex: for ids that must not collide.
pub fn hex_token<const N: usize>() -> Result<String> {
    Ok(bytes::<N>()?.iter().map(|b| format!("{b:02x}")).collect())
}
