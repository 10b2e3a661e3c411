//! Argon2id key derivation from a password.

use std::sync::Mutex;

use argon2::{Algorithm, Argon2, Block, Params, Version};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

/// Argon2id cost parameters, recorded with every derived key so they can change later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes over memory.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// The minimum mnemo accepts: OWASP's Argon2id recommendation (19 MiB, 2 passes, 1 lane).
    pub const MINIMUM: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };

    /// The maximum mnemo accepts (1 GiB, 64 passes, 16 lanes): more would make every login
    /// exhaust memory or take minutes, with no way back once recorded.
    pub const MAXIMUM: KdfParams = KdfParams {
        m_kib: 1024 * 1024,
        t: 64,
        p: 16,
    };

    /// Fails unless every parameter is between [`KdfParams::MINIMUM`] and
    /// [`KdfParams::MAXIMUM`] and Argon2 accepts the combination.
    pub fn validate(&self) -> Result<()> {
        let (min, max) = (Self::MINIMUM, Self::MAXIMUM);
        let within = |v: u32, lo: u32, hi: u32| (lo..=hi).contains(&v);
        if !(within(self.m_kib, min.m_kib, max.m_kib)
            && within(self.t, min.t, max.t)
            && within(self.p, min.p, max.p))
        {
            return Err(Error::invalid(format!(
                "Argon2id parameters must be from m={} KiB, t={}, p={} to m={} KiB, t={}, p={}",
                min.m_kib, min.t, min.p, max.m_kib, max.t, max.p
            )));
        }
        self.to_argon2().map(|_| ())
    }

    fn to_argon2(self) -> Result<Params> {
        Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| Error::invalid(format!("Argon2id parameters rejected: {e}")))
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::MINIMUM
    }
}

/// Argon2id work buffers kept for reuse: allocating 19 MiB afresh per login costs thousands
/// of page faults (milliseconds). Buffers are wiped after each use.
static BUFFERS: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());
/// How many idle buffers are kept (each is the Argon2id memory size, 19 MiB by default).
const KEPT_BUFFERS: usize = 1;

/// Derives a 32-byte key from `password` and `salt` with Argon2id.
pub fn derive_key(password: &[u8], salt: &[u8], params: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let argon_params = params.to_argon2()?;
    let blocks = argon_params.block_count();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
    let reused = {
        let mut idle = BUFFERS.lock().unwrap_or_else(|p| p.into_inner());
        idle.iter()
            .position(|b| b.len() == blocks)
            .map(|i| idle.swap_remove(i))
    };
    let mut memory = reused.unwrap_or_else(|| vec![Block::default(); blocks]);
    let mut out = Zeroizing::new([0u8; 32]);
    let hashed =
        argon.hash_password_into_with_memory(password, salt, out.as_mut(), &mut memory[..]);
    memory.iter_mut().for_each(Zeroize::zeroize);
    let mut idle = BUFFERS.lock().unwrap_or_else(|p| p.into_inner());
    if idle.len() < KEPT_BUFFERS {
        idle.push(memory);
    }
    drop(idle);
    hashed.map_err(|e| Error::Internal(format!("Argon2id failed: {e}")))?;
    Ok(out)
}
