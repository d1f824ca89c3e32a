//! The wasmtime engine against the engine contract (`docs/engines.md`),
//! point by point: the real echo artifact for the happy path, and small WAT
//! modules that follow the canonical ABI by hand for imports and every limit
//! (they also prove that modules without a `component-type` section load).

use std::sync::{Arc, Mutex};

use relay_core::engine::{Engine, Plugin, PluginError};
use relay_core::host_env::{FixedClock, HostEnv, Logger, MemKv};
use relay_core::limits::Limits;
use relay_core::plugin::{Event, Invocation, LogLevel, PluginInfo, Role};
use relay_host::engine::wasmtime::{InstancePolicy, PoolingConfig, WasmtimeConfig, WasmtimeEngine};

// ---------------------------------------------------------------- fixtures

/// The bundled echo artifact, where `cargo xtask build-plugins` puts it
/// (`$RELAY_PLUGIN_DIR/echo.wasm`, else `target/plugins/echo.wasm`).
fn echo_wasm() -> Vec<u8> {
    let path = relay_host::bundled::plugin("echo").unwrap_or_else(|e| panic!("{e}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Log lines shared between the test and the plugin's env.
#[derive(Clone, Default)]
struct SharedLog(Arc<Mutex<Vec<(LogLevel, String)>>>);

impl Logger for SharedLog {
    fn log(&mut self, _plugin: &str, level: LogLevel, message: &str) {
        self.0.lock().unwrap().push((level, message.into()));
    }
}

const NOW: u64 = 1_700_000_000_123;

fn load_with(
    engine: &WasmtimeEngine,
    wasm: &[u8],
    limits: &Limits,
    log: &SharedLog,
) -> Result<Box<dyn Plugin>, PluginError> {
    let log = log.clone();
    let env_limits = limits.clone();
    engine.load(wasm, limits, &mut |info: &PluginInfo| {
        HostEnv::new(
            &info.name,
            Box::new(MemKv::default()),
            Box::new(FixedClock(NOW)),
            Box::new(log.clone()),
            &env_limits,
        )
    })
}

fn load(wasm: &[u8], limits: &Limits) -> Result<Box<dyn Plugin>, PluginError> {
    let engine = WasmtimeEngine::new().expect("engine");
    load_with(&engine, wasm, limits, &SharedLog::default())
}

fn cmd(name: &str, payload: &[u8]) -> Invocation {
    Invocation {
        id: "c-1".into(),
        name: name.into(),
        payload: payload.to_vec(),
        attempt: 1,
        role: Role::Admin,
    }
}

/// A plugin written in WAT against the canonical ABI. `describe` reports
/// plugin `name`, version 0.1.0 and one command `run` (all roles, optional
/// budget). `handle` runs `body`, then echoes the payload. A bump allocator
/// serves `cabi_realloc` and is reset by `cabi_post_handle`.
struct Wat {
    name: &'static str,
    budget_ms: Option<u32>,
    imports: &'static str,
    body: String,
    extra: &'static str,
}

impl Wat {
    fn new(body: &str) -> Self {
        Wat {
            name: "wat",
            budget_ms: None,
            imports: "",
            body: body.into(),
            extra: "",
        }
    }

    fn bytes(&self) -> Vec<u8> {
        wat::parse_str(self.text()).expect("test WAT parses")
    }

    fn text(&self) -> String {
        let words = |w: &[u32]| w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let hex = |b: &[u8]| b.iter().map(|x| format!("\\{x:02x}")).collect::<String>();
        let mut spec = words(&[48, 3, 64, 3]);
        spec.extend_from_slice(&[u8::from(self.budget_ms.is_some()), 0, 0, 0]);
        spec.extend(words(&[self.budget_ms.unwrap_or(0)]));
        let info = words(&[16, self.name.len() as u32, 32, 5, 80, 1]);
        format!(
            r#"(module
  (import "relay:plugin/host@0.1.0" "log" (func $log (param i32 i32 i32)))
  (import "relay:plugin/host@0.1.0" "kv-get" (func $kv_get (param i32 i32 i32)))
  (import "relay:plugin/host@0.1.0" "kv-set" (func $kv_set (param i32 i32 i32 i32 i32)))
  (import "relay:plugin/host@0.1.0" "kv-delete" (func $kv_delete (param i32 i32)))
  (import "relay:plugin/host@0.1.0" "now-ms" (func $now (result i64)))
  (import "relay:plugin/host@0.1.0" "emit" (func $emit (param i32 i32 i32 i32)))
  {imports}
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 1024))
  (global $calls (mut i32) (i32.const 0))
  (data (i32.const 16) "{name}")
  (data (i32.const 32) "0.1.0")
  (data (i32.const 48) "run")
  (data (i32.const 64) "\00\01\02")
  (data (i32.const 80) "{spec}")
  (data (i32.const 112) "{info}")
  (data (i32.const 400) "hellokeyevnow\ff\fe")
  (func (export "describe") (result i32) (i32.const 112))
  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get $align) (i32.const 1)))
                           (i32.xor (i32.sub (local.get $align) (i32.const 1)) (i32.const -1))))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then (if (i32.eq (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535)) (i32.const 16)))
                        (i32.const -1))
              (then unreachable))))
    (global.set $bump (local.get $end))
    (local.get $p))
  (func (export "cabi_post_handle") (param i32) (global.set $bump (i32.const 1024)))
  (func (export "handle")
    (param $id i32) (param $id_len i32) (param $name i32) (param $name_len i32)
    (param $payload i32) (param $len i32) (param $attempt i32) (param $role i32) (result i32)
    {body}
    (i32.store8 (i32.const 200) (i32.const 0))
    (i32.store8 (i32.const 204) (i32.const 1))
    (i32.store (i32.const 208) (local.get $payload))
    (i32.store (i32.const 212) (local.get $len))
    (i32.const 200))
  {extra})"#,
            imports = self.imports,
            name = self.name,
            spec = hex(&spec),
            info = hex(&info),
            body = self.body,
            extra = self.extra,
        )
    }
}

