//! An in-memory [`Storage`] for scheduler and runtime tests: the same framing
//! as the real backends, plus what a disk cannot do on demand: crash (lose
//! everything after the last sync, optionally leaving a torn frame), fail,
//! and run out of space (a capacity with a reserve, like a small disk).

use alloc::vec::Vec;

use super::frame::{decode_frames, encode_frame, FrameError};
use super::{Discarded, ReplayReport, Storage};

/// Why a [`MemStorage`] call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemStorageError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Failure switched on with [`MemStorage::set_failing`].
    #[error("injected storage failure")]
    Injected,
    /// The log would pass its capacity ([`MemStorage::set_capacity`]).
    #[error("no space left: the log would pass its capacity of {capacity} bytes")]
    NoSpace { capacity: usize },
}

/// In-memory log: `log[..synced]` is what survives a crash.
#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    log: Vec<u8>,
    synced: usize,
    syncs: u64,
    failing: bool,
    discarded: Option<Discarded>,
    /// Most bytes the log may hold (`None`: unbounded).
    capacity: Option<usize>,
    /// The last bytes of the capacity, used only once the rest is full.
    reserve: usize,
    in_reserve: bool,
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// A storage whose durable content is `log` (e.g. a hand-corrupted image).
    pub fn from_log(log: Vec<u8>) -> Self {
        let synced = log.len();
        MemStorage {
            log,
            synced,
            ..Self::default()
        }
    }

    /// The log bytes, synced or not.
    pub fn log(&self) -> &[u8] {
        &self.log
    }

    /// How many bytes of the log a crash would keep.
    pub fn synced_len(&self) -> usize {
        self.synced
    }

    /// Number of `sync` calls that reached the medium (no-op syncs excluded).
    pub fn sync_count(&self) -> u64 {
        self.syncs
    }

    /// Simulates a crash: everything appended after the last sync is lost.
    pub fn crash(&mut self) {
        self.crash_torn(0);
    }

    /// Simulates a crash that left the first `keep` bytes of the unsynced
    /// tail on the medium (clamped to what exists): usually a torn frame.
    pub fn crash_torn(&mut self, keep: usize) {
        let end = self.synced.saturating_add(keep).min(self.log.len());
        self.log.truncate(end);
        self.synced = end;
        self.discarded = None;
    }

    /// Makes every later call fail with [`MemStorageError::Injected`] (or
    /// stop failing).
    pub fn set_failing(&mut self, failing: bool) {
        self.failing = failing;
    }

    /// Bounds the log to `capacity` bytes (`None`: unbounded), the last
    /// `reserve` of which are its reserve (see [`Storage::reserve_in_use`]):
    /// an append past the capacity fails with [`MemStorageError::NoSpace`]
    /// and drops every record appended since the last sync, as a full disk
    /// does. Lowering it below the log's length only stops further appends.
    pub fn set_capacity(&mut self, capacity: Option<usize>, reserve: usize) {
        self.capacity = capacity;
        self.reserve = reserve;
        self.update_reserve();
    }

    fn update_reserve(&mut self) {
        self.in_reserve = self
            .capacity
            .is_some_and(|c| self.log.len() + self.reserve > c);
    }

    fn check(&self) -> Result<(), MemStorageError> {
        if self.failing {
            Err(MemStorageError::Injected)
        } else {
            Ok(())
        }
    }
}

impl Storage for MemStorage {
    type Error = MemStorageError;

