//! The listener's request layer: arbitrary bytes over a real loopback connection to a
//! listening sync engine (HTTP parsing, header and body limits, routing, handlers). The
//! connection's write side is closed after the input, and the reply is read to its end; the
//! listener must answer or close, and keep serving (a well-formed request after every 16th
//! input must succeed).
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mnemo::backend::MemoryBackend;
use mnemo::sync::{Limits, SyncEngine};
use mnemo::Instance;

struct World {
    _instance: Instance,
    _engine: Arc<SyncEngine>,
    addr: String,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let instance = Instance::open(Arc::new(MemoryBackend::new())).unwrap();
    let engine = instance.enable_sync().unwrap();
    engine
        .set_limits(Limits {
            // Fuzzing is one address making thousands of requests a second.
            requests_per_second_per_address: 1_000_000,
            request_burst_per_address: 1_000_000,
            idle_timeout: Duration::from_secs(2),
            body_timeout: Duration::from_secs(2),
            ..Limits::default()
        })
        .unwrap();
    let addr = engine.listen("127.0.0.1:0").unwrap();
    World {
        _instance: instance,
        _engine: engine,
        addr,
    }
});

/// Sends `bytes`, closes the write side, and reads whatever comes back.
fn exchange(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply
}

static RUNS: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let world = &*WORLD;
    let _ = exchange(&world.addr, data);
    if RUNS.fetch_add(1, Ordering::Relaxed) % 16 != 0 {
        return;
    }
    let hello = [&[1u8][..], &[9u8; 64][..]].concat();
    let probe = [
        format!(
            "POST /mnemo/sync/v1/hello HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            hello.len()
        )
        .into_bytes(),
        hello,
    ]
    .concat();
    let reply = exchange(&world.addr, &probe);
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "the listener stopped serving: {:?}",
        String::from_utf8_lossy(&reply[..reply.len().min(200)])
    );
});
