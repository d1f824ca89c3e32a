//! The journal file on a full disk: why an `ENOSPC` is survivable, and the
//! reserve that lets the device finish what it already accepted.
//!
//! A full disk must neither lose an acknowledged command nor stop the device
//! from running the commands it acknowledged, which still need records of
//! their own (`Started`, `Retrying`, `Finished`, `Delivered`) before their
//! statuses may be published. So the journal keeps **room in reserve**:
//! [`FileStorage::reserve`] bytes of zeros written ahead of the log (on top
//! of the preallocation chunk). Overwriting blocks a file already has needs
//! no new blocks on ext4/xfs, so this room cannot be taken by anyone else,
//! unlike a free-space threshold or a ballast file released on `ENOSPC`
//! (whose space any process could grab first).
//!
//! - A commit that would leave less than the reserve ahead grows the file
//!   (zeros, in the same write as the frames). When the disk refuses
//!   (`ENOSPC`, `EDQUOT`) and the frames fit in the room the file has, they
//!   are written there: the storage reports [`Storage::reserve_in_use`](relay_core::journal::Storage::reserve_in_use),
//!   and the runtime stops taking new commands, so from then on only the
//!   records of accepted commands use the reserve.
//! - A commit that does not fit even there is rolled back to the last sync
//!   ([`StoreError::NoSpace`]): nothing of it is acknowledged, the storage
//!   stays usable, and the same records are appended again later. Bytes of
//!   the failed write left past the log are the frames the retry writes
//!   again at the same offsets.
//! - [`Storage::restore_reserve`](relay_core::journal::Storage::restore_reserve) grows the zeros ahead back to the full
//!   reserve when the disk has room again, which ends the reserve mode.
//! - A failed `fsync` is not survivable (see the `file` module doc).
//!
//! Copy-on-write filesystems (btrfs, zfs) allocate even on overwrite, so
//! there the reserve is only as good as the space they keep for
//! themselves; the retry path still loses nothing.

use std::io;

use crate::direct::BLOCK;
use crate::error::{io_err, StoreError};
use crate::file::FileStorage;

/// `ENOSPC` or `EDQUOT`: the filesystem (or the user's quota) is full.
pub fn no_space(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded {
        return true;
    }
    #[cfg(target_os = "linux")]
    {
        matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

impl FileStorage {
    /// Keeps `bytes` of zeros written ahead of the log for the records of
    /// accepted commands once the disk is full (0, the default: none). See
    /// the module doc.
    pub fn reserve(&mut self, bytes: u64) {
        self.reserve = bytes;
    }

    /// Where the file must be grown to before writing a log ending at `end`,
    /// if at all: the reserve stays ahead of the log (no growth is tried
    /// while the reserve is in use; [`Storage::restore_reserve`](relay_core::journal::Storage::restore_reserve) does that).
    pub(crate) fn grow_to(&self, end: u64) -> Option<u64> {
        let need = if self.in_reserve {
            end
        } else {
            end + self.reserve
        };
        if need <= self.allocated {
            return None;
        }
        if self.preallocate == 0 && self.reserve == 0 {
            return Some(need);
        }
        // Whole blocks: a write-through write rounds up to one anyway.
        Some((need + self.preallocate).next_multiple_of(BLOCK))
    }

    pub(crate) fn enter_reserve(&mut self) {
        if !self.in_reserve {
            self.in_reserve = true;
            let room = self.allocated - self.written;
            tracing::warn!(path = %self.path.display(), room,
                "journal: the disk is full; writing into the reserve");
        }
    }

    /// An append did not fit: forget everything since the last sync.
    pub(crate) fn roll_back(&mut self, op: &'static str, error: io::Error) -> StoreError {
        self.pending.clear();
        self.written = self.synced_end;
        if let Some(direct) = &mut self.direct {
            if let Err(e) = direct.reset(&self.file, self.written) {
                return self.poison(io_err("read", &self.path)(e));
            }
        }
        tracing::warn!(path = %self.path.display(), %error, "journal: no space for an append");
        io_err(op, &self.path)(error)
    }

    /// Grows the zeros ahead back to the full reserve if the disk allows
    /// (the end of the reserve mode); a still-full disk is not an error.
    pub(crate) fn regrow(&mut self) -> Result<(), StoreError> {
        let need = self.written + self.reserve;
        if need <= self.allocated {
            self.leave_reserve();
            return Ok(());
        }
        let target = (need + self.preallocate).next_multiple_of(BLOCK);
        let zeros = vec![0u8; (target - self.allocated) as usize];
        let grown = std::os::unix::fs::FileExt::write_all_at(&self.file, &zeros, self.allocated)
            .and_then(|()| self.file.sync_data());
        match grown {
            Ok(()) => {
                self.allocated = target;
                self.leave_reserve();
                Ok(())
            }
            Err(e) if no_space(&e) => {
                let _ = self.file.set_len(self.allocated);
                self.enter_reserve();
                Ok(())
            }
            Err(e) => Err(self.poison(io_err("grow", &self.path)(e))),
        }
    }

    fn leave_reserve(&mut self) {
        if self.in_reserve {
            self.in_reserve = false;
            tracing::info!(path = %self.path.display(), "journal: space returned; the reserve is whole again");
        }
    }
}
