//! What the engine benchmarks (`engines`, `instantiate`) share: the timing
//! loop, the native baseline, the 1 KiB echo command, loading the bundled
//! echo plugin, and formatting.

use std::time::Instant;

use relay_core::engine::{Engine, Plugin};
use relay_core::host_env::{FixedClock, HostEnv, MemKv, TracingLogger};
use relay_core::limits::Limits;
use relay_core::plugin::{CallOutcome, Invocation, Role};

/// Median time of one operation in nanoseconds: `warmup` untimed runs, then
/// `samples` batches of `iters`.
pub fn median_ns(samples: usize, iters: usize, warmup: usize, mut op: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        op();
    }
    let mut per_op: Vec<f64> = (0..samples)
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

/// The baseline: what a handler linked into the host does for `echo`.
#[inline(never)]
pub fn native_echo(cmd: &Invocation) -> CallOutcome {
    CallOutcome {
        result: Ok(Some(cmd.payload.clone())),
        events: Vec::new(),
    }
}

/// `echo` with a 1 KiB msgpack payload (bin16 header + 1,024 bytes).
pub fn echo_command() -> Invocation {
    let mut payload = vec![0xc5, 0x04, 0x00];
    payload.extend((0..1024u32).map(|i| (i % 251) as u8));
    Invocation {
        id: "bench-1".into(),
        name: "echo".into(),
        payload,
        attempt: 1,
        role: Role::Admin,
    }
}

/// Loads `wasm` under default limits with an in-memory env.
pub fn load(engine: &dyn Engine, wasm: &[u8]) -> Box<dyn Plugin> {
    let limits = Limits::default();
    engine
        .load(wasm, &limits, &mut |info| {
            HostEnv::new(
                &info.name,
                Box::new(MemKv::default()),
                Box::new(FixedClock(0)),
                Box::new(TracingLogger),
                &limits,
            )
        })
        .expect("the plugin loads")
}

/// The bundled echo plugin, where `cargo xtask build-plugins` puts it.
pub fn echo_artifact() -> Vec<u8> {
    let path = relay_host::bundled::plugin("echo").unwrap_or_else(|e| panic!("{e}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn fmt_ns(ns: f64) -> String {
    if ns.abs() >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns.abs() >= 1e3 {
        format!("{:.2} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}
