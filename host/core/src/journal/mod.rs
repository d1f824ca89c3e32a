//! Step 2 of a command's path: the journal, where an accepted command becomes
//! durable before its PUBACK leaves, and where attempts and outcomes are kept
//! so a restart neither loses nor re-runs finished work.
//!
//! This module is the storage half, with no I/O of its own so the same code
//! serves Linux (a file, `relay-store`) and a microcontroller (flash):
//!
//! - [`Storage`]: the contract a backend implements: append opaque record
//!   bytes, make them durable, replay them at start, atomically replace the
//!   whole log (compaction).
//! - [`frame`]: the CRC framing every backend stores, and the decoder that
//!   decides which records survived a crash.
//! - [`MemStorage`]: an in-memory backend that can simulate a crash, for
//!   scheduler and runtime tests.
//!
//! What a record *means* (accepted command, attempt, outcome) lives in
//! [`record`]; storage only ever sees bytes.

pub mod frame;
mod mem;
pub mod record;

use alloc::vec::Vec;

pub use frame::{
    decode_frame, decode_frames, encode_frame, frame_len, frames, Corruption, Decoded, FrameEnd,
    FrameError, Frames, FRAME_HEADER_LEN, MAX_RECORD_LEN,
};
pub use mem::{MemStorage, MemStorageError};

/// A durable, append-only log of opaque records.
///
/// # Durability contract
///
/// - **`append`** queues a record at the end of the log. It promises nothing
///   about durability: after a crash an appended but unsynced record may be
///   present or absent.
/// - **`sync`** returns `Ok(())` only once every record appended before the
///   call is on stable storage (as far as the medium honours a flush): a
///   crash or power loss afterwards cannot lose or alter any of them, and
///   [`Storage::replay`] returns them. This is the point where the runtime
///   may acknowledge the commands those records describe.
/// - **A crash at any moment** (mid-append, mid-sync) leaves a log whose
///   replay yields a *prefix* of the appended records, in append order: all
///   synced ones, then possibly some unsynced ones. A record cut in half (a
///   torn tail) or damaged is detected by its CRC and dropped together with
///   everything after it; replay never returns a partial, altered or
///   reordered record.
/// - **`sync` failing** means the state of records appended since the last
///   successful sync is unknown (the kernel may already have dropped the
///   dirty pages). Callers must not acknowledge them and should stop using
///   the storage and recover by reopening and replaying; a backend may
///   refuse every later call (the file backend does).
/// - **`rewrite`** atomically replaces the whole log with the given records
///   and is durable when it returns: after a crash, replay yields either the
///   old log (all records synced before the rewrite) or exactly the new
///   records, never a mix. Records appended but not synced before the call
///   are discarded; the caller's snapshot supersedes them.
/// - **Out of space.** A backend that can run out of room reports it
///   through [`Storage::is_no_space`]: such a failure (of `append` or
///   `sync`) dropped every record appended since the last successful sync
///   (the log is as that sync left it) and leaves the storage usable, so the
///   same records may be appended again once space returns. Any other
///   failure stands as described above.
/// - **The reserve.** A backend may keep room ahead of the log that only it
///   can use (the file backend keeps it written with zeros, so overwriting
///   it needs no new blocks). When the medium gives no more, appends go on
///   into that room and [`Storage::reserve_in_use`] turns true: the caller
///   then stops journaling new commands, so the room is left to the records
///   of the commands it already accepted. [`Storage::restore_reserve`] tries
///   to make it whole again (space may have returned).
/// - **`replay`** reads the log from the start. A backend discards an invalid
///   tail no later than the first replay (the file backend does it at open),
///   so later appends follow the last valid record instead of hiding behind
///   garbage. Call it once at start, before appending.
pub trait Storage {
    type Error: core::fmt::Debug + core::fmt::Display;

    /// Queues one record (1..=[`MAX_RECORD_LEN`] bytes) at the end of the log.
    fn append(&mut self, record: &[u8]) -> Result<(), Self::Error>;

    /// Makes every record appended so far durable.
    fn sync(&mut self) -> Result<(), Self::Error>;

    /// Calls `visit` with every valid record in log order, discarding an
    /// invalid tail (see the contract above).
    fn replay(&mut self, visit: &mut dyn FnMut(&[u8])) -> Result<ReplayReport, Self::Error>;

    /// Atomically replaces the whole log with `records` (compaction).
    fn rewrite(&mut self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), Self::Error>;

    /// Whether `error` (from this storage) means the medium is out of space;
    /// see the contract above. Default: no such failure.
    fn is_no_space(&self, error: &Self::Error) -> bool {
        let _ = error;
        false
    }

    /// Appends are using the room kept in reserve (the medium gave no more).
    /// Default: a backend without a reserve never is.
    fn reserve_in_use(&self) -> bool {
        false
    }

    /// Tries to make the reserve whole again (clearing
    /// [`Storage::reserve_in_use`] when it is), after any pending append is
    /// written. Default: a [`Storage::sync`], which checks that the medium
    /// still takes writes.
    fn restore_reserve(&mut self) -> Result<(), Self::Error> {
        self.sync()
    }

    /// The medium is filling up: a compaction now is sure to find room (a
    /// flash log with two halves says so once one is half full). The device
    /// asks its machine for one ([`Machine::request_compaction`](crate::machine::Machine::request_compaction)).
    /// Default: never (compaction by record count is enough for a file).
    fn wants_compaction(&self) -> bool {
        false
    }

    /// [`Storage::replay`] collecting the records.
    fn replay_all(&mut self) -> Result<(Vec<Vec<u8>>, ReplayReport), Self::Error> {
        let mut records = Vec::new();
        let report = self.replay(&mut |r| records.push(r.to_vec()))?;
        Ok((records, report))
    }
}

/// What a replay found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    /// Number of valid records visited.
    pub records: usize,
    /// The invalid tail dropped since the backend was opened, if any.
    pub discarded: Option<Discarded>,
}

/// An invalid tail a backend dropped: a crash mid-append (torn) or damage
/// (corrupt). The runtime logs it; a corrupt frame followed by more bytes
/// means damage rather than a crash and deserves a louder warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discarded {
    /// Why validity ended; the offset is relative to the first frame.
    pub end: FrameEnd,
    /// How many bytes were dropped from that offset on.
    pub bytes: u64,
}

impl Discarded {
    /// True when more than a torn final frame was lost: a frame was complete
    /// but invalid, which a clean crash mid-append does not produce on its
    /// own (it can, if the medium wrote a frame's header but not its payload).
    pub fn is_corruption(&self) -> bool {
        matches!(self.end, FrameEnd::Corrupt { .. })
    }
}
