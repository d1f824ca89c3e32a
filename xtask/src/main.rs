//! `cargo xtask`: the project's own build steps, in Rust so they run the same
//! on every machine (no Makefile, no shell dialects).
//!
//! - `cargo xtask dev [ARGS]`    build the bundled plugins, then run `relay dev`
//!   (embedded broker + host + plugins): the README's main command.
//! - `cargo xtask test`          every test: installs the rustup targets, builds
//!   the plugins, runs the workspace tests (against Mosquitto and the embedded
//!   broker), the scenario harness on both engines, the `no_std` build for
//!   riscv32imac, the emulated device in QEMU, the ESP32-C6 firmware's
//!   build, and the benchmarks in smoke mode. The README's test command.
//! - `cargo xtask qemu [--sizes]` the emulated device alone (`xtask/src/qemu.rs`).
//! - `cargo xtask esp32c6`     build the ESP32-C6 firmware (`examples/esp32c6`).
//! - `cargo xtask build-plugins` build `plugins/*` to wasm and copy them to
//!   `target/plugins/<name>.wasm`: Rust plugins with cargo, plugins in other
//!   languages (C, C++, AssemblyScript, Zig) with their own `build.sh OUT`,
//!   which calls that language's toolchain (`docs/languages.md`; `xtask/src/plugins.rs`).
//! - `cargo xtask bench`         full benchmarks (figures for docs/benchmarks.md).
//! - `cargo xtask install`       build the plugins, then `cargo install --path cli`
//!   (the installed `relay dev` carries the bundled plugins).
//!
//! Why an xtask: plugins are a different target (wasm32) than the host, and the
//! tests need both; one cargo invocation cannot build both, and a build script
//! calling cargo would fight the outer cargo for the target-dir lock.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use plugins::{artifact, build_plugins, conformance_plugins, plugin_crates, script_plugins};

mod esp32c6;
mod plugins;
mod qemu;
mod qemu_net;
mod qemu_ota;

const WASM_TARGET: &str = "wasm32-unknown-unknown";
const MCU_TARGET: &str = "riscv32imac-unknown-none-elf";
/// The ESP32-C3's target: no atomic compare-and-swap (no `A` extension).
const MCU_NO_CAS_TARGET: &str = "riscv32imc-unknown-none-elf";

fn main() -> Result<()> {
    let mut args = env::args().skip(1);
    let task = args.next().unwrap_or_else(|| "help".into());
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "build-plugins" => build_plugins().map(|_| ()),
        "dev" => dev(&rest),
        "test" => test(&rest),
        "bench" => bench(&rest),
        "install" => install(&rest),
        "no-std" => no_std_check(),
        "qemu" => qemu::qemu(&rest),
        "esp32c6" => esp32c6::esp32c6(&rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <dev [ARGS] | test | build-plugins | bench | install | no-std | qemu | esp32c6>\n\n\
                 dev            build the bundled plugins and run `relay dev`\n\
                 test           run every test (the README's test command)\n\
                 build-plugins  build plugins/* into target/plugins/<name>.wasm\n\
                 bench          run the benchmarks in full (figures for docs/benchmarks.md)\n\
                 install [ARGS] build the plugins, then `cargo install --path cli` (relay dev carries them)\n\
                 no-std         build relay-core for {MCU_TARGET} (no_std + alloc + wasmi),\n\
                                and the core without wasmi for {MCU_NO_CAS_TARGET}\n\
                 qemu [--sizes] run the emulated device (device/qemu) in qemu-system-riscv32;\n\
                                --sizes: its flash size at opt-level z and s\n\
                 esp32c6        build the ESP32-C6 firmware (examples/esp32c6) and print its flash size"
            );
            if task == "help" || task == "--help" || task == "-h" {
                Ok(())
            } else {
                bail!("unknown task {task:?}")
            }
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Installs rustup targets if rustup is present (a fresh machine has only the host target).
fn ensure_targets(targets: &[&str]) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let Ok(out) = installed else {
        eprintln!("xtask: rustup not found; assuming targets {targets:?} are installed");
        return Ok(());
    };
    let have = String::from_utf8_lossy(&out.stdout).to_string();
    let missing: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|t| !have.lines().any(|l| l.trim() == *t))
        .collect();
    if !missing.is_empty() {
        run(Command::new("rustup")
            .arg("target")
            .arg("add")
            .args(&missing))?;
    }
    Ok(())
}

fn dev(args: &[String]) -> Result<()> {
    let plugins = build_plugins()?;
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "-p",
        "relay-cli",
        "--bin",
        "relay",
        "--",
        "dev",
        "--plugins",
    ])
    .arg(&plugins)
    .args(args);
    run(&mut cmd)
}

