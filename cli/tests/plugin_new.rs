//! `relay plugin new` (issue 12): a project scaffolded for each language, in
//! a temp dir outside this repository, builds with its one command
//! (`./build.sh`) and passes its generated scenario on both engines. The
//! toolchains are the ones `cargo xtask build-plugins` uses (clang and lld,
//! npm, Zig from PyPI, cargo); CI installs them.

#[path = "support/host_process.rs"]
mod host_process;

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use host_process::relay_binary;

fn scaffold_build_and_test(lang: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let name = format!("demo-{lang}");
    let new = Command::new(relay_binary())
        .args(["plugin", "new", &name, "--lang", lang, "--dir"])
        .arg(dir.path().join(&name))
        .output()?;
    ensure!(
        new.status.success(),
        "{lang}: {}",
        String::from_utf8_lossy(&new.stderr)
    );
    let project = dir.path().join(&name);
    let wasm = dir.path().join(format!("{name}.wasm"));
    let mut build = Command::new("bash");
    build.arg(project.join("build.sh")).arg(&wasm);
    if lang == "rust" {
        // Shares the compiled SDK between runs; the project itself is outside.
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-new");
        build.env("CARGO_TARGET_DIR", target);
    }
    let built = build.output().context("running build.sh")?;
    ensure!(
        built.status.success() && wasm.is_file(),
        "{lang}: build.sh failed: {}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let tested = Command::new(relay_binary())
        .arg("test")
        .arg(&wasm)
        .arg(project.join("scenarios"))
        .args(["--engine", "both"])
        .output()?;
    let out = String::from_utf8_lossy(&tested.stdout);
    ensure!(
        tested.status.success() && out.contains("1 passed, 0 failed"),
        "{lang}: {out}{}",
        String::from_utf8_lossy(&tested.stderr)
    );
    Ok(())
}

#[test]
fn c_project_builds_and_passes() -> Result<()> {
    scaffold_build_and_test("c")
}

#[test]
fn cpp_project_builds_and_passes() -> Result<()> {
    scaffold_build_and_test("cpp")
}

#[test]
fn zig_project_builds_and_passes() -> Result<()> {
    scaffold_build_and_test("zig")
}

#[test]
fn assemblyscript_project_builds_and_passes() -> Result<()> {
    scaffold_build_and_test("assemblyscript")
}

#[test]
fn rust_project_builds_outside_the_workspace_and_passes() -> Result<()> {
    scaffold_build_and_test("rust")
}

#[test]
fn a_bad_name_or_a_full_dir_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = Command::new(relay_binary())
        .args(["plugin", "new", "bad name", "--dir"])
        .arg(dir.path().join("x"))
        .output()?;
    ensure!(!bad.status.success());
    ensure!(String::from_utf8_lossy(&bad.stderr).contains("invalid plugin name"));
    std::fs::write(dir.path().join("file"), "x")?;
    let full = Command::new(relay_binary())
        .args(["plugin", "new", "ok", "--dir"])
        .arg(dir.path())
        .output()?;
    ensure!(String::from_utf8_lossy(&full.stderr).contains("not empty"));
    Ok(())
}
