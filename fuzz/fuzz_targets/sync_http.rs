//! The listener's request layer: arbitrary bytes inside a real TLS connection (made as a
//! device of its own) to a listening sync engine on loopback: HTTP parsing, header and body
//! limits, routing, handlers. The TLS stream is closed after the input, and the reply is
//! read to its end; the listener must answer or close, and keep serving (a well-formed
//! request after every 16th input must be answered).
#![no_main]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mnemo::backend::MemoryBackend;
use mnemo::crypto::PrivateKey;
use mnemo::sync::{server_name, Limits, SyncEngine, TlsIdentity};
use mnemo::Instance;

struct World {
    _instance: Instance,
    _engine: Arc<SyncEngine>,
    addr: String,
    tls: Arc<rustls::ClientConfig>,
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
    let device = Arc::new(PrivateKey::generate().unwrap());
    let key = device.public_key();
    let tls = TlsIdentity::new(device, key)
        .unwrap()
        .client_config(None)
        .unwrap();
    World {
        _instance: instance,
        _engine: engine,
        addr,
        tls,
    }
});

/// Sends `bytes` in a new TLS connection, closes it for writing (TLS close_notify), and
/// reads whatever comes back.
fn exchange(world: &World, bytes: &[u8]) -> Vec<u8> {
    let tcp = TcpStream::connect(&world.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let connection = rustls::ClientConnection::new(world.tls.clone(), server_name()).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let _ = stream.write_all(bytes);
    stream.conn.send_close_notify();
    let _ = stream.flush();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply
}

static RUNS: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let world = &*WORLD;
    let _ = exchange(world, data);
    if RUNS.fetch_add(1, Ordering::Relaxed) % 16 != 0 {
        return;
    }
    let probe = b"POST /mnemo/sync/v1/nothing HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n\x01";
    let reply = exchange(world, probe);
    assert!(
        reply.starts_with(b"HTTP/1.1 404"),
        "the listener stopped serving: {:?}",
        String::from_utf8_lossy(&reply[..reply.len().min(200)])
    );
});
