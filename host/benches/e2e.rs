//! End-to-end benchmark (issue 3): a command's whole path through a real
//! Mosquitto on loopback, next to the floors it cannot beat, all measured in
//! the same run on the same machine:
//!
//! | figure | what |
//! |--------|------|
//! | fsync | 1,000 small appends, each followed by `fdatasync`, in the dir the host's journal uses |
//! | bare RTT | app -> broker -> echo client -> broker -> app, 1 KiB, QoS 1 both ways, TCP_NODELAY everywhere |
//! | host RTT | app publishes a command (QoS 1) -> host (journal fsync, echo handler) -> `succeeded` status back at the app |
//! | bare rate | the same bare echo, pipelined (bounded window) |
//! | host rate | commands pipelined (bounded window) until every final status is back |
//!
//! The host runs in this process through the runtime API (`start_device`
//! for the wasmtime `echo` plugin, `Runtime::builder().listen` for the
//! native handler), on a data dir on the real disk (`CARGO_TARGET_TMPDIR`,
//! or `RELAY_BENCH_DIR`), fsync on. Latency goal: host p50 <= bare RTT +
//! one fsync + 0.1 ms, p99 < 2 ms. Throughput goal: >= 5,000 commands/s and
//! >= 0.8 of native.
//!
//! Run: `cargo xtask build-plugins && cargo bench -p relay-host --bench e2e`
//! Smoke mode (CI, asserts nothing about time): `-- --test` or
//! `RELAY_BENCH_SMOKE=1` (also the default without `--bench`, e.g. under
//! `cargo test --benches`).

// The tests' Mosquitto fixture (config template `host/tests/mosquitto.conf`);
// it needs the three helpers below from its parent module.
#[path = "../tests/support/mosquitto.rs"]
#[allow(dead_code)]
mod mosquitto;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use relay_core::envelope::{Envelope, Kind};
use relay_core::plugin::{Invocation, Role};
use relay_core::status::{State, Status};
use relay_host::runtime::{self, Config, Runtime, RuntimeHandle};
use relay_host::transport::{MqttTransport, Topics};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// How long Mosquitto may take to listen (used by the fixture).
const START_LIMIT: Duration = Duration::from_secs(15);

/// A loopback port that was free a moment ago (used by the fixture).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 works")
}

/// Waits (bounded) until `127.0.0.1:port` accepts connections (used by the fixture).
fn wait_for_port(port: u16, limit: Duration) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on 127.0.0.1:{port} after {limit:?}")
}

/// Payload size of every round trip.
const PAYLOAD: usize = 1024;
/// Upper bound of any wait (a stall becomes an error, not a hang).
const LIMIT: Duration = Duration::from_secs(120);

struct Settings {
    smoke: bool,
    fsyncs: usize,
    warmup: usize,
    round_trips: usize,
    pipelined: usize,
    window: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let args: Vec<String> = std::env::args().collect();
        let smoke = args.iter().any(|a| a == "--test")
            || std::env::var_os("RELAY_BENCH_SMOKE").is_some()
            || !args.iter().any(|a| a == "--bench");
        let n = |var: &str, default: usize| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        if smoke {
            Settings {
                smoke,
                fsyncs: 20,
                warmup: 5,
                round_trips: 20,
                pipelined: 200,
                window: 50,
            }
        } else {
            Settings {
                smoke,
                fsyncs: n("RELAY_BENCH_FSYNCS", 1_000),
                warmup: n("RELAY_BENCH_WARMUP", 200),
                round_trips: n("RELAY_BENCH_ROUND_TRIPS", 2_000),
                pipelined: n("RELAY_BENCH_COMMANDS", 20_000),
                window: n("RELAY_BENCH_WINDOW", 500),
            }
        }
    }
}

/// p50 / p99 / mean of a sample, in ms.
#[derive(Debug, Clone, Copy)]
struct Dist {
    p50: f64,
    p99: f64,
    mean: f64,
}

fn dist(mut samples: Vec<Duration>) -> Dist {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: usize| ms(samples[(samples.len() * q / 100).min(samples.len() - 1)]);
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64;
    Dist {
        p50: at(50),
        p99: at(99),
        mean,
    }
}

