//! The sync protocol's messages and their binary encoding (version 1).
//!
//! Every message starts with the protocol version byte. Requests on a database travel in a
//! signed [`Envelope`]; replies are the request's reply body, or an [`ErrorReply`] with a
//! non-200 HTTP status. Decoding is strict and bounded: anything malformed, truncated,
//! oversized or followed by trailing bytes is refused.

use crate::crypto::{PublicKey, Signature};
use crate::database::Permission;
use crate::entry::codec::{Reader, Writer};
use crate::entry::{EntryId, MAX_ENTRY_BYTES};
use crate::error::{Error, Result, Status};

/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Largest message accepted, in bytes.
pub const MAX_MESSAGE: usize = 32 << 20;
/// Most ids in one page or request.
pub const MAX_IDS: usize = 1024;
/// Most entries in one `get` reply or `push` request.
pub const MAX_ENTRIES: usize = 256;
/// Target size of one batch of entries (a batch may exceed it by one entry).
pub const BATCH_BYTES: usize = 4 << 20;
/// Largest reply to any request but [`Request::Get`], in bytes: the largest an honest peer
/// sends (a page of [`MAX_IDS`] ids, as many holder proofs, an error's message) fits well
/// within it.
pub const MAX_SMALL_REPLY: usize = 128 << 10;
/// How far a signed request's timestamp may be from the server's clock (either way).
pub const WINDOW_MS: u64 = 5 * 60 * 1000;

const REQUEST_DOMAIN: &[u8] = b"mnemo/sync/request/v1\0";
/// An envelope's signature, last in its bytes.
const SIGNATURE_BYTES: usize = std::mem::size_of::<Signature>();

fn bad(what: &str) -> Error {
    Error::Network(format!("malformed sync message: {what}"))
}

fn start(w: &mut Writer) {
    w.u8(VERSION);
}

fn open(bytes: &[u8]) -> Result<Reader<'_>> {
    if bytes.len() > MAX_MESSAGE {
        return Err(bad("too large"));
    }
    let mut r = Reader::new(bytes);
    let version = r.u8().map_err(|_| bad("empty"))?;
    if version != VERSION {
        return Err(Error::Network(format!(
            "peer speaks sync protocol version {version}; this build speaks {VERSION}"
        )));
    }
    Ok(r)
}

fn finish(r: Reader<'_>) -> Result<()> {
    if !r.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(())
}

fn ids(w: &mut Writer, ids: &[EntryId]) {
    w.u32(ids.len() as u32);
    for id in ids {
        w.raw(id.as_bytes());
    }
}

fn read_ids(r: &mut Reader<'_>) -> Result<Vec<EntryId>> {
    let ids = read_32s(r, "ids")?;
    Ok(ids.into_iter().map(EntryId::from_bytes).collect())
}

/// A count, then that many 32-byte items (ids, hashes), at most [`MAX_IDS`].
fn read_32s(r: &mut Reader<'_>, what: &str) -> Result<Vec<[u8; 32]>> {
    let n = r
        .count(MAX_IDS, what)
        .map_err(|_| bad(&format!("too many {what}")))?;
    (0..n)
        .map(|_| r.array().map_err(|_| bad(&format!("truncated {what}"))))
        .collect()
}

fn blobs(w: &mut Writer, items: &[Vec<u8>]) {
    w.u32(items.len() as u32);
    for item in items {
        w.u32(item.len() as u32);
        w.raw(item);
    }
}

