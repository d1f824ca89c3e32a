//! The host's own copy of the `relay:plugin` world (`wit/relay-plugin.wit`),
//! resolved once per process. Componentization embeds it into every metered
//! module. Resolving it also derives the world's core-wasm signatures and
//! requires them to equal the table both engines check modules against
//! (`relay_core::engine::module::world`): a change of the WIT that the table
//! does not follow fails every load (and the test below), not a device.

use std::sync::OnceLock;

use wasmparser::ValType;
use wit_parser::abi::{AbiVariant, WasmType};
use wit_parser::{Resolve, WorldId, WorldItem, WorldKey};

/// The WIT text, compiled into the binary so the host never reads it at run
/// time (and a guest can never swap it).
pub(super) const WIT: &str = include_str!("../../../../wit/relay-plugin.wit");

/// A core function signature in the guest's module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CoreSig {
    pub params: Vec<ValType>,
    pub results: Vec<ValType>,
}

/// One function the guest may import.
#[derive(Debug)]
pub(super) struct ImportFn {
    /// Core module name, e.g. `relay:plugin/host@0.1.0`.
    pub module: String,
    /// WIT function name, e.g. `kv-get`.
    pub name: String,
    pub sig: CoreSig,
}

/// One function the guest must export (wit-bindgen's legacy names:
/// the WIT name itself, plus an optional `cabi_post_<name>`).
#[derive(Debug)]
pub(super) struct ExportFn {
    pub name: String,
    pub sig: CoreSig,
    /// Signature of `cabi_post_<name>` if the guest exports it.
    pub post_return: CoreSig,
}

/// The resolved world plus the core-ABI view of it.
pub(super) struct World {
    pub resolve: Resolve,
    pub id: WorldId,
    pub imports: Vec<ImportFn>,
    pub exports: Vec<ExportFn>,
}

/// The world, parsed on first use. Parsing a WIT text that is compiled into
/// this binary cannot fail at run time; a failure is a build defect and is
/// reported as such by [`world`]'s caller.
pub(super) fn world() -> Result<&'static World, String> {
    static WORLD: OnceLock<Result<World, String>> = OnceLock::new();
    WORLD
        .get_or_init(|| resolve_world().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(Clone::clone)
}

fn resolve_world() -> anyhow::Result<World> {
    let mut resolve = Resolve::default();
    let package = resolve.push_source("relay-plugin.wit", WIT)?;
    let id = resolve.select_world(&[package], Some("plugin"))?;
    let mut imports = Vec::new();
    for (key, item) in &resolve.worlds[id].imports {
        let WorldItem::Interface { id: iface, .. } = item else {
            continue;
        };
        let module = resolve.name_world_key(key);
        for func in resolve.interfaces[*iface].functions.values() {
            imports.push(ImportFn {
                module: module.clone(),
                name: func.name.clone(),
                sig: core_sig(&resolve, AbiVariant::GuestImport, func).0,
            });
        }
    }
    let mut exports = Vec::new();
    for (key, item) in &resolve.worlds[id].exports {
        let (WorldKey::Name(name), WorldItem::Function(func)) = (key, item) else {
            anyhow::bail!("the plugin world may only export plain functions");
        };
        let (sig, post_return) = core_sig(&resolve, AbiVariant::GuestExport, func);
        exports.push(ExportFn {
            name: name.clone(),
            sig,
            post_return,
        });
    }
    let world = World {
        resolve,
        id,
        imports,
        exports,
    };
    agrees_with_core(&world).map_err(anyhow::Error::msg)?;
    Ok(world)
}

/// The WIT-derived signatures equal the core table, both ways.
fn agrees_with_core(world: &World) -> Result<(), String> {
    use relay_core::engine::module::world::{GUEST_EXPORTS, HOST_IMPORTS, HOST_MODULE};
    // Two wasmparser versions (wasmtime's and wasmi's): compare by name.
    fn show<T: std::fmt::Debug>(tys: &[T]) -> String {
        format!("{tys:?}")
    }
    let show_core = show;
    if world.imports.len() != HOST_IMPORTS.len() {
        return Err(format!(
            "the WIT has {} host functions, the core table {}",
            world.imports.len(),
            HOST_IMPORTS.len()
        ));
    }
    for f in &world.imports {
        let core = HOST_IMPORTS.iter().find(|c| c.name == f.name);
        let same = core.is_some_and(|c| {
            f.module == HOST_MODULE
                && show(&f.sig.params) == show_core(c.params)
                && show(&f.sig.results) == show_core(c.results)
        });
        if !same {
            return Err(format!(
                "import {}.{} differs from the core table",
                f.module, f.name
            ));
        }
    }
    for f in &world.exports {
        let post = format!("cabi_post_{}", f.name);
        for (name, sig) in [(f.name.as_str(), &f.sig), (post.as_str(), &f.post_return)] {
            let core = GUEST_EXPORTS.iter().find(|c| c.name == name);
            let same = core.is_some_and(|c| {
                show(&sig.params) == show_core(c.params)
                    && show(&sig.results) == show_core(c.results)
            });
            if !same {
                return Err(format!("export {name} differs from the core table"));
            }
        }
    }
    Ok(())
}

/// Core signature of `func` in wasm32, and the signature of its post-return.
fn core_sig(
    resolve: &Resolve,
    variant: AbiVariant,
    func: &wit_parser::Function,
) -> (CoreSig, CoreSig) {
    let sig = resolve.wasm_signature(variant, func);
    let val = |t: &WasmType| match t {
        WasmType::I32 | WasmType::Pointer | WasmType::Length => ValType::I32,
        WasmType::I64 | WasmType::PointerOrI64 => ValType::I64,
        WasmType::F32 => ValType::F32,
        WasmType::F64 => ValType::F64,
    };
    let results: Vec<ValType> = sig.results.iter().map(val).collect();
    let post = CoreSig {
        params: results.clone(),
        results: Vec::new(),
    };
    (
        CoreSig {
            params: sig.params.iter().map(val).collect(),
            results,
        },
        post,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_wit_and_the_core_table_agree() {
        if let Err(e) = super::world() {
            panic!("{e}");
        }
    }
}