fn wat_plugin(body: &str, limits: &Limits) -> Box<dyn Plugin> {
    load(&Wat::new(body).bytes(), limits).expect("WAT plugin loads")
}

fn call_err(plugin: &mut Box<dyn Plugin>, payload: &[u8]) -> PluginError {
    match plugin.handle(&cmd("run", payload)) {
        Ok(outcome) => panic!("expected an error, got {outcome:?}"),
        Err(e) => e,
    }
}

// ------------------------------------------------------------ happy path

#[test]
fn echo_describes_itself() {
    let plugin = load(&echo_wasm(), &Limits::default()).unwrap();
    let info = plugin.info();
    assert_eq!(info.name, "echo");
    assert_eq!(info.version, "0.1.0");
    assert_eq!(info.commands.len(), 1);
    assert_eq!(info.commands[0].name, "echo");
    assert_eq!(
        info.commands[0].roles,
        vec![Role::Admin, Role::Primary, Role::Secondary]
    );
    assert_eq!(
        plugin.env().plugin(),
        "echo",
        "env is built for the described name"
    );
}

#[test]
fn echo_round_trips_1_kib_many_times() {
    let mut plugin = load(&echo_wasm(), &Limits::default()).unwrap();
    let payload: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    for _ in 0..100 {
        let outcome = plugin.handle(&cmd("echo", &payload)).unwrap();
        assert_eq!(outcome.result, Ok(Some(payload.clone())));
        assert!(outcome.events.is_empty());
    }
    let outcome = plugin.handle(&cmd("echo", b"")).unwrap();
    assert_eq!(outcome.result, Ok(None), "echo: no payload, no reply");
}

#[test]
fn wat_module_without_component_type_section_loads() {
    let mut plugin = wat_plugin("", &Limits::default());
    assert_eq!(plugin.info().name, "wat");
    assert_eq!(
        plugin.handle(&cmd("run", b"hi")).unwrap().result,
        Ok(Some(b"hi".to_vec()))
    );
}

