//! The two brokers every end-to-end test runs against, behind one type.
//!
//! Not part of the device's data path: this is the "network" the tests put
//! between an app and a device host.
//!
//! - [`Mosquitto`]: a real `mosquitto` child process on a free loopback port,
//!   configured from `support/mosquitto.conf` (TCP_NODELAY, no queue limit,
//!   persistence on or off). Restarted with SIGTERM (which saves the
//!   persistence db), so persistent sessions and their queued messages
//!   survive, as in production.
//! - [`RestartableEmbedded`]: the embedded broker of `relay dev` (rumqttd).
//!   rumqttd 0.20 cannot be stopped, so a restart is simulated faithfully
//!   from a client's point of view: the clients connect through a small TCP
//!   proxy on a fixed port; a restart starts a *fresh* rumqttd (empty: no
//!   sessions, no queued messages, exactly what a restarted in-memory broker
//!   has), points the proxy at it and cuts every proxied connection. The
//!   old broker keeps running unreachable until the test process exits.
//!
//! Every wait here is bounded; a broker that does not come up is an error.

#![allow(dead_code)]

use std::fmt;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use relay_host::broker::{free_port, wait_listening, EmbeddedBroker};

/// How long a broker may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(15);

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Mosquitto,
    Embedded,
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BrokerKind::Mosquitto => "mosquitto",
            BrokerKind::Embedded => "embedded",
        })
    }
}

/// A running test broker of either kind.
pub enum TestBroker {
    Mosquitto(Mosquitto),
    Embedded(RestartableEmbedded),
}

impl TestBroker {
    /// Starts a broker of `kind` on a free loopback port (Mosquitto with
    /// persistence on, so a restart keeps sessions).
    pub fn start(kind: BrokerKind) -> Result<TestBroker> {
        Ok(match kind {
            BrokerKind::Mosquitto => TestBroker::Mosquitto(Mosquitto::start(true)?),
            BrokerKind::Embedded => TestBroker::Embedded(RestartableEmbedded::start()?),
        })
    }

    pub fn kind(&self) -> BrokerKind {
        match self {
            TestBroker::Mosquitto(_) => BrokerKind::Mosquitto,
            TestBroker::Embedded(_) => BrokerKind::Embedded,
        }
    }

    /// The port clients connect to (stable across restarts).
    pub fn port(&self) -> u16 {
        match self {
            TestBroker::Mosquitto(m) => m.port(),
            TestBroker::Embedded(e) => e.port(),
        }
    }

    /// Stops and starts the broker on the same port.
    pub fn restart(&mut self) -> Result<()> {
        match self {
            TestBroker::Mosquitto(m) => m.restart(),
            TestBroker::Embedded(e) => e.restart(),
        }
    }

    /// Whether persistent sessions (and their queued messages) survive
    /// [`restart`](Self::restart).
    pub fn keeps_sessions(&self) -> bool {
        matches!(self, TestBroker::Mosquitto(m) if m.persistence)
    }
}

/// The mosquitto binary: on `PATH`, or Debian's `/usr/sbin/mosquitto`.
pub fn mosquitto_binary() -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("mosquitto"))
        .find(|p| p.is_file());
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/mosquitto")).filter(|p| p.is_file()))
        .context("mosquitto is not installed: `apt-get install -y mosquitto` (the CI script `.ci/run` does it)")
}

/// The config template shared with the benchmark.
pub const MOSQUITTO_CONF_TEMPLATE: &str = include_str!("mosquitto.conf");

/// Fills in the template. As root, Mosquitto would drop privileges to user
/// `mosquitto`, which cannot write the persistence db into our tempdir.
pub fn mosquitto_conf(port: u16, persistence: bool, data_dir: &Path) -> String {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false);
    MOSQUITTO_CONF_TEMPLATE
        .replace("@PORT@", &port.to_string())
        .replace("@PERSISTENCE@", if persistence { "true" } else { "false" })
        .replace("@DATA_DIR@", &data_dir.display().to_string())
        .replace("@USER_LINE@", if root { "user root" } else { "" })
}

/// A `mosquitto` child process. Killed on drop.
pub struct Mosquitto {
    child: Option<Child>,
    port: u16,
    persistence: bool,
    dir: tempfile::TempDir,
    conf: PathBuf,
    log: PathBuf,
}

