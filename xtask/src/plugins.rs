//! `cargo xtask build-plugins`: every plugin under `plugins/` built for
//! wasm32 into `target/plugins/` (Rust crates with cargo, other languages
//! with their `build.sh`), the per-language examples apart in `languages/`,
//! and the microcontroller build of `echo` in `mcu/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::{cargo, ensure_targets, root, run, target_dir, WASM_TARGET};

/// Plugin crates: every `plugins/<dir>/Cargo.toml`, as (dir name, package name).
pub(super) fn plugin_crates() -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root().join("plugins"))? {
        let dir = entry?.path();
        let manifest = dir.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let text = fs::read_to_string(&manifest)?;
        let package = text
            .lines()
            .find_map(|l| {
                let l = l.trim();
                l.strip_prefix("name")
                    .map(|r| r.trim_start())
                    .and_then(|r| r.strip_prefix('='))
                    .map(|r| r.trim().trim_matches('"').to_string())
            })
            .with_context(|| format!("no package name in {}", manifest.display()))?;
        let dir_name = dir.file_name().unwrap().to_string_lossy().to_string();
        out.push((dir_name, package));
    }
    out.sort();
    Ok(out)
}

/// Where the microcontroller builds of plugins go (not bundled: the CLI
/// bundles the top level of `target/plugins` only).
const MCU_PLUGINS_DIR: &str = "mcu";

/// `echo` built with the SDK's `one-page-heap` allocator, for the emulated
/// device's heap figures: `target/plugins/mcu/echo.wasm`.
fn build_mcu_echo(out_dir: &Path) -> Result<()> {
    run(cargo().args([
        "build",
        "--profile",
        "wasm",
        "--target",
        WASM_TARGET,
        "-p",
        "relay-plugin-echo",
        "--features",
        "one-page-heap",
    ]))?;
    let built = target_dir()
        .join(WASM_TARGET)
        .join("wasm")
        .join("relay_plugin_echo.wasm");
    let dest = out_dir.join(MCU_PLUGINS_DIR).join("echo.wasm");
    fs::create_dir_all(out_dir.join(MCU_PLUGINS_DIR))?;
    fs::copy(&built, &dest)
        .with_context(|| format!("copy {} -> {}", built.display(), dest.display()))?;
    report_built(&dest)
}

/// Builds every plugin for wasm32 and copies it to `target/plugins/<dir>.wasm`.
pub(super) fn build_plugins() -> Result<PathBuf> {
    ensure_targets(&[WASM_TARGET])?;
    let crates = plugin_crates()?;
    let mut cmd = cargo();
    cmd.args(["build", "--profile", "wasm", "--target", WASM_TARGET]);
    for (_, package) in &crates {
        cmd.args(["-p", package]);
    }
    run(&mut cmd)?;
    let out_dir = target_dir().join("plugins");
    fs::create_dir_all(out_dir.join(LANGUAGES_DIR))?;
    let conformance = conformance_plugins()?;
    for (dir, package) in &crates {
        let built = target_dir()
            .join(WASM_TARGET)
            .join("wasm")
            .join(format!("{}.wasm", package.replace('-', "_")));
        let dest = artifact(&out_dir, &conformance, dir);
        fs::copy(&built, &dest)
            .with_context(|| format!("copy {} -> {}", built.display(), dest.display()))?;
        report_built(&dest)?;
    }
    build_mcu_echo(&out_dir)?;
    for dir in script_plugins()? {
        let dest = artifact(&out_dir, &conformance, &dir);
        let script = root().join("plugins").join(&dir).join("build.sh");
        run(Command::new("bash")
            .arg(&script)
            .arg(&dest)
            .env("RELAY_GUEST_SDK", root().join("guest-sdk")))
        .with_context(|| format!("building plugins/{dir} (its build.sh)"))?;
        report_built(&dest)?;
    }
    Ok(out_dir)
}

fn report_built(dest: &Path) -> Result<()> {
    eprintln!(
        "xtask: {} ({} bytes)",
        dest.display(),
        fs::metadata(dest)?.len()
    );
    Ok(())
}

/// Under `target/plugins/`: the per-language example plugins.
const LANGUAGES_DIR: &str = "languages";

/// Where plugin `dir` is built to. The per-language examples (the
/// conformance plugins and every `build.sh` plugin) go apart, to
/// `languages/`: the conformance plugins all answer the same command names,
/// so `relay dev` must not load them together, and the bundled plugins stay
/// the small set a device starts with.
pub(super) fn artifact(out_dir: &Path, conformance: &[String], dir: &str) -> PathBuf {
    let scripted = root().join("plugins").join(dir).join("build.sh").is_file();
    if scripted || conformance.iter().any(|c| c == dir) {
        out_dir.join(LANGUAGES_DIR).join(format!("{dir}.wasm"))
    } else {
        out_dir.join(format!("{dir}.wasm"))
    }
}

/// The plugins listed in `plugins/conformance/PLUGINS`.
pub(super) fn conformance_plugins() -> Result<Vec<String>> {
    let list = fs::read_to_string(root().join("plugins/conformance/PLUGINS"))?;
    Ok(list
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Plugins in other languages: a dir of `plugins/` with a `build.sh`.
pub(super) fn script_plugins() -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root().join("plugins"))? {
        let dir = entry?.path();
        if dir.join("build.sh").is_file() && !dir.join("Cargo.toml").is_file() {
            out.push(dir.file_name().unwrap().to_string_lossy().to_string());
        }
    }
    out.sort();
    Ok(out)
}
