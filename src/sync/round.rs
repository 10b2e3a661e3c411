//! Asking a peer: one sync round (pull then push) for a database. A
//! round has a deadline, and each page a peer sends must make progress, so no peer can keep
//! a round going forever.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::Scope;

use super::holders;
use super::net::client::PeerConnection;
use super::progress::Progress;
use super::received::Room;
use super::state::Direction;
use super::wire::{self, Envelope, IdsPage, Request};
use super::{PeerAddr, SyncEngine};
use crate::crypto::{random, KeyRing, PublicKey};
use crate::database::{now_ms, DatabaseCore, Permission, Registry};
use crate::entry::{Checking, Entry, EntryId, Refused};
use crate::error::{Error, Result, Status};

/// What one round moved.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// The device id the peer proved.
    pub peer: Option<PublicKey>,
    /// The key the peer accepted this round's requests from (the first of those tried).
    pub signed_as: Option<PublicKey>,
    /// Entries received from the peer and taken (applied or waiting for parents).
    pub pulled: usize,
    /// Entries the peer took from us.
    pub pushed: usize,
    /// Entries received that failed verification (dropped).
    pub rejected: usize,
    /// The first of them, with the reason (only the first is kept: a hostile peer may send
    /// any number).
    pub first_rejected: Option<String>,
    /// How many of our entries the peer refused.
    pub refused_by_peer: usize,
    /// The status of the first refusal (e.g. `MNEMO_STATUS_PERMISSION_DENIED`: the author
    /// lacks permission there; `MNEMO_STATUS_BUSY`: the peer cannot hold more waiting
    /// entries now).
    pub first_refusal: Option<i32>,
}

impl SyncReport {
    /// Counts entry `id` (`None`: not known), received and dropped for `why`; keeps the
    /// first reason.
    fn reject(&mut self, id: Option<&EntryId>, why: &Error) {
        self.rejected += 1;
        self.first_rejected.get_or_insert_with(|| match id {
            Some(id) => format!("{id}: {why}"),
            None => why.to_string(),
        });
    }

    /// The report, or an error naming what was rejected (everything valid was applied).
    pub fn into_result(self) -> Result<SyncReport> {
        if let Some(first) = &self.first_rejected {
            return Err(Error::Corrupt(format!(
                "the peer sent {} entries that failed verification and were dropped (first: {first})",
                self.rejected
            )));
        }
        if self.refused_by_peer > 0 {
            let count = self.refused_by_peer;
            let first = self.first_refusal.and_then(Status::from_code);
            return Err(if lasts(first) {
                Error::PermissionDenied(format!(
                    "the peer refused {count} of our entries (their authors lack permission there?)"
                ))
            } else {
                Error::Busy(format!(
                    "the peer could not take {count} of our entries now; retry later"
                ))
            });
        }
        Ok(self)
    }
}

