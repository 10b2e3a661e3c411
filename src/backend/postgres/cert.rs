//! The two things the TLS connector reads of an X.509 certificate itself (rustls keeps its
//! parser private): the validity period, for a certificate trusted as it is, and the hash of
//! its signature algorithm, for SCRAM channel binding (`tls-server-end-point`, RFC 5929).
//! A small strict DER reader: anything it does not understand gives `None`.

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0; // [0] EXPLICIT
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// DER bytes being read, one element at a time.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element's tag and contents (definite lengths of up to 4 bytes).
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let (len, rest) = rest.split_at_checked(n)?;
            (
                len.iter()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b)),
                rest,
            )
        };
        let (contents, rest) = rest.split_at_checked(len)?;
        self.0 = rest;
        Some((tag, contents))
    }

    /// The contents of the next element, which must have tag `tag`.
    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (found, contents) = self.next()?;
        (found == tag).then_some(contents)
    }
}

/// The contents of `tbsCertificate` and of `signatureAlgorithm`.
fn parts(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut cert = Der(Der(der).expect(SEQUENCE)?);
    let tbs = cert.expect(SEQUENCE)?;
    let algorithm = cert.expect(SEQUENCE)?;
    Some((tbs, algorithm))
}

/// The certificate's validity period in Unix seconds: `(not_before, not_after)`.
pub(super) fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (tbs, _) = parts(der)?;
    let mut tbs = Der(tbs);
    let (mut tag, _) = tbs.next()?;
    if tag == VERSION {
        tag = tbs.next()?.0;
    }
    if tag != INTEGER {
        return None; // the serial number
    }
    tbs.expect(SEQUENCE)?; // signature
    tbs.expect(SEQUENCE)?; // issuer
    let mut validity = Der(tbs.expect(SEQUENCE)?);
    let not_before = unix_time(validity.next()?)?;
    let not_after = unix_time(validity.next()?)?;
    Some((not_before, not_after))
}

/// A `UTCTime` (`YYMMDDHHMMSSZ`, years 1950 to 2049) or `GeneralizedTime`
/// (`YYYYMMDDHHMMSSZ`) in Unix seconds, as RFC 5280 allows them.
fn unix_time((tag, text): (u8, &[u8])) -> Option<i64> {
    let digits = text.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        std::str::from_utf8(digits.get(range)?).ok()?.parse().ok()
    };
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = number(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (GENERALIZED_TIME, 14) => (number(0..4)?, 4),
        _ => return None,
    };
    let field = |i: usize| number(rest + 2 * i..rest + 2 * i + 2);
    let (month, day) = (field(0)?, field(1)?);
    let (hour, minute, second) = (field(2)?, field(3)?, field(4)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The `tls-server-end-point` channel binding of a server certificate (RFC 5929 4.1): the
/// certificate hashed with its signature's hash (SHA-256 for MD5 and SHA-1), as the
/// PostgreSQL server computes it. `None` for other signature algorithms (Ed25519, RSA-PSS):
/// SCRAM then runs without channel binding.
pub(super) fn tls_server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01]; // 1.2.840.113549.1.1
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01]; // 1.2.840.10045.4.1
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03]; // 1.2.840.10045.4.3
    let (_, algorithm) = parts(der)?;
    let oid = Der(algorithm).expect(OID)?;
    let digest = match oid.split_last()? {
        // md5WithRSA, sha1WithRSA, sha256WithRSA
        (4 | 5 | 11, arc) if arc == RSA => Sha256::digest(der).to_vec(),
        (12, arc) if arc == RSA => Sha384::digest(der).to_vec(),
        (13, arc) if arc == RSA => Sha512::digest(der).to_vec(),
        (14, arc) if arc == RSA => Sha224::digest(der).to_vec(),
        _ if oid == ECDSA_SHA1 => Sha256::digest(der).to_vec(),
        (1, arc) if arc == ECDSA_SHA2 => Sha224::digest(der).to_vec(),
        (2, arc) if arc == ECDSA_SHA2 => Sha256::digest(der).to_vec(),
        (3, arc) if arc == ECDSA_SHA2 => Sha384::digest(der).to_vec(),
        (4, arc) if arc == ECDSA_SHA2 => Sha512::digest(der).to_vec(),
        _ => return None,
    };
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn dates_convert_like_the_calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(unix_time((UTC_TIME, b"261202005058Z")), Some(1_796_172_658));
        assert_eq!(unix_time((UTC_TIME, b"500101000000Z")), Some(-631_152_000));
        assert_eq!(
            unix_time((GENERALIZED_TIME, b"21261108005058Z")),
            Some(4_949_772_658)
        );
        for bad in [
            (UTC_TIME, &b"2612020050Z"[..]),
            (UTC_TIME, b"261302005058Z"),
            (UTC_TIME, b"261202005058"),
            (UTC_TIME, b"2612020050+8Z"),
            (GENERALIZED_TIME, b"261202005058Z"),
            (INTEGER, b"261202005058Z"),
        ] {
            assert_eq!(unix_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn validity_is_read_from_real_certificates() {
        // notBefore=Dec  2 00:50:58 2026 GMT (UTCTime), notAfter=Nov  8 00:50:58 2126 GMT
        // (GeneralizedTime), for every test certificate.
        for pem in [
            include_str!("testdata/ca.pem"),
            include_str!("testdata/localhost-by-ca.pem"),
            include_str!("testdata/ed25519.pem"),
        ] {
            assert_eq!(validity(&der(pem)), Some((1_796_172_658, 4_949_772_658)));
        }
        let good = der(include_str!("testdata/ca.pem"));
        for cut in [0, 1, 10, good.len() / 2, good.len() - 1] {
            assert_eq!(validity(&good[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn channel_binding_hashes_with_the_signature_hash() {
        let p256 = der(include_str!("testdata/localhost-by-ca.pem"));
        assert_eq!(
            tls_server_end_point(&p256),
            Some(Sha256::digest(&p256).to_vec())
        );
        let p384 = der(include_str!("testdata/p384-sha384.pem"));
        assert_eq!(
            tls_server_end_point(&p384),
            Some(Sha384::digest(&p384).to_vec())
        );
        assert_eq!(
            tls_server_end_point(&der(include_str!("testdata/ed25519.pem"))),
            None
        );
        assert_eq!(tls_server_end_point(b"\x30\x03\x02\x01\x00"), None);
    }
}
