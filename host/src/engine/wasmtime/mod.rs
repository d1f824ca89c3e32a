//! Step 5 of the data path on Linux: the wasmtime engine. It runs the same
//! plugin artifact as wasmi (one core wasm module, canonical ABI) by turning
//! it into a component at load time and calling it through
//! `wasmtime::component::bindgen!` bindings. Contract: `docs/engines.md`.
//!
//! # Layout: loading a plugin, in order
//!
//! 1. [`cache`] lookup of our own compiled output (keyed by the module's
//!    hash and its fuel budget, which the metering bakes in);
//! 2. the load step both engines share (`relay_core::engine::module`): the
//!    one acceptance rule (function bodies only if not cached), then, on a
//!    miss, fuel metering;
//! 3. on a miss, [`componentize`] (embed the host's copy of the [`world`]),
//!    compile with Cranelift, fill the cache;
//! 4. link against the host imports in [`bindings`] (`InstancePre`);
//! 5. [`plugin`]: instantiate, `describe`, validate, attach the env.
//!
//! Each call then runs under the module's own fuel counter, an epoch
//! deadline ([`ticker`]) and the store's [`limiter`]; failures are typed by
//! [`errors::classify`]. wasmtime's own fuel is off: the metering replaces it.
//!
//! # Instantiation strategy
//!
//! Default ([`InstancePolicy::ReuseUntilError`], on-demand allocation): one
//! instance per plugin, reused across successful calls, replaced (new
//! `Store`, instantiated from the pre-linked `PluginPre`) after an error.
//! wasmi does the same, so guest statics behave alike on both engines, and
//! it is the fastest option measured; [`InstancePolicy::FreshPerCall`] and
//! the pooling allocator ([`PoolingConfig`]) are selectable and measured by
//! `cargo bench -p relay-host --bench instantiate` (figures in
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
mod componentize;
mod errors;
mod limiter;
mod plugin;
mod ticker;
mod world;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use relay_core::engine::module::{self, PrepareOptions};
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

/// When a plugin gets a new instance: one policy for both engines.
pub use relay_core::engine::InstancePolicy;

/// wasmtime's pooling allocator: instance slots reserved once, up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolingConfig {
    /// Plugin instances that may exist at once (loaded plugins + one spare
    /// per plugin while it is replaced).
    pub slots: u32,
    /// Size of a memory slot; plugins whose `max_memory_bytes` exceed it
    /// fail to instantiate.
    pub max_memory_bytes: usize,
}

/// Options of the wasmtime engine.
#[derive(Debug, Clone, Default)]
pub struct WasmtimeConfig {
    pub instance_policy: InstancePolicy,
    /// `None` (the default): mmap each instance's memory on demand.
    pub pooling: Option<PoolingConfig>,
    /// Where compiled plugins are cached (see [`cache`]); `None`: no cache.
    pub cache_dir: Option<PathBuf>,
}

/// The wasmtime engine: JIT-compiled plugins through the component model.
pub struct WasmtimeEngine {
    /// One per distinct (rounded) stack size; see the module docs.
    runtimes: Mutex<Vec<Arc<Runtime>>>,
    cache: Option<CompileCache>,
    config: WasmtimeConfig,
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
    /// The default engine, without a compile cache: every load compiles.
    pub fn new() -> Result<Self, EngineError> {
        Self::with_config(WasmtimeConfig::default())
    }

    /// The default engine caching compiled plugins in `dir` (created 0700;
    /// must be private to this user, see [`cache`]).
    pub fn with_cache_dir(dir: impl AsRef<Path>) -> Result<Self, EngineError> {
        Self::with_config(WasmtimeConfig {
            cache_dir: Some(dir.as_ref().to_path_buf()),
            ..WasmtimeConfig::default()
        })
    }

