//! What the emulated device runs (see the crate doc), in order, printing
//! `ok - ...` / `not ok - ...` lines and `# key value` figures.

extern crate alloc;

use alloc::vec::Vec;

use relay_core::envelope::Envelope;
use relay_core::host_env::{FixedClock, NullLogger};
use relay_core::limits::Limits;
use relay_core::machine::{MachineOptions, Outgoing};
use relay_core::plugin::{Invocation, Role};
use relay_core::registry::Registry;
use relay_embedded::plugins;
use relay_embedded::scenario::{self, T0};
use relay_embedded::{Device, Link};
use relay_flash::ram::RamFlash;
use relay_flash::FlashLog;

use relay_qemu::board::{exit, instructions};
use relay_qemu::heap::HEAP;
use relay_qemu::println;

static DEPLOY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/deploy.wasm"));
static ECHO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/echo.wasm"));
static LOOP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/loop.wasm"));
/// `echo` built with the SDK's `one-page-heap` allocator.
static ECHO_ONE_PAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/echo-one-page.wasm"));

/// ESP32-like NOR geometry: 4-byte writes, 4 KiB sectors; a 64 KiB
/// journal partition.
type Flash = RamFlash<4, 4096>;
const JOURNAL: u32 = 64 * 1024;
const RESERVE: u32 = 4096;
const LOOP_ITERATIONS: i32 = 1_000_000;
const CALLS: u64 = 200;
/// Painted below the stack pointer at boot, to find the deepest use.
const STACK_PAINT: usize = 256 * 1024;
const PAINT: u32 = 0x5a5a_a5a5;

