//! How a user lets go of what it has: forgetting a database (and the instance reclaiming its
//! storage when no user keeps it any more), removing a key, choosing the default key.

use super::account;
use super::records::TRACKED;
use super::User;
use crate::backend::Version;
use crate::crypto::{KeyRing, PublicKey};
use crate::entry::EntryId;
use crate::error::{Error, Result};

/// How many times forgetting a database looks again whether anybody keeps it, when writes
/// keep landing between the check and the reclaiming (see [`User::forget_db`]).
const RECLAIM_TRIES: usize = 4;

/// What the instance does when a user forgets a database, beyond the user room (which
/// never imports `sync` or `instance`): the instance implements it and hands it to
/// [`super::Accounts::new`].
pub trait Lifecycle: Send + Sync {
    /// Whether `db` is one of the instance's system databases, which no user forgets.
    fn is_system(&self, db: &EntryId) -> Result<bool>;

    /// User `user_id` no longer keeps `db`; with `unkept`, no user of the instance does and
    /// its storage is about to be reclaimed. Stops what runs for it (sync tracking) and
    /// forgets what is recorded about it elsewhere; called before the storage goes.
    fn forgotten(&self, user_id: &str, db: &EntryId, unkept: bool) -> Result<()>;

    /// User `user_id` added a key to `keys`, its session's key ring: with sync enabled, the
    /// device makes that key's holder proof, so that peers push to it what the key may read.
    /// (By default nothing: an instance without sync.)
    fn key_added(&self, _user_id: &str, _keys: &dyn KeyRing) -> Result<()> {
        Ok(())
    }

    /// User `user_id` removed `key`: the device marks its holder proof gone, for good. (By
    /// default nothing.)
    fn key_removed(&self, _user_id: &str, _key: &PublicKey) -> Result<()> {
        Ok(())
    }

    /// The account `user_id` is being erased: the device marks the holder proofs of its
    /// keys gone, for good. Repeatable. (By default nothing.)
    fn account_erased(&self, _user_id: &str) -> Result<()> {
        Ok(())
    }
}

impl User {
    /// Removes database `id` from this user's list: it no longer shows in
    /// [`User::list_dbs`] or opens through [`User::find_db`], and what this user tracks of
    /// it with sync stops (and does not resume). When no user of the instance keeps it any
    /// more, its storage is reclaimed: every row of it is deleted, and handles still open
    /// on it fail with [`Error::NotFound`]. Forgetting is local: grants in the database's
    /// settings stay as they are (on other replicas too), so while another user of this
    /// instance keeps it, [`User::load_db`] adds it to the list again, and after it was
    /// reclaimed, syncing it from a peer brings it back. Another user of this instance
    /// loading it meanwhile either keeps it or waits and finds it gone. A process sharing
    /// the storage that writes to it after this one found that nobody keeps it (a user there
    /// loaded it just then) keeps it stored: the reclaiming deletes nothing. A write from a
    /// handle nobody keeps makes it look again, up to `RECLAIM_TRIES` (4) times. It leaves the
    /// list last: a forgetting that fails part-way leaves it in the list, to be forgotten
    /// again (once reclaimed, it no longer shows in [`User::list_dbs`], which lists what
    /// opens).
    ///
    /// [`Error::NotFound`] if the database is not in the user's list;
    /// [`Error::PermissionDenied`] for a system database (never in a list: this says so
    /// plainly) or a deleted account.
    pub fn forget_db(&self, id: &EntryId) -> Result<()> {
        self.own_record()?;
        self.unless_deleted(self.forget_tracked(id))
    }

