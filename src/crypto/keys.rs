//! Ed25519 keys and their text form `ed25519:<base64url-no-pad>`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::crypto::random;
use crate::error::{Error, Result};

const TEXT_PREFIX: &str = "ed25519:";

/// An Ed25519 signature (64 bytes).
pub type Signature = [u8; 64];

/// An Ed25519 public key: identifies devices, users' keys and entry authors.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Wraps raw key bytes; the point is checked when a signature is verified.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the text form `ed25519:<base64url-no-pad>`.
    pub fn parse(text: &str) -> Result<Self> {
        let b64 = text
            .strip_prefix(TEXT_PREFIX)
            .ok_or_else(|| Error::invalid(format!("a public key starts with '{TEXT_PREFIX}'")))?;
        let raw = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| Error::invalid("a public key is base64url without padding"))?;
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|_| Error::invalid("a public key is 32 bytes"))?;
        VerifyingKey::from_bytes(&bytes)
            .map_err(|_| Error::invalid("not a valid Ed25519 public key"))?;
        Ok(PublicKey(bytes))
    }

    /// The text form `ed25519:<base64url-no-pad>`.
    pub fn to_text(&self) -> String {
        format!("{TEXT_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.0))
    }

    /// Checks `signature` over `message` (strict verification: no malleable signatures).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<()> {
        let key = VerifyingKey::from_bytes(&self.0)
            .map_err(|_| Error::Corrupt("author key is not a valid Ed25519 point".into()))?;
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        key.verify_strict(message, &sig)
            .map_err(|_| Error::Corrupt("signature does not verify".into()))
    }
}

crate::json::serde_as_text!(PublicKey);

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_text())
    }
}

/// An Ed25519 private key. Wiped from memory when dropped; `Debug` shows only the public half.
pub struct PrivateKey(SigningKey);

impl PrivateKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Result<Self> {
        let seed = Zeroizing::new(random::bytes::<32>()?);
        Ok(PrivateKey(SigningKey::from_bytes(&seed)))
    }

    /// Rebuilds a key from its 32-byte seed.
    pub fn from_seed(seed: &[u8]) -> Result<Self> {
        let seed: &[u8; 32] = seed
            .try_into()
            .map_err(|_| Error::Corrupt("a private key seed is 32 bytes".into()))?;
        Ok(PrivateKey(SigningKey::from_bytes(seed)))
    }

    /// The 32-byte seed, in memory that is wiped when dropped.
    pub fn to_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.0.sign(message).to_bytes()
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey(public: {})", self.public_key().to_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_rejects_garbage() {
        let key = PrivateKey::generate().unwrap();
        let text = key.public_key().to_text();
        assert!(text.starts_with("ed25519:"));
        assert_eq!(PublicKey::parse(&text).unwrap(), key.public_key());
        assert!(PublicKey::parse("ed25519:abc").is_err());
        assert!(PublicKey::parse(&text[1..]).is_err());
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let key = PrivateKey::generate().unwrap();
        let sig = key.sign(b"hello");
        key.public_key().verify(b"hello", &sig).unwrap();
        assert!(key.public_key().verify(b"hellO", &sig).is_err());
    }

    #[test]
    fn debug_does_not_print_the_seed() {
        let key = PrivateKey::generate().unwrap();
        let seed = key.to_seed();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&URL_SAFE_NO_PAD.encode(*seed)));
        assert!(shown.contains(&key.public_key().to_text()));
    }
}
