//! Ed25519 keys and their text form `ed25519:<base64url-no-pad>`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use super::strict::Verifier;
use crate::crypto::random;
use crate::error::{Error, Result};

/// An Ed25519 signature (64 bytes).
pub type Signature = [u8; 64];

/// The 32 bytes of a key's base64url (no padding) form; the point is not checked.
fn decode_key_bytes(b64: &str) -> Result<[u8; 32]> {
    let raw = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| Error::invalid("a public key is base64url without padding"))?;
    raw.try_into()
        .map_err(|_| Error::invalid("a public key is 32 bytes"))
}

/// An Ed25519 public key: identifies devices, users' keys and entry authors.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// What the text form of every public key starts with ([`PublicKey::to_text`]).
    pub const TEXT_PREFIX: &'static str = "ed25519:";

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
        let b64 = text.strip_prefix(Self::TEXT_PREFIX).ok_or_else(|| {
            Error::invalid(format!("a public key starts with '{}'", Self::TEXT_PREFIX))
        })?;
        let bytes = decode_key_bytes(b64)?;
        VerifyingKey::from_bytes(&bytes)
            .map_err(|_| Error::invalid("not a valid Ed25519 public key"))?;
        Ok(PublicKey(bytes))
    }

    /// The key whose text form is `text`, without checking the point again: for text that
    /// [`PublicKey::parse`] accepted before it was stored (settings keys, checked before
    /// their entry was). `None` for anything else than a text form; the decoding takes only
    /// the canonical one (no padding, no stray trailing bits), so a key has one text.
    pub(crate) fn from_checked_text(text: &str) -> Option<Self> {
        decode_key_bytes(text.strip_prefix(Self::TEXT_PREFIX)?)
            .ok()
            .map(PublicKey)
    }

    /// The text form `ed25519:<base64url-no-pad>`.
    pub fn to_text(&self) -> String {
        format!("{}{}", Self::TEXT_PREFIX, URL_SAFE_NO_PAD.encode(self.0))
    }

    /// Checks `signature` over `message` (strict verification: no malleable signatures;
    /// see [`super::strict`]).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<()> {
        Verifier::new(self)?.verify(message, signature)
    }

    /// Checks `signature` over the message that is `parts` one after the other, as
    /// [`PublicKey::verify`] over their concatenation (which need not be made: a large
    /// message is not copied to be checked).
    pub fn verify_parts(&self, parts: &[&[u8]], signature: &Signature) -> Result<()> {
        Verifier::new(self)?.verify_parts(parts, signature)
    }
}

/// Most keys a [`KeyCache`] holds.
pub const KEY_CACHE_SIZE: usize = 8;

/// Public keys already decompressed, for checking many signatures by few authors (the
/// entries of a sync batch): each key's point is computed once, not once per signature.
/// Holds at most [`KEY_CACHE_SIZE`] keys, replacing the oldest past that; keys that are not
/// valid points are not kept. Its results are exactly those of [`PublicKey::verify`].
#[derive(Default)]
pub struct KeyCache {
    keys: Vec<Verifier>,
    oldest: usize,
}