#[test]
fn host_imports_log_kv_now_and_emit() {
    // Empty payload: delete "key". Otherwise: log "hello", kv-set key=payload,
    // emit ev(payload), kv-set now=<now-ms>, reply with kv-get key.
    let body = r#"
    (if (i32.eqz (local.get $len))
      (then (call $kv_delete (i32.const 405) (i32.const 3))
            (i32.store8 (i32.const 200) (i32.const 0))
            (i32.store8 (i32.const 204) (i32.const 0))
            (return (i32.const 200))))
    (call $log (i32.const 2) (i32.const 400) (i32.const 5))
    (call $kv_set (i32.const 405) (i32.const 3) (local.get $payload) (local.get $len) (i32.const 300))
    (if (i32.load8_u (i32.const 300)) (then unreachable))
    (call $emit (i32.const 408) (i32.const 2) (local.get $payload) (local.get $len))
    (i64.store (i32.const 440) (call $now))
    (call $kv_set (i32.const 410) (i32.const 3) (i32.const 440) (i32.const 8) (i32.const 300))
    (if (i32.load8_u (i32.const 300)) (then unreachable))
    (call $kv_get (i32.const 405) (i32.const 3) (i32.const 320))
    (if (i32.eqz (i32.load8_u (i32.const 320))) (then unreachable))
    (i32.store8 (i32.const 200) (i32.const 0))
    (i32.store8 (i32.const 204) (i32.const 1))
    (i32.store (i32.const 208) (i32.load (i32.const 324)))
    (i32.store (i32.const 212) (i32.load (i32.const 328)))
    (return (i32.const 200))"#;
    let log = SharedLog::default();
    let engine = WasmtimeEngine::new().unwrap();
    let mut plugin = load_with(&engine, &Wat::new(body).bytes(), &Limits::default(), &log).unwrap();

    let outcome = plugin.handle(&cmd("run", b"value")).unwrap();
    assert_eq!(
        outcome.result,
        Ok(Some(b"value".to_vec())),
        "reply is what kv-get read back"
    );
    assert_eq!(
        outcome.events,
        vec![Event {
            name: "ev".into(),
            payload: b"value".to_vec()
        }]
    );
    assert_eq!(plugin.env().kv_get("key"), Some(b"value".to_vec()));
    assert_eq!(plugin.env().kv_get("now"), Some(NOW.to_le_bytes().to_vec()));
    assert_eq!(
        log.0.lock().unwrap().as_slice(),
        &[(LogLevel::Info, "hello".to_string())]
    );

    let outcome = plugin.handle(&cmd("run", b"")).unwrap();
    assert_eq!(outcome.result, Ok(None));
    assert!(outcome.events.is_empty(), "events belong to one call");
    assert_eq!(plugin.env().kv_get("key"), None);
}

#[test]
fn handler_errors_are_returned_not_raised() {
    // err(handler-error { kind: out-of-bounds, message: "hello" })
    let body = r#"
    (i32.store8 (i32.const 200) (i32.const 1))
    (i32.store8 (i32.const 204) (i32.const 2))
    (i32.store (i32.const 208) (i32.const 400))
    (i32.store (i32.const 212) (i32.const 5))
    (return (i32.const 200))"#;
    let mut plugin = wat_plugin(body, &Limits::default());
    let result = plugin.handle(&cmd("run", b"")).unwrap().result;
    let err = result.unwrap_err();
    assert_eq!(err.kind, relay_core::plugin::ErrorKind::OutOfBounds);
    assert_eq!(err.message, "hello");
}

// ------------------------------------------------------- loading failures

#[test]
fn oversized_module_is_refused_before_parsing() {
    let limits = Limits {
        max_module_bytes: 100,
        ..Limits::default()
    };
    let err = load(&echo_wasm(), &limits).err().unwrap();
    assert!(
        matches!(err, PluginError::ModuleTooLarge { limit: 100, .. }),
        "{err:?}"
    );
    // Even garbage: the size is checked first.
    let err = load(&[0xff; 101], &limits).err().unwrap();
    assert!(
        matches!(err, PluginError::ModuleTooLarge { size: 101, .. }),
        "{err:?}"
    );
}

#[test]
fn invalid_bytes_are_invalid_module() {
    for bytes in [&b""[..], b"not wasm at all", b"\0asm\x01\0\0\0\x01\xff"] {
        let err = load(bytes, &Limits::default()).err().unwrap();
        assert!(matches!(err, PluginError::InvalidModule(_)), "{err:?}");
    }
}

