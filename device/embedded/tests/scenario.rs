//! The emulated device's script (`relay_embedded::scenario`) on this
//! machine, with the real `deploy` plugin on wasmi and the journal on a
//! simulated NOR flash, as the QEMU binary runs it: every check passes.

use relay_core::host_env::{Clock, MemLogger};
use relay_core::limits::Limits;
use relay_core::registry::Registry;
use relay_embedded::plugins;
use relay_embedded::scenario::{self, T0};
use relay_flash::ram::RamFlash;
use relay_flash::FlashLog;

type Flash = RamFlash<4, 4096>;

/// The scenario's clock: fixed (the plugin does not read it here).
struct Fixed;

impl Clock for Fixed {
    fn now_ms(&self) -> u64 {
        T0
    }
}

fn registry(wasm: &[u8]) -> Registry {
    plugins::registry(&[wasm], &Limits::default(), || Fixed, MemLogger::default)
        .expect("deploy loads")
}

#[test]
fn the_scripted_run_passes_on_a_flash_journal() {
    let path = relay_host::bundled::plugin("deploy").unwrap_or_else(|e| panic!("{e}"));
    let wasm = std::fs::read(path).unwrap();
    let storage = FlashLog::open(Flash::new(64 * 1024), 0, 64 * 1024, 4096).unwrap();
    let report = scenario::run(
        storage,
        || registry(&wasm),
        |log| {
            let mut flash = log.into_flash();
            flash.power_on();
            FlashLog::open(flash, 0, 64 * 1024, 4096).unwrap()
        },
    )
    .expect("no storage failure");
    for check in &report.checks {
        println!(
            "{} - {} ({})",
            if check.passed { "ok" } else { "not ok" },
            check.name,
            check.detail
        );
    }
    assert!(report.passed());
    assert_eq!(report.checks.len(), 11);
}
