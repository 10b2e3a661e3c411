//! How a logged-in user asks peers: the glue that lets sync act for a [`User`] without
//! either room importing the other, and the sessions sync resumes tracking for when it is
//! enabled after they logged in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::crypto::KeyRing;
use crate::entry::EntryId;
use crate::error::{Error, Result};
use crate::sync::Requester;
use crate::user::User;

impl Requester for User {
    fn key_ring(&self) -> Arc<dyn KeyRing> {
        User::key_ring(self)
    }

    /// A database kept in sync for a user is in the user's list, as if loaded.
    fn keep(&self, db: &EntryId) -> Result<()> {
        self.load_db(db).map(drop)
    }

    fn requester_id(&self) -> String {
        self.id().to_string()
    }
}

/// A session known only by its user id and key ring: what resuming needs (the databases
/// it tracks are already in the user's list).
struct Session {
    id: String,
    keys: Arc<dyn KeyRing>,
}

impl Requester for Session {
    fn key_ring(&self) -> Arc<dyn KeyRing> {
        self.keys.clone()
    }

    fn keep(&self, _db: &EntryId) -> Result<()> {
        Ok(())
    }

    fn requester_id(&self) -> String {
        self.id.clone()
    }
}

/// The sessions logged in on an instance, held weakly: when sync is enabled after a user
/// logged in, what that user tracks resumes too.
#[derive(Default)]
pub(super) struct Sessions {
    live: Mutex<Vec<(String, Weak<dyn KeyRing>)>>,
    /// Set when sync was enabled and the sessions have not all been resumed since (the
    /// resumption failed): the next [`Sessions::resume_pending`] tries again.
    unresumed: AtomicBool,
}

impl Sessions {
    /// Remembers `user`'s session (forgetting sessions gone meanwhile).
    pub(super) fn remember(&self, user: &User) {
        let mut sessions = self.live.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|(_, keys)| keys.strong_count() > 0);
        sessions.push((user.id().to_string(), Arc::downgrade(&user.key_ring())));
    }

    /// Resumes tracking on `sync` for every session still logged in. A session logging out
    /// meanwhile is passed over; any other failure is returned once every other session
    /// was resumed.
    fn resume_all(&self, sync: &crate::sync::SyncEngine) -> Result<()> {
        let live: Vec<Session> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(id, keys)| {
                let keys = keys.upgrade()?;
                keys.ensure_usable().ok()?;
                Some(Session {
                    id: id.clone(),
                    keys,
                })
            })
            .collect();
        let mut failed = Ok(());
        for session in live {
            match sync.resume(&session) {
                Ok(()) | Err(Error::LoggedOut) => {}
                Err(e) => failed = failed.and(Err(e)),
            }
        }
        failed
    }

    /// Notes that sync was just enabled: every session is to be resumed.
    pub(super) fn sync_enabled(&self) {
        self.unresumed.store(true, Ordering::Release);
    }

    /// Resumes every session on `sync` (see [`Sessions::resume_all`]) if sync was enabled
    /// and they have not all been resumed since; a failure leaves that pending for the next
    /// call.
    pub(super) fn resume_pending(&self, sync: &crate::sync::SyncEngine) -> Result<()> {
        if !self.unresumed.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let resumed = self.resume_all(sync);
        if resumed.is_err() {
            self.unresumed.store(true, Ordering::Release);
        }
        resumed
    }
}
