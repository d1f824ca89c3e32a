//! Unix time on a board without a battery-backed clock: set once from SNTP
//! before the journal opens, then carried by the monotonic embassy timer.
//!
//! The journal keeps absolute times (retry deadlines, status timestamps), so
//! the device must not run on "milliseconds since boot": after a reset that
//! would move time backwards and hold a retry back by the uptime before the
//! reset. Hence the firmware waits for SNTP before it replays anything.

use core::cell::Cell;
use core::net::{IpAddr, SocketAddr};

use critical_section::Mutex;

use embassy_net::dns::DnsQueryType;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::Stack;
use embassy_time::{Duration, Instant, Timer};
use esp_println::println;
use sntpc::{get_time, NtpContext, NtpTimestampGenerator};
use sntpc_net_embassy::UdpSocketWrapper;

/// Unix ms at timer zero (0 until SNTP answered). A riscv32imac has no
/// 64-bit atomics, hence a critical section.
static EPOCH_MS: Mutex<Cell<u64>> = Mutex::new(Cell::new(0));

fn epoch_ms() -> u64 {
    critical_section::with(|cs| EPOCH_MS.borrow(cs).get())
}

/// Now, unix ms.
pub fn now_ms() -> u64 {
    epoch_ms() + Instant::now().as_millis()
}

/// The clock plugins read (`host.now-ms`).
pub struct UnixClock;

impl relay_core::host_env::Clock for UnixClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

#[derive(Clone, Copy, Default)]
struct Timestamp {
    us: u64,
}

impl NtpTimestampGenerator for Timestamp {
    fn init(&mut self) {
        self.us = now_ms() * 1000;
    }
    fn timestamp_sec(&self) -> u64 {
        self.us / 1_000_000
    }
    fn timestamp_subsec_micros(&self) -> u32 {
        (self.us % 1_000_000) as u32
    }
}

/// Sets the clock from `server`, retrying every 5 s until it answers.
pub async fn sync(stack: Stack<'static>, server: &str) {
    let mut rx_meta = [PacketMetadata::EMPTY; 4];
    let mut rx_buffer = [0; 512];
    let mut tx_meta = [PacketMetadata::EMPTY; 4];
    let mut tx_buffer = [0; 512];
    let mut socket = UdpSocket::new(
        stack,
        &mut rx_meta,
        &mut rx_buffer,
        &mut tx_meta,
        &mut tx_buffer,
    );
    socket.bind(123).expect("a fresh UDP socket binds");
    let socket = UdpSocketWrapper::new(socket);
    loop {
        let address = match stack.dns_query(server, DnsQueryType::A).await {
            Ok(found) if !found.is_empty() => found[0],
            other => {
                println!("relay: cannot resolve {server} ({other:?}); retrying");
                Timer::after(Duration::from_secs(5)).await;
                continue;
            }
        };
        let peer = SocketAddr::new(IpAddr::from(address), 123);
        match get_time(peer, &socket, NtpContext::new(Timestamp::default())).await {
            Ok(time) => {
                let unix_ms = time.sec() * 1000 + ((u64::from(time.sec_fraction()) * 1000) >> 32);
                let epoch = unix_ms.saturating_sub(Instant::now().as_millis());
                critical_section::with(|cs| EPOCH_MS.borrow(cs).set(epoch));
                println!("relay: clock set from {server}: {unix_ms} ms");
                return;
            }
            Err(e) => {
                println!("relay: no answer from {server} ({e:?}); retrying");
                Timer::after(Duration::from_secs(5)).await;
            }
        }
    }
}
