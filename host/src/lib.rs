//! # relay-host
//!
//! The std side of Relay: everything that does I/O, around the sans-IO core in
//! [`relay_core`].
//!
//! # Layout: one command's data path, top to bottom
//!
//! `transport` (MQTT) -> `relay_core::envelope` -> `store` (journal on disk)
//! -> `relay_core::scheduler` -> `relay_core::registry` -> [`engine`]
//! (wasmtime here, wasmi in the core) -> status/ack back through `transport`.
//!
//! [`testing`] is the plugin author's harness (both engines), used by
//! `relay test` and by `cargo test` in plugin crates.

pub mod broker;
pub mod cli;
pub mod client;
pub mod engine;
pub mod runtime;
pub mod testing;
pub mod transport;

pub use relay_core as core;
