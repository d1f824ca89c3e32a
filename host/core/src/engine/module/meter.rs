//! Fuel metering injected into the module itself, so a plugin's CPU budget
//! means the same thing on wasmtime and wasmi: both engines run the same
//! counting code, whatever their own fuel would have said (they disagree by
//! ~10 % on a plain loop, and more on host calls).
//!
//! The rewrite (done by wasm-encoder's `Reencode`, which copies everything
//! it is not told to change):
//! - two globals: the fuel left (`i64`) and the entry depth (`i32`);
//! - each function is cut into straight-line regions (a region starts at the
//!   function's entry and after `loop`, `if`, `else`, `end` and `br_if`, the
//!   only places control can arrive or fall through to). A region's first
//!   instruction charges all of its instructions (one unit each, `end` and
//!   `else` free) and calls `exhausted` if the fuel went below zero;
//! - a call of a host import charges [`HOST_CALL`] plus one unit per 8 bytes
//!   of its byte arguments (and, for `kv-get`, of the value it copied back);
//!   `memory.fill`/`copy`/`init` charge one unit per 8 bytes (what a guest's
//!   own copy loop pays), `memory.grow` [`PAGE_COST`] per new page (an
//!   engine zero-fills or maps it): host work costs about what the same work
//!   in guest code would;
//! - `exhausted` is one `unreachable`; engines tell it apart from the guest's
//!   own traps by where it happened (wasmtime's backtrace) or by the fuel
//!   global being negative (wasmi reads the exported [`FUEL_EXPORT`]);
//! - every world export and the start function get a wrapper that refills
//!   the fuel to the budget when entered from the host (depth 0) and keeps
//!   counting when entered from a host import (`cabi_realloc` under
//!   `kv-get`); the guest's own calls go to the original functions, so a
//!   guest cannot refill itself. After a trap the depth stays raised, and
//!   both engines replace the instance after any error.
//!
//! New functions, globals and the `() -> ()` type are appended, so no
//! existing index moves. Custom sections other than `name` are dropped:
//! `component-type` because the host's copy of the world is the contract,
//! the others because no engine reads them.

use alloc::{vec, vec::Vec};

use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, ExportKind, ExportSection, Function, FunctionSection,
    GlobalSection, GlobalType, Instruction, MemArg, SectionId, TypeSection, ValType,
};
use wasmparser::Operator;

use super::check::{Shape, Sig};
use super::world::GUEST_EXPORTS;

/// Fuel a host call costs before the bytes it moves.
pub const HOST_CALL: i64 = 32;
/// Fuel a new 64 KiB page of `memory.grow` costs.
pub const PAGE_COST: i64 = 1 << PAGE_SHIFT;
const PAGE_SHIFT: i64 = 10;

/// Name under which the fuel global is exported for hosts that read it
/// after a trap (wasmi).
pub const FUEL_EXPORT: &str = "relay:fuel";
/// Name under which the start function's wrapper is exported, instead of
/// being the module's start function, for hosts that call it themselves
/// right after instantiation (wasmi, which cannot inspect an instance whose
/// start function trapped).
pub const START_EXPORT: &str = "relay:start";

/// The metered module.
#[derive(Debug, Clone)]
pub struct Metered {
    pub wasm: Vec<u8>,
    /// Index of the function that traps when the fuel runs out.
    pub exhausted: u32,
}

