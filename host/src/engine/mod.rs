//! Step 5 of the data path on Linux: engine selection. wasmtime (JIT,
//! component model) lives in [`wasmtime`]; wasmi comes from the core.

pub mod wasmi_record;
pub mod wasmtime;

use relay_core::engine::{Engine, EngineKind};

/// Builds the engine named by `--engine`.
pub fn build(kind: EngineKind) -> anyhow::Result<Box<dyn Engine>> {
    Ok(match kind {
        EngineKind::Wasmtime => Box::new(wasmtime::WasmtimeEngine::new()?),
        EngineKind::Wasmi => Box::new(relay_core::engine::wasmi::WasmiEngine::new()),
    })
}
