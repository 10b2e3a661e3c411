//! What sync remembers in the `_sync` system database: the peers that proved their device
//! key, the databases local users asked for, and what each local user tracks (resumed when
//! the user logs in); and, in instance metadata, how far each round got per peer, database
//! and direction.

use serde::{Deserialize, Serialize};

use super::PeerAddr;
use crate::crypto::PublicKey;
use crate::database::{now_ms, Database, Table};
use crate::entry::EntryId;
use crate::error::{Error, Result};

/// Peers seen, by device id.
const PEERS: Table<PeerRecord> = Table::new("peers", "peer record");
/// Databases a local user asked for (synced or tracked by id), by id: only these may
/// arrive here by push from a peer before this instance holds them.
const WANTED: Table<WantedRecord> = Table::new("wanted", "wanted database");

/// What local users track, by [`track_key`].
const TRACKS: Table<TrackRecord> = Table::new("tracks", "tracked database");

/// A database a local user keeps in sync with a peer.
#[derive(Debug, Serialize, Deserialize)]
struct TrackRecord {
    /// The user's id.
    requester: String,
    db: EntryId,
    /// The peer's `host:port`.
    host_port: String,
    /// The device id the peer proved (or was pinned to) when tracking began, if known:
    /// resumed tracking accepts only that device.
    device: Option<PublicKey>,
    /// When tracking began, milliseconds since the Unix epoch.
    since: u64,
}

/// The key of a track: `<requester>/<database>/<host:port>`.
fn track_key(requester: &str, db: &EntryId, host_port: &str) -> String {
    format!("{requester}/{db}/{host_port}")
}

/// A database a local user asked for.
#[derive(Debug, Serialize, Deserialize)]
struct WantedRecord {
    /// When it was first asked for, milliseconds since the Unix epoch.
    since: u64,
}

/// A peer that proved its device key.
#[derive(Debug, Serialize, Deserialize)]
struct PeerRecord {
    /// When it first did, milliseconds since the Unix epoch. (Named for what earlier builds
    /// kept here, the last time, rewritten each time an engine first met the peer: a
    /// signed entry added to `_sync` at every restart.)
    #[serde(rename = "last_seen")]
    first_seen: u64,
}

/// Which way a cursor tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    /// How far this side has pulled the peer's storage order.
    Pull,
    /// How far this side has pushed its own storage order.
    Push,
}

/// How far rounds got through a storage order: a position in it, and an entry the peer held
/// there. A pull keeps the entry the peer listed at the position: a peer that no longer
/// lists it there had its storage order change under the cursor (restored from a backup,
/// or a database forgotten and pulled again by a build that handed positions out again),
/// and the pull starts again from the beginning. A push keeps the last entry (by this
/// instance's order) the peer held or took: a peer that no longer holds it lost what was
/// pushed to it, and the push starts again from the beginning, at most once per
/// [`PUSH_RESTART_GAP_MS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Cursor {
    /// The last position taken (0: the beginning).
    pub position: u64,
    /// The entry the peer held, as above; `None` when none is known (nothing taken yet, a
    /// page that listed nothing, a cursor saved by a build that kept none).
    pub held: Option<EntryId>,
    /// When a push last started again from the beginning, in ms since the epoch (0: never).
    pub restarted_ms: u64,
}

/// The least time between two pushes to one peer of one database that start again from
/// the beginning because it no longer holds what it held: each may send the whole database,
/// and a peer can claim to have lost it (1 hour).
pub(super) const PUSH_RESTART_GAP_MS: u64 = 60 * 60 * 1000;

impl Cursor {
    /// A cursor at `position`, where the peer held `held`.
    pub fn new(position: u64, held: Option<EntryId>) -> Self {
        Cursor {
            position,
            held,
            restarted_ms: 0,
        }
    }

