//! The check received entries use for canonical JSON, which builds no value, against the
//! one local writes use, which parses: they must agree on every text (which values are
//! canonical decides which entries are valid, on every replica alike), and on its depth.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnemo::json::{canonical, canonical_depth, pointer};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = serde_json::from_str::<serde_json::Value>(text).ok();
    let expected = parsed
        .filter(|_| canonical(text).ok().as_deref() == Some(text))
        .map(|value| pointer::depth(&value));
    assert_eq!(canonical_depth(text), expected, "{text:?}");
});
