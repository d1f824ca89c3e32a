//! Runs one artifact on both engines and reduces what happened to outcome
//! classes, for the differential fuzz target (`fuzz/`) and the regression
//! test that replays what it found (`host/tests/fuzz_regressions.rs`).
//!
//! A class is what the host would report: a reply's bytes, a handler
//! error's kind and message, or a failure's variant and status code.
//! Engine-specific words are left out where the contract allows them to
//! differ: trap messages, and `Abi` against `Trap` (the same status code).

use relay_core::engine::{Engine, EngineKind, PluginError};
use relay_core::host_env::{FixedClock, HostEnv, MemKv, MemLogger};
use relay_core::limits::Limits;
use relay_core::plugin::{Invocation, Role};

/// Small budgets, so a generated body runs quickly and cannot recurse
/// deeper than either engine's stack allows (each call costs fuel).
pub fn fuzz_limits() -> Limits {
    Limits {
        fuel_per_call: 3_000,
        time_budget_ms: 2_000,
        max_memory_bytes: 1 << 20,
        ..Limits::default()
    }
}

/// The class of a failed load or call.
pub fn error_class(e: &PluginError) -> String {
    match e {
        // The shared load step's words are the same on both engines.
        PluginError::InvalidModule(m) | PluginError::Link(m) | PluginError::Describe(m) => {
            format!("{e:?}")
                .split('(')
                .next()
                .unwrap_or_default()
                .to_owned()
                + ": "
                + m
        }
        PluginError::Instantiate(_) => "instantiate".into(),
        PluginError::Abi(_) | PluginError::Trap(_) => format!("trap-class ({})", e.code()),
        other => format!("{other:?}"),
    }
}

/// Loads `wasm` on `kind` and calls `handle` with each payload.
pub fn observe(engine: &dyn Engine, wasm: &[u8], payloads: &[&[u8]]) -> Vec<String> {
    let limits = fuzz_limits();
    let loaded = engine.load(wasm, &limits, &mut |info| {
        HostEnv::new(
            info.name.clone(),
            Box::new(MemKv::default()),
            Box::new(FixedClock(1_700_000_000_000)),
            Box::new(MemLogger::default()),
            &limits,
        )
    });
    let mut plugin = match loaded {
        Ok(plugin) => plugin,
        Err(e) => return vec![format!("load: {}", error_class(&e))],
    };
    let mut seen = vec!["loaded".to_owned()];
    for payload in payloads {
        let cmd = Invocation {
            id: "f-1".into(),
            name: "run".into(),
            payload: payload.to_vec(),
            attempt: 1,
            role: Role::Admin,
        };
        seen.push(match plugin.handle(&cmd) {
            Ok(outcome) => format!("{:?} events {:?}", outcome.result, outcome.events),
            Err(e) => error_class(&e),
        });
    }
    seen
}

/// `Err` with both engines' observations when they differ.
pub fn differential(engines: &[(EngineKind, Box<dyn Engine>)], wasm: &[u8]) -> Result<(), String> {
    let payloads: [&[u8]; 2] = [&[1, 2, 3, 4], &[]];
    let mut runs = engines
        .iter()
        .map(|(kind, engine)| (*kind, observe(&**engine, wasm, &payloads)));
    let Some((first_kind, first)) = runs.next() else {
        return Ok(());
    };
    for (kind, seen) in runs {
        if seen != first {
            return Err(format!("{first_kind}: {first:?}\n{kind}: {seen:?}"));
        }
    }
    Ok(())
}
