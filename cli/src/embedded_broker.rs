//! An MQTT broker inside the `relay` process (rumqttd), for `relay dev`,
//! `relay broker` and the integration tests.
//!
//! Not part of a device's data path: in production the device connects to a
//! real broker (Mosquitto, EMQX, a cloud service). The embedded one exists so
//! `relay dev` is a single command with nothing else to install.
//!
//! # Configuration, in code
//! One MQTT 3.1.1 (`v4`) listener, anonymous. `max_inflight_count` and the
//! router's segment sizes are raised so a test can queue thousands of
//! commands for an offline device without the broker dropping them (rumqttd
//! keeps messages for persistent sessions in a commit log of segments; the
//! oldest segment is dropped once `max_segment_count` is exceeded).
//! Sessions live in memory only: a restarted embedded broker answers
//! `session_present = false`.
//!
//! # Caveats of rumqttd 0.20
//! - `Broker::start` blocks forever and there is no shutdown: the broker runs
//!   on its own threads until the process exits. Tests that need to stop or
//!   restart it run it as a child process (`relay broker`).
//! - It binds the listener itself, so port 0 cannot be reported back; we pick
//!   a free port first (bind `:0`, read it, release it) and hand that over.
//! - It does not set TCP_NODELAY on accepted sockets and offers no hook to do
//!   so: its writes to clients may see Nagle/delayed-ACK stalls (~40 ms).
//!   Latency benchmarks use Mosquitto with `set_tcp_nodelay true`.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Largest publish the embedded broker accepts (matches the transport's default outgoing limit).
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("could not find a free port on {ip}: {source}")]
    NoFreePort {
        ip: std::net::IpAddr,
        source: io::Error,
    },
    #[error("could not start the broker thread: {0}")]
    Thread(io::Error),
    #[error(
        "the embedded broker did not accept connections on {addr} within {waited:?} (port taken?)"
    )]
    NotListening { addr: SocketAddr, waited: Duration },
}

/// A running embedded broker. It keeps running when this handle is dropped
/// (rumqttd cannot be stopped); the handle only reports where it listens.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
}

impl EmbeddedBroker {
    /// Starts a broker on `addr` (port 0 = pick a free one) and waits until
    /// it accepts connections.
    pub fn start(addr: SocketAddr) -> Result<Self, BrokerError> {
        let addr = if addr.port() == 0 {
            free_port(addr)?
        } else {
            addr
        };
        let config = config(addr);
        thread::Builder::new()
            .name("relay-broker".into())
            .spawn(move || {
                let mut broker = Broker::new(config);
                if let Err(error) = broker.start() {
                    tracing::error!(%error, "embedded broker stopped");
                }
            })
            .map_err(BrokerError::Thread)?;
        wait_listening(addr, Duration::from_secs(10))?;
        tracing::info!(%addr, "embedded MQTT broker listening");
        Ok(Self { addr })
    }

    /// Starts a broker on `127.0.0.1` at a free port.
    pub fn start_local() -> Result<Self, BrokerError> {
        Self::start(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// A port that was free a moment ago on `addr`'s IP (there is a small race
/// before the broker binds it; on loopback in tests that is acceptable).
pub fn free_port(addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let listener = TcpListener::bind(SocketAddr::new(addr.ip(), 0)).map_err(|source| {
        BrokerError::NoFreePort {
            ip: addr.ip(),
            source,
        }
    })?;
    listener
        .local_addr()
        .map_err(|source| BrokerError::NoFreePort {
            ip: addr.ip(),
            source,
        })
}

/// Polls until something accepts TCP connections on `addr`, at most `limit`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> Result<(), BrokerError> {
    let started = Instant::now();
    let connect_to = if addr.ip().is_unspecified() {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    while started.elapsed() < limit {
        if TcpStream::connect_timeout(&connect_to, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotListening {
        addr,
        waited: limit,
    })
}

/// The rumqttd configuration: one anonymous v4 listener on `addr`.
fn config(addr: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PAYLOAD_BYTES,
        // Unacked messages in flight to one client; more wait in the commit log.
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "relay-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    let router = RouterConfig {
        max_connections: 1024,
        max_outgoing_packet_count: 1000,
        // Per-filter commit log: 10 segments of 16 MiB.
        max_segment_size: 16 * 1024 * 1024,
        max_segment_count: 10,
        ..RouterConfig::default()
    };
    Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Config::default()
    }
}
