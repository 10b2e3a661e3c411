//! Faults between honest peers: four instances write concurrently and sync through TCP
//! proxies that drop, delay, cut and duplicate traffic, under random partitions. After
//! healing, every replica holds the same tips and state, and no acknowledged commit is lost.
//! Bounded here (a few seconds of chaos); `scripts/soak-sync` runs the same for minutes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mnemo::database::Permission;
use mnemo::entry::EntryId;
use mnemo::{Database, Instance, User};

use crate::support::{logged_in, Rng};

/// What a proxy does to traffic now.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Forward faithfully.
    Clean = 0,
    /// Forward with random drops, delays, cuts and duplicated chunks.
    Faulty = 1,
    /// Refuse every connection (a partition).
    Down = 2,
}

/// A TCP proxy in front of one peer's listener.
struct Proxy {
    addr: String,
    mode: Arc<AtomicU8>,
}

impl Proxy {
    fn start(upstream: String, seed: u64, stop: Arc<AtomicBool>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mode = Arc::new(AtomicU8::new(Mode::Clean as u8));
        let shared = mode.clone();
        thread::spawn(move || {
            let mut rng = Rng::new(seed);
            while !stop.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let mode = shared.load(Ordering::Relaxed);
                if mode == Mode::Down as u8 {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let faulty = mode == Mode::Faulty as u8;
                let _ = client.set_nonblocking(false);
                for (from, to, seed) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        rng.next(),
                    ),
                    (server, client, rng.next()),
                ] {
                    thread::spawn(move || pump(from, to, faulty, seed));
                }
            }
        });
        Proxy { addr, mode }
    }

    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }
}

