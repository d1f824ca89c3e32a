//! Where the bundled plugins (`plugins/*`, built by `cargo xtask
//! build-plugins`) are found by the tests, benchmarks and examples:
//! `$RELAY_PLUGIN_DIR` if set, else `<workspace>/target/plugins`. (An
//! installed `relay` carries its own copy: see the CLI's `bundled` module.)

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
    match std::env::var_os("RELAY_PLUGIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("plugins"),
    }
}

/// The built module of bundled plugin `name`: `<dir>/<name>.wasm`, or for
/// the per-language example plugins `<dir>/languages/<name>.wasm`.
pub fn plugin(name: &str) -> Result<PathBuf, MissingPlugin> {
    let file = format!("{name}.wasm");
    let path = plugin_dir().join(&file);
    let apart = plugin_dir().join("languages").join(&file);
    if apart.is_file() && !path.is_file() {
        return Ok(apart);
    }
    if path.is_file() {
        Ok(path)
    } else {
        Err(MissingPlugin {
            name: name.into(),
            path,
        })
    }
}
