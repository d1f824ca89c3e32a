//! Differential fuzzing of the two engines: wasm-smith writes a random
//! function `run(ptr, len) -> i32` (which may call any host import), and
//! [`shell`] wraps it in a fixed, valid plugin: memory export, a bump
//! `cabi_realloc`, a `describe` that builds its answer with stores, and a
//! `handle` that calls `run` on the payload and replies with its result.
//! Both engines then load and call the plugin under the same small budget
//! and must agree on every outcome class (`compare.rs`, shared with the
//! regression test that replays what the fuzzer found).

use arbitrary::{Arbitrary, Result, Unstructured};
use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, ExportKind, ExportSection, Function, FunctionSection,
    GlobalSection, GlobalType, Instruction as I, MemArg, SectionId, TypeSection, ValType,
};

#[path = "../../host/tests/differential/compare.rs"]
pub mod compare;

/// The host imports a generated body may call.
const IMPORTS: &str = r#"(module
  (import "relay:plugin/host@0.1.0" "log" (func (param i32 i32 i32)))
  (import "relay:plugin/host@0.1.0" "kv-get" (func (param i32 i32 i32)))
  (import "relay:plugin/host@0.1.0" "kv-set" (func (param i32 i32 i32 i32 i32)))
  (import "relay:plugin/host@0.1.0" "kv-delete" (func (param i32 i32)))
  (import "relay:plugin/host@0.1.0" "now-ms" (func (result i64)))
  (import "relay:plugin/host@0.1.0" "emit" (func (param i32 i32 i32 i32))))"#;

/// The one export wasm-smith must produce.
const EXPORTS: &str = r#"(module (func (export "run") (param i32 i32) (result i32) unreachable))"#;

/// A random plugin from fuzzer bytes.
pub fn plugin(data: &[u8]) -> Result<Vec<u8>> {
    let mut u = Unstructured::new(data);
    let mut config = wasm_smith::Config::arbitrary(&mut u)?;
    config.available_imports = Some(wat::parse_str(IMPORTS).expect("imports WAT"));
    config.exports = Some(wat::parse_str(EXPORTS).expect("exports WAT"));
    config.max_exports = 0;
    config.allow_start_export = false;
    config.canonicalize_nans = true;
    config.simd_enabled = false;
    config.relaxed_simd_enabled = false;
    config.threads_enabled = false;
    config.shared_everything_threads_enabled = false;
    config.tail_call_enabled = false;
    config.exceptions_enabled = false;
    config.gc_enabled = false;
    config.memory64_enabled = false;
    config.custom_page_sizes_enabled = false;
    config.wide_arithmetic_enabled = false;
    config.min_memories = 1;
    config.max_memories = 1;
    config.max_memory32_bytes = 1 << 20;
    config.max_funcs = config.max_funcs.min(20);
    config.max_instructions = config.max_instructions.min(200);
    let module = wasm_smith::Module::new(config, &mut u)?;
    Ok(shell(&module.to_bytes()))
}

/// Wraps a module exporting `run` into a plugin (see the module doc).
pub fn shell(generated: &[u8]) -> Vec<u8> {
    let mut info = Info::default();
    for payload in wasmparser::Parser::new(0).parse_all(generated) {
        match payload.expect("wasm-smith output parses") {
            wasmparser::Payload::TypeSection(r) => info.types = r.count(),
            wasmparser::Payload::ImportSection(r) => {
                for import in r {
                    if matches!(import.expect("import").ty, wasmparser::TypeRef::Func(_)) {
                        info.funcs += 1;
                    }
                }
            }
            wasmparser::Payload::FunctionSection(r) => info.funcs += r.count(),
            wasmparser::Payload::GlobalSection(r) => info.globals = r.count(),
            wasmparser::Payload::ExportSection(r) => {
                for e in r {
                    let e = e.expect("export");
                    if e.name == "run" {
                        info.run = e.index;
                    }
                }
            }
            _ => {}
        }
    }
    let mut shell = Shell {
        info,
        globals_done: false,
    };
    let mut module = wasm_encoder::Module::new();
    shell
        .parse_core_module(&mut module, wasmparser::Parser::new(0), generated)
        .expect("re-encoding wasm-smith output");
    module.finish()
}

#[derive(Default)]
struct Info {
    types: u32,
    funcs: u32,
    globals: u32,
    run: u32,
}

struct Shell {
    info: Info,
    globals_done: bool,
}

const HEAP: i32 = 1024;

impl Shell {
    /// New types: realloc, describe, handle.
    fn ty(&self, n: u32) -> u32 {
        self.info.types + n
    }
    /// New functions: realloc, describe, handle.
    fn func(&self, n: u32) -> u32 {
        self.info.funcs + n
    }
    fn heap(&self) -> u32 {
        self.info.globals
    }
    fn add_global(&mut self, globals: &mut GlobalSection) {
        globals.global(
            GlobalType {
                val_type: ValType::I32,
                mutable: true,
                shared: false,
            },
            &ConstExpr::i32_const(HEAP),
        );
        self.globals_done = true;
    }

