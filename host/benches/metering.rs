//! Metering benchmark: what the fuel counter that the load step injects into
//! every plugin (`relay_core::engine::module`) costs, next to each engine's
//! own fuel and to no metering at all, on the same guest code in one run.
//!
//! Three loops, each called with 100,000 iterations through the engines' own
//! APIs (no plugin ABI around them): arithmetic (an xorshift), memory (load,
//! add, store over a 4 KiB window), and calls (a small function per
//! iteration). Reported per iteration and as a ratio to the same engine
//! without metering.
//!
//! Second table: how far past its time budget a call runs before it ends
//! with `Timeout`, on both engines through the `Engine` API, for a guest
//! loop and for a loop of `now-ms` host calls.
//!
//! Run: `cargo bench -p relay-host --bench metering`
//! Smoke mode (CI): `-- --test`, `RELAY_BENCH_SMOKE=1`, or without `--bench`.

#[allow(dead_code)] // the shared helpers serve several benches
mod common;

use std::hint::black_box;

use std::time::{Duration, Instant};

use relay_core::engine::module::{prepare, PrepareOptions};
use relay_core::engine::{EngineKind, PluginError};
use relay_core::host_env::{FixedClock, HostEnv, MemKv, MemLogger};
use relay_core::limits::Limits;
use relay_core::plugin::{Invocation, Role};

use common::median_ns;

/// A plugin-shaped module (so the load step accepts it) with three loops.
const LOOPS: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "describe") (result i32) (i32.const 0))
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32) (i32.const 0))
  (func (export "arith") (param $n i32) (result i32)
    (local $x i32) (local.set $x (i32.const 7))
    (loop $l
      (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 13))))
      (local.set $x (i32.xor (local.get $x) (i32.shr_u (local.get $x) (i32.const 17))))
      (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 5))))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
    (local.get $x))
  (func (export "memory_loop") (param $n i32) (result i32)
    (local $a i32)
    (loop $l
      (local.set $a (i32.and (i32.shl (local.get $n) (i32.const 2)) (i32.const 4095)))
      (i32.store (local.get $a) (i32.add (i32.load (local.get $a)) (local.get $n)))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
    (i32.load (i32.const 0)))
  (func $inc (param i32) (result i32) (i32.add (local.get 0) (i32.const 3)))
  (func (export "calls") (param $n i32) (result i32)
    (local $x i32)
    (loop $l
      (local.set $x (call $inc (local.get $x)))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
    (local.get $x)))"#;

const ITERATIONS: i32 = 100_000;
const FUNCS: [&str; 3] = ["arith", "memory_loop", "calls"];

#[derive(Clone, Copy, PartialEq)]
enum Metering {
    None,
    EngineFuel,
    Injected,
}

fn module_bytes(metering: Metering) -> Vec<u8> {
    let wasm = wat::parse_str(LOOPS).expect("bench WAT");
    if metering != Metering::Injected {
        return wasm;
    }
    let limits = Limits {
        fuel_per_call: u64::MAX / 4,
        ..Limits::default()
    };
    let options = PrepareOptions {
        validate_bodies: true,
        host_exports: false,
    };
    prepare(&wasm, &limits, options).expect("metering").wasm
}

/// Nanoseconds per loop iteration of each function on wasmtime.
fn wasmtime_ns(metering: Metering, samples: usize) -> Vec<f64> {
    let mut config = wasmtime::Config::new();
    config.consume_fuel(metering == Metering::EngineFuel);
    let engine = wasmtime::Engine::new(&config).expect("engine");
    let module = wasmtime::Module::new(&engine, module_bytes(metering)).expect("module");
    let mut store = wasmtime::Store::new(&engine, ());
    let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instance");
    FUNCS
        .iter()
        .map(|name| {
            let f = instance
                .get_typed_func::<i32, i32>(&mut store, name)
                .expect("export");
            median_ns(samples, 1, 1, || {
                if metering == Metering::EngineFuel {
                    store.set_fuel(u64::MAX / 4).expect("fuel");
                }
                black_box(f.call(&mut store, ITERATIONS).expect("call"));
            }) / f64::from(ITERATIONS)
        })
        .collect()
}

/// Nanoseconds per loop iteration of each function on wasmi.
fn wasmi_ns(metering: Metering, samples: usize) -> Vec<f64> {
    let mut config = wasmi::Config::default();
    config.consume_fuel(metering == Metering::EngineFuel);
    let engine = wasmi::Engine::new(&config);
    let module = wasmi::Module::new(&engine, module_bytes(metering)).expect("module");
    let mut store = wasmi::Store::new(&engine, ());
    let linker = wasmi::Linker::<()>::new(&engine);
    let instance = linker
        .instantiate_and_start(&mut store, &module)
        .expect("instance");
    FUNCS
        .iter()
        .map(|name| {
            let f = instance
                .get_typed_func::<i32, i32>(&store, name)
                .expect("export");
            median_ns(samples, 1, 1, || {
                if metering == Metering::EngineFuel {
                    store.set_fuel(u64::MAX / 4).expect("fuel");
                }
                black_box(f.call(&mut store, ITERATIONS).expect("call"));
            }) / f64::from(ITERATIONS)
        })
        .collect()
}

/// A plugin whose `handle` never ends: a bare loop, or a loop of `now-ms`
/// calls when the payload is non-empty.
const FOREVER: &str = r#"(module
  (import "relay:plugin/host@0.1.0" "now-ms" (func $now (result i64)))
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (data (i32.const 16) "spin1.0.0run")
  (data (i32.const 48) "\00\01\02")
  (data (i32.const 64) "\10\00\00\00\04\00\00\00\14\00\00\00\05\00\00\00\60\00\00\00\01\00\00\00")
  (data (i32.const 96) "\19\00\00\00\03\00\00\00\30\00\00\00\03\00\00\00\00\00\00\00\00\00\00\00")
  (func (export "describe") (result i32) (i32.const 64))
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (if (local.get 5) (then (loop $l (drop (call $now)) (br $l))))
    (loop $l (br $l))
    (i32.const 0)))"#;

