//! A plugin author's test, with [`relay_harness::Harness`].
//!
//! The harness runs one plugin on one engine with no broker, journal or
//! device: the plugin sits in a real registry (so role checks and unknown
//! commands answer as on a device), its kv store is in memory and survives
//! `restart()`, the clock is fixed. The same calls run on both engines,
//! because a plugin ships as one artifact for wasmtime (Linux) and wasmi
//! (microcontrollers) and must behave the same on both.
//!
//! What it does, over the bundled `counter` plugin, on each engine:
//! 1. `increment` twice and reads the reply and the kv store;
//! 2. `restart()`: a new instance (guest memory gone), the kv kept, so `get`
//!    still answers 5;
//! 3. a secondary user may read but not reset: the registry answers
//!    `not_permitted` before the plugin runs;
//! 4. a bad payload is the plugin's own `invalid-argument` error.
//!
//! In a crate's tests the same lines go into a `#[test]`.
//! Needs the bundled plugins: `cargo xtask build-plugins` first.
//! Run: `cargo run -p relay-cli --example harness` (wasmtime compiles the
//! plugin with Cranelift at each load: seconds in a debug build).

use anyhow::ensure;
use relay_core::engine::EngineKind;
use relay_core::plugin::{ErrorKind, Role};
use relay_harness::{bundled_plugin, Harness};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    // Fails with "run `cargo xtask build-plugins`" when the plugins are not built.
    let counter = bundled_plugin("counter")?;

    for kind in [EngineKind::Wasmtime, EngineKind::Wasmi] {
        let mut h = Harness::load(&counter, kind)?;
        println!("{} {} on {kind}", h.info().name, h.info().version);

        // 1. Calls take and return JSON; the harness does the msgpack.
        h.call("increment", json!({ "by": 2 }))?;
        let reply = h.call("increment", json!({ "by": 3 }))?.reply_json()?;
        println!("  increment -> {reply}, kv {}", h.kv_json());
        ensure!(reply == json!({ "value": 5 }));
        ensure!(h.kv_json() == json!({ "count": 5 }));

        // 2. A host restart: state lives in kv, never in the instance.
        h.restart()?;
        let reply = h.call_empty("get").reply_json()?;
        println!("  after restart: get -> {reply}");
        ensure!(reply == json!({ "value": 5 }));

        // 3. Roles: set for the following calls.
        let read = h.as_role(Role::Secondary).call_empty("get");
        let reset = h.call_empty("reset");
        let code = reset.code().unwrap_or("-");
        println!(
            "  secondary: get ok = {}, reset -> {code}",
            read.reply_json().is_ok()
        );
        ensure!(reset.code() == Some("not_permitted"));

        // 4. The plugin refuses what it cannot read, naming why.
        let bad = h
            .as_role(Role::Admin)
            .call("increment", json!({ "by": "two" }))?;
        println!("  bad payload -> {}", bad.outcome.to_json());
        ensure!(bad.error_kind() == Some(ErrorKind::InvalidArgument));
        ensure!(
            h.kv_json() == json!({ "count": 5 }),
            "a refused call changed kv"
        );
    }
    println!("both engines agree");
    Ok(())
}
