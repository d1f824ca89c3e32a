//! Replays what the differential fuzzer (`fuzz/`, `cargo +nightly fuzz run
//! differential`) kept: every plugin in `tests/fixtures/fuzz/` (exported from
//! the corpus with `fuzz`'s `export-fixtures`) must give the same outcome
//! classes on wasmtime and wasmi, as the fuzz target requires. Cases where
//! an engine itself is wrong live in `tests/fixtures/fuzz/known-engine-bugs/`
//! (see its README) and must still disagree.

#[path = "differential/compare.rs"]
mod compare;

use std::path::PathBuf;

use relay_core::engine::EngineKind;

type Engines = Vec<(EngineKind, Box<dyn relay_core::engine::Engine>)>;

fn engines() -> Engines {
    [EngineKind::Wasmtime, EngineKind::Wasmi]
        .into_iter()
        .map(|kind| (kind, relay_host::engine::build(kind).expect("engine")))
        .collect()
}

/// The `.wasm` files in `tests/fixtures/<dir>`, sorted.
fn cases(dir: &str) -> Vec<PathBuf> {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/fixtures", dir]
        .iter()
        .collect();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no fixtures in {}", dir.display());
    cases
}

/// Engine bugs (`known-engine-bugs/`), each described in its README.
#[test]
fn known_engine_bugs_still_disagree() {
    let engines = engines();
    for case in cases("fuzz/known-engine-bugs") {
        let wasm = std::fs::read(&case).expect("fixture");
        assert!(
            compare::differential(&engines, &wasm).is_err(),
            "{}: the engines agree now; move it up to tests/fixtures/fuzz/",
            case.display()
        );
    }
}

#[test]
fn every_kept_fuzz_case_agrees_on_both_engines() {
    let engines = engines();
    let cases = cases("fuzz");
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
