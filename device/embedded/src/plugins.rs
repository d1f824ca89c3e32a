//! Loading plugins on a microcontroller: wasmi, an in-memory kv per plugin,
//! and the clock and log sink the board provides. The emulated device and
//! the ESP32-C6 firmware load through here, so both see a plugin exactly as
//! the Linux host's wasmi engine does (same limits, same `describe` checks,
//! same command registry).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;

use relay_core::engine::wasmi::{WasmiConfig, WasmiEngine};
use relay_core::engine::{Engine, PluginError};
use relay_core::host_env::{Clock, HostEnv, Logger, MemKv};
use relay_core::limits::Limits;
use relay_core::registry::{ListenError, Registry};

/// Why the plugins a firmware carries did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin #{index} does not load: {error}")]
    Plugin { index: usize, error: PluginError },
    #[error("plugin #{index} claims a command another plugin has: {error}")]
    Commands { index: usize, error: ListenError },
}

/// A registry of `modules`, each loaded on wasmi under `limits` with its own
/// empty kv, a clock from `clock` and a log sink from `logger`. `describe`
/// runs in an engine of its own, so the code only it needs does not stay
/// in RAM ([`WasmiConfig::describe_apart`]).
pub fn registry<C, L>(
    modules: &[&[u8]],
    limits: &Limits,
    clock: impl Fn() -> C,
    logger: impl Fn() -> L,
) -> Result<Registry, LoadError>
where
    C: Clock + 'static,
    L: Logger + 'static,
{
    let mut registry = Registry::new();
    for (index, wasm) in modules.iter().enumerate() {
        install(&mut registry, index, wasm, limits, &clock, &logger)?;
    }
    Ok(registry)
}

/// [`registry`], and the modules by plugin name: what the firmware carries,
/// which an update can roll back to (`updates::Updater::open`).
pub fn firmware<C, L>(
    modules: &[&'static [u8]],
    limits: &Limits,
    clock: impl Fn() -> C,
    logger: impl Fn() -> L,
) -> Result<(Registry, BTreeMap<String, &'static [u8]>), LoadError>
where
    C: Clock + 'static,
    L: Logger + 'static,
{
    let mut registry = Registry::new();
    let mut by_name = BTreeMap::new();
    for (index, wasm) in modules.iter().enumerate() {
        let name = install(&mut registry, index, wasm, limits, &clock, &logger)?;
        by_name.insert(name, *wasm);
    }
    Ok((registry, by_name))
}

/// Loads module `index` into `registry`: the plugin's name.
fn install<C, L>(
    registry: &mut Registry,
    index: usize,
    wasm: &[u8],
    limits: &Limits,
    clock: &impl Fn() -> C,
    logger: &impl Fn() -> L,
) -> Result<String, LoadError>
where
    C: Clock + 'static,
    L: Logger + 'static,
{
    let plugin =
        load(wasm, limits, clock, logger).map_err(|error| LoadError::Plugin { index, error })?;
    let name = plugin.info().name.clone();
    registry
        .install(plugin)
        .map_err(|error| LoadError::Commands { index, error })?;
    Ok(name)
}

/// The engine plugins load on: wasmi, `describe` apart.
pub fn engine() -> WasmiEngine {
    WasmiEngine::with_config(WasmiConfig {
        describe_apart: true,
        ..WasmiConfig::default()
    })
}

/// Loads one module with its own empty kv.
pub fn load<C, L>(
    wasm: &[u8],
    limits: &Limits,
    clock: &impl Fn() -> C,
    logger: &impl Fn() -> L,
) -> Result<Box<dyn relay_core::engine::Plugin>, PluginError>
where
    C: Clock + 'static,
    L: Logger + 'static,
{
    engine().load(wasm, limits, &mut |info| {
        HostEnv::new(
            info.name.clone(),
            Box::new(MemKv::default()),
            Box::new(clock()),
            Box::new(logger()),
            limits,
        )
    })
}
