//! Step 5 of the data path on a microcontroller: the wasmi engine. It runs
//! the same plugin artifact as wasmtime (one core module with wit-bindgen's
//! canonical ABI) through a hand-written lift/lower of the `relay:plugin`
//! world, in `no_std` + `alloc` with no unsafe code.
//!
//! | file | role |
//! |------|------|
//! | `mod.rs` | [`WasmiEngine`] (load) and the loaded plugin (call, recover) |
//! | `guest.rs` | export check, instantiation, `describe` / `handle` calls |
//! | `abi.rs` | canonical-ABI layouts, lifting and storing, bounds/UTF-8 checks |
//! | `imports.rs` | the `host` interface: link check and host functions |
//! | `limits.rs` | engine config (fuel, stack, parse limits) and store limiter |
//! | `state.rs` | what a store carries: env, events, limiter, guest handles |
//! | `trap.rs` | wasmi errors -> [`PluginError`] |
//!
//! Decisions:
//! - **One wasmi `Engine` per plugin.** wasmi's `Config` (fuel, stack and
//!   parse limits) is per engine, and a plugin's `Limits` decide it; and an
//!   engine keeps the code of every module compiled with it, so a shared
//!   engine would grow with each plugin replaced over the air. Creating one
//!   is cheap (part of the measured cold load, see `docs/engines.md`).
//! - **One instance reused across calls, a fresh one after any error**
//!   (contract point 13), the default [`InstancePolicy`]. A fresh store per
//!   call is offered too; the measurements in `docs/engines.md` justify the
//!   default. A store is never reused for a second instance: wasmi frees
//!   instances only with their store, so a rebuild swaps in a new store and
//!   moves the plugin's [`HostEnv`] over.
//! - **Validate a module's bodies once per host, not once per load.** wasmi
//!   cannot load precompiled code without `unsafe`, so it has no compile
//!   cache; but most of a cold load is validating function bodies. With a
//!   [`ValidatedModules`] record (the Linux host keeps one in its data dir,
//!   keyed by sha256), a module whose exact bytes were fully validated
//!   before loads in wasmi's `Lazy` mode: bodies are validated (and
//!   translated) on first call instead of up front. A module never seen is
//!   validated eagerly, so invalid bytes still fail at load (contract
//!   point 2); a forged record only moves that error to the first call.

mod abi;
mod guest;
mod imports;
mod limits;
mod state;
mod trap;

#[cfg(test)]
mod tests;

use alloc::{boxed::Box, format, sync::Arc};

use wasmi::{Linker, Module, Store};

use self::guest::Exports;
use self::state::{new_store, GuestState};
use super::module::{self, PrepareOptions};
use super::{
    call_budget_ms, validate_info, CallClock, EngineKind, EnvFactory, Plugin, PluginError,
};
use crate::host_env::HostEnv;
use crate::limits::Limits;
use crate::plugin::{CallOutcome, Invocation, PluginInfo};

pub use super::InstancePolicy;

/// Options of the wasmi engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WasmiConfig {
    pub instance_policy: InstancePolicy,
    /// Run `describe` in a wasmi engine of its own, dropped once it
    /// answered, and serve commands from a second one. wasmi keeps every
    /// function it compiled for as long as its engine lives, so this is what
    /// keeps the code only `describe` runs out of RAM (5.4 KB for the `echo`
    /// plugin on riscv32). The module is prepared a second time (its bodies
    /// not validated again) rather than kept, so a load's peak stays that of
    /// one engine; the load takes 1.6 times the instructions. The serving
    /// instance has not run `describe`, like the instance that replaces one
    /// after an error. On for microcontrollers (`relay_embedded`), off on
    /// Linux, where load time counts more than a few kilobytes.
    pub describe_apart: bool,
}

/// Modules whose function bodies this host has fully validated before,
/// identified by their bytes (an implementation hashes them). See the
/// module doc for what it saves and why it is safe.
pub trait ValidatedModules: Send + Sync {
    /// `wasm` was fully validated by an earlier load.
    fn contains(&self, wasm: &[u8]) -> bool;
    /// `wasm` just passed full validation (and loaded).
    fn insert(&self, wasm: &[u8]);
}

/// The interpreter engine (ESP32-class devices; selectable on Linux).
#[derive(Clone)]
pub struct WasmiEngine {
    config: WasmiConfig,
    validated: Option<Arc<dyn ValidatedModules>>,
    /// The clock of call time budgets (`None`: fuel only).
    clock: Option<Arc<dyn CallClock>>,
}

impl Default for WasmiEngine {
    /// With `std`, time budgets run on `std::time::Instant`; without it
    /// there is no clock until [`WasmiEngine::with_clock`] gives one.
    fn default() -> Self {
        WasmiEngine {
            config: WasmiConfig::default(),
            validated: None,
            clock: default_clock(),
        }
    }
}

#[cfg(feature = "std")]
fn default_clock() -> Option<Arc<dyn CallClock>> {
    Some(Arc::new(super::StdCallClock::default()))
}

#[cfg(not(feature = "std"))]
fn default_clock() -> Option<Arc<dyn CallClock>> {
    None
}

impl core::fmt::Debug for WasmiEngine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WasmiEngine")
            .field("config", &self.config)
            .field("validated", &self.validated.is_some())
            .field("clock", &self.clock.is_some())
            .finish()
    }
}

impl WasmiEngine {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_config(config: WasmiConfig) -> Self {
        WasmiEngine {
            config,
            ..Self::default()
        }
    }

