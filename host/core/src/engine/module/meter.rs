//! Fuel metering injected into the module itself, so a plugin's CPU budget
//! means the same thing on wasmtime and wasmi: both engines run the same
//! counting code, whatever their own fuel would have said (they disagree by
//! ~10 % on a plain loop, and more on host calls).
//!
//! The rewrite:
//! - two globals: the fuel left (`i64`) and the entry depth (`i32`);
//! - each function is cut into regions: its body, each loop's body and
//!   each arm of an `if`, the code that runs once each time control enters
//!   it. A region's first instruction charges all of its instructions (one
//!   unit each, `end` and `else` free), those after a nested `block` or
//!   `if` included; a nested loop's body or `if` arm is its own region. A
//!   branch out of a region early has paid for the rest of it: an
//!   overcharge bounded by the function's length and the same on both
//!   engines. Charging again after each `end` and `br_if`, exactly, made
//!   the counting code three times as large, and wasmi keeps a plugin's
//!   compiled code in RAM;
//! - only the function's entry and a loop's header then call `exhausted` if
//!   the fuel went below zero: code runs longer than its own length only
//!   through a loop or a call, so a check there stops anything unbounded,
//!   and the code between checks is bounded by the function's size. A check
//!   in every region would add to the compiled size for no extra safety;
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
//! existing index moves, and everything the rewrite does not touch is copied
//! byte for byte: whole sections, the entries of the sections it appends to,
//! each body's locals and every original instruction. Only the metering code
//! itself is encoded (wasm-encoder's `InstructionSink`). Nothing is decoded
//! into wasm-encoder's types and encoded back (its `Reencode`): that would
//! link an encoder for every wasm instruction, and SIMD parsing into
//! wasmparser, into a microcontroller's firmware for instructions a plugin
//! may not even use. Custom sections other than `name` are dropped:
//! `component-type` because the host's copy of the world is the contract,
//! the others because no engine reads them.

use alloc::{string::String, vec, vec::Vec};

use wasm_encoder::{
    ConstExpr, Encode, ExportKind, ExportSection, GlobalType, SectionId, StartSection, ValType,
};
use wasmparser::{ExternalKind, Parser, Payload};

use super::check::{Shape, Sig};
use super::world::GUEST_EXPORTS;

mod body;

#[cfg(test)]
pub(super) use body::region_costs_for_tests;

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

/// The binary encoding of the function type `() -> ()`.
const UNIT_FUNC_TYPE: [u8; 3] = [0x60, 0x00, 0x00];

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
) -> core::result::Result<Metered, String> {
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
    let meter = Meter {
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
    };
    let wasm = meter.rewrite(wasm).map_err(|e| alloc::format!("{e}"))?;
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
}

type Result<T> = core::result::Result<T, wasmparser::BinaryReaderError>;