#[test]
fn missing_exports_are_invalid_module() {
    let full = Wat::new("").text();
    let cases = [
        ("(export \"describe\")", "describe"),
        ("(export \"cabi_realloc\")", "cabi_realloc"),
        ("(memory (export \"memory\") 1)", "memory"),
        ("(func (export \"handle\")", "handle"),
    ];
    for (needle, what) in cases {
        let replacement = match what {
            "memory" => "(memory 1)",
            "handle" => "(func (export \"not_handle\")",
            _ => "",
        };
        let text = full.replacen(needle, replacement, 1);
        let err = load(&wat::parse_str(&text).unwrap(), &Limits::default())
            .err()
            .unwrap();
        assert!(
            matches!(&err, PluginError::InvalidModule(m) if m.contains(what)),
            "{what}: {err:?}"
        );
    }
    // Right name, wrong signature.
    let text = full.replacen(
        "(func (export \"describe\") (result i32) (i32.const 112))",
        "(func (export \"describe\"))",
        1,
    );
    let err = load(&wat::parse_str(&text).unwrap(), &Limits::default())
        .err()
        .unwrap();
    assert!(
        matches!(&err, PluginError::InvalidModule(m) if m.contains("describe")),
        "{err:?}"
    );
}

#[test]
fn unexpected_or_mistyped_imports_are_link_errors() {
    let cases = [
        r#"(import "env" "abort" (func))"#,
        r#"(import "relay:plugin/host@0.1.0" "reboot" (func))"#,
        r#"(import "relay:plugin/host@0.2.0" "log" (func (param i32 i32 i32)))"#,
        r#"(import "relay:plugin/host@0.1.0" "now-ms" (func $now2 (result i32)))"#,
        r#"(import "relay:plugin/host@0.1.0" "log" (global i32))"#,
        r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
    ];
    for import in cases {
        let wat = Wat {
            imports: import,
            ..Wat::new("")
        };
        let err = load(&wat.bytes(), &Limits::default()).err().unwrap();
        assert!(matches!(err, PluginError::Link(_)), "{import}: {err:?}");
    }
}

#[test]
fn a_component_instead_of_a_module_is_refused() {
    let err = load(b"\0asm\x0d\0\x01\0", &Limits::default())
        .err()
        .unwrap();
    assert!(matches!(err, PluginError::InvalidModule(_)), "{err:?}");
}

#[test]
fn too_many_functions_is_invalid_module() {
    let limits = Limits {
        max_functions: 3,
        ..Limits::default()
    };
    let err = load(&Wat::new("").bytes(), &limits).err().unwrap();
    assert!(
        matches!(&err, PluginError::InvalidModule(m) if m.contains("functions")),
        "{err:?}"
    );
}

#[test]
fn looping_start_function_fails_instantiation() {
    let limits = Limits {
        fuel_per_call: 1_000_000,
        ..Limits::default()
    };
    let wat = Wat {
        extra: "(func $spin (loop (br 0))) (start $spin)",
        ..Wat::new("")
    };
    let err = load(&wat.bytes(), &limits).err().unwrap();
    assert!(
        matches!(&err, PluginError::Instantiate(m) if m.contains("fuel")),
        "{err:?}"
    );
}

#[test]
fn start_function_past_the_time_budget_fails_instantiation() {
    let limits = Limits {
        fuel_per_call: 1 << 62,
        time_budget_ms: 30,
        ..Limits::default()
    };
    let wat = Wat {
        extra: "(func $spin (loop (br 0))) (start $spin)",
        ..Wat::new("")
    };
    let err = load(&wat.bytes(), &limits).err().unwrap();
    assert!(
        matches!(&err, PluginError::Instantiate(m) if m.contains("time")),
        "{err:?}"
    );
}

#[test]
fn initial_memory_over_the_limit_fails_instantiation() {
    let limits = Limits {
        max_memory_bytes: 4 * 65536,
        ..Limits::default()
    };
    let text = Wat::new("").text().replacen(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 5)",
        1,
    );
    let err = load(&wat::parse_str(&text).unwrap(), &limits)
        .err()
        .unwrap();
    assert!(matches!(err, PluginError::Instantiate(_)), "{err:?}");
}

