//! Plugin directory -> registry, at start (feeds step 4).
//!
//! Every `*.wasm` file in the plugin dir is loaded with the configured
//! engine, in file-name order, and installed under the name its `describe`
//! reports (not its file name: the identity comes from the artifact). Its
//! environment gets the persistent [`FileKv`] of that name under the data
//! dir, the system clock and the tracing logger. Any failure stops the start
//! with an error naming the file: a device that silently runs without one of
//! its plugins would reject that plugin's commands as `unknown_command`
//! until someone noticed.

use std::path::{Path, PathBuf};

use relay_core::engine::Engine;
use relay_core::host_env::{HostEnv, MemKv, TracingLogger};
use relay_core::limits::Limits;
use relay_core::plugin::PluginInfo;
use relay_core::registry::ListenError;
use relay_store::{FileKv, KvStoreError};

use super::clock::SystemClock;
use super::handlers::Handlers;

/// Why the plugin dir could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read plugin dir {}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read plugin {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin {} failed to load", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: relay_core::engine::PluginError,
    },
    #[error("plugin {} (from {}): cannot open its kv store", plugin, path.display())]
    Kv {
        plugin: String,
        path: PathBuf,
        #[source]
        source: KvStoreError,
    },
    #[error("plugin {} (from {}) cannot be installed", plugin, path.display())]
    Install {
        plugin: String,
        path: PathBuf,
        #[source]
        source: ListenError,
    },
    #[error("{} and {} both describe themselves as plugin {name:?}", first.display(), second.display())]
    SameName {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// The `*.wasm` files of `dir`, sorted. A missing dir is an error.
pub fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Dir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| LoadError::Dir {
                dir: dir.to_path_buf(),
                source,
            })?
            .path();
        if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads one artifact with a persistent env under `data_dir`.
pub fn load_plugin(
    engine: &dyn Engine,
    path: &Path,
    limits: &Limits,
    data_dir: &Path,
) -> Result<Box<dyn relay_core::engine::Plugin>, LoadError> {
    let wasm = read(path, limits)?;
    let mut kv_error = None;
    let mut make_env = |info: &PluginInfo| match plugin_env(info, limits, data_dir) {
        Ok(env) => env,
        Err(e) => {
            kv_error = Some((info.name.clone(), e));
            scratch_env(info, limits)
        }
    };
    let plugin = engine
        .load(&wasm, limits, &mut make_env)
        .map_err(|source| LoadError::Load {
            path: path.to_path_buf(),
            source,
        })?;
    if let Some((plugin, source)) = kv_error {
        return Err(LoadError::Kv {
            plugin,
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(plugin)
}

/// Loads one artifact with a scratch env (in-memory kv): a plugin loaded
/// ahead of its install, which gets its [`plugin_env`] when it is switched
/// in (the kv may change until then).
pub fn load_detached(
    engine: &dyn Engine,
    path: &Path,
    limits: &Limits,
) -> Result<Box<dyn relay_core::engine::Plugin>, LoadError> {
    let wasm = read(path, limits)?;
    engine
        .load(&wasm, limits, &mut |info| scratch_env(info, limits))
        .map_err(|source| LoadError::Load {
            path: path.to_path_buf(),
            source,
        })
}

/// The env a plugin runs in on this device: its persistent kv under
/// `data_dir`, the system clock, the tracing logger.
pub fn plugin_env(
    info: &PluginInfo,
    limits: &Limits,
    data_dir: &Path,
) -> Result<HostEnv, KvStoreError> {
    let kv = FileKv::open(data_dir, &info.name)?;
    Ok(HostEnv::new(
        info.name.clone(),
        Box::new(kv),
        Box::new(SystemClock),
        Box::new(TracingLogger),
        limits,
    ))
}

fn scratch_env(info: &PluginInfo, limits: &Limits) -> HostEnv {
    HostEnv::new(
        info.name.clone(),
        Box::new(MemKv::default()),
        Box::new(SystemClock),
        Box::new(TracingLogger),
        limits,
    )
}

fn read(path: &Path, limits: &Limits) -> Result<Vec<u8>, LoadError> {
    super::module_file::read_module(path, limits.max_module_bytes).map_err(|source| {
        LoadError::Read {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Loads every plugin of `dir` into `handlers`; returns what was installed.
pub fn load_dir(
    engine: &dyn Engine,
    dir: &Path,
    limits: &Limits,
    data_dir: &Path,
    handlers: &Handlers,
) -> Result<Vec<PluginInfo>, LoadError> {
    let loaded = load_dir_files(engine, dir, limits, data_dir, handlers)?;
    Ok(loaded.into_iter().map(|(i, _)| i).collect())
}

/// [`load_dir`], with the file each plugin came from (an update's rollback
/// may go back to it).
pub fn load_dir_files(
    engine: &dyn Engine,
    dir: &Path,
    limits: &Limits,
    data_dir: &Path,
    handlers: &Handlers,
) -> Result<Vec<(PluginInfo, PathBuf)>, LoadError> {
    let mut loaded: Vec<(PluginInfo, PathBuf)> = Vec::new();
    for path in plugin_files(dir)? {
        let plugin = load_plugin(engine, &path, limits, data_dir)?;
        let info = plugin.info().clone();
        if let Some((_, first)) = loaded.iter().find(|(i, _)| i.name == info.name) {
            // Installing would replace the first one silently.
            return Err(LoadError::SameName {
                name: info.name.clone(),
                first: first.clone(),
                second: path,
            });
        }
        handlers.install(plugin).map_err(|source| {
            // Name the plugin that already owns the command, not just "a plugin".
            let source = match source {
                ListenError::Duplicate { command, owner } => {
                    let other = loaded
                        .iter()
                        .find(|(i, _)| i.commands.iter().any(|c| c.name == command))
                        .map(|(i, p)| format!("plugin {:?} from {}", i.name, p.display()))
                        .unwrap_or(owner);
                    ListenError::Duplicate {
                        command,
                        owner: other,
                    }
                }
                other => other,
            };
            LoadError::Install {
                plugin: info.name.clone(),
                path: path.clone(),
                source,
            }
        })?;
        tracing::info!(
            plugin = %info.name,
            version = %info.version,
            engine = %engine.kind(),
            commands = ?info.commands.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            file = %path.display(),
            "plugin loaded"
        );
        loaded.push((info, path));
    }
    Ok(loaded)
}