    fn realloc(&self) -> Function {
        let mut f = Function::new([(1, ValType::I32)]);
        // p = align_up(heap, align); heap = p + size; return p
        f.instruction(&I::GlobalGet(self.heap()))
            .instruction(&I::LocalGet(2))
            .instruction(&I::I32Add)
            .instruction(&I::I32Const(1))
            .instruction(&I::I32Sub)
            .instruction(&I::I32Const(0))
            .instruction(&I::LocalGet(2))
            .instruction(&I::I32Sub)
            .instruction(&I::I32And)
            .instruction(&I::LocalTee(4))
            .instruction(&I::LocalGet(3))
            .instruction(&I::I32Add)
            .instruction(&I::GlobalSet(self.heap()))
            .instruction(&I::LocalGet(4))
            .instruction(&I::End);
        f
    }

    /// Builds plugin "fuzz" 1.0.0 with command "run" for every role at 0..64.
    fn describe(&self) -> Function {
        let mut f = Function::new([]);
        let store8 = |f: &mut Function, at: i32, byte: u8| {
            f.instruction(&I::I32Const(at))
                .instruction(&I::I32Const(i32::from(byte)))
                .instruction(&I::I32Store8(mem(0, 0)));
        };
        let store32 = |f: &mut Function, at: i32, value: i32| {
            f.instruction(&I::I32Const(at))
                .instruction(&I::I32Const(value))
                .instruction(&I::I32Store(mem(0, 2)));
        };
        // A zero-page memory gets one page first (or the stores trap alike).
        f.instruction(&I::MemorySize(0))
            .instruction(&I::I32Eqz)
            .instruction(&I::If(BlockType::Empty))
            .instruction(&I::I32Const(1))
            .instruction(&I::MemoryGrow(0))
            .instruction(&I::Drop)
            .instruction(&I::End);
        for (i, b) in b"fuzz1.0.0run\0\x01\x02".iter().enumerate() {
            store8(&mut f, 512 + i as i32, *b);
        }
        // plugin-info at 0: name (512, 4), version (516, 5), commands (64, 1)
        for (at, v) in [(0, 512), (4, 4), (8, 516), (12, 5), (16, 64), (20, 1)] {
            store32(&mut f, at, v);
        }
        // command-spec at 64: name (521, 3), roles (524, 3), budget none
        for (at, v) in [(64, 521), (68, 3), (72, 524), (76, 3), (80, 0), (84, 0)] {
            store32(&mut f, at, v);
        }
        f.instruction(&I::I32Const(0)).instruction(&I::End);
        f
    }

    /// ok(some(4 bytes: run(payload))) from a return area at 128.
    fn handle_fn(&self) -> Function {
        let mut f = Function::new([]);
        f.instruction(&I::I32Const(144))
            .instruction(&I::LocalGet(4))
            .instruction(&I::LocalGet(5))
            .instruction(&I::Call(self.info.run))
            .instruction(&I::I32Store(mem(0, 2)));
        for (at, v, wide) in [
            (128, 0, false),
            (132, 1, false),
            (136, 144, true),
            (140, 4, true),
        ] {
            f.instruction(&I::I32Const(at)).instruction(&I::I32Const(v));
            f.instruction(&if wide {
                I::I32Store(mem(0, 2))
            } else {
                I::I32Store8(mem(0, 0))
            });
        }
        f.instruction(&I::I32Const(128)).instruction(&I::End);
        f
    }
}

fn mem(offset: u64, align: u32) -> MemArg {
    MemArg {
        offset,
        align,
        memory_index: 0,
    }
}

type R<T> = core::result::Result<T, reencode::Error<core::convert::Infallible>>;

impl Reencode for Shell {
    type Error = core::convert::Infallible;

    fn parse_type_section(
        &mut self,
        types: &mut TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> R<()> {
        reencode::utils::parse_type_section(self, types, section)?;
        types.ty().function([ValType::I32; 4], [ValType::I32]);
        types.ty().function([], [ValType::I32]);
        types.ty().function([ValType::I32; 8], [ValType::I32]);
        Ok(())
    }

    fn parse_function_section(
        &mut self,
        functions: &mut FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> R<()> {
        reencode::utils::parse_function_section(self, functions, section)?;
        for n in 0..3 {
            functions.function(self.ty(n));
        }
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> R<()> {
        reencode::utils::parse_global_section(self, globals, section)?;
        self.add_global(globals);
        Ok(())
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> R<()> {
        if relay_core::engine::module::past_global_section(before) && !self.globals_done {
            let mut globals = GlobalSection::new();
            self.add_global(&mut globals);
            module.section(&globals);
        }
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> R<()> {
        reencode::utils::parse_export_section(self, exports, section)?;
        exports.export("memory", ExportKind::Memory, 0);
        exports.export("cabi_realloc", ExportKind::Func, self.func(0));
        exports.export("describe", ExportKind::Func, self.func(1));
        exports.export("handle", ExportKind::Func, self.func(2));
        Ok(())
    }

    fn parse_code_section(
        &mut self,
        code: &mut CodeSection,
        section: wasmparser::CodeSectionReader<'_>,
    ) -> R<()> {
        reencode::utils::parse_code_section(self, code, section)?;
        code.function(&self.realloc());
        code.function(&self.describe());
        code.function(&self.handle_fn());
        Ok(())
    }
}
