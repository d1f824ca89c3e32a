//! The one acceptance rule: every check a module must pass before either
//! engine sees it, with the same limits and the same words on wasmtime and
//! wasmi. Engines differ in what they refuse on their own (wasmi's parse
//! limits, wasmtime's start-function linking), so this pass is at least as
//! strict as both and wasmi's own limits are switched off.
//!
//! What is checked, in order:
//! 1. size (`Limits::max_module_bytes`), before any parsing;
//! 2. validity under one fixed feature set ([`features`]), function bodies
//!    included unless the exact bytes were fully validated before;
//! 3. shape limits ([`ShapeLimits`]): functions, locals, parameters and
//!    results, globals, tables, memories, segments, exports, and a minimum
//!    average body size (wasmi's defence of lazy compilation, kept for both);
//! 4. imports: only the functions of `relay:plugin/host`, exact signatures;
//! 5. exports: `memory` and the world's functions, exact signatures;
//! 6. the start function may not reach a host import (wasmtime cannot
//!    serve imports before instantiation ends; wasmi could, so both refuse).

use alloc::{format, string::String, vec, vec::Vec};

use wasmparser::{
    AbstractHeapType, BlockType, CompositeInnerType, ElementItems, ExternalKind,
    FuncValidatorAllocations, HeapType, Operator, Parser, Payload, RefType, TypeRef, ValType,
    ValidPayload, Validator, WasmFeatures,
};

use super::world::{host_import, show_sig, HostImport, GUEST_EXPORTS, HOST_MODULE};
use crate::engine::PluginError;
use crate::limits::Limits;

/// Structural limits of an accepted module (beyond [`Limits`], which a
/// plugin's config may change). Documented in `docs/engines.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeLimits {
    pub max_locals_per_function: u32,
    pub max_params: usize,
    pub max_results: usize,
    pub max_globals: u32,
    pub max_tables: u32,
    pub max_element_segments: u32,
    pub max_data_segments: u32,
    pub max_exports: u32,
    /// Bodies must average at least this many bytes once they total
    /// [`Self::avg_applies_from`] bytes.
    pub min_avg_body_bytes: u32,
    pub avg_applies_from: u32,
}

/// The limits every module is held to.
pub const SHAPE: ShapeLimits = ShapeLimits {
    max_locals_per_function: 10_000,
    max_params: 32,
    max_results: 32,
    max_globals: 1_000,
    max_tables: 100,
    max_element_segments: 1_000,
    max_data_segments: 1_000,
    max_exports: 100,
    min_avg_body_bytes: 40,
    avg_applies_from: 1_000,
};

/// The wasm features a plugin may use: what both engines run. SIMD (wasmi
/// builds without it), tail calls, threads, multi-memory, memory64 and GC
/// are refused. (`GC_TYPES` is on because this wasmparser needs it for
/// `funcref`; [`plain_ref`] refuses every other reference type, `externref`
/// included: wasmtime without its GC runtime, as the host builds it, refuses
/// them, while wasmi would run them.)
pub fn features() -> WasmFeatures {
    WasmFeatures::MUTABLE_GLOBAL
        | WasmFeatures::MULTI_VALUE
        | WasmFeatures::SATURATING_FLOAT_TO_INT
        | WasmFeatures::SIGN_EXTENSION
        | WasmFeatures::BULK_MEMORY
        | WasmFeatures::REFERENCE_TYPES
        | WasmFeatures::GC_TYPES
        | WasmFeatures::EXTENDED_CONST
        | WasmFeatures::FLOATS
}

/// A function signature.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sig {
    pub params: Vec<ValType>,
    pub results: Vec<ValType>,
}

/// What the meter needs to know about an accepted module.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// Every type, by type index (`None`: not a function type).
    pub types: Vec<Option<Sig>>,
    /// The host import behind each imported function, by function index.
    pub imports: Vec<&'static HostImport>,
    /// Type index of each defined function.
    pub defined: Vec<u32>,
    /// Defined globals (imported globals are refused).
    pub globals: u32,
    /// Exported functions: name and function index.
    pub func_exports: Vec<(String, u32)>,
    pub start: Option<u32>,
}