fn read_blobs(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>> {
    let n = r
        .count(MAX_ENTRIES, "entries")
        .map_err(|_| bad("too many entries"))?;
    (0..n)
        .map(|_| {
            let len = r
                .count(MAX_ENTRY_BYTES, "entry bytes")
                .map_err(|_| bad("entry too large"))?;
            Ok(r.take(len).map_err(|_| bad("truncated entry"))?.to_vec())
        })
        .collect()
}

fn key(r: &mut Reader<'_>) -> Result<PublicKey> {
    Ok(PublicKey::from_bytes(
        r.array().map_err(|_| bad("truncated key"))?,
    ))
}

/// What a request on a database asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The database's tips.
    Tips,
    /// A page of entry ids in the server's storage order, after position `after`.
    Ids { after: u64, limit: u32 },
    /// These entries' bytes.
    Get(Vec<EntryId>),
    /// Which of these entries the server holds.
    Have(Vec<EntryId>),
    /// Entries for the server to verify and take.
    Push(Vec<Vec<u8>>),
    /// Answer once the server's storage position of the database is other than `after`
    /// (past it; or before it, once the server's storage went back), or after a while (a
    /// long poll; only at the `watch` endpoint). The reply is the
    /// position ([`encode_position`]).
    Watch { after: u64 },
    /// Ask for `permission` on the database for the signing key (an access request, made
    /// with a ticket; the key need not hold anything yet). The reply is the request's id
    /// ([`encode_text`]).
    Ask { permission: Permission },
    /// The server's holder proofs by the keys named: what a client asks before pushing,
    /// naming the keys that may read the database in its copy by their hashes salted with
    /// `salt` (at most [`MAX_IDS`]; see [`crate::sync::holders::key_hash`]). The reply is
    /// [`encode_proofs`].
    Holders {
        salt: [u8; 16],
        hashes: Vec<[u8; 32]>,
    },
}

impl Request {
    /// The largest reply this request can have from an honest peer, in bytes: a client
    /// reads no more, so a peer answering a small question at length is cut off before
    /// its reply is held. Only entries come in large replies.
    pub fn largest_reply(&self) -> usize {
        match self {
            Request::Get(_) => MAX_MESSAGE,
            _ => MAX_SMALL_REPLY,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Request::Tips => 1,
            Request::Ids { .. } => 2,
            Request::Get(_) => 3,
            Request::Have(_) => 4,
            Request::Push(_) => 5,
            Request::Watch { .. } => 6,
            Request::Ask { .. } => 7,
            Request::Holders { .. } => 8,
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.u8(self.tag());
        match self {
            Request::Tips => {}
            Request::Ids { after, limit } => {
                w.u64(*after);
                w.u32(*limit);
            }
            Request::Get(list) | Request::Have(list) => ids(w, list),
            Request::Push(entries) => blobs(w, entries),
            Request::Watch { after } => w.u64(*after),
            Request::Ask { permission } => w.u8(match permission {
                Permission::Read => 1,
                Permission::Write => 2,
                Permission::Admin => 3,
            }),
            Request::Holders { salt, hashes } => {
                w.raw(salt);
                w.u32(hashes.len() as u32);
                for hash in hashes {
                    w.raw(hash);
                }
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Request> {
        Ok(match r.u8().map_err(|_| bad("truncated request"))? {
            1 => Request::Tips,
            2 => Request::Ids {
                after: r.u64().map_err(|_| bad("truncated"))?,
                limit: r.u32().map_err(|_| bad("truncated"))?,
            },
            3 => Request::Get(read_ids(r)?),
            4 => Request::Have(read_ids(r)?),
            5 => Request::Push(read_blobs(r)?),
            6 => Request::Watch {
                after: r.u64().map_err(|_| bad("truncated"))?,
            },
            7 => Request::Ask {
                permission: match r.u8().map_err(|_| bad("truncated"))? {
                    1 => Permission::Read,
                    2 => Permission::Write,
                    3 => Permission::Admin,
                    other => return Err(bad(&format!("unknown permission {other}"))),
                },
            },
            8 => Request::Holders {
                salt: r.array().map_err(|_| bad("truncated salt"))?,
                hashes: read_32s(r, "hashes")?,
            },
            other => return Err(bad(&format!("unknown request {other}"))),
        })
    }

    /// Decodes a request from its own encoding (the part of an [`Envelope`] between the
    /// nonce and the signature), strictly: nothing may follow it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Request> {
        let mut r = Reader::new(bytes);
        let request = Request::decode(&mut r)?;
        finish(r)?;
        Ok(request)
    }

    /// The request's own encoding (see [`Request::from_bytes`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.encode(&mut w);
        w.0
    }
}

/// A request on one database, signed by a key that must hold at least read on it.
/// Bound to the server's device id, fresh (timestamp) and unique (nonce), so it cannot be
/// replayed or redirected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub db: EntryId,
    pub key: PublicKey,
    pub server: PublicKey,
    pub timestamp_ms: u64,
    pub nonce: [u8; 16],
    pub request: Request,
    pub signature: Signature,
}

impl Envelope {
    /// The bytes the signature of the envelope received as `bytes` covers, in two parts:
    /// the same as [`Envelope::signed_part`] of its decoding (decoding takes only the
    /// encoding [`Envelope::encode`] makes: the signature last), without copying them.
    pub fn signed_parts(bytes: &[u8]) -> [&[u8]; 2] {
        let signed = bytes.len().saturating_sub(SIGNATURE_BYTES);
        [REQUEST_DOMAIN, &bytes[..signed]]
    }