/// Rewrites `wasm` (already accepted by `check`, which produced `shape`).
pub fn meter(
    wasm: &[u8],
    shape: &Shape,
    budget: u64,
    host_exports: bool,
) -> core::result::Result<Metered, alloc::string::String> {
    let functions = shape.functions();
    let unit = Sig::default();
    let unit_type = shape.types.iter().position(|t| t.as_ref() == Some(&unit));
    let mut targets: Vec<u32> = GUEST_EXPORTS
        .iter()
        .filter_map(|e| shape.func_exports.iter().find(|(n, _)| n == e.name))
        .map(|(_, index)| *index)
        .chain(shape.start)
        .filter(|&i| i as usize >= shape.imports.len())
        .collect();
    targets.sort_unstable();
    targets.dedup();
    let mut meter = Meter {
        shape,
        budget: i64::try_from(budget).unwrap_or(i64::MAX),
        host_exports,
        fuel: shape.globals,
        depth: shape.globals + 1,
        unit_type: unit_type.unwrap_or(shape.types.len()) as u32,
        add_unit_type: unit_type.is_none(),
        exhausted: functions,
        wrappers: targets
            .iter()
            .enumerate()
            .map(|(k, &f)| (f, functions + 1 + k as u32))
            .collect(),
        globals_done: false,
        next_body: 0,
    };
    let mut module = wasm_encoder::Module::new();
    meter
        .parse_core_module(&mut module, wasmparser::Parser::new(0), wasm)
        .map_err(|e| match e {
            reencode::Error::ParseError(e) => alloc::format!("{e}"),
            other => alloc::format!("{other:?}"),
        })?;
    let mut wasm = module.finish();
    if host_exports && shape.start.is_some() {
        wasm = without_start_section(&wasm);
    }
    Ok(Metered {
        wasm,
        exhausted: functions,
    })
}

struct Meter<'s> {
    shape: &'s Shape,
    budget: i64,
    host_exports: bool,
    fuel: u32,
    depth: u32,
    unit_type: u32,
    add_unit_type: bool,
    exhausted: u32,
    /// (original function, its wrapper), sorted by original.
    wrappers: Vec<(u32, u32)>,
    globals_done: bool,
    /// Index among defined functions of the next body parsed.
    next_body: usize,
}

type Result<T> = core::result::Result<T, reencode::Error<core::convert::Infallible>>;

/// How a scratch local's value turns into fuel.
#[derive(Clone, Copy)]
enum Scale {
    /// Bytes: one unit per 8.
    Bytes,
    /// Wasm pages: [`PAGE_COST`] each.
    Pages,
}

