//! For the riscv32 build: the memory layout of QEMU's `virt` machine (all
//! in its RAM at 0x8000_0000, where `-kernel` loads the ELF), the plugins
//! the firmware embeds (from `cargo xtask build-plugins`), and the guest
//! loop module, compiled from WAT here.

use std::path::PathBuf;
use std::{env, fs};

const MEMORY: &str = "MEMORY { RAM : ORIGIN = 0x80000000, LENGTH = 32M }
REGION_ALIAS(\"REGION_TEXT\", RAM);
REGION_ALIAS(\"REGION_RODATA\", RAM);
REGION_ALIAS(\"REGION_DATA\", RAM);
REGION_ALIAS(\"REGION_BSS\", RAM);
REGION_ALIAS(\"REGION_HEAP\", RAM);
REGION_ALIAS(\"REGION_STACK\", RAM);
";

/// `n` iterations of an add and a decrement: the guest loop of the issue.
const LOOP_WAT: &str = r#"(module
  (func (export "spin") (param $n i32) (result i32) (local $acc i32)
    (loop $again
      (local.set $acc (i32.add (local.get $acc) (local.get $n)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $again (local.get $n)))
    (local.get $acc)))"#;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RELAY_PLUGIN_DIR");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::write(out.join("memory.x"), MEMORY).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tmemory.x");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");

    let plugins = env::var_os("RELAY_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../target/plugins")
        });
    for name in ["deploy", "echo"] {
        let from = plugins.join(format!("{name}.wasm"));
        println!("cargo:rerun-if-changed={}", from.display());
        let bytes = fs::read(&from).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run `cargo xtask build-plugins` first)",
                from.display()
            )
        });
        fs::write(out.join(format!("{name}.wasm")), bytes).unwrap();
    }
    // `echo` built with the SDK's `one-page-heap` allocator.
    let one_page = plugins.join("mcu").join("echo.wasm");
    println!("cargo:rerun-if-changed={}", one_page.display());
    let bytes = fs::read(&one_page).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run `cargo xtask build-plugins` first)",
            one_page.display()
        )
    });
    fs::write(out.join("echo-one-page.wasm"), bytes).unwrap();
    fs::write(out.join("loop.wasm"), wat::parse_str(LOOP_WAT).unwrap()).unwrap();
}
