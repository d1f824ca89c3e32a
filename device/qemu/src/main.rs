//! The emulated device (QEMU `virt`, riscv32imac, bare metal): the same
//! core, flash journal, device loop and wasmi engine as a microcontroller
//! build, run under `qemu-system-riscv32 -machine virt -bios none`.
//!
//! It prints one line per result on the UART and exits through QEMU's test
//! device with status 0 only if every check passed (`cargo xtask qemu`
//! runs it and reads both):
//!
//! 1. the scripted run (`relay_embedded::scenario`) with the real `deploy`
//!    plugin, its journal on a NOR flash simulated in RAM, and a reset;
//! 2. a 1M-iteration guest loop on wasmi;
//! 3. figures: instructions per `echo` command against a native handler in
//!    the same binary (QEMU counts instructions with `-icount`), peak heap,
//!    stack high-water mark.
//!
//! On the build machine this is an empty program, so the workspace builds.
//! The networked device is the other binary, `relay-qemu-net`.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod run;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "relay-qemu runs on QEMU's riscv32 virt machine: `cargo xtask qemu` builds and runs it"
    );
}