    /// Enforces call time budgets on `clock` (a hardware timer on a
    /// microcontroller).
    pub fn with_clock(mut self, clock: Arc<dyn CallClock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Remembers validated modules in `record` and loads those it knows
    /// without validating their bodies up front.
    pub fn with_validated_modules(mut self, record: Arc<dyn ValidatedModules>) -> Self {
        self.validated = Some(record);
        self
    }
}

/// A plugin's wasmi engine with its module compiled, its linker, and a
/// store for its instance.
struct Booted {
    engine: wasmi::Engine,
    module: Module,
    linker: Linker<GuestState>,
    store: Store<GuestState>,
}

impl WasmiEngine {
    /// A new engine with `wasm` (prepared) compiled in it.
    fn compile(&self, wasm: &[u8], limits: &Limits) -> Result<Booted, PluginError> {
        let engine = wasmi::Engine::new(&limits::engine_config(limits));
        let module =
            Module::new(&engine, wasm).map_err(|e| PluginError::InvalidModule(format!("{e}")))?;
        let mut linker = Linker::new(&engine);
        imports::define(&mut linker).map_err(|e| PluginError::Link(format!("{e}")))?;
        let state = GuestState::new(HostEnv::detached(limits), limits, self.clock.clone());
        let store = new_store(&engine, state);
        Ok(Booted {
            engine,
            module,
            linker,
            store,
        })
    }
}

impl Booted {
    fn instantiate(&mut self, limits: &Limits) -> Result<Exports, PluginError> {
        guest::instantiate(&self.linker, &self.module, &mut self.store, limits).map_err(booting)
    }
}

/// A bad answer stays `Describe`; anything else failing while the plugin
/// boots is `Instantiate` (the same mapping as wasmtime).
fn booting(e: PluginError) -> PluginError {
    match e {
        PluginError::Describe(_) => e,
        other => PluginError::Instantiate(format!("{other}")),
    }
}

impl super::Engine for WasmiEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Wasmi
    }

    fn load(
        &self,
        wasm: &[u8],
        limits: &Limits,
        make_env: EnvFactory<'_>,
    ) -> Result<Box<dyn Plugin>, PluginError> {
        let known = self.validated.as_ref().is_some_and(|v| v.contains(wasm));
        let prepared = module::prepare(
            wasm,
            limits,
            PrepareOptions {
                validate_bodies: !known,
                host_exports: true,
            },
        )?;
        let mut booted = self.compile(&prepared.wasm, limits)?;
        // wasmi has its own copy now; the instance's memory comes next.
        drop(prepared);
        let mut exports = booted.instantiate(limits)?;
        let info = guest::describe(&mut booted.store, &exports, limits).map_err(booting)?;
        validate_info(&info)?;
        if self.config.describe_apart {
            // Prepared again rather than kept: a load's peak stays that of
            // one engine. The bodies were validated a moment ago.
            drop(booted);
            let options = PrepareOptions {
                validate_bodies: false,
                host_exports: true,
            };
            let prepared = module::prepare(wasm, limits, options)?;
            booted = self.compile(&prepared.wasm, limits)?;
            drop(prepared);
            exports = booted.instantiate(limits)?;
        }
        let Booted {
            engine,
            module,
            linker,
            mut store,
        } = booted;
        store.data_mut().env = make_env(&info);
        if !known {
            if let Some(record) = &self.validated {
                record.insert(wasm);
            }
        }
        Ok(Box::new(WasmiPlugin {
            engine,
            module,
            linker,
            limits: limits.clone(),
            policy: self.config.instance_policy,
            info,
            store,
            live: Some(exports),
        }))
    }
}

/// A loaded plugin: its compiled module and the store of its current
/// instance, which also owns the plugin's [`HostEnv`].
struct WasmiPlugin {
    engine: wasmi::Engine,
    module: Module,
    linker: Linker<GuestState>,
    limits: Limits,
    policy: InstancePolicy,
    info: PluginInfo,
    store: Store<GuestState>,
    /// The current instance; `None` after an error until the next call
    /// builds a fresh one.
    live: Option<Exports>,
}

impl WasmiPlugin {
    /// Replaces the store and instance, keeping the plugin's env.
    fn fresh_instance(&mut self) -> Result<Exports, PluginError> {
        self.live = None;
        let clock = self.store.data().clock.clone();
        let placeholder = GuestState::new(HostEnv::detached(&self.limits), &self.limits, clock);
        let mut store = new_store(&self.engine, placeholder);
        core::mem::swap(&mut store.data_mut().env, &mut self.store.data_mut().env);
        self.store = store;
        let exports =
            guest::instantiate(&self.linker, &self.module, &mut self.store, &self.limits)?;
        self.live = Some(exports);
        Ok(exports)
    }
}

impl Plugin for WasmiPlugin {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn handle(&mut self, cmd: &Invocation) -> Result<CallOutcome, PluginError> {
        let exports = match self.live {
            Some(exports) if self.policy == InstancePolicy::ReuseUntilError => exports,
            _ => self.fresh_instance()?,
        };
        let budget_ms = call_budget_ms(&self.info, &self.limits, &cmd.name);
        let outcome = guest::handle(&mut self.store, &exports, cmd, &self.limits, budget_ms);
        if outcome.is_err() {
            self.live = None;
        }
        outcome
    }

    fn env(&self) -> &HostEnv {
        &self.store.data().env
    }

    fn env_mut(&mut self) -> &mut HostEnv {
        &mut self.store.data_mut().env
    }
}
