//! Unit tests of the wasmi engine on small WAT guests that follow the
//! canonical ABI (a bump allocator as `cabi_realloc`, a static return area),
//! plus the real echo plugin when it has been built. Cross-engine hostile
//! fixtures live in `host/tests/hostile.rs`; these pin wasmi's own pieces.

extern crate std;

use alloc::{boxed::Box, format, string::String, sync::Arc, vec, vec::Vec};
use std::sync::Mutex;

use super::{InstancePolicy, ValidatedModules, WasmiConfig, WasmiEngine};
use crate::engine::{Engine, Plugin, PluginError};
use crate::host_env::{FixedClock, HostEnv, Logger, MemKv};
use crate::limits::Limits;
use crate::plugin::{CommandSpec, ErrorKind, Event, HandlerError, Invocation, LogLevel, Role};

/// Imports, memory, allocator, `describe` (plugin "echo" 1.0.0, command
/// "echo" for every role) and `$reply(tag, a, b, c)`, which fills the
/// return area at 128: `(0, 1, ptr, len)` = ok(some), `(0, 0, ..)` = ok(none),
/// `(1, kind, ptr, len)` = err. Scratch: kv-get area at 144, kv-set at 160,
/// free bytes from 256, heap from 1024 (reset by `cabi_post_handle`).
const PRELUDE: &str = r#"
  (import "relay:plugin/host@0.1.0" "log" (func $log (param i32 i32 i32)))
  (import "relay:plugin/host@0.1.0" "kv-get" (func $kv_get (param i32 i32 i32)))
  (import "relay:plugin/host@0.1.0" "kv-set" (func $kv_set (param i32 i32 i32 i32 i32)))
  (import "relay:plugin/host@0.1.0" "kv-delete" (func $kv_delete (param i32 i32)))
  (import "relay:plugin/host@0.1.0" "now-ms" (func $now_ms (result i64)))
  (import "relay:plugin/host@0.1.0" "emit" (func $emit (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (global $calls (mut i32) (i32.const 0))
  (func $realloc (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (local.set $end (i32.add (local.get $p) (local.get 3)))
    (block $fits
      (br_if $fits (i32.le_u (local.get $end) (i32.shl (memory.size) (i32.const 16))))
      (br_if $fits (i32.ne (i32.const -1) (memory.grow (i32.add (i32.const 1)
        (i32.shr_u (i32.sub (local.get $end) (i32.shl (memory.size) (i32.const 16))) (i32.const 16))))))
      unreachable)
    (global.set $heap (local.get $end))
    (local.get $p))
  (data (i32.const 16) "echo1.0.0")
  (data (i32.const 32) "\00\01\02")
  (data (i32.const 64) "\10\00\00\00\04\00\00\00\14\00\00\00\05\00\00\00\60\00\00\00\01\00\00\00")
  (data (i32.const 96) "\10\00\00\00\04\00\00\00\20\00\00\00\03\00\00\00\00\00\00\00\00\00\00\00")
  (func (export "describe") (result i32) (i32.const 64))
  (func (export "cabi_post_describe") (param i32))
  (func (export "cabi_post_handle") (param i32) (global.set $heap (i32.const 1024)))
  (func $reply (param i32 i32 i32 i32) (result i32)
    (i32.store8 (i32.const 128) (local.get 0))
    (i32.store8 (i32.const 132) (local.get 1))
    (i32.store (i32.const 136) (local.get 2))
    (i32.store (i32.const 140) (local.get 3))
    (i32.const 128))
"#;

/// A guest whose `handle` runs `body` (locals: $id $id_len $name $name_len
/// $p $p_len $attempt $role), with `extra` items beside it.
fn guest(extra: &str, body: &str) -> Vec<u8> {
    let text = format!(
        r#"(module {PRELUDE} {extra}
  (func (export "handle") (param $id i32) (param $id_len i32) (param $name i32) (param $name_len i32)
        (param $p i32) (param $p_len i32) (param $attempt i32) (param $role i32) (result i32)
    {body}))"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test WAT: {e}\n{text}"))
}

const ECHO: &str = "(call $reply (i32.const 0) (i32.const 1) (local.get $p) (local.get $p_len))";

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<(LogLevel, String)>>>);

impl Logger for Lines {
    fn log(&mut self, _plugin: &str, level: LogLevel, message: &str) {
        self.0.lock().unwrap().push((level, message.into()));
    }
}

fn load_on(
    engine: &WasmiEngine,
    wasm: &[u8],
    limits: &Limits,
    lines: &Lines,
) -> Result<Box<dyn Plugin>, PluginError> {
    let lines = lines.clone();
    engine.load(wasm, limits, &mut |info| {
        HostEnv::new(
            info.name.clone(),
            Box::new(MemKv::default()),
            Box::new(FixedClock(42)),
            Box::new(lines.clone()),
            limits,
        )
    })
}

fn load_with(wasm: &[u8], limits: &Limits) -> Result<Box<dyn Plugin>, PluginError> {
    load_on(&WasmiEngine::new(), wasm, limits, &Lines::default())
}

fn load(wasm: &[u8]) -> Box<dyn Plugin> {
    load_with(wasm, &Limits::default()).unwrap()
}

fn cmd(payload: &[u8]) -> Invocation {
    Invocation {
        id: "c-1".into(),
        name: "echo".into(),
        payload: payload.to_vec(),
        attempt: 1,
        role: Role::Primary,
    }
}

fn reply(p: &mut Box<dyn Plugin>, payload: &[u8]) -> Result<Option<Vec<u8>>, PluginError> {
    p.handle(&cmd(payload))
        .map(|o| o.result.expect("handler error"))
}

#[test]
fn echo_guest_loads_and_echoes() {
    let mut p = load(&guest("", ECHO));
    assert_eq!(p.info().name, "echo");
    assert_eq!(p.info().version, "1.0.0");
    let all = vec![Role::Admin, Role::Primary, Role::Secondary];
    assert_eq!(
        p.info().commands,
        vec![CommandSpec {
            name: "echo".into(),
            roles: all,
            budget_ms: None
        }]
    );
    assert_eq!(p.env().plugin(), "echo");
    for size in [0usize, 1, 1024, 100_000] {
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        assert_eq!(reply(&mut p, &payload), Ok(Some(payload)));
    }
}

#[test]
fn command_fields_are_lowered() {
    // Replies with the id, and with the role and attempt in the error kind.
    let body = r#"
      (if (i32.eq (local.get $attempt) (i32.const 3))
        (then (return (call $reply (i32.const 1) (local.get $role) (local.get $name) (local.get $name_len)))))
      (call $reply (i32.const 0) (i32.const 1) (local.get $id) (local.get $id_len))"#;
    let mut p = load(&guest("", body));
    assert_eq!(reply(&mut p, b""), Ok(Some(b"c-1".to_vec())));
    let mut c = cmd(b"");
    c.attempt = 3;
    c.role = Role::Secondary;
    let err = HandlerError {
        kind: ErrorKind::OutOfBounds,
        message: "echo".into(),
    };
    assert_eq!(p.handle(&c).unwrap().result, Err(err));
}

#[test]
fn host_imports_work() {
    // log(info, name); kv-set(name, payload); emit("echo", now-ms); reply kv-get(name).
    let body = r#"
      (call $log (i32.const 2) (local.get $name) (local.get $name_len))
      (call $kv_set (local.get $name) (local.get $name_len) (local.get $p) (local.get $p_len) (i32.const 160))
      (if (i32.load8_u (i32.const 160))
        (then (return (call $reply (i32.const 1) (i32.load8_u (i32.const 161)) (i32.const 16) (i32.const 4)))))
      (i64.store (i32.const 256) (call $now_ms))
      (call $emit (i32.const 16) (i32.const 4) (i32.const 256) (i32.const 8))
      (call $kv_get (local.get $name) (local.get $name_len) (i32.const 144))
      (if (result i32) (i32.load8_u (i32.const 144))
        (then (call $reply (i32.const 0) (i32.const 1) (i32.load (i32.const 148)) (i32.load (i32.const 152))))
        (else (call $reply (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))))"#;
    let lines = Lines::default();
    let limits = Limits {
        max_kv_value_bytes: 8,
        ..Limits::default()
    };
    let mut p = load_on(&WasmiEngine::new(), &guest("", body), &limits, &lines).unwrap();
    let out = p.handle(&cmd(b"value")).unwrap();
    assert_eq!(out.result, Ok(Some(b"value".to_vec())));
    assert_eq!(
        out.events,
        vec![Event {
            name: "echo".into(),
            payload: 42u64.to_le_bytes().to_vec()
        }]
    );
    assert_eq!(p.env().kv_get("echo"), Some(b"value".to_vec()));
    assert_eq!(
        lines.0.lock().unwrap().as_slice(),
        &[(LogLevel::Info, String::from("echo"))]
    );
    // kv-set's error comes back as the guest's value (kind 0 = too-large).
    let out = p.handle(&cmd(b"way too long")).unwrap();
    assert_eq!(
        out.result,
        Err(HandlerError {
            kind: ErrorKind::Transient,
            message: "echo".into()
        })
    );
}

#[test]
fn kv_delete_and_missing_key() {
    let body = r#"
      (call $kv_delete (local.get $name) (local.get $name_len))
      (call $kv_get (local.get $name) (local.get $name_len) (i32.const 144))
      (call $reply (i32.const 0) (i32.load8_u (i32.const 144)) (i32.const 0) (i32.const 0))"#;
    let mut p = load(&guest("", body));
    p.env_mut().kv_set("echo", b"x").unwrap();
    p.env_mut().kv_set("other", b"y").unwrap();
    assert_eq!(reply(&mut p, b""), Ok(None));
    assert_eq!(p.env().kv_get("echo"), None);
    assert_eq!(p.env().kv_get("other"), Some(b"y".to_vec()));
}

#[test]
fn out_of_fuel_then_recovers() {
    let body = r#"
      (if (i32.eqz (local.get $p_len)) (then (loop $l (br $l))))
      (call $reply (i32.const 0) (i32.const 1) (local.get $p) (local.get $p_len))"#;
    let limits = Limits {
        fuel_per_call: 100_000,
        ..Limits::default()
    };
    let mut p = load_with(&guest("", body), &limits).unwrap();
    for _ in 0..3 {
        assert_eq!(reply(&mut p, b""), Err(PluginError::OutOfFuel));
        assert_eq!(reply(&mut p, b"ok"), Ok(Some(b"ok".to_vec())));
    }
}

#[test]
fn host_work_on_guest_bytes_costs_fuel() {
    // 100 `log` calls of `len` bytes (zeros are valid UTF-8).
    let body = |len: u32| {
        format!(
            "(local $i i32) (loop $l (call $log (i32.const 0) (i32.const 0) (i32.const {len}))
               (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))
             (call $reply (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))"
        )
    };
    let limits = Limits {
        fuel_per_call: 100_000,
        ..Limits::default()
    };
    let run = |len| {
        load_with(&guest("", &body(len)), &limits)
            .unwrap()
            .handle(&cmd(b""))
            .map(|o| o.result)
    };
    assert_eq!(run(8), Ok(Ok(None)));
    // 100 x 64 KiB = 800k fuel at 8 bytes per unit.
    assert_eq!(run(65_536), Err(PluginError::OutOfFuel));
    // Out of bounds stays an ABI fault, whatever the claimed length would cost.
    assert!(matches!(run(65_537), Err(PluginError::Abi(_))));
}

