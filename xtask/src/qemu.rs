//! `cargo xtask qemu [--sizes]`: the emulated device (`device/qemu`) built
//! for riscv32imac and run in `qemu-system-riscv32 -machine virt -bios
//! none`, with `-icount` so the instruction counts it prints are exact;
//! then the networked device end to end (`qemu_net.rs`).
//! It passes when QEMU exits 0 (the firmware's verdict, through the test
//! device) and no line says `not ok`. `--sizes` also builds it at
//! opt-level `z` and `s` and prints `.text` + `.rodata` of each: the flash
//! a microcontroller would need.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::{build_plugins, cargo, ensure_targets, run, target_dir, MCU_TARGET};

const QEMU: &str = "qemu-system-riscv32";
/// The whole run takes about a second; this bounds a hung guest.
const LIMIT: Duration = Duration::from_secs(300);

pub fn qemu(args: &[String]) -> Result<()> {
    ensure_targets(&[MCU_TARGET])?;
    let plugins = build_plugins()?;
    // The workspace's clippy sees this crate's host stub only.
    run(cargo()
        .args([
            "clippy",
            "-p",
            "relay-qemu",
            "--target",
            MCU_TARGET,
            "--release",
        ])
        .args(["--", "-D", "warnings"])
        .env("RELAY_PLUGIN_DIR", &plugins))?;
    let elf = build(&plugins, "release")?;
    let output = run_qemu(&elf)?;
    print!("{output}");
    run(cargo()
        .args(["build", "-p", "relay-cli", "--bin", "relay"])
        .env("RELAY_PLUGIN_DIR", &plugins))?;
    let net = elf.with_file_name("relay-qemu-net");
    super::qemu_net::qemu_net(&net, &target_dir().join("debug").join("relay"))?;
    if args.iter().any(|a| a == "--sizes") {
        sizes(&plugins)?;
    }
    Ok(())
}

