//! The plugin author's desktop harness: run a plugin on wasmtime and wasmi
//! without a device, from `cargo test` ([`Harness`]) or from scenario files
//! (`relay test`, [`run_scenario`]).
//!
//! Role in the data path: it replaces everything around step 4-5 of a
//! command's path (registry -> engine) with in-memory fakes: the plugin is
//! installed into a real [`relay_core::registry::Registry`] (so role checks
//! and unknown commands answer exactly as on a device), the kv store is a
//! [`relay_core::host_env::MemKv`] kept across [`Harness::restart`], the clock
//! is fixed and settable, logs and events are captured.
//!
//! # From Rust
//!
//! ```no_run
//! use relay_harness::{bundled_plugin, Harness};
//! use relay_core::engine::EngineKind;
//! use relay_core::plugin::Role;
//! use serde_json::json;
//!
//! # fn main() -> Result<(), relay_harness::HarnessError> {
//! for kind in [EngineKind::Wasmtime, EngineKind::Wasmi] {
//!     let mut h = Harness::load(bundled_plugin("counter")?, kind)?;
//!     let r = h.call("increment", json!({ "by": 2 }))?;
//!     assert_eq!(r.reply_json()?, json!({ "value": 2 }));
//!     assert_eq!(h.kv_json(), json!({ "count": 2 }));
//!
//!     h.restart()?; // a host restart: new instance, same kv
//!     let r = h.as_role(Role::Secondary).call("reset", json!(null))?;
//!     assert_eq!(r.code(), Some("not_permitted"));
//!
//!     h.set_now(1_700_000_060_000);
//!     let _ = h.events(); // every event emitted so far
//!     let _ = h.logs(); // every log line, with its level
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # From scenario files
//!
//! [`run_scenario`]`(plugin, scenario, &[EngineKind::Wasmtime, EngineKind::Wasmi])`
//! returns a [`ScenarioReport`] whose `Display` is the `relay test` output;
//! `report.passed()` is false on any missed expectation or any difference
//! between the engines. The format is documented in `docs/scenarios.md`.
//!
//! # Layout
//! - `harness`: [`Harness`] (one plugin on one engine) and its fakes.
//! - `scenario`: parsing and checking scenario files into [`Scenario`].
//! - `runner`: running a scenario on engines, checking and comparing steps.
//! - `outcome`: [`Outcome`], [`CallResult`] and [`Observation`].
//! - `report` / `diff`: [`ScenarioReport`] and its readable `-`/`+` diff.
//! - [`value`]: JSON <-> msgpack with the `$bytes`/`$bin`/`$ext` conventions.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use relay_core::engine::{Engine, EngineKind, PluginError};
use relay_core::plugin::KvError;
use relay_core::registry::ListenError;

mod diff;
mod harness;
mod outcome;
mod report;
mod runner;
mod scenario;
/// The JSON <-> msgpack mapping scenarios use (shared with the app side).
pub use relay_client::json as value;

pub use harness::{Harness, HarnessOptions, DEFAULT_NOW_MS};
pub use outcome::{events_to_json, kv_to_json, CallResult, Observation, Outcome};
pub use report::{Disagreement, EngineRun, Mismatch, ScenarioReport, StepReport};
pub use runner::{check, compare_runs, run_scenario, ScenarioRunner};
pub use scenario::{
    CallStep, Expect, ExpectedEvent, ExpectedOutcome, Scenario, ScenarioError, Step,
};
pub use value::EncodeError;

/// Anything that stops the harness itself (as opposed to a plugin's own
/// error, which is an [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {name:?} is not built ({path} is missing): run `cargo xtask build-plugins`")]
    MissingArtifact { name: String, path: PathBuf },
    #[error("cannot create the {kind} engine: {message}")]
    Engine { kind: EngineKind, message: String },
    #[error("the plugin failed to load: {0}")]
    Load(#[from] PluginError),
    #[error("the plugin cannot be installed: {0}")]
    Install(#[from] ListenError),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("kv: {0}")]
    Kv(#[from] KvError),
    #[error("{0}")]
    Unexpected(String),
}

/// Where the bundled plugins are (see [`relay_host::bundled`]).
pub fn bundled_plugin_dir() -> PathBuf {
    relay_host::bundled::plugin_dir()
}

/// The built module of bundled plugin `name` (`<dir>/<name>.wasm`).
pub fn bundled_plugin(name: &str) -> Result<PathBuf, HarnessError> {
    relay_host::bundled::plugin(name).map_err(|e| HarnessError::MissingArtifact {
        name: e.name,
        path: e.path,
    })
}

/// Builds an engine for the harness.
///
/// wasmtime gets the host's own compile cache (see
/// `engine::wasmtime::cache`) in [`harness_cache_dir`]: compiling a plugin
/// with Cranelift takes seconds in a debug build, and the harness loads the
/// same artifact again on every scenario and every `restart`; a cache hit
/// takes milliseconds. Loading from the cache is what a device host with a
/// cache does after a restart, so nothing untested hides behind it. If the
/// directory is unusable the engine runs without a cache.
pub fn engine(kind: EngineKind) -> Result<Arc<dyn Engine>, HarnessError> {
    if kind == EngineKind::Wasmtime {
        if let Some(dir) = harness_cache_dir() {
            match relay_host::engine::wasmtime::WasmtimeEngine::with_cache_dir(&dir) {
                Ok(engine) => return Ok(Arc::new(engine)),
                Err(e) => tracing::warn!("harness: no compile cache in {}: {e}", dir.display()),
            }
        }
    }
    relay_host::engine::build(kind)
        .map(Arc::from)
        .map_err(|e| HarnessError::Engine {
            kind,
            message: format!("{e:#}"),
        })
}

/// Where the harness caches wasmtime's compiled plugins:
/// `$RELAY_HARNESS_CACHE` (`off` disables the cache); else
/// `<workspace>/target/relay-harness-cache` in a Relay checkout; else
/// `$XDG_CACHE_HOME/relay/harness` or `~/.cache/relay/harness`.
pub fn harness_cache_dir() -> Option<PathBuf> {
    match std::env::var_os("RELAY_HARNESS_CACHE") {
        Some(v) if v == "off" => return None,
        Some(v) => return Some(PathBuf::from(v)),
        None => {}
    }
    let workspace_target = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target");
    if workspace_target.is_dir() {
        return Some(workspace_target.join("relay-harness-cache"));
    }
    let cache_home = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache_home.join("relay").join("harness"))
}

fn read_artifact(path: &Path) -> Result<Arc<[u8]>, HarnessError> {
    std::fs::read(path)
        .map(Arc::from)
        .map_err(|source| HarnessError::Io {
            path: path.to_path_buf(),
            source,
        })
}