/// Guards against the dispatch stack growth of wasmi issue #2042 (ANCHORS):
/// a million guest loop iterations must run in bounded host stack. The
/// thread gets 1 MiB (a debug build needs a few hundred KiB just to load);
/// ~192 B leaked per instruction, as measured without `portable-dispatch`,
/// would need ~600 MB here and crash.
#[test]
fn million_iteration_loop() {
    let body = r#"
      (local $i i32)
      (loop $l
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $i) (i32.const 1000000))))
      (i32.store (i32.const 256) (local.get $i))
      (call $reply (i32.const 0) (i32.const 1) (i32.const 256) (i32.const 4))"#;
    let wasm = guest("", body);
    let run = move || {
        let mut p = load(&wasm);
        reply(&mut p, b"")
    };
    let out = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(run)
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(out, Ok(Some(1_000_000u32.to_le_bytes().to_vec())));
}

#[test]
fn memory_grow_past_cap_is_memory_limit() {
    let body = "(drop (memory.grow (i32.const 1000))) (call $reply (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))";
    let limits = Limits {
        max_memory_bytes: 4 * 65_536,
        ..Limits::default()
    };
    let mut p = load_with(&guest("", body), &limits).unwrap();
    assert_eq!(reply(&mut p, b""), Err(PluginError::MemoryLimit));
    // Growth within the cap works.
    let body = "(drop (memory.grow (i32.const 3))) (call $reply (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))";
    let mut p = load_with(&guest("", body), &limits).unwrap();
    assert_eq!(reply(&mut p, b""), Ok(None));
    // Host-driven allocation (lowering a large payload) hits the same cap.
    let mut p = load_with(&guest("", ECHO), &limits).unwrap();
    assert_eq!(
        reply(&mut p, &vec![0; 5 * 65_536]),
        Err(PluginError::MemoryLimit)
    );
    assert_eq!(reply(&mut p, b"x"), Ok(Some(b"x".to_vec())));
}

