//! `cargo +nightly fuzz run differential`: a random handler body in a fixed
//! plugin shell must give the same outcome classes on wasmtime and wasmi.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use relay_core::engine::{Engine, EngineKind};

fn engines() -> &'static [(EngineKind, Box<dyn Engine>)] {
    static ENGINES: OnceLock<Vec<(EngineKind, Box<dyn Engine>)>> = OnceLock::new();
    ENGINES.get_or_init(|| {
        [EngineKind::Wasmtime, EngineKind::Wasmi]
            .into_iter()
            .map(|kind| (kind, relay_host::engine::build(kind).expect("engine")))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(wasm) = relay_fuzz::plugin(data) else {
        return;
    };
    if let Err(difference) = relay_fuzz::compare::differential(engines(), &wasm) {
        let path = std::env::temp_dir().join("relay-fuzz-disagreement.wasm");
        let _ = std::fs::write(&path, &wasm);
        panic!(
            "the engines disagree (module in {}):\n{difference}",
            path.display()
        );
    }
});
