//! The metering of one function body: the charges inserted before each
//! straight-line region, around host calls and around bulk memory and
//! `memory.grow`, and the entry wrappers. Original instructions are copied
//! byte for byte; only the charges are encoded here.

use alloc::{vec, vec::Vec};

use wasm_encoder::{BlockType, Encode, InstructionSink, MemArg};
use wasmparser::{FunctionBody, Operator};

use super::{leb_u32, Meter, Result, HOST_CALL, PAGE_SHIFT};
use crate::engine::module::check::Shape;

/// The binary encoding of the value type `i32` (a local declaration's type).
const I32: u8 = 0x7f;

/// How a scratch local's value turns into fuel.
#[derive(Clone, Copy)]
enum Scale {
    /// Bytes: one unit per 8.
    Bytes,
    /// Wasm pages: [`PAGE_COST`] each.
    Pages,
}

impl Meter<'_> {
    /// One original body with its metering: the locals are copied with one
    /// group of scratch `i32`s appended, each instruction is copied with the
    /// charges inserted before it.
    pub(super) fn metered_body(
        &self,
        wasm: &[u8],
        out: &mut Vec<u8>,
        body: FunctionBody<'_>,
        index: u32,
    ) -> Result<()> {
        let params = self
            .shape
            .func_sig(index)
            .map_or(0, |s| s.params.len() as u32);
        let locals = body.get_locals_reader()?;
        let groups = locals.get_count();
        let mut declared = 0u32;
        for group in locals {
            declared += group?.0;
        }
        let mut reader = body.get_operators_reader()?;
        let locals_bytes = &wasm[body.range().start..reader.original_position()];
        let mut ops = Vec::new();
        let mut starts = Vec::new();
        while !reader.eof() {
            let (op, at) = reader.read_with_offset()?;
            ops.push(op);
            starts.push(at);
        }
        starts.push(reader.original_position());
        let scratch = params + declared;
        let needed = scratch_needed(self.shape, &ops);
        out.clear();
        if needed > 0 {
            (groups + 1).encode(out);
            out.extend_from_slice(&locals_bytes[leb_u32(locals_bytes).1..]);
            needed.encode(out);
            out.push(I32);
        } else {
            out.extend_from_slice(locals_bytes);
        }
        let costs = region_costs(&ops);
        for (i, op) in ops.iter().enumerate() {
            if costs[i] > 0 {
                // Only a function's entry and a loop's header can start
                // unbounded work (recursion, iteration): the fuel is checked
                // there, and elsewhere only counted.
                if i == 0 || matches!(ops[i - 1], Operator::Loop { .. }) {
                    self.charge(out, costs[i], &[]);
                } else {
                    self.debit(out, costs[i]);
                }
            }
            let original = &wasm[starts[i]..starts[i + 1]];
            match op {
                Operator::Call { function_index }
                    if (*function_index as usize) < self.shape.imports.len() =>
                {
                    self.host_call(out, *function_index, scratch);
                }
                Operator::MemoryFill { .. }
                | Operator::MemoryCopy { .. }
                | Operator::MemoryInit { .. } => {
                    InstructionSink::new(out).local_set(scratch);
                    self.charge(out, 0, &[(scratch, Scale::Bytes)]);
                    InstructionSink::new(out).local_get(scratch);
                    out.extend_from_slice(original);
                }
                Operator::MemoryGrow { .. } => {
                    // Charged once it succeeded: a refused growth is the
                    // limiter's answer, not a fuel question.
                    InstructionSink::new(out).local_tee(scratch);
                    out.extend_from_slice(original);
                    InstructionSink::new(out)
                        .local_tee(scratch + 1)
                        .i32_const(-1)
                        .i32_ne()
                        .if_(BlockType::Empty);
                    self.charge(out, 0, &[(scratch, Scale::Pages)]);
                    InstructionSink::new(out).end().local_get(scratch + 1);
                }
                _ => out.extend_from_slice(original),
            }
        }
        Ok(())
    }

    /// `if fuel < 0 { exhausted() }`.
    fn check(&self, out: &mut Vec<u8>) {
        InstructionSink::new(out)
            .global_get(self.fuel)
            .i64_const(0)
            .i64_lt_s()
            .if_(BlockType::Empty)
            .call(self.exhausted)
            .end();
    }

    /// `fuel -= cost`, without the check.
    fn debit(&self, out: &mut Vec<u8>, cost: i64) {
        InstructionSink::new(out)
            .global_get(self.fuel)
            .i64_const(cost)
            .i64_sub()
            .global_set(self.fuel);
    }

    /// `fuel -= base + sum(scaled locals)`, then the check.
    fn charge(&self, out: &mut Vec<u8>, base: i64, terms: &[(u32, Scale)]) {
        InstructionSink::new(out)
            .global_get(self.fuel)
            .i64_const(base)
            .i64_sub();
        for &(local, scale) in terms {
            let mut f = InstructionSink::new(out);
            match scale {
                // A claimed length counts at most the memory's size: past
                // it the call fails on its bounds, not on fuel.
                Scale::Bytes => f
                    .local_get(local)
                    .memory_size(0)
                    .i32_const(16)
                    .i32_shl()
                    .local_get(local)
                    .memory_size(0)
                    .i32_const(16)
                    .i32_shl()
                    .i32_lt_u()
                    .select()
                    .i64_extend_i32_u()
                    .i64_const(3)
                    .i64_shr_u(),
                Scale::Pages => f
                    .local_get(local)
                    .i64_extend_i32_u()
                    .i64_const(PAGE_SHIFT)
                    .i64_shl(),
            };
            f.i64_sub();
        }
        InstructionSink::new(out).global_set(self.fuel);
        self.check(out);
    }

    /// A host import call with its arguments on the stack: spill them to
    /// scratch locals, charge, reload, call, and charge what came back.
    fn host_call(&self, out: &mut Vec<u8>, import: u32, scratch: u32) {
        let host = self.shape.imports[import as usize];
        let n = host.params.len() as u32;
        for k in (0..n).rev() {
            InstructionSink::new(out).local_set(scratch + k);
        }
        let terms: Vec<(u32, Scale)> = host
            .lengths
            .iter()
            .map(|&l| (scratch + l as u32, Scale::Bytes))
            .collect();
        self.charge(out, HOST_CALL, &terms);
        for k in 0..n {
            InstructionSink::new(out).local_get(scratch + k);
        }
        InstructionSink::new(out).call(import);
        if host.charges_result {
            // option<list<u8>> in the return area: tag at +0, length at +8.
            let retptr = scratch + n - 1;
            let at = |offset| MemArg {
                offset,
                align: 0,
                memory_index: 0,
            };
            InstructionSink::new(out)
                .local_get(retptr)
                .i32_load8_u(at(0))
                .if_(BlockType::Empty)
                .local_get(retptr)
                .i32_load(at(8))
                .local_set(scratch);
            self.charge(out, 0, &[(scratch, Scale::Bytes)]);
            InstructionSink::new(out).end();
        }
    }

    /// A wrapper: refill at depth 0, count the depth, call the original.
    pub(super) fn wrapper(&self, out: &mut Vec<u8>, original: u32, params: u32) {
        InstructionSink::new(out)
            .global_get(self.depth)
            .i32_eqz()
            .if_(BlockType::Empty)
            .i64_const(self.budget)
            .global_set(self.fuel)
            .end()
            .global_get(self.depth)
            .i32_const(1)
            .i32_add()
            .global_set(self.depth);
        for p in 0..params {
            InstructionSink::new(out).local_get(p);
        }
        InstructionSink::new(out)
            .call(original)
            .global_get(self.depth)
            .i32_const(1)
            .i32_sub()
            .global_set(self.depth)
            .end();
    }
}

/// Fuel to charge at each instruction that starts a region (0 elsewhere).
fn region_costs(ops: &[Operator<'_>]) -> Vec<i64> {
    let mut costs = vec![0i64; ops.len()];
    // For each open `block`, `loop` and `if`: the region its `end` returns to.
    let mut enclosing = Vec::new();
    let mut region = 0;
    for (i, op) in ops.iter().enumerate() {
        match op {
            Operator::End => region = enclosing.pop().unwrap_or(region),
            Operator::Else => region = i + 1,
            _ => {
                costs[region] += 1;
                match op {
                    Operator::Block { .. } => enclosing.push(region),
                    Operator::Loop { .. } | Operator::If { .. } => {
                        enclosing.push(region);
                        region = i + 1;
                    }
                    _ => {}
                }
            }
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

#[cfg(test)]
pub(in crate::engine::module) fn region_costs_for_tests(ops: &[Operator<'_>]) -> Vec<i64> {
    region_costs(ops)
}
