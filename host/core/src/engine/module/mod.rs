//! Load step 1, shared by both engines: accept or refuse a module by one rule
//! ([`check`]), then meter it ([`meter`]) so its CPU budget counts the same on
//! wasmtime and wasmi. An engine only ever sees the prepared bytes.
//!
//! | file | role |
//! |------|------|
//! | `world.rs` | the world's core imports and exports (names, signatures) |
//! | `check.rs` | size, validity, shape limits, imports, exports, start function |
//! | `meter.rs` | the injected fuel counter: the module's sections |
//! | `meter/body.rs` | each body's charges, and the entry wrappers |
//!
//! Why rewrite the module instead of using the engines' own fuel: wasmtime
//! and wasmi count differently (per wasm operator vs per internal
//! instruction, and host calls not at all on wasmtime), so the same loop
//! could finish on one and time out on the other. Counting in the module
//! makes the count a property of the artifact. The price is measured in
//! `docs/engines.md`; the engines' own fuel is off (wasmtime) or only slices
//! time (wasmi).

mod check;
mod meter;
pub mod world;

use alloc::{format, vec::Vec};

pub use check::{check, features, Shape, ShapeLimits, Sig, SHAPE};
pub use meter::{past_global_section, FUEL_EXPORT, HOST_CALL, PAGE_COST, START_EXPORT};

use crate::engine::PluginError;
use crate::limits::Limits;

/// How to prepare a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareOptions {
    /// Validate function bodies (skip only for bytes fully validated before).
    pub validate_bodies: bool,
    /// Export the fuel global as [`FUEL_EXPORT`] and the start function as
    /// [`START_EXPORT`] instead of running it at instantiation (wasmi needs
    /// both to tell fuel exhaustion from a trap; wasmtime's component would
    /// refuse exports outside the world and classifies by backtrace).
    pub host_exports: bool,
}

/// A module ready for an engine.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub wasm: Vec<u8>,
    /// The function whose `unreachable` means "out of fuel".
    pub exhausted: u32,
}

/// Checks `wasm` under `limits` and meters it with `limits.fuel_per_call`
/// per entry.
pub fn prepare(
    wasm: &[u8],
    limits: &Limits,
    options: PrepareOptions,
) -> Result<Prepared, PluginError> {
    let shape = check(wasm, limits, options.validate_bodies)?;
    let metered = meter::meter(wasm, &shape, limits.fuel_per_call, options.host_exports)
        .map_err(|e| PluginError::InvalidModule(format!("metering failed: {e}")))?;
    Ok(Prepared {
        wasm: metered.wasm,
        exhausted: metered.exhausted,
    })
}

#[cfg(test)]
mod tests;