impl SyncEngine {
    /// Pulls then pushes database `db` with the peer at `addr`, signing with the first of
    /// `candidates` (keys `keys` holds) that the peer accepts. Once `stop` is set (by whoever
    /// ends a tracking), the round asks nothing more of the peer and fails.
    pub(super) fn round(
        &self,
        keys: &dyn KeyRing,
        candidates: &[PublicKey],
        addr: &PeerAddr,
        db: &EntryId,
        stop: Option<&AtomicBool>,
    ) -> Result<SyncReport> {
        let (first, rest) = candidates
            .split_first()
            .ok_or_else(|| Error::Internal("a round needs a key to sign with".into()))?;
        let limits = self.limits();
        let mut connection = PeerConnection::new(self.runtime(), addr, &self.identity, &limits);
        let peer = connection.peer()?;
        let registry = self.registry()?;
        let mut talk = Exchange {
            sync: self,
            core: registry.core(*db),
            registry,
            keys,
            key: *first,
            addr,
            peer,
            db: *db,
            connection,
            held_back: RefCell::default(),
            left_waiting: Cell::default(),
            stop,
            proved_by: None,
            found_no_room: Cell::new(false),
        };
        let mut report = SyncReport {
            peer: Some(peer),
            ..SyncReport::default()
        };
        let theirs = wire::decode_ids(&talk.tips_with_any(rest)?)?;
        report.signed_as = Some(talk.key);
        let ours = talk.tips()?;
        if theirs.is_empty() && ours.is_empty() {
            return Err(Error::NotFound(format!(
                "neither this instance nor the peer holds database {db}"
            )));
        }
        if same_tips(&theirs, &ours) {
            return Ok(report);
        }
        // A peer without the database has nothing to pull (and may take it by push).
        if !theirs.is_empty() {
            talk.pull(&theirs, &mut report)?;
            if !talk.registry.exists(db)? {
                // Entries of it wait for their parents, but without its root there is no
                // database here to load (the next round asks from the beginning).
                return Err(Error::Corrupt(format!(
                    "{addr}: the peer lists database {db} but did not send its root entry (the \
                     next round asks from the beginning){}",
                    report
                        .first_rejected
                        .map_or(String::new(), |first| format!(" (rejected: {first})"))
                )));
            }
        }
        talk.push(&theirs, &mut report)?;
        Ok(report)
    }
}

/// Whether two lists of tips name the same entries. A full list may have been cut short
/// (see the `Tips` handler): never the same.
fn same_tips(theirs: &[EntryId], ours: &[EntryId]) -> bool {
    theirs.len() < wire::MAX_IDS
        && theirs.len() == ours.len()
        && theirs.iter().collect::<HashSet<_>>() == ours.iter().collect()
}

/// Replies a pull has checked on other threads ahead of the one it stores: with two, the
/// checking threads still have work while this thread stores a reply and asks for the next
/// (one left them idle about a fifth of the time on two cores).
const REPLIES_CHECKED_AHEAD: usize = 2;

/// Bytes of entries a pull holds in replies being checked or stored (each entry held also
/// decoded, about twice its size), unless one reply holds more: replies of small entries
/// (a peer sends about [`wire::BATCH_BYTES`] to a reply) are checked ahead, replies of the
/// largest entries are taken one at a time.
const BYTES_CHECKED_AHEAD: usize = wire::MAX_MESSAGE;

/// One sync round's conversation with a peer about one database, as one key.
struct Exchange<'a> {
    sync: &'a SyncEngine,
    registry: Arc<Registry>,
    keys: &'a dyn KeyRing,
    key: PublicKey,
    addr: &'a PeerAddr,
    peer: PublicKey,
    db: EntryId,
    /// The database's core for the whole round: once it is forgotten here, the round takes
    /// nothing more and saves no cursor.
    core: Arc<DatabaseCore>,
    connection: PeerConnection<'a>,
    /// The first failure of this round that a later round may not meet (storage, a full
    /// waiting area): from then on no cursor is saved, so the next round asks again.
    held_back: RefCell<Option<Error>>,
    /// Entries taken this round that wait for their parents ([`Progress::check_taken`]).
    left_waiting: Cell<usize>,
    /// Set when the round's tracking ends: no request is sent after.
    stop: Option<&'a AtomicBool>,
    /// The key whose holder proof the peer showed, once it did
    /// ([`Exchange::ensure_peer_may_read`]).
    proved_by: Option<PublicKey>,
    /// Set when the pull stopped for want of room for received entries ([`Exchange::room_for`]):
    /// busy, but not for entries waiting here, so no reason to start again.
    found_no_room: Cell<bool>,
}

/// Whether taking the same entry again would fail the same way (`status`, here or as a
/// peer's refusal): it is malformed, forged or not allowed, which its bytes and parents
/// decide. Anything else (storage, `Busy`, a thread that failed) may pass next time.
fn lasts(status: Option<Status>) -> bool {
    matches!(
        status,
        Some(Status::Corrupt | Status::PermissionDenied | Status::InvalidArgument)
    )
}

