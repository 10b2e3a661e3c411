//! What sync remembers in the `_sync` system database: the peers that proved their device
//! key, and how far each round got per peer, database and direction.

use serde::{Deserialize, Serialize};

use crate::crypto::PublicKey;
use crate::database::{now_ms, Database, Table};
use crate::entry::EntryId;
use crate::error::Result;

/// Peers seen, by device id.
const PEERS: Table<PeerRecord> = Table::new("peers", "peer record");
/// Cursors (storage positions), by [`cursor_key`].
const CURSORS: Table<u64> = Table::new("cursors", "sync cursor");

/// A peer that proved its device key.
#[derive(Debug, Serialize, Deserialize)]
struct PeerRecord {
    /// When it last did, milliseconds since the Unix epoch.
    last_seen: u64,
}

/// Which way a cursor tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    /// How far this side has pulled the peer's storage order.
    Pull,
    /// How far this side has pushed its own storage order.
    Push,
}

/// The key of a cursor: `<peer>/<database>/<pull|push>`.
fn cursor_key(peer: &PublicKey, db: &EntryId, direction: Direction) -> String {
    let way = match direction {
        Direction::Pull => "pull",
        Direction::Push => "push",
    };
    format!("{peer}/{db}/{way}")
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

    /// Records that `peer` proved its device key now.
    pub(super) fn peer_seen(&self, peer: &PublicKey) -> Result<()> {
        let record = PeerRecord {
            last_seen: now_ms(),
        };
        PEERS.put(&self.db, &peer.to_text(), &record).map(drop)
    }

    /// The cursor of `peer`, `db`, `direction` (0 before the first round).
    pub(super) fn cursor(
        &self,
        peer: &PublicKey,
        db: &EntryId,
        direction: Direction,
    ) -> Result<u64> {
        Ok(CURSORS
            .get(&self.db, &cursor_key(peer, db, direction))?
            .unwrap_or(0))
    }

    /// Moves the cursor of `peer`, `db`, `direction` to `position`.
    pub(super) fn save_cursor(
        &self,
        peer: &PublicKey,
        db: &EntryId,
        direction: Direction,
        position: u64,
    ) -> Result<()> {
        CURSORS
            .put(&self.db, &cursor_key(peer, db, direction), &position)
            .map(drop)
    }
}
