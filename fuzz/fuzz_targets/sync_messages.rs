//! Sync message decoding: every message type refuses what it cannot read, and what it reads
//! encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnemo::sync::wire::{self, Envelope, ErrorReply, IdsPage};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Envelope::decode(data) {
        assert_eq!(m.encode(), data);
    }
    if let Ok(m) = IdsPage::decode(data) {
        assert_eq!(m.encode(), data);
    }
    if let Ok(m) = ErrorReply::decode(data) {
        assert_eq!(m.encode(), data);
    }
    if let Ok(ids) = wire::decode_ids(data) {
        assert_eq!(wire::encode_ids(&ids), data);
    }
    if let Ok(entries) = wire::decode_entries(data) {
        assert_eq!(wire::encode_entries(&entries), data);
    }
    if let Ok(flags) = wire::decode_flags(data) {
        assert_eq!(wire::encode_flags(&flags), data);
    }
    if let Ok(proofs) = wire::decode_proofs(data) {
        assert_eq!(wire::encode_proofs(&proofs), data);
    }
});
