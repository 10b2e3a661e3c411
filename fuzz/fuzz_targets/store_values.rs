//! Store names, keys and JSON values through the public API: a write either fails with
//! InvalidArgument and stores nothing, or reads back as the value's canonical JSON.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use mnemo::backend::MemoryBackend;
use mnemo::{Database, Error, Instance, User};

fn database() -> &'static Database {
    static DB: OnceLock<(Instance, User, Database)> = OnceLock::new();
    &DB.get_or_init(|| {
        let inst = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
        inst.create_user("fuzz", None).unwrap();
        let user = inst.login("fuzz", None).unwrap();
        let db = user.create_db("fuzz").unwrap();
        (inst, user, db)
    })
    .2
}

fuzz_target!(|data: &[u8]| {
    // store \x01 key \x01 json, as UTF-8 (other bytes cannot cross the API as &str).
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\u{1}');
    let (Some(store), Some(key), Some(json)) = (parts.next(), parts.next(), parts.next()) else { return };
    let db = database();
    let before = db.get(store, key);
    match db.set(store, key, json) {
        Ok(_) => {
            let canonical = mnemo::json::canonical(json).unwrap();
            assert_eq!(db.get(store, key).unwrap(), canonical);
        }
        Err(Error::InvalidArgument(_)) => {
            let after = db.get(store, key);
            assert_eq!(format!("{before:?}"), format!("{after:?}"));
        }
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
});
