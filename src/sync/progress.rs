//! How a pull holds a peer to making progress: each page of ids must move the cursor on
//! and either bring something this instance lacks or be as full as asked; the ids listed
//! that this instance already holds cannot add up to more than the entries stored here,
//! those waiting, and a page; and entries failing verification, or left waiting for
//! parents nobody sent, end the round past a bound. An honest peer meets all of these (it lists each of its entries once, parents
//! first, in pages as full as asked while more follow), so a peer can keep a round going
//! only by sending entries that are taken in.

use super::wire::{IdsPage, MAX_IDS};
use super::PeerAddr;
use crate::database::DatabaseCore;
use crate::error::{Error, Result};

/// Entries failing verification that one round takes before it ends (the valid ones
/// among them taken all the same). At least a page's worth, so that every round gets
/// past a page of them and the next starts after it.
pub const MAX_REJECTED_PER_ROUND: usize = MAX_IDS;

/// Entries one round leaves waiting for their parents before it ends (`MNEMO_STATUS_BUSY`:
/// the next round tries again). An honest peer lists parents first, so a pull leaves
/// entries waiting only when this instance lacks a parent the peer's cursor is past (the
/// peer restored from a backup: the pull then starts again from the beginning).
pub const MAX_WAITING_PER_ROUND: usize = MAX_IDS;

/// The progress checks of one pull (see the module's documentation).
pub struct Progress<'a> {
    core: &'a DatabaseCore,
    addr: &'a PeerAddr,
    /// Ids listed this round that this instance held when they were listed.
    held_listed: u64,
    /// How many of those an honest peer could have listed: the entries of the database
    /// stored here, those waiting for their parents here, and a page for those arriving by
    /// other rounds meanwhile. A page until more are listed (nothing is read for rounds
    /// listing fewer held entries), then read, and read again when exceeded.
    allowance: u64,
}

impl<'a> Progress<'a> {
    /// The checks of a pull of the database of `core` from the peer at `addr`.
    pub fn new(core: &'a DatabaseCore, addr: &'a PeerAddr) -> Self {
        Progress {
            core,
            addr,
            held_listed: 0,
            allowance: MAX_IDS as u64,
        }
    }

    fn read_allowance(&mut self) -> Result<()> {
        self.allowance = self
            .core
            .backend()
            .entry_count(&self.core.id())?
            .saturating_add(self.core.waiting_entries() as u64)
            .saturating_add(MAX_IDS as u64);
        Ok(())
    }

    /// Checks `page`, asked for after `cursor`, of which `lacking` ids are of entries this
    /// instance lacks: a page going back, or saying there is more without moving on, or
    /// listing fewer than asked only of what is held, or listing more held entries over
    /// the round than are held, is the peer's fault.
    pub fn check_page(&mut self, cursor: u64, page: &IdsPage, lacking: usize) -> Result<()> {
        let listed = page.ids.len();
        if page.next < cursor || (page.more && page.next == cursor) {
            return Err(self.fault(format!(
                "its page of ids does not advance (at {cursor}, next {})",
                page.next
            )));
        }
        if page.more && lacking == 0 && listed < MAX_IDS {
            return Err(self.fault(format!(
                "its page of ids says more follow but lists {listed} of the {MAX_IDS} asked \
                 for, all held here"
            )));
        }
        self.held_listed += (listed - lacking) as u64;
        if self.held_listed > self.allowance {
            self.read_allowance()?;
            if self.held_listed > self.allowance {
                return Err(self.fault(format!(
                    "it listed {} entries held here, more than are held: it lists some again",
                    self.held_listed
                )));
            }
        }
        Ok(())
    }

    /// Fails the round once `rejected` entries failed verification in it, or `waiting`
    /// were left waiting for parents.
    pub fn check_taken(&self, rejected: usize, first: Option<&str>, waiting: usize) -> Result<()> {
        if rejected >= MAX_REJECTED_PER_ROUND {
            return Err(self.fault(format!(
                "it sent {rejected} entries that failed verification, and the round stops \
                 there (first: {})",
                first.unwrap_or("?")
            )));
        }
        if waiting >= MAX_WAITING_PER_ROUND {
            return Err(Error::Busy(format!(
                "{}: {waiting} entries it sent wait for parents it did not send; the round \
                 stops there",
                self.addr
            )));
        }
        Ok(())
    }

    fn fault(&self, what: String) -> Error {
        Error::Corrupt(format!("{}: {what}", self.addr))
    }
}