#[test]
fn invalid_describe_answers_are_describe_errors() {
    let err = load(
        &Wat {
            name: "bad name",
            ..Wat::new("")
        }
        .bytes(),
        &Limits::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, PluginError::Describe(_)), "{err:?}");
}

#[test]
fn describe_that_traps_or_lies_fails_instantiation() {
    let trapping = Wat::new("").text().replacen(
        "(result i32) (i32.const 112)",
        "(result i32) unreachable",
        1,
    );
    let err = load(&wat::parse_str(&trapping).unwrap(), &Limits::default())
        .err()
        .unwrap();
    assert!(matches!(err, PluginError::Instantiate(_)), "{err:?}");
    let out_of_bounds = Wat::new("").text().replacen(
        "(result i32) (i32.const 112)",
        "(result i32) (i32.const 65530)",
        1,
    );
    let err = load(&wat::parse_str(&out_of_bounds).unwrap(), &Limits::default())
        .err()
        .unwrap();
    assert!(matches!(err, PluginError::Instantiate(_)), "{err:?}");
}

#[test]
fn describe_runs_detached_kv_is_read_only() {
    // describe tries kv-set and traps unless the host refused it.
    let describe = r#"(func (export "describe") (result i32)
        (call $kv_set (i32.const 405) (i32.const 3) (i32.const 400) (i32.const 5) (i32.const 300))
        (if (i32.eqz (i32.load8_u (i32.const 300))) (then unreachable))
        (i32.const 112))"#;
    let text = Wat::new("").text().replacen(
        "(func (export \"describe\") (result i32) (i32.const 112))",
        describe,
        1,
    );
    let plugin = load(&wat::parse_str(&text).unwrap(), &Limits::default()).unwrap();
    assert_eq!(plugin.env().kv_get("key"), None);
}

// ---------------------------------------------------------- call limits

#[test]
fn fuel_runs_out() {
    let limits = Limits {
        fuel_per_call: 1_000_000,
        ..Limits::default()
    };
    let mut plugin = wat_plugin("(loop (br 0))", &limits);
    assert_eq!(call_err(&mut plugin, b""), PluginError::OutOfFuel);
    assert_eq!(PluginError::OutOfFuel.code(), "timed_out");
}

#[test]
fn fuel_is_refilled_for_every_call() {
    // Each call burns about 60% of the budget: fine only if it is reset.
    let body = r#"(local $i i32) (local.set $i (i32.const 50000))
        (loop (local.set $i (i32.sub (local.get $i) (i32.const 1))) (br_if 0 (local.get $i)))"#;
    let limits = Limits {
        fuel_per_call: 500_000,
        ..Limits::default()
    };
    let mut plugin = wat_plugin(body, &limits);
    for _ in 0..5 {
        plugin.handle(&cmd("run", b"x")).unwrap();
    }
}

#[test]
fn wall_time_budget_interrupts() {
    let limits = Limits {
        fuel_per_call: 1 << 62,
        time_budget_ms: 30,
        ..Limits::default()
    };
    let mut plugin = wat_plugin("(loop (br 0))", &limits);
    assert_eq!(call_err(&mut plugin, b""), PluginError::Timeout);
}

#[test]
fn command_budget_lowers_the_time_budget() {
    let limits = Limits {
        fuel_per_call: 1 << 62,
        time_budget_ms: 600_000,
        ..Limits::default()
    };
    let wat = Wat {
        budget_ms: Some(20),
        ..Wat::new("(loop (br 0))")
    };
    let mut plugin = load(&wat.bytes(), &limits).unwrap();
    assert_eq!(plugin.info().commands[0].budget_ms, Some(20));
    assert_eq!(call_err(&mut plugin, b""), PluginError::Timeout);
}

#[test]
fn memory_grow_past_the_limit_traps_with_memory_limit() {
    let limits = Limits {
        max_memory_bytes: 1 << 20,
        ..Limits::default()
    };
    let bomb = "(loop (br_if 0 (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))";
    let mut plugin = wat_plugin(bomb, &limits);
    assert_eq!(call_err(&mut plugin, b""), PluginError::MemoryLimit);
}

