//! The bundled plugins built into the `relay` binary (see `build.rs`), for
//! `relay dev` outside a checkout. They are written to a directory of the
//! data dir on start (only files whose bytes changed), since the host loads
//! plugins from a directory, as on a device.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

include!(concat!(env!("OUT_DIR"), "/bundled_plugins.rs"));

/// Where under the data dir the bundled plugins are written.
pub const DIR_NAME: &str = "bundled-plugins";

/// Writes the built-in plugins to `<data_dir>/bundled-plugins` and returns
/// that directory; `None` if this binary was built without plugins.
pub fn extract(data_dir: &Path) -> Result<Option<PathBuf>> {
    if BUNDLED.is_empty() {
        return Ok(None);
    }
    let dir = data_dir.join(DIR_NAME);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let stale = path.extension().is_some_and(|e| e == "wasm")
            && path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_none_or(|name| !BUNDLED.iter().any(|(n, _)| *n == name));
        if stale {
            std::fs::remove_file(&path)?;
        }
    }
    for (name, bytes) in BUNDLED {
        let path = dir.join(format!("{name}.wasm"));
        if std::fs::read(&path).ok().as_deref() != Some(*bytes) {
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(Some(dir))
}

/// The names of the built-in plugins.
pub fn names() -> Vec<&'static str> {
    BUNDLED.iter().map(|(name, _)| *name).collect()
}
