//! Over-the-air install costs (issue 11), on the real installer (the code
//! the handler thread runs for `_install`), files in a tempdir:
//!
//! - **hot swap**: from the arrival of a bundle's last chunk to the new
//!   version serving its first command, for the ~100 KiB `counter` plugin:
//!   wasmtime compiling, wasmtime from our compile cache, wasmi; against the
//!   baseline of loading the same module from the plugin directory;
//! - **longest pause**: the longest single `_install` call of an install.
//!   Commands wait behind it on the handler thread, and only behind it.
//!   Measured with the bundle prepared ahead (received, verified and loaded
//!   by the `ahead` thread while earlier commands ran, as on a device where
//!   the install was queued) and without (a device that restarted between
//!   receiving the chunks and their turn);
//! - **peak heap** of an install of a 100 KiB and a 1 MiB bundle (same code,
//!   padded), split into receiving the chunks, verifying the staged bundle,
//!   the preparation ahead (verify, load: off the FIFO), and the last
//!   chunk's turn (verify, switch); the same for a ~1 MiB module of real
//!   code (`hello-js`, when it is built), with what the loaded plugin keeps.
//!
//! `cargo bench -p relay-host --bench ota` for the figures (5 runs each,
//! medians); without `--bench` (as under `cargo test --all-targets`) it runs
//! once as a smoke test.

#[path = "../tests/ota_support/mod.rs"]
#[allow(dead_code)]
mod ota_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ota_support::plugin_wat::{plugin_module, Behaviour};
use relay_core::engine::wasmi::WasmiEngine;
use relay_core::engine::Engine;
use relay_core::host_env::HostEnv;
use relay_core::limits::Limits;
use relay_core::ota::verify::TrustedKeys;
use relay_core::ota::{self, sign_bundle};
use relay_core::plugin::{Invocation, Role};
use relay_core::registry::Registry;
use relay_core::scheduler::AttemptResult;
use relay_host::engine::wasmtime::WasmtimeEngine;
use relay_host::runtime::ahead::Ahead;
use relay_host::runtime::installer::{Installer, UpdateOptions};

/// Counts live heap bytes and their peak.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak heap above the level at the start of `f`.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

const CHUNK: usize = 16 * 1024;

fn key() -> ed25519_dalek::SigningKey {
    ota_support::key(1)
}

/// A bundle of `module`, its manifest from the module's own describe().
fn bundle_of(module: &[u8]) -> Vec<u8> {
    let limits = Limits::default();
    let plugin = WasmiEngine::new()
        .load(module, &limits, &mut |_| HostEnv::detached(&limits))
        .expect("the module loads");
    let info = plugin.info().clone();
    let names: Vec<&str> = info.commands.iter().map(|c| c.name.as_str()).collect();
    let mut manifest = ota_support::manifest(&info.name, &info.version, &names);
    manifest.commands = info.commands.clone();
    sign_bundle(manifest, module, &key())
}

/// `module` with a custom section of `pad` bytes (code unchanged).
fn padded(module: &[u8], pad: usize) -> Vec<u8> {
    let name = b"pad";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.resize(payload.len() + pad, 0xab);
    let mut out = module.to_vec();
    out.push(0);
    let mut len = payload.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}

