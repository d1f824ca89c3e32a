//! Settings passed on QEMU's command line (`-append "broker=HOST:PORT
//! device=ID"`): QEMU writes them into the device tree's `/chosen/bootargs`
//! and hands the tree's address to the program in `a1`. They are the
//! emulated device's equivalent of the firmware's build-time provisioning,
//! so one binary serves whatever broker port a test picked.

use alloc::string::String;

/// The boot arguments, `key=value` words separated by spaces.
pub struct BootArgs(String);

impl BootArgs {
    /// Reads them from the device tree at `dtb` (the entry's `a1`); empty
    /// if there is none or it has no bootargs.
    ///
    /// # Safety
    /// `dtb` is 0 or the address of a flattened device tree that stays
    /// mapped (QEMU places it at the top of RAM, which the program's
    /// memory map does not reach).
    pub unsafe fn from_device_tree(dtb: usize) -> BootArgs {
        if dtb == 0 {
            return BootArgs(String::new());
        }
        // SAFETY: the caller's contract.
        let args = unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }
            .ok()
            .and_then(|tree| tree.chosen().bootargs().map(String::from))
            .unwrap_or_default();
        BootArgs(args)
    }

    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.split_whitespace().find_map(|word| {
            let (k, v) = word.split_once('=')?;
            (k == key).then_some(v)
        })
    }
}
