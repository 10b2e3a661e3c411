//! Cryptographic building blocks: keys, randomness, password derivation and sealing.

pub mod keys;
pub mod password;
pub mod random;
pub mod seal;

pub use keys::{PrivateKey, PublicKey, Signature};
pub use password::KdfParams;