impl Shape {
    /// Imported plus defined functions.
    pub fn functions(&self) -> u32 {
        (self.imports.len() + self.defined.len()) as u32
    }

    /// The signature of function `index`.
    pub fn func_sig(&self, index: u32) -> Option<&Sig> {
        let i = index as usize;
        let ty = match i.checked_sub(self.imports.len()) {
            None => return None, // imports have fixed signatures, see `HostImport`
            Some(d) => *self.defined.get(d)?,
        };
        self.types.get(ty as usize)?.as_ref()
    }
}

fn invalid(msg: String) -> PluginError {
    PluginError::InvalidModule(msg)
}

/// Runs every check on `wasm`; `bodies`: validate function bodies too.
pub fn check(wasm: &[u8], limits: &Limits, bodies: bool) -> Result<Shape, PluginError> {
    if wasm.len() > limits.max_module_bytes {
        return Err(PluginError::ModuleTooLarge {
            size: wasm.len(),
            limit: limits.max_module_bytes,
        });
    }
    let mut shape = Shape::default();
    let mut validator = Validator::new_with_features(features());
    let mut allocations = FuncValidatorAllocations::default();
    let mut calls = CallGraph::default();
    let (mut tables, mut body_bytes, mut exports) = (0u32, 0usize, 0u32);
    let mut memory_export_ok = None;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| invalid(format!("{e}")))?;
        let valid = validator
            .payload(&payload)
            .map_err(|e| invalid(format!("{e}")))?;
        match &payload {
            Payload::TypeSection(reader) => {
                for group in reader.clone() {
                    let group = group.map_err(|e| invalid(format!("{e}")))?;
                    for ty in group.into_types() {
                        shape.types.push(match &ty.composite_type.inner {
                            CompositeInnerType::Func(f) => Some(sig_of(f)?),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.clone() {
                    let import = import.map_err(|e| invalid(format!("{e}")))?;
                    shape.imports.push(check_import(&shape, &import)?);
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader.clone() {
                    shape.defined.push(ty.map_err(|e| invalid(format!("{e}")))?);
                }
                let total = shape.functions();
                if total > limits.max_functions {
                    return Err(invalid(format!(
                        "{total} functions, the limit is {}",
                        limits.max_functions
                    )));
                }
            }
            Payload::TableSection(r) => {
                tables += r.count();
                for table in r.clone() {
                    plain_ref(table.map_err(|e| invalid(format!("{e}")))?.ty.element_type)?;
                }
            }
            Payload::GlobalSection(r) => {
                shape.globals = r.count();
                for global in r.clone() {
                    plain(global.map_err(|e| invalid(format!("{e}")))?.ty.content_type)?;
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader.clone() {
                    let export = export.map_err(|e| invalid(format!("{e}")))?;
                    exports += 1;
                    match export.kind {
                        ExternalKind::Func => {
                            shape.func_exports.push((export.name.into(), export.index))
                        }
                        ExternalKind::Memory if export.name == "memory" => {
                            memory_export_ok = Some(export.index)
                        }
                        _ => {}
                    }
                }
            }
            Payload::StartSection { func, .. } => shape.start = Some(*func),
            Payload::ElementSection(reader) => {
                count(
                    "element segments",
                    reader.count(),
                    SHAPE.max_element_segments,
                )?;
                for element in reader.clone() {
                    let element = element.map_err(|e| invalid(format!("{e}")))?;
                    match element.items {
                        ElementItems::Functions(funcs) => {
                            for f in funcs {
                                calls.in_table.push(f.map_err(|e| invalid(format!("{e}")))?);
                            }
                        }
                        ElementItems::Expressions(ty, exprs) => {
                            plain_ref(ty)?;
                            for expr in exprs {
                                let expr = expr.map_err(|e| invalid(format!("{e}")))?;
                                for op in expr.get_operators_reader() {
                                    if let Ok(Operator::RefFunc { function_index }) = op {
                                        calls.in_table.push(function_index);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Payload::DataSection(reader) => {
                count("data segments", reader.count(), SHAPE.max_data_segments)?;
            }
            Payload::CodeSectionEntry(body) => {
                body_bytes += body.range().len();
                check_body(&shape, body, &mut calls)?;
            }
            _ => {}
        }
        if let ValidPayload::Func(func, body) = valid {
            if bodies {
                let mut func = func.into_validator(allocations);
                func.validate(&body).map_err(|e| invalid(format!("{e}")))?;
                allocations = func.into_allocations();
            }
        }
    }
    count("globals", shape.globals, SHAPE.max_globals)?;
    count("tables", tables, SHAPE.max_tables)?;
    count("exports", exports, SHAPE.max_exports)?;
    check_average(body_bytes, shape.defined.len())?;
    if memory_export_ok.is_none() {
        return Err(invalid("missing export `memory` (a linear memory)".into()));
    }
    check_exports(&shape)?;
    if let Some(start) = shape.start {
        calls.check_start(&shape, start)?;
    }
    Ok(shape)
}

/// Reference types other than `funcref` need a GC runtime (the host's
/// wasmtime has none and refuses them; wasmi would run them).
fn plain_ref(ty: RefType) -> Result<(), PluginError> {
    if ty == RefType::FUNCREF {
        return Ok(());
    }
    Err(invalid(format!(
        "reference type {ty} needs a garbage collector, which plugins may not use \
         (funcref is allowed)"
    )))
}

fn plain(ty: ValType) -> Result<(), PluginError> {
    match ty {
        ValType::Ref(r) => plain_ref(r),
        _ => Ok(()),
    }
}

fn plain_heap(ty: HeapType) -> Result<(), PluginError> {
    match ty {
        HeapType::Abstract {
            shared: false,
            ty: AbstractHeapType::Func,
        } => Ok(()),
        other => Err(invalid(format!(
            "heap type {other:?} needs a garbage collector, which plugins may not use"
        ))),
    }
}

fn count(what: &str, n: u32, limit: u32) -> Result<(), PluginError> {
    if n > limit {
        return Err(invalid(format!("{n} {what}, the limit is {limit}")));
    }
    Ok(())
}

fn sig_of(f: &wasmparser::FuncType) -> Result<Sig, PluginError> {
    if f.params().len() > SHAPE.max_params || f.results().len() > SHAPE.max_results {
        return Err(invalid(format!(
            "a function type has {} parameters and {} results, the limits are {} and {}",
            f.params().len(),
            f.results().len(),
            SHAPE.max_params,
            SHAPE.max_results
        )));
    }
    for ty in f.params().iter().chain(f.results()) {
        plain(*ty)?;
    }
    Ok(Sig {
        params: f.params().to_vec(),
        results: f.results().to_vec(),
    })
}

fn check_import(
    shape: &Shape,
    import: &wasmparser::Import<'_>,
) -> Result<&'static HostImport, PluginError> {
    let (module, name) = (import.module, import.name);
    let Some(expected) = host_import(module, name) else {
        return Err(PluginError::Link(format!(
            "unexpected import `{module}`.`{name}`: only the functions of {HOST_MODULE} are provided"
        )));
    };
    let sig = match import.ty {
        TypeRef::Func(ty) => shape.types.get(ty as usize).and_then(Option::as_ref),
        _ => None,
    };
    match sig {
        Some(s) if s.params == expected.params && s.results == expected.results => Ok(expected),
        _ => Err(PluginError::Link(format!(
            "import `{module}`.`{name}` must be a function {}",
            show_sig(expected.params, expected.results)
        ))),
    }
}

fn check_average(body_bytes: usize, functions: usize) -> Result<(), PluginError> {
    if functions == 0 || body_bytes < SHAPE.avg_applies_from as usize {
        return Ok(());
    }
    let avg = body_bytes / functions;
    if avg < SHAPE.min_avg_body_bytes as usize {
        return Err(invalid(format!(
            "function bodies average {avg} bytes over {functions} functions, the minimum is {} \
             (many tiny functions are how lazy compilation is attacked)",
            SHAPE.min_avg_body_bytes
        )));
    }
    Ok(())
}

fn check_exports(shape: &Shape) -> Result<(), PluginError> {
    for export in GUEST_EXPORTS {
        let found = shape
            .func_exports
            .iter()
            .find(|(name, _)| name == export.name)
            .map(|(_, index)| *index);
        let Some(index) = found else {
            if export.required {
                return Err(invalid(format!("missing export `{}`", export.name)));
            }
            continue;
        };
        let ok = shape
            .func_sig(index)
            .is_some_and(|s| s.params == export.params && s.results == export.results);
        if !ok {
            return Err(invalid(format!(
                "export `{}` must be a function {}",
                export.name,
                show_sig(export.params, export.results)
            )));
        }
    }
    Ok(())
}

/// Locals, and the direct calls and indirect-call sites of one body.
fn check_body(
    shape: &Shape,
    body: &wasmparser::FunctionBody<'_>,
    calls: &mut CallGraph,
) -> Result<(), PluginError> {
    let index = shape.imports.len() + calls.callees.len();
    let mut locals = 0u64;
    for group in body
        .get_locals_reader()
        .map_err(|e| invalid(format!("{e}")))?
    {
        let (count, ty) = group.map_err(|e| invalid(format!("{e}")))?;
        plain(ty)?;
        locals += u64::from(count);
    }
    if locals > u64::from(SHAPE.max_locals_per_function) {
        return Err(invalid(format!(
            "function {index} declares {locals} locals, the limit is {}",
            SHAPE.max_locals_per_function
        )));
    }
    let (mut callees, mut indirect) = (Vec::new(), false);
    let mut ops = body
        .get_operators_reader()
        .map_err(|e| invalid(format!("{e}")))?;
    while !ops.eof() {
        match ops.read().map_err(|e| invalid(format!("{e}")))? {
            Operator::Call { function_index } => callees.push(function_index),
            Operator::CallIndirect { .. } => indirect = true,
            Operator::RefNull { hty } => plain_heap(hty)?,
            Operator::TypedSelect { ty } => plain(ty)?,
            Operator::Block { blockty } | Operator::Loop { blockty } | Operator::If { blockty } => {
                if let BlockType::Type(ty) = blockty {
                    plain(ty)?;
                }
            }
            _ => {}
        }
    }
    calls.callees.push(callees);
    calls.indirect.push(indirect);
    Ok(())
}

/// Who calls whom, for the start-function rule.
#[derive(Default)]
struct CallGraph {
    /// Direct callees of each defined function.
    callees: Vec<Vec<u32>>,
    /// Whether each defined function makes indirect calls.
    indirect: Vec<bool>,
    /// Functions placed in tables by element segments (the only functions
    /// an indirect call or `ref.func` can reach).
    in_table: Vec<u32>,
}

impl CallGraph {
    /// Refuses a start function that can reach a host import.
    fn check_start(&self, shape: &Shape, start: u32) -> Result<(), PluginError> {
        let imported = shape.imports.len();
        let mut seen = vec![false; shape.functions() as usize];
        let mut todo = vec![start];
        let mut tables_added = false;
        while let Some(f) = todo.pop() {
            let Some(slot) = seen.get_mut(f as usize) else {
                continue;
            };
            if core::mem::replace(slot, true) {
                continue;
            }
            if let Some(import) = shape.imports.get(f as usize) {
                return Err(invalid(format!(
                    "the start function can call host import `{}`; imports are not available \
                     while a plugin instantiates: do that work in `describe` or `handle`",
                    import.name
                )));
            }
            let d = f as usize - imported;
            todo.extend(self.callees.get(d).into_iter().flatten().copied());
            if self.indirect.get(d).copied().unwrap_or(false) && !tables_added {
                tables_added = true;
                todo.extend(self.in_table.iter().copied());
            }
        }
        Ok(())
    }
}
