//! Randomness from the operating system.

use crate::error::{Error, Result};

/// Returns `N` bytes from the operating system's random source.
pub fn bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out)
        .map_err(|e| Error::Internal(format!("operating-system randomness failed: {e}")))?;
    Ok(out)
}

/// `N` random bytes as lower-case hex: for ids that must not collide.
pub fn hex_token<const N: usize>() -> Result<String> {
    Ok(bytes::<N>()?.iter().map(|b| format!("{b:02x}")).collect())
}
