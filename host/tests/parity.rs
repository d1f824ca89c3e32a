//! One plugin artifact, the same outcome on wasmtime and wasmi at the edges
//! (`docs/engines.md`, "Budget model" and "Limits"):
//! - the fuel a call needs is the same number on both engines, down to the
//!   unit, for guest loops and for host calls (the metering lives in the
//!   module, not in the engine);
//! - the time budget ends a call on both, guest loops and host-call loops;
//! - every per-call limit gives the same code on both at limit-1, limit and
//!   limit+1;
//! - both engines accept and refuse the same modules, with the same words;
//! - memory and table growth: -1 past the declared maximum, a failed call
//!   past the plugin's cap.
//!
//! One configurable WAT guest does the work: its payload is an action byte
//! and a `u32` (little endian) saying how much.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use relay_core::engine::{Engine, EngineKind, Plugin, PluginError};
use relay_core::host_env::{FixedClock, HostEnv, Logger, MemKv};
use relay_core::limits::Limits;
use relay_core::plugin::{HandlerResult, Invocation, LogLevel, Role};

const ENGINES: [EngineKind; 2] = [EngineKind::Wasmtime, EngineKind::Wasmi];

/// What the guest does with `n`.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum Action {
    Reply = 0,
    ErrorMessage = 1,
    EventName = 2,
    EventPayload = 3,
    Events = 4,
    LogLines = 5,
    KvKey = 6,
    KvValue = 7,
    Spin = 8,
    NowMs = 9,
    Fill = 10,
    LogBytes = 11,
}

/// The guest. Memory: return area at 128, kv-set result at 160, describe's
/// answer at 64, a zeroed work area from 4096, the heap from 65536.
const GUEST: &str = r#"(module
  (import "relay:plugin/host@0.1.0" "log" (func $log (param i32 i32 i32)))
  (import "relay:plugin/host@0.1.0" "kv-set" (func $kv_set (param i32 i32 i32 i32 i32)))
  (import "relay:plugin/host@0.1.0" "now-ms" (func $now_ms (result i64)))
  (import "relay:plugin/host@0.1.0" "emit" (func $emit (param i32 i32 i32 i32)))
  (memory (export "memory") 3)
  (global $heap (mut i32) (i32.const 131072))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get 3) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "cabi_post_handle") (param i32) (global.set $heap (i32.const 131072)))
  (data (i32.const 16) "parity1.0.0run")
  (data (i32.const 48) "\00\01\02")
  (data (i32.const 64) "\10\00\00\00\06\00\00\00\16\00\00\00\05\00\00\00\60\00\00\00\01\00\00\00")
  (data (i32.const 96) "\1b\00\00\00\03\00\00\00\30\00\00\00\03\00\00\00\00\00\00\00\00\00\00\00")
  (func (export "describe") (result i32) (i32.const 64))
  (func $ok (param $ptr i32) (param $len i32) (param $some i32) (result i32)
    (i32.store8 (i32.const 128) (i32.const 0))
    (i32.store8 (i32.const 132) (local.get $some))
    (i32.store (i32.const 136) (local.get $ptr))
    (i32.store (i32.const 140) (local.get $len))
    (i32.const 128))
  (func (export "handle") (param $id i32) (param $id_len i32) (param $name i32) (param $name_len i32)
        (param $p i32) (param $p_len i32) (param $attempt i32) (param $role i32) (result i32)
    (local $n i32) (local $i i32)
    (local.set $n (i32.load (i32.add (local.get $p) (i32.const 1))))
    (block $none (block $fill (block $now (block $spin (block $kvv (block $kvk (block $lines
    (block $events (block $evp (block $evn (block $err (block $reply
      (br_table $reply $err $evn $evp $events $lines $kvk $kvv $spin $now $fill $lines
        (i32.load8_u (local.get $p))))
      (return (call $ok (i32.const 4096) (local.get $n) (i32.const 1))))
      (i32.store8 (i32.const 128) (i32.const 1))
      (i32.store8 (i32.const 132) (i32.const 3))
      (i32.store (i32.const 136) (i32.const 4096))
      (i32.store (i32.const 140) (local.get $n))
      (return (i32.const 128)))
      (call $emit (i32.const 4096) (local.get $n) (i32.const 4096) (i32.const 0))
      (br $none))
      (call $emit (i32.const 4096) (i32.const 1) (i32.const 4096) (local.get $n))
      (br $none))
      (block $out (loop $more
        (br_if $out (i32.ge_u (local.get $i) (local.get $n)))
        (call $emit (i32.const 4096) (i32.const 1) (i32.const 4096) (i32.const 0))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $more)))
      (br $none))
      ;; log lines: action 5 logs 1-byte lines, action 11 100-byte lines
      (block $out (loop $more
        (br_if $out (i32.ge_u (local.get $i) (local.get $n)))
        (call $log (i32.const 2) (i32.const 4096)
          (select (i32.const 100) (i32.const 1) (i32.eq (i32.load8_u (local.get $p)) (i32.const 11))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $more)))
      (br $none))
      (call $kv_set (i32.const 4096) (local.get $n) (i32.const 4096) (i32.const 1) (i32.const 160))
      (return (call $ok (i32.const 160) (i32.const 2) (i32.const 1))))
      (call $kv_set (i32.const 4096) (i32.const 1) (i32.const 4096) (local.get $n) (i32.const 160))
      (return (call $ok (i32.const 160) (i32.const 2) (i32.const 1))))
      (block $out (loop $more
        (br_if $out (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $more)))
      (br $none))
      (block $out (loop $more
        (br_if $out (i32.ge_u (local.get $i) (local.get $n)))
        (drop (call $now_ms))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $more)))
      (br $none))
      (memory.fill (i32.const 4096) (i32.const 0) (local.get $n)))
    (call $ok (i32.const 0) (i32.const 0) (i32.const 0))))"#;

