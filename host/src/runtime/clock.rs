//! Time for the runtime: `now` in unix milliseconds, the one input the
//! sans-IO scheduler needs besides messages. Behind a trait so tests can run
//! on tokio's paused (virtual) clock: [`TokioClock`] advances exactly with
//! `tokio::time`, so `tokio::time::pause()` makes retries and expiries
//! instant and deterministic, while production uses the wall clock
//! ([`SystemClock`]), which is what apps compare `expires_at` against.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in unix ms.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// Unix ms of the system clock (0 if it is set before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        unix_ms()
    }
}

/// Plugins read the same wall clock (the WIT `host.now-ms`).
impl relay_core::host_env::Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        unix_ms()
    }
}

/// A clock that follows `tokio::time`: starts at `base_ms` and advances with
/// [`tokio::time::Instant`], so it jumps along when a test pauses and
/// advances tokio's time. Create it inside the runtime whose time it follows.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base_ms: u64,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new(base_ms: u64) -> Self {
        TokioClock {
            base_ms,
            start: tokio::time::Instant::now(),
        }
    }

    /// Starts at the current wall-clock time.
    pub fn from_system() -> Self {
        TokioClock::new(unix_ms())
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + self.start.elapsed().as_millis() as u64
    }
}
