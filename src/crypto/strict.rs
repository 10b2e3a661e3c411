//! Strict Ed25519 signature verification, computed from the curve directly.
//!
//! The rules are exactly those of ed25519-dalek's `verify_strict` (the tests compare the two
//! on crafted and mutated signatures): `s` is canonical (below the group order), the key
//! `A` and `R` are not of small order, and `R` is byte for byte the encoding of
//! `[s]B - [k]A` with `k = SHA-512(R || A || M) mod l`. Peers must agree on which entries
//! exist, so no looser (cofactored or batched) check is ever used.
//!
//! Why not call `verify_strict`: it decompresses `R` to test its order, about a tenth of a
//! verification. When the bytes of `R` equal the encoding of the point `[s]B - [k]A` just
//! computed, `R` decompresses to that very point (an encoding made by compression is
//! canonical), so testing the computed point's order is the same test, without the
//! decompression; when they differ, both refuse.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};

use super::keys::{PublicKey, Signature};
use crate::error::{Error, Result};

/// A public key ready to check signatures: its point, negated, decompressed once.
#[derive(Clone)]
pub struct Verifier {
    key: [u8; 32],
    minus_a: EdwardsPoint,
    small_order: bool,
}

fn refused() -> Error {
    Error::Corrupt("signature does not verify".into())
}

impl Verifier {
    /// Decompresses `key` (about a tenth of a verification); [`Error::Corrupt`] if it is
    /// not a point on the curve.
    pub fn new(key: &PublicKey) -> Result<Verifier> {
        let a = CompressedEdwardsY(*key.as_bytes())
            .decompress()
            .ok_or_else(|| Error::Corrupt("author key is not a valid Ed25519 point".into()))?;
        Ok(Verifier {
            key: *key.as_bytes(),
            minus_a: -a,
            small_order: a.is_small_order(),
        })
    }

    /// The key's bytes.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// Checks `signature` over `message` by the strict rules (see the module's doc).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<()> {
        self.verify_parts(&[message], signature)
    }

    /// Checks `signature` over the message that is `parts` one after the other, as
    /// [`Verifier::verify`] over their concatenation, without making it.
    pub fn verify_parts(&self, parts: &[&[u8]], signature: &Signature) -> Result<()> {
        let (r, s) = signature.split_at(32);
        let mut s_bytes = [0u8; 32];
        s_bytes.copy_from_slice(s);
        let s: Option<Scalar> = Scalar::from_canonical_bytes(s_bytes).into();
        let s = s.ok_or_else(refused)?;
        if self.small_order {
            return Err(refused());
        }
        let mut hash = Sha512::new().chain_update(r).chain_update(self.key);
        for part in parts {
            hash.update(part);
        }
        let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
        let expected = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &self.minus_a, &s);
        if expected.compress().as_bytes()[..] != r[..] || expected.is_small_order() {
            return Err(refused());
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto::keys::PrivateKey;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};

    /// ed25519-dalek's verdict: the reference these checks must equal.
    pub(crate) fn dalek_accepts(key: &PublicKey, message: &[u8], signature: &Signature) -> bool {
        ed25519_dalek::VerifyingKey::from_bytes(key.as_bytes()).is_ok_and(|k| {
            k.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
                .is_ok()
        })
    }

    fn ours_accepts(key: &PublicKey, message: &[u8], signature: &Signature) -> bool {
        Verifier::new(key).is_ok_and(|v| v.verify(message, signature).is_ok())
    }

    /// A small deterministic generator, so that a failure can be replayed.
    struct Bytes(u64);
    impl Bytes {
        fn next(&mut self) -> u8 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 32) as u8
        }
    }

    /// Honest signatures with single bits flipped anywhere in the signature, key or
    /// message, whole random `R` or `s` halves, `R` replaced by small-order points and by
    /// itself plus a torsion point, `s` raised by the group order: every verdict equals
    /// ed25519-dalek's.
    #[test]
    fn verdicts_equal_ed25519_dalek_verify_strict_on_mutated_signatures() {
        let mut rng = Bytes(0x9e37_79b9_7f4a_7c15);
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..400u32 {
            let key = PrivateKey::generate().unwrap();
            let message = format!("entry {round}").into_bytes();
            let signature = key.sign(&message);
            let mut cases: Vec<(PublicKey, Vec<u8>, Signature)> =
                vec![(key.public_key(), message.clone(), signature)];
            let mut flipped = signature;
            flipped[usize::from(rng.next()) % 64] ^= 1 << (rng.next() % 8);
            cases.push((key.public_key(), message.clone(), flipped));
            let mut key_bytes = *key.public_key().as_bytes();
            key_bytes[usize::from(rng.next()) % 32] ^= 1 << (rng.next() % 8);
            cases.push((PublicKey::from_bytes(key_bytes), message.clone(), signature));
            let mut other_message = message.clone();
            other_message[0] ^= 1;
            cases.push((key.public_key(), other_message, signature));
            let mut random_half = signature;
            let half = if round % 2 == 0 { 0..32 } else { 32..64 };
            for b in &mut random_half[half] {
                *b = rng.next();
            }
            cases.push((key.public_key(), message.clone(), random_half));
            let torsion = EIGHT_TORSION[usize::from(rng.next()) % 8];
            let mut small_r = signature;
            small_r[..32].copy_from_slice(torsion.compress().as_bytes());
            cases.push((key.public_key(), message.clone(), small_r));
            let r = CompressedEdwardsY(signature[..32].try_into().unwrap())
                .decompress()
                .unwrap();
            let mut torsion_r = signature;
            torsion_r[..32].copy_from_slice((r + torsion).compress().as_bytes());
            cases.push((key.public_key(), message.clone(), torsion_r));
            let mut big_s = signature;
            big_s[63] |= 0x10; // s + 2^252 or more: at least the group order
            cases.push((key.public_key(), message.clone(), big_s));
            for (i, (key, message, sig)) in cases.iter().enumerate() {
                let ours = ours_accepts(key, message, sig);
                assert_eq!(
                    ours,
                    dalek_accepts(key, message, sig),
                    "round {round}, case {i}"
                );
                // The same message in two parts, split anywhere, gets the same verdict.
                let (head, tail) = message.split_at(usize::from(rng.next()) % (message.len() + 1));
                let in_parts = key.verify_parts(&[head, tail], sig).is_ok();
                assert_eq!(in_parts, ours, "round {round}, case {i}, in parts");
                if ours {
                    accepted += 1;
                } else {
                    refused += 1;
                }
            }
        }
        assert!(
            accepted >= 400 && refused >= 400 * 6,
            "{accepted} accepted, {refused} refused"
        );
    }

    /// A key of small order is refused with any signature, even one whose equation holds.
    #[test]
    fn a_small_order_key_is_refused() {
        for torsion in EIGHT_TORSION {
            let key = PublicKey::from_bytes(torsion.compress().to_bytes());
            let s = Scalar::from(7u8);
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice((s * ED25519_BASEPOINT_POINT).compress().as_bytes());
            sig[32..].copy_from_slice(s.as_bytes());
            assert!(!ours_accepts(&key, b"m", &sig));
            assert!(!dalek_accepts(&key, b"m", &sig));
        }
    }
}