/// A reply's entries being checked on other threads, and the pull cursor to save once they
/// are taken (the last reply of a page completes it).
struct Reply<'scope> {
    entries: Checking<'scope>,
    /// The size of its entries, as received.
    bytes: usize,
    cursor: Option<u64>,
    /// Its room in the engine's budget for received entries, until they are taken.
    _room: Room,
}

impl Exchange<'_> {
    /// Asks for the tips signed by the exchange's key, and then by each of `others` in turn
    /// while the peer refuses the key; the exchange goes on with the key accepted.
    fn tips_with_any(&mut self, others: &[PublicKey]) -> Result<Vec<u8>> {
        let mut others = others.iter();
        loop {
            match self.ask(Request::Tips) {
                Err(Error::PermissionDenied(why)) => match others.next() {
                    Some(next) => self.key = *next,
                    None => return Err(Error::PermissionDenied(why)),
                },
                answered => return answered,
            }
        }
    }

    /// One request on the database, signed by the key through the key ring; refused once
    /// the round was asked to stop.
    fn ask(&mut self, request: Request) -> Result<Vec<u8>> {
        if self.stop.is_some_and(|stop| stop.load(Ordering::Acquire)) {
            return Err(Error::Network(
                "the round was stopped: its tracking ended".into(),
            ));
        }
        let largest = request.largest_reply();
        let mut env = Envelope {
            db: self.db,
            key: self.key,
            server: self.peer,
            timestamp_ms: now_ms(),
            nonce: random::bytes()?,
            request,
            signature: [0; 64],
        };
        env.signature = self.keys.sign(&self.key, &env.signed_part())?;
        self.connection.post("db", env.encode(), largest)
    }

    /// Takes every entry the peer lists after the pull cursor that this instance lacks.
    /// Every page must make progress ([`Progress`]), and every reply to `get` must bring
    /// some of the entries asked for: a peer that claims more without giving it ends the
    /// round. Each reply's entries are checked on other threads while an earlier reply's
    /// are stored here ([`Checking`]): besides the reply being received, at most
    /// [`REPLIES_CHECKED_AHEAD`] + 1 are held (being checked, or being stored), and more
    /// than one only while they hold at most [`BYTES_CHECKED_AHEAD`]. What was received
    /// before an error is taken all the same. A database forgotten here meanwhile ends the
    /// pull ([`Error::NotFound`]), and what arrives after is not taken (it would start a
    /// copy without root).
    ///
    /// If a pass that began past the beginning and rejected nothing leaves some of the tips
    /// the peer named at the round's start (`theirs`) not stored here, its pages after the
    /// cursor did not list all it holds (its storage restored from a backup hands positions
    /// out again): the pull starts again from the beginning, at most once per
    /// [`RESTART_GAP_MS`](super::state::RESTART_GAP_MS). So does one that stopped busy with
    /// entries waiting here for parents (the round's
    /// [`MAX_WAITING_PER_ROUND`](super::progress::MAX_WAITING_PER_ROUND), or the waiting
    /// area full), as the new entries of a restored peer past the cursor do.
    fn pull(&mut self, theirs: &[EntryId], report: &mut SyncReport) -> Result<()> {
        let started_at = self.saved_pull_cursor()?;
        let pass = self.pull_once(report);
        let stuck = matches!(pass, Err(Error::Busy(_)))
            && !self.found_no_room.get()
            && self.core.waiting_entries() > 0;
        if pass.is_err() && !stuck {
            return pass;
        }
        if started_at > 0
            && report.rejected == 0
            && !self.all_stored(theirs)?
            && self.may_start_again(Direction::Pull)?
        {
            self.left_waiting.set(0);
            self.start_again(Direction::Pull)?;
            return self.pull_once(report);
        }
        pass
    }

    /// Whether every one of `ids` is stored here, in this database.
    fn all_stored(&self, ids: &[EntryId]) -> Result<bool> {
        let backend = self.registry.backend();
        for id in ids {
            if backend.entry_db(id)? != Some(self.db) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Where a pull starts from: the saved cursor, or the beginning while the root is not
    /// stored here (an honest peer lists it first; a cursor saved past it by a round running
    /// on while the database was forgotten here would skip it).
    fn saved_pull_cursor(&self) -> Result<u64> {
        match self.registry.exists(&self.db)? {
            true => (self.sync.state).cursor(&self.peer, &self.db, Direction::Pull),
            false => Ok(0),
        }
    }

    /// Whether a pass in `direction` may start again from the beginning now: not in the last
    /// [`RESTART_GAP_MS`](super::state::RESTART_GAP_MS).
    fn may_start_again(&self, direction: Direction) -> Result<bool> {
        (self.sync.state).may_start_again(&self.peer, &self.db, direction)
    }

    /// Moves the cursor of `direction` back to the beginning, recording when, unless the
    /// database was forgotten here meanwhile.
    fn start_again(&self, direction: Direction) -> Result<()> {
        self.core.ensure_kept()?;
        (self.sync.state).start_again(&self.peer, &self.db, direction)
    }

    /// This instance's tips of the database.
    fn tips(&self) -> Result<Vec<EntryId>> {
        let tips = self.registry.backend().tips(&self.db)?;
        Ok(tips.into_iter().map(|(id, _)| id).collect())
    }

    /// Moves the cursor of `direction` to `position`, unless the database was forgotten
    /// here meanwhile (its sync records are gone with it).
    fn save_cursor(&self, direction: Direction, position: u64) -> Result<()> {
        self.core.ensure_kept()?;
        (self.sync).save_cursor(&self.peer, &self.db, direction, position)
    }

    /// One pass of [`Exchange::pull`], from the saved cursor.
    fn pull_once(&mut self, report: &mut SyncReport) -> Result<()> {
        std::thread::scope(|scope| {
            let mut in_flight = VecDeque::new();
            let pulled = self.pull_pages(scope, &mut in_flight, report);
            let mut last = Ok(());
            for reply in in_flight {
                last = last.and(self.take_reply(reply, report));
            }
            // Taken whatever ends the pass: a pass started again holds nothing back.
            let held_back = self.held_back.take();
            pulled.and(last)?;
            held_back.map_or(Ok(()), Err)
        })
    }

    /// Whether a failure this round held back the cursors (see [`Exchange::held_back`]).
    fn holding_back(&self) -> bool {
        self.held_back.borrow().is_some()
    }

    /// The work of [`Exchange::pull`]; the replies being checked when it returns are left
    /// in `in_flight`, oldest first.
    fn pull_pages<'scope>(
        &mut self,
        scope: &'scope Scope<'scope, '_>,
        in_flight: &mut VecDeque<Reply<'scope>>,
        report: &mut SyncReport,
    ) -> Result<()> {
        let core = self.core.clone();
        let mut cursor = self.saved_pull_cursor()?;
        let mut progress = Progress::new(&core, self.addr);
        loop {
            core.ensure_kept()?;
            if self.holding_back() {
                return Ok(()); // the next round starts again from the saved cursor
            }
            let first = report.first_rejected.as_deref();
            progress.check_taken(report.rejected, first, self.left_waiting.get())?;
            let page = IdsPage::decode(&self.ask(Request::Ids {
                after: cursor,
                limit: wire::MAX_IDS as u32,
            })?)?;
            // Each id once (an id listed again counts as held).
            let mut missing: Vec<EntryId> = Vec::new();
            let mut seen = HashSet::with_capacity(page.ids.len());
            for id in &page.ids {
                if seen.insert(*id) && !core.knows(id)? {
                    missing.push(*id);
                }
            }
            progress.check_page(cursor, &page, missing.len())?;
            while !missing.is_empty() {
                let request = Request::Get(missing.clone());
                let mut room = self.room_for(request.largest_reply(), in_flight, report)?;
                let got = wire::decode_entries(&self.ask(request)?)?;
                // Only what was asked for is decoded (signatures checked on several cores),
                // then taken in the order sent, so parents sent first are stored first.
                let wanted: HashSet<EntryId> = missing.iter().copied().collect();
                let mut sent = HashSet::with_capacity(got.len());
                let asked: Vec<Vec<u8>> = got
                    .into_iter()
                    .filter(|bytes| {
                        // Not asked for, or sent twice: ignored.
                        let id = EntryId::of_bytes(bytes);
                        wanted.contains(&id) && sent.insert(id)
                    })
                    .collect();
                if asked.is_empty() {
                    return Err(Error::Network(format!(
                        "{}: the peer did not send entries it listed",
                        self.addr
                    )));
                }
                // What is still missing keeps the page's order (parents first), so the next
                // reply comes in that order too and its entries need not wait for parents.
                missing.retain(|id| !sent.contains(id));
                let bytes = asked.iter().map(Vec::len).sum();
                room.keep(bytes);
                let checking = Reply {
                    entries: Checking::start(scope, asked),
                    bytes,
                    cursor: None,
                    _room: room,
                };
                in_flight.push_back(checking);
                while in_flight.len() > REPLIES_CHECKED_AHEAD
                    || (in_flight.len() > 1
                        && in_flight.iter().map(|r| r.bytes).sum::<usize>() > BYTES_CHECKED_AHEAD)
                {
                    let oldest = in_flight.pop_front().expect("more than one in flight");
                    self.take_reply(oldest, report)?;
                }
            }
            if page.next > cursor {
                cursor = page.next;
                // Saved once the page's entries are taken.
                match in_flight.back_mut() {
                    Some(reply) => reply.cursor = Some(cursor),
                    None if self.holding_back() => {}
                    None => self.save_cursor(Direction::Pull, cursor)?,
                }
            }
            if !page.more {
                return Ok(());
            }
        }
    }

    /// Room in the engine's budget for a reply of up to `largest` bytes (the largest message
    /// at most). When there is none, the replies this round holds (`in_flight`) are taken
    /// first, so that it never waits for room it holds itself; then it waits its turn (see
    /// [`super::received`]).
    fn room_for(
        &self,
        largest: usize,
        in_flight: &mut VecDeque<Reply<'_>>,
        report: &mut SyncReport,
    ) -> Result<Room> {
        // The round's limits, as its replies are read with.
        let limits = self.connection.limits();
        let largest = largest.min(limits.max_message_bytes);
        let budget = self.sync.received_budget();
        if let Some(room) = budget.try_take(largest) {
            return Ok(room);
        }
        while let Some(oldest) = in_flight.pop_front() {
            self.take_reply(oldest, report)?;
        }
        let room = budget.take(self.sync.runtime(), largest, limits.queue_timeout);
        self.found_no_room.set(room.is_err());
        room
    }

    /// Takes a reply's entries once they are checked, in the order sent (sharing storage
    /// commits: [`DatabaseCore::receive_all`]), noting each outcome in `report`: dropped for
    /// good if it [`lasts`], else held back for the next round. Then saves the pull cursor
    /// the reply completes, if any, unless a failure this round holds cursors back.
    fn take_reply(&self, reply: Reply<'_>, report: &mut SyncReport) -> Result<()> {
        let checked = reply.entries.finish();
        self.core.ensure_kept()?;
        let mut entries = Vec::with_capacity(checked.len());
        for checked in checked {
            match checked {
                Ok(entry) if entry.database_id() == self.db => entries.push(entry),
                Ok(entry) => {
                    let e = Error::Corrupt("an entry of another database".into());
                    self.note_refused(Some(&entry.id()), e, report);
                }
                Err(Refused { id, error }) => self.note_refused(id.as_ref(), error, report),
            }
        }
        let ids: Vec<EntryId> = entries.iter().map(Entry::id).collect();
        // Through the round's core: once the database is forgotten here, it takes nothing.
        for (id, taken) in ids.iter().zip(self.core.receive_all(entries)) {
            match taken {
                Ok(received) => {
                    report.pulled += 1;
                    if received.pending {
                        self.left_waiting.set(self.left_waiting.get() + 1);
                    }
                    // Children it released that were refused: dropped for good, or (the
                    // database's tips at their bound, a storage failure) held back.
                    for (id, e) in received.rejected {
                        self.note_refused(Some(&id), e, report);
                    }
                }
                Err(e) => self.note_refused(Some(id), e, report),
            }
        }
        match reply.cursor {
            Some(cursor) if !self.holding_back() => self.save_cursor(Direction::Pull, cursor),
            _ => Ok(()),
        }
    }

    /// Notes entry `id` (`None`: not known, its check lost to a panic) refused with `e`:
    /// dropped for good if the refusal [`lasts`], else held back for the next round.
    fn note_refused(&self, id: Option<&EntryId>, e: Error, report: &mut SyncReport) {
        if lasts(Some(e.status())) {
            report.reject(id, &e);
        } else {
            self.held_back.borrow_mut().get_or_insert(e);
        }
    }

    /// Sends every entry stored here after the push cursor that the peer lacks, in batches
    /// bounded in count and bytes (read from storage one batch at a time).
    ///
    /// If that started past the beginning and sent nothing, while this instance's tips
    /// (read before) differ from those the peer named (`theirs`), it asks the peer's tips
    /// again: if all of them are here and still differ, the peer lacks entries behind the
    /// cursor (its storage restored from a backup: what it took since is lost, or waits
    /// there for lost parents), and the push starts again from the beginning, at most once
    /// per [`RESTART_GAP_MS`](super::state::RESTART_GAP_MS).
    fn push(&mut self, theirs: &[EntryId], report: &mut SyncReport) -> Result<()> {
        let started_at = (self.sync.state).cursor(&self.peer, &self.db, Direction::Push)?;
        // Read before the pass: an entry stored during it is either sent or not among them.
        let ours = self.tips()?;
        let before = (report.pushed, report.refused_by_peer);
        if !self.push_once(report)?
            || started_at == 0
            || (report.pushed, report.refused_by_peer) != before
            || same_tips(theirs, &ours)
            || !self.may_start_again(Direction::Push)?
        {
            return Ok(());
        }
        let theirs = wire::decode_ids(&self.ask(Request::Tips)?)?;
        if !same_tips(&theirs, &ours) && self.all_stored(&theirs)? {
            self.start_again(Direction::Push)?;
            self.push_once(report)?;
        }
        Ok(())
    }

    /// One pass of [`Exchange::push`], from the saved cursor; false if the peer could not
    /// take some entries now (the next round offers them again).
    fn push_once(&mut self, report: &mut SyncReport) -> Result<bool> {
        let db = self.db;
        let backend = self.registry.backend().clone();
        let mut cursor = self.sync.state.cursor(&self.peer, &db, Direction::Push)?;
        loop {
            let page = backend.entries_after(&db, cursor, wire::MAX_IDS)?;
            let Some((last, _)) = page.last().copied() else {
                return Ok(true);
            };
            let ids: Vec<EntryId> = page.iter().map(|(_, id)| *id).collect();
            let held = self.held_by_peer(ids.clone())?;
            let mut batch: Vec<Vec<u8>> = Vec::new();
            let mut size = 0;
            let mut retry = false;
            for (id, _) in ids.iter().zip(held).filter(|(_, held)| !held) {
                let bytes = backend
                    .get_entry(id)?
                    .ok_or_else(|| Error::Storage(format!("entry {id} vanished")))?;
                size += bytes.len();
                batch.push(bytes);
                if batch.len() >= wire::MAX_ENTRIES || size >= wire::BATCH_BYTES {
                    retry |= self.send(std::mem::take(&mut batch), report)?;
                    size = 0;
                }
            }
            if !batch.is_empty() {
                retry |= self.send(batch, report)?;
            }
            if retry {
                return Ok(false);
            }
            cursor = last;
            self.save_cursor(Direction::Push, cursor)?;
            if page.len() < wire::MAX_IDS {
                return Ok(true);
            }
        }
    }

    /// Fails unless the peer proves that it holds copies for a key that may read the
    /// database now, as this copy sees it: a proof by such a key naming the device the peer
    /// proved in the TLS handshake (see [`super::holders`]). Asks about the keys the
    /// settings give read, by salted hashes, [`wire::MAX_IDS`] at a time, until one proof
    /// holds. Called before every batch goes out (the peer has only been asked before, by
    /// id, which entries it holds): the key proved is checked again each time (one storage
    /// read), so a revocation made while the round pushes stops it at the next batch.
    fn ensure_peer_may_read(&mut self) -> Result<()> {
        let may_read = |p: Option<Permission>| p.is_some_and(|p| p >= Permission::Read);
        if let Some(key) = self.proved_by {
            if may_read(self.core.effective_permission_of(&key)?) {
                return Ok(());
            }
            self.proved_by = None;
        }
        let settings = self.core.current_settings()?;
        let mut readers: Vec<PublicKey> =
            settings.keys_at_least(Permission::Read).copied().collect();
        readers.sort();
        for asked in readers.chunks(wire::MAX_IDS) {
            let salt = random::bytes()?;
            let hashes = asked
                .iter()
                .map(|key| holders::key_hash(&salt, key))
                .collect();
            let proofs = wire::decode_proofs(&self.ask(Request::Holders { salt, hashes })?)?;
            for (key, signature) in &proofs {
                // Cheapest first: the settings in memory, the signature, then the key's
                // grant as the database's state caps it (a storage read).
                if may_read(settings.permission_of(key))
                    && holders::proves(key, signature, &self.peer)
                    && may_read(self.core.effective_permission_of(key)?)
                {
                    self.proved_by = Some(*key);
                    return Ok(());
                }
            }
        }
        Err(Error::PermissionDenied(format!(
            "{}: the peer (device {}) did not prove that it holds database {} for a key that \
             may read it here, so nothing was pushed to it (its users' keys were revoked, or \
             none of them uses that device)",
            self.addr, self.peer, self.db
        )))
    }

    /// Whether the peer holds each of `ids` (at most [`wire::MAX_IDS`]), in their order.
    fn held_by_peer(&mut self, ids: Vec<EntryId>) -> Result<Vec<bool>> {
        let count = ids.len();
        let held = wire::decode_flags(&self.ask(Request::Have(ids))?)?;
        if held.len() != count {
            return Err(Error::Network(format!(
                "{}: malformed reply to 'have'",
                self.addr
            )));
        }
        Ok(held)
    }

    /// Pushes one batch and counts what the peer took and refused; true if a refusal may
    /// pass next time (`Busy`, the peer's storage), so the push cursor must stay.
    fn send(&mut self, batch: Vec<Vec<u8>>, report: &mut SyncReport) -> Result<bool> {
        self.ensure_peer_may_read()?;
        let count = batch.len();
        let statuses = wire::decode_statuses(&self.ask(Request::Push(batch))?)?;
        if statuses.len() != count {
            return Err(Error::Network(format!(
                "{}: malformed reply to 'push'",
                self.addr
            )));
        }
        let mut retry = false;
        for status in statuses {
            if status == Status::Ok.code() {
                report.pushed += 1;
            } else {
                report.refused_by_peer += 1;
                report.first_refusal.get_or_insert(status);
                retry |= !lasts(Status::from_code(status));
            }
        }
        Ok(retry)
    }
}
