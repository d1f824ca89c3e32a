//! `relay test --engine both` on every runtime fixture of
//! `host/tests/fixtures/hostile/`: the plugin echoes, misbehaves on an empty
//! payload with the failure code its header names, and echoes again, with
//! the same outcome on wasmtime and wasmi (the differential check of
//! `relay test`), through the binary a plugin author runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

/// Each fixture and the failure code `relay test` must see on both engines.
const FIXTURES: [(&str, &str); 15] = [
    ("infinite_loop", "timed_out"),
    ("log_flood", "timed_out"),
    ("memory_grow_bomb", "trap"),
    ("deep_recursion", "trap"),
    ("unreachable", "trap"),
    ("huge_reply_1gib", "trap"),
    ("reply_over_limit", "too_large"),
    ("oob_log", "trap"),
    ("oob_kv_set", "trap"),
    ("oob_emit", "trap"),
    ("invalid_utf8_log", "trap"),
    ("bad_discriminant", "trap"),
    ("emit_flood", "too_large"),
    ("table_grow_bomb", "trap"),
    ("reentrant_realloc", "trap"),
];

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/tests/fixtures/hostile")
}

fn scenario(name: &str, code: &str) -> String {
    format!(
        r#"description = "{name}: echoes, fails with {code} on an empty payload, echoes again"
plugin = "hostile"

[limits]
fuel_per_call = 2000000

[[step]]
command = "echo"
payload = "before"
[step.expect]
reply = "before"

[[step]]
command = "echo"
[step.expect]
failure = "{code}"

[[step]]
command = "echo"
payload = "after"
[step.expect]
reply = "after"
"#
    )
}

#[test]
fn relay_test_gives_the_same_outcome_on_both_engines_for_every_hostile_fixture() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut failed = Vec::new();
    for (name, code) in FIXTURES {
        let wat = fixture_dir().join(format!("{name}.wat"));
        let wasm = wat::parse_file(&wat).with_context(|| format!("{}", wat.display()))?;
        let plugin = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&plugin, wasm)?;
        let scenario_path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&scenario_path, scenario(name, code))?;
        let out = Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["test", "--engine", "both"])
            .arg(&plugin)
            .arg(&scenario_path)
            .env("NO_COLOR", "1")
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains("engines agree") {
            failed.push(format!(
                "{name}: exit {:?}\n{stdout}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    ensure!(failed.is_empty(), "{}", failed.join("\n"));
    Ok(())
}
