//! Where a peer is, and optionally who it must be: `host:port`, or
//! `ed25519:<key>@host:port` to refuse any peer that does not prove that device key.

use crate::crypto::PublicKey;
use crate::error::{quoted, Error, Result};

/// A peer's address, with the device id it must prove if one was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    /// The device id the peer must prove, if pinned.
    pub device: Option<PublicKey>,
    /// `host:port` (an IPv6 host in brackets).
    pub host_port: String,
}

impl PeerAddr {
    /// Parses `host:port` or `ed25519:<key>@host:port` (the port not 0).
    /// [`Error::InvalidArgument`] otherwise.
    pub fn parse(text: &str) -> Result<PeerAddr> {
        let (device, host_port) = match text.split_once('@') {
            Some((device, rest)) => (
                Some(PublicKey::parse(device).map_err(|_| {
                    Error::invalid(format!(
                        "{}: the device id before '@' is malformed",
                        quoted(text)
                    ))
                })?),
                rest,
            ),
            None => (None, text),
        };
        check_host_port(host_port, false)?;
        Ok(PeerAddr {
            device,
            host_port: host_port.to_string(),
        })
    }

    /// The same address pinned to `device`.
    pub fn pinned(&self, device: PublicKey) -> PeerAddr {
        PeerAddr {
            device: Some(device),
            host_port: self.host_port.clone(),
        }
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.device {
            Some(device) => write!(f, "{device}@{}", self.host_port),
            None => f.write_str(&self.host_port),
        }
    }
}

/// The longest host of an address: a DNS name has at most 253 characters.
const MAX_HOST: usize = 255;

/// Fails with [`Error::InvalidArgument`] unless `addr` is `host:port` (port 0 only to
/// listen on any free port), its host at most [`MAX_HOST`] bytes.
pub(super) fn check_host_port(addr: &str, listening: bool) -> Result<()> {
    let bad = || Error::invalid(format!("{} is not a host:port address", quoted(addr)));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.is_empty()
        || host.len() > MAX_HOST
        || host
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '@')
        || (host.contains(':') && !bracketed)
        || (port == 0 && !listening)
    {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;

    #[test]
    fn addresses_parse_with_and_without_a_device() {
        let key = PrivateKey::generate().unwrap().public_key();
        let plain = PeerAddr::parse("127.0.0.1:7000").unwrap();
        assert_eq!(plain.device, None);
        assert_eq!(plain.to_string(), "127.0.0.1:7000");
        let pinned = PeerAddr::parse(&format!("{key}@[::1]:7000")).unwrap();
        assert_eq!(pinned.device, Some(key));
        assert_eq!(pinned.host_port, "[::1]:7000");
        assert_eq!(PeerAddr::parse(&pinned.to_string()).unwrap(), pinned);
        assert_eq!(
            plain.pinned(key).to_string(),
            format!("{key}@127.0.0.1:7000")
        );
        for bad in [
            "",
            "host",
            "host:0",
            "host:99999",
            ":80",
            "::1:80",
            "a b:80",
            "ed25519:nope@host:80",
            "@host:80",
            "x@y@host:80",
        ] {
            assert!(PeerAddr::parse(bad).is_err(), "{bad:?}");
        }
    }
}
