//! Backend URL parsing (no file is created, nothing is connected): any text parses or is
//! refused with InvalidArgument.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnemo::Error;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else { return };
    match mnemo::backend::parse_url(url) {
        Ok(_) | Err(Error::InvalidArgument(_)) => {}
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
});
