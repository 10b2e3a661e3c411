//! Text that users and peers hand over: tickets, peer addresses, JSON Pointers, entry ids,
//! public keys and permissions. Each parses or is refused with InvalidArgument, and what
//! parses prints back as text that parses to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnemo::crypto::PublicKey;
use mnemo::database::settings::Permission;
use mnemo::entry::EntryId;
use mnemo::json::pointer;
use mnemo::sync::{PeerAddr, Ticket, MAX_ADDRESSES};
use mnemo::Error;

/// The value `parsed` holds, or `None` if it was refused as it must be.
fn accepted<T>(parsed: mnemo::error::Result<T>) -> Option<T> {
    match parsed {
        Ok(value) => Some(value),
        Err(Error::InvalidArgument(_)) => None,
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(ticket) = accepted(Ticket::parse(text)) {
        let peers = ticket.peers();
        assert!(!peers.is_empty() && peers.len() <= MAX_ADDRESSES);
    }
    if let Some(addr) = accepted(PeerAddr::parse(text)) {
        assert_eq!(PeerAddr::parse(&addr.to_string()).unwrap(), addr);
    }
    if let Some(tokens) = accepted(pointer::parse(text)) {
        assert_eq!(
            pointer::parse(&pointer::pointer_of(&tokens)).unwrap(),
            tokens
        );
    }
    if let Some(id) = accepted(EntryId::parse(text)) {
        assert_eq!(EntryId::parse(&id.to_text()).unwrap(), id);
    }
    if let Some(key) = accepted(PublicKey::parse(text)) {
        assert_eq!(PublicKey::parse(&key.to_text()).unwrap(), key);
    }
    if let Some(permission) = accepted(Permission::parse(text)) {
        assert_eq!(permission.as_str(), text);
    }
});