#[test]
fn table_grow_past_cap_is_trap() {
    let extra = "(table $t 1 funcref)";
    let body = "(drop (table.grow $t (ref.null func) (i32.const 100))) (call $reply (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))";
    let limits = Limits {
        max_table_elements: 10,
        ..Limits::default()
    };
    let mut p = load_with(&guest(extra, body), &limits).unwrap();
    assert!(matches!(reply(&mut p, b""), Err(PluginError::Trap(_))));
}

#[test]
fn recursion_is_stack_overflow() {
    let extra =
        "(func $down (param i32) (result i32) (call $down (i32.add (local.get 0) (i32.const 1))))";
    let body = "(drop (call $down (i32.const 0))) (call $reply (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))";
    let mut p = load(&guest(extra, body));
    assert_eq!(reply(&mut p, b""), Err(PluginError::StackOverflow));
    // Each frame with many locals exhausts the value stack instead of the depth.
    let locals =
        "(local i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64)".repeat(8);
    let extra =
        format!("(func $down (param i32) (result i32) {locals} (call $down (local.get 0)))");
    let mut p = load(&guest(&extra, body));
    assert_eq!(reply(&mut p, b""), Err(PluginError::StackOverflow));
}

#[test]
fn traps_and_abi_violations() {
    type Check = fn(&PluginError) -> bool;
    let trap: Check = |e| matches!(e, PluginError::Trap(_));
    let abi: Check = |e| matches!(e, PluginError::Abi(_));
    let utf8: Check = |e| matches!(e, PluginError::Abi(m) if m.contains("UTF-8"));
    let cases: [(&str, Check); 8] = [
        ("unreachable", trap),
        ("(drop (i32.div_u (i32.const 1) (i32.const 0))) (i32.const 128)", trap),
        ("(drop (i32.load (i32.const -1))) (i32.const 128)", trap),
        // log: bad level, message out of bounds, message not UTF-8.
        ("(call $log (i32.const 9) (i32.const 16) (i32.const 4)) (i32.const 128)", abi),
        ("(call $log (i32.const 0) (i32.const 65530) (i32.const 7)) (i32.const 128)", abi),
        ("(i32.store (i32.const 256) (i32.const -1)) (call $log (i32.const 0) (i32.const 256) (i32.const 4)) (i32.const 128)", utf8),
        // kv-set with a value past the end; kv-get with a misaligned return area.
        ("(call $kv_set (i32.const 16) (i32.const 4) (i32.const -16) (i32.const 32) (i32.const 160)) (i32.const 128)", abi),
        ("(call $kv_get (i32.const 16) (i32.const 4) (i32.const 146)) (i32.const 128)", abi),
    ];
    for (body, expected) in cases {
        let mut p = load(&guest("", body));
        let err = reply(&mut p, b"").unwrap_err();
        assert!(expected(&err), "{body}: {err:?}");
        assert_eq!(err.code(), "trap");
        assert_eq!(
            reply(&mut p, b"").unwrap_err().code(),
            "trap",
            "fresh instance, same failure"
        );
    }
}

