//! The emulated device's board support on QEMU's `virt` machine (riscv32imac,
//! bare metal), shared by its two programs: `relay-qemu` (the scripted run
//! and the figures) and `relay-qemu-net` (the device on a network, against
//! a real broker).
//!
//! On the build machine this library is empty, so the workspace builds.

#![cfg_attr(target_os = "none", no_std)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
pub mod board;
#[cfg(target_os = "none")]
pub mod boot_args;
#[cfg(target_os = "none")]
pub mod clock;
#[cfg(target_os = "none")]
pub mod file_flash;
#[cfg(target_os = "none")]
pub mod heap;
#[cfg(target_os = "none")]
pub mod virtio_net;
