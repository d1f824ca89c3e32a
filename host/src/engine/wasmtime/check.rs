//! Load step 2-3: inspect the core module BEFORE componentizing it, so every
//! engine reports the same typed error for the same broken artifact:
//! undecodable/invalid bytes or missing/mistyped exports -> `InvalidModule`,
//! imports outside the `relay:plugin/host` functions (or mistyped) -> `Link`.
//! wit-component would also refuse most of these, but only with free-form
//! messages; classifying here keeps the mapping exact and testable.

use relay_core::engine::PluginError;
use relay_core::limits::Limits;
use wasmparser::types::{EntityType, Types, TypesRef};
use wasmparser::{
    CompositeInnerType, FuncType, FuncValidatorAllocations, Parser, Payload, ValidPayload,
    Validator, WasmFeatures,
};

use super::world::{CoreSig, World};

/// What the check learned about a module that later steps need.
#[derive(Debug, Clone, Copy)]
pub(super) struct ModuleShape {
    /// The module already carries wit-bindgen's world metadata.
    pub has_component_type: bool,
}

/// How much of the module to validate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Validation {
    /// Everything, function bodies included (a module we have not compiled).
    Full,
    /// Everything but function bodies: the module's exact bytes were fully
    /// validated when this build compiled them into a compile-cache entry
    /// (the entry is keyed by their hash), and body validation is most of
    /// the cost of a cached load.
    SkipBodies,
}

/// Validates `wasm` against the world's core ABI. `max_module_bytes` is
/// checked by the caller before this runs.
pub(super) fn core_module(
    wasm: &[u8],
    limits: &Limits,
    world: &World,
    validation: Validation,
) -> Result<ModuleShape, PluginError> {
    let invalid = |msg: String| PluginError::InvalidModule(msg);
    let (types, has_component_type) = validate(wasm, validation).map_err(invalid)?;
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

    Ok(ModuleShape { has_component_type })
}

/// `Validator::validate_all`, optionally without function bodies, noting on
/// the way whether wit-bindgen's `component-type` section is present.
fn validate(wasm: &[u8], validation: Validation) -> Result<(Types, bool), String> {
    let mut validator = Validator::new_with_features(WasmFeatures::default());
    let mut allocations = FuncValidatorAllocations::default();
    let mut has_component_type = false;
    let mut types = None;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| e.to_string())?;
        if let Payload::CustomSection(section) = &payload {
            has_component_type |= section.name().starts_with("component-type");
        }
        match validator.payload(&payload).map_err(|e| e.to_string())? {
            ValidPayload::Func(func, body) if validation == Validation::Full => {
                let mut func = func.into_validator(allocations);
                func.validate(&body).map_err(|e| e.to_string())?;
                allocations = func.into_allocations();
            }
            // Only the last (top-level) type information matters.
            ValidPayload::End(end) => types = Some(end),
            _ => {}
        }
    }
    match types {
        Some(types) => Ok((types, has_component_type)),
        None => Err("unexpected end of module".into()),
    }
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
