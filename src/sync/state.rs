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

/// The instance metadata record of a cursor (a storage position, 8 bytes big-endian; read
/// from its first 8 bytes, so that a later build may add to it):
/// `sync-cursor/<database>/<peer>/<pull|push>`. Cursors are this device's own bookkeeping,
/// replaced in place: as `_sync` records, every round that moved one added a signed entry
/// to `_sync`, which grew with each round for good.
fn cursor_record(peer: &PublicKey, db: &EntryId, direction: Direction) -> String {
    direction_record(CURSORS, peer, db, direction)
}

/// The instance metadata record of when rounds with `peer` on `db` last started again from
/// the beginning in `direction` (see [`SyncState::start_again`]; ms since the epoch, 8 bytes
/// big-endian): `sync-restart/<database>/<peer>/<pull|push>`.
fn restart_record(peer: &PublicKey, db: &EntryId, direction: Direction) -> String {
    direction_record(RESTARTS, peer, db, direction)
}

/// The kind of [`cursor_record`]s.
const CURSORS: &str = "sync-cursor";
/// The kind of [`restart_record`]s.
const RESTARTS: &str = "sync-restart";

/// `<kind>/<database>/<peer>/<pull|push>`: the database first, so that one prefix
/// ([`database_records`]) names all of a database's records of a kind.
fn direction_record(kind: &str, peer: &PublicKey, db: &EntryId, direction: Direction) -> String {
    let way = match direction {
        Direction::Pull => "pull",
        Direction::Push => "push",
    };
    format!("{}{peer}/{way}", database_records(kind, db))
}

/// The prefix of every record of `kind` about `db`, whatever the peer and direction.
fn database_records(kind: &str, db: &EntryId) -> String {
    format!("{kind}/{db}/")
}

/// The least time between two rounds with one peer, on one database, that start again from
/// the beginning in one direction because the peer's copy and this one differ in a way
/// the cursor cannot explain: each may list, or send, the whole database, and a peer can
/// make them happen at will (1 hour).
pub(super) const RESTART_GAP_MS: u64 = 60 * 60 * 1000;

/// The `_sync` database (device-signed).
pub(super) struct SyncState {
    db: Database,
}

impl SyncState {
    /// The state kept in `db`.
    pub(super) fn new(db: Database) -> Self {
        SyncState { db }
    }

    /// Deletes the cursors and restart times that builds before the thirty-eighth session
    /// kept, keyed peer first (`<kind>/<peer>/<database>/<way>`): they are no longer read,
    /// and a forgotten database's would stay for good. Rounds with those peers start from
    /// the beginning once (each side lists its ids again; nothing is sent twice). A range
    /// of the metadata's index: nothing to do costs one look.
    pub(super) fn drop_records_of_earlier_builds(&self) -> Result<()> {
        let backend = self.db.backend();
        for kind in [CURSORS, RESTARTS] {
            backend.meta_delete_prefix(&format!("{kind}/{}", PublicKey::TEXT_PREFIX))?;
        }
        Ok(())
    }

