//! What a listener's watches wait on: the storage position of each database being watched,
//! followed through one subscription per database and shared by all its watches. A
//! database stops being followed when its last watch ends, and is followed anew once
//! stored again after this process forgot it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;

use crate::backend::Backend;
use crate::database::{Change, DatabaseCore, Subscription};
use crate::entry::EntryId;
use crate::error::Result;

/// The databases watched now, each with its position.
#[derive(Default)]
pub(super) struct Watchers {
    by_db: Mutex<HashMap<EntryId, Followed>>,
}

struct Followed {
    position: Arc<watch::Sender<u64>>,
    /// The copy of the database followed: once it is forgotten here, its subscription hears
    /// nothing more, and a copy stored again is followed anew.
    core: Weak<DatabaseCore>,
    _subscription: Subscription,
}

impl Watchers {
    /// The position of `core`'s database (stored in `backend`) as it changes, its current
    /// position first.
    pub(super) fn follow(
        &self,
        core: &Arc<DatabaseCore>,
        backend: Arc<dyn Backend>,
    ) -> Result<watch::Receiver<u64>> {
        let mut by_db = self.by_db.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(followed) = by_db.get(&core.id()) {
            if followed
                .core
                .upgrade()
                .is_some_and(|c| Arc::ptr_eq(&c, core))
            {
                return Ok(followed.position.subscribe());
            }
        }
        let (sender, receiver) = watch::channel(0);
        let position = Arc::new(sender);
        let (notify, store, db) = (position.clone(), backend.clone(), core.id());
        let subscription = core.subscribe(Box::new(move |_: &Change| {
            if let Ok(now) = store.last_position(&db) {
                notify.send_if_modified(|p| raise(p, now));
            }
        }))?;
        // Read after subscribing, so that no change falls between the two.
        let now = backend.last_position(&db)?;
        position.send_if_modified(|p| raise(p, now));
        let replaced = by_db.insert(
            core.id(),
            Followed {
                position,
                core: Arc::downgrade(core),
                _subscription: subscription,
            },
        );
        // Watches on a copy forgotten since hear the new copy's position (past the old
        // one's: positions are never handed out twice), then watch it.
        if let Some(stale) = replaced {
            stale.position.send_if_modified(|p| raise(p, now));
        }
        Ok(receiver)
    }

    /// Stops following `db` if no watch waits on it any more.
    pub(super) fn release(&self, db: &EntryId) {
        let mut by_db = self.by_db.lock().unwrap_or_else(|p| p.into_inner());
        if by_db
            .get(db)
            .is_some_and(|f| f.position.receiver_count() == 0)
        {
            by_db.remove(db);
        }
    }
}

/// Raises `position` to `now` if that is further; whether it changed.
fn raise(position: &mut u64, now: u64) -> bool {
    let further = now > *position;
    if further {
        *position = now;
    }
    further
}
