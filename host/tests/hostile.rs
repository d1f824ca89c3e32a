//! Hostile plugins on BOTH engines (issue 2, `docs/engines.md` contract).
//!
//! Every fixture in `tests/fixtures/hostile/` is a WAT module that otherwise
//! follows the canonical ABI: it loads, echoes a non-empty payload, and
//! misbehaves on an empty one. Each must end in the exact typed
//! [`PluginError`] named in its header, identically on wasmtime and wasmi,
//! and leave the plugin usable: the echo call after the failure works (in a
//! fresh instance, contract point 13). Plus the load-time failures (invalid
//! bytes, oversized module, missing export, unexpected import, looping start
//! function) and a memory test: 1,000 hostile calls in a row leave the
//! process's resident memory flat.
//!
//! The engines are built through `relay_host::engine::build`, so the test
//! sees them exactly as the host does: as `dyn Engine`.

use std::mem::discriminant;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use relay_core::engine::{Engine, EngineKind, Plugin, PluginError};
use relay_core::host_env::{FixedClock, HostEnv, Logger, MemKv};
use relay_core::limits::Limits;
use relay_core::plugin::{Invocation, Role};

/// The tests run one at a time so the memory test measures only itself.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const ENGINES: [EngineKind; 2] = [EngineKind::Wasmtime, EngineKind::Wasmi];

/// The defaults, with a CPU budget small enough that the looping fixtures end
/// fast on an interpreter, and the reply/event/table limits the fixtures'
/// headers assume spelled out.
fn limits() -> Limits {
    let limits = Limits {
        fuel_per_call: 2_000_000,
        ..Limits::default()
    };
    assert_eq!(limits.max_reply_bytes, 262_144);
    assert_eq!(limits.max_events_per_call, 16);
    assert_eq!(limits.max_table_elements, 10_000);
    limits
}

fn engine(kind: EngineKind) -> Box<dyn Engine> {
    relay_host::engine::build(kind).unwrap_or_else(|e| panic!("building {kind}: {e:#}"))
}

fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests/fixtures/hostile",
        &format!("{name}.wat"),
    ]
    .iter()
    .collect();
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Log lines the plugins wrote, counted and not kept: the memory test
/// measures the host, not a test logger.
static LOGGED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct CountingLogger;

