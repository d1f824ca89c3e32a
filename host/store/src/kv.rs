//! [`FileKv`]: a plugin's kv namespace ([`KvStore`]) persisted on disk, so
//! state a handler wrote survives a restart of the device.
//!
//! Each plugin gets one snapshot file, `<data_dir>/kv/<plugin>.kv`, held in
//! memory while the plugin is loaded and rewritten whole by
//! [`KvStore::flush`] (write `.tmp`, fsync, rename, fsync dir; only when
//! something changed). The runtime flushes after each call and before
//! journaling the call's outcome, so a journaled outcome never refers to kv
//! writes that a crash could undo.
//!
//! ```text
//! <plugin>.kv = magic "RLYKVST\n" | version: u32 LE | count: u32 LE
//!               | (key_len: u32 LE | key (UTF-8) | value_len: u32 LE | value)*
//!               | crc32 of everything before: u32 LE
//! ```
//!
//! Why a snapshot file and not redb: a namespace is bounded by the plugin's
//! quota (256 KiB by default) and is written at most once per call, so
//! rewriting it whole costs one small write + two fsyncs and needs no
//! compaction, no page cache of its own and no extra dependency; the trailer
//! CRC turns any damage into a typed error at open instead of wrong data.
//! Quotas are not enforced here but by [`relay_core::host_env::HostEnv`],
//! which recounts the usage from [`KvStore::entries`] when it is built, so
//! they hold across reloads.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use relay_core::host_env::KvStore;
use relay_core::name::{validate_name, NameError};

use crate::fsutil::{remove_if_exists, write_atomically};

const MAGIC: [u8; 8] = *b"RLYKVST\n";
const VERSION: u32 = 1;
/// Directory of the snapshots inside the data dir.
const KV_DIR: &str = "kv";

/// Why a kv namespace could not be opened or made durable.
#[derive(Debug, thiserror::Error)]
pub enum KvStoreError {
    #[error("invalid plugin name for a kv store: {0}")]
    InvalidPlugin(#[from] NameError),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("kv snapshot {} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: &'static str },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> KvStoreError + 'a {
    move |source| KvStoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One plugin's persistent kv namespace.
#[derive(Debug)]
pub struct FileKv {
    path: PathBuf,
    entries: BTreeMap<String, Vec<u8>>,
    dirty: bool,
    flushes: u64,
}

impl FileKv {
    /// Opens the namespace of `plugin` under `data_dir`, loading its last
    /// flushed snapshot (empty if none). A leftover `.tmp` from a crash
    /// mid-flush is removed: the snapshot it was replacing is still whole.
    pub fn open(data_dir: impl AsRef<Path>, plugin: &str) -> Result<FileKv, KvStoreError> {
        let path = snapshot_path(data_dir.as_ref(), plugin)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let tmp = tmp_path(&path);
        remove_if_exists(&tmp).map_err(io_err("remove", &tmp))?;
        let entries = match fs::read(&path) {
            Ok(bytes) => decode(&bytes).map_err(|reason| KvStoreError::Corrupt {
                path: path.clone(),
                reason,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        Ok(FileKv {
            path,
            entries,
            dirty: false,
            flushes: 0,
        })
    }

    /// Deletes the namespace of `plugin` (on uninstall); `Ok(true)` if a
    /// snapshot existed.
    pub fn remove(data_dir: impl AsRef<Path>, plugin: &str) -> Result<bool, KvStoreError> {
        let path = snapshot_path(data_dir.as_ref(), plugin)?;
        let tmp = tmp_path(&path);
        remove_if_exists(&tmp).map_err(io_err("remove", &tmp))?;
        remove_if_exists(&path).map_err(io_err("remove", &path))
    }

    /// Path of the snapshot file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when writes happened since the last successful flush.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Snapshots written so far (flushes of a clean store write nothing).
    pub fn flush_count(&self) -> u64 {
        self.flushes
    }

    /// Makes every write so far durable, reporting failure (the
    /// [`KvStore::flush`] of the trait can only log it). On failure the store
    /// stays dirty, so the next flush retries.
    pub fn try_flush(&mut self) -> Result<(), KvStoreError> {
        if !self.dirty {
            return Ok(());
        }
        let bytes = encode(&self.entries);
        let tmp = tmp_path(&self.path);
        if let Err(e) = write_atomically(&self.path, &tmp, &bytes) {
            // A half-written snapshot (a full disk) must not keep its space.
            let _ = remove_if_exists(&tmp);
            return Err(io_err("write", &self.path)(e));
        }
        self.dirty = false;
        self.flushes += 1;
        Ok(())
    }
}

impl KvStore for FileKv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.entries.get(key).cloned()
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        if self.entries.get(key).map(Vec::as_slice) != Some(value) {
            self.entries.insert(key.into(), value.to_vec());
            self.dirty = true;
        }
    }

    fn delete(&mut self, key: &str) {
        if self.entries.remove(key).is_some() {
            self.dirty = true;
        }
    }

    fn entries(&self) -> Vec<(String, Vec<u8>)> {
        self.entries
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// On failure the writes stay in memory (dirty) and the next flush retries them.
    fn flush(&mut self) -> Result<(), String> {
        self.try_flush().map_err(|e| e.to_string())
    }
}

fn snapshot_path(data_dir: &Path, plugin: &str) -> Result<PathBuf, KvStoreError> {
    // The seed naming rule keeps the name a plain file name (no `/`, `..`).
    validate_name(plugin)?;
    Ok(data_dir.join(KV_DIR).join(format!("{plugin}.kv")))
}

fn tmp_path(path: &Path) -> PathBuf {
    path.with_extension("kv.tmp")
}

fn encode(entries: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let size: usize = entries.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(16 + size + 4);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (k, v) in entries {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, &'static str> {
    let (body, trailer) = bytes.split_last_chunk::<4>().ok_or("file too short")?;
    if body.get(..8) != Some(MAGIC.as_slice()) {
        return Err("bad magic");
    }
    if crc32fast::hash(body) != u32::from_le_bytes(*trailer) {
        return Err("checksum mismatch");
    }
    let mut r = Reader { buf: &body[8..] };
    if r.u32()? != VERSION {
        return Err("unsupported version");
    }
    let count = r.u32()?;
    let mut entries = BTreeMap::new();
    for _ in 0..count {
        let key = r.bytes()?;
        let key = std::str::from_utf8(key).map_err(|_| "key is not UTF-8")?;
        let value = r.bytes()?;
        if entries.insert(key.to_owned(), value.to_vec()).is_some() {
            return Err("duplicate key");
        }
    }
    if !r.buf.is_empty() {
        return Err("trailing bytes");
    }
    Ok(entries)
}

/// Bounds-checked little-endian reader over a snapshot body.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.buf.len() {
            return Err("truncated entry");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips() {
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), b"1".to_vec());
        m.insert("".to_string(), Vec::new());
        m.insert("ü".to_string(), vec![0; 300]);
        assert_eq!(decode(&encode(&m)).unwrap(), m);
        assert_eq!(decode(&encode(&BTreeMap::new())).unwrap(), BTreeMap::new());
    }

    #[test]
    fn every_truncation_and_flip_is_an_error_or_the_original() {
        let mut m = BTreeMap::new();
        m.insert("key".to_string(), b"value".to_vec());
        m.insert("k2".to_string(), vec![9; 20]);
        let bytes = encode(&m);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(decode(&b).is_err(), "flip {i}:{bit}");
            }
        }
    }
}
