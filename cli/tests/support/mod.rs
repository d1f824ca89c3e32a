//! Shared support for the integration tests: real brokers on free loopback
//! ports, so every transport/runtime test can run against BOTH Mosquitto and
//! the embedded rumqttd broker.
//!
//! Use from a test file with `mod support;`. Brokers are separate processes
//! (Mosquitto, or `relay broker` for the embedded one) so a test can stop and
//! restart them; each is killed when its handle drops.

#![allow(dead_code)]

pub mod mosquitto;
pub mod proxy;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use mosquitto::Mosquitto;
pub use proxy::{Mode, Proxy};

/// Loopback only, always.
pub const HOST: &str = "127.0.0.1";

/// How long a broker may take to accept connections after a (re)start.
pub const START_LIMIT: Duration = Duration::from_secs(15);

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 works")
}

/// Waits (bounded) until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, limit: Duration) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let started = Instant::now();
    while started.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing accepted connections on {addr} within {limit:?}")
}

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// Debian's `mosquitto`, persistence on: a restart keeps sessions and queues.
    Mosquitto,
    /// rumqttd as embedded by `relay` (run as `relay broker`): sessions in memory,
    /// so a restart loses them (`session_present = false`).
    Embedded,
}

impl BrokerKind {
    pub const ALL: [BrokerKind; 2] = [BrokerKind::Mosquitto, BrokerKind::Embedded];

    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Mosquitto => "mosquitto",
            BrokerKind::Embedded => "embedded",
        }
    }
}

/// A broker process on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct TestBroker {
    kind: BrokerKind,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Mosquitto(Mosquitto),
    Embedded(EmbeddedProcess),
}

impl TestBroker {
    pub fn start(kind: BrokerKind) -> Result<Self> {
        let inner = match kind {
            BrokerKind::Mosquitto => Inner::Mosquitto(Mosquitto::start()?),
            BrokerKind::Embedded => Inner::Embedded(EmbeddedProcess::start(free_port())?),
        };
        Ok(Self { kind, inner })
    }

    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    pub fn host(&self) -> &'static str {
        HOST
    }

    pub fn port(&self) -> u16 {
        match &self.inner {
            Inner::Mosquitto(m) => m.port(),
            Inner::Embedded(e) => e.port,
        }
    }

    /// Whether sessions and queued messages survive [`restart`](Self::restart).
    pub fn keeps_sessions_across_restart(&self) -> bool {
        self.kind == BrokerKind::Mosquitto
    }

    /// Stops the broker (gracefully for Mosquitto, so it saves its database).
    pub fn stop(&mut self) -> Result<()> {
        match &mut self.inner {
            Inner::Mosquitto(m) => m.stop(),
            Inner::Embedded(e) => {
                e.stop();
                Ok(())
            }
        }
    }

    /// Starts it again on the same port after [`stop`](Self::stop).
    pub fn start_again(&mut self) -> Result<()> {
        match &mut self.inner {
            Inner::Mosquitto(m) => m.start_again(),
            Inner::Embedded(e) => {
                *e = EmbeddedProcess::start(e.port)?;
                Ok(())
            }
        }
    }

    /// Stop, then start on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Stop, forget every session and queued message, start on the same port:
    /// clients then get `session_present = false`.
    pub fn restart_losing_sessions(&mut self) -> Result<()> {
        self.stop()?;
        if let Inner::Mosquitto(m) = &mut self.inner {
            m.wipe_persistence()?;
        }
        self.start_again()
    }
}

/// `relay broker --port P` as a child process.
#[derive(Debug)]
struct EmbeddedProcess {
    port: u16,
    child: Option<Child>,
}

impl EmbeddedProcess {
    fn start(port: u16) -> Result<Self> {
        let relay = Path::new(env!("CARGO_BIN_EXE_relay"));
        let child = Command::new(relay)
            .args(["broker", "--bind", HOST, "--port", &port.to_string()])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning {} broker", relay.display()))?;
        let mut process = Self {
            port,
            child: Some(child),
        };
        if let Err(e) = wait_for_port(port, START_LIMIT) {
            process.stop();
            return Err(e.context("the embedded broker (relay broker) did not come up"));
        }
        Ok(process)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EmbeddedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
