//! The update store on Linux: the staged transfer, the modules of installed
//! versions, and the update state, under `<data_dir>/updates/`.
//!
//! ```text
//! updates/state          the UpdateState (msgpack), replaced atomically
//! updates/staging.part   the transfer being received (or the last one)
//! updates/staging.id     its transfer id (hex), written before any chunk
//! updates/modules/<sha256>.wasm   one module per installed version
//! updates/ahead/staging.{part,id}  the same transfer, received ahead of
//!                        its turn (not synced: a cache, see `runtime::ahead`)
//! updates/ahead/<sha256>.wasm  its module, verified, synced: the turn
//!                        moves it into modules/ instead of copying
//! ```
//!
//! Durability rules: a chunk is fsynced before `_install` reports it; a
//! module is complete and fsynced under a temporary name before it gets its
//! final one; the state file is the single switch point (written with
//! `fsutil::write_atomically`), so a crash leaves the old state or the new
//! one, never a mix. A module no state refers to is garbage, removed at
//! start. The last transfer stays staged until the next one starts, so a
//! re-run of its last chunk after a crash finds it (and the install is
//! recognised as done) instead of reporting a gap.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use relay_core::ota::bundle::{hex, unhex};
use relay_core::ota::chunk::Staging;
use relay_core::ota::state::{Source, UpdateState};
use relay_core::ota::verify::BundleRead;

use crate::fsutil::{remove_if_exists, sync_dir, write_atomically};

/// The directory under the data dir.
pub const UPDATES_DIR: &str = "updates";

/// See the module doc.
#[derive(Debug)]
pub struct UpdateFiles {
    dir: PathBuf,
    staging: FileStaging,
}

impl UpdateFiles {
    /// Opens (creating) `<data_dir>/updates`.
    pub fn open(data_dir: &Path) -> io::Result<UpdateFiles> {
        let dir = data_dir.join(UPDATES_DIR);
        fs::create_dir_all(dir.join("modules"))?;
        let staging = FileStaging {
            dir: dir.clone(),
            durable: true,
        };
        Ok(UpdateFiles { dir, staging })
    }