    pub fn with_config(config: WasmtimeConfig) -> Result<Self, EngineError> {
        let cache = config
            .cache_dir
            .as_deref()
            .map(CompileCache::open)
            .transpose()?;
        let engine = WasmtimeEngine {
            runtimes: Mutex::new(Vec::new()),
            cache,
            config,
        };
        // Build the default runtime now so configuration errors surface here.
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
        let runtime = Arc::new(Runtime::new(stack_bytes, self.config.pooling)?);
        runtimes.push(Arc::clone(&runtime));
        Ok(runtime)
    }

    /// Load step 1: our own compiled output for `wasm` metered with
    /// `budget`, if cached.
    fn cached(
        &self,
        engine: &wasmtime::Engine,
        wasm: &[u8],
        budget: u64,
    ) -> (Option<PathBuf>, Option<Component>) {
        let Some(cache) = &self.cache else {
            return (None, None);
        };
        let entry = cache.entry(engine, world::WIT, wasm, budget);
        let component = cache.load(engine, &entry);
        (Some(entry), component)
    }

    /// Load step 3: componentize the metered module and compile it, then
    /// fill the cache entry.
    fn compile(
        &self,
        engine: &wasmtime::Engine,
        metered: &[u8],
        world: &world::World,
        entry: Option<&Path>,
    ) -> Result<Component, PluginError> {
        let bytes = componentize::componentize(metered, world)?;
        let component = Component::new(engine, &bytes)
            .map_err(|e| PluginError::InvalidModule(format!("compiling failed: {e:#}")))?;
        if let (Some(cache), Some(entry)) = (&self.cache, entry) {
            cache.store(&component, entry);
        }
        Ok(component)
    }
}

impl Runtime {
    fn new(stack_bytes: usize, pooling: Option<PoolingConfig>) -> Result<Self, EngineError> {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(stack_bytes);
        if let Some(pooling) = pooling {
            config.allocation_strategy(pooling_strategy(pooling));
        }
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

/// Pool sizes for `slots` plugin instances. A componentized plugin is one
/// component instance holding the guest's core instance plus
/// wit-component's shim and fixup instances (and the shim's table).
fn pooling_strategy(pooling: PoolingConfig) -> wasmtime::InstanceAllocationStrategy {
    let slots = pooling.slots.max(1);
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(4))
        .total_memories(slots)
        .total_tables(slots.saturating_mul(3))
        .max_core_instances_per_component(4)
        .max_memories_per_component(1)
        .max_tables_per_component(3)
        .table_elements(Limits::default().max_table_elements as usize)
        .max_memory_size(pooling.max_memory_bytes);
    wasmtime::InstanceAllocationStrategy::Pooling(pool)
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
        let world =
            world::world().map_err(|e| PluginError::Instantiate(format!("host WIT world: {e}")))?;
        let runtime = self
            .runtime_for(limits)
            .map_err(|e| PluginError::Instantiate(e.to_string()))?;
        let (entry, cached) = self.cached(&runtime.engine, wasm, limits.fuel_per_call);
        let (component, exhausted) = match cached {
            Some(component) => {
                // These exact bytes were metered and compiled by this build:
                // the rule still runs (same errors as a miss), bodies aside.
                let shape = module::check(wasm, limits, false)?;
                (component, shape.functions())
            }
            None => {
                let options = PrepareOptions {
                    validate_bodies: true,
                    host_exports: false,
                };
                let prepared = module::prepare(wasm, limits, options)?;
                let component =
                    self.compile(&runtime.engine, &prepared.wasm, world, entry.as_deref())?;
                (component, prepared.exhausted)
            }
        };
        let instance_pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Link(format!("{e:#}")))?;
        let pre = bindings::PluginPre::new(instance_pre)
            .map_err(|e| PluginError::InvalidModule(format!("{e:#}")))?;
        let policy = self.config.instance_policy;
        Ok(Box::new(WasmtimePlugin::boot(
            runtime, pre, limits, policy, exhausted, make_env,
        )?))
    }
}
