//! How a logged-in user asks peers: the glue that lets sync act for a [`User`] without
//! either room importing the other.

use std::sync::Arc;

use crate::crypto::KeyRing;
use crate::entry::EntryId;
use crate::error::Result;
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
}
