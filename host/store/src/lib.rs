//! # relay-store
//!
//! Step 2 of a command's path on Linux: where an accepted command becomes
//! durable before its PUBACK leaves, and where plugins keep their state.
//! `relay-core` defines *what* durability means (the
//! [`relay_core::journal::Storage`] contract and the CRC framing); this crate
//! implements it on files, with no async runtime of its own.
//!
//! # Layout
//!
//! | module | role |
//! |--------|------|
//! | [`file`] | [`FileStorage`]: the journal file (header, CRC frames, torn-tail repair at open, atomic compaction) |
//! | [`direct`] | write-through appends (`O_DIRECT \| O_DSYNC`): one syscall per durable commit, no page-cache round trip |
//! | [`group`] | [`Journal`] + [`Ticket`]: group commit on a dedicated thread, so N concurrent commands cost one fsync per batch and fsync never blocks a tokio worker |
//! | [`ticket`] | [`Ticket`]: a submission's durability, awaited, blocked on or polled |
//! | [`kv`] | [`FileKv`]: a plugin's kv namespace as an atomically replaced snapshot file |
//! | [`space`] | a full disk: `ENOSPC` rolls back instead of poisoning, and the reserve kept for the records of accepted commands |
//! | [`shared`] | [`SharedStorage`]: a storage the journal thread and a test share (crash simulation in runtime tests) |
//! | [`fsutil`] | fsync of directories and the write-tmp/fsync/rename/fsync-dir dance both of the above use |
//!
//! # On-disk layout of a data dir
//!
//! ```text
//! <data_dir>/journal.log          16-byte header + CRC frames (see relay_core::journal::frame), then
//!                                 zeros written ahead: preallocation + the reserve (see space)
//! <data_dir>/journal.log.tmp      a compaction cut short by a crash; removed at open
//! <data_dir>/journal.log.corrupt-<offset>  bytes dropped after a corrupt frame, kept for forensics
//! <data_dir>/kv/<plugin>.kv       one snapshot per plugin (+ <plugin>.kv.tmp while writing)
//! ```
//!
//! Why our own log and not redb/SQLite: the journal is append-mostly with one
//! reader at start, the embedded build needs the same format on raw flash,
//! and group commit wants control over exactly when the one fsync happens. A
//! CRC-framed file gives all three in a few hundred lines, with crash
//! behaviour we can test byte by byte.

pub mod direct;
mod error;
pub mod file;
pub mod fsutil;
pub mod group;
pub mod kv;
pub mod shared;
pub mod space;
pub mod ticket;
pub mod updates;

pub use file::{FileStorage, Recovery, StoreError, JOURNAL_FILE};
pub use group::{Journal, JournalError, JournalStats, Ticket};
pub use kv::{FileKv, KvStoreError};
pub use shared::SharedStorage;
pub use updates::{FileStaging, UpdateFiles};
