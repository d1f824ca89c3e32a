//! Embeds the bundled plugins (`target/plugins/*.wasm`, or
//! `$RELAY_PLUGIN_DIR`, as built by `cargo xtask build-plugins`) into the
//! `relay` binary, so `relay dev` has them wherever the binary is installed
//! (`cargo xtask install`, `cargo install --path cli` after building them).
//! Without built plugins the list is empty and `relay dev` says how to get
//! them. Plugins are a wasm32 build: a build script cannot run that cargo
//! itself (it would fight the outer cargo for the target-dir lock), hence the
//! xtask builds them first.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=RELAY_PLUGIN_DIR");
    let dir = env::var_os("RELAY_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"))
                .join("..")
                .join("target")
                .join("plugins")
        });
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut plugins: Vec<(String, PathBuf)> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "wasm"))
        .filter_map(|path| {
            let name = path.file_stem()?.to_str()?.to_string();
            Some((name, fs::canonicalize(&path).ok()?))
        })
        .collect();
    plugins.sort();
    let mut code = String::from(
        "/// The bundled plugins built into this binary: (name, module bytes).\n\
         pub static BUNDLED: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in &plugins {
        let _ = writeln!(
            code,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        );
    }
    code.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it")).join("bundled_plugins.rs");
    fs::write(out, code).expect("OUT_DIR is writable");
}
