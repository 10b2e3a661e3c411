//! Rust integration tests, by area, through the public API only (one binary: linking one
//! per file costs minutes on two cores).

mod authority;
mod backlog;
mod conformance;
mod documents;
mod durability;
mod engine;
mod events;
mod fake_peer;
mod faults;
mod files;
mod foreign;
mod hostile;
mod idle;
mod lifecycle;
mod postgres;
mod postgres_tls;
mod processes;
mod scans;
mod stress;
mod support;
mod sync;
mod users;