const BUDGET_MS: u32 = 50;

/// How long past `BUDGET_MS` each call ran (median of `samples`).
fn overrun_ms(kind: EngineKind, host_calls: bool, samples: usize) -> f64 {
    let limits = Limits {
        fuel_per_call: u64::MAX / 4,
        time_budget_ms: BUDGET_MS,
        ..Limits::default()
    };
    let engine = relay_host::engine::build(kind).expect("engine");
    let wasm = wat::parse_str(FOREVER).expect("bench WAT");
    let mut plugin = engine
        .load(&wasm, &limits, &mut |info| {
            HostEnv::new(
                info.name.clone(),
                Box::new(MemKv::default()),
                Box::new(FixedClock(0)),
                Box::new(MemLogger::default()),
                &limits,
            )
        })
        .expect("load");
    let cmd = Invocation {
        id: "c".into(),
        name: "run".into(),
        payload: if host_calls { vec![1] } else { vec![] },
        attempt: 1,
        role: Role::Admin,
    };
    let mut runs: Vec<Duration> = (0..samples)
        .map(|_| {
            let started = Instant::now();
            let out = plugin.handle(&cmd);
            assert!(
                matches!(out, Err(PluginError::Timeout)),
                "{kind}: {:?}",
                out.err()
            );
            started.elapsed()
        })
        .collect();
    runs.sort();
    (runs[runs.len() / 2].as_secs_f64() * 1e3) - f64::from(BUDGET_MS)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = !args.iter().any(|a| a == "--bench")
        || args.iter().any(|a| a == "--test")
        || std::env::var_os("RELAY_BENCH_SMOKE").is_some();
    let samples = if smoke { 3 } else { 41 };
    println!("## Metering: ns per loop iteration ({ITERATIONS} iterations per call, median of {samples})");
    println!();
    println!("| engine | loop | none | engine's own fuel | injected (ours) | injected / none | injected / engine fuel |");
    println!("|--------|------|-----:|------------------:|----------------:|----:|----:|");
    type Runner = fn(Metering, usize) -> Vec<f64>;
    let engines: [(&str, Runner); 2] = [("wasmtime", wasmtime_ns), ("wasmi", wasmi_ns)];
    for (engine, run) in engines {
        // Interleave the three variants so drifts of the machine hit all alike.
        let (mut none, mut fuel, mut ours) = (vec![], vec![], vec![]);
        for _ in 0..3 {
            none.push(run(Metering::None, samples));
            fuel.push(run(Metering::EngineFuel, samples));
            ours.push(run(Metering::Injected, samples));
        }
        let best =
            |runs: &[Vec<f64>], i: usize| runs.iter().map(|r| r[i]).fold(f64::INFINITY, f64::min);
        for (i, name) in FUNCS.iter().enumerate() {
            let (n, f, o) = (best(&none, i), best(&fuel, i), best(&ours, i));
            println!(
                "| {engine} | {name} | {n:.2} | {f:.2} | {o:.2} | {:.2}x | {:.2}x |",
                o / n,
                o / f
            );
        }
    }

    println!();
    println!("## Time budget: ms past a {BUDGET_MS} ms budget before `Timeout` (median)");
    println!();
    println!("| engine | guest loop | `now-ms` loop |");
    println!("|--------|-----------:|--------------:|");
    let samples = if smoke { 1 } else { 9 };
    for kind in [EngineKind::Wasmtime, EngineKind::Wasmi] {
        println!(
            "| {kind} | {:+.2} | {:+.2} |",
            overrun_ms(kind, false, samples),
            overrun_ms(kind, true, samples)
        );
    }
}