fn chunks(bundle: &[u8]) -> Vec<Invocation> {
    ota::chunk::payloads(bundle, CHUNK)
        .into_iter()
        .enumerate()
        .map(|(i, payload)| Invocation {
            id: format!("chunk-{i}"),
            name: ota::INSTALL.into(),
            payload,
            attempt: 1,
            role: Role::Admin,
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    WasmtimeCompile,
    WasmtimeCached,
    Wasmi,
}

fn engine(kind: Kind, data: &Path) -> Arc<dyn Engine> {
    match kind {
        Kind::Wasmi => Arc::new(WasmiEngine::new()),
        _ => Arc::new(WasmtimeEngine::with_cache_dir(data.join("compiled")).expect("wasmtime")),
    }
}

fn installer(engine: Arc<dyn Engine>, data: &Path, registry: &mut Registry) -> Installer {
    let mut trust = TrustedKeys::new();
    trust.trust(key().verifying_key().as_bytes()).unwrap();
    let options = UpdateOptions {
        trust,
        ..UpdateOptions::default()
    };
    Installer::open(
        engine,
        Limits::default(),
        data,
        options,
        Default::default(),
        registry,
    )
    .expect("installer")
}

struct Install {
    /// Last chunk arrival -> first command answered by the new version.
    swap: Duration,
    /// The longest single `_install` call.
    longest: Duration,
}

/// Installs `bundle` on a fresh data dir (`seed`: a compile cache to copy
/// in); `ahead`: the chunks were received and the bundle prepared before
/// their turn.
fn install(
    kind: Kind,
    bundle: &[u8],
    command: &str,
    seed: Option<&Path>,
    ahead: bool,
) -> (Install, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    if let Some(seed) = seed {
        copy_dir(&seed.join("compiled"), &dir.path().join("compiled"));
    }
    let mut registry = Registry::new();
    let mut inst = installer(engine(kind, dir.path()), dir.path(), &mut registry);
    let all = chunks(bundle);
    if ahead {
        prepare_ahead(&inst, all.clone());
    }
    let mut longest = Duration::ZERO;
    let mut swap = Duration::ZERO;
    for (i, chunk) in all.iter().enumerate() {
        let t = Instant::now();
        let (result, _) = inst.run(&mut registry, chunk);
        assert!(
            matches!(result, AttemptResult::Succeeded { .. }),
            "{result:?}"
        );
        let took = t.elapsed();
        longest = longest.max(took);
        if i + 1 == all.len() {
            let first = Invocation {
                id: "after".into(),
                name: command.into(),
                payload: vec![0x01],
                attempt: 1,
                role: Role::Admin,
            };
            registry.dispatch(&first).expect("the new version serves");
            swap = t.elapsed();
        }
    }
    (Install { swap, longest }, dir)
}

/// Hands `chunks` to an `ahead` thread and waits until it loaded the plugin.
fn prepare_ahead(inst: &Installer, chunks: Vec<Invocation>) {
    let ahead = Ahead::spawn(inst.ahead_setup()).expect("ahead thread");
    for c in chunks {
        ahead.submit(c);
    }
    wait_loaded(inst);
}

fn wait_loaded(inst: &Installer) {
    let ready = inst.ready();
    let t = Instant::now();
    while ready.loaded().is_none() {
        assert!(t.elapsed() < Duration::from_secs(60), "never prepared");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    if let Ok(entries) = std::fs::read_dir(from) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                copy_dir(&p, &to.join(e.file_name()));
            } else {
                std::fs::copy(&p, to.join(e.file_name())).unwrap();
            }
        }
    }
}

/// Baseline: loading the module from a file, as at start.
fn plain_load(kind: Kind, module: &Path, seed: Option<&Path>) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    if let Some(seed) = seed {
        copy_dir(&seed.join("compiled"), &dir.path().join("compiled"));
    }
    let engine = engine(kind, dir.path());
    let t = Instant::now();
    relay_host::runtime::loader::load_plugin(&*engine, module, &Limits::default(), dir.path())
        .expect("loads");
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runs = if full { 5 } else { 1 };
    let counter_path = relay_host::bundled::plugin("counter").unwrap_or_else(|e| panic!("{e}"));
    let counter = std::fs::read(&counter_path).unwrap();
    let counter_bundle = bundle_of(&counter);
    println!(
        "hot swap of counter ({} KiB module, {} KiB bundle, {} KiB chunks), median of {runs}:",
        counter.len() / 1024,
        counter_bundle.len() / 1024,
        CHUNK / 1024
    );
    println!("| engine | baseline: load from the plugin dir | install: last chunk -> serving | ratio | longest pause | prepared ahead: last chunk -> serving | longest pause |");
    println!("|---|---|---|---|---|---|---|");
    // A compile cache seeded by one install, for the cached runs.
    let (_, seeded) = install(
        Kind::WasmtimeCompile,
        &counter_bundle,
        "increment",
        None,
        false,
    );
    for kind in [Kind::WasmtimeCompile, Kind::WasmtimeCached, Kind::Wasmi] {
        let seed = (kind == Kind::WasmtimeCached).then(|| seeded.path());
        let (mut swaps, mut pauses, mut bases) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ahead_swaps, mut ahead_pauses) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (r, _dir) = install(kind, &counter_bundle, "increment", seed, false);
            swaps.push(r.swap);
            pauses.push(r.longest);
            let (r, _dir) = install(kind, &counter_bundle, "increment", seed, true);
            ahead_swaps.push(r.swap);
            ahead_pauses.push(r.longest);
            bases.push(plain_load(kind, &counter_path, seed));
        }
        let (swap, base) = (median(swaps), median(bases));
        println!(
            "| {kind:?} | {} | {} | {:.2}x | {} | {} | {} |",
            ms(base),
            ms(swap),
            swap.as_secs_f64() / base.as_secs_f64(),
            ms(median(pauses)),
            ms(median(ahead_swaps)),
            ms(median(ahead_pauses)),
        );
    }

    println!("\npeak heap of an install (wasmi), by bundle (KiB unless marked):");
    println!("| bundle | receiving (each chunk's turn) | verifying (signature + sha256) | last chunk, loading in its turn | prepared ahead (verify + load, off the FIFO) | last chunk's turn, prepared ahead | the loaded plugin keeps |");
    println!("|---|---|---|---|---|---|---|");
    let small = plugin_module("leds", "1.0.0", &["blink"], Behaviour::Echo);
    let mut cases: Vec<(String, Vec<u8>)> = [100 * 1024, 1024 * 1024]
        .into_iter()
        .map(|pad| {
            let bundle = bundle_of(&padded(&small, pad));
            (format!("{} KiB (padded)", bundle.len() / 1024), bundle)
        })
        .collect();
    let js = counter_path
        .parent()
        .unwrap()
        .join("languages/hello-js.wasm");
    match std::fs::read(&js) {
        Ok(module) => {
            let bundle = bundle_of(&module);
            cases.push((
                format!("{} KiB (hello-js: code)", bundle.len() / 1024),
                bundle,
            ));
        }
        Err(_) => println!("(hello-js is not built: {} missing)", js.display()),
    }
    for (label, bundle) in cases {
        let heap = install_heap(&bundle);
        println!(
            "| {label} | {} B | {} B | {} | {} | {} | {} |",
            heap.receiving,
            heap.verifying,
            kib(heap.last_loading),
            kib(heap.ahead),
            kib(heap.last_ahead),
            kib(heap.kept),
        );
    }
}

