//! Argon2id key derivation from a password.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

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

/// How long a derivation waits for one of the [`derivations_at_once`] to end before it
/// fails with [`Error::Busy`].
pub const DERIVATION_WAIT: Duration = Duration::from_secs(60);

/// How many Argon2id derivations run at once in this process (logins, password changes,
/// user creations with a password): one per core the process may use, at most 16. Each
/// holds its memory (19 MiB by default); more at once would only share the cores and add
/// memory.
pub fn derivations_at_once() -> usize {
    static AT_ONCE: OnceLock<usize> = OnceLock::new();
    *AT_ONCE.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(16)))
}

/// The places taken among the [`derivations_at_once`], and a signal when one is given back.
static RUNNING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());
/// The derivations computing now (counted apart from the places, which bound them).
static COMPUTING: AtomicUsize = AtomicUsize::new(0);

/// How many Argon2id derivations this process is computing now.
pub fn derivations_running() -> usize {
    COMPUTING.load(Ordering::Relaxed)
}

/// A place among the [`derivations_at_once`], held while deriving.
struct Slot;

impl Slot {
    /// Waits for a place, at most [`DERIVATION_WAIT`].
    fn take() -> Result<Slot> {
        let (running, ended) = &RUNNING;
        let deadline = Instant::now() + DERIVATION_WAIT;
        let mut now = running.lock().unwrap_or_else(|p| p.into_inner());
        while *now >= derivations_at_once() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Busy(format!(
                    "{} password derivations ran for {} s without one ending",
                    *now,
                    DERIVATION_WAIT.as_secs()
                )));
            }
            now = ended
                .wait_timeout(now, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *now += 1;
        Ok(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (running, ended) = &RUNNING;
        *running.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        ended.notify_one();
    }
}

/// Derives a 32-byte key from `password` and `salt` with Argon2id, once one of the
/// [`derivations_at_once`] is free (at most [`DERIVATION_WAIT`], then [`Error::Busy`]).
pub fn derive_key(password: &[u8], salt: &[u8], params: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let argon_params = params.to_argon2()?;
    let _slot = Slot::take()?;
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
    COMPUTING.fetch_add(1, Ordering::Relaxed);
    let hashed =
        argon.hash_password_into_with_memory(password, salt, out.as_mut(), &mut memory[..]);
    COMPUTING.fetch_sub(1, Ordering::Relaxed);
    memory.iter_mut().for_each(Zeroize::zeroize);
    let mut idle = BUFFERS.lock().unwrap_or_else(|p| p.into_inner());
    if idle.len() < KEPT_BUFFERS {
        idle.push(memory);
    }
    drop(idle);
    hashed.map_err(|e| Error::Internal(format!("Argon2id failed: {e}")))?;
    Ok(out)
}
