//! `echo` built with the guest SDK's `one-page-heap` allocator
//! (`target/plugins/mcu/echo.wasm`, from `cargo xtask build-plugins`): the
//! allocator starts in the free tail of the module's first page and grows
//! the memory only past it. The same replies on both engines for payloads
//! that fit in the tail and payloads that need one grown page, two, and a
//! heap extended call after call.

use relay_core::engine::{Engine, EngineKind, Plugin};
use relay_core::host_env::{FixedClock, HostEnv, MemKv, MemLogger};
use relay_core::limits::Limits;
use relay_core::plugin::{Invocation, Role};

const ENGINES: [EngineKind; 2] = [EngineKind::Wasmtime, EngineKind::Wasmi];

fn load(kind: EngineKind) -> Box<dyn Plugin> {
    let path = relay_host::bundled::plugin_dir()
        .join("mcu")
        .join("echo.wasm");
    let wasm = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask build-plugins`)", path.display()));
    let engine: Box<dyn Engine> =
        relay_host::engine::build(kind).unwrap_or_else(|e| panic!("{kind}: {e:#}"));
    let limits = Limits::default();
    engine
        .load(&wasm, &limits, &mut |info| {
            HostEnv::new(
                info.name.clone(),
                Box::new(MemKv::default()),
                Box::new(FixedClock(0)),
                Box::new(MemLogger::default()),
                &limits,
            )
        })
        .unwrap_or_else(|e| panic!("{kind}: the one-page echo does not load: {e}"))
}

/// A msgpack `bin` of `len` bytes (a pattern, so a misplaced copy shows).
fn bin(len: usize) -> Vec<u8> {
    let mut payload = vec![0xc6];
    payload.extend((len as u32).to_be_bytes());
    payload.extend((0..len).map(|i| (i * 7 + i / 251) as u8));
    payload
}

#[test]
fn the_one_page_echo_replies_the_same_on_both_engines_in_and_past_its_first_page() {
    for kind in ENGINES {
        let mut plugin = load(kind);
        // Small, then past the tail (one page grown), then two pages at
        // once, then small again (freed memory reused), several times.
        for round in 0..3 {
            for len in [16, 1024, 40 * 1024, 100 * 1024, 200 * 1024, 8] {
                let payload = bin(len);
                let cmd = Invocation {
                    id: format!("c-{round}-{len}"),
                    name: "echo".into(),
                    payload: payload.clone(),
                    attempt: 1,
                    role: Role::Admin,
                };
                let out = plugin
                    .handle(&cmd)
                    .unwrap_or_else(|e| panic!("{kind}: echo of {len} bytes: {e}"));
                assert_eq!(
                    out.result,
                    Ok(Some(payload)),
                    "{kind}: echo of {len} bytes, round {round}"
                );
            }
        }
    }
}
