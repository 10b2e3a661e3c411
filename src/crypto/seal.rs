//! AES-256-GCM sealing of secrets at rest, bound to their owner by associated data.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::crypto::random;
use crate::error::{Error, Result};

const NONCE_LEN: usize = 12;

/// Encrypts `plaintext` under `key`; the output is `nonce || ciphertext || tag`.
pub fn seal(key: &[u8; 32], plaintext: &[u8], associated: &[u8]) -> Result<Vec<u8>> {
    let cipher = Aes256Gcm::new(key.into());
    let nonce = random::bytes::<NONCE_LEN>()?;
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: associated,
            },
        )
        .map_err(|_| Error::Internal("AES-GCM encryption failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Decrypts what [`seal`] produced. A wrong key, wrong associated data or tampering all fail
/// the same way, with [`Error::AuthFailed`].
pub fn open(key: &[u8; 32], sealed: &[u8], associated: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN {
        return Err(Error::Corrupt("sealed secret is truncated".into()));
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: associated,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| Error::AuthFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_associated_data() {
        let key = [7u8; 32];
        let sealed = seal(&key, b"secret", b"user:1").unwrap();
        assert_eq!(
            open(&key, &sealed, b"user:1").unwrap().as_slice(),
            b"secret"
        );
        assert!(open(&key, &sealed, b"user:2").is_err());
        assert!(open(&[8u8; 32], &sealed, b"user:1").is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(open(&key, &tampered, b"user:1").is_err());
    }
}
