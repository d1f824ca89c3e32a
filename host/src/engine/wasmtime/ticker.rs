//! Wall-time budgets (contract point 7) use wasmtime epochs: a thread bumps
//! the engine's epoch every [`TICK`], and each call sets its deadline in
//! ticks. Epochs only interrupt wasm code, never a host import, which is fine
//! because every import here is short and bounded.
//!
//! An idle device should not wake 1000 times a second, so the ticker parks
//! after [`IDLE_TICKS_BEFORE_PARK`] ticks without a call in flight and a call
//! wakes it on entry. Calls in quick succession never touch the lock: the
//! fast path is two atomic operations.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Epoch period: the resolution of time budgets.
pub(super) const TICK: Duration = Duration::from_millis(1);
const IDLE_TICKS_BEFORE_PARK: u32 = 100;

/// Deadline, in ticks from now, for a budget of `ms` milliseconds. One extra
/// tick covers the part of the current tick that has already elapsed.
pub(super) fn deadline_ticks(ms: u32) -> u64 {
    let tick_ms = TICK.as_millis().max(1) as u64;
    u64::from(ms).div_ceil(tick_ms) + 1
}

#[derive(Default)]
struct Shared {
    active: AtomicUsize,
    parked: AtomicBool,
    stop: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Owns the ticker thread of one `wasmtime::Engine`; stops it on drop.
pub(super) struct EpochTicker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: wasmtime::Engine) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("relay-epoch".into())
            .stack_size(64 * 1024)
            .spawn(move || run(&engine, &for_thread))?;
        Ok(EpochTicker {
            shared,
            thread: Some(thread),
        })
    }

    /// Marks a call in flight until the guard drops (wakes a parked ticker).
    pub fn enter(&self) -> ActiveCall<'_> {
        self.shared.active.fetch_add(1, SeqCst);
        if self.shared.parked.load(SeqCst) {
            let _guard = self.shared.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_one();
        }
        ActiveCall(&self.shared)
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A call in flight; see [`EpochTicker::enter`].
pub(super) struct ActiveCall<'a>(&'a Shared);

impl Drop for ActiveCall<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, SeqCst);
    }
}

fn run(engine: &wasmtime::Engine, shared: &Shared) {
    let mut idle_ticks = 0;
    while !shared.stop.load(SeqCst) {
        std::thread::sleep(TICK);
        engine.increment_epoch();
        if shared.active.load(SeqCst) > 0 {
            idle_ticks = 0;
            continue;
        }
        idle_ticks += 1;
        if idle_ticks < IDLE_TICKS_BEFORE_PARK {
            continue;
        }
        // Park. `enter` increments `active` before reading `parked`, and we
        // set `parked` before reading `active` (all SeqCst), so either it sees
        // us parked and notifies under the lock, or we see its call.
        let mut guard = shared.lock.lock().unwrap_or_else(|p| p.into_inner());
        shared.parked.store(true, SeqCst);
        while shared.active.load(SeqCst) == 0 && !shared.stop.load(SeqCst) {
            guard = shared.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
        }
        shared.parked.store(false, SeqCst);
        idle_ticks = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_and_adds_the_current_tick() {
        assert_eq!(deadline_ticks(0), 1);
        assert_eq!(deadline_ticks(1), 2);
        assert_eq!(deadline_ticks(5000), 5001);
    }
}