    /// [`User::forget_db`] once the account was found.
    fn forget_tracked(&self, id: &EntryId) -> Result<()> {
        if self.accounts.lifecycle().is_system(id)? {
            return Err(Error::PermissionDenied(format!(
                "{id} is a system database of this instance: it is never forgotten"
            )));
        }
        let key = id.to_text();
        if TRACKED.get(&self.user_db, &key)?.is_none() {
            return Err(Error::NotFound(format!(
                "database {id} is not in this user's list"
            )));
        }
        // Out of the list last: a forgetting stopped part-way (a crash, a storage error)
        // leaves it listed, and forgetting it again finishes the job, instead of leaving its
        // rows stored with nobody keeping it.
        let reclaimed = {
            // No user of this instance starts keeping it between the check and the
            // reclaiming.
            let _deciding = self.accounts.deciding_to_reclaim();
            self.reclaim_unkept(id)?
        };
        self.accounts.catalog_forgotten(id, &self.id, reclaimed)?;
        TRACKED.delete(&self.user_db, &key).map(drop)
    }

    /// Reclaims the storage of `id`, which this user is forgetting, if no other user keeps
    /// it; tells the instance first ([`Lifecycle::forgotten`]). Whether it was reclaimed.
    ///
    /// The version is read before each check: a process that starts keeping it after the
    /// check writes after that read too, and the reclaiming then removes nothing. A write
    /// from a handle nobody keeps (a stale one, a peer's push) refuses it the same way, so
    /// it looks again, up to [`RECLAIM_TRIES`] times; after that the database stays stored.
    fn reclaim_unkept(&self, id: &EntryId) -> Result<bool> {
        let lifecycle = self.accounts.lifecycle();
        let Some(mut decided_at) = self.unkept_at(id)? else {
            lifecycle.forgotten(&self.id, id, false)?;
            return Ok(false);
        };
        lifecycle.forgotten(&self.id, id, true)?;
        let registry = self.accounts.registry();
        for _ in 1..RECLAIM_TRIES {
            if registry.forget(id, decided_at)? {
                return Ok(true);
            }
            match self.unkept_at(id)? {
                Some(now) => decided_at = now,
                None => return Ok(false),
            }
        }
        registry.forget(id, decided_at)
    }

    /// The version of `id` read just before finding that no user but this one keeps it;
    /// `None` if another user does.
    fn unkept_at(&self, id: &EntryId) -> Result<Option<Version>> {
        let version = self.accounts.registry().backend().version(id)?;
        let kept = self.accounts.kept_by_others(id, &self.user_db.id())?;
        Ok((!kept).then_some(version))
    }

    /// Removes one of the user's keys: its record, and its sealed private key, which is
    /// erased from storage; this session stops signing with it at once (other sessions of
    /// the user hold it until they log out). Handles that sign with it then fail to write.
    /// With sync, the device's holder proof by the key goes too: peers stop pushing to this
    /// device what only that key may read.
    /// [`Error::InvalidArgument`] for the default key (choose another default first),
    /// [`Error::NotFound`] for a key the user does not have. Called again after it failed
    /// part-way, it erases the sealed key the first call left.
    pub fn remove_key(&self, key: &PublicKey) -> Result<()> {
        self.own_record()?;
        let vault = self.accounts.vault(&self.id);
        self.unless_deleted(account::remove_key(&self.user_db, &vault, key))?;
        self.session.remove_key(key)?;
        // Its holder proof goes too (see `Lifecycle::key_removed`).
        self.accounts.lifecycle().key_removed(&self.id, key)
    }

    /// Makes `key`, one of the user's keys, the default: it signs the databases the user
    /// creates from now on, and comes first among equals when choosing a signing key. It is
    /// stored, so it holds at the next login. [`Error::NotFound`] for a key the user does not
    /// have (or one added by another session since this one logged in: log in again).
    pub fn set_default_key(&self, key: &PublicKey) -> Result<()> {
        self.own_record()?;
        if !self.session.public_keys()?.contains(key) {
            return Err(Error::NotFound(format!(
                "this session holds no key {key} (one added by another session shows after a new login)"
            )));
        }
        self.unless_deleted(account::set_default_key(&self.user_db, key))?;
        self.session.set_default(key)
    }
}
