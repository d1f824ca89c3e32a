//! The acceptance rule and the metering rewrite, on small WAT modules. The
//! same fuel on both engines is proven end to end by `host/tests/parity.rs`.

use alloc::{format, string::String, vec::Vec};

use wasmparser::{Parser, Payload, Validator};

use super::*;

/// Memory, allocator, `describe` and `handle`: the least a plugin exports.
fn plugin(extra: &str) -> String {
    // Imports must come first in the text format.
    let (head, extra) = if extra.starts_with("(import") {
        (extra, "")
    } else {
        ("", extra)
    };
    format!(
        r#"(module {head}
  (import "relay:plugin/host@0.1.0" "log" (func $log (param i32 i32 i32)))
  (import "relay:plugin/host@0.1.0" "kv-get" (func $kv_get (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "describe") (result i32) (i32.const 64))
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (call $log (i32.const 2) (i32.const 0) (local.get 5))
    (call $kv_get (i32.const 0) (i32.const 4) (i32.const 128))
    (memory.fill (i32.const 0) (i32.const 0) (local.get 5))
    (drop (memory.grow (i32.const 0)))
    (i32.const 128))
  {extra})"#
    )
}

fn wasm(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap_or_else(|e| panic!("bad test WAT: {e}\n{text}"))
}

fn prepare_with(wasm: &[u8], host_exports: bool) -> Result<Prepared, PluginError> {
    prepare(
        wasm,
        &Limits::default(),
        PrepareOptions {
            validate_bodies: true,
            host_exports,
        },
    )
}

fn refusal(extra: &str) -> String {
    match prepare_with(&wasm(&plugin(extra)), false) {
        Err(e) => format!("{e}"),
        Ok(_) => String::from("accepted"),
    }
}

/// Names of the exports and whether a start section is present.
fn exports_and_start(wasm: &[u8]) -> (Vec<String>, bool) {
    let (mut names, mut start) = (Vec::new(), false);
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.unwrap() {
            Payload::ExportSection(r) => {
                names.extend(r.into_iter().map(|e| String::from(e.unwrap().name)))
            }
            Payload::StartSection { .. } => start = true,
            _ => {}
        }
    }
    (names, start)
}

#[test]
fn metered_modules_validate_and_keep_their_exports() {
    let text = plugin(
        r#"(global $g (mut i32) (i32.const 0))
           (table 1 funcref) (elem (i32.const 0) $helper)
           (func $helper (param i32) (result i32)
             (if (result i32) (local.get 0) (then (i32.const 1)) (else (i32.const 2))))
           (func $init (global.set $g (call_indirect (param i32) (result i32) (i32.const 0) (i32.const 0))))
           (start $init)
           (@custom "component-type:garbage" "\ff\ff")"#,
    );
    let original = wasm(&text);
    for host_exports in [false, true] {
        let prepared = prepare_with(&original, host_exports).unwrap();
        Validator::new_with_features(features())
            .validate_all(&prepared.wasm)
            .unwrap_or_else(|e| panic!("metered module invalid ({host_exports}): {e}"));
        let (names, start) = exports_and_start(&prepared.wasm);
        let mut expected = alloc::vec!["memory", "cabi_realloc", "describe", "handle"];
        if host_exports {
            expected.extend([FUEL_EXPORT, START_EXPORT]);
        }
        assert_eq!(names, expected);
        // wasmi calls the start wrapper itself; wasmtime instantiates with it.
        assert_eq!(start, !host_exports);
        // Imported 2 + defined 5: the meter's `exhausted` comes right after.
        assert_eq!(prepared.exhausted, 7);
        let text = String::from_utf8_lossy(&prepared.wasm);
        assert!(!text.contains("component-type"));
    }
}

