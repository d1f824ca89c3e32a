//! `cargo xtask esp32c6`: checks (fmt, clippy) and builds the ESP32-C6
//! firmware (`examples/esp32c6`, its own workspace) in release for
//! riscv32imac with the plugin it embeds, and prints what of it is stored in
//! flash ([`Sections::flash_resident`](super::qemu::Sections)). It cannot
//! run here: no board, and QEMU has no ESP32-C6 machine.

use anyhow::{Context, Result};

use super::qemu::{kib, section_sizes};
use super::{build_plugins, cargo, ensure_targets, root, run, MCU_TARGET};

pub fn esp32c6(_args: &[String]) -> Result<()> {
    ensure_targets(&[MCU_TARGET])?;
    let plugins = build_plugins()?;
    let dir = root().join("examples/esp32c6");
    let target = root().join("target/esp32c6");
    run(cargo().current_dir(&dir).args(["fmt", "--check"]))
        .context("examples/esp32c6 is not formatted (cargo fmt in it)")?;
    run(cargo()
        .current_dir(&dir)
        .args(["clippy", "--release", "--locked", "--", "-D", "warnings"])
        .env("CARGO_TARGET_DIR", &target)
        .env("RELAY_PLUGIN", plugins.join("echo.wasm"))
        .env_remove("RUSTFLAGS"))
    .context("clippy on examples/esp32c6")?;
    run(cargo()
        .current_dir(&dir)
        .args(["build", "--release", "--locked"])
        // The firmware's own workspace: never the main target directory,
        // whose feature sets and profiles differ.
        .env("CARGO_TARGET_DIR", &target)
        .env("RELAY_PLUGIN", plugins.join("echo.wasm"))
        .env_remove("RUSTFLAGS"))
    .context("building examples/esp32c6")?;
    let elf = target
        .join(MCU_TARGET)
        .join("release")
        .join("relay-esp32c6");
    let sizes = section_sizes(&elf)?;
    let plugin = std::fs::metadata(plugins.join("echo.wasm"))?.len();
    println!("xtask: {} built", elf.display());
    println!("| section | size |\n|---|---|");
    let mut flash = 0;
    for (name, size) in sizes.flash_resident() {
        println!("| {name} | {} |", kib(size));
        flash += size;
    }
    println!(
        "| flash in all | {} (of which the echo plugin {}) |",
        kib(flash),
        kib(plugin)
    );
    Ok(())
}