#[test]
fn module_declared_memory_maximum_still_returns_minus_one() {
    // Plain wasm semantics below our cap: grow fails with -1, no trap.
    let body = "(if (i32.ne (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))";
    let text = Wat::new(body).text().replacen(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 1 1)",
        1,
    );
    let mut plugin = load(&wat::parse_str(&text).unwrap(), &Limits::default()).unwrap();
    assert_eq!(
        plugin.handle(&cmd("run", b"ok")).unwrap().result,
        Ok(Some(b"ok".to_vec()))
    );
}

#[test]
fn table_growth_past_the_limit_traps() {
    let limits = Limits {
        max_table_elements: 100,
        ..Limits::default()
    };
    let wat = Wat {
        extra: "(table $t 1 funcref)",
        ..Wat::new("(drop (table.grow $t (ref.null func) (i32.const 1000)))")
    };
    let mut plugin = load(&wat.bytes(), &limits).unwrap();
    let err = call_err(&mut plugin, b"");
    assert!(
        matches!(&err, PluginError::Trap(m) if m.contains("table")),
        "{err:?}"
    );
}

#[test]
fn deep_recursion_is_a_stack_overflow_not_a_crash() {
    let wat = Wat {
        extra: "(func $down (param i32) (result i32) (i32.add (call $down (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))",
        ..Wat::new("(drop (call $down (i32.const 0)))")
    };
    for max_stack_bytes in [64 * 1024, 512 * 1024] {
        let limits = Limits {
            max_stack_bytes,
            ..Limits::default()
        };
        let mut plugin = load(&wat.bytes(), &limits).unwrap();
        assert_eq!(call_err(&mut plugin, b""), PluginError::StackOverflow);
    }
}

#[test]
fn unreachable_and_bad_memory_access_are_traps() {
    for body in [
        "unreachable",
        "(drop (i32.load (i32.const -4)))",
        "(drop (i32.div_u (i32.const 1) (local.get $len)))",
    ] {
        let mut plugin = wat_plugin(body, &Limits::default());
        let err = call_err(&mut plugin, b"");
        assert!(matches!(err, PluginError::Trap(_)), "{body}: {err:?}");
        assert_eq!(err.code(), "trap");
    }
}

#[test]
fn huge_reply_is_too_large() {
    let limits = Limits {
        max_reply_bytes: 1024,
        ..Limits::default()
    };
    // The echo artifact, echoing more than it may return.
    let mut echo = load(&echo_wasm(), &limits).unwrap();
    let err = echo.handle(&cmd("echo", &[7; 2048])).unwrap_err();
    assert_eq!(
        err,
        PluginError::ReplyTooLarge {
            size: 2048,
            limit: 1024
        }
    );
    assert_eq!(
        echo.handle(&cmd("echo", &[7; 1024])).unwrap().result,
        Ok(Some(vec![7; 1024]))
    );
    // A WAT guest claiming a 1 GiB reply: refused by bounds or by size, never copied.
    let claim = r#"(i32.store8 (i32.const 200) (i32.const 0)) (i32.store8 (i32.const 204) (i32.const 1))
        (i32.store (i32.const 208) (i32.const 0)) (i32.store (i32.const 212) (i32.const 0x40000000))
        (return (i32.const 200))"#;
    let mut plugin = wat_plugin(claim, &limits);
    let err = call_err(&mut plugin, b"");
    assert!(
        matches!(err, PluginError::Abi(_) | PluginError::ReplyTooLarge { .. }),
        "{err:?}"
    );
}

#[test]
fn emit_limits_are_enforced() {
    let limits = Limits {
        max_reply_bytes: 16,
        max_events_per_call: 2,
        ..Limits::default()
    };
    let emit_payload =
        "(call $emit (i32.const 408) (i32.const 2) (local.get $payload) (local.get $len))";
    let mut plugin = wat_plugin(emit_payload, &limits);
    let outcome = plugin.handle(&cmd("run", &[1; 16])).unwrap();
    assert_eq!(outcome.events.len(), 1);
    assert_eq!(
        call_err(&mut plugin, &[1; 17]),
        PluginError::ReplyTooLarge {
            size: 17,
            limit: 16
        }
    );

    let three = format!("{emit_payload} {emit_payload} {emit_payload}");
    let mut plugin = wat_plugin(&three, &limits);
    assert_eq!(
        call_err(&mut plugin, b"x"),
        PluginError::ReplyTooLarge { size: 3, limit: 2 }
    );
}