/// The flash table of `docs/benchmarks.md`: `.text` + `.rodata` of the
/// emulated device per build, and what core + wasmi + driver + the one
/// `echo` plugin come to (the firmware minus the plugins it embeds, plus
/// `echo`).
fn sizes(plugins: &Path) -> Result<()> {
    println!("\n| build | .text | .rodata | .text + .rodata | embedded plugins | core + wasmi + driver + echo |");
    println!("|---|---|---|---|---|---|");
    // What the emulated device embeds (device/qemu/build.rs).
    let embedded = ["deploy.wasm", "echo.wasm", "mcu/echo.wasm"]
        .iter()
        .map(|p| std::fs::metadata(plugins.join(p)).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    let echo = std::fs::metadata(plugins.join("echo.wasm"))?.len();
    let mut builds = Vec::new();
    for profile in ["firmware-z", "firmware-s", "release"] {
        builds.push((profile.to_string(), build(plugins, profile)?));
    }
    if let Some(elf) = build_std_for_size(plugins)? {
        builds.push(("firmware-z, std built for size".into(), elf));
    }
    for (name, elf) in builds {
        let sizes = section_sizes(&elf)?;
        let (text, rodata) = (sizes.get(".text"), sizes.get(".rodata"));
        println!(
            "| {name} | {} | {} | {} | {} | {} ({} KB) |",
            kib(text),
            kib(rodata),
            kib(text + rodata),
            kib(embedded),
            kib(text + rodata - embedded + echo),
            (text + rodata - embedded + echo) / 1000,
        );
    }
    Ok(())
}

/// The `firmware-z` build as a size-conscious firmware ships it: `core` and
/// `alloc` rebuilt for size (`-Zbuild-std`, `optimize_for_size`) and panics
/// that abort without formatting a message. Both need nightly (and its
/// `rust-src`); without them this prints why and returns `None`.
fn build_std_for_size(plugins: &Path) -> Result<Option<PathBuf>> {
    let rust_src = Command::new("rustup")
        .args(["component", "add", "rust-src", "--toolchain", "nightly"])
        .status();
    if !rust_src.is_ok_and(|s| s.success()) {
        eprintln!("xtask: no nightly toolchain with rust-src; skipping the build-std size row");
        return Ok(None);
    }
    let target_dir = target_dir().join("build-std");
    run(Command::new("cargo")
        .current_dir(super::root())
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .args([
            "+nightly",
            "build",
            "-p",
            "relay-qemu",
            "--target",
            MCU_TARGET,
        ])
        .args(["--profile", "firmware-z", "--target-dir"])
        .arg(&target_dir)
        .args([
            "-Zbuild-std=core,alloc",
            "-Zbuild-std-features=optimize_for_size",
        ])
        .env("RUSTFLAGS", "-Zunstable-options -Cpanic=immediate-abort")
        .env("RELAY_PLUGIN_DIR", plugins))?;
    let elf = target_dir
        .join(MCU_TARGET)
        .join("firmware-z")
        .join("relay-qemu");
    // The same checks pass on it.
    run_qemu(&elf)?;
    Ok(Some(elf))
}

pub(super) fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

fn build(plugins: &Path, profile: &str) -> Result<PathBuf> {
    run(cargo()
        .args([
            "build",
            "-p",
            "relay-qemu",
            "--target",
            MCU_TARGET,
            "--profile",
            profile,
        ])
        .env("RELAY_PLUGIN_DIR", plugins))?;
    let dir = if profile == "dev" { "debug" } else { profile };
    Ok(target_dir().join(MCU_TARGET).join(dir).join("relay-qemu"))
}

/// QEMU's riscv32 `virt` machine as both programs run on it: bare metal
/// (no firmware), the UART on stdio, 64 MiB of RAM.
pub(super) fn virt_machine() -> Command {
    let mut cmd = Command::new(QEMU);
    cmd.args([
        "-machine",
        "virt",
        "-bios",
        "none",
        "-nographic",
        "-m",
        "64M",
    ]);
    cmd
}

/// Runs the firmware; its output, if it passed.
fn run_qemu(elf: &Path) -> Result<String> {
    let mut cmd = virt_machine();
    cmd.args(["-icount", "shift=0", "-kernel"])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("xtask: running {cmd:?}");
    let mut child = cmd.spawn().with_context(|| {
        format!("could not start {QEMU} (Debian: `apt-get install -y qemu-system-misc`)")
    })?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            bail!("the emulated device did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .context("stdout")?
        .read_to_string(&mut out)?;
    let mut err = String::new();
    child
        .stderr
        .take()
        .context("stderr")?
        .read_to_string(&mut err)?;
    ensure!(
        status.success() && !out.contains("not ok") && out.contains("\nok - "),
        "the emulated device failed ({status}):\n{out}{err}"
    );
    Ok(out)
}

/// Section sizes of a 32-bit little-endian ELF, by name.
pub(super) struct Sections(Vec<(String, u64)>);

impl Sections {
    /// The sections an ESP32 image stores in flash: code and constants run
    /// from flash (`.text`, `.rodata`, the app descriptor), and what the
    /// bootloader copies to RAM at boot (`.trap`, `.rwtext*`, `.data*`).
    /// Empty ones are left out.
    pub(super) fn flash_resident(&self) -> Vec<(String, u64)> {
        const STORED: [&str; 9] = [
            ".flash.appdesc",
            ".text",
            ".rodata",
            ".rodata.wifi",
            ".trap",
            ".rwtext",
            ".rwtext.wifi",
            ".data",
            ".data.wifi",
        ];
        STORED
            .iter()
            .map(|name| (name.to_string(), self.get(name)))
            .filter(|(_, size)| *size > 0)
            .collect()
    }

    fn get(&self, name: &str) -> u64 {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, s)| s)
            .sum()
    }
}

pub(super) fn section_sizes(elf: &Path) -> Result<Sections> {
    let b = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    ensure!(
        b.get(..5) == Some(b"\x7fELF\x01"),
        "{} is not a 32-bit ELF",
        elf.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as usize;
    let (shoff, shentsize, shnum, shstrndx) =
        (u32_at(0x20), u16_at(0x2e), u16_at(0x30), u16_at(0x32));
    let header = |i: usize| shoff + i * shentsize;
    let names = u32_at(header(shstrndx) + 0x10);
    let mut out = Vec::new();
    for i in 0..shnum {
        let h = header(i);
        let name_at = names + u32_at(h);
        let end = b[name_at..].iter().position(|c| *c == 0).unwrap_or(0);
        let name = String::from_utf8_lossy(&b[name_at..name_at + end]).into_owned();
        out.push((name, u32_at(h + 0x14) as u64));
    }
    Ok(Sections(out))
}
