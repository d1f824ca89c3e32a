//! [`FileStorage`]: the journal as one append-only file, implementing the
//! [`Storage`] contract of `relay-core` on Linux.
//!
//! ```text
//! journal.log = magic "RLYJRNL\n" | version: u32 LE | reserved: u32 (0) | frame*
//! ```
//!
//! - **Append** frames into an in-memory buffer; **sync** writes the buffer
//!   with one `write` at the end of the log and calls `fdatasync`
//!   (`File::sync_data`, which also persists a new file size). One syscall
//!   pair per batch is what makes group commit cheap.
//! - **Preallocation** (opt-in, [`FileStorage::preallocate`]): zeros are kept
//!   written ahead of the log so that appends overwrite instead of growing
//!   the file, and their fsync has no file size to commit. A tail of zeros is
//!   the clean end of the log; a frame cut short inside it is torn.
//! - **Write-through** (opt-in, [`FileStorage::write_through`], Linux): the
//!   batch goes out with one `O_DIRECT | O_DSYNC` write instead of a
//!   buffered write + `fdatasync` (see [`crate::direct`]).
//! - **Open** validates the header, decodes every frame and truncates the
//!   file after the last valid one (then fsyncs), so later appends never hide
//!   behind a torn tail. A tail cut by a *corrupt* frame (not merely torn) is
//!   first copied to `journal.log.corrupt-<offset>`: we must not keep
//!   trusting bytes past damage, but we do not destroy evidence either.
//! - **Rewrite** (compaction) writes `journal.log.tmp`, fsyncs it, renames it
//!   over `journal.log` and fsyncs the directory; a leftover `.tmp` from a
//!   crash mid-rewrite is deleted at open, the old log being still intact.
//! - **Reserve and a full disk** ([`FileStorage::reserve`], see
//!   [`crate::space`]): room written ahead that only the outcome records of
//!   accepted commands may use once the disk is full; `ENOSPC` is a
//!   recoverable failure, not a poisoning one.
//! - **Poisoning**: after a failed write (other than `ENOSPC`) or fsync the
//!   storage refuses every later call. Linux may already have dropped the
//!   dirty pages and marked them clean ("fsyncgate"), so retrying fsync could
//!   report success for data that is gone; the only safe recovery is to
//!   reopen and replay (fail-stop, as PostgreSQL does).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use relay_core::journal::{
    decode_frames, encode_frame, Discarded, FrameEnd, ReplayReport, Storage,
};

use crate::direct::DirectWriter;
pub(crate) use crate::error::io_err;
pub use crate::error::StoreError;
use crate::error::VERSION;
use crate::fsutil::{parent_dir, remove_if_exists, write_atomically};
use crate::space::no_space;

/// File name of the journal inside the data dir.
pub const JOURNAL_FILE: &str = "journal.log";

const MAGIC: [u8; 8] = *b"RLYJRNL\n";
/// Magic, version, reserved.
const HEADER_LEN: usize = 16;
/// Appends buffered beyond this are written out (not synced) to bound memory.
const MAX_PENDING: usize = 1 << 20;

/// What opening the journal had to repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The invalid tail that was truncated away, if any.
    pub discarded: Option<Discarded>,
    /// A compaction was interrupted by a crash; its temporary file was removed.
    pub removed_tmp: bool,
    /// Where the bytes after a corrupt frame were copied before truncation.
    pub preserved: Option<PathBuf>,
}

/// The journal file. See the module docs for format and guarantees.
#[derive(Debug)]
pub struct FileStorage {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    /// Length of the valid part of the file: where the next write lands.
    pub(crate) written: u64,
    /// Where the log ended at the last successful `sync` (or open, rewrite):
    /// what an out-of-space failure rolls back to.
    pub(crate) synced_end: u64,
    /// Length of the file on disk: zeros from `written` up to here.
    pub(crate) allocated: u64,
    /// Grow the file by this many zeroed bytes ahead of the writes (0: off).
    pub(crate) preallocate: u64,
    /// Zeros kept ahead of the log for outcome records on a full disk.
    pub(crate) reserve: u64,
    /// The disk gave no more: appends are using the reserve.
    pub(crate) in_reserve: bool,
    /// Frames appended but not yet written to the file.
    pub(crate) pending: Vec<u8>,
    /// Bytes written to the file since the last fsync.
    unsynced: bool,
    /// Write-through appends, when enabled and supported.
    pub(crate) direct: Option<DirectWriter>,
    pub(crate) syncs: u64,
    recovery: Recovery,
    poisoned: Option<String>,
}