#[test]
fn abi_violations_in_host_calls_are_abi_errors() {
    let cases = [
        // out-of-bounds message pointer
        "(call $log (i32.const 2) (i32.const 0x7fff0000) (i32.const 10))",
        // invalid UTF-8 (bytes ff fe at 413)
        "(call $log (i32.const 2) (i32.const 413) (i32.const 2))",
        // invalid log-level discriminant
        "(call $log (i32.const 9) (i32.const 400) (i32.const 5))",
        // out-of-bounds kv-set value
        "(call $kv_set (i32.const 405) (i32.const 3) (i32.const 65000) (i32.const 1000) (i32.const 300))",
        // out-of-bounds return pointer for kv-get
        "(call $kv_get (i32.const 405) (i32.const 3) (i32.const 0x7ffffff0))",
    ];
    for body in cases {
        let mut plugin = wat_plugin(body, &Limits::default());
        let err = call_err(&mut plugin, b"");
        assert!(matches!(err, PluginError::Abi(_)), "{body}: {err:?}");
        assert_eq!(err.code(), "trap");
    }
}

#[test]
fn bad_result_discriminant_is_an_abi_error() {
    let body = "(i32.store8 (i32.const 200) (i32.const 7)) (return (i32.const 200))";
    let mut plugin = wat_plugin(body, &Limits::default());
    assert!(matches!(call_err(&mut plugin, b""), PluginError::Abi(_)));
}

// ------------------------------------------------------ fresh after error

#[test]
fn after_an_error_the_next_call_runs_in_a_fresh_instance() {
    // Counts calls in a global, replies with the count; attempt 99 traps;
    // every call also bumps a kv counter, which must survive the trap.
    let body = r#"
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.store (i32.const 240) (global.get $calls))
    (call $kv_set (i32.const 405) (i32.const 3) (i32.const 240) (i32.const 4) (i32.const 300))
    (if (i32.eq (local.get $attempt) (i32.const 99)) (then unreachable))
    (i32.store8 (i32.const 200) (i32.const 0))
    (i32.store8 (i32.const 204) (i32.const 1))
    (i32.store (i32.const 208) (i32.const 240))
    (i32.store (i32.const 212) (i32.const 4))
    (return (i32.const 200))"#;
    let mut plugin = wat_plugin(body, &Limits::default());
    let count =
        |p: &mut Box<dyn Plugin>| p.handle(&cmd("run", b"")).unwrap().result.unwrap().unwrap();
    assert_eq!(count(&mut plugin), 1u32.to_le_bytes());
    assert_eq!(
        count(&mut plugin),
        2u32.to_le_bytes(),
        "the instance is reused while calls succeed"
    );
    let trap = Invocation {
        attempt: 99,
        ..cmd("run", b"")
    };
    assert!(matches!(plugin.handle(&trap), Err(PluginError::Trap(_))));
    assert_eq!(
        plugin.env().kv_get("key"),
        Some(3u32.to_le_bytes().to_vec()),
        "kv outlives the instance"
    );
    assert_eq!(
        count(&mut plugin),
        1u32.to_le_bytes(),
        "fresh instance after the trap"
    );
}

// The "1,000 hostile calls leave memory flat" check lives in `tests/hostile.rs`:
// it measures the process's RSS, so it runs serialized there, on both engines,
// instead of beside this file's parallel tests (whose compiles move the RSS).

/// Counts calls in a global and replies with the count (4 bytes LE).
const COUNTER: &str = r#"
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.store (i32.const 240) (global.get $calls))
    (i32.store8 (i32.const 200) (i32.const 0))
    (i32.store8 (i32.const 204) (i32.const 1))
    (i32.store (i32.const 208) (i32.const 240))
    (i32.store (i32.const 212) (i32.const 4))
    (return (i32.const 200))"#;