/// What the integration tests run besides cargo: the Mosquitto broker they
/// start, and `openssl`, which makes the TLS test's certificates. Installed
/// from Debian if absent (as root), else a clear error.
fn ensure_test_tools() -> Result<()> {
    let missing: Vec<&str> = [
        ("mosquitto", "mosquitto"),
        ("openssl", "openssl"),
        ("qemu-system-riscv32", "qemu-system-misc"),
    ]
    .into_iter()
    .filter(|(bin, _)| !which(bin))
    .map(|(_, package)| package)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if is_root && which("apt-get") {
        run(Command::new("apt-get").arg("update"))?;
        run(Command::new("apt-get")
            .args(["install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        return Ok(());
    }
    let missing = missing.join(" ");
    bail!("the integration tests need: {missing} (Debian: `sudo apt-get install -y {missing}`)")
}

fn which(bin: &str) -> bool {
    env::var_os("PATH")
        .map(|p| {
            env::split_paths(&p)
                .any(|d| d.join(bin).is_file() || d.join("sbin").join(bin).is_file())
        })
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(bin).is_file()
}

fn test(_args: &[String]) -> Result<()> {
    ensure_targets(&[WASM_TARGET, MCU_TARGET, MCU_NO_CAS_TARGET])?;
    ensure_test_tools()?;
    lint()?;
    check_boundaries()?;
    let plugins = build_plugins()?;
    run(cargo()
        .args(["test", "--workspace", "--all-targets"])
        .env("RELAY_PLUGIN_DIR", &plugins))?;
    run(cargo().args(["test", "--workspace", "--doc"]))?;
    no_std_check()?;
    qemu::qemu(&[])?;
    esp32c6::esp32c6(&[])?;
    scenarios(&plugins)?;
    // The benchmarks already ran above, in smoke mode: `cargo test
    // --all-targets` runs each bench binary without `--bench`, which they
    // take as smoke mode (they assert nothing about time). A separate
    // `cargo bench` would only add a release build of the whole host.
    eprintln!("xtask: all tests passed");
    Ok(())
}

/// Formatting and clippy (warnings are errors), before anything slow.
fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

/// Crates by product: what each one must never pull in. An app that only
/// sends commands does not compile an engine or a broker; the device does
/// not compile the embedded broker.
const BOUNDARIES: &[(&str, &[&str])] = &[
    (
        "relay-client",
        &[
            "wasmtime",
            "wasmi",
            "cranelift-codegen",
            "rumqttd",
            "relay-host",
        ],
    ),
    (
        "relay-hub",
        &[
            "wasmtime",
            "wasmi",
            "cranelift-codegen",
            "rumqttd",
            "relay-host",
        ],
    ),
    (
        "relay-fleet",
        &[
            "wasmtime",
            "wasmi",
            "cranelift-codegen",
            "rumqttd",
            "relay-host",
        ],
    ),
    ("relay-host", &["rumqttd", "clap"]),
    ("relay-core", &["tokio", "rumqttc", "wasmtime"]),
    // The microcontroller's crates: nothing that needs an OS.
    ("relay-flash", &["tokio", "wasmtime", "relay-store"]),
    (
        "relay-embedded",
        &["tokio", "rumqttc", "wasmtime", "relay-store"],
    ),
    (
        "relay-embedded-mqtt",
        &["tokio", "rumqttc", "wasmtime", "relay-store", "relay-host"],
    ),
];

fn check_boundaries() -> Result<()> {
    for (krate, forbidden) in BOUNDARIES {
        let out = cargo()
            .args([
                "tree", "-p", krate, "-e", "normal", "--prefix", "none", "--format", "{p}",
            ])
            .output()
            .with_context(|| format!("cargo tree -p {krate}"))?;
        if !out.status.success() {
            bail!(
                "cargo tree -p {krate} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        let found: Vec<&str> = forbidden
            .iter()
            .copied()
            .filter(|dep| {
                tree.lines()
                    .any(|l| l.split_whitespace().next() == Some(dep))
            })
            .collect();
        if !found.is_empty() {
            bail!("{krate} must not depend on {found:?} (crates by product: see docs/architecture.md)");
        }
        eprintln!("xtask: {krate} stays clear of {forbidden:?}");
    }
    Ok(())
}

/// `relay test` over every bundled plugin's scenarios, on both engines.
/// `relay test` on both engines: each plugin's own scenarios, plus the
/// shared conformance scenarios for the plugins listed in
/// `plugins/conformance/PLUGINS` (one per guest language).
fn scenarios(plugins: &Path) -> Result<()> {
    let conformance_dir = root().join("plugins").join("conformance");
    let conformance = conformance_plugins()?;
    let mut dirs: Vec<String> = plugin_crates()?.into_iter().map(|(d, _)| d).collect();
    dirs.extend(script_plugins()?);
    dirs.sort();
    for dir in dirs {
        let mut sets = Vec::new();
        if conformance.contains(&dir) {
            sets.push(conformance_dir.clone());
        }
        let own = root().join("plugins").join(&dir).join("scenarios");
        if own.is_dir() {
            sets.push(own);
        }
        if sets.is_empty() {
            continue;
        }
        run(cargo()
            .args([
                "run",
                "--quiet",
                "-p",
                "relay-cli",
                "--bin",
                "relay",
                "--",
                "test",
            ])
            .arg(artifact(plugins, &conformance, &dir))
            .args(&sets)
            .args(["--engine", "both", "--quiet"]))?;
    }
    Ok(())
}

fn no_std_check() -> Result<()> {
    ensure_targets(&[MCU_TARGET, MCU_NO_CAS_TARGET])?;
    run(cargo().args([
        "build",
        "-p",
        "relay-core",
        "--no-default-features",
        "--features",
        "wasmi",
        "--target",
        MCU_TARGET,
    ]))?;
    // The ESP32-C3 (no atomic compare-and-swap): everything but wasmi and
    // tracing builds there (`docs/embedded.md` says why and what it takes).
    run(cargo().args([
        "build",
        "-p",
        "relay-core",
        "--no-default-features",
        "-p",
        "relay-flash",
        "-p",
        "relay-embedded",
        "--target",
        MCU_NO_CAS_TARGET,
    ]))
}

/// `cargo install` of the CLI after building the plugins it embeds
/// (`cli/build.rs`), so the installed `relay dev` works anywhere.
fn install(args: &[String]) -> Result<()> {
    let plugins = build_plugins()?;
    run(cargo()
        .args(["install", "--locked", "--path", "cli"])
        .args(args)
        .env("RELAY_PLUGIN_DIR", &plugins))
}

fn bench(args: &[String]) -> Result<()> {
    let plugins = build_plugins()?;
    run(cargo()
        .args(["bench", "--workspace"])
        .args(args)
        .env("RELAY_PLUGIN_DIR", &plugins))
}
