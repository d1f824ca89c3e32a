//! The guest kits of other languages (`guest-sdk/c`, `guest-sdk/assemblyscript`,
//! `guest-sdk/zig`) implement the canonical ABI of `wit/relay-plugin.wit` by
//! hand. Each states the ABI it implements in `relay-abi:` comment lines;
//! this test holds those lines to the host's own table of the world
//! (`relay_core::engine::module::world`, itself checked against the WIT text
//! by the wasmtime engine's tests), so a change of the world breaks the
//! build until every kit follows, instead of breaking a device.
//!
//! When the built example plugins are at hand (`RELAY_PLUGIN_DIR`, as under
//! `cargo xtask test`), their actual imports and exports are checked against
//! the same table.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use relay_core::engine::module::world::{GUEST_EXPORTS, HOST_IMPORTS, HOST_MODULE};

fn sig<T: std::fmt::Display>(params: &[T], results: &[T]) -> String {
    let list = |t: &[T]| {
        t.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match results {
        [] => format!("({})", list(params)),
        _ => format!("({}) -> {}", list(params), list(results)),
    }
}

/// The `relay-abi:` lines every kit must carry.
fn expected() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.insert("world relay:plugin@0.1.0".to_string());
    for i in HOST_IMPORTS {
        out.insert(format!(
            "import {HOST_MODULE}#{}{}",
            i.name,
            sig(i.params, i.results)
        ));
    }
    for e in GUEST_EXPORTS {
        out.insert(format!("export {}{}", e.name, sig(e.params, e.results)));
    }
    out
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every file under `dir` with `relay-abi:` lines, and those lines.
fn declared(dir: &Path) -> Vec<(PathBuf, BTreeSet<String>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if p.is_dir() {
                if name != "node_modules" && !name.starts_with('.') {
                    stack.push(p);
                }
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            // Comment lines whose text starts with `relay-abi:` (prose that
            // merely mentions the marker does not count).
            let lines: BTreeSet<String> = text
                .lines()
                .filter_map(|l| {
                    l.trim_start_matches(|c: char| c.is_whitespace() || "/*#;".contains(c))
                        .strip_prefix("relay-abi:")
                        .map(|rest| rest.trim().to_string())
                })
                .collect();
            if !lines.is_empty() {
                out.push((p, lines));
            }
        }
    }
    out
}

#[test]
fn every_kit_declares_exactly_the_world_the_host_runs() {
    let want = expected();
    for kit in ["c", "assemblyscript", "zig"] {
        let dir = workspace().join("guest-sdk").join(kit);
        if !dir.is_dir() {
            continue;
        }
        let found = declared(&dir);
        assert!(
            !found.is_empty(),
            "guest-sdk/{kit} states no `relay-abi:` lines: it must declare the ABI it implements"
        );
        for (file, lines) in found {
            let missing: Vec<_> = want.difference(&lines).collect();
            let extra: Vec<_> = lines.difference(&want).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{} disagrees with the world the host runs:\n  missing: {missing:?}\n  not in the world: {extra:?}",
                file.display()
            );
        }
    }
}

/// The built plugins in other languages import and export nothing the
/// world does not have (the engines refuse such modules; this says which kit).
#[test]
fn built_plugins_use_only_the_world() {
    let Some(dir) = std::env::var_os("RELAY_PLUGIN_DIR").map(PathBuf::from) else {
        return;
    };
    let plugins = workspace().join("plugins");
    for entry in std::fs::read_dir(&plugins).unwrap().flatten() {
        if !entry.path().join("build.sh").is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        let wasm = [
            dir.join(format!("{name}.wasm")),
            dir.join("languages").join(format!("{name}.wasm")),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| dir.join(format!("{name}.wasm")));
        let bytes = std::fs::read(&wasm).unwrap_or_else(|e| {
            panic!("{}: {e} (run `cargo xtask build-plugins`)", wasm.display())
        });
        let want = expected();
        for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
            match payload.unwrap() {
                wasmparser::Payload::ImportSection(reader) => {
                    for import in reader.into_imports() {
                        let import = import.unwrap();
                        assert_eq!(import.module, HOST_MODULE, "{name}: import {import:?}");
                        assert!(
                            HOST_IMPORTS.iter().any(|i| i.name == import.name),
                            "{name}: imports {:?}, not in the world ({want:?})",
                            import.name
                        );
                    }
                }
                wasmparser::Payload::ExportSection(reader) => {
                    for export in reader {
                        let export = export.unwrap();
                        assert!(
                            export.name == "memory"
                                || GUEST_EXPORTS.iter().any(|e| e.name == export.name),
                            "{name}: exports {:?}, not in the world",
                            export.name
                        );
                    }
                }
                _ => {}
            }
        }
    }
}