#[test]
fn fresh_per_call_policy_keeps_no_guest_state() {
    let config = WasmtimeConfig {
        instance_policy: InstancePolicy::FreshPerCall,
        ..WasmtimeConfig::default()
    };
    let engine = WasmtimeEngine::with_config(config).unwrap();
    let mut plugin = load_with(
        &engine,
        &Wat::new(COUNTER).bytes(),
        &Limits::default(),
        &SharedLog::default(),
    )
    .unwrap();
    for _ in 0..3 {
        let reply = plugin
            .handle(&cmd("run", b""))
            .unwrap()
            .result
            .unwrap()
            .unwrap();
        assert_eq!(reply, 1u32.to_le_bytes());
    }
}

#[test]
fn pooling_allocator_runs_plugins_and_recovers_from_traps() {
    let pooling = PoolingConfig {
        slots: 4,
        max_memory_bytes: Limits::default().max_memory_bytes,
    };
    let engine = WasmtimeEngine::with_config(WasmtimeConfig {
        pooling: Some(pooling),
        ..WasmtimeConfig::default()
    })
    .unwrap();
    let log = SharedLog::default();
    let mut echo = load_with(&engine, &echo_wasm(), &Limits::default(), &log).unwrap();
    let body = "(if (i32.eq (local.get $attempt) (i32.const 99)) (then unreachable))";
    let mut wat = load_with(&engine, &Wat::new(body).bytes(), &Limits::default(), &log).unwrap();
    for _ in 0..20 {
        assert_eq!(
            echo.handle(&cmd("echo", b"x")).unwrap().result,
            Ok(Some(b"x".to_vec()))
        );
        let trap = Invocation {
            attempt: 99,
            ..cmd("run", b"y")
        };
        assert!(matches!(wat.handle(&trap), Err(PluginError::Trap(_))));
        assert_eq!(
            wat.handle(&cmd("run", b"y")).unwrap().result,
            Ok(Some(b"y".to_vec()))
        );
    }
}

#[test]
fn componentization_does_not_count_against_max_instances() {
    // The guest has one instance, one memory and no table of its own.
    let limits = Limits {
        max_instances: 1,
        ..Limits::default()
    };
    let mut plugin = load(&echo_wasm(), &limits).unwrap();
    assert_eq!(
        plugin.handle(&cmd("echo", b"x")).unwrap().result,
        Ok(Some(b"x".to_vec()))
    );
    let mut plugin = wat_plugin("", &limits);
    assert_eq!(
        plugin.handle(&cmd("run", b"x")).unwrap().result,
        Ok(Some(b"x".to_vec()))
    );
}

// ---------------------------------------------------------- compile cache

#[test]
fn second_load_hits_the_compile_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("wasmtime-cache");
    let wasm = echo_wasm();

    let first = WasmtimeEngine::with_cache_dir(&cache).unwrap();
    let mut plugin = load_with(&first, &wasm, &Limits::default(), &SharedLog::default()).unwrap();
    assert_eq!(
        plugin.handle(&cmd("echo", b"a")).unwrap().result,
        Ok(Some(b"a".to_vec()))
    );
    let stats = first.cache_stats().unwrap();
    assert_eq!((stats.hits, stats.misses, stats.writes), (0, 1, 1));

    // A new engine (as after a restart) loads our own compiled output.
    let second = WasmtimeEngine::with_cache_dir(&cache).unwrap();
    let mut plugin = load_with(&second, &wasm, &Limits::default(), &SharedLog::default()).unwrap();
    assert_eq!(
        plugin.handle(&cmd("echo", b"b")).unwrap().result,
        Ok(Some(b"b".to_vec()))
    );
    let stats = second.cache_stats().unwrap();
    assert_eq!(
        (stats.hits, stats.misses, stats.writes, stats.rejected),
        (1, 0, 0, 0)
    );

    // Another module is another entry.
    let other = Wat::new("").bytes();
    load_with(&second, &other, &Limits::default(), &SharedLog::default()).unwrap();
    assert_eq!(second.cache_stats().unwrap().misses, 1);
    let entries = std::fs::read_dir(&cache)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "cwasm")
        })
        .count();
    assert_eq!(entries, 2);

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "cache dir is host-private");
}

#[test]
fn a_shared_cache_dir_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = WasmtimeEngine::with_cache_dir(dir.path())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("not host-private"), "{err}");
}