    /// The staging area of transfers received ahead of their turn
    /// (`updates/ahead/`, created): nothing in it is synced, since the
    /// journal holds every chunk and the turn stages it again durably.
    pub fn ahead_staging(&self) -> io::Result<FileStaging> {
        let dir = self.dir.join("ahead");
        fs::create_dir_all(&dir)?;
        Ok(FileStaging {
            dir,
            durable: false,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The saved state (empty when none was saved yet).
    pub fn load_state(&self) -> io::Result<UpdateState> {
        match fs::read(self.dir.join("state")) {
            Ok(bytes) => UpdateState::decode(&bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(UpdateState::default()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the state atomically.
    pub fn save_state(&self, state: &UpdateState) -> io::Result<()> {
        write_atomically(
            &self.dir.join("state"),
            &self.dir.join("state.tmp"),
            &state.encode(),
        )
    }

    /// Where the module with this sha256 lives.
    pub fn module_path(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir
            .join("modules")
            .join(format!("{}.wasm", hex(sha256)))
    }

    /// Copies `len` bytes at `offset` of the staged bundle into the module
    /// store under `sha256`, durably. The caller verified the hash. A
    /// module already kept under this hash is left as it is (only verified
    /// bytes get a final name, by an atomic rename, so it is complete); one
    /// prepared ahead ([`UpdateFiles::prepare_ahead`]) is moved in.
    pub fn keep_module(&self, sha256: &[u8; 32], offset: u64, len: u64) -> io::Result<PathBuf> {
        let path = self.module_path(sha256);
        if fs::metadata(&path).is_ok_and(|m| m.len() == len) {
            return Ok(path);
        }
        let ahead = self.ahead_module_path(sha256);
        if fs::metadata(&ahead).is_ok_and(|m| m.len() == len) {
            fs::rename(&ahead, &path)?;
        } else {
            copy_synced(&self.staging, offset, len, &path)?;
        }
        sync_dir(&self.dir.join("modules"))?;
        Ok(path)
    }

    /// Keeps the module of the bundle staged in `ahead` (verified by the
    /// caller) as `updates/ahead/<sha256>.wasm`, synced, for its install's
    /// turn to move in; any other module prepared before is deleted.
    pub fn prepare_ahead(
        &self,
        ahead: &FileStaging,
        sha256: &[u8; 32],
        offset: u64,
        len: u64,
    ) -> io::Result<PathBuf> {
        let path = self.ahead_module_path(sha256);
        for entry in fs::read_dir(&ahead.dir)? {
            let other = entry?.path();
            if other.extension().is_some_and(|e| e == "wasm") && other != path {
                fs::remove_file(&other)?;
            }
        }
        if !fs::metadata(&path).is_ok_and(|m| m.len() == len) {
            copy_synced(ahead, offset, len, &path)?;
        }
        Ok(path)
    }

    fn ahead_module_path(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join("ahead").join(format!("{}.wasm", hex(sha256)))
    }

    /// Deletes the module of `source` (a factory module is never ours).
    pub fn drop_source(&self, source: &Source) -> io::Result<()> {
        if let Source::Bundle(sha) = source {
            remove_if_exists(&self.module_path(sha))?;
        }
        Ok(())
    }

    /// Removes modules `state` does not refer to (left by a crash between
    /// keeping a module and switching to it). Returns how many.
    pub fn collect_garbage(&self, state: &UpdateState) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(self.dir.join("modules"))? {
            let path = entry?.path();
            let keep = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(unhex32)
                .filter(|_| path.extension().is_some_and(|e| e == "wasm"))
                .is_some_and(|sha| state.references(&Source::Bundle(sha)));
            if !keep {
                fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The staged bundle, for verification.
    pub fn staged_bundle(&self) -> io::Result<FileBundle> {
        self.staging.staged_bundle()
    }
}

impl Staging for UpdateFiles {
    fn current(&mut self) -> Result<Option<([u8; 32], u64)>, String> {
        self.staging.current()
    }

    fn start(&mut self, transfer: &[u8; 32]) -> Result<(), String> {
        self.staging.start(transfer)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        self.staging.write(offset, data)
    }
}

/// One staging area: `staging.part` (the bytes) and `staging.id` (the
/// transfer, written before any chunk) in a directory; synced or not.
#[derive(Debug)]
pub struct FileStaging {
    dir: PathBuf,
    durable: bool,
}

impl FileStaging {
    fn part_path(&self) -> PathBuf {
        self.dir.join("staging.part")
    }

    /// The staged bundle, for verification.
    pub fn staged_bundle(&self) -> io::Result<FileBundle> {
        let file = File::open(self.part_path())?;
        let len = file.metadata()?.len();
        Ok(FileBundle { file, len })
    }
}

impl Staging for FileStaging {
    fn current(&mut self) -> Result<Option<([u8; 32], u64)>, String> {
        let id = match fs::read_to_string(self.dir.join("staging.id")) {
            Ok(id) => id,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let Some(id) = unhex32(id.trim()) else {
            return Ok(None);
        };
        match fs::metadata(self.part_path()) {
            Ok(m) => Ok(Some((id, m.len()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn start(&mut self, transfer: &[u8; 32]) -> Result<(), String> {
        let file = File::create(self.part_path()).map_err(|e| e.to_string())?;
        if !self.durable {
            return fs::write(self.dir.join("staging.id"), hex(transfer))
                .map_err(|e| e.to_string());
        }
        file.sync_all().map_err(|e| e.to_string())?;
        write_atomically(
            &self.dir.join("staging.id"),
            &self.dir.join("staging.id.tmp"),
            hex(transfer).as_bytes(),
        )
        .map_err(|e| e.to_string())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        let io = |e: io::Error| e.to_string();
        let mut file = OpenOptions::new()
            .write(true)
            .open(self.part_path())
            .map_err(io)?;
        file.set_len(offset).map_err(io)?;
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        file.write_all(data).map_err(io)?;
        if self.durable {
            file.sync_data().map_err(io)?;
        }
        Ok(())
    }
}

/// A staged bundle file, read in blocks by the verifier.
#[derive(Debug)]
pub struct FileBundle {
    file: File,
    len: u64,
}

impl BundleRead for FileBundle {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| e.to_string())
    }
}

/// Copies `len` bytes at `offset` of `staging` to `path`: complete and
/// synced under a temporary name first, then renamed (the caller syncs the
/// directory when the name matters).
fn copy_synced(staging: &FileStaging, offset: u64, len: u64, path: &Path) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut from = File::open(staging.part_path())?;
    from.seek(SeekFrom::Start(offset))?;
    let mut to = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    let copied = io::copy(&mut from.take(len), &mut to)?;
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "staged bundle shrank",
        ));
    }
    to.sync_all()?;
    drop(to);
    fs::rename(&tmp, path)
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    unhex(s).and_then(|b| b.try_into().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::ota::chunk::{receive, Chunk, Progress};
    use relay_core::ota::state::Slot;

    #[test]
    fn staging_survives_a_reopen_and_modules_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = UpdateFiles::open(dir.path()).unwrap();
        let chunk = |offset, data| Chunk {
            transfer: [3; 32],
            offset,
            total: 8,
            data,
        };
        receive(&mut files, &chunk(0, b"abcd"), 100).unwrap();
        let mut files = UpdateFiles::open(dir.path()).unwrap();
        assert_eq!(files.current().unwrap(), Some(([3; 32], 4)));
        let p = receive(&mut files, &chunk(4, b"efgh"), 100).unwrap();
        assert_eq!(p, Progress::Complete { total: 8 });
        let mut bundle = files.staged_bundle().unwrap();
        let mut buf = [0; 8];
        bundle.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"abcdefgh");

        let kept = files.keep_module(&[9; 32], 2, 4).unwrap();
        assert_eq!(fs::read(&kept).unwrap(), b"cdef");
        let mut state = UpdateState::default();
        assert_eq!(files.collect_garbage(&state).unwrap(), 1);
        files.keep_module(&[9; 32], 2, 4).unwrap();
        state.switch(
            "p",
            Slot {
                version: "1.0.0".into(),
                source: Source::Bundle([9; 32]),
            },
            None,
        );
        files.save_state(&state).unwrap();
        assert_eq!(files.load_state().unwrap(), state);
        assert_eq!(files.collect_garbage(&state).unwrap(), 0);
        assert!(kept.exists());
    }
}