fn guest() -> Vec<u8> {
    wat::parse_str(GUEST).unwrap_or_else(|e| panic!("bad guest: {e}"))
}

fn engine(kind: EngineKind) -> Box<dyn Engine> {
    relay_host::engine::build(kind).unwrap_or_else(|e| panic!("building {kind}: {e:#}"))
}

/// Counts the lines a plugin logs.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<usize>>);

impl Logger for Lines {
    fn log(&mut self, _plugin: &str, _level: LogLevel, _message: &str) {
        *self.0.lock().unwrap() += 1;
    }
}

fn load(
    engine: &dyn Engine,
    wasm: &[u8],
    limits: &Limits,
    lines: &Lines,
) -> Result<Box<dyn Plugin>, PluginError> {
    engine.load(wasm, limits, &mut |info| {
        HostEnv::new(
            info.name.clone(),
            Box::new(MemKv::default()),
            Box::new(FixedClock(1_700_000_000_000)),
            Box::new(lines.clone()),
            limits,
        )
    })
}

fn run(plugin: &mut dyn Plugin, action: Action, n: u32) -> Result<HandlerResult, PluginError> {
    let mut payload = vec![action as u8];
    payload.extend(n.to_le_bytes());
    let cmd = Invocation {
        id: "c-1".into(),
        name: "run".into(),
        payload,
        attempt: 1,
        role: Role::Admin,
    };
    plugin.handle(&cmd).map(|o| o.result)
}

/// Loads the guest with `limits` on `kind` and runs one action.
fn once(
    kind: EngineKind,
    limits: &Limits,
    action: Action,
    n: u32,
) -> (Result<HandlerResult, PluginError>, usize) {
    let lines = Lines::default();
    let mut plugin = load(&*engine(kind), &guest(), limits, &lines)
        .unwrap_or_else(|e| panic!("{kind}: load: {e}"));
    let out = run(&mut *plugin, action, n);
    let logged = *lines.0.lock().unwrap();
    (out, logged)
}