impl FileStorage {
    /// Opens (or creates) `<data_dir>/journal.log`, creating `data_dir` if
    /// needed, and repairs a torn or corrupt tail (see [`FileStorage::recovery`]).
    pub fn open(data_dir: impl AsRef<Path>) -> Result<FileStorage, StoreError> {
        let dir = data_dir.as_ref();
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        FileStorage::open_file(dir.join(JOURNAL_FILE))
    }

    /// Opens (or creates) the journal at an explicit path.
    pub fn open_file(path: impl Into<PathBuf>) -> Result<FileStorage, StoreError> {
        let path = path.into();
        let tmp = tmp_path(&path);
        let mut recovery = Recovery {
            removed_tmp: remove_if_exists(&tmp).map_err(io_err("remove", &tmp))?,
            ..Recovery::default()
        };
        if !path.exists() {
            write_atomically(&path, &tmp, &header()).map_err(io_err("create", &path))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let mut bytes = fs::read(&path).map_err(io_err("read", &path))?;
        if bytes.is_empty() {
            // Only a file created by something else than us is empty (we create
            // with rename); nothing in it to lose, so give it a header.
            bytes = header().to_vec();
            (&file).write_all(&bytes).map_err(io_err("write", &path))?;
            file.sync_all().map_err(io_err("fsync", &path))?;
        }
        check_header(&path, &bytes)?;
        let mut storage = FileStorage {
            path,
            file,
            written: bytes.len() as u64,
            synced_end: bytes.len() as u64,
            allocated: bytes.len() as u64,
            preallocate: 0,
            reserve: 0,
            in_reserve: false,
            pending: Vec::new(),
            unsynced: false,
            direct: None,
            syncs: 0,
            recovery: Recovery::default(),
            poisoned: None,
        };
        storage.repair(&bytes[HEADER_LEN..], &mut recovery)?;
        storage.recovery = recovery;
        Ok(storage)
    }

    /// Keeps `bytes` of zeros written ahead of the log (0 turns it off, the
    /// default), so that an append overwrites blocks the file already has
    /// instead of growing it. `fdatasync` of a write that grows a file must
    /// also commit the new size through the filesystem's journal (on ext4 a
    /// second ordered write); overwriting needs only the data flushed. On
    /// our disk a small commit's fsync drops from ~0.21 to ~0.13 ms
    /// (`docs/benchmarks.md`). The file grows a chunk at a time, in the same
    /// fsync as the append that needs it. A zero tail reads as the clean end
    /// of the log (a frame never starts with a zero length).
    pub fn preallocate(&mut self, bytes: u64) {
        self.preallocate = bytes;
    }

    /// Makes every commit one write-through (`O_DIRECT | O_DSYNC`) write
    /// instead of a buffered write + `fdatasync` (see [`crate::direct`]).
    /// Returns whether it is on: `false` where the filesystem has no direct
    /// I/O (`EINVAL`) or off Linux, and the storage stays buffered.
    pub fn write_through(&mut self) -> Result<bool, StoreError> {
        self.check_poison()?;
        self.write_pending()?;
        self.direct = match DirectWriter::open(&self.path, &self.file, self.written) {
            Ok(Some((direct, zeros_end))) => {
                self.allocated = self.allocated.max(zeros_end);
                Some(direct)
            }
            Ok(None) => None,
            Err(e) => return Err(io_err("open (direct)", &self.path)(e)),
        };
        Ok(self.direct.is_some())
    }

    /// Path of the journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What opening had to repair (a crash mid-append, mid-compaction, damage).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Number of fsyncs that committed records (appends or rewrites); the
    /// group-commit test and benchmark read it.
    pub fn sync_count(&self) -> u64 {
        self.syncs
    }

    /// Size of the journal file in bytes, including appends not yet synced.
    pub fn len(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    /// True when the journal holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == HEADER_LEN as u64
    }

    /// Truncates the file after the last valid frame of `body` (the bytes
    /// after the header), preserving a corrupt tail first. A tail of zeros
    /// only is space written ahead ([`FileStorage::preallocate`]): the log
    /// ends cleanly before it and it stays.
    fn repair(&mut self, body: &[u8], recovery: &mut Recovery) -> Result<(), StoreError> {
        let decoded = decode_frames(body);
        let valid = HEADER_LEN + decoded.valid_len;
        // Bytes of the invalid tail up to its last non-zero byte: what a
        // crash mid-write or damage left; zeros after it were written ahead.
        let tail = &body[decoded.valid_len..];
        let dirty = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if dirty == 0 {
            self.written = valid as u64;
            self.synced_end = self.written;
            return Ok(());
        }
        // Classify without the zeros: a frame cut short inside zeroed space
        // is torn, not corrupt.
        let end = decode_frames(&body[..decoded.valid_len + dirty]).end;
        let bytes = dirty as u64;
        if let FrameEnd::Corrupt { offset, .. } = end {
            let copy = corrupt_path(&self.path, HEADER_LEN + offset);
            match write_atomically(&copy, &tmp_path(&copy), &tail[..dirty]) {
                Ok(()) => {
                    tracing::warn!(path = %self.path.display(), offset, bytes, copy = %copy.display(),
                        "journal: corrupt frame; dropped the rest of the log (a copy was kept)");
                    recovery.preserved = Some(copy);
                }
                // A full disk must not keep the device from starting (it
                // would exit at every restart): the log is repaired anyway.
                Err(e) if no_space(&e) => {
                    let _ = remove_if_exists(&tmp_path(&copy));
                    tracing::error!(path = %self.path.display(), offset, bytes, copy = %copy.display(),
                        "journal: corrupt frame; dropped the rest of the log, and NO copy could be kept: the disk is full");
                }
                Err(e) => return Err(io_err("preserve", &copy)(e)),
            }
        } else {
            tracing::info!(path = %self.path.display(), bytes, "journal: dropped a torn tail");
        }
        self.file
            .set_len(valid as u64)
            .map_err(io_err("truncate", &self.path))?;
        self.file.sync_all().map_err(io_err("fsync", &self.path))?;
        self.written = valid as u64;
        self.synced_end = self.written;
        self.allocated = valid as u64;
        recovery.discarded = Some(Discarded { end, bytes });
        Ok(())
    }

    pub(crate) fn check_poison(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(why) => Err(StoreError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    pub(crate) fn poison(&mut self, err: StoreError) -> StoreError {
        self.poisoned = Some(err.to_string());
        err
    }

    /// Writes the pending frames to the file (no fsync), growing the zeros
    /// ahead when the room after them would fall below the reserve. When the
    /// disk refuses to grow, frames that fit in the room already written go
    /// there (into the reserve, see [`crate::space`]); otherwise the append
    /// is rolled back to the last sync ([`StoreError::NoSpace`]). Any other
    /// failed or short write cuts the file back and poisons the storage.
    pub(crate) fn write_pending(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let end = self.written + self.pending.len() as u64;
        let grow_to = self.grow_to(end);
        if self.direct.is_some() {
            return self.write_direct(end, grow_to);
        }
        let frames = self.pending.len();
        if let Some(target) = grow_to {
            // Zeros ahead, in the same write (and fsync) as the frames.
            self.pending.resize((target - self.written) as usize, 0);
        }
        let result = match self.file.write_all_at(&self.pending, self.written) {
            Err(e) if no_space(&e) => {
                self.pending.truncate(frames);
                let _ = self.file.set_len(self.allocated);
                if end > self.allocated {
                    return Err(self.roll_back("write", e));
                }
                // The frames fit in the room the file has: use the reserve.
                self.enter_reserve();
                self.file.write_all_at(&self.pending, self.written)
            }
            other => other,
        };
        if let Err(e) = result {
            if no_space(&e) {
                return Err(self.roll_back("write", e));
            }
            let _ = self.file.set_len(self.written);
            self.allocated = self.written;
            return Err(self.poison(io_err("write", &self.path)(e)));
        }
        self.allocated = self.allocated.max(self.written + self.pending.len() as u64);
        self.written = end;
        self.pending.clear();
        self.unsynced = true;
        Ok(())
    }
}

impl Storage for FileStorage {
    type Error = StoreError;

    fn is_no_space(&self, error: &StoreError) -> bool {
        error.is_no_space()
    }

    fn reserve_in_use(&self) -> bool {
        self.in_reserve
    }

    fn restore_reserve(&mut self) -> Result<(), StoreError> {
        self.check_poison()?;
        self.sync()?;
        self.regrow()
    }

    fn append(&mut self, record: &[u8]) -> Result<(), StoreError> {
        self.check_poison()?;
        encode_frame(record, &mut self.pending)?;
        if self.pending.len() >= MAX_PENDING {
            self.write_pending()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.check_poison()?;
        self.write_pending()?;
        if self.unsynced {
            if let Err(source) = self.file.sync_data() {
                // Even ENOSPC here (thin provisioning, NFS) is fatal: the
                // kernel may have dropped the pages it could not write.
                let path = self.path.clone();
                return Err(self.poison(StoreError::SyncFailed { path, source }));
            }
            self.unsynced = false;
            self.syncs += 1;
        }
        self.synced_end = self.written;
        Ok(())
    }

    fn replay(&mut self, visit: &mut dyn FnMut(&[u8])) -> Result<ReplayReport, StoreError> {
        self.check_poison()?;
        self.write_pending()?;
        let bytes = fs::read(&self.path).map_err(io_err("read", &self.path))?;
        check_header(&self.path, &bytes)?;
        let valid = (self.written as usize).min(bytes.len());
        let body = &bytes[HEADER_LEN..valid];
        let decoded = decode_frames(body);
        decoded.records.iter().for_each(|r| visit(r));
        if decoded.valid_len < body.len() {
            // Damaged while we held it open (open already repaired the tail).
            let mut recovery = self.recovery.clone();
            self.repair(body, &mut recovery)?;
            self.recovery = recovery;
            if self.direct.is_some() {
                // Its copy of the last block predates the repair.
                self.write_through()?;
            }
        }
        Ok(ReplayReport {
            records: decoded.records.len(),
            discarded: self.recovery.discarded,
        })
    }

    fn rewrite(&mut self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), StoreError> {
        self.check_poison()?;
        let mut bytes = header().to_vec();
        for r in records {
            encode_frame(r, &mut bytes)?;
        }
        let log_len = bytes.len();
        // The new log carries its reserve from the start.
        bytes.resize(log_len + self.reserve as usize, 0);
        let tmp = tmp_path(&self.path);
        if let Err(e) = write_atomically(&self.path, &tmp, &bytes) {
            if no_space(&e) && tmp.exists() {
                // Not renamed: the old log is intact and still ours.
                let _ = remove_if_exists(&tmp);
                return Err(io_err("rewrite", &self.path)(e));
            }
            // Before the rename the old log is intact, after it the new one is
            // in place but maybe not durable: either way, stop trusting state.
            return Err(self.poison(io_err("rewrite", &self.path)(e)));
        }
        bytes.truncate(log_len);
        match OpenOptions::new().read(true).write(true).open(&self.path) {
            Ok(file) => self.file = file,
            Err(e) => return Err(self.poison(io_err("open", &self.path)(e))),
        }
        self.written = bytes.len() as u64;
        self.synced_end = self.written;
        self.allocated = self.written + self.reserve;
        self.in_reserve = false;
        self.pending.clear();
        self.unsynced = false;
        self.syncs += 1;
        if self.direct.is_some() {
            // The old handle points at the replaced file.
            if let Err(e) = self.write_through() {
                return Err(self.poison(e));
            }
        }
        Ok(())
    }
}

fn header() -> [u8; HEADER_LEN] {
    let mut h = [0; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

fn check_header(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let bad = || StoreError::BadHeader {
        path: path.to_path_buf(),
    };
    let h = bytes.get(..HEADER_LEN).ok_or_else(bad)?;
    if h[..8] != MAGIC {
        return Err(bad());
    }
    let found = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if found != VERSION {
        return Err(StoreError::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
        });
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    with_suffix(path, ".tmp")
}

fn corrupt_path(path: &Path, offset: usize) -> PathBuf {
    with_suffix(path, &format!(".corrupt-{offset}"))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    parent_dir(path).join(name)
}
