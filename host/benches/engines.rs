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

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use std::sync::Arc;

use relay_core::engine::wasmi::WasmiEngine;
use relay_core::engine::{Engine, Plugin};
use relay_core::host_env::{FixedClock, HostEnv, MemKv, TracingLogger};
use relay_core::limits::Limits;
use relay_core::plugin::{CallOutcome, Invocation, Role};
use relay_host::engine::wasmi_record::ValidatedDir;
use relay_host::engine::wasmtime::WasmtimeEngine;

struct Settings {
    samples: usize,
    iters: usize,
    load_iters: usize,
}

/// Median time of one operation in nanoseconds, from `samples` batches of `iters`.
fn measure(s: &Settings, iters: usize, mut op: impl FnMut()) -> f64 {
    for _ in 0..iters.min(1000) {
        op();
    }
    let mut per_op: Vec<f64> = (0..s.samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                op();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    per_op.sort_by(|a, b| a.total_cmp(b));
    per_op[per_op.len() / 2]
}

fn env_for(limits: &Limits) -> HostEnv {
    HostEnv::new(
        "echo",
        Box::new(MemKv::default()),
        Box::new(FixedClock(0)),
        Box::new(TracingLogger),
        limits,
    )
}

fn load(engine: &dyn Engine, wasm: &[u8]) -> Box<dyn Plugin> {
    let limits = Limits::default();
    engine
        .load(wasm, &limits, &mut |_| env_for(&limits))
        .expect("echo plugin loads")
}

/// The baseline: what a handler linked into the host does for `echo`.
#[inline(never)]
fn native_echo(cmd: &Invocation) -> CallOutcome {
    CallOutcome {
        result: Ok(Some(cmd.payload.clone())),
        events: Vec::new(),
    }
}

fn plugin_path() -> PathBuf {
    let dir = std::env::var_os("RELAY_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    dir.join("echo.wasm")
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
    let path = plugin_path();
    let wasm = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `cargo xtask build-plugins` first",
            path.display()
        )
    });

    // 1 KiB msgpack payload: bin16 header + 1024 bytes.
    let mut payload = vec![0xc5, 0x04, 0x00];
    payload.extend((0..1024u32).map(|i| (i % 251) as u8));
    let cmd = Invocation {
        id: "bench-1".into(),
        name: "echo".into(),
        payload,
        attempt: 1,
        role: Role::Admin,
    };

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

fn fmt_ns(ns: f64) -> String {
    if ns.abs() >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns.abs() >= 1e3 {
        format!("{:.2} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}