#[test]
fn one_acceptance_rule_with_clear_words() {
    let many_locals = format!("(func (local {}))", "i32 ".repeat(10_001));
    let cases: &[(&str, &str)] = &[
        ("", "accepted"),
        (
            r#"(import "env" "abort" (func))"#,
            "unexpected import `env`.`abort`",
        ),
        (
            r#"(import "relay:plugin/host@0.1.0" "emit" (func (param i32)))"#,
            "import `relay:plugin/host@0.1.0`.`emit` must be a function (i32, i32, i32, i32) -> ()",
        ),
        (
            r#"(func (export "cabi_post_handle") (param i64))"#,
            "export `cabi_post_handle` must be a function (i32) -> ()",
        ),
        (
            r#"(func $f (local i64 i64) (local i32) (call $log (i32.const 0) (i32.const 0) (i32.const 0)))
               (table 1 funcref) (elem (i32.const 0) $f)
               (func $s (call_indirect (i32.const 0))) (start $s)"#,
            "the start function can call host import `log`",
        ),
        (&many_locals, "declares 10001 locals, the limit is 10000"),
        (
            "(type (func (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32
                                i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32)))",
            "33 parameters",
        ),
        (
            "(func (drop (i32x4.splat (i32.const 0))))",
            "SIMD",
        ),
        ("(memory 1)", "multiple memories"),
        (
            "(table 1 externref)",
            "reference type externref needs a garbage collector",
        ),
        (
            "(func (drop (ref.null extern)))",
            "needs a garbage collector",
        ),
        (
            "(func (block (result externref) (unreachable)) (drop))",
            "reference type externref needs a garbage collector",
        ),
        (
            "(func (loop (result externref) (unreachable)) (drop))",
            "reference type externref needs a garbage collector",
        ),
        (
            "(func (if (result externref) (i32.const 0) (then (unreachable)) (else (unreachable))) (drop))",
            "reference type externref needs a garbage collector",
        ),
    ];
    for (extra, expected) in cases {
        let got = refusal(extra);
        assert!(
            got.contains(expected),
            "{extra}\n  expected: {expected}\n  got: {got}"
        );
    }
    let missing = wasm(r#"(module (memory (export "memory") 1))"#);
    assert!(matches!(
        prepare_with(&missing, false),
        Err(PluginError::InvalidModule(m)) if m == "missing export `cabi_realloc`"
    ));
}

#[test]
fn size_function_count_and_tiny_functions() {
    let limits = Limits {
        max_module_bytes: 100,
        ..Limits::default()
    };
    let module = wasm(&plugin(""));
    let options = PrepareOptions {
        validate_bodies: true,
        host_exports: false,
    };
    assert!(matches!(
        prepare(&module, &limits, options),
        Err(PluginError::ModuleTooLarge { limit: 100, .. })
    ));
    let few = Limits {
        max_functions: 4,
        ..Limits::default()
    };
    assert!(matches!(
        prepare(&module, &few, options),
        Err(PluginError::InvalidModule(m)) if m == "5 functions, the limit is 4"
    ));
    // 2,000 one-instruction functions: what wasmi's lazy compilation must be
    // defended against, refused by both engines alike.
    let tiny: String = (0..2000).map(|_| "(func)").collect();
    let got = refusal(&tiny);
    assert!(got.contains("function bodies average"), "{got}");
}

#[test]
fn regions_charge_their_instructions() {
    use wasmparser::Operator as Op;
    let ops = [
        Op::I32Const { value: 1 },
        Op::Loop {
            blockty: wasmparser::BlockType::Empty,
        },
        Op::I32Const { value: 2 },
        Op::Drop,
        Op::Br { relative_depth: 0 },
        Op::End,
        Op::Drop,
        Op::End,
    ];
    // The body: const, loop and the drop after the loop; the loop's body:
    // const, drop, br.
    assert_eq!(
        super::meter::region_costs_for_tests(&ops),
        [3, 0, 3, 0, 0, 0, 0, 0]
    );
}

#[test]
fn fuel_is_checked_only_where_work_can_repeat() {
    // In the arms of the `if` the fuel is only counted; the
    // entry and the loop's header also check it (a loop or recursion is the
    // only way to run longer than the function's own length).
    let extra = r#"(func (param i32) (result i32)
        (if (local.get 0) (then (drop (i32.const 1))) (else (drop (i32.const 2))))
        (block (br_if 0 (local.get 0)) (drop (i32.const 3)))
        (loop (br_if 0 (local.tee 0 (i32.sub (local.get 0) (i32.const 1)))))
        (local.get 0))"#;
    let prepared = prepare_with(&wasm(&plugin(extra)), true).unwrap();
    let mut bodies = Vec::new();
    for payload in Parser::new(0).parse_all(&prepared.wasm) {
        if let Payload::CodeSectionEntry(body) = payload.unwrap() {
            bodies.push(body);
        }
    }
    // Defined functions: cabi_realloc, describe, handle, then this one.
    let mut checks = 0;
    let mut fuel_writes = 0;
    let mut reader = bodies[3].get_operators_reader().unwrap();
    while !reader.eof() {
        match reader.read().unwrap() {
            wasmparser::Operator::Call { function_index }
                if function_index == prepared.exhausted =>
            {
                checks += 1
            }
            wasmparser::Operator::GlobalSet { .. } => fuel_writes += 1,
            _ => {}
        }
    }
    assert_eq!(checks, 2, "the entry and the loop header");
    // The body (the code after the `if`, in and after the block, and after
    // the loop included), the two arms, the loop's body.
    assert_eq!(fuel_writes, 4, "regions counted");
}