impl Logger for CountingLogger {
    fn log(&mut self, _plugin: &str, _level: relay_core::plugin::LogLevel, _message: &str) {
        LOGGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn load(engine: &dyn Engine, wasm: &[u8], limits: &Limits) -> Result<Box<dyn Plugin>, PluginError> {
    engine.load(wasm, limits, &mut |info| {
        HostEnv::new(
            info.name.clone(),
            Box::new(MemKv::default()),
            Box::new(FixedClock(1_700_000_000_000)),
            Box::new(CountingLogger),
            limits,
        )
    })
}

fn call(plugin: &mut dyn Plugin, payload: &[u8]) -> Result<Option<Vec<u8>>, PluginError> {
    let cmd = Invocation {
        id: "c-1".into(),
        name: "echo".into(),
        payload: payload.to_vec(),
        attempt: 1,
        role: Role::Admin,
    };
    plugin.handle(&cmd).map(|outcome| {
        outcome
            .result
            .expect("the fixtures never return a handler error")
    })
}

/// What a fixture's hostile call must end in.
type Expect = fn(&PluginError) -> bool;

/// Fixtures that load and fail when called, with their expected error.
const AT_CALL: [(&str, Expect); 15] = [
    ("infinite_loop", |e| *e == PluginError::OutOfFuel),
    ("memory_grow_bomb", |e| *e == PluginError::MemoryLimit),
    ("deep_recursion", |e| *e == PluginError::StackOverflow),
    ("unreachable", |e| matches!(e, PluginError::Trap(_))),
    ("huge_reply_1gib", |e| matches!(e, PluginError::Abi(_))),
    ("reply_over_limit", |e| {
        *e == PluginError::ReplyTooLarge {
            size: 262_145,
            limit: 262_144,
        }
    }),
    ("oob_log", |e| matches!(e, PluginError::Abi(_))),
    ("oob_kv_set", |e| matches!(e, PluginError::Abi(_))),
    ("oob_emit", |e| matches!(e, PluginError::Abi(_))),
    ("invalid_utf8_log", |e| matches!(e, PluginError::Abi(_))),
    ("bad_discriminant", |e| matches!(e, PluginError::Abi(_))),
    ("emit_flood", |e| {
        *e == PluginError::ReplyTooLarge {
            size: 17,
            limit: 16,
        }
    }),
    ("table_grow_bomb", |e| matches!(e, PluginError::Trap(_))),
    ("log_flood", |e| *e == PluginError::OutOfFuel),
    ("reentrant_realloc", |e| matches!(e, PluginError::Trap(_))),
];

/// Contract point 12 lets wasmtime's own lifting report some ABI faults as
/// traps; both carry the status code `trap`.
fn same_outcome(a: &PluginError, b: &PluginError) -> bool {
    let abi_or_trap = |e: &PluginError| matches!(e, PluginError::Abi(_) | PluginError::Trap(_));
    discriminant(a) == discriminant(b) || (abi_or_trap(a) && abi_or_trap(b) && a.code() == b.code())
}

#[test]
fn each_hostile_call_ends_in_its_typed_error_and_the_plugin_recovers() {
    let _serial = serial();
    let limits = limits();
    for (name, expected) in AT_CALL {
        let wasm = fixture(name);
        let mut seen = Vec::new();
        for kind in ENGINES {
            let engine = engine(kind);
            let mut plugin = load(&*engine, &wasm, &limits)
                .unwrap_or_else(|e| panic!("{name} on {kind}: load: {e}"));
            assert_eq!(plugin.info().name, "hostile");
            // Healthy before, failing on the hostile input, healthy right after, twice.
            assert_eq!(
                call(&mut *plugin, b"before"),
                Ok(Some(b"before".to_vec())),
                "{name} on {kind}"
            );
            for round in 0..2 {
                let err =
                    call(&mut *plugin, b"").expect_err(&format!("{name} on {kind} must fail"));
                assert!(
                    expected(&err),
                    "{name} on {kind} (round {round}): unexpected {err:?}"
                );
                assert_eq!(
                    call(&mut *plugin, b"after"),
                    Ok(Some(b"after".to_vec())),
                    "{name} on {kind}"
                );
                seen.push((kind, err));
            }
        }
        let (first_kind, first) = &seen[0];
        for (kind, err) in &seen[1..] {
            assert!(
                same_outcome(first, err),
                "{name}: {first_kind} gave {first:?}, {kind} gave {err:?}"
            );
        }
    }
}

#[test]
fn hostile_modules_fail_to_load_with_typed_errors() {
    let _serial = serial();
    let limits = limits();
    let too_big = vec![0xA5u8; limits.max_module_bytes * 16];
    let cases: [(&str, Vec<u8>, Expect); 6] = [
        (
            "invalid bytes",
            b"\0asm\x01\0\0\0\x01\xff\xff\xff\xff\x0f garbage".to_vec(),
            |e| matches!(e, PluginError::InvalidModule(_)),
        ),
        ("not wasm at all", b"#!/bin/sh\nrm -rf /\n".to_vec(), |e| {
            matches!(e, PluginError::InvalidModule(_))
        }),
        // 64 MiB of garbage: refused by size before any parsing would call it invalid.
        ("far over the size limit", too_big, |e| {
            *e == PluginError::ModuleTooLarge {
                size: 16 * 4 * 1024 * 1024,
                limit: 4 * 1024 * 1024,
            }
        }),
        (
            "missing export",
            fixture("missing_export"),
            |e| matches!(e, PluginError::InvalidModule(m) if m.contains("handle")),
        ),
        (
            "unexpected import",
            fixture("unexpected_import"),
            |e| matches!(e, PluginError::Link(m) if m.contains("foo")),
        ),
        ("looping start function", fixture("start_loops"), |e| {
            matches!(e, PluginError::Instantiate(_))
        }),
    ];
    for kind in ENGINES {
        let engine = engine(kind);
        for (what, wasm, expected) in &cases {
            let err = load(&*engine, wasm, &limits)
                .err()
                .unwrap_or_else(|| panic!("{what} on {kind} loaded"));
            assert!(expected(&err), "{what} on {kind}: unexpected {err:?}");
        }
        // The engine still loads a good plugin afterwards.
        let mut plugin = load(&*engine, &fixture("unreachable"), &limits).unwrap();
        assert_eq!(
            call(&mut *plugin, b"ok"),
            Ok(Some(b"ok".to_vec())),
            "{kind}"
        );
    }
}

/// Resident set size of this process, in bytes (Linux).
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm field 2");
    pages * 4096
}

/// Contract point 15. Every runtime fixture is loaded once per engine, then
/// called round-robin with its hostile input: a warm-up of 200 calls (which
/// sets the allocator's high-water marks, e.g. the 16 MiB memory bomb), then
/// 1,000 measured calls, each a failure that discards an instance.
#[test]
fn a_thousand_hostile_calls_leave_memory_flat() {
    let _serial = serial();
    /// Allowance for allocator noise; a leak of one guest memory page per
    /// call would already be 64 MiB.
    const SLACK: usize = 8 * 1024 * 1024;
    let limits = Limits {
        fuel_per_call: 200_000,
        ..limits()
    };
    for kind in ENGINES {
        let engine = engine(kind);
        let mut plugins: Vec<Box<dyn Plugin>> = AT_CALL
            .iter()
            .map(|(name, _)| {
                load(&*engine, &fixture(name), &limits).unwrap_or_else(|e| panic!("{name}: {e}"))
            })
            .collect();
        let mut hostile_calls = |n: usize| {
            for i in 0..n {
                let plugin = &mut plugins[i % AT_CALL.len()];
                assert!(
                    call(&mut **plugin, b"").is_err(),
                    "{kind}: {} succeeded",
                    AT_CALL[i % AT_CALL.len()].0
                );
            }
        };
        hostile_calls(200);
        let before = rss_bytes();
        let logged_before = LOGGED.load(std::sync::atomic::Ordering::Relaxed);
        hostile_calls(1_000);
        let after = rss_bytes();
        // The log flood reaches the logger with at most its per-call budget
        // (plus one notice) however long it loops.
        let floods = 1_000 / AT_CALL.len() + 1;
        let logged = LOGGED.load(std::sync::atomic::Ordering::Relaxed) - logged_before;
        assert!(
            logged <= floods * (limits.max_log_lines_per_call + 1),
            "{kind}: {logged} lines logged by {floods} flooding calls"
        );
        eprintln!(
            "{kind}: RSS {} KiB -> {} KiB over 1,000 hostile calls",
            before / 1024,
            after / 1024
        );
        assert!(
            after <= before + SLACK,
            "{kind}: RSS grew from {before} to {after} bytes"
        );
        for plugin in &mut plugins {
            assert_eq!(
                call(&mut **plugin, b"still here"),
                Ok(Some(b"still here".to_vec())),
                "{kind}"
            );
        }
    }
}