/// Copies bytes from `from` to `to`; when `faulty`, sometimes delays, duplicates or cuts a
/// chunk, or drops the connection.
fn pump(mut from: TcpStream, mut to: TcpStream, faulty: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut buf = [0u8; 8192];
    let _ = from.set_read_timeout(Some(Duration::from_secs(20)));
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let sent = if !faulty {
            to.write_all(chunk)
        } else {
            match rng.below(100) {
                0..=2 => break, // drop the connection
                3..=5 => {
                    let _ = to.write_all(&chunk[..n / 2]); // cut mid-message
                    break;
                }
                6..=8 => to.write_all(chunk).and_then(|()| to.write_all(chunk)), // duplicate
                9..=20 => {
                    thread::sleep(Duration::from_millis(rng.below(30) as u64)); // delay
                    to.write_all(chunk)
                }
                _ => to.write_all(chunk),
            }
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

struct Peer {
    inst: Instance,
    user: User,
    db: Database,
    /// proxies[j]: this peer's way to peer j (None for itself).
    proxies: Vec<Option<Proxy>>,
}

#[test]
fn four_peers_converge_after_drops_delays_cuts_duplicates_and_partitions() {
    run_chaos(Duration::from_secs(4), 0x5eed);
}

/// Runs the chaos for `chaos` (also used by the soak, through an ignored test).
pub fn run_chaos(chaos: Duration, seed: u64) {
    const PEERS: usize = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let mut rng = Rng::new(seed);

    // Peer 0 makes the database and grants the other peers' users write.
    let names = ["ann", "ben", "cat", "dan"];
    let mut made: Vec<(Instance, User)> = names.iter().map(|n| logged_in(n)).collect();
    let listen: Vec<String> = made
        .iter()
        .map(|(inst, _)| inst.enable_sync().unwrap().listen("127.0.0.1:0").unwrap())
        .collect();
    let origin = made[0].1.create_db("shared").unwrap();
    for (_, user) in &made[1..] {
        origin
            .grant(&user.default_key().unwrap(), Permission::Write)
            .unwrap();
    }
    let db_id = origin.id();
    let mut peers = Vec::new();
    for (i, (inst, user)) in made.drain(..).enumerate() {
        if i > 0 {
            inst.sync()
                .unwrap()
                .sync_db(&user, &listen[0], &db_id)
                .unwrap();
        }
        let db = user.load_db(&db_id).unwrap();
        let proxies = (0..PEERS)
            .map(|j| (j != i).then(|| Proxy::start(listen[j].clone(), rng.next(), stop.clone())))
            .collect();
        peers.push(Peer {
            inst,
            user,
            db,
            proxies,
        });
    }
    let peers = Arc::new(peers);
    let acknowledged: Arc<Mutex<Vec<EntryId>>> = Arc::default();
    // Rounds during the chaos: [succeeded, failed].
    let rounds: Arc<[AtomicUsize; 2]> = Arc::default();

    let deadline = Instant::now() + chaos;
    let mut workers = Vec::new();
    for i in 0..PEERS {
        let (writer_peers, acknowledged, seed) = (peers.clone(), acknowledged.clone(), rng.next());
        // A writer per peer.
        workers.push(thread::spawn(move || {
            let peers = writer_peers;
            let mut n = 0;
            while Instant::now() < deadline {
                let key = format!("{i}-{}", n % 7);
                if let Ok(id) = peers[i].db.set("s", &key, &n.to_string()) {
                    acknowledged.lock().unwrap().push(id);
                }
                n += 1;
                thread::sleep(Duration::from_millis(20));
            }
        }));
        // A syncer per peer, each round with a random other peer through its proxy.
        let (peers, rounds) = (peers.clone(), rounds.clone());
        workers.push(thread::spawn(move || {
            let mut rng = Rng::new(seed);
            while Instant::now() < deadline {
                let j = (i + 1 + rng.below(PEERS - 1)) % PEERS;
                let proxy = peers[i].proxies[j].as_ref().unwrap();
                let sync = peers[i].inst.sync().unwrap();
                let outcome = sync.sync_db(&peers[i].user, &proxy.addr, &db_id);
                rounds[usize::from(outcome.is_err())].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // The weather: every 300 ms each link is clean, faulty or down.
    while Instant::now() < deadline {
        for peer in peers.iter() {
            for proxy in peer.proxies.iter().flatten() {
                proxy.set(match rng.below(3) {
                    0 => Mode::Clean,
                    1 => Mode::Faulty,
                    _ => Mode::Down,
                });
            }
        }
        thread::sleep(Duration::from_millis(300));
    }
    for w in workers {
        w.join().unwrap();
    }
    let [ok, failed] = [0, 1].map(|k| rounds[k].load(Ordering::Relaxed));
    assert!(
        ok > 0 && failed > 0,
        "{ok} rounds succeeded, {failed} failed"
    );

    // Heal, then sync every pair until the replicas agree (bounded).
    for peer in peers.iter() {
        for proxy in peer.proxies.iter().flatten() {
            proxy.set(Mode::Clean);
        }
    }
    let agree = || {
        let first = (
            peers[0].db.tips().unwrap(),
            peers[0].db.get_all("s").unwrap(),
        );
        peers
            .iter()
            .all(|p| (p.db.tips().unwrap(), p.db.get_all("s").unwrap()) == first)
    };
    for _ in 0..6 {
        if agree() {
            break;
        }
        for i in 0..PEERS {
            for j in 0..PEERS {
                if i != j {
                    let proxy = peers[i].proxies[j].as_ref().unwrap();
                    let _ =
                        peers[i]
                            .inst
                            .sync()
                            .unwrap()
                            .sync_db(&peers[i].user, &proxy.addr, &db_id);
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(agree(), "the replicas differ after healing");
    let acknowledged = acknowledged.lock().unwrap();
    assert!(
        acknowledged.len() > 20,
        "too few commits: {}",
        acknowledged.len()
    );
    for peer in peers.iter() {
        for id in acknowledged.iter() {
            peer.db
                .entry_bytes(id)
                .unwrap_or_else(|e| panic!("acknowledged commit {id} lost: {e}"));
        }
    }
}

/// The same for `MNEMO_SOAK_SECONDS` seconds (default 300): run by `scripts/soak-sync`.
#[test]
#[ignore = "a soak: minutes long; run by scripts/soak-sync"]
fn soak_four_peers_under_faults() {
    let seconds = std::env::var("MNEMO_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let seed = std::env::var("MNEMO_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xfa17);
    run_chaos(Duration::from_secs(seconds), seed);
}