impl Mosquitto {
    /// Starts Mosquitto on a free loopback port (retrying another port if
    /// the chosen one was taken in the meantime).
    pub fn start(persistence: bool) -> Result<Mosquitto> {
        let binary = mosquitto_binary()?;
        let dir = tempfile::tempdir().context("tempdir for mosquitto")?;
        let conf = dir.path().join("mosquitto.conf");
        let log = dir.path().join("mosquitto.log");
        let mut m = Mosquitto {
            child: None,
            port: 0,
            persistence,
            dir,
            conf,
            log,
        };
        let mut last_error = None;
        for _ in 0..5 {
            m.port = free_port(loopback(0))?.port();
            std::fs::write(&m.conf, mosquitto_conf(m.port, persistence, m.dir.path()))?;
            match m.spawn(&binary) {
                Ok(()) => return Ok(m),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("mosquitto did not start")))
    }

    fn spawn(&mut self, binary: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "mosquitto exited with {status} at start; log:\n{}",
                    self.log_text()
                );
            }
            if TcpStream::connect_timeout(&loopback(self.port), Duration::from_millis(100)).is_ok()
            {
                self.child = Some(child);
                return Ok(());
            }
            if started.elapsed() > START_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "mosquitto did not listen on port {} within {START_LIMIT:?}",
                    self.port
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Graceful stop (SIGTERM: Mosquitto saves its persistence db), bounded;
    /// SIGKILL if it does not exit in time.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(child.id(), "TERM")?;
        let started = Instant::now();
        while child.try_wait()?.is_none() {
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.wait();
        Ok(())
    }

    /// Stops and starts again on the same port with the same config.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let binary = mosquitto_binary()?;
        // The port was ours a moment ago; retry a few times if the OS is slow to free it.
        let mut last = None;
        for _ in 0..20 {
            match self.spawn(&binary) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("mosquitto did not restart")))
    }

    /// The data dir (persistence db, config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `SIG<name>` to `pid` with the `kill` utility (no libc dependency).
pub fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{name} {pid} failed: {status}");
    }
    Ok(())
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// The embedded broker (rumqttd) behind a proxy that can "restart" it: see
/// the module doc.
pub struct RestartableEmbedded {
    proxy: Proxy,
    broker: EmbeddedBroker,
    restarts: u32,
}

impl RestartableEmbedded {
    pub fn start() -> Result<RestartableEmbedded> {
        let broker = EmbeddedBroker::start_local().context("embedded broker")?;
        let proxy = Proxy::start(broker.addr())?;
        Ok(RestartableEmbedded {
            proxy,
            broker,
            restarts: 0,
        })
    }

    pub fn port(&self) -> u16 {
        self.proxy.port
    }

    /// A fresh, empty broker takes over; every client is disconnected.
    pub fn restart(&mut self) -> Result<()> {
        self.proxy.refuse(true);
        self.proxy.cut_all();
        let fresh = EmbeddedBroker::start_local().context("embedded broker (restart)")?;
        self.proxy.set_upstream(fresh.addr());
        self.broker = fresh;
        self.restarts += 1;
        self.proxy.refuse(false);
        Ok(())
    }
}

/// A TCP forwarder on a fixed loopback port with a switchable upstream.
struct Proxy {
    port: u16,
    shared: Arc<ProxyShared>,
}

struct ProxyShared {
    upstream: Mutex<SocketAddr>,
    /// Both sockets of every live forwarded connection (to cut them).
    conns: Mutex<Vec<TcpStream>>,
    refusing: AtomicBool,
    stopped: AtomicBool,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind(loopback(0)).context("proxy bind")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(ProxyShared {
            upstream: Mutex::new(upstream),
            conns: Mutex::new(Vec::new()),
            refusing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        thread::Builder::new()
            .name("e2e-proxy".into())
            .spawn(move || accept_loop(listener, accept_shared))?;
        wait_listening(loopback(port), START_LIMIT)?;
        Ok(Proxy { port, shared })
    }

    fn set_upstream(&self, addr: SocketAddr) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = addr;
    }

    fn refuse(&self, on: bool) {
        self.shared.refusing.store(on, Ordering::SeqCst);
    }

    fn cut_all(&self) {
        for stream in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.cut_all();
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&loopback(self.port), Duration::from_millis(100));
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<ProxyShared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.refusing.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let upstream = *shared.upstream.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
            drop(client);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([c3, s3]);
        let _ = thread::Builder::new()
            .name("e2e-proxy-up".into())
            .spawn(move || pipe(client, server));
        let _ = thread::Builder::new()
            .name("e2e-proxy-down".into())
            .spawn(move || pipe(s2, c2));
    }
}

/// Copies `from` -> `to` until either side closes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