fn registry(wasm: &[u8]) -> Registry {
    plugins::registry(
        &[wasm],
        &Limits::default(),
        || FixedClock(T0),
        || NullLogger,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn open_journal(flash: Flash) -> FlashLog<Flash> {
    FlashLog::open(flash, 0, JOURNAL, RESERVE).expect("the journal opens")
}

#[riscv_rt::entry]
fn main() -> ! {
    HEAP.init();
    let stack_top = paint_stack();
    println!("relay-qemu: relay-core on riscv32imac, QEMU virt, wasmi");
    let mut failed = 0u16;

    // 1. The scripted run on the flash journal, with a reset.
    let flash = Flash::new(JOURNAL as usize);
    let base = HEAP.live(); // the simulated flash is not heap on a device
    HEAP.reset_peak();
    let report = scenario::run(
        open_journal(flash),
        || registry(DEPLOY),
        |log| {
            let mut flash = log.into_flash();
            flash.power_on();
            open_journal(flash)
        },
    );
    let scenario_heap = HEAP.peak() - base;
    match report {
        Ok(report) => {
            for check in &report.checks {
                if check.passed {
                    println!("ok - {}", check.name);
                } else {
                    failed += 1;
                    println!("not ok - {}", check.name);
                    println!("# {}", check.detail);
                }
            }
        }
        Err(e) => {
            failed += 1;
            println!("not ok - the scenario's journal failed: {e}");
        }
    }

    // 2. The guest loop.
    let (sum, loop_instructions) = spin(LOOP_ITERATIONS);
    let want = (i64::from(LOOP_ITERATIONS) * (i64::from(LOOP_ITERATIONS) + 1) / 2) as i32;
    if sum == want {
        println!("ok - a {LOOP_ITERATIONS}-iteration guest loop runs on wasmi");
    } else {
        failed += 1;
        println!("not ok - the guest loop returned {sum}, not {want}");
    }
    println!(
        "# loop_instructions_per_iteration {}",
        loop_instructions / LOOP_ITERATIONS as u64
    );

    // 3. Per-command cost: echo on wasmi against a native handler.
    HEAP.reset_peak();
    let base = HEAP.live();
    let started = instructions();
    let mut echo = registry(ECHO);
    let echo_load = instructions() - started;
    let echo_load_peak = HEAP.peak() - base;
    // Resident once it has served calls: its allocator grows the memory at
    // the first one.
    let plugin_call = per_call(&mut echo, "echo");
    let echo_resident = HEAP.live() - base;
    echo.listen("native-echo", |cmd: &Invocation| {
        Ok(Some(cmd.payload.clone()))
    })
    .expect("a native handler");
    let native_call = per_call(&mut echo, "native-echo");
    let (one_page_resident, one_page_call, one_page_device) = one_page_echo();
    let flash = Flash::new(JOURNAL as usize);
    let before_device = HEAP.live();
    HEAP.reset_peak();
    let (plugin_cmd, native_cmd) = per_command(echo, flash);
    let device_peak = HEAP.peak() - before_device + echo_resident;
    println!("# heap_peak_scenario_bytes {scenario_heap}");
    println!("# heap_echo_load_peak_bytes {echo_load_peak}");
    println!("# heap_echo_resident_bytes {echo_resident}");
    println!("# heap_peak_device_running_echo_bytes {device_peak}");
    println!("# heap_echo_one_page_resident_bytes {one_page_resident}");
    println!("# heap_peak_device_running_echo_one_page_bytes {one_page_device}");
    println!("# stack_high_water_bytes {}", stack_used(stack_top));
    println!("# echo_call_instructions plugin {plugin_call} native {native_call}");
    println!("# echo_load_instructions {echo_load}");
    println!("# echo_one_page_call_instructions {one_page_call}");
    // Two wasm pages are 128 KiB; one is 64 KiB: most of the gap must show.
    if one_page_resident + 48 * 1024 <= echo_resident {
        println!("ok - echo built with one-page-heap stays in its first wasm page");
    } else {
        failed += 1;
        println!("not ok - echo with one-page-heap holds {one_page_resident} bytes, the default {echo_resident}");
    }
    println!("# echo_command_instructions plugin {plugin_cmd} native {native_cmd}");
    if plugin_call > 0 && native_cmd > 0 {
        println!("ok - per-command figures measured");
    } else {
        failed += 1;
        println!("not ok - no instruction counts (run QEMU with -icount)");
    }
    println!("# {} failed", failed);
    exit(failed)
}

/// The one-page `echo`: its resident heap after load and after calls (so a
/// grown memory shows), the instructions of one call, and the peak heap of
/// the device loop running it, itself included.
fn one_page_echo() -> (usize, u64, usize) {
    let base = HEAP.live();
    let mut echo = registry(ECHO_ONE_PAGE);
    let call = per_call(&mut echo, "echo");
    let resident = HEAP.live() - base;
    echo.listen("native-echo", |cmd: &Invocation| {
        Ok(Some(cmd.payload.clone()))
    })
    .expect("a native handler");
    let flash = Flash::new(JOURNAL as usize);
    let before_device = HEAP.live();
    HEAP.reset_peak();
    per_command(echo, flash);
    let device = HEAP.peak() - before_device + resident;
    (resident, call, device)
}

/// Runs the loop module on wasmi: its result and the instructions it took.
fn spin(n: i32) -> (i32, u64) {
    let engine = wasmi::Engine::default();
    let module = wasmi::Module::new(&engine, LOOP).expect("the loop module");
    let mut store = wasmi::Store::new(&engine, ());
    let instance = wasmi::Linker::<()>::new(&engine)
        .instantiate_and_start(&mut store, &module)
        .expect("instantiates");
    let spin = instance
        .get_typed_func::<i32, i32>(&store, "spin")
        .expect("exports spin");
    let start = instructions();
    let sum = spin.call(&mut store, n).expect("runs");
    (sum, instructions() - start)
}

fn invocation(name: &str) -> Invocation {
    Invocation {
        id: "c".into(),
        name: name.into(),
        payload: Vec::from(*b"\x92\x01\xa5hello"),
        attempt: 1,
        role: Role::Admin,
    }
}

/// Instructions of one handler call (median of `CALLS`... as a mean: the
/// count is exact and deterministic under -icount).
fn per_call(registry: &mut Registry, name: &str) -> u64 {
    let cmd = invocation(name);
    registry.dispatch(&cmd).expect("a warm-up call");
    let start = instructions();
    for _ in 0..CALLS {
        registry.dispatch(&cmd).expect("calls");
    }
    (instructions() - start) / CALLS
}

/// A link that drops what it is given (the MQTT client's cost is not ours).
struct Sink;

impl Link for Sink {
    type Token = ();
    fn publish(&mut self, _: Outgoing) {}
    fn ack(&mut self, _: ()) {}
}

/// Instructions of one whole command on the device loop (envelope, journal
/// on flash, scheduler, handler, statuses): the plugin's `echo`, then the
/// native one.
fn per_command(registry: Registry, flash: Flash) -> (u64, u64) {
    let (mut dev, _) = Device::<_, Sink>::open(
        open_journal(flash),
        registry,
        relay_embedded::policy(),
        MachineOptions::default(),
        T0,
    )
    .expect("opens");
    let mut sink = Sink;
    let mut n = 0u64;
    let mut run = |dev: &mut Device<FlashLog<Flash>, Sink>, name: &str| {
        let start = instructions();
        for _ in 0..CALLS {
            n += 1;
            let id = alloc::format!("c{n}");
            let env = Envelope::new(id, name, T0).with_payload(Vec::from(*b"\x92\x01\xa5hello"));
            dev.on_message(Ok(Role::Admin), &env.to_msgpack(), (), T0, &mut sink)
                .expect("journal");
        }
        (instructions() - start) / CALLS
    };
    let plugin = run(&mut dev, "echo");
    let native = run(&mut dev, "native-echo");
    (plugin, native)
}

/// Fills the stack below the current frame with a pattern; returns the
/// top of the painted region.
fn paint_stack() -> usize {
    let here = 0u32;
    let top = (&here as *const u32 as usize) - 1024;
    let bottom = top - STACK_PAINT;
    let mut at = bottom;
    while at < top {
        // SAFETY: the region below the live frame down to STACK_PAINT is
        // stack no one uses yet (the RAM is 32 MiB; the image is far below).
        unsafe { (at as *mut u32).write_volatile(PAINT) };
        at += 4;
    }
    top
}

/// Deepest stack use below `top` since boot (bytes).
fn stack_used(top: usize) -> usize {
    let bottom = top - STACK_PAINT;
    let mut at = bottom;
    // SAFETY: reads of the region painted at boot.
    while at < top && unsafe { (at as *const u32).read_volatile() } == PAINT {
        at += 4;
    }
    top - at
}
