//! Replays what the differential fuzzer (`fuzz/`, `cargo +nightly fuzz run
//! differential`) kept: every plugin in `tests/fixtures/fuzz/` (exported from
//! the corpus with `fuzz`'s `export-fixtures`) must give the same outcome
//! classes on wasmtime and wasmi, as the fuzz target requires.

#[path = "differential/compare.rs"]
mod compare;

use std::path::PathBuf;

use relay_core::engine::EngineKind;

#[test]
fn every_kept_fuzz_case_agrees_on_both_engines() {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/fixtures/fuzz"]
        .iter()
        .collect();
    let engines: Vec<_> = [EngineKind::Wasmtime, EngineKind::Wasmi]
        .into_iter()
        .map(|kind| (kind, relay_host::engine::build(kind).expect("engine")))
        .collect();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no fixtures in {}", dir.display());
    let mut loaded = 0;
    for case in &cases {
        let wasm = std::fs::read(case).expect("fixture");
        if let Err(difference) = compare::differential(&engines, &wasm) {
            panic!("{}: the engines disagree:\n{difference}", case.display());
        }
        let seen = compare::observe(&*engines[0].1, &wasm, &[&[1, 2, 3, 4]]);
        loaded += usize::from(seen[0] == "loaded");
    }
    println!("{} cases, {loaded} of them load", cases.len());
}
