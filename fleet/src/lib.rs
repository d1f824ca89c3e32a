//! The Relay fleet simulator: many simulated devices driven through one hub,
//! to check that the hub loses nothing, runs nothing twice and keeps each
//! device's order at fleet scale, and to measure what that costs it (time,
//! memory, CPU). See `docs/benchmarks.md`, "Hub: latency and fleet".
//!
//! A simulated device is not a `relay run` host: no engine, no journal. It
//! speaks the device side of the wire protocol (`docs/protocol.md`) the
//! way a host with a native handler does (persistent session, presence with
//! a last will, dedupe by id, statuses at QoS 1), so ten thousand of them fit
//! in one process and the hub is what gets measured.
//!
//! | module | role |
//! |--------|------|
//! | `device` | one simulated device: its MQTT session, presence, handler, dedupe |
//! | `drive` | a fleet run: connect devices, submit through the hub, wait, verify, report |
//! | `broker` | a Mosquitto child configured for 10,000 connections |
//! | `hub` | a hub to drive: a `relay hub serve` child, or one in process |
//! | `report` | what a run found and cost, as text or JSON |
//! | `procstat` | peak RSS and CPU time of a process, the open-file limit |

pub mod broker;
pub mod device;
pub mod drive;
pub mod hub;
pub mod procstat;
pub mod report;

use std::time::Duration;

/// What can go wrong in a fleet run or its setup.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Topic(#[from] relay_client::TopicError),
    #[error("broker options: {0}")]
    Tls(#[from] relay_client::TlsError),
    #[error("the hub at {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("the hub refused {what} ({status}): {body}")]
    Api {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what} did not happen within {limit:?}")]
    Timeout { what: String, limit: Duration },
    #[error("{0}")]
    Setup(String),
}

impl FleetError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FleetError {
        let what = what.into();
        move |source| FleetError::Io { what, source }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16, FleetError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(FleetError::io("binding 127.0.0.1:0"))
}

/// Waits (bounded) until `127.0.0.1:port` accepts connections.
pub fn wait_for_port(port: u16, limit: Duration) -> Result<(), FleetError> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(FleetError::Timeout {
        what: format!("a listener on 127.0.0.1:{port}"),
        limit,
    })
}