impl Meter<'_> {
    fn rewrite(&self, wasm: &[u8]) -> Result<Vec<u8>> {
        let mut out = Out::with_capacity(wasm.len() + wasm.len() / 2);
        let mut globals_done = false;
        let mut body = Vec::new();
        let (mut expected, mut bodies) = (0, 0);
        for payload in Parser::new(0).parse_all(wasm) {
            let payload = payload?;
            if let Some((id, _)) = payload.as_section() {
                if !globals_done && global_section_passed(id) {
                    let mut globals = Vec::new();
                    self.encode_globals(&mut globals);
                    out.appended(SectionId::Global, &[0], 0, 2, &globals);
                    globals_done = true;
                }
            }
            match payload {
                Payload::TypeSection(r) => {
                    let extra: &[u8] = if self.add_unit_type {
                        &UNIT_FUNC_TYPE
                    } else {
                        &[]
                    };
                    let added = u32::from(self.add_unit_type);
                    out.appended(SectionId::Type, &wasm[r.range()], r.count(), added, extra);
                }
                Payload::FunctionSection(r) => {
                    let mut extra = Vec::new();
                    self.unit_type.encode(&mut extra);
                    for &(original, _) in &self.wrappers {
                        let d = original as usize - self.shape.imports.len();
                        self.shape.defined[d].encode(&mut extra);
                    }
                    let added = 1 + self.wrappers.len() as u32;
                    let section = &wasm[r.range()];
                    out.appended(SectionId::Function, section, r.count(), added, &extra);
                }
                Payload::GlobalSection(r) => {
                    let mut extra = Vec::new();
                    self.encode_globals(&mut extra);
                    out.appended(SectionId::Global, &wasm[r.range()], r.count(), 2, &extra);
                    globals_done = true;
                }
                Payload::ExportSection(r) => {
                    let mut exports = ExportSection::new();
                    for export in r {
                        self.export(&mut exports, export?);
                    }
                    if self.host_exports {
                        exports.export(FUEL_EXPORT, ExportKind::Global, self.fuel);
                        if let Some(start) = self.shape.start {
                            exports.export(START_EXPORT, ExportKind::Func, self.entry(start));
                        }
                    }
                    out.encoded(SectionId::Export, &exports);
                }
                // With host exports the host calls the start wrapper itself.
                Payload::StartSection { func, .. } if !self.host_exports => {
                    let start = StartSection {
                        function_index: self.entry(func),
                    };
                    out.encoded(SectionId::Start, &start);
                }
                Payload::StartSection { .. } | Payload::Version { .. } | Payload::End(_) => {}
                Payload::CodeSectionStart { count, .. } => {
                    expected = count;
                    out.begin_code(count + 1 + self.wrappers.len() as u32);
                }
                Payload::CodeSectionEntry(entry) => {
                    let index = (self.shape.imports.len() + bodies as usize) as u32;
                    self.metered_body(wasm, &mut body, entry, index)?;
                    out.body(&body);
                    bodies += 1;
                    if bodies == expected {
                        self.append_functions(&mut out);
                        out.end_code();
                    }
                }
                // Only `name` is of use to an engine (trap messages); the
                // rest (the guest's `component-type`, debug info, padding)
                // would be copied for nothing.
                Payload::CustomSection(c) if c.name() != "name" => {}
                other => {
                    if let Some((id, range)) = other.as_section() {
                        out.section(id, &wasm[range]);
                    }
                }
            }
        }
        if !globals_done {
            let mut globals = Vec::new();
            self.encode_globals(&mut globals);
            out.appended(SectionId::Global, &[0], 0, 2, &globals);
        }
        Ok(out.bytes)
    }

    /// What the host calls for function `f`: its wrapper, if it has one.
    fn entry(&self, f: u32) -> u32 {
        self.wrappers
            .binary_search_by_key(&f, |(o, _)| *o)
            .ok()
            .map_or(f, |i| self.wrappers[i].1)
    }

    fn export(&self, exports: &mut ExportSection, export: wasmparser::Export<'_>) {
        let (kind, index) = match export.kind {
            ExternalKind::Func if GUEST_EXPORTS.iter().any(|e| e.name == export.name) => {
                (ExportKind::Func, self.entry(export.index))
            }
            ExternalKind::Func => (ExportKind::Func, export.index),
            ExternalKind::Table => (ExportKind::Table, export.index),
            ExternalKind::Memory => (ExportKind::Memory, export.index),
            ExternalKind::Global => (ExportKind::Global, export.index),
            ExternalKind::Tag => (ExportKind::Tag, export.index),
        };
        exports.export(export.name, kind, index);
    }

    /// The fuel global (starting full) and the depth global, encoded as
    /// global-section entries.
    fn encode_globals(&self, sink: &mut Vec<u8>) {
        let ty = |val_type| GlobalType {
            val_type,
            mutable: true,
            shared: false,
        };
        ty(ValType::I64).encode(sink);
        ConstExpr::i64_const(self.budget).encode(sink);
        ty(ValType::I32).encode(sink);
        ConstExpr::i32_const(0).encode(sink);
    }

    /// `exhausted` and the wrappers, after the last original body.
    fn append_functions(&self, out: &mut Out) {
        // No locals; `unreachable`; `end`.
        out.body(&[0x00, 0x00, 0x0b]);
        for &(original, _) in &self.wrappers {
            let params = self.shape.func_sig(original).map_or(0, |s| s.params.len());
            let mut body = vec![0x00];
            self.wrapper(&mut body, original, params as u32);
            out.body(&body);
        }
    }
}