#[test]
fn bad_results_are_abi_or_too_large() {
    let limits = Limits {
        max_reply_bytes: 64,
        ..Limits::default()
    };
    let run = |body: &str| {
        load_with(&guest("", body), &limits)
            .unwrap()
            .handle(&cmd(b""))
            .map(|o| o.result)
    };
    let abi = |r: Result<_, PluginError>| matches!(r, Err(PluginError::Abi(_)));
    assert!(abi(run(
        "(call $reply (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 0))"
    )));
    assert!(abi(run(
        "(call $reply (i32.const 0) (i32.const 5) (i32.const 0) (i32.const 0))"
    )));
    assert!(abi(run(
        "(call $reply (i32.const 1) (i32.const 9) (i32.const 0) (i32.const 0))"
    )));
    assert!(abi(run(
        "(call $reply (i32.const 0) (i32.const 1) (i32.const 65535) (i32.const 2))"
    )));
    assert!(abi(run("(drop (call $reply (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))) (i32.const 130)")));
    assert!(abi(run("(i32.const 65530)")));
    // A 1 GiB claim is past the end of memory (Abi on both engines).
    assert!(abi(run(
        "(call $reply (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 0x40000000))"
    )));
    assert_eq!(
        run("(call $reply (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 65))"),
        Err(PluginError::ReplyTooLarge {
            size: 65,
            limit: 64
        })
    );
    assert_eq!(
        run("(call $reply (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 64))")
            .map(|r| r.map(|v| v.map(|v| v.len()))),
        Ok(Ok(Some(64)))
    );
}

#[test]
fn emit_limits() {
    let limits = Limits {
        max_reply_bytes: 8,
        max_events_per_call: 2,
        ..Limits::default()
    };
    let emit = |n: u32, len: u32| {
        let body = format!(
            "(local $i i32) (loop $l (call $emit (i32.const 16) (i32.const 4) (i32.const 256) (i32.const {len}))
               (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if $l (i32.lt_u (local.get $i) (i32.const {n}))))
             (call $reply (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))"
        );
        load_with(&guest("", &body), &limits)
            .unwrap()
            .handle(&cmd(b""))
    };
    assert_eq!(emit(2, 8).unwrap().events.len(), 2);
    assert_eq!(
        emit(3, 8),
        Err(PluginError::ReplyTooLarge { size: 3, limit: 2 })
    );
    assert_eq!(
        emit(1, 9),
        Err(PluginError::ReplyTooLarge { size: 9, limit: 8 })
    );
}

