//! The core-wasm face of the `relay:plugin` world (`wit/relay-plugin.wit`):
//! the imports a guest may use and the exports it must provide, with the flat
//! signatures wit-bindgen lowers them to on wasm32. Both engines check a
//! module against this one table, so they accept and refuse the same
//! modules with the same words; the wasmtime engine's test derives the same
//! signatures from the WIT text and compares, so a change of the world
//! breaks the build, not a device.

use wasmparser::ValType::{self, I32, I64};

/// Core module name of every host import.
pub const HOST_MODULE: &str = "relay:plugin/host@0.1.0";

/// One host import: its name, flat signature, and which of its arguments
/// are byte lengths (the host reads that many bytes of guest memory, which
/// the meter charges for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostImport {
    pub name: &'static str,
    pub params: &'static [ValType],
    pub results: &'static [ValType],
    /// Indices into `params` of the lengths of the byte arguments.
    pub lengths: &'static [usize],
    /// `kv-get`: the value the host copies back is charged after the call,
    /// read from the return area (`params` last: option tag at +0, length at +8).
    pub charges_result: bool,
}

/// The six functions of `relay:plugin/host@0.1.0`.
pub const HOST_IMPORTS: [HostImport; 6] = [
    HostImport {
        name: "log",
        params: &[I32, I32, I32],
        results: &[],
        lengths: &[2],
        charges_result: false,
    },
    HostImport {
        name: "kv-get",
        params: &[I32, I32, I32],
        results: &[],
        lengths: &[1],
        charges_result: true,
    },
    HostImport {
        name: "kv-set",
        params: &[I32, I32, I32, I32, I32],
        results: &[],
        lengths: &[1, 3],
        charges_result: false,
    },
    HostImport {
        name: "kv-delete",
        params: &[I32, I32],
        results: &[],
        lengths: &[1],
        charges_result: false,
    },
    HostImport {
        name: "now-ms",
        params: &[],
        results: &[I64],
        lengths: &[],
        charges_result: false,
    },
    HostImport {
        name: "emit",
        params: &[I32, I32, I32, I32],
        results: &[],
        lengths: &[1, 3],
        charges_result: false,
    },
];

/// The host import called `name`, if there is one.
pub fn host_import(module: &str, name: &str) -> Option<&'static HostImport> {
    if module != HOST_MODULE {
        return None;
    }
    HOST_IMPORTS.iter().find(|i| i.name == name)
}

/// A function the guest exports: name, flat signature, required or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestExport {
    pub name: &'static str,
    pub params: &'static [ValType],
    pub results: &'static [ValType],
    pub required: bool,
}

/// The world's exports in wit-bindgen's core naming, plus the allocator the
/// host lowers arguments with. The post-returns are optional: a guest
/// without them has nothing to free.
pub const GUEST_EXPORTS: [GuestExport; 5] = [
    GuestExport {
        name: "cabi_realloc",
        params: &[I32, I32, I32, I32],
        results: &[I32],
        required: true,
    },
    GuestExport {
        name: "describe",
        params: &[],
        results: &[I32],
        required: true,
    },
    GuestExport {
        name: "handle",
        params: &[I32, I32, I32, I32, I32, I32, I32, I32],
        results: &[I32],
        required: true,
    },
    GuestExport {
        name: "cabi_post_describe",
        params: &[I32],
        results: &[],
        required: false,
    },
    GuestExport {
        name: "cabi_post_handle",
        params: &[I32],
        results: &[],
        required: false,
    },
];

/// Shows a signature the way the error messages print it: `(i32, i32) -> i32`.
pub fn show_sig(params: &[ValType], results: &[ValType]) -> alloc::string::String {
    use alloc::string::String;
    use core::fmt::Write;
    let list = |tys: &[ValType]| {
        let mut s = String::new();
        for (i, t) in tys.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            let _ = write!(s, "{t}");
        }
        s
    };
    alloc::format!("({}) -> ({})", list(params), list(results))
}
