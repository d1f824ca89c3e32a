//! Puts the plugin this image carries into OUT_DIR: `RELAY_PLUGIN` if set,
//! else the echo plugin built by `cargo xtask build-plugins`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=RELAY_PLUGIN");
    for var in [
        "RELAY_WIFI_SSID",
        "RELAY_WIFI_PASSWORD",
        "RELAY_BROKER",
        "RELAY_DEVICE",
        "RELAY_PREFIX",
        "RELAY_NTP",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let plugin = std::env::var_os("RELAY_PLUGIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../target/plugins/echo.wasm"));
    println!("cargo:rerun-if-changed={}", plugin.display());
    let bytes = std::fs::read(&plugin).unwrap_or_else(|e| {
        panic!(
            "the plugin {} is missing ({e}): run `cargo xtask build-plugins` in the repository, \
             or set RELAY_PLUGIN to a .wasm file",
            plugin.display()
        )
    });
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out.join("plugin.wasm"), bytes).unwrap();
}
