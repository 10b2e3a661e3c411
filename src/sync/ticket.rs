//! Share tickets: a text a database's holder hands out (by chat, QR code, e-mail) that names
//! the database, the addresses of the listener holding it, and that listener's device id,
//! signed by that device. A ticket grants nothing: it says where to ask. Whoever uses it
//! connects only to the device it names (its addresses are pinned), and a ticket altered
//! in any byte does not verify.
//!
//! Text form: `mnemo:` and base64url (no padding) of: version (1), database id (32 bytes),
//! device id (32), address count (1 to 8), each address (length byte, 1 to 255 bytes of
//! `host:port`), then the device's Ed25519 signature (64) of the domain tag
//! `mnemo/ticket/v1\0` followed by everything before it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::address::check_host_port;
use super::PeerAddr;
use crate::crypto::{KeyRing, PublicKey};
use crate::entry::EntryId;
use crate::error::{quoted, Error, Result};

const PREFIX: &str = "mnemo:";
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"mnemo/ticket/v1\0";
/// Most addresses a ticket names.
pub const MAX_ADDRESSES: usize = 8;
/// Longest ticket text accepted, in bytes.
pub const MAX_TICKET: usize = 4096;

/// What a ticket says, verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The database to ask for.
    pub db: EntryId,
    /// The device that holds it and signed the ticket.
    pub device: PublicKey,
    /// Where that device listens (`host:port`), in the order to try.
    pub addresses: Vec<String>,
}

impl Ticket {
    /// The ticket's text, signed by `device` (held by `keys`, and equal to
    /// [`Ticket::device`]).
    pub fn to_text(&self, keys: &dyn KeyRing) -> Result<String> {
        if self.addresses.is_empty() || self.addresses.len() > MAX_ADDRESSES {
            return Err(Error::invalid(format!(
                "a ticket names 1 to {MAX_ADDRESSES} addresses"
            )));
        }
        let mut bytes = vec![VERSION];
        bytes.extend_from_slice(self.db.as_bytes());
        bytes.extend_from_slice(self.device.as_bytes());
        bytes.push(self.addresses.len() as u8);
        for addr in &self.addresses {
            check_host_port(addr, false)?;
            let len = u8::try_from(addr.len()).map_err(|_| {
                Error::invalid(format!("address {} is too long for a ticket", quoted(addr)))
            })?;
            bytes.push(len);
            bytes.extend_from_slice(addr.as_bytes());
        }
        let signature = keys.sign(&self.device, &[DOMAIN, &bytes].concat())?;
        bytes.extend_from_slice(&signature);
        Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Reads and verifies a ticket. [`Error::InvalidArgument`] if it is not one, was cut or
    /// altered, or its signature does not verify.
    pub fn parse(text: &str) -> Result<Ticket> {
        let bad = |why: &str| Error::invalid(format!("not a valid mnemo ticket: {why}"));
        if text.len() > MAX_TICKET {
            return Err(bad("too long"));
        }
        let encoded = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("it does not start with 'mnemo:'"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| bad("it is not base64url"))?;
        let (body, signature) = bytes
            .split_at_checked(bytes.len().saturating_sub(64))
            .filter(|(_, s)| s.len() == 64)
            .ok_or_else(|| bad("it is cut short"))?;
        let mut r = body;
        let mut take = |n: usize| -> Result<&[u8]> {
            let (head, rest) = r
                .split_at_checked(n)
                .ok_or_else(|| bad("it is cut short"))?;
            r = rest;
            Ok(head)
        };
        if take(1)? != [VERSION] {
            return Err(bad("unknown version"));
        }
        let db = EntryId::from_bytes(take(32)?.try_into().expect("32 bytes"));
        let device = PublicKey::from_bytes(take(32)?.try_into().expect("32 bytes"));
        let count = take(1)?[0] as usize;
        if count == 0 || count > MAX_ADDRESSES {
            return Err(bad("wrong number of addresses"));
        }
        let mut addresses = Vec::with_capacity(count);
        for _ in 0..count {
            let len = take(1)?[0] as usize;
            let addr =
                std::str::from_utf8(take(len)?).map_err(|_| bad("an address is not text"))?;
            check_host_port(addr, false).map_err(|_| bad("an address is malformed"))?;
            addresses.push(addr.to_string());
        }
        if !r.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let signature: [u8; 64] = signature.try_into().expect("64 bytes");
        device
            .verify(&[DOMAIN, body].concat(), &signature)
            .map_err(|_| bad("its signature does not verify (altered?)"))?;
        Ok(Ticket {
            db,
            device,
            addresses,
        })
    }

    /// The ticket's addresses, each pinned to its device.
    pub fn peers(&self) -> Vec<PeerAddr> {
        self.addresses
            .iter()
            .map(|a| PeerAddr {
                device: Some(self.device),
                host_port: a.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;

    fn ticket(device: &PrivateKey) -> Ticket {
        Ticket {
            db: EntryId::of_bytes(b"db"),
            device: device.public_key(),
            addresses: vec!["127.0.0.1:7000".into(), "[::1]:7000".into()],
        }
    }

    #[test]
    fn a_ticket_reads_back_and_pins_its_device() {
        let device = PrivateKey::generate().unwrap();
        let text = ticket(&device).to_text(&device).unwrap();
        assert!(text.starts_with("mnemo:"));
        let read = Ticket::parse(&text).unwrap();
        assert_eq!(read, ticket(&device));
        assert!(read
            .peers()
            .iter()
            .all(|p| p.device == Some(device.public_key())));
    }

    #[test]
    fn every_altered_or_cut_ticket_is_refused() {
        let device = PrivateKey::generate().unwrap();
        let text = ticket(&device).to_text(&device).unwrap();
        let bytes = URL_SAFE_NO_PAD.decode(&text[PREFIX.len()..]).unwrap();
        for i in 0..bytes.len() {
            for bit in [0x01, 0x80] {
                let mut altered = bytes.clone();
                altered[i] ^= bit;
                let altered = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&altered));
                assert!(Ticket::parse(&altered).is_err(), "byte {i} bit {bit:#x}");
            }
        }
        for cut in 0..bytes.len() {
            let cut = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes[..cut]));
            assert!(Ticket::parse(&cut).is_err());
        }
        // Signed by another device than the one it names.
        let other = PrivateKey::generate().unwrap();
        assert!(ticket(&device).to_text(&other).is_err());
        for garbage in [
            "",
            "mnemo:",
            "mnemo:!!!",
            "http://x",
            &"mnemo:A".repeat(2000),
        ] {
            assert!(Ticket::parse(garbage).is_err(), "{garbage:.20}");
        }
    }
}
