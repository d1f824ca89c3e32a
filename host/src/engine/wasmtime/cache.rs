//! Load step 4b: a cache of OUR OWN compiled output. Componentizing and
//! compiling a plugin with Cranelift costs tens of milliseconds; loading the
//! serialized result costs well under one. Entries are written by
//! [`wasmtime::component::Component::serialize`] and read back with
//! `Component::deserialize_file`.
//!
//! # Why the one `unsafe` block here is sound
//!
//! `deserialize_file` maps the file as executable code after checking only
//! its header (wasmtime version and engine settings), so it is unsafe on
//! bytes we did not produce. We only ever read files that this code wrote:
//! - the cache directory is host-private: created with mode 0700, and
//!   [`CompileCache::open`] refuses a directory that is a symlink, is owned
//!   by another user, or is writable by group/others;
//! - an entry's file name is the SHA-256 of (domain tag, relay-host version,
//!   wasmtime version, wasmtime's engine-compatibility hash, the WIT world,
//!   the plugin's module bytes), so a file at that name was written for
//!   exactly this input by this build's settings; plugin bytes never reach
//!   the cache except as hash input;
//! - files are written to a temporary name, fsynced, then renamed, so a crash
//!   never leaves a partial file under an entry's name;
//! - entries that fail to load are deleted and rebuilt.

use std::fs;
use std::hash::Hasher;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// Bumped whenever the key recipe or the stored format changes.
const DOMAIN: &[u8] = b"relay-wasmtime-component-cache-v2-metered";

/// Why a cache directory was refused.
#[derive(Debug, thiserror::Error)]
pub enum CacheDirError {
    #[error("cache dir {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cache dir {path} is not host-private: {why}")]
    NotPrivate { path: PathBuf, why: &'static str },
}

/// Cache activity counters (tests and `relay` diagnostics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub writes: u64,
    /// Entries that existed but failed to load (deleted and rebuilt).
    pub rejected: u64,
}

/// The compile cache rooted at one host-private directory.
#[derive(Debug)]
pub(super) struct CompileCache {
    dir: PathBuf,
    hits: AtomicU64,
    misses: AtomicU64,
    writes: AtomicU64,
    rejected: AtomicU64,
}

impl CompileCache {
    /// Creates `dir` (mode 0700) if needed and checks it is private to us.
    pub fn open(dir: &Path) -> Result<Self, CacheDirError> {
        let io = |source| CacheDirError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let private = |why| CacheDirError::NotPrivate {
            path: dir.to_path_buf(),
            why,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let meta = fs::symlink_metadata(dir).map_err(io)?;
        if !meta.is_dir() {
            return Err(private("not a directory (or a symlink)"));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(private("writable by group or others"));
        }
        // std has no geteuid(); a file we create carries our effective uid.
        let probe = dir.join(format!(".owner-probe-{}", std::process::id()));
        let probe_uid = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&probe)
            .and_then(|f| f.metadata())
            .map(|m| m.uid());
        let _ = fs::remove_file(&probe);
        if probe_uid.map_err(io)? != meta.uid() {
            return Err(private("owned by another user"));
        }
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            writes: self.writes.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
        }
    }

    /// The entry path for `wasm`, metered with a fuel `budget`, compiled by `engine`.
    pub fn entry(&self, engine: &wasmtime::Engine, wit: &str, wasm: &[u8], budget: u64) -> PathBuf {
        let mut hasher = ShaHasher(Sha256::new());
        let mut field = |bytes: &[u8]| {
            hasher.0.update((bytes.len() as u64).to_le_bytes());
            hasher.0.update(bytes);
        };
        field(DOMAIN);
        field(env!("CARGO_PKG_VERSION").as_bytes());
        field(wasmtime_environ::VERSION.as_bytes());
        field(wit.as_bytes());
        field(wasm);
        field(&budget.to_le_bytes());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let digest = hasher.0.finalize();
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.cwasm"))
    }

    /// Loads the entry at `path` if we wrote one.
    pub fn load(&self, engine: &wasmtime::Engine, path: &Path) -> Option<Component> {
        let is_file = fs::symlink_metadata(path)
            .map(|m| m.is_file())
            .unwrap_or(false);
        if !is_file {
            self.misses.fetch_add(1, Relaxed);
            return None;
        }
        // SAFETY: `path` is an entry name inside our host-private cache dir,
        // written only by `CompileCache::store` from `Component::serialize`
        // (see the module docs for the full argument). wasmtime additionally
        // checks the header's version and engine settings.
        match unsafe { Component::deserialize_file(engine, path) } {
            Ok(component) => {
                self.hits.fetch_add(1, Relaxed);
                Some(component)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "dropping unusable cache entry: {e:#}");
                self.rejected.fetch_add(1, Relaxed);
                self.misses.fetch_add(1, Relaxed);
                let _ = fs::remove_file(path);
                None
            }
        }
    }

    /// Stores `component` at `path` (atomically). Failures only cost speed.
    pub fn store(&self, component: &Component, path: &Path) {
        match self.try_store(component, path) {
            Ok(()) => {
                self.writes.fetch_add(1, Relaxed);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "could not write compile cache entry: {e}")
            }
        }
    }

    fn try_store(&self, component: &Component, path: &Path) -> std::io::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        static NEXT_TMP: AtomicU64 = AtomicU64::new(0);
        let tmp = path.with_extension(format!(
            "tmp-{}-{}",
            std::process::id(),
            NEXT_TMP.fetch_add(1, Relaxed)
        ));
        let result = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// Feeds wasmtime's `impl Hash` compatibility fingerprint into SHA-256.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}
