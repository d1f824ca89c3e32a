//! The desktop test harness, end to end: scenario parsing (good files and
//! bad ones with clear errors), the readable diff of a failing scenario, the
//! `relay test` CLI (exit codes) and the Rust `Harness` API, on the bundled
//! echo plugin (built by `cargo xtask build-plugins`).

use std::path::{Path, PathBuf};
use std::process::Command;

use relay_core::engine::EngineKind;
use relay_core::plugin::{ErrorKind, Role};
use relay_harness::{
    bundled_plugin, run_scenario, ExpectedOutcome, Harness, HarnessOptions, Outcome, Scenario, Step,
};
use serde_json::json;

const BOTH: [EngineKind; 2] = [EngineKind::Wasmtime, EngineKind::Wasmi];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/scenarios")
        .join(name)
}

fn echo() -> PathBuf {
    bundled_plugin("echo").unwrap_or_else(|e| panic!("{e}"))
}

fn write_temp(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write temp scenario");
    path
}

fn parse_error(name: &str, text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_temp(&dir, name, text);
    match Scenario::from_path(&path) {
        Ok(s) => panic!("{name} should not parse, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

// ---- parsing ----

#[test]
fn fixture_scenarios_parse() {
    let toml = Scenario::from_path(&fixture("echo_basic.toml")).expect("toml fixture");
    assert_eq!(toml.plugin.as_deref(), Some("echo"));
    assert_eq!(toml.now_ms, 1_700_000_123_000);
    assert_eq!(toml.steps.len(), 7);
    assert_eq!(toml.steps[5], Step::Restart);
    let Step::Call(second) = &toml.steps[1] else {
        panic!("step 2 is a call")
    };
    assert_eq!(
        (second.id.as_str(), second.role, second.attempt),
        ("custom-id", Role::Secondary, 3)
    );
    assert_eq!(
        second.expect.outcome,
        ExpectedOutcome::Reply(json!("hello"))
    );
    let Step::Call(raw) = &toml.steps[3] else {
        panic!("step 4 is a call")
    };
    assert_eq!(raw.payload, [0xc1], "$bytes sends raw bytes");

    let json = Scenario::from_path(&fixture("echo_basic.json")).expect("json fixture");
    assert_eq!(json.steps.len(), 2);
    let Step::Call(first) = &json.steps[0] else {
        panic!("step 1 is a call")
    };
    assert_eq!(first.id, "step-1");
    assert_eq!(
        first.expect.outcome,
        ExpectedOutcome::Reply(json!({"a": [1, 2, null]}))
    );
}

#[test]
fn toml_syntax_errors_name_line_and_column() {
    let e = parse_error(
        "bad.toml",
        "description = \"x\"\n[[step]]\ncommand = \"echo\n",
    );
    assert!(e.contains("bad.toml") && e.contains("line 3"), "{e}");
}

#[test]
fn unknown_fields_are_errors_with_their_location() {
    let e = parse_error(
        "typo.toml",
        "[[step]]\ncommand = \"echo\"\n[step.expect]\nrepyl = 1\n",
    );
    assert!(e.contains("line 4") && e.contains("repyl"), "{e}");
    let e = parse_error(
        "typo.json",
        r#"{"step": [{"command": "echo", "rol": "admin"}]}"#,
    );
    assert!(
        e.contains("JSON error") && e.contains("rol") && e.contains("column"),
        "{e}"
    );
}

#[test]
fn inconsistent_steps_name_the_step() {
    let two_outcomes = "[[step]]\ncommand = \"a\"\n[step.expect]\nno_reply = true\n\n\
                        [[step]]\ncommand = \"b\"\n[step.expect]\nreply = 1\nfailure = \"trap\"\n";
    let e = parse_error("two.toml", two_outcomes);
    assert!(e.contains("step 2") && e.contains("exactly one of"), "{e}");
    let e = parse_error("none.toml", "[[step]]\ncommand = \"a\"\n");
    assert!(e.contains("step 1") && e.contains("[step.expect]"), "{e}");
    let e = parse_error(
        "cmd.toml",
        "[[step]]\nrole = \"admin\"\n[step.expect]\nno_reply = true\n",
    );
    assert!(e.contains("needs `command"), "{e}");
    let e = parse_error(
        "restart.toml",
        "[[step]]\nrestart = true\nrole = \"admin\"\n",
    );
    assert!(e.contains("takes no other field (found `role`)"), "{e}");
    let e = parse_error(
        "role.toml",
        "[[step]]\ncommand = \"a\"\nrole = \"root\"\n[step.expect]\nno_reply = true\n",
    );
    assert!(e.contains("root") && e.contains("admin"), "{e}");
    let e = parse_error("hex.toml", "[[step]]\ncommand = \"a\"\npayload = { \"$bytes\" = \"xyz\" }\n[step.expect]\nno_reply = true\n");
    assert!(e.contains("step 1: payload") && e.contains("hex"), "{e}");
    let e = parse_error(
        "code.toml",
        "[[step]]\ncommand = \"a\"\n[step.expect]\nrejected = \"denied\"\n",
    );
    assert!(e.contains("unknown_command, not_permitted"), "{e}");
    let e = parse_error(
        "contains.toml",
        "[[step]]\ncommand = \"a\"\n[step.expect]\nno_reply = true\nerror_contains = \"x\"\n",
    );
    assert!(e.contains("error_contains"), "{e}");
    let e = parse_error("empty.toml", "description = \"nothing\"\n");
    assert!(e.contains("no [[step]]"), "{e}");
    let e = parse_error("scenario.yaml", "step: []\n");
    assert!(e.contains(".toml or .json"), "{e}");
    let e = Scenario::from_path(Path::new("/nonexistent/s.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/s.toml") && e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn error_spellings_accept_dash_and_underscore() {
    let s = Scenario::from_toml(
        "[[step]]\ncommand = \"a\"\n[step.expect]\nerror = \"out_of_bounds\"\n\
         [[step]]\ncommand = \"a\"\n[step.expect]\nfailure = \"timed-out\"\n",
        "inline",
    )
    .expect("parses");
    let outcomes: Vec<_> = s
        .steps
        .iter()
        .map(|s| match s {
            Step::Call(c) => c.expect.outcome.clone(),
            Step::Restart => panic!("no restart here"),
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ExpectedOutcome::Error(ErrorKind::OutOfBounds),
            ExpectedOutcome::Failure("timed_out")
        ]
    );
}

// ---- running scenarios ----

#[test]
fn echo_fixture_scenarios_pass_on_both_engines() {
    for name in ["echo_basic.toml", "echo_basic.json", "echo_limits.toml"] {
        let report = run_scenario(&echo(), &fixture(name), &BOTH).expect("scenario runs");
        assert!(report.passed(), "{report}");
        assert_eq!(report.runs.len(), 2);
        assert!(report.disagreements.is_empty());
        let text = report.to_string();
        assert!(
            text.contains("wasmtime  ok    step 1") && text.contains("wasmi     ok    step 1"),
            "{text}"
        );
        assert!(
            text.contains("engines agree") && text.contains("=> PASS"),
            "{text}"
        );
    }
}

#[test]
fn a_failing_scenario_prints_a_readable_diff() {
    let report = run_scenario(&echo(), &fixture("echo_wrong.toml"), &BOTH).expect("scenario runs");
    assert!(!report.passed());
    assert!(
        report.disagreements.is_empty(),
        "both engines fail the same way: {report}"
    );
    assert_eq!(report.failed_steps(), 6, "3 failing steps on each engine");
    let text = report.to_string();
    for expected in [
        "wasmtime  FAIL  step 1: echo [step-1, admin, attempt 1]",
        "reply (- expected, + actual):",
        "- {\"value\":42}",
        "+ {\"value\":41}",
        "outcome (- expected, + actual):",
        "- {\"error\":\"invalid-argument\"}",
        "+ {\"reply\":1}",
        "kv (- expected, + actual):",
        "- {\"count\":2}",
        "+ {}",
        "=> FAIL",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn wrong_plugin_name_fails_the_scenario() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_temp(
        &dir,
        "s.toml",
        "plugin = \"counter\"\n[[step]]\ncommand = \"echo\"\n[step.expect]\nno_reply = true\n",
    );
    let report = run_scenario(&echo(), &path, &[EngineKind::Wasmi]).expect("runs");
    assert!(!report.passed());
    let error = report.runs[0].load_error.clone().unwrap_or_default();
    assert!(
        error.contains("\"echo\"") && error.contains("\"counter\""),
        "{error}"
    );
}

// ---- the CLI ----

fn relay(args: &[&Path]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .arg("test")
        .args(args)
        .output()
        .expect("run relay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_passes_on_good_scenarios() {
    let echo = echo();
    let (code, out, err) = relay(&[
        &echo,
        &fixture("echo_basic.toml"),
        &fixture("echo_basic.json"),
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("wasmtime  ok") && out.contains("wasmi     ok"),
        "{out}"
    );
    assert!(out.contains("2 scenario(s): 2 passed, 0 failed"), "{out}");

    let (code, out, _) = relay(&[
        &echo,
        &fixture("echo_basic.toml"),
        Path::new("--engine"),
        Path::new("wasmi"),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("wasmtime"), "{out}");
}

#[test]
fn cli_fails_with_a_diff_on_mismatch() {
    let (code, out, err) = relay(&[&echo(), &fixture("echo_wrong.toml")]);
    assert_ne!(code, 0);
    assert!(
        out.contains("- {\"value\":42}") && out.contains("+ {\"value\":41}"),
        "{out}"
    );
    assert!(err.contains("1 of 1 scenario(s) failed"), "{err}");
}

#[test]
fn cli_runs_a_directory_and_reports_bad_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(fixture("echo_basic.toml"), dir.path().join("a.toml")).expect("copy");
    write_temp(
        &dir,
        "b.toml",
        "[[step]]\ncommand = \"echo\"\n[step.expect\n",
    );
    write_temp(&dir, "notes.txt", "not a scenario");
    let (code, out, _) = relay(&[&echo(), dir.path()]);
    assert_ne!(code, 0);
    assert!(out.contains("a.toml") && out.contains("=> PASS"), "{out}");
    assert!(out.contains("b.toml") && out.contains("line 3"), "{out}");
    assert!(out.contains("2 scenario(s): 1 passed, 1 failed"), "{out}");
}

#[test]
fn cli_errors_are_clear() {
    let (code, _, err) = relay(&[&echo(), Path::new("/nonexistent/scenario.toml")]);
    assert_ne!(code, 0);
    assert!(
        err.contains("/nonexistent/scenario.toml") && err.contains("does not exist"),
        "{err}"
    );

    let (code, _, err) = relay(&[
        Path::new("/nonexistent/plugin.wasm"),
        &fixture("echo_basic.toml"),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/plugin.wasm"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let junk = write_temp(&dir, "junk.wasm", "not wasm at all");
    let (code, _, err) = relay(&[&junk, &fixture("echo_basic.json")]);
    assert_ne!(code, 0);
    assert!(err.contains("junk.wasm is not a wasm module"), "{err}");

    // Swapped arguments: the scenario where the plugin should be.
    let (code, _, err) = relay(&[&fixture("echo_basic.json"), &echo()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("echo_basic.json is not a wasm module"),
        "{err}"
    );

    // A wasm header with nothing valid behind it: each engine reports the load error.
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x01\0\0\0\xffgarbage").expect("write");
    let (code, out, _) = relay(&[&broken, &fixture("echo_basic.json")]);
    assert_ne!(code, 0);
    assert!(
        out.contains("wasmtime  FAIL  load:") && out.contains("wasmi     FAIL  load:"),
        "{out}"
    );
}

#[test]
fn cli_help_documents_the_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["test", "--help"])
        .output()
        .expect("run relay");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--engine",
        "wasmtime",
        "wasmi",
        "both",
        "SCENARIO",
        "docs/scenarios.md",
        "Exit status",
    ] {
        assert!(help.contains(word), "--help lacks {word:?}:\n{help}");
    }
}

// ---- the Rust API ----

#[test]
fn harness_api_on_echo() -> anyhow::Result<()> {
    for kind in BOTH {
        let mut h = Harness::load(echo(), kind)?;
        assert_eq!(h.engine(), kind);
        assert_eq!(h.info().name, "echo");

        let r = h.call("echo", json!({"by": 2, "list": [1, "two", null]}))?;
        assert_eq!(r.reply_json()?, json!({"by": 2, "list": [1, "two", null]}));
        assert!(r.events.is_empty());

        let r = h
            .as_role(Role::Secondary)
            .with_attempt(4)
            .call("echo", json!("hi"))?;
        assert_eq!(r.reply_bytes(), Some(&b"\xa2hi"[..]));

        let r = h.call_empty("echo");
        assert_eq!(r.outcome, Outcome::NoReply);
        assert!(r.reply_json().is_err(), "no reply is not a reply");

        let r = h.call_raw("echo", vec![0xc1, 0x00]);
        assert_eq!(r.reply_json()?, json!({"$bytes": "c100"}));

        let r = h.call_empty("missing");
        assert_eq!(r.code(), Some("unknown_command"));
        assert_eq!(r.error_kind(), None);

        h.set_kv_json("kept", &json!({"n": 1}))?;
        h.set_now(42);
        assert_eq!(h.now_ms(), 42);
        h.restart()?;
        assert_eq!(
            h.kv_json(),
            json!({"kept": {"n": 1}}),
            "kv survives a restart"
        );
        assert_eq!(h.call("echo", json!(7))?.reply_json()?, json!(7));

        assert!(h.events().is_empty());
        assert!(h.logs().is_empty(), "echo logs nothing: {:?}", h.logs());
    }
    Ok(())
}

#[test]
fn harness_options_set_initial_state() -> anyhow::Result<()> {
    let mut kv = std::collections::BTreeMap::new();
    kv.insert("a".to_string(), vec![0x01]);
    let options = HarnessOptions {
        now_ms: 5,
        kv,
        ..HarnessOptions::default()
    };
    let h = Harness::load_with(echo(), EngineKind::Wasmi, options)?;
    assert_eq!(h.kv_json(), json!({"a": 1}));
    assert_eq!(h.now_ms(), 5);
    Ok(())
}

#[test]
fn missing_artifacts_say_how_to_build_them() {
    let e = bundled_plugin("no-such-plugin").unwrap_err().to_string();
    assert!(
        e.contains("cargo xtask build-plugins") && e.contains("no-such-plugin.wasm"),
        "{e}"
    );
    let e = Harness::load("/nonexistent/x.wasm", EngineKind::Wasmi)
        .err()
        .map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("/nonexistent/x.wasm")));
}