impl KeyCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks `signature` by `key` over the message that is `parts` one after the other, as
    /// [`PublicKey::verify_parts`] does.
    pub fn verify(
        &mut self,
        key: &PublicKey,
        parts: &[&[u8]],
        signature: &Signature,
    ) -> Result<()> {
        let at = match self.keys.iter().position(|k| k.key() == key.as_bytes()) {
            Some(at) => at,
            None => {
                let point = Verifier::new(key)?;
                if self.keys.len() < KEY_CACHE_SIZE {
                    self.keys.push(point);
                    self.keys.len() - 1
                } else {
                    let at = self.oldest;
                    self.keys[at] = point;
                    self.oldest = (at + 1) % KEY_CACHE_SIZE;
                    at
                }
            }
        };
        self.keys[at].verify_parts(parts, signature)
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
    fn checked_text_takes_only_the_canonical_form() {
        let key = PrivateKey::generate().unwrap().public_key();
        let text = key.to_text();
        assert_eq!(PublicKey::from_checked_text(&text), Some(key));
        let b64 = text.strip_prefix(PublicKey::TEXT_PREFIX).unwrap();
        // 32 bytes take 43 characters: the last carries 4 bits of the key and 2 zero bits.
        // With one of those 2 set, a lax decoder would give the same key.
        const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = ALPHABET.find(b64.chars().last().unwrap()).unwrap();
        assert_eq!(last & 0b11, 0);
        let stray = ALPHABET.as_bytes()[last | 1] as char;
        let prefix = PublicKey::TEXT_PREFIX;
        let non_canonical = format!("{prefix}{}{stray}", &b64[..b64.len() - 1]);
        for other in [
            non_canonical,
            b64.to_string(),
            format!("ED25519:{b64}"),
            format!("{text}="),
            format!("{text}A"),
            text[..text.len() - 1].to_string(),
            String::new(),
        ] {
            assert_eq!(PublicKey::from_checked_text(&other), None, "{other}");
        }
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let key = PrivateKey::generate().unwrap();
        let sig = key.sign(b"hello");
        key.public_key().verify(b"hello", &sig).unwrap();
        assert!(key.public_key().verify(b"hellO", &sig).is_err());
    }

    mod crafted {
        //! Signatures built on the curve to hit each rule of strict verification: a batch
        //! or cofactored check would accept some of these, and peers that checked
        //! differently would disagree about which entries exist.
        use super::super::*;
        use crate::crypto::strict::tests::dalek_accepts;
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        use curve25519_dalek::edwards::EdwardsPoint;
        use curve25519_dalek::scalar::Scalar;
        use curve25519_dalek::traits::Identity;
        use sha2::{Digest, Sha512};

        /// The group order l, little-endian.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];

        fn scalar(seed: u8) -> Scalar {
            Scalar::from_bytes_mod_order_wide(&Sha512::digest([seed]).into())
        }

        /// Ed25519's challenge k = SHA-512(R || A || M) mod l.
        fn challenge(r: &EdwardsPoint, a: &EdwardsPoint, message: &[u8]) -> Scalar {
            let mut h = Sha512::new();
            h.update(r.compress().as_bytes());
            h.update(a.compress().as_bytes());
            h.update(message);
            Scalar::from_bytes_mod_order_wide(&h.finalize().into())
        }

        fn signature(r: &EdwardsPoint, s: &[u8; 32]) -> Signature {
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(r.compress().as_bytes());
            sig[32..].copy_from_slice(s);
            sig
        }

        /// Whether the cofactorless equation [s]B = R + [k]A holds.
        fn equation_holds(a: &EdwardsPoint, r: &EdwardsPoint, s: &Scalar, m: &[u8]) -> bool {
            s * ED25519_BASEPOINT_POINT == r + challenge(r, a, m) * a
        }

        /// The outcome by a fresh key, by a cold cache and by the same cache warm: they
        /// must agree with each other and with ed25519-dalek's `verify_strict`, and are
        /// returned.
        fn verdict(a: &EdwardsPoint, message: &[u8], sig: &Signature) -> bool {
            let key = PublicKey::from_bytes(a.compress().to_bytes());
            let fresh = key.verify(message, sig).is_ok();
            assert_eq!(
                fresh,
                dalek_accepts(&key, message, sig),
                "ed25519-dalek differs"
            );
            let mut cache = KeyCache::new();
            let cold = cache.verify(&key, &[message], sig).is_ok();
            let warm = cache.verify(&key, &[message], sig).is_ok();
            assert_eq!(
                (fresh, fresh),
                (cold, warm),
                "a cached key changed the outcome"
            );
            fresh
        }

        /// A message whose challenge is (or is not) a multiple of 8 for `r` and `a`.
        fn message_where(r: &EdwardsPoint, a: &EdwardsPoint, multiple_of_8: bool) -> Vec<u8> {
            (0u32..)
                .map(|i| i.to_be_bytes().to_vec())
                .find(|m| (challenge(r, a, m).as_bytes()[0] % 8 == 0) == multiple_of_8)
                .unwrap()
        }

        #[test]
        fn an_honest_signature_built_here_verifies() {
            let (a_secret, r_secret) = (scalar(1), scalar(2));
            let a = a_secret * ED25519_BASEPOINT_POINT;
            let r = r_secret * ED25519_BASEPOINT_POINT;
            let s = r_secret + challenge(&r, &a, b"m") * a_secret;
            assert!(verdict(&a, b"m", &signature(&r, s.as_bytes())));
        }

        #[test]
        fn a_non_canonical_s_is_refused() {
            let (a_secret, r_secret) = (scalar(1), scalar(2));
            let a = a_secret * ED25519_BASEPOINT_POINT;
            let r = r_secret * ED25519_BASEPOINT_POINT;
            let s = r_secret + challenge(&r, &a, b"m") * a_secret;
            // s + l: the same residue, a different encoding.
            let mut plus_l = [0u8; 32];
            let mut carry = 0u16;
            for i in 0..32 {
                let sum = s.as_bytes()[i] as u16 + L[i] as u16 + carry;
                plus_l[i] = sum as u8;
                carry = sum >> 8;
            }
            assert_eq!(carry, 0);
            assert!(!verdict(&a, b"m", &signature(&r, &plus_l)));
        }

        #[test]
        fn small_order_keys_are_refused_even_when_the_equation_holds() {
            let s = scalar(3);
            let r = s * ED25519_BASEPOINT_POINT;
            let identity = EdwardsPoint::identity();
            assert!(equation_holds(&identity, &r, &s, b"m"));
            assert!(!verdict(&identity, b"m", &signature(&r, s.as_bytes())));
            let torsion = EIGHT_TORSION[1];
            let m = message_where(&r, &torsion, true);
            assert!(equation_holds(&torsion, &r, &s, &m));
            assert!(!verdict(&torsion, &m, &signature(&r, s.as_bytes())));
        }

        #[test]
        fn a_small_order_r_is_refused_even_when_the_equation_holds() {
            let a_secret = scalar(4);
            let a = a_secret * ED25519_BASEPOINT_POINT;
            let r = EdwardsPoint::identity();
            let s = challenge(&r, &a, b"m") * a_secret;
            assert!(equation_holds(&a, &r, &s, b"m"));
            assert!(!verdict(&a, b"m", &signature(&r, s.as_bytes())));
        }

        #[test]
        fn an_r_with_a_torsion_part_is_refused() {
            // What a cofactored (or randomised batch) check may accept: [8]([s]B - R - [k]A) = 0.
            let (a_secret, r_secret) = (scalar(5), scalar(6));
            let a = a_secret * ED25519_BASEPOINT_POINT;
            for torsion in &EIGHT_TORSION[1..] {
                let r = r_secret * ED25519_BASEPOINT_POINT + torsion;
                let s = r_secret + challenge(&r, &a, b"m") * a_secret;
                assert!(!equation_holds(&a, &r, &s, b"m"));
                let off = s * ED25519_BASEPOINT_POINT - r - challenge(&r, &a, b"m") * a;
                assert!(off.is_small_order());
                assert!(!verdict(&a, b"m", &signature(&r, s.as_bytes())));
            }
        }

        #[test]
        fn a_key_with_a_torsion_part_verifies_exactly_when_the_equation_holds() {
            let (a_secret, r_secret) = (scalar(7), scalar(8));
            let a = a_secret * ED25519_BASEPOINT_POINT + EIGHT_TORSION[1];
            let r = r_secret * ED25519_BASEPOINT_POINT;
            for multiple_of_8 in [true, false] {
                let m = message_where(&r, &a, multiple_of_8);
                let s = r_secret + challenge(&r, &a, &m) * a_secret;
                assert_eq!(equation_holds(&a, &r, &s, &m), multiple_of_8);
                assert_eq!(verdict(&a, &m, &signature(&r, s.as_bytes())), multiple_of_8);
            }
        }
    }

    #[test]
    fn a_key_cache_holds_few_keys_and_never_changes_an_outcome() {
        let keys: Vec<PrivateKey> = (0..KEY_CACHE_SIZE + 3)
            .map(|_| PrivateKey::generate().unwrap())
            .collect();
        // Not a point on the curve (y = 2 has no x): refused, and not kept.
        let not_a_point = PublicKey::from_bytes({
            let mut b = [0u8; 32];
            b[0] = 2;
            b
        });
        assert!(VerifyingKey::from_bytes(not_a_point.as_bytes()).is_err());
        let mut cache = KeyCache::new();
        for round in 0..3 {
            for key in &keys {
                let sig = key.sign(b"m");
                assert!(cache.verify(&key.public_key(), &[b"m"], &sig).is_ok());
                assert!(cache.verify(&key.public_key(), &[b"n"], &sig).is_err());
                assert!(
                    cache.verify(&not_a_point, &[b"m"], &sig).is_err(),
                    "round {round}"
                );
                assert!(cache.keys.len() <= KEY_CACHE_SIZE);
            }
        }
        // A key's signature never verifies under another key, cached or not.
        let sig = keys[0].sign(b"m");
        assert!(cache.verify(&keys[1].public_key(), &[b"m"], &sig).is_err());
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
