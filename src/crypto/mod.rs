//! Cryptographic building blocks: keys, randomness, password derivation and sealing.

pub mod keyring;
pub mod keys;
pub mod password;
pub mod random;
pub mod seal;
pub mod strict;

pub use keyring::KeyRing;
pub use keys::{KeyCache, PrivateKey, PublicKey, Signature};
pub use password::KdfParams;
