//! # relay-core
//!
//! The engine-independent heart of the Relay host. It builds `no_std` + `alloc`
//! (for `riscv32imac-unknown-none-elf`, e.g. ESP32-C6) and on Linux alike: no
//! tokio, no files, no sockets. All I/O lives in `relay-host` behind the traits
//! declared here, so the same state machines run on both.
//!
//! # Layout: one command's data path, top to bottom
//!
//! | step | module | role |
//! |------|--------|------|
//! | 1 | [`envelope`] | decode and validate a command envelope (depth-bounded msgpack) |
//! | 2 | [`journal`]  | durable record format + the [`journal::Storage`] trait |
//! | 3 | [`scheduler`] | sans-IO state machine: FIFO, retries, expiry, virtual time |
//! | 3 | [`machine`] | the device's decisions around it: decode, built-ins, commit pipeline, durability gates, held statuses; events in, effects out |
//! | 4 | [`registry`] | command name -> handler; `listen` / `off`; atomic plugin replace |
//! | 5 | [`engine`]   | the [`engine::Engine`] trait, limits, and the wasmi engine |
//! | 6 | [`status`]   | status messages and their codes, as published back |
//!
//! Shared vocabulary lives in [`plugin`] (the WIT world's types in Rust),
//! [`name`] (the seed naming rule), [`limits`] and [`host_env`] (capabilities
//! a plugin is granted: log, kv, clock, events). [`presence`] is the
//! device's retained online/offline message (with the MQTT last will).
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod diag;
pub mod engine;
pub mod envelope;
pub mod host_env;
pub mod journal;
pub mod limits;
pub mod machine;
pub mod msgpack;
pub mod name;
pub mod ota;
pub mod plugin;
pub mod presence;
pub mod registry;
pub mod scheduler;
pub mod status;
pub mod topics;
