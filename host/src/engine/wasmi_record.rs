//! Load step for wasmi on a host with a disk: the record of modules whose
//! bytes were already fully validated ([`ValidatedModules`]), so later
//! loads (every restart, every harness run) skip body validation, most of a
//! wasmi cold load. See `relay_core::engine::wasmi` for why that is safe: a
//! module not in the record is validated in full, and a forged entry only
//! moves a bad body's error from load to its first call.
//!
//! One empty file per module in a directory, named by the SHA-256 of a
//! domain tag, the host's version and the module bytes (the module
//! itself is never stored). Writing is best effort: a failed write only
//! means the next load validates again.

use std::fs;
use std::path::{Path, PathBuf};

use relay_core::engine::wasmi::ValidatedModules;
use sha2::{Digest, Sha256};

/// Bumped whenever the key recipe changes (or validation gets stricter).
const DOMAIN: &[u8] = b"relay-wasmi-validated-v1";

/// A [`ValidatedModules`] record in a directory.
#[derive(Debug, Clone)]
pub struct ValidatedDir {
    dir: PathBuf,
}

impl ValidatedDir {
    /// Uses (and creates) `dir`.
    pub fn open(dir: impl AsRef<Path>) -> std::io::Result<ValidatedDir> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        Ok(ValidatedDir { dir })
    }

    fn entry(&self, wasm: &[u8]) -> PathBuf {
        let mut hasher = Sha256::new();
        hasher.update(DOMAIN);
        hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
        hasher.update((wasm.len() as u64).to_le_bytes());
        hasher.update(wasm);
        let name: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(name)
    }
}

impl ValidatedModules for ValidatedDir {
    fn contains(&self, wasm: &[u8]) -> bool {
        self.entry(wasm).is_file()
    }

    fn insert(&self, wasm: &[u8]) {
        if let Err(error) = fs::write(self.entry(wasm), b"") {
            tracing::debug!(%error, dir = %self.dir.display(), "cannot record a validated module");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_modules_by_their_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let record = ValidatedDir::open(tmp.path().join("validated")).unwrap();
        assert!(!record.contains(b"\0asm one"));
        record.insert(b"\0asm one");
        assert!(record.contains(b"\0asm one"));
        assert!(!record.contains(b"\0asm two"));
        // Another handle on the same dir (a restart) sees it.
        let again = ValidatedDir::open(tmp.path().join("validated")).unwrap();
        assert!(again.contains(b"\0asm one"));
    }
}
