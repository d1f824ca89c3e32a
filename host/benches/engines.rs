//! Engine benchmark (issue 2): one `echo` call with a 1 KiB payload on a
//! native Rust function (the baseline), wasmtime and wasmi, plus plugin load
//! time (cold, and from our own compile cache) on both engines.
//!
//! Every figure is reported next to the native baseline measured in the same
//! run, as a ratio and as added nanoseconds, because absolute numbers move
//! with the machine but the ratio is what the design controls.
//!
//! Run: `cargo xtask build-plugins && cargo bench -p relay-host --bench engines`
//! Smoke mode (CI, asserts nothing about time): `-- --test`, `RELAY_BENCH_SMOKE=1`, or any run
//! without `--bench` (e.g. `cargo test --all-targets`).

mod common;

use std::hint::black_box;

use std::sync::Arc;

use relay_core::engine::wasmi::WasmiEngine;
use relay_core::engine::Engine;
use relay_host::engine::wasmi_record::ValidatedDir;
use relay_host::engine::wasmtime::WasmtimeEngine;

use common::{echo_artifact, echo_command, fmt_ns, load, median_ns, native_echo};

struct Settings {
    samples: usize,
    iters: usize,
    load_iters: usize,
}

/// Median time of one operation (after up to 1,000 warm-up runs).
fn measure(s: &Settings, iters: usize, op: impl FnMut()) -> f64 {
    median_ns(s.samples, iters, iters.min(1000), op)
}

fn main() {
    // Full runs only under `cargo bench` (which passes `--bench`); `cargo test
    // --all-targets` runs this binary without it, and CI asks for smoke mode.
    let args: Vec<String> = std::env::args().collect();
    let smoke = !args.iter().any(|a| a == "--bench")
        || args.iter().any(|a| a == "--test")
        || std::env::var_os("RELAY_BENCH_SMOKE").is_some();
    let s = if smoke {
        Settings {
            samples: 3,
            iters: 20,
            load_iters: 2,
        }
    } else {
        Settings {
            samples: 21,
            iters: 20_000,
            load_iters: 20,
        }
    };
    let wasm = echo_artifact();
    let cmd = echo_command();

    let native = measure(&s, s.iters, || {
        black_box(native_echo(black_box(&cmd)));
    });

    let wasmtime = WasmtimeEngine::new().expect("wasmtime engine");
    let wasmi = WasmiEngine::new();
    let mut rows = Vec::new();
    for (name, engine) in [
        ("wasmtime", &wasmtime as &dyn Engine),
        ("wasmi", &wasmi as &dyn Engine),
    ] {
        let mut plugin = load(engine, &wasm);
        let out = plugin.handle(&cmd).expect("echo call");
        assert_eq!(
            out.result.as_ref().ok().and_then(|r| r.as_deref()),
            Some(&cmd.payload[..])
        );
        let call = measure(&s, s.iters, || {
            black_box(plugin.handle(black_box(&cmd)).expect("echo call"));
        });
        rows.push((name, call));
    }

    let cold_wasmtime = measure(&s, s.load_iters, || {
        black_box(load(&wasmtime, &wasm));
    });
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cached_engine = WasmtimeEngine::with_cache_dir(cache_dir.path()).expect("cached engine");
    load(&cached_engine, &wasm); // fills the cache
    let cached_wasmtime = measure(&s, s.load_iters * 10, || {
        black_box(load(&cached_engine, &wasm));
    });
    let cold_wasmi = measure(&s, s.load_iters * 10, || {
        black_box(load(&wasmi, &wasm));
    });
    let record_dir = tempfile::tempdir().expect("tempdir");
    let record = ValidatedDir::open(record_dir.path()).expect("record dir");
    let recorded_engine = WasmiEngine::new().with_validated_modules(Arc::new(record));
    load(&recorded_engine, &wasm); // records the module
    let recorded_wasmi = measure(&s, s.load_iters * 10, || {
        black_box(load(&recorded_engine, &wasm));
    });

    println!(
        "## Engines: echo with a 1 KiB payload ({} mode)",
        if smoke { "smoke" } else { "full" }
    );
    println!();
    println!("| case | time per op | ratio to native | added over native |");
    println!("|------|-------------|-----------------|-------------------|");
    println!(
        "| native Rust function (baseline) | {} | 1.0x | - |",
        fmt_ns(native)
    );
    for (name, call) in &rows {
        println!(
            "| {name} call | {} | {:.1}x | {} |",
            fmt_ns(*call),
            call / native,
            fmt_ns(call - native)
        );
    }
    println!();
    println!(
        "| plugin load (echo, {} bytes) | time | ratio to native echo call |",
        wasm.len()
    );
    println!("|------|------|------|");
    for (name, t) in [
        ("wasmtime cold (componentize + Cranelift)", cold_wasmtime),
        ("wasmtime from our compile cache", cached_wasmtime),
        (
            "wasmi cold (parse + validate + lazy translation)",
            cold_wasmi,
        ),
        (
            "wasmi, module in our validated record (lazy validation)",
            recorded_wasmi,
        ),
    ] {
        println!("| {name} | {} | {:.0}x |", fmt_ns(t), t / native);
    }
}