    fn append(&mut self, record: &[u8]) -> Result<(), MemStorageError> {
        self.check()?;
        if let Some(capacity) = self.capacity {
            if self.log.len() + super::frame_len(record.len()) > capacity {
                // Like a full disk: what was not synced is gone.
                self.log.truncate(self.synced);
                return Err(MemStorageError::NoSpace { capacity });
            }
        }
        encode_frame(record, &mut self.log)?;
        if !self.in_reserve {
            self.update_reserve();
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), MemStorageError> {
        self.check()?;
        if self.synced != self.log.len() {
            self.synced = self.log.len();
            self.syncs += 1;
        }
        Ok(())
    }

    fn replay(&mut self, visit: &mut dyn FnMut(&[u8])) -> Result<ReplayReport, MemStorageError> {
        self.check()?;
        let decoded = decode_frames(&self.log);
        decoded.records.iter().for_each(|r| visit(r));
        let records = decoded.records.len();
        let valid_len = decoded.valid_len;
        if valid_len < self.log.len() {
            self.discarded = Some(Discarded {
                end: decoded.end,
                bytes: (self.log.len() - valid_len) as u64,
            });
            self.log.truncate(valid_len);
            self.synced = self.synced.min(valid_len);
        }
        Ok(ReplayReport {
            records,
            discarded: self.discarded,
        })
    }

    fn is_no_space(&self, error: &MemStorageError) -> bool {
        matches!(error, MemStorageError::NoSpace { .. })
    }

    fn reserve_in_use(&self) -> bool {
        self.in_reserve
    }

    fn restore_reserve(&mut self) -> Result<(), MemStorageError> {
        self.sync()?;
        self.update_reserve();
        Ok(())
    }

    fn rewrite(&mut self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), MemStorageError> {
        self.check()?;
        let mut log = Vec::new();
        for r in records {
            encode_frame(r, &mut log)?;
        }
        self.log = log;
        self.synced = self.log.len();
        self.syncs += 1;
        self.discarded = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{frame_len, FrameEnd};
    use alloc::vec;
    use proptest::prelude::*;

    #[test]
    fn crash_drops_unsynced_records() {
        let mut s = MemStorage::new();
        s.append(b"a").unwrap();
        s.append(b"b").unwrap();
        s.sync().unwrap();
        s.append(b"c").unwrap();
        s.crash();
        let (recs, report) = s.replay_all().unwrap();
        assert_eq!(recs, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            report,
            ReplayReport {
                records: 2,
                discarded: None
            }
        );
        assert_eq!(s.sync_count(), 1);
    }

    #[test]
    fn torn_tail_is_dropped_and_appends_follow_the_valid_prefix() {
        let mut s = MemStorage::new();
        s.append(b"a").unwrap();
        s.sync().unwrap();
        s.append(b"bbbb").unwrap();
        s.crash_torn(5);
        let (recs, report) = s.replay_all().unwrap();
        assert_eq!(recs, vec![b"a".to_vec()]);
        let end = FrameEnd::Torn {
            offset: frame_len(1),
        };
        assert_eq!(report.discarded, Some(Discarded { end, bytes: 5 }));
        s.append(b"c").unwrap();
        s.sync().unwrap();
        s.crash();
        assert_eq!(
            s.replay_all().unwrap().0,
            vec![b"a".to_vec(), b"c".to_vec()]
        );
    }

    #[test]
    fn rewrite_replaces_the_log_durably() {
        let mut s = MemStorage::new();
        for r in [b"1", b"2", b"3"] {
            s.append(r).unwrap();
        }
        s.sync().unwrap();
        s.append(b"unsynced").unwrap();
        s.rewrite(&mut [b"3".as_slice()].into_iter()).unwrap();
        s.crash();
        assert_eq!(s.replay_all().unwrap().0, vec![b"3".to_vec()]);
    }

    #[test]
    fn injected_failures_and_bad_records_are_errors() {
        let mut s = MemStorage::new();
        assert_eq!(
            s.append(b""),
            Err(MemStorageError::Frame(FrameError::Empty))
        );
        s.set_failing(true);
        assert_eq!(s.append(b"x"), Err(MemStorageError::Injected));
        assert_eq!(s.sync(), Err(MemStorageError::Injected));
        s.set_failing(false);
        assert!(s.log().is_empty());
    }

    #[test]
    fn a_full_log_uses_its_reserve_then_refuses_and_drops_the_unsynced() {
        let mut s = MemStorage::new();
        s.append(b"a").unwrap();
        s.sync().unwrap();
        let used = s.log().len();
        let one = frame_len(1);
        s.set_capacity(Some(used + 3 * one), 2 * one);
        s.append(b"b").unwrap();
        assert!(!s.reserve_in_use());
        s.append(b"c").unwrap();
        assert!(s.reserve_in_use(), "into the reserve");
        s.append(b"d").unwrap();
        let full = s.append(b"e").unwrap_err();
        assert!(s.is_no_space(&full));
        assert_eq!(s.log().len(), used, "the unsynced appends are gone");
        s.set_capacity(Some(used + 10 * one), 2 * one);
        s.restore_reserve().unwrap();
        assert!(!s.reserve_in_use(), "space returned");
    }

    proptest! {
        /// Whatever is appended, synced and torn, replay returns every synced
        /// record and, after them, only a prefix of the unsynced ones.
        #[test]
        fn crash_replays_synced_prefix(
            ops in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 1..40), any::<bool>()), 0..30),
            keep in 0usize..200,
        ) {
            let mut s = MemStorage::new();
            let mut synced = 0;
            for (i, (rec, sync)) in ops.iter().enumerate() {
                s.append(rec).unwrap();
                if *sync {
                    s.sync().unwrap();
                    synced = i + 1;
                }
            }
            s.crash_torn(keep);
            let (recs, _) = s.replay_all().unwrap();
            prop_assert!(recs.len() >= synced && recs.len() <= ops.len());
            for (got, (want, _)) in recs.iter().zip(&ops) {
                prop_assert_eq!(got, want);
            }
        }
    }
}
