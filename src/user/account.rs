//! How accounts keep their secrets.
//!
//! Password users: one Argon2id run over the password with the account's own salt gives the
//! key-encryption key (KEK); every private key is sealed under it with AES-256-GCM, bound by
//! associated data to the user id and the key. No password hash is stored: a password is
//! right exactly when it unseals the keys. Passwordless users' keys are stored unsealed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::crypto::{password, random, seal, KdfParams, PrivateKey, PublicKey};
use crate::error::{Error, Result};

/// Longest username, in bytes.
pub const MAX_USERNAME: usize = 64;
/// Longest password, in bytes.
pub const MAX_PASSWORD: usize = 1024;

/// A key-encryption key, wiped from memory when dropped.
pub type Kek = Zeroizing<[u8; 32]>;

/// Fails unless `name` is a valid username: 1 to 64 bytes, no control characters.
pub fn check_username(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_USERNAME || name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "a username is 1 to {MAX_USERNAME} bytes without control characters"
        )));
    }
    Ok(())
}

/// Fails unless `password` is a valid password: 1 to 1024 bytes (use no password, not "").
pub fn check_password(password: &str) -> Result<()> {
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err(Error::invalid(format!(
            "a password is 1 to {MAX_PASSWORD} bytes (pass none for a passwordless user)"
        )));
    }
    Ok(())
}

/// The password-derivation settings of one account: Argon2id parameters and salt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kdf {
    /// Argon2id cost.
    pub params: KdfParams,
    /// The account's own salt.
    pub salt: [u8; 16],
}

impl Kdf {
    /// New settings with a fresh salt.
    pub fn new(params: KdfParams) -> Result<Kdf> {
        Ok(Kdf {
            params,
            salt: random::bytes()?,
        })
    }

    /// Derives the KEK from `password`.
    pub fn derive(&self, password: &str) -> Result<Kek> {
        password::derive_key(password.as_bytes(), &self.salt, self.params)
    }

    /// The stored JSON form.
    pub fn to_json(&self) -> Value {
        json!({"alg": "argon2id", "m_kib": self.params.m_kib, "t": self.params.t, "p": self.params.p,
               "salt": B64.encode(self.salt)})
    }

    /// Parses the stored JSON form; [`Error::Corrupt`] if malformed.
    pub fn from_json(v: &Value) -> Result<Kdf> {
        let bad = || Error::Corrupt("stored key-derivation settings are malformed".into());
        if v.get("alg").and_then(Value::as_str) != Some("argon2id") {
            return Err(bad());
        }
        let n = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(bad)
        };
        let salt = v
            .get("salt")
            .and_then(Value::as_str)
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(bad)?;
        Ok(Kdf {
            params: KdfParams {
                m_kib: n("m_kib")?,
                t: n("t")?,
                p: n("p")?,
            },
            salt: salt.try_into().map_err(|_| bad())?,
        })
    }
}

fn associated_data(user_id: &str, key: &PublicKey) -> Vec<u8> {
    format!("mnemo/user-key/v1\0{user_id}\0{}", key.to_text()).into_bytes()
}

/// The stored secret of `key`: sealed under `kek`, or the plain seed without one.
pub fn seal_key(kek: Option<&Kek>, user_id: &str, key: &PrivateKey) -> Result<String> {
    let secret = match kek {
        Some(kek) => seal::seal(
            kek,
            key.to_seed().as_ref(),
            &associated_data(user_id, &key.public_key()),
        )?,
        None => key.to_seed().to_vec(),
    };
    Ok(B64.encode(secret))
}

/// Recovers a private key from its stored secret. A wrong KEK gives [`Error::AuthFailed`].
pub fn unseal_key(
    kek: Option<&Kek>,
    user_id: &str,
    public: &PublicKey,
    stored: &str,
) -> Result<PrivateKey> {
    let secret = Zeroizing::new(
        B64.decode(stored)
            .map_err(|_| Error::Corrupt("stored key is not base64".into()))?,
    );
    let seed = match kek {
        Some(kek) => seal::open(kek, &secret, &associated_data(user_id, public))?,
        None => secret,
    };
    let key = PrivateKey::from_seed(&seed)?;
    if key.public_key() != *public {
        return Err(Error::Corrupt(
            "a stored key does not match its public key".into(),
        ));
    }
    Ok(key)
}

/// Does the same Argon2id work as a real login, for a user that does not exist, so that an
/// unknown user and a wrong password take indistinguishable time.
pub fn burn_login_time(password: Option<&str>, params: KdfParams) {
    let _ = password::derive_key(password.unwrap_or("").as_bytes(), &[0u8; 16], params);
}