    /// The bytes the signature covers.
    pub fn signed_part(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(REQUEST_DOMAIN);
        self.body(&mut w);
        w.0
    }

    fn body(&self, w: &mut Writer) {
        start(w);
        w.raw(self.db.as_bytes());
        w.raw(self.key.as_bytes());
        w.raw(self.server.as_bytes());
        w.u64(self.timestamp_ms);
        w.raw(&self.nonce);
        self.request.encode(w);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.body(&mut w);
        w.raw(&self.signature);
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope> {
        let mut r = open(bytes)?;
        let truncated = |_| bad("truncated envelope");
        let db = EntryId::from_bytes(r.array().map_err(truncated)?);
        let key = key(&mut r)?;
        let server = self::key(&mut r)?;
        let timestamp_ms = r.u64().map_err(truncated)?;
        let nonce = r.array().map_err(truncated)?;
        let request = Request::decode(&mut r)?;
        let signature = r.array().map_err(truncated)?;
        finish(r)?;
        Ok(Envelope {
            db,
            key,
            server,
            timestamp_ms,
            nonce,
            request,
            signature,
        })
    }
}

/// The reply to [`Request::Ids`].
#[derive(Debug, PartialEq, Eq)]
pub struct IdsPage {
    pub ids: Vec<EntryId>,
    /// The position to ask after next time.
    pub next: u64,
    pub more: bool,
}

impl IdsPage {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        start(&mut w);
        ids(&mut w, &self.ids);
        w.u64(self.next);
        w.u8(u8::from(self.more));
        w.0
    }
    pub fn decode(bytes: &[u8]) -> Result<IdsPage> {
        let mut r = open(bytes)?;
        let ids = read_ids(&mut r)?;
        let next = r.u64().map_err(|_| bad("truncated"))?;
        let more = match r.u8().map_err(|_| bad("truncated"))? {
            0 => false,
            1 => true,
            _ => return Err(bad("bad flag")),
        };
        finish(r)?;
        Ok(IdsPage { ids, next, more })
    }
}

/// Longest text reply ([`encode_text`]), in bytes.
pub const MAX_TEXT: usize = 256;

/// A reply that is a short text (a request id).
pub fn encode_text(text: &str) -> Vec<u8> {
    let mut w = Writer::default();
    start(&mut w);
    w.u32(text.len() as u32);
    w.raw(text.as_bytes());
    w.0
}

/// Decodes [`encode_text`] (at most [`MAX_TEXT`] bytes of UTF-8).
pub fn decode_text(bytes: &[u8]) -> Result<String> {
    let mut r = open(bytes)?;
    let len = r
        .count(MAX_TEXT, "text")
        .map_err(|_| bad("text too long"))?;
    let text = r.take(len).map_err(|_| bad("truncated text"))?;
    let text = std::str::from_utf8(text).map_err(|_| bad("text is not UTF-8"))?;
    let text = text.to_string();
    finish(r)?;
    Ok(text)
}

/// The reply to [`Request::Watch`]: the server's storage position of the database.
pub fn encode_position(position: u64) -> Vec<u8> {
    let mut w = Writer::default();
    start(&mut w);
    w.u64(position);
    w.0
}

/// Decodes [`encode_position`].
pub fn decode_position(bytes: &[u8]) -> Result<u64> {
    let mut r = open(bytes)?;
    let position = r.u64().map_err(|_| bad("truncated position"))?;
    finish(r)?;
    Ok(position)
}

/// A reply that is a list of ids (tips).
pub fn encode_ids(list: &[EntryId]) -> Vec<u8> {
    let mut w = Writer::default();
    start(&mut w);
    ids(&mut w, list);
    w.0
}

/// Decodes [`encode_ids`].
pub fn decode_ids(bytes: &[u8]) -> Result<Vec<EntryId>> {
    let mut r = open(bytes)?;
    let list = read_ids(&mut r)?;
    finish(r)?;
    Ok(list)
}

/// A reply that is a list of entries.
pub fn encode_entries(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut w = Writer::default();
    start(&mut w);
    blobs(&mut w, entries);
    w.0
}

/// Decodes [`encode_entries`].
pub fn decode_entries(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut r = open(bytes)?;
    let list = read_blobs(&mut r)?;
    finish(r)?;
    Ok(list)
}

/// A reply of one flag byte per item (have: 1 if held; push: 1 if taken).
pub fn encode_flags(flags: &[bool]) -> Vec<u8> {
    let mut w = Writer::default();
    start(&mut w);
    w.u32(flags.len() as u32);
    for f in flags {
        w.u8(u8::from(*f));
    }
    w.0
}

/// Decodes [`encode_flags`].
pub fn decode_flags(bytes: &[u8]) -> Result<Vec<bool>> {
    let mut r = open(bytes)?;
    let n = r
        .count(MAX_IDS, "flags")
        .map_err(|_| bad("too many flags"))?;
    let flags = (0..n)
        .map(|_| match r.u8() {
            Ok(0) => Ok(false),
            Ok(1) => Ok(true),
            _ => Err(bad("bad flag")),
        })
        .collect::<Result<Vec<_>>>()?;
    finish(r)?;
    Ok(flags)
}

/// The reply to a push: one status per entry, in order (`MNEMO_STATUS_OK` when taken).
pub fn encode_statuses(statuses: &[Status]) -> Vec<u8> {
    let mut w = Writer::default();
    start(&mut w);
    w.u32(statuses.len() as u32);
    for s in statuses {
        w.u8(s.code() as u8);
    }
    w.0
}

/// Decodes [`encode_statuses`]: the status codes (a code this build does not know is kept).
pub fn decode_statuses(bytes: &[u8]) -> Result<Vec<i32>> {
    let mut r = open(bytes)?;
    let n = r
        .count(MAX_ENTRIES, "statuses")
        .map_err(|_| bad("too many statuses"))?;
    let statuses = (0..n)
        .map(|_| r.u8().map(i32::from).map_err(|_| bad("truncated")))
        .collect::<Result<Vec<_>>>()?;
    finish(r)?;
    Ok(statuses)
}

/// The reply to [`Request::Holders`]: each proof with the key that made it.
pub fn encode_proofs(proofs: &[(PublicKey, Signature)]) -> Vec<u8> {
    let mut w = Writer::default();
    start(&mut w);
    w.u32(proofs.len() as u32);
    for (key, signature) in proofs {
        w.raw(key.as_bytes());
        w.raw(signature);
    }
    w.0
}

/// Decodes [`encode_proofs`] (at most [`MAX_IDS`] proofs).
pub fn decode_proofs(bytes: &[u8]) -> Result<Vec<(PublicKey, Signature)>> {
    let mut r = open(bytes)?;
    let n = r
        .count(MAX_IDS, "proofs")
        .map_err(|_| bad("too many proofs"))?;
    let proofs = (0..n)
        .map(|_| {
            let key = key(&mut r)?;
            let signature = r.array().map_err(|_| bad("truncated proof"))?;
            Ok((key, signature))
        })
        .collect::<Result<Vec<_>>>()?;
    finish(r)?;
    Ok(proofs)
}

/// A failure: the mnemo status code and a message.
#[derive(Debug, PartialEq, Eq)]
pub struct ErrorReply {
    pub status: i32,
    pub message: String,
}

impl ErrorReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        start(&mut w);
        w.u32(self.status as u32);
        w.str(&self.message);
        w.0
    }
    pub fn decode(bytes: &[u8]) -> Result<ErrorReply> {
        let mut r = open(bytes)?;
        let status = r.u32().map_err(|_| bad("truncated"))? as i32;
        let message = r
            .str(4096, "message")
            .map_err(|_| bad("bad message"))?
            .to_string();
        finish(r)?;
        Ok(ErrorReply { status, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;

    #[test]
    fn envelopes_round_trip_and_reject_damage() {
        let key = PrivateKey::generate().unwrap().public_key();
        let env = Envelope {
            db: EntryId::of_bytes(b"db"),
            key,
            server: key,
            timestamp_ms: 42,
            nonce: [3; 16],
            request: Request::Push(vec![vec![1, 2, 3], vec![]]),
            signature: [9; 64],
        };
        let bytes = env.encode();
        assert_eq!(Envelope::decode(&bytes).unwrap(), env);
        assert_eq!(Envelope::signed_parts(&bytes).concat(), env.signed_part());
        for cut in 0..bytes.len() {
            assert!(Envelope::decode(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Envelope::decode(&longer).is_err());
        let mut other_version = bytes;
        other_version[0] = 2;
        let err = Envelope::decode(&other_version).unwrap_err().to_string();
        assert!(err.contains("version 2"), "{err}");
    }

    #[test]
    fn requests_and_push_statuses_round_trip_alone() {
        for request in [
            Request::Tips,
            Request::Ids { after: 9, limit: 3 },
            Request::Get(vec![EntryId::of_bytes(b"x")]),
            Request::Have(vec![]),
            Request::Push(vec![vec![1, 2]]),
            Request::Holders {
                salt: [1; 16],
                hashes: vec![[2; 32], [3; 32]],
            },
        ] {
            let bytes = request.to_bytes();
            assert_eq!(Request::from_bytes(&bytes).unwrap(), request);
            assert!(Request::from_bytes(&[bytes.as_slice(), &[0]].concat()).is_err());
        }
        let statuses = [Status::Ok, Status::Busy, Status::PermissionDenied];
        assert_eq!(
            decode_statuses(&encode_statuses(&statuses)).unwrap(),
            vec![0, 12, 5]
        );
    }

    #[test]
    fn the_largest_small_replies_fit_their_bound() {
        let key = PrivateKey::generate().unwrap().public_key();
        let ids = vec![EntryId::of_bytes(b"a"); MAX_IDS];
        let page = IdsPage {
            ids: ids.clone(),
            next: u64::MAX,
            more: true,
        };
        let error = ErrorReply {
            status: 5,
            message: "\u{10FFFF}".repeat(1024), // 4,096 bytes: the most decoded
        };
        assert!(ErrorReply::decode(&error.encode()).is_ok());
        let largest = [
            page.encode(),
            encode_ids(&ids),
            encode_flags(&[true; MAX_IDS]),
            encode_statuses(&[Status::Ok; MAX_ENTRIES]),
            encode_proofs(&vec![(key, [0; 64]); MAX_IDS]),
            encode_text(&"x".repeat(MAX_TEXT)),
            encode_position(u64::MAX),
            error.encode(),
        ];
        for reply in largest {
            assert!(reply.len() <= MAX_SMALL_REPLY, "{}", reply.len());
        }
        assert_eq!(Request::Get(ids.clone()).largest_reply(), MAX_MESSAGE);
        assert_eq!(Request::Have(ids).largest_reply(), MAX_SMALL_REPLY);
    }

    #[test]
    fn pages_flags_and_errors_round_trip() {
        let page = IdsPage {
            ids: vec![EntryId::of_bytes(b"a")],
            next: 7,
            more: true,
        };
        assert_eq!(IdsPage::decode(&page.encode()).unwrap(), page);
        assert_eq!(
            decode_flags(&encode_flags(&[true, false])).unwrap(),
            vec![true, false]
        );
        let e = ErrorReply {
            status: 5,
            message: "no".into(),
        };
        assert_eq!(ErrorReply::decode(&e.encode()).unwrap(), e);
        assert!(decode_ids(&[VERSION, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn proofs_round_trip_and_reject_damage() {
        let key = PrivateKey::generate().unwrap().public_key();
        let proofs = vec![(key, [7; 64]), (key, [8; 64])];
        let bytes = encode_proofs(&proofs);
        assert_eq!(decode_proofs(&bytes).unwrap(), proofs);
        for cut in 0..bytes.len() {
            assert!(decode_proofs(&bytes[..cut]).is_err());
        }
        assert!(decode_proofs(&[bytes.as_slice(), &[0]].concat()).is_err());
        let too_many = [&[VERSION][..], &(MAX_IDS as u32 + 1).to_be_bytes()].concat();
        assert!(decode_proofs(&too_many).is_err());
    }
}