    /// Its record: the position (8 bytes big-endian), then the held entry's 32 bytes if
    /// known, then `restarted_ms` (8 bytes) if not 0.
    fn encode(&self) -> Vec<u8> {
        let mut out = self.position.to_be_bytes().to_vec();
        if let Some(held) = &self.held {
            out.extend_from_slice(held.as_bytes());
        }
        if self.restarted_ms != 0 {
            out.extend_from_slice(&self.restarted_ms.to_be_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let malformed = || Error::Corrupt(format!("a sync cursor of {} bytes", bytes.len()));
        let u64_at = |at: usize| {
            let field: [u8; 8] = bytes[at..at + 8].try_into().expect("8 bytes");
            u64::from_be_bytes(field)
        };
        let held_at = |at: usize| {
            let field: [u8; 32] = bytes[at..at + 32].try_into().expect("32 bytes");
            Some(EntryId::from_bytes(field))
        };
        let (held, restarted_ms) = match bytes.len() {
            8 => (None, 0),
            16 => (None, u64_at(8)),
            40 => (held_at(8), 0),
            48 => (held_at(8), u64_at(40)),
            _ => return Err(malformed()),
        };
        Ok(Cursor {
            position: u64_at(0),
            held,
            restarted_ms,
        })
    }
}

/// The instance metadata record of a cursor ([`Cursor::encode`]):
/// `sync-cursor/<peer>/<database>/<pull|push>`. Cursors are this device's own bookkeeping,
/// replaced in place: as `_sync` records, every round that moved one added a signed entry
/// to `_sync`, which grew with each round for good.
fn cursor_record(peer: &PublicKey, db: &EntryId, direction: Direction) -> String {
    let way = match direction {
        Direction::Pull => "pull",
        Direction::Push => "push",
    };
    format!("sync-cursor/{peer}/{db}/{way}")
}

/// The `_sync` database (device-signed).
pub(super) struct SyncState {
    db: Database,
}

impl SyncState {
    /// The state kept in `db`.
    pub(super) fn new(db: Database) -> Self {
        SyncState { db }
    }

    /// Records `peer`, a device that proved its key, the first time something is kept for it
    /// (a cursor): forgetting a database finds its cursors through these records.
    pub(super) fn peer_seen(&self, peer: &PublicKey) -> Result<()> {
        if PEERS.get(&self.db, &peer.to_text())?.is_none() {
            let record = PeerRecord {
                first_seen: now_ms(),
            };
            PEERS.put(&self.db, &peer.to_text(), &record)?;
        }
        Ok(())
    }

    /// The peers recorded ([`SyncState::peer_seen`]).
    pub(super) fn peers(&self) -> Result<Vec<PublicKey>> {
        Ok(PEERS
            .all(&self.db)?
            .into_iter()
            .filter_map(|(peer, _)| PublicKey::parse(&peer).ok())
            .collect())
    }

    /// Records that a local user asked for database `db` (once).
    pub(super) fn want(&self, db: &EntryId) -> Result<()> {
        if WANTED.get(&self.db, &db.to_text())?.is_none() {
            WANTED.put(&self.db, &db.to_text(), &WantedRecord { since: now_ms() })?;
        }
        Ok(())
    }

    /// Whether a local user asked for database `db`.
    pub(super) fn wants(&self, db: &EntryId) -> Result<bool> {
        Ok(WANTED.get(&self.db, &db.to_text())?.is_some())
    }

    /// Records that user `requester` tracks `db` with the peer at `addr` (pinned to the
    /// device it names, if any).
    pub(super) fn record_track(
        &self,
        requester: &str,
        db: &EntryId,
        addr: &PeerAddr,
    ) -> Result<()> {
        let record = TrackRecord {
            requester: requester.to_string(),
            db: *db,
            host_port: addr.host_port.clone(),
            device: addr.device,
            since: now_ms(),
        };
        TRACKS
            .put(
                &self.db,
                &track_key(requester, db, &addr.host_port),
                &record,
            )
            .map(drop)
    }

    /// Forgets that `requester` tracks `db` at `host_port`; whether it did.
    pub(super) fn forget_track(
        &self,
        requester: &str,
        db: &EntryId,
        host_port: &str,
    ) -> Result<bool> {
        TRACKS.delete_if_any(&self.db, &track_key(requester, db, host_port))
    }

    /// Forgets, as one commit, the tracks of `db` recorded for `requester`; with
    /// `everyone`, the tracks of every requester and all else kept about `db` (whether a
    /// local user asked for it, and first its cursors, each its own write: one stopped
    /// part-way only makes the next round with that peer start from the beginning), for a
    /// database that leaves storage.
    pub(super) fn forget_db(&self, requester: &str, db: &EntryId, everyone: bool) -> Result<()> {
        let mut txn = self.db.begin();
        let mut changed = false;
        for (key, record) in TRACKS.all(&self.db)? {
            if record.db == *db && (everyone || record.requester == requester) {
                TRACKS.remove(&mut txn, &key)?;
                changed = true;
            }
        }
        if everyone {
            for (peer, _) in PEERS.all(&self.db)? {
                let Ok(peer) = PublicKey::parse(&peer) else {
                    continue;
                };
                for direction in [Direction::Pull, Direction::Push] {
                    self.db
                        .backend()
                        .meta_delete(&cursor_record(&peer, db, direction), None)?;
                }
            }
            if WANTED.get(&self.db, &db.to_text())?.is_some() {
                WANTED.remove(&mut txn, &db.to_text())?;
                changed = true;
            }
        }
        if changed {
            txn.commit()?;
        }
        Ok(())
    }

    /// What `requester` tracks: each database with its peer's address (pinned when the
    /// device was known).
    pub(super) fn tracks_of(&self, requester: &str) -> Result<Vec<(EntryId, PeerAddr)>> {
        Ok(TRACKS
            .all(&self.db)?
            .into_iter()
            .filter(|(_, r)| r.requester == requester)
            .map(|(_, r)| {
                let addr = PeerAddr {
                    device: r.device,
                    host_port: r.host_port,
                };
                (r.db, addr)
            })
            .collect())
    }

    /// The cursor of `peer`, `db`, `direction` (the beginning before the first round).
    pub(super) fn cursor(
        &self,
        peer: &PublicKey,
        db: &EntryId,
        direction: Direction,
    ) -> Result<Cursor> {
        match self
            .db
            .backend()
            .meta_get(&cursor_record(peer, db, direction))?
        {
            Some(bytes) => Cursor::decode(&bytes),
            None => Ok(Cursor::default()),
        }
    }

    /// Moves the cursor of `peer`, `db`, `direction` to `cursor`.
    pub(super) fn save_cursor(
        &self,
        peer: &PublicKey,
        db: &EntryId,
        direction: Direction,
        cursor: Cursor,
    ) -> Result<()> {
        self.db
            .backend()
            .meta_put(&cursor_record(peer, db, direction), &cursor.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_read_back_as_saved_and_as_earlier_builds_saved_them() {
        let held = EntryId::of_bytes(b"an entry");
        let restarted = |held| Cursor {
            restarted_ms: 1_700_000_000_000,
            ..Cursor::new(3, held)
        };
        let cursors = [
            Cursor::new(7, Some(held)),
            Cursor::new(9, None),
            restarted(Some(held)),
            restarted(None),
        ];
        for cursor in cursors {
            assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        }
        // Earlier builds kept the position alone.
        assert_eq!(
            Cursor::decode(&5u64.to_be_bytes()).unwrap(),
            Cursor::new(5, None)
        );
        for length in [0, 7, 9, 15, 17, 39, 41, 47, 49] {
            let err = Cursor::decode(&vec![1; length]).unwrap_err();
            assert!(matches!(err, Error::Corrupt(_)), "{length}: {err}");
        }
    }
}
