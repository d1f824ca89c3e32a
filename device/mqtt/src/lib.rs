//! The device's MQTT session on a microcontroller: the counterpart of the
//! Linux host's MQTT transport (`host/src/transport/mqtt`), `no_std`, over
//! `embassy-net` (TCP/IP) and `rust-mqtt` (an async `no_std` MQTT 5 client;
//! Mosquitto serves 3.1.1 and 5 clients alike).
//!
//! It only carries out what the device loop ([`relay_embedded::Device`])
//! decided: deliveries go in, publishes and PUBACKs come out through the
//! sans-IO [`Outbox`](relay_embedded::outbox::Outbox), which holds the
//! delivery rules. The ESP32-C6 firmware (`examples/esp32c6`) and the
//! networked emulated device (`device/qemu`, `relay-qemu-net`) both run it;
//! what differs between boards is behind [`Board`].

#![no_std]

extern crate alloc;

mod session;
mod topics;

pub use relay_core::topics::Topics;
pub use session::{Session, SessionConfig};

use embassy_time::{Duration, Instant};

/// What the session needs from the board it runs on.
pub trait Board {
    /// Unix time, ms: the journal keeps absolute times, so a board must
    /// know the real time (SNTP, an RTC) before the device opens.
    fn now_ms(&self) -> u64;

    /// One line of the device's log (a serial console).
    fn log(&self, line: core::fmt::Arguments<'_>);

    /// The journal failed: restart the board, so the journal replays.
    fn restart(&self) -> !;

    /// The timer instant at which unix time `at_ms` falls.
    fn instant_at(&self, at_ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(at_ms.saturating_sub(self.now_ms()))
    }
}
