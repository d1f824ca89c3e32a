//! The same echo-like handler in every guest language (issue 12): module
//! size, cold load time and the per-call time of `echo` with a 1 KiB
//! payload, on wasmtime and wasmi, against the Rust reference plugin
//! (`conformance-rs`) and a native function, measured in the same run.
//! Every plugin here implements the conformance commands
//! (`plugins/conformance`), so `echo` is the same contract in each; the
//! JavaScript plugin's `echo` decodes the payload to a JS value and encodes
//! it back, which is part of what a JS handler costs.
//!
//! Run: `cargo xtask build-plugins && cargo bench -p relay-host --bench languages`
//! (smoke mode without `--bench`, as under `cargo test --all-targets`).

// Shared with the engine benches; this one loads other artifacts than echo.
#[allow(dead_code)]
mod common;

use std::hint::black_box;
use std::time::Instant;

use relay_core::engine::wasmi::WasmiEngine;
use relay_core::engine::Engine;
use relay_host::engine::wasmtime::WasmtimeEngine;

use common::{echo_command, fmt_ns, load, median_ns, native_echo};

/// `(plugin file stem, language)`, the Rust reference first.
const PLUGINS: [(&str, &str); 6] = [
    ("conformance-rs", "Rust (SDK)"),
    ("thermostat-c", "C"),
    ("leds-cpp", "C++"),
    ("ratelimit-as", "AssemblyScript"),
    ("fwinfo-zig", "Zig"),
    ("hello-js", "JavaScript (QuickJS)"),
];

/// In smoke mode, modules above this are not compiled by wasmtime (a debug
/// build of Cranelift takes half a minute for the 1 MiB QuickJS plugin).
const SMOKE_WASMTIME_MAX_BYTES: usize = 512 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full =
        args.iter().any(|a| a == "--bench") && std::env::var_os("RELAY_BENCH_SMOKE").is_none();
    let (samples, iters, loads) = if full { (15, 5_000, 7) } else { (3, 20, 1) };
    let cmd = echo_command();
    let native = median_ns(samples, iters, iters.min(1000), || {
        black_box(native_echo(black_box(&cmd)));
    });
    println!(
        "echo with a 1 KiB payload; native Rust function: {}",
        fmt_ns(native)
    );
    println!("| language | module | engine | cold load | echo call | call vs Rust plugin | call vs native |");
    println!("|---|---|---|---|---|---|---|");
    let mut rust_call = [0.0f64; 2];
    for (stem, language) in PLUGINS {
        let path = match relay_host::bundled::plugin(stem) {
            Ok(p) => p,
            Err(e) if !full => {
                println!("| {language} | (not built: {e}) | | | | | |");
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        let wasm = std::fs::read(&path).unwrap();
        for (i, (engine_name, engine)) in [
            (
                "wasmtime",
                Box::new(WasmtimeEngine::new().expect("wasmtime")) as Box<dyn Engine>,
            ),
            ("wasmi", Box::new(WasmiEngine::new())),
        ]
        .into_iter()
        .enumerate()
        {
            if !full && i == 0 && wasm.len() > SMOKE_WASMTIME_MAX_BYTES {
                println!(
                    "| {language} | {:.1} KiB | {engine_name} | (skipped in smoke mode) | | | |",
                    wasm.len() as f64 / 1024.0
                );
                continue;
            }
            // Cold: a fresh engine each time, no compile cache.
            let mut times: Vec<f64> = (0..loads)
                .map(|_| {
                    let fresh: Box<dyn Engine> = match i {
                        0 => Box::new(WasmtimeEngine::new().expect("wasmtime")),
                        _ => Box::new(WasmiEngine::new()),
                    };
                    let t = Instant::now();
                    black_box(load(&*fresh, &wasm));
                    t.elapsed().as_nanos() as f64
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let cold = times[times.len() / 2];
            let mut plugin = load(&*engine, &wasm);
            let out = plugin.handle(&cmd).expect("echo call");
            assert_eq!(
                out.result.as_ref().ok().and_then(|r| r.as_deref()),
                Some(&cmd.payload[..]),
                "{stem} on {engine_name}: echo must return its payload"
            );
            let call = median_ns(samples, iters, iters.min(1000), || {
                black_box(plugin.handle(black_box(&cmd)).expect("echo call"));
            });
            if stem == "conformance-rs" {
                rust_call[i] = call;
            }
            println!(
                "| {language} | {:.1} KiB | {engine_name} | {} | {} | {:.2}x | {:.1}x |",
                wasm.len() as f64 / 1024.0,
                fmt_ns(cold),
                fmt_ns(call),
                call / rust_call[i].max(1.0),
                call / native.max(1.0)
            );
        }
    }
}