impl Meter<'_> {
    fn wrapper_of(&self, f: u32) -> Option<u32> {
        self.wrappers
            .binary_search_by_key(&f, |(o, _)| *o)
            .ok()
            .map(|i| self.wrappers[i].1)
    }

    fn add_globals(&mut self, globals: &mut GlobalSection) {
        let ty = |val_type| GlobalType {
            val_type,
            mutable: true,
            shared: false,
        };
        globals.global(ty(ValType::I64), &ConstExpr::i64_const(self.budget));
        globals.global(ty(ValType::I32), &ConstExpr::i32_const(0));
        self.globals_done = true;
    }

    /// `if fuel < 0 { exhausted() }`.
    fn check(&self, f: &mut Function) {
        f.instruction(&Instruction::GlobalGet(self.fuel))
            .instruction(&Instruction::I64Const(0))
            .instruction(&Instruction::I64LtS)
            .instruction(&Instruction::If(BlockType::Empty))
            .instruction(&Instruction::Call(self.exhausted))
            .instruction(&Instruction::End);
    }

    /// `fuel -= base + sum(scaled locals)`, then the check.
    fn charge(&self, f: &mut Function, base: i64, terms: &[(u32, Scale)]) {
        f.instruction(&Instruction::GlobalGet(self.fuel))
            .instruction(&Instruction::I64Const(base))
            .instruction(&Instruction::I64Sub);
        for &(local, scale) in terms {
            match scale {
                // A claimed length counts at most the memory's size: past
                // it the call fails on its bounds, not on fuel.
                Scale::Bytes => {
                    let memory_bytes = |f: &mut Function| {
                        f.instruction(&Instruction::MemorySize(0))
                            .instruction(&Instruction::I32Const(16))
                            .instruction(&Instruction::I32Shl);
                    };
                    f.instruction(&Instruction::LocalGet(local));
                    memory_bytes(f);
                    f.instruction(&Instruction::LocalGet(local));
                    memory_bytes(f);
                    f.instruction(&Instruction::I32LtU)
                        .instruction(&Instruction::Select);
                }
                Scale::Pages => {
                    f.instruction(&Instruction::LocalGet(local));
                }
            }
            f.instruction(&Instruction::I64ExtendI32U);
            match scale {
                Scale::Bytes => f
                    .instruction(&Instruction::I64Const(3))
                    .instruction(&Instruction::I64ShrU),
                Scale::Pages => f
                    .instruction(&Instruction::I64Const(PAGE_SHIFT))
                    .instruction(&Instruction::I64Shl),
            };
            f.instruction(&Instruction::I64Sub);
        }
        f.instruction(&Instruction::GlobalSet(self.fuel));
        self.check(f);
    }

    /// A host import call with its arguments on the stack: spill them to
    /// scratch locals, charge, reload, call, and charge what came back.
    fn host_call(&self, f: &mut Function, import: u32, scratch: u32) {
        let host = self.shape.imports[import as usize];
        let n = host.params.len() as u32;
        for k in (0..n).rev() {
            f.instruction(&Instruction::LocalSet(scratch + k));
        }
        let terms: Vec<(u32, Scale)> = host
            .lengths
            .iter()
            .map(|&l| (scratch + l as u32, Scale::Bytes))
            .collect();
        self.charge(f, HOST_CALL, &terms);
        for k in 0..n {
            f.instruction(&Instruction::LocalGet(scratch + k));
        }
        f.instruction(&Instruction::Call(import));
        if host.charges_result {
            // option<list<u8>> in the return area: tag at +0, length at +8.
            let retptr = scratch + n - 1;
            let at = |offset| MemArg {
                offset,
                align: 0,
                memory_index: 0,
            };
            f.instruction(&Instruction::LocalGet(retptr))
                .instruction(&Instruction::I32Load8U(at(0)))
                .instruction(&Instruction::If(BlockType::Empty))
                .instruction(&Instruction::LocalGet(retptr))
                .instruction(&Instruction::I32Load(at(8)))
                .instruction(&Instruction::LocalSet(scratch));
            self.charge(f, 0, &[(scratch, Scale::Bytes)]);
            f.instruction(&Instruction::End);
        }
    }

    /// A wrapper: refill at depth 0, count the depth, call the original.
    fn wrapper(&self, original: u32, params: u32) -> Function {
        let mut f = Function::new([]);
        f.instruction(&Instruction::GlobalGet(self.depth))
            .instruction(&Instruction::I32Eqz)
            .instruction(&Instruction::If(BlockType::Empty))
            .instruction(&Instruction::I64Const(self.budget))
            .instruction(&Instruction::GlobalSet(self.fuel))
            .instruction(&Instruction::End);
        self.bump_depth(&mut f, Instruction::I32Add);
        for p in 0..params {
            f.instruction(&Instruction::LocalGet(p));
        }
        f.instruction(&Instruction::Call(original));
        self.bump_depth(&mut f, Instruction::I32Sub);
        f.instruction(&Instruction::End);
        f
    }

    fn bump_depth(&self, f: &mut Function, op: Instruction<'_>) {
        f.instruction(&Instruction::GlobalGet(self.depth))
            .instruction(&Instruction::I32Const(1))
            .instruction(&op)
            .instruction(&Instruction::GlobalSet(self.depth));
    }

    fn defined_sig(&self, index: u32) -> Option<&Sig> {
        self.shape.func_sig(index)
    }
}

/// Whether a section placed before `before` (`None`: at the end) comes
/// after where the global section belongs: the moment to add one to a
/// module that has none. (Section ids are not in module order: tags and
/// data counts sit elsewhere.)
pub fn past_global_section(before: Option<SectionId>) -> bool {
    before.is_none_or(|id| {
        matches!(
            id,
            SectionId::Export
                | SectionId::Start
                | SectionId::Element
                | SectionId::DataCount
                | SectionId::Code
                | SectionId::Data
        )
    })
}