fn kib(bytes: usize) -> String {
    format!("{:.1}", bytes as f64 / 1024.0)
}

struct Heap {
    receiving: usize,
    verifying: usize,
    last_loading: usize,
    ahead: usize,
    last_ahead: usize,
    kept: usize,
}

/// Peak heap of the steps of installing `bundle` on wasmi (see the doc).
fn install_heap(bundle: &[u8]) -> Heap {
    let all = chunks(bundle);
    let (last, rest) = all.split_last().unwrap();
    let run_all = |inst: &mut Installer, registry: &mut Registry, cs: &[Invocation]| {
        for c in cs {
            let (r, _) = inst.run(registry, c);
            assert!(matches!(r, AttemptResult::Succeeded { .. }), "{r:?}");
        }
    };

    // Loading in the last chunk's turn.
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::new();
    let mut inst = installer(engine(Kind::Wasmi, dir.path()), dir.path(), &mut registry);
    let (_, receiving) = peak_of(|| {
        for c in rest {
            run_all(&mut inst, &mut registry, std::slice::from_ref(c));
        }
    });
    let files = relay_store::UpdateFiles::open(dir.path()).unwrap();
    let mut trust = TrustedKeys::new();
    trust.trust(key().verifying_key().as_bytes()).unwrap();
    let staged = dir.path().join("updates/staging.part");
    let full = std::fs::read(&staged).unwrap();
    let mut whole = full.clone();
    whole.extend_from_slice(ota::chunk::decode(&last.payload).unwrap().data);
    std::fs::write(&staged, &whole).unwrap();
    let (verified, verifying) = peak_of(|| {
        let mut staged = files.staged_bundle().unwrap();
        ota::verify::verify(&mut staged, &trust, u64::MAX)
    });
    verified.expect("verifies");
    std::fs::write(&staged, &full).unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    let (_, last_loading) =
        peak_of(|| run_all(&mut inst, &mut registry, std::slice::from_ref(last)));
    let kept = LIVE.load(Ordering::Relaxed).saturating_sub(before);

    // Prepared ahead, then the turns.
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::new();
    let mut inst = installer(engine(Kind::Wasmi, dir.path()), dir.path(), &mut registry);
    // Every chunk but the last staged ahead, then the last one measured:
    // its verify and load (chunks are in memory before, as queued
    // commands are, and freed as they are staged).
    let thread = Ahead::spawn(inst.ahead_setup()).expect("ahead thread");
    for c in rest {
        thread.submit(c.clone());
    }
    let staged = dir.path().join("updates/ahead/staging.part");
    let offset = bundle.len() - ota::chunk::decode(&last.payload).unwrap().data.len();
    while std::fs::metadata(&staged).map_or(0, |m| m.len()) < offset as u64 {
        std::thread::sleep(Duration::from_micros(200));
    }
    let last_chunk = last.clone();
    let (_, ahead) = peak_of(|| {
        thread.submit(last_chunk);
        wait_loaded(&inst);
    });
    run_all(&mut inst, &mut registry, rest);
    let (_, last_ahead) = peak_of(|| run_all(&mut inst, &mut registry, std::slice::from_ref(last)));
    assert_eq!(
        inst.ready().adopted(),
        1,
        "the turn took the plugin loaded ahead"
    );
    Heap {
        receiving,
        verifying,
        last_loading,
        ahead,
        last_ahead,
        kept,
    }
}
