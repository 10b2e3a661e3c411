//! A fake sync peer for tests: a real device in TLS answering database requests as a test
//! says, and the entries it serves, signed here. Shared by the `it` tests and the memory
//! tests (`tests/decode_memory.rs`, which counts allocations in a binary of its own).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mnemo::crypto::{PrivateKey, PublicKey};
use mnemo::database::Permission;
use mnemo::entry::{Entry, EntryContent, EntryId, Op, Ops};
use mnemo::sync::wire::{self, IdsPage, Request};
use mnemo::sync::TlsIdentity;

/// A fake peer: a real device in TLS, that answers each database request with
/// `answer(request)`: the reply body, or `None` to trickle a reply forever.
pub fn fake_peer(answer: impl Fn(&Request) -> Option<Vec<u8>> + Send + Sync + 'static) -> String {
    fake_peer_of(Arc::new(PrivateKey::generate().unwrap()), answer)
}

/// [`fake_peer`] whose device shows a holder proof by `reader` (for those who push to it
/// once they granted `reader` read); every other request is `answer`ed.
pub fn fake_peer_holding_for(
    reader: &PrivateKey,
    answer: impl Fn(&Request) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> String {
    let device = Arc::new(PrivateKey::generate().unwrap());
    let proofs = vec![holder_proof(reader, &device.public_key())];
    fake_peer_of(device, move |request| match request {
        Request::Holders { .. } => Some(proofs_asked(request, &proofs)),
        _ => answer(request),
    })
}

/// `by`'s holder proof for `device`.
pub fn holder_proof(by: &PrivateKey, device: &PublicKey) -> (PublicKey, [u8; 64]) {
    let message = mnemo::sync::holders::proof_message(device);
    (by.public_key(), by.sign(&message))
}

/// The reply to a holders request: those of `proofs` whose keys it asks about.
pub fn proofs_asked(request: &Request, proofs: &[(PublicKey, [u8; 64])]) -> Vec<u8> {
    let Request::Holders { salt, hashes } = request else {
        panic!("not a holders request: {request:?}");
    };
    let asked: Vec<_> = (proofs.iter())
        .filter(|(key, _)| hashes.contains(&mnemo::sync::holders::key_hash(salt, key)))
        .copied()
        .collect();
    wire::encode_proofs(&asked)
}

/// [`fake_peer`] with the device key `device` (to sign tickets that name it).
pub fn fake_peer_of(
    device: Arc<PrivateKey>,
    answer: impl Fn(&Request) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> String {
    fake_peer_switching(device.clone(), device, |_| false, answer)
}

/// A fake peer whose first connection is `first`'s device, closed once it answered a
/// request for which `last` is true; every later connection is `then`'s device (one taking
/// the place of another at the same address).
pub fn fake_peer_switching(
    first: Arc<PrivateKey>,
    then: Arc<PrivateKey>,
    last: impl Fn(&Request) -> bool + Send + Sync + 'static,
    answer: impl Fn(&Request) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = |device: Arc<PrivateKey>| {
        let key = device.public_key();
        (TlsIdentity::new(device, key).unwrap())
            .server_config()
            .unwrap()
    };
    let configs = [config(first), config(then)];
    let (answer, last) = (Arc::new(answer), Arc::new(last));
    thread::spawn(move || {
        // A thread per connection: a client's watch and its round's requests go on
        // connections of their own, at the same time.
        for (n, tcp) in listener.incoming().enumerate() {
            let Ok(tcp) = tcp else { return };
            let config = configs[n.min(1)].clone();
            let tls = rustls::ServerConnection::new(config).unwrap();
            let (answer, last) = (answer.clone(), last.clone());
            thread::spawn(move || {
                let mut stream = rustls::StreamOwned::new(tls, tcp);
                while let Some((_path, body)) = read_request(&mut stream) {
                    let request = wire::Envelope::decode(&body).unwrap().request;
                    let closing = n == 0 && last(&request);
                    let ok = match answer(&request) {
                        Some(body) => write_reply(&mut stream, &body, closing),
                        None => trickle(&mut stream),
                    };
                    if !ok || closing {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn read_request(stream: &mut impl Read) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).ok()?;
    let path = head.split_whitespace().nth(1)?.to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })?
        .parse()
        .ok()?;
    let mut body = vec![0; length];
    stream.read_exact(&mut body).ok()?;
    Some((path, body))
}

/// Writes a reply, saying that the connection closes after it when `closing` (the client
/// then connects again for its next request).
fn write_reply(stream: &mut impl Write, body: &[u8], closing: bool) -> bool {
    let close = if closing { "connection: close\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{close}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).is_ok()
        && stream.write_all(body).is_ok()
        && stream.flush().is_ok()
}

/// Announces a large reply and sends it one byte a second.
fn trickle(stream: &mut impl Write) -> bool {
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n");
    for _ in 0..100_000 {
        if stream
            .write_all(&[1])
            .and_then(|()| stream.flush())
            .is_err()
        {
            return false;
        }
        thread::sleep(Duration::from_secs(1));
    }
    false
}

/// A database built here, signed by `owner`: its root (the owner admin, `writer` allowed to
/// write, `readers` to read), `len` data entries in a chain on it, then the writer's
/// revocation.
pub fn chain_of(
    owner: &PrivateKey,
    writer: &PrivateKey,
    readers: &[PublicKey],
    len: usize,
) -> Vec<Entry> {
    use mnemo::database::settings::{auth_key, auth_value};
    use mnemo::database::Grant;
    let mut settings = BTreeMap::new();
    settings.insert("name".to_string(), Op::Set("\"d\"".into()));
    let read = readers
        .iter()
        .map(|reader| (*reader, Grant::active(Permission::Read, None)));
    for (key, grant) in [
        (
            owner.public_key(),
            Grant::active(Permission::Admin, Some(0)),
        ),
        (writer.public_key(), Grant::active(Permission::Write, None)),
    ]
    .into_iter()
    .chain(read)
    {
        settings.insert(auth_key(&key), Op::Set(auth_value(grant)));
    }
    let root = EntryContent {
        db: None,
        parents: vec![],
        height: 0,
        ops: [("_settings".to_string(), settings)].into_iter().collect(),
        author: owner.public_key(),
    }
    .sign(owner)
    .unwrap();
    let mut entries = vec![root];
    for i in 0..=len {
        let ops = if i < len {
            let data = [(format!("k{}", i % 50), Op::Set(i.to_string()))];
            [("s".to_string(), data.into_iter().collect())]
        } else {
            let revoked = Grant::active(Permission::Write, None).revoked();
            let revoke = [(auth_key(&writer.public_key()), Op::Set(auth_value(revoked)))];
            [("_settings".to_string(), revoke.into_iter().collect())]
        };
        entries.push(on_top(&entries, owner, ops.into_iter().collect()));
    }
    entries
}

/// [`chain_of`] by keys made for it, `reader` allowed to read.
pub fn chain_readable_by(reader: PublicKey, len: usize) -> Vec<Entry> {
    let owner = PrivateKey::generate().unwrap();
    let writer = PrivateKey::generate().unwrap();
    chain_of(&owner, &writer, &[reader], len)
}

/// An entry by `author` whose only parent is the last of `entries`.
pub fn on_top(entries: &[Entry], author: &PrivateKey, ops: Ops) -> Entry {
    let last = entries.last().unwrap();
    EntryContent {
        db: Some(entries[0].id()),
        parents: vec![last.id()],
        height: last.content().height + 1,
        ops,
        author: author.public_key(),
    }
    .sign(author)
    .unwrap()
}

/// The encoded reply to `ids` that lists `ids` from place `from` (a position is a place
/// plus one), at most `size` of them, saying whether more follow.
pub fn page_of(ids: &[EntryId], from: usize, size: usize) -> Vec<u8> {
    let from = from.min(ids.len());
    let to = (from + size).min(ids.len());
    IdsPage {
        ids: ids[from..to].to_vec(),
        next: to as u64,
        more: to < ids.len(),
    }
    .encode()
}

/// The encoded reply to `ids` that lists all of `ids` at once: the last page.
pub fn whole_page(ids: &[EntryId]) -> Vec<u8> {
    page_of(ids, 0, ids.len())
}

/// The encoded reply to `get`: those of `entries` asked for, in the order asked.
pub fn entries_asked(entries: &[Entry], asked: &[EntryId]) -> Vec<u8> {
    let by_id: BTreeMap<EntryId, &[u8]> = entries.iter().map(|e| (e.id(), e.bytes())).collect();
    let reply: Vec<Vec<u8>> = asked
        .iter()
        .filter_map(|id| by_id.get(id).map(|b| b.to_vec()))
        .collect();
    wire::encode_entries(&reply)
}