/// Fuel to charge at each instruction that starts a region (0 elsewhere).
fn region_costs(ops: &[Operator<'_>]) -> Vec<i64> {
    let mut costs = vec![0i64; ops.len()];
    let mut start = 0;
    for (i, op) in ops.iter().enumerate() {
        if !matches!(op, Operator::End | Operator::Else) {
            costs[start] += 1;
        }
        let ends_region = matches!(
            op,
            Operator::Loop { .. }
                | Operator::If { .. }
                | Operator::Else
                | Operator::End
                | Operator::BrIf { .. }
        );
        if ends_region && i + 1 < ops.len() {
            start = i + 1;
        }
    }
    costs
}

/// Scratch `i32` locals a body needs for the metering of its operators.
fn scratch_needed(shape: &Shape, ops: &[Operator<'_>]) -> u32 {
    ops.iter()
        .map(|op| match op {
            Operator::Call { function_index } => shape
                .imports
                .get(*function_index as usize)
                .map_or(0, |h| h.params.len() as u32),
            Operator::MemoryFill { .. }
            | Operator::MemoryCopy { .. }
            | Operator::MemoryInit { .. } => 1,
            Operator::MemoryGrow { .. } => 2,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

impl Reencode for Meter<'_> {
    type Error = core::convert::Infallible;

    fn parse_type_section(
        &mut self,
        types: &mut TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> Result<()> {
        reencode::utils::parse_type_section(self, types, section)?;
        if self.add_unit_type {
            types.ty().function([], []);
        }
        Ok(())
    }

    fn parse_function_section(
        &mut self,
        functions: &mut FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> Result<()> {
        reencode::utils::parse_function_section(self, functions, section)?;
        functions.function(self.unit_type);
        for &(original, _) in &self.wrappers {
            let d = original as usize - self.shape.imports.len();
            functions.function(self.shape.defined[d]);
        }
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<()> {
        reencode::utils::parse_global_section(self, globals, section)?;
        self.add_globals(globals);
        Ok(())
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<()> {
        if past_global_section(before) && !self.globals_done {
            let mut globals = GlobalSection::new();
            self.add_globals(&mut globals);
            module.section(&globals);
        }
        Ok(())
    }

    fn parse_export(&mut self, exports: &mut ExportSection, export: wasmparser::Export<'_>) {
        let index = match export.kind {
            wasmparser::ExternalKind::Func
                if GUEST_EXPORTS.iter().any(|e| e.name == export.name) =>
            {
                self.wrapper_of(export.index).unwrap_or(export.index)
            }
            _ => export.index,
        };
        exports.export(export.name, self.export_kind(export.kind), index);
    }

    fn parse_export_section(
        &mut self,
        exports: &mut ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<()> {
        reencode::utils::parse_export_section(self, exports, section)?;
        if self.host_exports {
            exports.export(FUEL_EXPORT, ExportKind::Global, self.fuel);
            if let Some(start) = self.shape.start {
                let wrapper = self.wrapper_of(start).unwrap_or(start);
                exports.export(START_EXPORT, ExportKind::Func, wrapper);
            }
        }
        Ok(())
    }

    fn start_section(&mut self, start: u32) -> u32 {
        self.wrapper_of(start).unwrap_or(start)
    }

    fn parse_custom_section(
        &mut self,
        module: &mut wasm_encoder::Module,
        section: wasmparser::CustomSectionReader<'_>,
    ) -> Result<()> {
        // Only `name` is of use to an engine (trap messages); the rest
        // (the guest's `component-type`, debug info, padding) would be
        // copied for nothing.
        if section.name() != "name" {
            return Ok(());
        }
        reencode::utils::parse_custom_section(self, module, section)
    }

    fn parse_code_section(
        &mut self,
        code: &mut CodeSection,
        section: wasmparser::CodeSectionReader<'_>,
    ) -> Result<()> {
        reencode::utils::parse_code_section(self, code, section)?;
        let mut exhausted = Function::new([]);
        exhausted
            .instruction(&Instruction::Unreachable)
            .instruction(&Instruction::End);
        code.function(&exhausted);
        for &(original, _) in &self.wrappers {
            let params = self.defined_sig(original).map_or(0, |s| s.params.len());
            code.function(&self.wrapper(original, params as u32));
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        func: wasmparser::FunctionBody<'_>,
    ) -> Result<()> {
        let index = (self.shape.imports.len() + self.next_body) as u32;
        self.next_body += 1;
        let params = self.defined_sig(index).map_or(0, |s| s.params.len() as u32);
        let mut locals = Vec::new();
        let mut declared = 0u32;
        for group in func.get_locals_reader()? {
            let (count, ty) = group?;
            declared += count;
            locals.push((count, self.val_type(ty)?));
        }
        let mut reader = func.get_operators_reader()?;
        let mut ops = Vec::new();
        while !reader.eof() {
            ops.push(reader.read()?);
        }
        let scratch = params + declared;
        let needed = scratch_needed(self.shape, &ops);
        if needed > 0 {
            locals.push((needed, ValType::I32));
        }
        let costs = region_costs(&ops);
        let mut f = Function::new(locals);
        for (op, cost) in ops.into_iter().zip(costs) {
            if cost > 0 {
                self.charge(&mut f, cost, &[]);
            }
            match op {
                Operator::Call { function_index }
                    if (function_index as usize) < self.shape.imports.len() =>
                {
                    self.host_call(&mut f, function_index, scratch);
                    continue;
                }
                Operator::MemoryFill { .. }
                | Operator::MemoryCopy { .. }
                | Operator::MemoryInit { .. } => {
                    f.instruction(&Instruction::LocalSet(scratch));
                    self.charge(&mut f, 0, &[(scratch, Scale::Bytes)]);
                    f.instruction(&Instruction::LocalGet(scratch));
                }
                Operator::MemoryGrow { .. } => {
                    // Charged once it succeeded: a refused growth is the
                    // limiter's answer, not a fuel question.
                    f.instruction(&Instruction::LocalTee(scratch));
                    f.instruction(&self.instruction(op)?);
                    f.instruction(&Instruction::LocalTee(scratch + 1))
                        .instruction(&Instruction::I32Const(-1))
                        .instruction(&Instruction::I32Ne)
                        .instruction(&Instruction::If(BlockType::Empty));
                    self.charge(&mut f, 0, &[(scratch, Scale::Pages)]);
                    f.instruction(&Instruction::End)
                        .instruction(&Instruction::LocalGet(scratch + 1));
                    continue;
                }
                _ => {}
            }
            f.instruction(&self.instruction(op)?);
        }
        code.function(&f);
        Ok(())
    }
}

/// `wasm` without its start section (id 8); every other section is copied
/// byte for byte. The input is our own encoder's output, so it is well formed.
fn without_start_section(wasm: &[u8]) -> Vec<u8> {
    const START: u8 = 8;
    let mut out = Vec::with_capacity(wasm.len());
    out.extend_from_slice(&wasm[..8]);
    let mut rest = &wasm[8..];
    while let Some((&id, after_id)) = rest.split_first() {
        let (size, header) = leb_u32(after_id);
        let end = 1 + header + size as usize;
        if id != START {
            out.extend_from_slice(&rest[..end]);
        }
        rest = &rest[end..];
    }
    out
}

/// A LEB128 `u32` and the number of bytes it took.
fn leb_u32(bytes: &[u8]) -> (u32, usize) {
    let mut value = 0u32;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    (value, 5)
}

#[cfg(test)]
pub(super) fn region_costs_for_tests(ops: &[Operator<'_>]) -> Vec<i64> {
    region_costs(ops)
}
