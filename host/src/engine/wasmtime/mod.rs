//! Step 5 of the data path on Linux: the wasmtime engine. It runs the same
//! plugin artifact as wasmi (one core wasm module, canonical ABI) by turning
//! it into a component at load time and calling it through
//! `wasmtime::component::bindgen!` bindings. Contract: `docs/engines.md`.
//!
//! # Layout: loading a plugin, in order
//!
//! 1. size check (`max_module_bytes`), before any parsing;
//! 2. [`check`]: validate the core module, its exports (`InvalidModule`) and
//!    imports (`Link`) against the ABI derived from [`world`];
//! 3. [`cache`] lookup of our own compiled output, else [`componentize`]
//!    (embed the world if missing, `ComponentEncoder`) and compile;
//! 4. link against the host imports in [`bindings`] (`InstancePre`);
//! 5. [`plugin`]: instantiate, `describe`, validate, attach the env.
//!
//! Each call then runs under fuel, an epoch deadline ([`ticker`]) and the
//! store's [`limiter`]; failures are typed by [`errors::classify`].
//!
//! # Instantiation strategy
//!
//! One instance per plugin, reused across successful calls, replaced (new
//! `Store`, on-demand allocation, from the pre-linked `PluginPre`) after an
//! error. Reuse is what wasmi does too, so guest statics behave the same on
//! both engines, and it is the fastest option measured
//! (`cargo bench -p relay-host --bench instantiate`; figures in
//! `docs/engines.md`, section "wasmtime").
//!
//! # Stack
//!
//! `max_wasm_stack` is an engine-wide wasmtime setting, so the engine keeps
//! one `wasmtime::Engine` per stack size. `Limits::max_stack_bytes` is
//! rounded up to a power of two and clamped to
//! [`MIN_WASM_STACK`]..=[`MAX_WASM_STACK`] (at most seven engines). wasm runs
//! on the caller's thread stack: call plugins from a thread with at least
//! `MAX_WASM_STACK` + 256 KiB free (Rust's spawned threads have 2 MiB).

mod bindings;
mod cache;
mod check;
mod componentize;
mod errors;
mod limiter;
mod plugin;
mod ticker;
mod world;

use std::path::Path;
use std::sync::{Arc, Mutex};

use relay_core::engine::{Engine, EngineKind, EnvFactory, Plugin, PluginError};
use relay_core::limits::Limits;
use wasmtime::component::{Component, HasSelf, Linker};

pub use cache::{CacheDirError, CacheStats};
pub use plugin::WasmtimePlugin;

use bindings::State;
use cache::CompileCache;
use ticker::EpochTicker;

