//! The project templates of `relay plugin new` for the languages other than
//! Rust, and which kit files each one vendors (see `new`).

type Files = &'static [(&'static str, &'static str)];

pub const C: Files = &[
    (
        "src/plugin.c",
        include_str!("../../templates/c/src/plugin.c"),
    ),
    ("build.sh", include_str!("../../templates/c/build.sh")),
];

pub const CPP: Files = &[
    (
        "src/plugin.cpp",
        include_str!("../../templates/cpp/src/plugin.cpp"),
    ),
    ("build.sh", include_str!("../../templates/cpp/build.sh")),
];

pub const ZIG: Files = &[
    (
        "src/plugin.zig",
        include_str!("../../templates/zig/src/plugin.zig"),
    ),
    ("build.sh", include_str!("../../templates/zig/build.sh")),
];

pub const ASSEMBLYSCRIPT: Files = &[
    (
        "assembly/index.ts",
        include_str!("../../templates/assemblyscript/assembly/index.ts"),
    ),
    (
        "build.sh",
        include_str!("../../templates/assemblyscript/build.sh"),
    ),
];

/// Files of `guest-sdk/c` a C or C++ project carries.
pub const C_KIT: &[&str] = &["relay_plugin.h", "relay_plugin_impl.h", "relay_msgpack.h"];
/// Files of `guest-sdk/zig`.
pub const ZIG_KIT: &[&str] = &["relay.zig", "msgpack.zig"];
/// Files of `guest-sdk/assemblyscript`.
pub const AS_KIT: &[&str] = &[
    "package.json",
    "package-lock.json",
    "assembly/relay.ts",
    "assembly/msgpack.ts",
];