/// The least `fuel_per_call` with which `action(n)` succeeds on `kind`.
fn least_fuel(kind: EngineKind, action: Action, n: u32) -> u64 {
    let ok = |fuel: u64| {
        let limits = Limits {
            fuel_per_call: fuel,
            ..Limits::default()
        };
        match once(kind, &limits, action, n).0 {
            Ok(_) => true,
            Err(PluginError::OutOfFuel) => false,
            Err(e) => panic!("{kind} {action:?}({n}) with {fuel} fuel: {e}"),
        }
    };
    let (mut lo, mut hi) = (0u64, 1u64 << 26);
    assert!(
        ok(hi),
        "{action:?}({n}) needs more than {hi} fuel on {kind}"
    );
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

#[test]
fn a_call_needs_the_same_fuel_on_both_engines() {
    let workloads = [
        (Action::Spin, 1_000),
        (Action::NowMs, 300),
        (Action::LogBytes, 40),
        (Action::Fill, 60_000),
        (Action::KvValue, 1_000),
    ];
    for (action, n) in workloads {
        let wasmtime = least_fuel(EngineKind::Wasmtime, action, n);
        let limits = |fuel| Limits {
            fuel_per_call: fuel,
            ..Limits::default()
        };
        let at = once(EngineKind::Wasmi, &limits(wasmtime), action, n).0;
        let below = once(EngineKind::Wasmi, &limits(wasmtime - 1), action, n).0;
        println!("{action:?}({n}): {wasmtime} fuel on both engines");
        assert!(
            at.is_ok(),
            "{action:?}({n}) on wasmi with {wasmtime}: {at:?}"
        );
        assert_eq!(
            below,
            Err(PluginError::OutOfFuel),
            "{action:?}({n}) on wasmi with {} fuel",
            wasmtime - 1
        );
    }
    // Host calls cost what they move: 40 100-byte log lines cost more than
    // 40 one-byte lines, by the same count on both engines.
    let short = least_fuel(EngineKind::Wasmi, Action::LogLines, 40);
    let long = least_fuel(EngineKind::Wasmi, Action::LogBytes, 40);
    assert_eq!(long - short, 40 * (100 / 8), "{short} {long}");
}

#[test]
fn the_time_budget_ends_a_call_on_both_engines() {
    let limits = Limits {
        fuel_per_call: 1 << 50,
        time_budget_ms: 200,
        ..Limits::default()
    };
    for kind in ENGINES {
        for action in [Action::Spin, Action::NowMs] {
            let started = Instant::now();
            let (out, _) = once(kind, &limits, action, u32::MAX);
            let took = started.elapsed();
            println!("{kind} {action:?}: {out:?} after {took:?} (budget 200 ms)");
            assert_eq!(out, Err(PluginError::Timeout), "{kind} {action:?}");
        }
    }
}

/// What a call came to, as the host reports it.
fn class(out: &Result<HandlerResult, PluginError>) -> String {
    match out {
        Ok(Ok(reply)) => format!("succeeded {:?}", reply.as_ref().map(|r| r.len())),
        Ok(Err(e)) => format!("handler error {:?}", e.kind),
        Err(e) => format!("failed {}", e.code()),
    }
}

#[test]
fn every_limit_gives_the_same_code_on_both_engines_around_it() {
    let limits = Limits {
        max_reply_bytes: 1_000,
        max_events_per_call: 4,
        max_log_lines_per_call: 8,
        max_log_bytes_per_call: 1_000,
        max_kv_key_bytes: 16,
        max_kv_value_bytes: 32,
        ..Limits::default()
    };
    let table = [
        (Action::Reply, limits.max_reply_bytes),
        (Action::ErrorMessage, limits.max_reply_bytes),
        (
            Action::EventName,
            relay_core::engine::output::MAX_EVENT_NAME_BYTES,
        ),
        (Action::EventPayload, limits.max_reply_bytes),
        (Action::Events, limits.max_events_per_call),
        (Action::LogLines, limits.max_log_lines_per_call),
        (Action::KvKey, limits.max_kv_key_bytes),
        (Action::KvValue, limits.max_kv_value_bytes),
    ];
    println!("| limit | n | wasmtime | wasmi | lines logged |");
    for (action, limit) in table {
        for n in [limit - 1, limit, limit + 1] {
            let n = n as u32;
            let (a, lines_a) = once(EngineKind::Wasmtime, &limits, action, n);
            let (b, lines_b) = once(EngineKind::Wasmi, &limits, action, n);
            println!(
                "| {action:?} | {n} | {} | {} | {lines_a} / {lines_b} |",
                class(&a),
                class(&b)
            );
            assert_eq!(a, b, "{action:?}({n})");
            assert_eq!(lines_a, lines_b, "{action:?}({n}): lines logged");
            // Within the limit it works; one past it does not.
            let within = n as usize <= limit;
            let ok = match (&a, action) {
                (Ok(Ok(Some(r))), Action::KvKey | Action::KvValue) => r[0] == 0,
                (Ok(_), Action::LogLines) => lines_a == n.min(limit as u32 + 1) as usize,
                (Ok(Ok(_)), _) => true,
                (Ok(Err(_)), Action::ErrorMessage) => true,
                _ => false,
            };
            if action as u8 != Action::LogLines as u8 {
                assert_eq!(ok, within, "{action:?}({n}): {a:?}");
            } else {
                // Logging past the budget never fails the call: the excess is
                // dropped after one notice line.
                assert!(ok, "{action:?}({n}): {a:?}, {lines_a} lines");
            }
        }
    }
}

fn load_error(kind: EngineKind, wasm: &[u8]) -> Option<String> {
    load(&*engine(kind), wasm, &Limits::default(), &Lines::default())
        .err()
        .map(|e| e.to_string())
}

#[test]
fn both_engines_accept_and_refuse_the_same_modules_with_the_same_words() {
    let with = |extra: &str| {
        let text = GUEST.replacen(
            "(func (export \"describe\")",
            &format!("{extra}\n  (func (export \"describe\")"),
            1,
        );
        wat::parse_str(&text).unwrap_or_else(|e| panic!("{e}"))
    };
    let tiny: String = (0..9_000).map(|i| format!("(func $t{i})")).collect();
    let locals = |n: usize| format!("(func (local {}))", "i64 ".repeat(n));
    let mut cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("the guest", guest(), None),
        (
            "9,000 tiny functions",
            with(&tiny),
            Some("function bodies average"),
        ),
        (
            "30,000 locals",
            with(&locals(30_000)),
            Some("declares 30000 locals"),
        ),
        ("10,000 locals", with(&locals(10_000)), None),
        (
            "a start function calling log",
            with("(func $s (call $log (i32.const 2) (i32.const 16) (i32.const 1))) (start $s)"),
            Some("start function can call host import `log`"),
        ),
        (
            "a garbage component-type section",
            with("(@custom \"component-type:bad\" \"\\ff\\00\\13\")"),
            None,
        ),
    ];
    // describe listing 100,000 commands (zeroed records in a 50-page memory):
    // refused by count before anything else (wasmi before copying them).
    let many_commands = GUEST
        .replace("(memory (export \"memory\") 3)", "(memory (export \"memory\") 50)")
        .replace(
            "(func (export \"describe\") (result i32) (i32.const 64))",
            "(data (i32.const 200000) \"\\10\\00\\00\\00\\06\\00\\00\\00\\16\\00\\00\\00\\05\\00\\00\\00\\00\\00\\04\\00\\a0\\86\\01\\00\")
             (func (export \"describe\") (result i32) (i32.const 200000))",
        );
    cases.push((
        "describe listing 100,000 commands",
        wat::parse_str(&many_commands).unwrap_or_else(|e| panic!("{e}")),
        Some("100000 commands, the limit is 256"),
    ));
    for (what, wasm, expected) in cases {
        let a = load_error(EngineKind::Wasmtime, &wasm);
        let b = load_error(EngineKind::Wasmi, &wasm);
        println!("{what}: {a:?}");
        assert_eq!(a, b, "{what}");
        match expected {
            None => assert_eq!(a, None, "{what}"),
            Some(words) => assert!(
                a.as_deref().is_some_and(|m| m.contains(words)),
                "{what}: {a:?}"
            ),
        }
    }
}

/// A guest that grows its memory (action 0) or its table (action 1) by `n`
/// and replies with what `grow` returned. Memory: 3 pages, at most 8;
/// table: 1 element, at most 4.
const GROW: &str = r#"(module
  (memory (export "memory") 3 8)
  (table 1 4 funcref)
  (global $heap (mut i32) (i32.const 131072))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get 3) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "cabi_post_handle") (param i32) (global.set $heap (i32.const 131072)))
  (data (i32.const 16) "parity1.0.0run")
  (data (i32.const 48) "\00\01\02")
  (data (i32.const 64) "\10\00\00\00\06\00\00\00\16\00\00\00\05\00\00\00\60\00\00\00\01\00\00\00")
  (data (i32.const 96) "\1b\00\00\00\03\00\00\00\30\00\00\00\03\00\00\00\00\00\00\00\00\00\00\00")
  (func (export "describe") (result i32) (i32.const 64))
  (func (export "handle") (param $id i32) (param $id_len i32) (param $name i32) (param $name_len i32)
        (param $p i32) (param $p_len i32) (param $attempt i32) (param $role i32) (result i32)
    (local $n i32)
    (local.set $n (i32.load (i32.add (local.get $p) (i32.const 1))))
    (i32.store (i32.const 4096)
      (if (result i32) (i32.load8_u (local.get $p))
        (then (table.grow (ref.null func) (local.get $n)))
        (else (memory.grow (local.get $n)))))
    (i32.store8 (i32.const 128) (i32.const 0))
    (i32.store8 (i32.const 132) (i32.const 1))
    (i32.store (i32.const 136) (i32.const 4096))
    (i32.store (i32.const 140) (i32.const 4))
    (i32.const 128)))"#;

