//! Who signs a database's entries: an abstraction over a user session's keys.

use crate::entry::{Entry, EntryContent};
use crate::error::Result;

/// Signs entries with a private key it holds. A user session implements it; after logout it
/// fails with [`crate::Error::LoggedOut`].
pub trait Signer: Send + Sync {
    /// Signs `content` with the private key of `content.author`.
    fn sign(&self, content: EntryContent) -> Result<Entry>;

    /// Fails (e.g. with [`crate::Error::LoggedOut`]) when this signer can sign nothing any
    /// more, so that a commit reports that before anything else.
    fn ready(&self) -> Result<()>;
}
