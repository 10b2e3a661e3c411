//! The X.509 form of a device identity: a self-signed certificate around the device's
//! Ed25519 key, which TLS carries, and the one thing read back from a peer's certificate:
//! its Ed25519 key. Nothing else in a certificate matters here (names, dates, issuer): a
//! peer is who its key is, proven by the TLS handshake signature. The encoder writes one
//! fixed shape; the reader walks DER strictly and refuses any key that is not Ed25519.

use crate::crypto::{KeyRing, PublicKey};
use crate::error::Result;

/// DER of the Ed25519 algorithm identifier (RFC 8410): SEQUENCE { OID 1.3.101.112 }.
const ED25519_ALGORITHM: [u8; 7] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER of an Ed25519 SubjectPublicKeyInfo up to the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The subject and issuer common name of every device certificate.
const COMMON_NAME: &[u8] = b"mnemo device";
/// Largest certificate read from a peer.
const MAX_CERTIFICATE: usize = 16 << 10;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION_TAG: u8 = 0xa0;

/// One DER element: tag, definite length, content.
fn element(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The self-signed certificate of `key` (held by `keys`), in DER: version 3, serial 1,
/// subject and issuer "mnemo device", valid from 1970 with no expiry (RFC 5280's
/// 99991231235959Z), signed by the key itself.
pub(super) fn device_certificate(keys: &dyn KeyRing, key: &PublicKey) -> Result<Vec<u8>> {
    let name = element(
        SEQUENCE,
        &element(
            SET,
            &element(
                SEQUENCE,
                &[
                    element(OID, &[0x55, 0x04, 0x03]),
                    element(UTF8_STRING, COMMON_NAME),
                ]
                .concat(),
            ),
        ),
    );
    let validity = element(
        SEQUENCE,
        &[
            element(UTC_TIME, b"700101000000Z"),
            element(GENERALIZED_TIME, b"99991231235959Z"),
        ]
        .concat(),
    );
    let tbs = element(
        SEQUENCE,
        &[
            element(VERSION_TAG, &element(INTEGER, &[2])),
            element(INTEGER, &[1]),
            ED25519_ALGORITHM.to_vec(),
            name.clone(),
            validity,
            name,
            [&ED25519_SPKI_PREFIX[..], key.as_bytes()].concat(),
        ]
        .concat(),
    );
    let signature = keys.sign(key, &tbs)?;
    Ok(element(
        SEQUENCE,
        &[
            tbs,
            ED25519_ALGORITHM.to_vec(),
            element(BIT_STRING, &[&[0u8][..], &signature[..]].concat()),
        ]
        .concat(),
    ))
}

/// Reads DER elements from a byte slice, refusing anything that runs past its end.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element: (tag, its whole encoding, its content).
    fn next(&mut self) -> Option<(u8, &'a [u8], &'a [u8])> {
        let bytes = self.0;
        let tag = *bytes.first()?;
        let first = *bytes.get(1)?;
        let (len, header) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let count = (first & 0x7f) as usize;
            if count == 0 || count > 4 {
                return None;
            }
            let len = bytes
                .get(2..2 + count)?
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, 2 + count)
        };
        let end = header.checked_add(len)?;
        let whole = bytes.get(..end)?;
        self.0 = &bytes[end..];
        Some((tag, whole, &whole[header..]))
    }
}

/// The Ed25519 key a certificate carries, if it is a well-formed X.509 certificate whose
/// subject key is Ed25519 (any other kind of key, or malformed DER: `None`).
pub(super) fn certificate_key(certificate: &[u8]) -> Option<PublicKey> {
    if certificate.len() > MAX_CERTIFICATE {
        return None;
    }
    let mut outer = Der(certificate);
    let (tag, _, content) = outer.next()?;
    if tag != SEQUENCE || !outer.0.is_empty() {
        return None;
    }
    let (tag, _, tbs) = Der(content).next()?;
    if tag != SEQUENCE {
        return None;
    }
    let mut fields = Der(tbs);
    let mut field = fields.next()?;
    if field.0 == VERSION_TAG {
        field = fields.next()?;
    }
    // serial, signature algorithm, issuer, validity, subject; then the key.
    for expected in [INTEGER, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE] {
        if field.0 != expected {
            return None;
        }
        field = fields.next()?;
    }
    let spki = field.1.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    Some(PublicKey::from_bytes(spki.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;

    #[test]
    fn a_device_certificate_carries_its_key_and_its_own_signature() {
        let device = PrivateKey::generate().unwrap();
        let key = device.public_key();
        let cert = device_certificate(&device, &key).unwrap();
        assert_eq!(certificate_key(&cert), Some(key));
        // The signature covers the to-be-signed part, and is the certificate's last 64 bytes.
        let (_, _, content) = Der(&cert).next().unwrap();
        let (_, tbs, _) = Der(content).next().unwrap();
        let signature: [u8; 64] = cert[cert.len() - 64..].try_into().unwrap();
        key.verify(tbs, &signature).unwrap();
    }

    #[test]
    fn malformed_or_foreign_certificates_give_no_key() {
        let device = PrivateKey::generate().unwrap();
        let cert = device_certificate(&device, &device.public_key()).unwrap();
        for cut in [0, 1, 2, 10, cert.len() / 2, cert.len() - 1] {
            assert_eq!(certificate_key(&cert[..cut]), None, "cut at {cut}");
        }
        let mut trailing = cert.clone();
        trailing.push(0);
        assert_eq!(certificate_key(&trailing), None);
        // Another algorithm in the key (1.3.101.113 is Ed448).
        let at = cert
            .windows(ED25519_SPKI_PREFIX.len())
            .position(|w| w == ED25519_SPKI_PREFIX)
            .unwrap();
        let mut other = cert.clone();
        other[at + 8] = 0x71;
        assert_eq!(certificate_key(&other), None);
        // Lengths that point past the end, and an over-long length form.
        assert_eq!(certificate_key(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(certificate_key(&[0x30, 0x85, 1, 0, 0, 0, 0]), None);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut flipped = cert.clone();
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let i = (rng as usize) % flipped.len();
            flipped[i] ^= 1 << (rng % 8);
            // Never a panic; a key only if the flip left a well-formed certificate.
            let _ = certificate_key(&flipped);
        }
    }
}