/// Where the journal (and the fsync measurement) lives: the real disk.
fn bench_dir() -> PathBuf {
    std::env::var_os("RELAY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

/// One fsync: `fdatasync` after a small append, as the journal does.
fn measure_fsync(dir: &Path, count: usize) -> Result<Dist> {
    let tmp = tempfile::tempdir_in(dir)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(tmp.path().join("fsync.log"))?;
    let record = [0x5au8; 64];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        samples.push(t.elapsed());
    }
    Ok(dist(samples))
}

/// A rumqttc client with TCP_NODELAY, subscribed to `topic`; incoming
/// publishes on it arrive on the channel with their arrival time.
async fn client(
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

/// The bare broker: an echo client republishing `bench/ping` to `bench/pong`.
async fn start_bare_echo(port: u16) -> Result<()> {
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
    Ok(())
}

async fn bare_round_trips(port: u16, s: &Settings) -> Result<Dist> {
    let (app, mut pongs) = client(port, "bench-bare-app", "bench/pong").await?;
    let payload = vec![0xa5u8; PAYLOAD];
    let mut samples = Vec::with_capacity(s.round_trips);
    for i in 0..s.warmup + s.round_trips {
        let t = Instant::now();
        app.publish("bench/ping", QoS::AtLeastOnce, false, payload.clone())
            .await?;
        let (_, at) = tokio::time::timeout(LIMIT, pongs.recv())
            .await?
            .context("pong channel closed")?;
        if i >= s.warmup {
            samples.push(at - t);
        }
    }
    app.disconnect().await.ok();
    Ok(dist(samples))
}

async fn bare_rate(port: u16, s: &Settings) -> Result<f64> {
    let (app, mut pongs) = client(port, "bench-bare-rate", "bench/pong").await?;
    let payload = vec![0xa5u8; PAYLOAD];
    let (mut sent, mut received) = (0usize, 0usize);
    let t = Instant::now();
    while received < s.pipelined {
        while sent < s.pipelined && sent - received < s.window {
            app.publish("bench/ping", QoS::AtLeastOnce, false, payload.clone())
                .await?;
            sent += 1;
        }
        tokio::time::timeout(LIMIT, pongs.recv())
            .await?
            .context("pong channel closed")?;
        received += 1;
    }
    let rate = s.pipelined as f64 / t.elapsed().as_secs_f64();
    app.disconnect().await.ok();
    Ok(rate)
}

/// The app side of a device: sends commands, reads statuses.
struct DeviceApp {
    client: AsyncClient,
    statuses: mpsc::UnboundedReceiver<(Vec<u8>, Instant)>,
    topics: Topics,
    /// Statuses received, and intermediate ones among them.
    received: u64,
    intermediate: u64,
}

impl DeviceApp {
    async fn connect(port: u16, device: &str) -> Result<DeviceApp> {
        let topics = Topics::new("relay", device)?;
        let (client, statuses) =
            client(port, &format!("bench-app-{device}"), &topics.status()).await?;
        Ok(DeviceApp {
            client,
            statuses,
            topics,
            received: 0,
            intermediate: 0,
        })
    }

    async fn send(&self, id: &str, payload: &[u8]) -> Result<()> {
        let envelope = Envelope::new(id, "echo", now_ms())
            .with_kind(Kind::Command)
            .with_payload(payload.to_vec());
        self.client
            .publish(
                self.topics.command(Role::Primary),
                QoS::AtLeastOnce,
                false,
                envelope.to_msgpack(),
            )
            .await?;
        Ok(())
    }

    /// The next final status (and when it arrived).
    async fn next_final(&mut self) -> Result<(Status, Instant)> {
        loop {
            let (bytes, at) = tokio::time::timeout(LIMIT, self.statuses.recv())
                .await?
                .context("status channel closed")?;
            let status =
                Status::from_msgpack(&bytes).map_err(|e| anyhow::anyhow!("bad status: {e}"))?;
            self.received += 1;
            if status.is_final() {
                return Ok((status, at));
            }
            self.intermediate += 1;
        }
    }
}

fn now_ms() -> u64 {
    runtime::clock::unix_ms()
}

/// The payload of every command: 1 KiB of msgpack bin (the reply is the same).
fn command_payload() -> Vec<u8> {
    let mut v = Vec::new();
    rmp::encode::write_bin(&mut v, &[0xa5u8; PAYLOAD]).expect("vec write");
    v
}

async fn host_round_trips(app: &mut DeviceApp, s: &Settings, tag: &str) -> Result<Dist> {
    let payload = command_payload();
    let mut samples = Vec::with_capacity(s.round_trips);
    for i in 0..s.warmup + s.round_trips {
        let id = format!("{tag}-lat-{i}");
        let t = Instant::now();
        app.send(&id, &payload).await?;
        let (status, at) = app.next_final().await?;
        if status.id != id || status.status != State::Succeeded {
            bail!("unexpected final status {status:?} for {id}");
        }
        if i >= s.warmup {
            samples.push(at - t);
        }
    }
    Ok(dist(samples))
}

/// Commands pipelined with at most `window` not final; commands/s.
async fn host_rate(app: &mut DeviceApp, s: &Settings, tag: &str) -> Result<f64> {
    let payload = command_payload();
    let mut pending = HashSet::new();
    let (mut sent, mut done) = (0usize, 0usize);
    let t = Instant::now();
    while done < s.pipelined {
        while sent < s.pipelined && sent - done < s.window {
            let id = format!("{tag}-rate-{sent}");
            app.send(&id, &payload).await?;
            pending.insert(id);
            sent += 1;
        }
        let (status, _) = app.next_final().await?;
        if status.status != State::Succeeded || !pending.remove(&status.id) {
            bail!("unexpected final status {status:?}");
        }
        done += 1;
    }
    Ok(s.pipelined as f64 / t.elapsed().as_secs_f64())
}

/// A device config on `port` with a fresh data dir on the bench disk.
fn device_config(port: u16, device: &str, plugin_dir: &Path, data_dir: &Path) -> Config {
    let mut config = Config::for_device(device);
    config.broker.host = "127.0.0.1".into();
    config.broker.port = port;
    config.plugin_dir = plugin_dir.to_path_buf();
    config.data_dir = data_dir.to_path_buf();
    config
}

struct HostFigures {
    latency: Dist,
    rate: f64,
    statuses_per_command: f64,
}

async fn measure_host(app: &mut DeviceApp, s: &Settings, tag: &str) -> Result<HostFigures> {
    let latency = host_round_trips(app, s, tag).await?;
    let before = (app.received, app.intermediate);
    let rate = host_rate(app, s, tag).await?;
    let statuses = (app.received - before.0) as f64;
    Ok(HostFigures {
        latency,
        rate,
        statuses_per_command: statuses / s.pipelined as f64,
    })
}

async fn wait_subscribed(transport: &MqttTransport) -> Result<()> {
    if !transport.wait_subscribed(LIMIT).await {
        bail!("the device did not subscribe within {LIMIT:?}");
    }
    Ok(())
}

/// The wasmtime `echo` plugin through `start_device`, as `relay run` does.
async fn plugin_host(port: u16, s: &Settings) -> Result<HostFigures> {
    let echo = relay_host::testing::bundled_plugin("echo")
        .map_err(|e| anyhow::anyhow!("{e}: run `cargo xtask build-plugins` first"))?;
    let plugins = tempfile::tempdir()?;
    std::fs::copy(&echo, plugins.path().join("echo.wasm"))?;
    let data = tempfile::tempdir_in(bench_dir())?;
    let config = device_config(port, "bench-wasm", plugins.path(), data.path());
    let device = runtime::start_device(&config)?;
    wait_subscribed(&device.transport).await?;
    let mut app = DeviceApp::connect(port, "bench-wasm").await?;
    let figures = measure_host(&mut app, s, "wasm").await;
    stop(device.handle).await;
    figures
}

/// A native `echo` handler through `Runtime::builder().listen`.
async fn native_host(port: u16, s: &Settings) -> Result<HostFigures> {
    let data = tempfile::tempdir_in(bench_dir())?;
    let config = device_config(port, "bench-native", Path::new("."), data.path());
    let echo = |inv: &Invocation| Ok((!inv.payload.is_empty()).then(|| inv.payload.clone()));
    let prepared = Runtime::builder()
        .options(config.runtime_options()?)
        .listen("echo", echo)?
        .open_dir(data.path())?;
    let transport = Arc::new(MqttTransport::start(config.mqtt())?);
    let handle = prepared.start(transport.clone())?;
    wait_subscribed(&transport).await?;
    let mut app = DeviceApp::connect(port, "bench-native").await?;
    let figures = measure_host(&mut app, s, "native").await;
    stop(handle).await;
    figures
}

async fn stop(handle: RuntimeHandle) {
    if let Err(e) = tokio::time::timeout(LIMIT, handle.shutdown()).await {
        eprintln!("shutdown: {e}");
    }
}

fn main() -> Result<()> {
    // `RUST_LOG=relay_host=trace` shows where a command's time goes.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let s = Settings::from_env();
    let mosquitto = mosquitto::Mosquitto::start()?;
    let port = mosquitto.port();
    // RELAY_BENCH_RUNTIME=current: everything on one tokio thread (the
    // handler and journal threads stay separate), to see what cross-thread
    // wake-ups cost.
    let rt = match std::env::var("RELAY_BENCH_RUNTIME").as_deref() {
        Ok("current") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };

    let fsync = measure_fsync(&bench_dir(), s.fsyncs)?;
    let (bare, bare_rate, wasm, native) = rt.block_on(async {
        start_bare_echo(port).await?;
        let bare = bare_round_trips(port, &s).await?;
        let bare_rate = bare_rate(port, &s).await?;
        let wasm = plugin_host(port, &s).await?;
        let native = native_host(port, &s).await?;
        anyhow::Ok((bare, bare_rate, wasm, native))
    })?;

    print_report(&s, fsync, bare, bare_rate, &wasm, &native);
    Ok(())
}

fn print_report(
    s: &Settings,
    fsync: Dist,
    bare: Dist,
    bare_rate: f64,
    wasm: &HostFigures,
    native: &HostFigures,
) {
    let floor = bare.p50 + fsync.p50;
    println!(
        "## End to end: Mosquitto on loopback, {PAYLOAD} B payload, QoS 1, fsync on ({} mode)\n",
        if s.smoke { "smoke" } else { "full" }
    );
    println!(
        "Samples: {} fsyncs, {} round trips after {} warm-up, {} pipelined (window {}).\n",
        s.fsyncs, s.round_trips, s.warmup, s.pipelined, s.window
    );
    println!("| figure | p50 ms | p99 ms | mean ms |");
    println!("|--------|-------:|-------:|--------:|");
    println!(
        "| one fsync (64 B append + fdatasync) | {:.3} | {:.3} | {:.3} |",
        fsync.p50, fsync.p99, fsync.mean
    );
    println!(
        "| bare broker round trip | {:.3} | {:.3} | {:.3} |",
        bare.p50, bare.p99, bare.mean
    );
    for (name, h) in [
        ("host, echo plugin (wasmtime)", wasm),
        ("host, native handler", native),
    ] {
        println!(
            "| {name}: send -> `succeeded` | {:.3} | {:.3} | {:.3} |",
            h.latency.p50, h.latency.p99, h.latency.mean
        );
    }
    println!();
    println!(
        "Latency goal: p50 <= bare RTT + one fsync + 0.1 ms = {:.3} ms; echo plugin p50 {:.3} ms ({:+.3} ms vs bare + fsync, {:.2}x) -> {}; p99 {:.3} ms < 2 ms -> {}.",
        floor + 0.1,
        wasm.latency.p50,
        wasm.latency.p50 - floor,
        wasm.latency.p50 / floor,
        verdict(wasm.latency.p50 <= floor + 0.1),
        wasm.latency.p99,
        verdict(wasm.latency.p99 < 2.0),
    );
    println!();
    println!("| throughput | per second | vs native | statuses per command |");
    println!("|------------|-----------:|----------:|---------------------:|");
    println!("| bare broker echo, pipelined | {bare_rate:.0} | | |");
    println!(
        "| host, native handler | {:.0} | 1.00 | {:.2} |",
        native.rate, native.statuses_per_command
    );
    println!(
        "| host, echo plugin (wasmtime) | {:.0} | {:.2} | {:.2} |",
        wasm.rate,
        wasm.rate / native.rate,
        wasm.statuses_per_command
    );
    println!();
    println!(
        "Throughput goal: >= 5,000 commands/s -> {} ({:.0}); >= 0.8 of native -> {} ({:.2}); host/bare broker = {:.2}.",
        verdict(wasm.rate >= 5_000.0),
        wasm.rate,
        verdict(wasm.rate >= 0.8 * native.rate),
        wasm.rate / native.rate,
        wasm.rate / bare_rate,
    );
    if s.smoke {
        println!("\n(smoke mode: too few samples for the figures to mean anything)");
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}
