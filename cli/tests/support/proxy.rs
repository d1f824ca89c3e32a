//! A loopback TCP proxy between a client under test and a broker, so a test
//! can cut, black-hole or refuse one client's link without touching the
//! broker or other clients.
//!
//! Modes: [`Mode::Forward`] (plain proxy), [`Mode::Freeze`] (bytes from the
//! client are counted and dropped: its publishes stay unacknowledged, in
//! flight), [`Mode::Closed`] (existing connections are closed and new ones
//! refused).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Freeze,
    Closed,
}

#[derive(Debug)]
pub struct Proxy {
    port: u16,
    mode: watch::Sender<Mode>,
    frozen_bytes: Arc<AtomicU64>,
    accept_task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream_port`.
    pub async fn start(upstream_port: u16) -> Result<Proxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let (mode, mode_rx) = watch::channel(Mode::Forward);
        let frozen_bytes = Arc::new(AtomicU64::new(0));
        let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port));
        let counter = frozen_bytes.clone();
        let accept_task = tokio::spawn(async move {
            // Runs until the proxy is dropped (the task is aborted).
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if *mode_rx.borrow() == Mode::Closed {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                tokio::spawn(pipe(client, server, mode_rx.clone(), counter.clone()));
            }
        });
        Ok(Proxy {
            port,
            mode,
            frozen_bytes,
            accept_task,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Bytes from clients dropped while frozen.
    pub fn frozen_bytes(&self) -> u64 {
        self.frozen_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Closed);
        self.accept_task.abort();
    }
}

/// Shuttles bytes both ways until either side closes or the mode becomes `Closed`.
async fn pipe(
    client: TcpStream,
    server: TcpStream,
    mut mode: watch::Receiver<Mode>,
    frozen: Arc<AtomicU64>,
) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = client_rx.read(&mut up) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                if *mode.borrow() == Mode::Freeze {
                    frozen.fetch_add(n as u64, Ordering::SeqCst);
                } else if server_tx.write_all(&up[..n]).await.is_err() {
                    return;
                }
            }
            read = server_rx.read(&mut down) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                if client_tx.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == Mode::Closed {
                    return;
                }
            }
        }
    }
}
