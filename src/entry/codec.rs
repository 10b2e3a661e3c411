//! Byte-level writer and strict reader for the canonical entry encoding.

use crate::error::{Error, Result};

/// Appends big-endian integers and length-prefixed byte strings.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    /// A u32 length then the bytes; callers keep lengths within the format's limits.
    pub fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.raw(s.as_bytes());
    }
}

/// Reads what [`Writer`] wrote, failing with [`Error::Corrupt`] on anything short or malformed.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(Error::Corrupt("entry is truncated".into()));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    /// A count that must not exceed `max`.
    pub fn count(&mut self, max: usize, what: &str) -> Result<usize> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(Error::Corrupt(format!(
                "entry has too many {what} ({n} > {max})"
            )));
        }
        Ok(n)
    }
    /// A length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, max: usize, what: &str) -> Result<&'a str> {
        let n = self.count(max, what)?;
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| Error::Corrupt(format!("entry has a {what} that is not UTF-8")))
    }
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}
