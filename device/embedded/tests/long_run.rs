//! A device that runs for a long time on a small flash journal: thousands
//! of commands through a 64 KiB partition. The journal must compact itself
//! (the flash log asks, the machine snapshots), never fill up, and the
//! device's heap must stay bounded (remembered outcomes are capped).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use relay_core::envelope::Envelope;
use relay_core::machine::{MachineOptions, Outgoing};
use relay_core::plugin::{Invocation, Role};
use relay_core::registry::Registry;
use relay_core::status::State;
use relay_embedded::{Device, Link};
use relay_flash::ram::RamFlash;
use relay_flash::FlashLog;

/// Counts the bytes live on the heap (this test binary has one test).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PARTITION: u32 = 64 * 1024;
const ROUNDS: u64 = 20;
const PER_ROUND: u64 = 100;

/// Counts final statuses and acks without keeping them (unlike
/// `scenario::Recorder`): the test measures the heap.
#[derive(Default)]
struct Recorder {
    finished: u64,
    succeeded: u64,
    acks: u64,
}

impl Link for Recorder {
    type Token = ();

    fn publish(&mut self, message: Outgoing) {
        if let Outgoing::Status(status) = message {
            if status.is_final() {
                self.finished += 1;
                if status.status == State::Succeeded {
                    self.succeeded += 1;
                }
            }
        }
    }

    fn ack(&mut self, (): ()) {
        self.acks += 1;
    }
}

#[test]
fn two_thousand_commands_through_a_64_kib_journal_compact_it_and_keep_the_heap_bounded() {
    let mut registry = Registry::new();
    registry
        .listen("echo", |cmd: &Invocation| Ok(Some(cmd.payload.clone())))
        .unwrap();
    let log = FlashLog::open(
        RamFlash::<4, 4096>::new(PARTITION as usize),
        0,
        PARTITION,
        4096,
    )
    .unwrap();
    let (mut device, _) = Device::<_, Recorder>::open(
        log,
        registry,
        relay_embedded::policy(),
        MachineOptions::default(),
        1_000,
    )
    .unwrap();
    let mut link = Recorder::default();
    let mut live_after = Vec::new();
    let mut n = 0u64;
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            n += 1;
            // Time moves on, as on a device (the machine's linger and
            // retries of a refused append run on it).
            let now = 1_000 + n * 10;
            let envelope = Envelope::new(format!("c{n}"), "echo", now)
                .with_payload(b"\x92\x01\xa5hello".to_vec());
            device
                .on_message(Ok(Role::Admin), &envelope.to_msgpack(), (), now, &mut link)
                .unwrap();
            device.tick(now + 5, &mut link).unwrap();
        }
        live_after.push(LIVE.load(Ordering::Relaxed));
    }

    let total = ROUNDS * PER_ROUND;
    assert_eq!(
        link.acks,
        total,
        "every delivery acknowledged: {}",
        device.describe()
    );
    assert_eq!(link.finished, total, "every command finished");
    assert_eq!(link.succeeded, total);
    let stats = device.storage().stats();
    assert!(
        stats.compactions >= 5,
        "the journal compacted itself: {stats:?}"
    );
    assert!(device.storage().used() <= device.storage().capacity());
    // After the first rounds the heap only moves within one compaction
    // cycle's worth: the remembered outcomes are capped.
    let settled = live_after[3];
    let most = *live_after[3..].iter().max().unwrap();
    assert!(
        most <= settled + 32 * 1024,
        "the heap grew from {settled} to {most} bytes: {live_after:?}"
    );
}
