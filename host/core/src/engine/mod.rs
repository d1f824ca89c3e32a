//! Step 5 of the data path: the engine runs a plugin's `handle` export.
//!
//! [`Engine`] loads one plugin artifact (a core wasm module with the canonical
//! ABI made by wit-bindgen) and returns a [`Plugin`]: an instance-like object
//! whose `describe` result has been read and validated. Two implementations
//! serve the same WIT world: wasmtime (in `relay-host`, componentized at load)
//! and wasmi (here, with a hand-written lift/lower layer, so it builds
//! `no_std`). Every failure is a typed [`PluginError`]; no guest behaviour may
//! panic or abort the host.

use alloc::{boxed::Box, string::String};
use core::fmt;
use core::str::FromStr;

use crate::host_env::HostEnv;
use crate::limits::Limits;
use crate::plugin::{CallOutcome, Invocation, PluginInfo};
use crate::status::Code;

pub mod describe;
#[cfg(feature = "load")]
pub mod module;
pub mod output;
#[cfg(feature = "wasmi")]
pub mod wasmi;

/// Which engine runs plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Wasmtime,
    Wasmi,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Wasmtime => "wasmtime",
            EngineKind::Wasmi => "wasmi",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wasmtime" => Ok(EngineKind::Wasmtime),
            "wasmi" => Ok(EngineKind::Wasmi),
            other => Err(alloc::format!(
                "unknown engine {other:?} (expected wasmtime or wasmi)"
            )),
        }
    }
}

/// Builds the [`HostEnv`] of a plugin once its identity is known (the kv
/// namespace is chosen by the name `describe` reports).
pub type EnvFactory<'a> = &'a mut dyn FnMut(&PluginInfo) -> HostEnv;

/// Loads plugin artifacts.
pub trait Engine: Send + Sync {
    fn kind(&self) -> EngineKind;

    /// Validates, compiles and instantiates `wasm`, calls `describe` (in a
    /// detached env), validates the answer, then attaches the env made by
    /// `make_env`. Fails with a typed error on anything a hostile or broken
    /// artifact can do.
    fn load(
        &self,
        wasm: &[u8],
        limits: &Limits,
        make_env: EnvFactory<'_>,
    ) -> Result<Box<dyn Plugin>, PluginError>;
}

/// A loaded plugin, ready to handle commands.
pub trait Plugin: Send {
    fn info(&self) -> &PluginInfo;

    /// Runs one command under the plugin's limits. `Ok` carries the handler's
    /// own result (which may be a handler error); `Err` means the call itself
    /// failed (trap, out of fuel, ABI violation, ...). After an `Err` the
    /// plugin stays usable: the next call runs in a fresh instance.
    fn handle(&mut self, cmd: &Invocation) -> Result<CallOutcome, PluginError>;

    fn env(&self) -> &HostEnv;
    fn env_mut(&mut self) -> &mut HostEnv;
}

/// Why loading or calling a plugin failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    #[error("module is {size} bytes, the limit is {limit}")]
    ModuleTooLarge { size: usize, limit: usize },
    #[error("invalid module: {0}")]
    InvalidModule(String),
    #[error("imports do not match the relay:plugin world: {0}")]
    Link(String),
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    #[error("describe returned an invalid plugin description: {0}")]
    Describe(String),
    #[error("guest trapped: {0}")]
    Trap(String),
    #[error("guest overflowed its stack")]
    StackOverflow,
    #[error("guest exceeded its memory limit")]
    MemoryLimit,
    #[error("guest exceeded its CPU budget (fuel)")]
    OutOfFuel,
    #[error("guest exceeded its time budget")]
    Timeout,
    #[error("guest returned {size} bytes, the limit is {limit}")]
    ReplyTooLarge { size: usize, limit: usize },
    #[error("guest violated the canonical ABI: {0}")]
    Abi(String),
}

/// A monotonic millisecond clock for call time budgets. wasmtime counts
/// time with epochs; wasmi checks this clock between fuel slices. On a
/// microcontroller the firmware supplies one from a hardware timer.
pub trait CallClock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// [`CallClock`] from `std::time::Instant`.
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy)]
pub struct StdCallClock(std::time::Instant);

#[cfg(feature = "std")]
impl Default for StdCallClock {
    fn default() -> Self {
        StdCallClock(std::time::Instant::now())
    }
}

#[cfg(feature = "std")]
impl CallClock for StdCallClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The wall-clock budget of one call of `command`: the plugin's limit,
/// lowered by the command's own `budget-ms` from `describe`.
pub fn call_budget_ms(info: &PluginInfo, limits: &Limits, command: &str) -> u32 {
    info.commands
        .iter()
        .find(|c| c.name == command)
        .and_then(|c| c.budget_ms)
        .map_or(limits.time_budget_ms, |ms| ms.min(limits.time_budget_ms))
}

/// When a plugin gets a new instance (both engines honour it alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InstancePolicy {
    /// Keep the instance between successful calls; replace it after an
    /// error (contract point 13). Cheapest; a guest's globals persist
    /// between calls.
    #[default]
    ReuseUntilError,
    /// A new store and instance for every call: no guest state survives a
    /// call, at the cost of instantiating (memory allocation, data segments,
    /// start function) each time.
    FreshPerCall,
}

impl PluginError {
    /// The status code reported for a failed call (see `docs/protocol.md`).
    pub fn code(&self) -> Code {
        match self {
            PluginError::OutOfFuel | PluginError::Timeout => Code::TimedOut,
            PluginError::ReplyTooLarge { .. } | PluginError::ModuleTooLarge { .. } => {
                Code::TooLarge
            }
            PluginError::Trap(_)
            | PluginError::StackOverflow
            | PluginError::MemoryLimit
            | PluginError::Abi(_) => Code::Trap,
            PluginError::InvalidModule(_)
            | PluginError::Link(_)
            | PluginError::Instantiate(_)
            | PluginError::Describe(_) => Code::HandlerError,
        }
    }
}

pub use describe::{is_semver, validate_info};
