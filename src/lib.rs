//! mnemo: an embedded, multi-user, signed and syncable database.
//!
//! Open an [`Instance`] on a backend, log a [`User`] in, and work with [`Database`]s in that
//! user's context. The same API is exported to C from [`ffi`] (see `include/mnemo.h`).

pub mod backend;
pub mod crypto;
pub mod database;
pub mod entry;
pub mod error;
pub mod ffi;
pub mod instance;
pub mod json;
mod line;
pub mod sync;
pub mod user;

pub use database::Database;
pub use error::{Error, Result};
pub use instance::Instance;
pub use sync::SyncEngine;
pub use user::User;