/// The metered module as it is written: every section goes straight into
/// one buffer, and each body straight after the code section's header, so a
/// load holds the original, this buffer and one body at a time.
struct Out {
    bytes: Vec<u8>,
    /// Where the code section's size goes, once it is known.
    code_size_at: usize,
}

/// A section size written before it is known: a `u32` LEB128 padded to
/// its full five bytes (the binary format allows the padding).
const PADDED_SIZE: [u8; 5] = [0x80, 0x80, 0x80, 0x80, 0x00];

impl Out {
    fn with_capacity(capacity: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity);
        bytes.extend_from_slice(b"\0asm\x01\0\0\0");
        Out {
            bytes,
            code_size_at: 0,
        }
    }

    /// A section copied as it is.
    fn section(&mut self, id: u8, data: &[u8]) {
        self.bytes.push(id);
        data.encode(&mut self.bytes);
    }

    /// A section wasm-encoder built (its encoding carries its size).
    fn encoded(&mut self, id: SectionId, section: &impl Encode) {
        self.bytes.push(id.into());
        section.encode(&mut self.bytes);
    }

    /// A vector section's entries (`count` of them in `section`, after
    /// their count) with `added` more, already encoded in `extra`.
    fn appended(&mut self, id: SectionId, section: &[u8], count: u32, added: u32, extra: &[u8]) {
        let entries = &section[leb_u32(section).1..];
        let mut total = Vec::new();
        (count + added).encode(&mut total);
        self.bytes.push(id.into());
        ((total.len() + entries.len() + extra.len()) as u32).encode(&mut self.bytes);
        self.bytes.extend_from_slice(&total);
        self.bytes.extend_from_slice(entries);
        self.bytes.extend_from_slice(extra);
    }

    fn begin_code(&mut self, bodies: u32) {
        self.bytes.push(SectionId::Code.into());
        self.code_size_at = self.bytes.len();
        self.bytes.extend_from_slice(&PADDED_SIZE);
        bodies.encode(&mut self.bytes);
    }

    fn body(&mut self, body: &[u8]) {
        body.encode(&mut self.bytes);
    }

    /// Writes the code section's size into its padded placeholder.
    fn end_code(&mut self) {
        let at = self.code_size_at;
        let mut size = (self.bytes.len() - at - PADDED_SIZE.len()) as u32;
        for byte in &mut self.bytes[at..at + PADDED_SIZE.len() - 1] {
            *byte = 0x80 | (size & 0x7f) as u8;
            size >>= 7;
        }
        self.bytes[at + PADDED_SIZE.len() - 1] = size as u8;
    }
}

/// Whether a section placed before `before` (`None`: at the end) comes
/// after where the global section belongs: the moment to add one to a
/// module that has none.
pub fn past_global_section(before: Option<SectionId>) -> bool {
    before.is_none_or(|id| global_section_passed(id.into()))
}

/// Whether section `id` comes after where the global section belongs.
/// (Section ids are not in module order: tags and data counts sit
/// elsewhere.)
fn global_section_passed(id: u8) -> bool {
    [
        SectionId::Export,
        SectionId::Start,
        SectionId::Element,
        SectionId::DataCount,
        SectionId::Code,
        SectionId::Data,
    ]
    .iter()
    .any(|&s| u8::from(s) == id)
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
