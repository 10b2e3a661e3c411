//! Sync between instances. Enabling it gives the instance one shared [`Sync`]; the network
//! protocol is built on top of it.

use crate::crypto::PublicKey;

/// The instance's sync engine, shared by reference count across threads.
#[derive(Debug)]
pub struct Sync {
    device_id: PublicKey,
}

impl Sync {
    pub(crate) fn new(device_id: PublicKey) -> Self {
        Sync { device_id }
    }

    /// The device identity this sync engine speaks for.
    pub fn device_id(&self) -> PublicKey {
        self.device_id
    }
}
