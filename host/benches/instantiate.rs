//! Which instantiation strategy the wasmtime engine uses, measured (issue 2):
//! an echo call with a 1 KiB payload under each `InstancePolicy` x allocator
//! combination, the cost of recovering from a trap (the one moment our
//! default instantiates), and plugin load time cold vs. from our compile
//! cache. Two guests: the SDK-built echo plugin (real allocator work in the
//! guest) and a minimal WAT echo (what is left is the host's share).
//!
//! Run: `cargo build --profile wasm --target wasm32-unknown-unknown -p relay-plugin-echo`
//! then `cargo bench -p relay-host --bench instantiate`.
//! Smoke mode (asserts nothing about time): `-- --test`, `RELAY_BENCH_SMOKE=1`,
//! or no `--bench` argument (as under `cargo test --all-targets`); it runs
//! every strategy on the WAT guest but only the default one on the SDK
//! plugin (each load compiles it with Cranelift, slow in a debug build).

mod common;

use std::hint::black_box;

use relay_core::limits::Limits;
use relay_core::plugin::Invocation;
use relay_host::engine::wasmtime::{InstancePolicy, PoolingConfig, WasmtimeConfig, WasmtimeEngine};

use common::{echo_artifact, echo_command, fmt_ns, load, median_ns, native_echo};

/// A canonical-ABI echo in WAT: describe, a bump `cabi_realloc` reset by
/// `cabi_post_handle`, `handle` returning the payload. Attempt 99 traps.
const WAT_ECHO: &str = r#"(module
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 1024))
  (data (i32.const 16) "echo")
  (data (i32.const 32) "0.1.0")
  (data (i32.const 48) "echo")
  (data (i32.const 64) "\00\01\02")
  (data (i32.const 80) "\30\00\00\00\04\00\00\00\40\00\00\00\03\00\00\00\00\00\00\00\00\00\00\00")
  (data (i32.const 112) "\10\00\00\00\04\00\00\00\20\00\00\00\05\00\00\00\50\00\00\00\01\00\00\00")
  (func (export "describe") (result i32) (i32.const 112))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.xor (i32.sub (local.get 2) (i32.const 1)) (i32.const -1))))
    (local.set $end (i32.add (local.get $p) (local.get 3)))
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then (if (i32.eq (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535)) (i32.const 16)))
                        (i32.const -1))
              (then unreachable))))
    (global.set $bump (local.get $end))
    (local.get $p))
  (func (export "cabi_post_handle") (param i32) (global.set $bump (i32.const 1024)))
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (if (i32.eq (local.get 6) (i32.const 99)) (then unreachable))
    (i32.store8 (i32.const 200) (i32.const 0))
    (i32.store8 (i32.const 204) (i32.const 1))
    (i32.store (i32.const 208) (local.get 4))
    (i32.store (i32.const 212) (local.get 5))
    (i32.const 200)))"#;

struct Settings {
    samples: usize,
    scale: usize,
}

/// Median time of one operation (iterations scaled down in smoke mode).
fn measure(s: &Settings, iters: usize, op: impl FnMut()) -> f64 {
    let iters = (iters / s.scale).max(1);
    median_ns(s.samples, iters, iters.min(200), op)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--test")
        || std::env::var_os("RELAY_BENCH_SMOKE").is_some()
        || !args.iter().any(|a| a == "--bench");
    let s = if smoke {
        Settings {
            samples: 3,
            scale: 100,
        }
    } else {
        Settings {
            samples: 15,
            scale: 1,
        }
    };
    let guests = [
        ("SDK echo plugin", echo_artifact()),
        ("WAT echo", wat::parse_str(WAT_ECHO).expect("WAT")),
    ];

    let cmd = echo_command();
    let trap = Invocation {
        attempt: 99,
        ..cmd.clone()
    };

    let native = measure(&s, 200_000, || {
        black_box(native_echo(black_box(&cmd)));
    });
    println!(
        "## wasmtime instantiation strategies: echo, 1 KiB payload ({})",
        if smoke { "smoke" } else { "full" }
    );
    println!();
    println!("native Rust echo (baseline): {}", fmt_ns(native));
    println!();
    println!("| guest | policy | allocator | per call | added over native |");
    println!("|-------|--------|-----------|----------|-------------------|");

    let pooling = PoolingConfig {
        slots: 16,
        max_memory_bytes: Limits::default().max_memory_bytes,
    };
    let strategies = [
        (InstancePolicy::ReuseUntilError, None),
        (InstancePolicy::ReuseUntilError, Some(pooling)),
        (InstancePolicy::FreshPerCall, None),
        (InstancePolicy::FreshPerCall, Some(pooling)),
    ];
    let mut recovery = Vec::new();
    for (guest, wasm) in &guests {
        for (policy, pool) in strategies {
            let default_strategy = policy == InstancePolicy::ReuseUntilError && pool.is_none();
            if smoke && *guest == "SDK echo plugin" && !default_strategy {
                continue;
            }
            let config = WasmtimeConfig {
                instance_policy: policy,
                pooling: pool,
                cache_dir: None,
            };
            let engine = WasmtimeEngine::with_config(config).expect("engine");
            let mut plugin = load(&engine, wasm);
            let out = plugin.handle(&cmd).expect("echo call");
            assert_eq!(
                out.result.as_ref().ok().and_then(|r| r.as_deref()),
                Some(&cmd.payload[..])
            );
            let iters = if policy == InstancePolicy::FreshPerCall {
                5_000
            } else {
                50_000
            };
            let t = measure(&s, iters, || {
                black_box(plugin.handle(black_box(&cmd)).expect("echo call"));
            });
            let allocator = if pool.is_some() {
                "pooling"
            } else {
                "on-demand"
            };
            println!(
                "| {guest} | {policy:?} | {allocator} | {} | {} |",
                fmt_ns(t),
                fmt_ns(t - native)
            );
            if *guest == "WAT echo" && policy == InstancePolicy::ReuseUntilError {
                // A trapping call followed by a good one: the good one instantiates.
                let t = measure(&s, 5_000, || {
                    assert!(plugin.handle(&trap).is_err());
                    black_box(plugin.handle(&cmd).expect("echo after trap"));
                });
                recovery.push((allocator, t));
            }
        }
    }
    println!();
    println!("| WAT echo: trap + next call (re-instantiation), ReuseUntilError | per pair |");
    println!("|------|------|");
    for (allocator, t) in recovery {
        println!("| {allocator} | {} |", fmt_ns(t));
    }

    let (_, echo) = &guests[0];
    let cold_engine = WasmtimeEngine::new().expect("engine");
    let cold = measure(&s, 20, || {
        black_box(load(&cold_engine, echo));
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let cached_engine = WasmtimeEngine::with_cache_dir(dir.path().join("cache")).expect("engine");
    load(&cached_engine, echo);
    let cached = measure(&s, 300, || {
        black_box(load(&cached_engine, echo));
    });
    let stats = cached_engine.cache_stats().expect("cache configured");
    assert!(stats.hits > 0 && stats.writes == 1, "{stats:?}");
    println!();
    println!("| load of the SDK echo plugin ({} B): check, componentize/compile or cache, instantiate, describe | time |", echo.len());
    println!("|------|------|");
    println!("| cold (componentize + Cranelift) | {} |", fmt_ns(cold));
    println!("| from our compile cache | {} |", fmt_ns(cached));
}
