//! Load step 3: turn the metered core module into a component wasmtime can
//! call through the component model. The host's own copy of the world is
//! always embedded (the load step dropped any `component-type` section the
//! guest carried), so WAT/C/Zig guests that only follow the canonical ABI
//! work too and a guest's own metadata cannot change the contract.

use relay_core::engine::PluginError;
use wit_component::{ComponentEncoder, StringEncoding};

use super::world::World;

/// Returns the component bytes for `wasm` (validated by wit-component).
pub(super) fn componentize(wasm: &[u8], world: &World) -> Result<Vec<u8>, PluginError> {
    let invalid =
        |e: anyhow::Error| PluginError::InvalidModule(format!("componentizing failed: {e:#}"));
    let mut module = wasm.to_vec();
    wit_component::embed_component_metadata(
        &mut module,
        &world.resolve,
        world.id,
        StringEncoding::UTF8,
    )
    .map_err(invalid)?;
    ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|mut e| e.encode())
        .map_err(invalid)
}
