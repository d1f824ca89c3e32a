//! Where the bundled plugins (`plugins/*`, built by `cargo xtask
//! build-plugins`) are found: by `relay dev`, the tests, the benchmarks and
//! the examples.
//!
//! Search order: `$RELAY_PLUGIN_DIR` if set; else the checkout this crate
//! was built from (`<workspace>/target/plugins`), which is also where an
//! installed `relay` (`cargo install --path cli`) finds them as long as that
//! checkout is there; else `<exe dir>/../share/relay/plugins` (a packaged
//! install); else `$XDG_DATA_HOME/relay/plugins` (`~/.local/share/...`).
//! The first directory that exists wins; if none does, the checkout's path
//! is returned so the error names the place `cargo xtask build-plugins` fills.

use std::path::{Path, PathBuf};

/// The bundled plugin `name` is not built where it was looked for.
#[derive(Debug, thiserror::Error)]
#[error("plugin {name:?} is not built ({path} is missing): run `cargo xtask build-plugins`")]
pub struct MissingPlugin {
    pub name: String,
    pub path: PathBuf,
}

/// The directory that holds the bundled plugins (see the module doc).
pub fn plugin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RELAY_PLUGIN_DIR") {
        return PathBuf::from(dir);
    }
    let checkout = checkout_plugin_dir();
    candidates(&checkout)
        .into_iter()
        .find(|dir| dir.is_dir())
        .unwrap_or(checkout)
}

/// The built module of bundled plugin `name` (`<dir>/<name>.wasm`).
pub fn plugin(name: &str) -> Result<PathBuf, MissingPlugin> {
    let path = plugin_dir().join(format!("{name}.wasm"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(MissingPlugin {
            name: name.into(),
            path,
        })
    }
}

fn checkout_plugin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("plugins")
}

fn candidates(checkout: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![checkout.to_path_buf()];
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("..").join("share").join("relay").join("plugins"));
    }
    let data_home = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    if let Some(data_home) = data_home {
        dirs.push(data_home.join("relay").join("plugins"));
    }
    dirs
}
