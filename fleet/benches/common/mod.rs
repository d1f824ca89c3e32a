//! What the fleet's benchmarks share: percentiles, a bare fsync, an MQTT
//! client that timestamps what it receives, and the bare broker echo (the
//! floor any round trip through the broker sits on), as in
//! `host/benches/e2e.rs`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// Upper bound of any wait (a stall becomes an error, not a hang).
pub const LIMIT: Duration = Duration::from_secs(60);

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

/// One fsync: `fdatasync` after a small append to a growing file.
pub struct Fsync(std::fs::File);

impl Fsync {
    pub fn open(dir: &Path) -> Result<Fsync> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("fsync.log"))?;
        Ok(Fsync(file))
    }

    pub fn once(&mut self) -> Result<Duration> {
        let t = Instant::now();
        self.0.write_all(&[0x5a; 64])?;
        self.0.sync_data()?;
        Ok(t.elapsed())
    }
}

/// A rumqttc client with TCP_NODELAY subscribed to `topic`; what arrives
/// on it comes out of the channel with its arrival time.
pub async fn client(
    port: u16,
    id: &str,
    topic: &str,
) -> Result<(AsyncClient, mpsc::UnboundedReceiver<(Vec<u8>, Instant)>)> {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 1_000);
    eventloop.network_options.set_tcp_nodelay(true);
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed, on_suback) = tokio::sync::oneshot::channel();
    let (topic, subscriber) = (topic.to_owned(), client.clone());
    tokio::spawn(async move {
        let mut subscribed = Some(subscribed);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = subscriber.try_subscribe(topic.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed.take() {
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
    tokio::time::timeout(LIMIT, on_suback)
        .await
        .context("subscribe timed out")?
        .context("client loop ended")?;
    Ok((client, rx))
}

/// The bare broker: an echo client republishing `bench/ping` on `bench/pong`.
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
                let pong = echo.publish("bench/pong", QoS::AtLeastOnce, false, payload);
                if pong.await.is_err() {
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
        let ping = self.payload.clone();
        self.app
            .publish("bench/ping", QoS::AtLeastOnce, false, ping)
            .await?;
        let (_, at) = tokio::time::timeout(LIMIT, self.pongs.recv())
            .await?
            .context("pong channel closed")?;
        Ok(at - t)
    }
}
