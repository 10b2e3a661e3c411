//! Entry decoding: any bytes give an entry or an error, never a crash; what decodes
//! re-encodes to the same bytes (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnemo::entry::{Entry, EntryId};

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = Entry::decode(data) {
        assert_eq!(entry.bytes(), data);
        assert_eq!(entry.id(), EntryId::of_bytes(data));
    }
});