#[test]
fn fresh_instance_after_error_keeps_kv() {
    // Counts calls in a global; traps when the payload is "trap".
    let body = r#"
      (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
      (call $kv_set (i32.const 16) (i32.const 4) (i32.const 16) (i32.const 4) (i32.const 160))
      (if (i32.eq (local.get $p_len) (i32.const 4)) (then unreachable))
      (i32.store (i32.const 256) (global.get $calls))
      (call $reply (i32.const 0) (i32.const 1) (i32.const 256) (i32.const 4))"#;
    let wasm = guest("", body);
    let mut p = load(&wasm);
    let count = |n: u32| Ok(Some(n.to_le_bytes().to_vec()));
    assert_eq!(reply(&mut p, b""), count(1));
    assert_eq!(reply(&mut p, b""), count(2));
    assert!(matches!(reply(&mut p, b"trap"), Err(PluginError::Trap(_))));
    assert_eq!(
        reply(&mut p, b""),
        count(1),
        "a trapped instance must not be reused"
    );
    assert_eq!(
        p.env().kv_get("echo"),
        Some(b"echo".to_vec()),
        "kv survives the new instance"
    );

    let fresh = WasmiEngine::with_config(WasmiConfig {
        instance_policy: InstancePolicy::FreshPerCall,
        ..WasmiConfig::default()
    });
    let mut p = load_on(&fresh, &wasm, &Limits::default(), &Lines::default()).unwrap();
    assert_eq!(reply(&mut p, b""), count(1));
    assert_eq!(reply(&mut p, b""), count(1));
}

#[test]
fn describe_apart_serves_the_same_plugin() {
    // Counts calls in a global: the serving instance starts fresh.
    let body = r#"
      (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
      (i32.store (i32.const 256) (global.get $calls))
      (call $reply (i32.const 0) (i32.const 1) (i32.const 256) (i32.const 4))"#;
    let wasm = guest("", body);
    let apart = WasmiEngine::with_config(WasmiConfig {
        describe_apart: true,
        ..WasmiConfig::default()
    });
    let mut together = load(&wasm);
    let mut p = load_on(&apart, &wasm, &Limits::default(), &Lines::default()).unwrap();
    assert_eq!(p.info(), together.info());
    for n in 1u32..=3 {
        let count = Ok(Some(n.to_le_bytes().to_vec()));
        assert_eq!(reply(&mut p, b""), count);
        assert_eq!(reply(&mut together, b""), count);
    }
    // Failures map as they do without it.
    let limits = Limits::default();
    assert!(matches!(
        load_on(
            &apart,
            b"\0asm\x01\0\0\0garbage",
            &limits,
            &Lines::default()
        )
        .err(),
        Some(PluginError::InvalidModule(_))
    ));
    let text = String::from_utf8(echo_text()).unwrap().replace(
        r#"(func (export "describe") (result i32) (i32.const 64))"#,
        r#"(func (export "describe") (result i32) unreachable)"#,
    );
    let wasm = wat::parse_str(&text).unwrap();
    assert!(matches!(
        load_on(&apart, &wasm, &limits, &Lines::default()).err(),
        Some(PluginError::Instantiate(_))
    ));
}

#[test]
fn load_failures() {
    let limits = Limits::default();
    let echo = guest("", ECHO);
    let small = Limits {
        max_module_bytes: echo.len() - 1,
        ..Limits::default()
    };
    assert_eq!(
        load_with(&echo, &small).err(),
        Some(PluginError::ModuleTooLarge {
            size: echo.len(),
            limit: echo.len() - 1
        })
    );
    let few = Limits {
        max_functions: 2,
        ..Limits::default()
    };
    assert!(matches!(
        load_with(&echo, &few).err(),
        Some(PluginError::InvalidModule(_))
    ));
    let err = |wat: &str| load_with(&wat::parse_str(wat).unwrap(), &limits).err();
    let invalid = |e: Option<PluginError>| matches!(e, Some(PluginError::InvalidModule(_)));
    assert!(invalid(load_with(b"\0asm\x01\0\0\0garbage", &limits).err()));
    assert!(invalid(load_with(b"not wasm at all", &limits).err()));
    assert!(invalid(load_with(b"", &limits).err()));
    assert!(invalid(err("(module)")));
    assert!(invalid(err(
        r#"(module (memory (export "memory") 1) (func (export "describe") (result i32) i32.const 0))"#
    )));
    // An export with the wrong signature.
    let wrong = String::from_utf8(echo_text()).unwrap().replace(
        r#"(func (export "describe") (result i32)"#,
        r#"(func (export "describe") (result i64) (i64.const 0)) (func $old (result i32)"#,
    );
    assert!(invalid(err(&wrong)));
    // Imports: foreign module, unknown name, wrong signature.
    let with_import = |imp: &str| {
        String::from_utf8(echo_text())
            .unwrap()
            .replacen("(module", &format!("(module {imp}"), 1)
    };
    let link = |e: Option<PluginError>| matches!(e, Some(PluginError::Link(_)));
    assert!(link(err(&with_import(r#"(import "env" "foo" (func))"#))));
    assert!(link(err(&with_import(
        r#"(import "relay:plugin/host@0.1.0" "open-socket" (func))"#
    ))));
    assert!(link(err(&with_import(
        r#"(import "relay:plugin/host@0.1.0" "now-ms" (func $n2 (result i32)))"#
    ))));
    assert!(link(err(&with_import(
        r#"(import "relay:plugin/host@0.1.0" "log" (global i32))"#
    ))));
}

/// The echo guest's text (without parsing), to derive variants from.
fn echo_text() -> Vec<u8> {
    format!(
        r#"(module {PRELUDE}
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32) (i32.const 128)))"#
    )
    .into_bytes()
}

#[test]
fn start_and_describe_failures() {
    let limits = Limits {
        fuel_per_call: 100_000,
        ..Limits::default()
    };
    let load_extra = |extra: &str| load_with(&guest(extra, ECHO), &limits).err();
    let inst = |e: Option<PluginError>| matches!(e, Some(PluginError::Instantiate(_)));
    assert!(inst(load_extra(
        "(func $spin (loop $l (br $l))) (start $spin)"
    )));
    assert!(inst(load_extra("(func $boom unreachable) (start $boom)")));
    assert!(matches!(
        load_extra("(func $spin (loop $l (br $l))) (start $spin)"),
        Some(PluginError::Instantiate(m)) if m.contains("CPU budget")
    ));
    // A start function may not reach the host (wasmtime cannot serve it
    // before instantiation ends): refused at load, on both engines alike.
    assert!(matches!(
        load_extra("(func $hello (call $log (i32.const 2) (i32.const 16) (i32.const 4))) (start $hello)"),
        Some(PluginError::InvalidModule(m)) if m.contains("start function can call host import `log`")
    ));
    // A start function that only computes runs (once, before describe).
    assert!(load_extra("(func $init (global.set $calls (i32.const 7))) (start $init)").is_none());
    // describe trapping / looping / answering garbage -> Instantiate; a bad answer -> Describe.
    let text = String::from_utf8(echo_text()).unwrap();
    let describe = |new_body: &str| {
        let wat = text.replace(
            r#"(func (export "describe") (result i32) (i32.const 64))"#,
            &format!(r#"(func (export "describe") (result i32) {new_body})"#),
        );
        load_with(&wat::parse_str(&wat).unwrap(), &limits).err()
    };
    assert!(inst(describe("unreachable")));
    assert!(inst(describe("(loop $l (br $l)) (i32.const 64)")));
    assert!(
        matches!(describe("(i32.const 66)"), Some(PluginError::Instantiate(m)) if m.contains("canonical ABI"))
    );
    assert!(matches!(
        describe("(i32.store8 (i32.const 16) (i32.const 32)) (i32.const 64)"),
        Some(PluginError::Describe(_))
    ));
    // A role that is no role: named (wasmtime's lifting reports it as an
    // `Instantiate` error in its own words; the status code is the same).
    assert!(matches!(
        describe("(i32.store8 (i32.const 32) (i32.const 7)) (i32.const 64)"),
        Some(PluginError::Describe(m)) if m.contains("command 0: role 0 is not a role")
    ));
    // describe cannot write kv (detached env): kv-set answers quota-exceeded, so this guest
    // corrupts its name when the write fails, and loading reports Describe.
    assert!(matches!(
        describe(
            "(call $kv_set (i32.const 16) (i32.const 4) (i32.const 16) (i32.const 4) (i32.const 160))
             (if (i32.load8_u (i32.const 160)) (then (i32.store8 (i32.const 16) (i32.const 32)))) (i32.const 64)"
        ),
        Some(PluginError::Describe(_))
    ));
}

#[test]
fn no_imports_from_realloc_or_post_return() {
    // The shared hostile fixture: cabi_realloc calls kv-get, which would call
    // cabi_realloc... on the host stack if it were allowed.
    let text = include_str!("../../../../tests/fixtures/hostile/reentrant_realloc.wat");
    let mut p = load(&wat::parse_str(text).unwrap());
    assert_eq!(reply(&mut p, b"seed"), Ok(Some(b"seed".to_vec())));
    assert!(matches!(reply(&mut p, b""), Err(PluginError::Trap(m)) if m.contains("cabi_realloc")));
    assert_eq!(reply(&mut p, b"again"), Ok(Some(b"again".to_vec())));
    // A post-return that logs.
    let wat = String::from_utf8(echo_text()).unwrap().replace(
        r#"(func (export "cabi_post_handle") (param i32) (global.set $heap (i32.const 1024)))"#,
        r#"(func (export "cabi_post_handle") (param i32) (call $log (i32.const 2) (i32.const 16) (i32.const 4)))"#,
    );
    let mut p = load(&wat::parse_str(&wat).unwrap());
    assert!(matches!(reply(&mut p, b""), Err(PluginError::Trap(_))));
}

#[test]
fn a_thousand_traps_leave_the_plugin_usable() {
    let body = r#"(if (i32.eqz (local.get $p_len)) (then unreachable)) (call $reply (i32.const 0) (i32.const 1) (local.get $p) (local.get $p_len))"#;
    let mut p = load(&guest("", body));
    for _ in 0..1000 {
        assert!(matches!(reply(&mut p, b""), Err(PluginError::Trap(_))));
    }
    assert_eq!(reply(&mut p, b"ok"), Ok(Some(b"ok".to_vec())));
}

/// The real echo plugin (`plugins/echo`), when it has been built (`cargo
/// build --profile wasm --target wasm32-unknown-unknown -p relay-plugin-echo`):
/// no payload, no reply; any msgpack value comes back unchanged.
#[test]
fn echo_plugin_artifact() {
    let Some(wasm) = echo_artifact() else {
        std::eprintln!("echo plugin not built; skipping");
        return;
    };
    let mut p = load(&wasm);
    assert_eq!(p.info().name, "echo");
    assert_eq!(reply(&mut p, b""), Ok(None));
    for size in [0u32, 1024, 200_000] {
        // msgpack `bin 32` of `size` bytes.
        let mut payload = vec![0xc6];
        payload.extend(size.to_be_bytes());
        payload.extend((0..size).map(|i| (i * 7) as u8));
        assert_eq!(reply(&mut p, &payload), Ok(Some(payload)));
    }
}

fn echo_artifact() -> Option<Vec<u8>> {
    let rel = "wasm32-unknown-unknown/wasm/relay_plugin_echo.wasm";
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let dirs = [
        std::env::var("CARGO_TARGET_DIR").ok(),
        Some(format!("{root}/target")),
    ];
    dirs.into_iter()
        .flatten()
        .find_map(|d| std::fs::read(format!("{d}/{rel}")).ok())
}

#[test]
fn plugin_is_send() {
    fn send<T: Send>(_: &T) {}
    let p = load(&guest("", ECHO));
    send(&p);
}

/// Not a test but the measurement behind the default [`InstancePolicy`] and
/// the wasmi figures in `docs/engines.md` (no assertion on time):
/// `cargo test --release -p relay-core --lib engine::wasmi::tests::timing -- --ignored --nocapture`
/// (build the echo plugin first to time the real wit-bindgen artifact).
#[test]
#[ignore]
fn timing() {
    let mut guests = vec![("WAT echo guest (bump allocator)", guest("", ECHO))];
    guests.extend(
        echo_artifact().map(|wasm| ("plugins/echo (relay-guest SDK on wit-bindgen)", wasm)),
    );
    for (what, wasm) in guests {
        time_guest(what, &wasm);
    }
    // Any other artifacts: RELAY_TIMING_WASM=a.wasm:b.wasm (load figures only
    // are meaningful; their commands do not echo).
    for path in std::env::var("RELAY_TIMING_WASM")
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
    {
        time_guest(path, &std::fs::read(path).unwrap());
    }
}

#[cfg(test)]
fn time_guest(what: &str, wasm: &[u8]) {
    use std::hint::black_box;
    use std::time::Instant;

    /// Median nanoseconds per operation over `batches` batches of `per_batch`.
    fn median_ns(batches: usize, per_batch: usize, mut op: impl FnMut()) -> f64 {
        let mut samples: Vec<f64> = (0..batches)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..per_batch {
                    op();
                }
                t.elapsed().as_nanos() as f64 / per_batch as f64
            })
            .collect();
        samples.sort_by(|a, b| a.total_cmp(b));
        samples[samples.len() / 2]
    }

    // 1 KiB of msgpack: a `bin 16` of 1,021 bytes (SDK plugins check the payload).
    let mut payload = vec![0xc5, 0x03, 0xfd];
    payload.extend((0..1021).map(|i| i as u8));
    let command = cmd(&payload);
    std::println!("{what}, {} bytes", wasm.len());

    let load_ns = median_ns(21, 20, || drop(black_box(load(wasm))));
    std::println!(
        "cold load (new engine, validate, instantiate, describe): {:.1} us",
        load_ns / 1e3
    );
    // Where a cold load goes.
    let limits = Limits::default();
    let options = crate::engine::module::PrepareOptions {
        validate_bodies: true,
        host_exports: true,
    };
    let prepare_ns = median_ns(21, 20, || {
        drop(black_box(
            crate::engine::module::prepare(wasm, &limits, options).unwrap(),
        ))
    });
    let prepared = crate::engine::module::prepare(wasm, &limits, options).unwrap();
    let config = super::limits::engine_config(&limits);
    let engine_ns = median_ns(21, 20, || drop(black_box(wasmi::Engine::new(&config))));
    let engine = wasmi::Engine::new(&config);
    let module_ns = median_ns(21, 20, || {
        drop(black_box(
            wasmi::Module::new(&engine, &prepared.wasm).unwrap(),
        ))
    });
    let module = wasmi::Module::new(&engine, &prepared.wasm).unwrap();
    let mut linker = wasmi::Linker::new(&engine);
    super::imports::define(&mut linker).unwrap();
    let fresh = || {
        let env = HostEnv::detached(&limits);
        super::state::new_store(&engine, super::state::GuestState::new(env, &limits, None))
    };
    let instantiate_ns = median_ns(21, 20, || {
        let mut store = fresh();
        black_box(super::guest::instantiate(&linker, &module, &mut store, &limits).unwrap());
    });
    let mut store = fresh();
    let exports = super::guest::instantiate(&linker, &module, &mut store, &limits).unwrap();
    let describe_ns = median_ns(21, 20, || {
        black_box(super::guest::describe(&mut store, &exports, &limits).unwrap());
    });
    std::println!(
        "  of which: check + meter {:.1} us, engine {:.1} us, module (parse, lazy) {:.1} us, store + instantiate {:.1} us, describe {:.1} us (warm)",
        prepare_ns / 1e3,
        engine_ns / 1e3,
        module_ns / 1e3,
        instantiate_ns / 1e3,
        describe_ns / 1e3
    );

    let remembered = WasmiEngine::new().with_validated_modules(Arc::new(AllValidated));
    let lazy_ns = median_ns(21, 20, || {
        drop(black_box(
            load_on(&remembered, wasm, &limits, &Lines::default()).unwrap(),
        ))
    });
    std::println!(
        "load of a module validated before (ValidatedModules, lazy validation): {:.1} us",
        lazy_ns / 1e3
    );

    let native_ns = median_ns(21, 20_000, || {
        let c = black_box(&command);
        let _ = black_box(Ok::<_, ()>(Some(c.payload.clone())));
    });
    std::println!("native echo 1 KiB (clone the payload): {native_ns:.0} ns");

    for policy in [
        InstancePolicy::ReuseUntilError,
        InstancePolicy::FreshPerCall,
    ] {
        let engine = WasmiEngine::with_config(WasmiConfig {
            instance_policy: policy,
            ..WasmiConfig::default()
        });
        let mut p = load_on(&engine, wasm, &Limits::default(), &Lines::default()).unwrap();
        let echoed = matches!(p.handle(&command), Ok(o) if o.result == Ok(Some(payload.clone())));
        let per_batch = if policy == InstancePolicy::FreshPerCall {
            200
        } else {
            5_000
        };
        let ns = median_ns(21, per_batch, || {
            drop(black_box(p.handle(&command).unwrap()))
        });
        std::println!(
            "echo 1 KiB, {policy:?}: {:.2} us ({:.0}x native, +{:.2} us){}",
            ns / 1e3,
            ns / native_ns,
            (ns - native_ns) / 1e3,
            if echoed { "" } else { " (did not echo)" }
        );
    }
}

/// A record that claims every module was validated before.
struct AllValidated;

impl ValidatedModules for AllValidated {
    fn contains(&self, _wasm: &[u8]) -> bool {
        true
    }
    fn insert(&self, _wasm: &[u8]) {}
}

/// A record in memory that counts inserts.
#[derive(Default)]
struct Record(std::sync::Mutex<Vec<Vec<u8>>>);

impl ValidatedModules for Record {
    fn contains(&self, wasm: &[u8]) -> bool {
        self.0.lock().unwrap().iter().any(|m| m == wasm)
    }
    fn insert(&self, wasm: &[u8]) {
        self.0.lock().unwrap().push(wasm.to_vec());
    }
}

/// Contract point 2 holds for a module never seen: a body that does not
/// validate (`i32.add` on an empty stack, in a function `describe` never
/// reaches) fails the load. A module the record knows loads without body
/// validation, and the bad body then fails when first called, as a typed
/// error, not a panic. Good modules are recorded after their first load.
#[test]
fn validated_modules_skip_body_validation_only_for_known_bytes() {
    let invalid = guest(
        "(func $bad (result i32) i32.add)",
        &format!(
            "(if (i32.eq (local.get $attempt) (i32.const 9)) (then (drop (call $bad)))) {ECHO}"
        ),
    );
    let record = Arc::new(Record::default());
    let engine = WasmiEngine::new().with_validated_modules(record.clone());
    let lines = Lines::default();
    assert!(matches!(
        load_on(&engine, &invalid, &Limits::default(), &lines),
        Err(PluginError::InvalidModule(_))
    ));
    assert!(!record.contains(&invalid), "a failed load is not recorded");

    let good = guest("", ECHO);
    load_on(&engine, &good, &Limits::default(), &lines).unwrap();
    assert!(record.contains(&good), "a good module is recorded");
    let mut p = load_on(&engine, &good, &Limits::default(), &lines).unwrap();
    assert_eq!(
        p.handle(&cmd(b"\xc3")).unwrap().result,
        Ok(Some(b"\xc3".to_vec()))
    );

    // A record that vouches for the invalid module: it loads, echoes, and
    // the bad body is an error at its first call.
    let trusting = WasmiEngine::new().with_validated_modules(Arc::new(AllValidated));
    let mut p = load_on(&trusting, &invalid, &Limits::default(), &lines).unwrap();
    assert_eq!(
        p.handle(&cmd(b"\xc3")).unwrap().result,
        Ok(Some(b"\xc3".to_vec()))
    );
    let bad_call = Invocation {
        attempt: 9,
        ..cmd(b"\xc3")
    };
    assert!(
        p.handle(&bad_call).is_err(),
        "the invalid body fails when called"
    );
}
