//! Each sync request handler with arbitrary input, as the listener would call it after
//! reading a body: the first byte picks the endpoint; for `db`, the second byte picks a raw
//! body (anything at all) or a request decoded from the rest and signed by a key that may
//! read the database (so the handler's work past authentication is fuzzed too). Nothing may
//! panic, and every answer is bytes or an error.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use mnemo::backend::MemoryBackend;
use mnemo::crypto::{PrivateKey, PublicKey};
use mnemo::database::Permission;
use mnemo::entry::EntryId;
use mnemo::sync::handlers::{dispatch, Endpoint};
use mnemo::sync::wire::{Envelope, Request, WINDOW_MS};
use mnemo::sync::SyncEngine;
use mnemo::Instance;

struct World {
    _instance: Instance,
    engine: Arc<SyncEngine>,
    db: EntryId,
    reader: PrivateKey,
    /// The device key the client proved in TLS.
    peer: PublicKey,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let instance = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
    instance.create_user("owner", None).unwrap();
    let owner = instance.login("owner", None).unwrap();
    let db = owner.create_db("fuzzed").unwrap();
    for i in 0..20 {
        db.set("s", &format!("k{i}"), &i.to_string()).unwrap();
    }
    let reader = PrivateKey::generate().unwrap();
    db.grant(&reader.public_key(), Permission::Write).unwrap();
    let engine = instance.enable_sync().unwrap();
    World {
        db: db.id(),
        _instance: instance,
        engine,
        reader,
        peer: PrivateKey::generate().unwrap().public_key(),
    }
});

static NONCE: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fuzz_target!(|data: &[u8]| {
    let world = &*WORLD;
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let endpoint = Endpoint::ALL[usize::from(pick) % Endpoint::ALL.len()];
    let signed = endpoint == Endpoint::Db && rest.first().is_some_and(|b| b & 1 == 1);
    if !signed {
        let _ = dispatch(&world.engine, &world.peer, endpoint, rest.to_vec());
        return;
    }
    let Ok(request) = Request::from_bytes(&rest[1..]) else {
        return;
    };
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&NONCE.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    let mut env = Envelope {
        db: world.db,
        key: world.reader.public_key(),
        server: world.engine.device_id(),
        // At the edge of the freshness window, so remembered nonces expire at once and
        // millions of runs never fill the replay memory.
        timestamp_ms: now_ms() - WINDOW_MS + 1,
        nonce,
        request,
        signature: [0; 64],
    };
    env.signature = world.reader.sign(&env.signed_part());
    let _ = dispatch(&world.engine, &world.peer, endpoint, env.encode());
});
