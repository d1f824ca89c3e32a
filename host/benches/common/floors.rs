//! The floors every end-to-end benchmark measures in its own run, shared by
//! the device's (`host/benches/e2e.rs`) and the hub's
//! (`fleet/benches/hub_latency.rs`, through `#[path]`): one fsync on the
//! real disk, a bare broker round trip (an echo client), the MQTT client
//! that timestamps what it receives, and the percentiles they report.

#![allow(dead_code)] // each bench uses its own part

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// Upper bound of any wait (a stall becomes an error, not a hang).
pub const LIMIT: Duration = Duration::from_secs(120);

/// Percentiles and mean of a sample, in ms.
#[derive(Debug, Clone, Copy)]
pub struct Dist {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
}

pub fn dist(mut samples: Vec<Duration>) -> Dist {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: usize| ms(samples[(samples.len() * q / 100).min(samples.len() - 1)]);
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64;
    Dist {
        p50: at(50),
        p90: at(90),
        p99: at(99),
        mean,
    }
}

/// Where journals, stores and the fsync measurement live: the real disk
/// (`RELAY_BENCH_DIR`, else the including crate's `CARGO_TARGET_TMPDIR`).
pub fn bench_dir() -> PathBuf {
    std::env::var_os("RELAY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

/// One fsync: `fdatasync` after a small append to a growing file (what a
/// journal without preallocation pays per commit).
pub struct Fsync {
    _dir: tempfile::TempDir,
    file: std::fs::File,
}

impl Fsync {
    pub fn open(dir: &Path) -> Result<Fsync> {
        let tmp = tempfile::tempdir_in(dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(tmp.path().join("fsync.log"))?;
        Ok(Fsync { _dir: tmp, file })
    }

    pub fn once(&mut self) -> Result<Duration> {
        let record = [0x5au8; 64];
        let t = Instant::now();
        self.file.write_all(&record)?;
        self.file.sync_data()?;
        Ok(t.elapsed())
    }
}

/// A rumqttc client with TCP_NODELAY, subscribed to `topic`; incoming
/// publishes on it arrive on the channel with their arrival time.
pub async fn client(
    port: u16,
    id: &str,
    topic: &str,
) -> Result<(AsyncClient, mpsc::UnboundedReceiver<(Vec<u8>, Instant)>)> {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(u16::MAX)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 100_000);
    eventloop.network_options.set_tcp_nodelay(true);
    let (tx, rx) = mpsc::unbounded_channel();
    let (sub_tx, sub_rx) = tokio::sync::oneshot::channel();
    let topic_owned = topic.to_string();
    let subscriber = client.clone();
    tokio::spawn(async move {
        let mut sub_tx = Some(sub_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = subscriber.try_subscribe(topic_owned.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = sub_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send((p.payload.to_vec(), Instant::now())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("bench client: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    tokio::time::timeout(LIMIT, sub_rx)
        .await
        .context("subscribe timed out")?
        .context("client loop ended")?;
    Ok((client, rx))
}

/// The bare broker: an echo client republishing `bench/ping` to
/// `bench/pong`, and the app that pings it.
pub struct Bare {
    app: AsyncClient,
    pongs: mpsc::UnboundedReceiver<(Vec<u8>, Instant)>,
    payload: Vec<u8>,
}

impl Bare {
    pub async fn start(port: u16, payload: Vec<u8>) -> Result<Bare> {
        let (echo, mut pings) = client(port, "bench-echo", "bench/ping").await?;
        tokio::spawn(async move {
            while let Some((payload, _)) = pings.recv().await {
                if echo
                    .publish("bench/pong", QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let (app, pongs) = client(port, "bench-bare-app", "bench/pong").await?;
        Ok(Bare {
            app,
            pongs,
            payload,
        })
    }

    pub async fn round_trip(&mut self) -> Result<Duration> {
        let t = Instant::now();
        self.app
            .publish("bench/ping", QoS::AtLeastOnce, false, self.payload.clone())
            .await?;
        let (_, at) = tokio::time::timeout(LIMIT, self.pongs.recv())
            .await?
            .context("pong channel closed")?;
        Ok(at - t)
    }

    /// `count` pings pipelined (at most `window` unanswered); the time taken.
    pub async fn pipelined(&mut self, count: usize, window: usize) -> Result<Duration> {
        let (mut sent, mut received) = (0usize, 0usize);
        let t = Instant::now();
        while received < count {
            while sent < count && sent - received < window {
                self.app
                    .publish("bench/ping", QoS::AtLeastOnce, false, self.payload.clone())
                    .await?;
                sent += 1;
            }
            tokio::time::timeout(LIMIT, self.pongs.recv())
                .await?
                .context("pong channel closed")?;
            received += 1;
        }
        Ok(t.elapsed())
    }
}
