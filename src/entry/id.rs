//! Entry ids: the SHA-256 of an entry's signed encoding, text form `sha256:<64 hex>`.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const TEXT_PREFIX: &str = "sha256:";

/// The content hash of a signed entry. A database's id is the id of its root entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId([u8; 32]);

impl EntryId {
    /// Hashes a signed entry's bytes.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        EntryId(Sha256::digest(bytes).into())
    }

    /// Wraps raw hash bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        EntryId(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses `sha256:<64 lower-case hex digits>`.
    pub fn parse(text: &str) -> Result<Self> {
        let hex = text
            .strip_prefix(TEXT_PREFIX)
            .filter(|h| h.len() == 64)
            .ok_or_else(|| Error::invalid("an id is 'sha256:' followed by 64 hex digits"))?;
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            out[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Ok(EntryId(out))
    }

    /// Bytes in the text form.
    pub const TEXT_LEN: usize = TEXT_PREFIX.len() + 64;

    /// The text form `sha256:<64 lower-case hex digits>`.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(Self::TEXT_LEN);
        self.push_text(&mut s);
        s
    }

    /// Appends the text form to `out`.
    pub fn push_text(&self, out: &mut String) {
        out.push_str(TEXT_PREFIX);
        for b in self.0 {
            out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
    }
}

crate::json::serde_as_text!(EntryId);

fn hex_digit(c: u8) -> Result<u8> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(Error::invalid("an id uses lower-case hex digits")),
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl std::fmt::Debug for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_rejects_bad_forms() {
        let id = EntryId::of_bytes(b"x");
        assert_eq!(EntryId::parse(&id.to_text()).unwrap(), id);
        assert!(EntryId::parse("sha256:zz").is_err());
        assert!(EntryId::parse(&id.to_text().to_uppercase()).is_err());
        assert!(EntryId::parse(&id.to_text()[1..]).is_err());
    }
}
