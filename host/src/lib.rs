//! # relay-host
//!
//! The Linux device: everything that does I/O around the sans-IO core in
//! [`relay_core`]. Apps use `relay-client` instead (no engine), plugin
//! authors `relay-harness`, and the `relay` command line is `relay-cli`.
//!
//! # Layout: one command's data path, top to bottom
//!
//! `transport` (MQTT) -> `relay_core::envelope` -> `store` (journal on disk)
//! -> `relay_core::scheduler` -> `relay_core::registry` -> [`engine`]
//! (wasmtime here, wasmi in the core) -> status/ack back through `transport`.
//!
//! [`bundled`] finds the bundled plugins (`relay dev`, tests, benchmarks).

pub mod bundled;
pub mod engine;
pub mod runtime;
pub mod transport;

pub use relay_core as core;
