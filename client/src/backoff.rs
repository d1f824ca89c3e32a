//! Reconnect pacing for the MQTT link: exponential backoff with "full jitter".
//!
//! When the broker goes away every device that was connected to it tries to
//! come back at once. Waiting a uniformly random time in
//! `[0, min(cap, base * 2^attempt)]` ("full jitter", as described in the AWS
//! architecture blog post on backoff) spreads that herd out, and the cap keeps
//! a device from sleeping for minutes after a long outage. A successful
//! connection (`ConnAck`) resets the attempt counter.
//!
//! The random source is a type parameter so tests run with a seeded RNG and
//! assert exact, reproducible delays (sans-IO: this module never sleeps).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Default first ceiling: 100 ms.
pub const DEFAULT_BASE: Duration = Duration::from_millis(100);
/// Default upper bound of any single wait: 10 s.
pub const DEFAULT_CAP: Duration = Duration::from_secs(10);

/// Exponential backoff with full jitter. Call [`Backoff::next_delay`] after
/// each failed attempt and [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff<R = StdRng> {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: R,
}

impl Backoff<StdRng> {
    /// A backoff seeded from the operating system's entropy.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self::with_rng(base, cap, StdRng::from_entropy())
    }

    /// A reproducible backoff, for tests.
    pub fn seeded(base: Duration, cap: Duration, seed: u64) -> Self {
        Self::with_rng(base, cap, StdRng::seed_from_u64(seed))
    }
}

impl Default for Backoff<StdRng> {
    fn default() -> Self {
        Self::new(DEFAULT_BASE, DEFAULT_CAP)
    }
}

impl<R: Rng> Backoff<R> {
    /// Builds a backoff over any random source. `cap` below `base` is raised to `base`.
    pub fn with_rng(base: Duration, cap: Duration, rng: R) -> Self {
        Self {
            base,
            cap: cap.max(base),
            attempt: 0,
            rng,
        }
    }

    /// The ceiling of the next wait, without jitter: `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        // 2^31 * base overflows long before it matters; saturate instead.
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// How long to wait before the next attempt; advances the attempt counter.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.gen_range(0..=nanos))
    }

    /// Failed attempts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Called after a successful connection: the next failure waits at most `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(10);

    #[test]
    fn ceiling_doubles_then_caps() {
        let mut b = Backoff::seeded(BASE, CAP, 1);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay();
        }
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
    }

    #[test]
    fn delays_stay_within_the_jitter_window() {
        let mut b = Backoff::seeded(BASE, CAP, 7);
        for _ in 0..200 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d <= ceiling, "{d:?} > {ceiling:?}");
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let run = |seed| {
            let mut b = Backoff::seeded(BASE, CAP, seed);
            (0..20).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn jitter_actually_spreads_delays() {
        // Full jitter: over many draws at the cap, both halves of the window are used.
        let mut b = Backoff::seeded(BASE, BASE, 3);
        let draws: Vec<_> = (0..100).map(|_| b.next_delay()).collect();
        assert!(draws.iter().any(|d| *d < BASE / 2));
        assert!(draws.iter().any(|d| *d > BASE / 2));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::seeded(BASE, CAP, 5);
        for _ in 0..6 {
            b.next_delay();
        }
        assert_eq!(b.attempt(), 6);
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.ceiling(), BASE);
    }

    #[test]
    fn huge_attempt_counts_saturate() {
        let mut b = Backoff::seeded(BASE, CAP, 9);
        for _ in 0..1000 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), CAP);
        assert!(b.next_delay() <= CAP);
    }

    #[test]
    fn cap_below_base_is_raised() {
        let b = Backoff::seeded(BASE, Duration::from_millis(1), 0);
        assert_eq!(b.ceiling(), BASE);
    }
}
