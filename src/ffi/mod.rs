//! The C ABI: the crate's only `unsafe` boundary.
//!
//! Every exported function runs its body through `guard`, which catches panics, records
//! the thread-local last error, and turns the core's `Result` into a [`mnemo_status`].
//! Handles are opaque; `handle::Handle` declares how C owns each one. No business logic
//! lives here.
// C names (`mnemo_instance`), and the safety contract of every function is stated once
// in the header's conventions and in each function's own doc comment.
#![allow(non_camel_case_types, clippy::missing_safety_doc)]

// Declaration order is the header's order.
mod backend;
mod database;
// After database: nested documents and history are functions of a database handle.
mod documents;
// After database: a cursor is made by `mnemo_db_cursor`.
mod cursor;
// After database: a watcher is made from a database handle.
mod events;
mod instance;
mod library;
mod status;
mod subscription;
mod sync;
// After sync: sharing is done through a sync handle.
mod sharing;
mod transaction;
mod user;

mod guard;
mod handle;
mod strings;

pub use backend::*;
pub use cursor::*;
pub use database::*;
pub use documents::*;
pub use events::*;
pub use instance::*;
pub use library::*;
pub use sharing::*;
pub use status::*;
pub use subscription::*;
pub use sync::*;
pub use transaction::*;
pub use user::*;