/// Smallest wasm stack given to a plugin.
pub const MIN_WASM_STACK: usize = 16 * 1024;
/// Largest wasm stack given to a plugin (it lives on the calling thread's stack).
pub const MAX_WASM_STACK: usize = 1024 * 1024;

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("wasmtime rejected the engine configuration: {0}")]
    Config(String),
    #[error("could not start the epoch ticker thread: {0}")]
    Ticker(#[source] std::io::Error),
    #[error(transparent)]
    CacheDir(#[from] CacheDirError),
}

/// The wasmtime engine: JIT-compiled plugins through the component model.
pub struct WasmtimeEngine {
    /// One per distinct (rounded) stack size; see the module docs.
    runtimes: Mutex<Vec<Arc<Runtime>>>,
    cache: Option<CompileCache>,
}

/// A `wasmtime::Engine` with its linker and epoch ticker, shared by the
/// plugins loaded on it.
pub(crate) struct Runtime {
    engine: wasmtime::Engine,
    linker: Linker<State>,
    ticker: EpochTicker,
    stack_bytes: usize,
}

impl WasmtimeEngine {
    /// An engine without a compile cache: every load compiles.
    pub fn new() -> Result<Self, EngineError> {
        let engine = WasmtimeEngine {
            runtimes: Mutex::new(Vec::new()),
            cache: None,
        };
        engine.runtime_for(&Limits::default())?;
        Ok(engine)
    }

    /// An engine caching compiled plugins in `dir` (created 0700; must be
    /// private to this user, see [`cache`]).
    pub fn with_cache_dir(dir: impl AsRef<Path>) -> Result<Self, EngineError> {
        let cache = CompileCache::open(dir.as_ref())?;
        let engine = WasmtimeEngine {
            runtimes: Mutex::new(Vec::new()),
            cache: Some(cache),
        };
        engine.runtime_for(&Limits::default())?;
        Ok(engine)
    }

    /// Compile-cache counters, if a cache dir is configured.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(CompileCache::stats)
    }

    fn runtime_for(&self, limits: &Limits) -> Result<Arc<Runtime>, EngineError> {
        let stack_bytes = limits
            .max_stack_bytes
            .clamp(MIN_WASM_STACK, MAX_WASM_STACK)
            .next_power_of_two();
        let mut runtimes = self.runtimes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(runtime) = runtimes.iter().find(|r| r.stack_bytes == stack_bytes) {
            return Ok(Arc::clone(runtime));
        }
        let runtime = Arc::new(Runtime::new(stack_bytes)?);
        runtimes.push(Arc::clone(&runtime));
        Ok(runtime)
    }

    /// Load step 3: the compiled component, from the cache or freshly built.
    fn compile(
        &self,
        engine: &wasmtime::Engine,
        wasm: &[u8],
        shape: check::ModuleShape,
        world: &world::World,
    ) -> Result<Component, PluginError> {
        let entry = self
            .cache
            .as_ref()
            .map(|c| (c, c.entry(engine, world::WIT, wasm)));
        if let Some((cache, path)) = &entry {
            if let Some(component) = cache.load(engine, path) {
                return Ok(component);
            }
        }
        let bytes = componentize::componentize(wasm, shape.has_component_type, world)?;
        let component = Component::new(engine, &bytes)
            .map_err(|e| PluginError::InvalidModule(format!("compiling failed: {e:#}")))?;
        if let Some((cache, path)) = &entry {
            cache.store(&component, path);
        }
        Ok(component)
    }
}

impl Runtime {
    fn new(stack_bytes: usize) -> Result<Self, EngineError> {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(stack_bytes);
        let config_err = |e: wasmtime::Error| EngineError::Config(format!("{e:#}"));
        let engine = wasmtime::Engine::new(&config).map_err(config_err)?;
        let mut linker = Linker::new(&engine);
        bindings::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |state| state)
            .map_err(config_err)?;
        let ticker = EpochTicker::start(engine.clone()).map_err(EngineError::Ticker)?;
        Ok(Runtime {
            engine,
            linker,
            ticker,
            stack_bytes,
        })
    }
}

impl Engine for WasmtimeEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Wasmtime
    }

    fn load(
        &self,
        wasm: &[u8],
        limits: &Limits,
        make_env: EnvFactory<'_>,
    ) -> Result<Box<dyn Plugin>, PluginError> {
        if wasm.len() > limits.max_module_bytes {
            return Err(PluginError::ModuleTooLarge {
                size: wasm.len(),
                limit: limits.max_module_bytes,
            });
        }
        let world =
            world::world().map_err(|e| PluginError::Instantiate(format!("host WIT world: {e}")))?;
        let shape = check::core_module(wasm, limits, world)?;
        let runtime = self
            .runtime_for(limits)
            .map_err(|e| PluginError::Instantiate(e.to_string()))?;
        let component = self.compile(&runtime.engine, wasm, shape, world)?;
        let instance_pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Link(format!("{e:#}")))?;
        let pre = bindings::PluginPre::new(instance_pre)
            .map_err(|e| PluginError::InvalidModule(format!("{e:#}")))?;
        Ok(Box::new(WasmtimePlugin::boot(
            runtime, pre, limits, make_env,
        )?))
    }
}
