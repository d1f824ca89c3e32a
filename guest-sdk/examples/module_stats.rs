//! Print the start-up footprint of built plugin modules and check it.
//!
//! What it shows: a plugin built with this SDK and the workspace's `wasm`
//! profile starts with 1-2 pages (64-128 KiB) of linear memory, because the
//! guest stack is 16 KiB (`.cargo/config.toml`) instead of Rust's default
//! 1 MiB. For each module it prints the file size, the memory's initial page
//! count, the stack size implied by `__stack_pointer`, the imports and the
//! exports, and exits non-zero if a module needs more than 2 pages at start.
//!
//! ```text
//! cargo build --profile wasm --target wasm32-unknown-unknown -p relay-plugin-echo ...
//! cargo run -p relay-guest --example module_stats -- target/wasm32-unknown-unknown/wasm/*.wasm
//! ```

use std::process::ExitCode;
use wasmparser::{ConstExpr, Operator, Parser, Payload, TypeRef};

const MAX_START_PAGES: u64 = 2;

struct Stats {
    bytes: usize,
    initial_pages: u64,
    stack_pointer: Option<i64>,
    imports: Vec<String>,
    exports: Vec<String>,
    custom_sections: Vec<String>,
}

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: module_stats <plugin.wasm>...");
        return ExitCode::from(2);
    }
    let mut ok = true;
    for path in &paths {
        match std::fs::read(path)
            .map_err(|err| err.to_string())
            .and_then(|bytes| stats(&bytes))
        {
            Ok(stats) => {
                let fits = stats.initial_pages <= MAX_START_PAGES;
                ok &= fits;
                println!(
                    "{path}: {} bytes, {} initial page(s){}, stack {} bytes",
                    stats.bytes,
                    stats.initial_pages,
                    if fits {
                        ""
                    } else {
                        " (OVER the 2-page budget)"
                    },
                    stats
                        .stack_pointer
                        .map_or("?".to_string(), |sp| sp.to_string()),
                );
                println!("  imports: {}", stats.imports.join(", "));
                println!("  exports: {}", stats.exports.join(", "));
                println!("  custom sections: {}", stats.custom_sections.join(", "));
            }
            Err(err) => {
                ok = false;
                eprintln!("{path}: {err}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn stats(bytes: &[u8]) -> Result<Stats, String> {
    let mut stats = Stats {
        bytes: bytes.len(),
        initial_pages: 0,
        stack_pointer: None,
        imports: Vec::new(),
        exports: Vec::new(),
        custom_sections: Vec::new(),
    };
    let mut globals = Vec::new();
    let mut stack_global = None;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|err| err.to_string())? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|err| err.to_string())?;
                    if let TypeRef::Memory(memory) = import.ty {
                        stats.initial_pages = memory.initial;
                    }
                    stats
                        .imports
                        .push(format!("{}#{}", import.module, import.name));
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    stats.initial_pages = memory.map_err(|err| err.to_string())?.initial;
                }
            }
            Payload::GlobalSection(reader) => {
                for global in reader {
                    globals.push(const_i32(&global.map_err(|err| err.to_string())?.init_expr));
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|err| err.to_string())?;
                    if export.name == "__stack_pointer" {
                        stack_global = Some(export.index as usize);
                    }
                    stats.exports.push(export.name.to_string());
                }
            }
            Payload::CustomSection(reader) => stats.custom_sections.push(reader.name().to_string()),
            _ => {}
        }
    }
    // The linker puts the stack first and `__stack_pointer` (global 0 when not
    // exported) starts at its top, so its initial value is the stack size.
    stats.stack_pointer = globals.get(stack_global.unwrap_or(0)).copied().flatten();
    Ok(stats)
}

fn const_i32(expr: &ConstExpr) -> Option<i64> {
    let mut reader = expr.get_operators_reader();
    match reader.read().ok()? {
        Operator::I32Const { value } => Some(i64::from(value)),
        _ => None,
    }
}
