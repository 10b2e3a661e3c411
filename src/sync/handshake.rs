//! Handshake challenges that cost the listener no memory: a challenge carries its own issue
//! time and a MAC under a secret only this engine knows, bound to the client it was issued
//! to. A flood of `hello`s therefore fills nothing; a `confirm` is checked by recomputing the
//! MAC (constant time) and the age.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::{random, PublicKey};
use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

const DOMAIN: &[u8] = b"mnemo/sync/challenge/v1\0";

/// Issues and checks challenges under a random secret made when the engine starts.
pub(super) struct Challenges {
    secret: Zeroizing<[u8; 32]>,
}

impl Challenges {
    pub(super) fn new() -> Result<Challenges> {
        Ok(Challenges {
            secret: Zeroizing::new(random::bytes()?),
        })
    }

    /// A fresh challenge for `client`, issued at `now_ms`: issue time (8 bytes), random
    /// (8 bytes), MAC (16 bytes).
    pub(super) fn issue(&self, client: &PublicKey, now_ms: u64) -> Result<[u8; 32]> {
        let mut challenge = [0u8; 32];
        challenge[..8].copy_from_slice(&now_ms.to_be_bytes());
        challenge[8..16].copy_from_slice(&random::bytes::<8>()?);
        let tag = self.mac(client, &challenge[..16]).finalize().into_bytes();
        challenge[16..].copy_from_slice(&tag[..16]);
        Ok(challenge)
    }

    /// Fails with [`Error::PermissionDenied`] unless `challenge` was issued by this engine
    /// to `client` less than `lifetime_ms` before `now_ms`.
    pub(super) fn check(
        &self,
        client: &PublicKey,
        challenge: &[u8; 32],
        now_ms: u64,
        lifetime_ms: u64,
    ) -> Result<()> {
        let refused = || Error::PermissionDenied("unknown or expired handshake challenge".into());
        self.mac(client, &challenge[..16])
            .verify_truncated_left(&challenge[16..])
            .map_err(|_| refused())?;
        let issued = u64::from_be_bytes(challenge[..8].try_into().expect("8 bytes"));
        if now_ms < issued || now_ms - issued >= lifetime_ms {
            return Err(refused());
        }
        Ok(())
    }

    fn mac(&self, client: &PublicKey, issued_and_random: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(self.secret.as_ref()).expect("HMAC takes any key size");
        mac.update(DOMAIN);
        mac.update(client.as_bytes());
        mac.update(issued_and_random);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;

    #[test]
    fn a_challenge_holds_only_for_its_client_its_issuer_and_its_lifetime() {
        let challenges = Challenges::new().unwrap();
        let client = PrivateKey::generate().unwrap().public_key();
        let other = PrivateKey::generate().unwrap().public_key();
        let c = challenges.issue(&client, 1_000_000).unwrap();
        challenges.check(&client, &c, 1_000_500, 60_000).unwrap();
        assert!(challenges.check(&other, &c, 1_000_500, 60_000).is_err());
        assert!(challenges.check(&client, &c, 1_060_000, 60_000).is_err());
        assert!(challenges.check(&client, &c, 999_999, 60_000).is_err());
        let mut forged = c;
        forged[0] ^= 1;
        assert!(challenges
            .check(&client, &forged, 1_000_500, 60_000)
            .is_err());
        let elsewhere = Challenges::new().unwrap();
        assert!(elsewhere.check(&client, &c, 1_000_500, 60_000).is_err());
    }
}