/// Growth follows one rule on both engines (`relay_core::limits::growth`):
/// past the module's own maximum (or the index range) `grow` returns -1, as
/// plain wasm says; past the plugin's cap the call fails.
#[test]
fn growth_past_the_declared_maximum_returns_minus_one_and_past_the_cap_fails() {
    let limits = Limits {
        max_memory_bytes: 6 * 65_536,
        max_table_elements: 2,
        ..Limits::default()
    };
    let wasm = wat::parse_str(GROW).expect("grow guest");
    let returned = |v: i32| format!("succeeded {:?}", Some(v.to_le_bytes().to_vec()));
    let cases: [(u8, u32, String); 8] = [
        (0, 2, returned(3)),
        (0, 3, returned(3)),
        (0, 4, "memory limit".into()),
        (0, 6, returned(-1)),
        (0, u32::MAX, returned(-1)),
        (1, 1, returned(1)),
        (1, 2, "failed trap".into()),
        (1, 4, returned(-1)),
    ];
    for (what, n, expected) in cases {
        for kind in ENGINES {
            let mut plugin = load(&*engine(kind), &wasm, &limits, &Lines::default())
                .unwrap_or_else(|e| panic!("{kind}: load: {e}"));
            let mut payload = vec![what];
            payload.extend(n.to_le_bytes());
            let cmd = Invocation {
                id: "g-1".into(),
                name: "run".into(),
                payload,
                attempt: 1,
                role: Role::Admin,
            };
            let got = match plugin.handle(&cmd).map(|o| o.result) {
                Ok(Ok(reply)) => format!("succeeded {reply:?}"),
                Ok(Err(e)) => format!("handler error {:?}", e.kind),
                Err(PluginError::MemoryLimit) => "memory limit".into(),
                Err(e) => format!("failed {}", e.code()),
            };
            let what = ["memory", "table"][usize::from(what)];
            assert_eq!(got, expected, "{kind}: {what}.grow({n})");
        }
    }
}
