//! Load step 2-3: inspect the core module BEFORE componentizing it, so every
//! engine reports the same typed error for the same broken artifact:
//! undecodable/invalid bytes or missing/mistyped exports -> `InvalidModule`,
//! imports outside the `relay:plugin/host` functions (or mistyped) -> `Link`.
//! wit-component would also refuse most of these, but only with free-form
//! messages; classifying here keeps the mapping exact and testable.

use relay_core::engine::PluginError;
use relay_core::limits::Limits;
use wasmparser::types::{EntityType, TypesRef};
use wasmparser::{CompositeInnerType, FuncType, Parser, Payload, Validator, WasmFeatures};

use super::world::{CoreSig, World};

/// What the check learned about a module that later steps need.
#[derive(Debug, Clone, Copy)]
pub(super) struct ModuleShape {
    /// The module already carries wit-bindgen's world metadata.
    pub has_component_type: bool,
}

/// Validates `wasm` against the world's core ABI. `max_module_bytes` is
/// checked by the caller before this runs.
pub(super) fn core_module(
    wasm: &[u8],
    limits: &Limits,
    world: &World,
) -> Result<ModuleShape, PluginError> {
    let invalid = |msg: String| PluginError::InvalidModule(msg);
    let types = Validator::new_with_features(WasmFeatures::default())
        .validate_all(wasm)
        .map_err(|e| invalid(e.to_string()))?;
    let types = types.as_ref();
    let (Some(imports), Some(exports)) = (types.core_imports(), types.core_exports()) else {
        return Err(invalid(
            "expected a core wasm module, found a component".into(),
        ));
    };
    let functions = types.function_count();
    if functions > limits.max_functions {
        return Err(invalid(format!(
            "{functions} functions, the limit is {}",
            limits.max_functions
        )));
    }

    let exports: Vec<(&str, EntityType)> = exports.collect();
    let export = |name: &str| exports.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
    match export("memory") {
        Some(EntityType::Memory(m)) if !m.memory64 && !m.shared => {}
        Some(_) => {
            return Err(invalid(
                "export `memory` must be a 32-bit, unshared memory".into(),
            ))
        }
        None => return Err(invalid("missing export `memory`".into())),
    }
    let realloc = CoreSig {
        params: vec![wasmparser::ValType::I32; 4],
        results: vec![wasmparser::ValType::I32],
    };
    require_func(&types, export("cabi_realloc"), "cabi_realloc", &realloc)?;
    for f in &world.exports {
        require_func(&types, export(&f.name), &f.name, &f.sig)?;
        let post = format!("cabi_post_{}", f.name);
        if let Some(ty) = export(&post) {
            require_func(&types, Some(ty), &post, &f.post_return)?;
        }
    }

    for (module, name, ty) in imports {
        let Some(expected) = world
            .imports
            .iter()
            .find(|f| f.module == module && f.name == name)
        else {
            return Err(PluginError::Link(format!(
                "unknown import `{module}`.`{name}`"
            )));
        };
        let matches = func_type(&types, ty).is_some_and(|f| same_sig(f, &expected.sig));
        if !matches {
            return Err(PluginError::Link(format!(
                "import `{module}`.`{name}` must be a function {}",
                show(&expected.sig)
            )));
        }
    }

    let has_component_type = Parser::new(0).parse_all(wasm).any(|p| {
        matches!(p, Ok(Payload::CustomSection(ref s)) if s.name().starts_with("component-type"))
    });
    Ok(ModuleShape { has_component_type })
}

fn require_func(
    types: &TypesRef<'_>,
    ty: Option<EntityType>,
    name: &str,
    sig: &CoreSig,
) -> Result<(), PluginError> {
    match ty {
        None => Err(PluginError::InvalidModule(format!(
            "missing export `{name}`"
        ))),
        Some(ty) if func_type(types, ty).is_some_and(|f| same_sig(f, sig)) => Ok(()),
        Some(_) => Err(PluginError::InvalidModule(format!(
            "export `{name}` must be a function {}",
            show(sig)
        ))),
    }
}

fn func_type<'t>(types: &'t TypesRef<'_>, ty: EntityType) -> Option<&'t FuncType> {
    let id = match ty {
        EntityType::Func(id) | EntityType::FuncExact(id) => id,
        _ => return None,
    };
    match &types[id].composite_type.inner {
        CompositeInnerType::Func(f) => Some(f),
        _ => None,
    }
}

fn same_sig(f: &FuncType, sig: &CoreSig) -> bool {
    f.params() == sig.params.as_slice() && f.results() == sig.results.as_slice()
}

fn show(sig: &CoreSig) -> String {
    format!("{:?} -> {:?}", sig.params, sig.results)
}
