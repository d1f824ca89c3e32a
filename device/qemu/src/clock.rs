//! Time on the virt machine: the CLINT's `mtime` (10 MHz, from boot) as
//! `embassy-time`'s driver, and the Goldfish RTC for unix time (QEMU sets
//! it from the host's clock), which the journal's absolute times need.

use core::task::Waker;

/// The CLINT's `mtime`, a 64-bit counter read as two halves.
const MTIME: *const u32 = 0x0200_bff8 as *const u32;
const MTIME_HZ: u64 = 10_000_000;
/// The Goldfish RTC: nanoseconds since the unix epoch; reading the low half
/// latches the high half.
const RTC: *const u32 = 0x0010_1000 as *const u32;

fn mtime() -> u64 {
    loop {
        // SAFETY: the virt machine maps the CLINT here; reads have no side
        // effect.
        let (hi, lo, again) = unsafe {
            (
                MTIME.add(1).read_volatile(),
                MTIME.read_volatile(),
                MTIME.add(1).read_volatile(),
            )
        };
        if hi == again {
            return (u64::from(hi) << 32) | u64::from(lo);
        }
    }
}

/// Unix time, ms, from the RTC.
pub fn unix_ms() -> u64 {
    // SAFETY: the virt machine maps the Goldfish RTC here; reading the low
    // word first latches the high word, as its datasheet requires.
    let ns = unsafe {
        let lo = RTC.read_volatile();
        let hi = RTC.add(1).read_volatile();
        (u64::from(hi) << 32) | u64::from(lo)
    };
    ns / 1_000_000
}

/// `embassy-time` ticks from `mtime`. Wakes are not scheduled: the
/// executor (`embassy_futures::block_on`) polls continuously, and a timer
/// checks the time whenever it is polled.
struct Mtime;

impl embassy_time_driver::Driver for Mtime {
    fn now(&self) -> u64 {
        mtime() * embassy_time_driver::TICK_HZ / MTIME_HZ
    }

    fn schedule_wake(&self, _at: u64, waker: &Waker) {
        waker.wake_by_ref();
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: Mtime = Mtime);