    /// Records `peer`, a device that proved its key, the first time something is kept for it
    /// (a cursor): the devices recorded are bounded (see `SyncEngine::note_peer`).
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
            // One delete each, however many peers the database was synced with.
            let backend = self.db.backend();
            for kind in [CURSORS, RESTARTS] {
                backend.meta_delete_prefix(&database_records(kind, db))?;
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

    /// The cursor of `peer`, `db`, `direction` (0 before the first round).
    pub(super) fn cursor(
        &self,
        peer: &PublicKey,
        db: &EntryId,
        direction: Direction,
    ) -> Result<u64> {
        let Some(bytes) = self
            .db
            .backend()
            .meta_get(&cursor_record(peer, db, direction))?
        else {
            return Ok(0);
        };
        Ok(u64::from_be_bytes(first_8_bytes(&bytes, "a sync cursor")?))
    }

    /// Moves the cursor of `peer`, `db`, `direction` to `position`.
    pub(super) fn save_cursor(
        &self,
        peer: &PublicKey,
        db: &EntryId,
        direction: Direction,
        position: u64,
    ) -> Result<()> {
        self.db
            .backend()
            .meta_put(&cursor_record(peer, db, direction), &position.to_be_bytes())
    }

    /// Whether the cursor of `peer`, `db`, `direction` may go back to the beginning now
    /// ([`SyncState::start_again`]): it last did at least [`RESTART_GAP_MS`] ago (or the
    /// clock was set back since).
    pub(super) fn may_start_again(
        &self,
        peer: &PublicKey,
        db: &EntryId,
        direction: Direction,
    ) -> Result<bool> {
        let last = match self
            .db
            .backend()
            .meta_get(&restart_record(peer, db, direction))?
        {
            Some(bytes) => u64::from_be_bytes(first_8_bytes(&bytes, "a sync restart time")?),
            None => 0,
        };
        let now = now_ms();
        Ok(last > now || now - last >= RESTART_GAP_MS)
    }

    /// Moves the cursor of `peer`, `db`, `direction` back to the beginning, recording when.
    pub(super) fn start_again(
        &self,
        peer: &PublicKey,
        db: &EntryId,
        direction: Direction,
    ) -> Result<()> {
        let now = now_ms().to_be_bytes();
        (self.db.backend()).meta_put(&restart_record(peer, db, direction), &now)?;
        self.save_cursor(peer, db, direction, 0)
    }
}

/// The first 8 bytes of `record` (`what`).
fn first_8_bytes(record: &[u8], what: &str) -> Result<[u8; 8]> {
    record
        .first_chunk::<8>()
        .copied()
        .ok_or_else(|| Error::Corrupt(format!("{what} is shorter than 8 bytes")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::MemoryBackend;
    use crate::crypto::PrivateKey;
    use crate::database::Registry;

    fn state() -> SyncState {
        let registry = Arc::new(Registry::new(Arc::new(MemoryBackend::new())));
        let device = Arc::new(PrivateKey::generate().unwrap());
        let key = device.public_key();
        SyncState::new(registry.create("_sync", device, key).unwrap())
    }

    #[test]
    fn a_cursor_starts_again_at_most_once_an_hour_in_each_direction() {
        let state = state();
        let peer = PrivateKey::generate().unwrap().public_key();
        let db = EntryId::of_bytes(b"a database");
        state.peer_seen(&peer).unwrap();
        let again = |db: &EntryId, direction| {
            let may = state.may_start_again(&peer, db, direction).unwrap();
            if may {
                state.start_again(&peer, db, direction).unwrap();
            }
            may
        };
        state.save_cursor(&peer, &db, Direction::Pull, 7).unwrap();
        assert!(again(&db, Direction::Pull));
        assert_eq!(state.cursor(&peer, &db, Direction::Pull).unwrap(), 0);
        state.save_cursor(&peer, &db, Direction::Pull, 9).unwrap();
        assert!(!again(&db, Direction::Pull));
        assert_eq!(state.cursor(&peer, &db, Direction::Pull).unwrap(), 9);
        // The other direction, and another database, have their own.
        state.save_cursor(&peer, &db, Direction::Push, 3).unwrap();
        assert!(again(&db, Direction::Push));
        let other = EntryId::of_bytes(b"another database");
        state
            .save_cursor(&peer, &other, Direction::Pull, 3)
            .unwrap();
        assert!(again(&other, Direction::Pull));
        // An hour later, again; and after the clock was set back.
        let backend = state.db.backend();
        let record = restart_record(&peer, &db, Direction::Pull);
        for at in [now_ms() - RESTART_GAP_MS, now_ms() + 60_000] {
            backend.meta_put(&record, &at.to_be_bytes()).unwrap();
            assert!(again(&db, Direction::Pull));
            assert!(!again(&db, Direction::Pull));
        }
        // Forgetting the database forgets when it started again.
        state.forget_db("", &db, true).unwrap();
        assert_eq!(backend.meta_get(&record).unwrap(), None);
    }

    #[test]
    fn forgetting_a_database_forgets_its_records_with_every_peer_and_only_its() {
        let state = state();
        let db = EntryId::of_bytes(b"a database");
        let other = EntryId::of_bytes(b"another database");
        // Peers recorded or not (a record lost, or never written): all are forgotten.
        let peers: Vec<PublicKey> = (0..3)
            .map(|_| PrivateKey::generate().unwrap().public_key())
            .collect();
        state.peer_seen(&peers[0]).unwrap();
        for peer in &peers {
            for direction in [Direction::Pull, Direction::Push] {
                for db in [&db, &other] {
                    state.start_again(peer, db, direction).unwrap();
                    state.save_cursor(peer, db, direction, 5).unwrap();
                }
            }
        }
        state.forget_db("", &db, true).unwrap();
        let backend = state.db.backend();
        for peer in &peers {
            for direction in [Direction::Pull, Direction::Push] {
                assert_eq!(state.cursor(peer, &db, direction).unwrap(), 0);
                let restart = restart_record(peer, &db, direction);
                assert_eq!(backend.meta_get(&restart).unwrap(), None);
                assert_eq!(state.cursor(peer, &other, direction).unwrap(), 5);
                let kept = restart_record(peer, &other, direction);
                assert!(backend.meta_get(&kept).unwrap().is_some());
            }
        }
    }

    #[test]
    fn records_of_earlier_builds_are_dropped_and_only_they() {
        let state = state();
        let peer = PrivateKey::generate().unwrap().public_key();
        let db = EntryId::of_bytes(b"a database");
        let backend = state.db.backend();
        let old: Vec<String> = ["sync-cursor", "sync-restart"]
            .iter()
            .map(|kind| format!("{kind}/{peer}/{db}/pull"))
            .collect();
        for key in &old {
            backend.meta_put(key, &[0, 0, 0, 0, 0, 0, 0, 9]).unwrap();
        }
        state.save_cursor(&peer, &db, Direction::Push, 4).unwrap();
        state.drop_records_of_earlier_builds().unwrap();
        for key in &old {
            assert_eq!(backend.meta_get(key).unwrap(), None, "{key}");
        }
        assert_eq!(state.cursor(&peer, &db, Direction::Push).unwrap(), 4);
    }

    #[test]
    fn a_cursor_record_is_read_from_its_first_8_bytes() {
        let state = state();
        let peer = PrivateKey::generate().unwrap().public_key();
        let db = EntryId::of_bytes(b"a database");
        let record = cursor_record(&peer, &db, Direction::Pull);
        let backend = state.db.backend();
        // What a later build may write: more after the position.
        backend
            .meta_put(&record, &[0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3])
            .unwrap();
        assert_eq!(state.cursor(&peer, &db, Direction::Pull).unwrap(), 5);
        backend.meta_put(&record, &[0, 0, 5]).unwrap();
        let err = state.cursor(&peer, &db, Direction::Pull).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err}");
    }
}
