//! Hub latency benchmark (issue "Relay hub", benchmarks): what a request's
//! trip through the hub costs over sending it straight over MQTT, one
//! request at a time, both measured in the same run against the same
//! simulated device (`relay_fleet::device`, native handler, `accepted` then
//! `succeeded` like an idle host):
//!
//! | figure | what |
//! |--------|------|
//! | fsync | a 64 B append + `fdatasync` in the hub's store directory |
//! | bare RTT | app -> broker -> echo client -> broker -> app, QoS 1 both ways |
//! | MQTT | the app publishes the envelope on `cmd/admin`, waits for `succeeded` on `status` |
//! | hub | `POST /v1/devices/{d}/requests?wait_ms=5000`: stored, forwarded, answered once final |
//! | hub submit | the same POST without `wait_ms`: answered once durable (the rest is waited for untimed) |
//! | HTTP | `GET /health` on the hub: an HTTP round trip, nothing else |
//! | hub read | `GET /v1/devices/{d}/requests/{id}`: HTTP, the token's hash, two SQLite reads |
//! | store commit | `Store::submit` of one request, in this process on its own SQLite file in the same dir: one commit, no HTTP |
//!
//! The hub is a child process on SQLite (WAL, `synchronous=FULL`) in a temp
//! dir on the real disk (`CARGO_TARGET_TMPDIR`, or `RELAY_BENCH_DIR`):
//! this crate's `relay-fleet hub serve`, which runs `relay_hub::run::start`
//! with `relay hub serve`'s defaults, or `RELAY_BENCH_RELAY=<path to relay>`.
//! Samples are interleaved (each round takes one of each figure, in a
//! rotating order), because this shared 2-core machine's noise comes and
//! goes over seconds. Goal: the hub adds at most 1 ms at p50.
//!
//! Run: `cargo bench -p relay-fleet --bench hub_latency`
//! Knobs: `RELAY_BENCH_ROUND_TRIPS` (2,000), `RELAY_BENCH_WARMUP` (200),
//! `RELAY_BENCH_FINAL_ONLY=1` (the device publishes only `succeeded`).
//! Smoke mode (CI, asserts nothing about time): `-- --test` or
//! `RELAY_BENCH_SMOKE=1`, and the default without `--bench` (e.g. under
//! `cargo test --all-targets`).

#[path = "../../host/benches/common/floors.rs"]
mod floors;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use relay_client::hub::{HubClient, HubSubmit};
use relay_client::topics::Topics;
use relay_core::envelope::Envelope;
use relay_core::plugin::Role;
use relay_core::status::{State, Status};
use relay_fleet::broker::Mosquitto;
use relay_fleet::device::{DeviceConfig, Ledger, SimDevice, Statuses};
use relay_fleet::hub::{HubBinary, HubChild};
use rumqttc::{AsyncClient, QoS};
use serde_json::json;
use tokio::sync::mpsc;

use floors::{bench_dir, client, dist, Bare, Dist, Fsync, LIMIT};

const DEVICE: &str = "bench-dev";
/// The hub's long poll per request.
const WAIT: Duration = Duration::from_secs(5);
/// The TTL both paths put in the envelope (the hub's default).
const TTL_MS: u64 = 30 * 86_400_000;

struct Settings {
    smoke: bool,
    warmup: usize,
    rounds: usize,
    statuses: Statuses,
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
        let statuses = match std::env::var_os("RELAY_BENCH_FINAL_ONLY") {
            Some(_) => Statuses::FinalOnly,
            None => Statuses::AcceptedAndFinal,
        };
        let (warmup, rounds) = if smoke {
            (3, 10)
        } else {
            (
                n("RELAY_BENCH_WARMUP", 200),
                n("RELAY_BENCH_ROUND_TRIPS", 2_000).max(1),
            )
        };
        Settings {
            smoke,
            warmup,
            rounds,
            statuses,
        }
    }
}

/// The app straight over MQTT: envelope on `cmd/admin`, statuses back.
struct Direct {
    client: AsyncClient,
    statuses: mpsc::UnboundedReceiver<(Vec<u8>, Instant)>,
    topics: Topics,
    sent: usize,
}

impl Direct {
    async fn connect(port: u16) -> Result<Direct> {
        let topics = Topics::new("relay", DEVICE)?;
        let (client, statuses) = client(port, "bench-direct-app", &topics.status()).await?;
        Ok(Direct {
            client,
            statuses,
            topics,
            sent: 0,
        })
    }

    async fn round_trip(&mut self) -> Result<Duration> {
        // Statuses of the hub's requests reach this subscription too.
        while self.statuses.try_recv().is_ok() {}
        let id = format!("m{}", self.sent);
        let payload = payload(self.sent)?;
        self.sent += 1;
        let now = relay_client::unix_ms();
        let envelope = Envelope::new(id.as_str(), "echo", now)
            .with_payload(payload)
            .with_expires_at(now + TTL_MS)
            .to_msgpack();
        let t = Instant::now();
        self.client
            .publish(
                self.topics.command(Role::Admin),
                QoS::AtLeastOnce,
                false,
                envelope,
            )
            .await?;
        loop {
            let (bytes, at) = tokio::time::timeout(LIMIT, self.statuses.recv())
                .await?
                .context("status channel closed")?;
            let status = Status::from_msgpack(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
            if status.id == id && status.is_final() {
                if status.status != State::Succeeded {
                    bail!("{id} ended {:?}", status);
                }
                return Ok(at - t);
            }
        }
    }
}

/// The app through the hub.
struct ViaHub {
    hub: HubClient,
    sent: usize,
    /// The id of the request sent last (final by now).
    last: Option<String>,
}

impl ViaHub {
    fn submit(&mut self, prefix: &str) -> HubSubmit {
        let k = self.sent;
        self.sent += 1;
        let id = format!("{prefix}{k}");
        self.last = Some(id.clone());
        HubSubmit {
            id: Some(id),
            payload: Some(json!({ "seq": k })),
            ..HubSubmit::command("echo")
        }
    }

    /// POST ?wait_ms -> `succeeded`.
    async fn round_trip(&mut self) -> Result<Duration> {
        let submit = self.submit("h");
        let t = Instant::now();
        let done =
            tokio::time::timeout(LIMIT, self.hub.submit_and_wait(DEVICE, &submit, Some(WAIT)))
                .await??;
        let took = t.elapsed();
        if done.state != "succeeded" {
            bail!("{} is {} after {WAIT:?}", done.id, done.state);
        }
        Ok(took)
    }

    /// POST -> 201 (durable); then waits, untimed, until it is final.
    async fn submit_only(&mut self) -> Result<Duration> {
        let submit = self.submit("s");
        let t = Instant::now();
        let stored = tokio::time::timeout(LIMIT, self.hub.submit(DEVICE, &submit)).await??;
        let took = t.elapsed();
        let done =
            tokio::time::timeout(LIMIT, self.hub.get(DEVICE, &stored.id, Some(WAIT))).await??;
        if done.state != "succeeded" {
            bail!("{} is {} after {WAIT:?}", done.id, done.state);
        }
        Ok(took)
    }
}

/// The hub's parts, for where its time goes: an HTTP round trip, a read,
/// and a commit of its store (SQLite, same pragmas, same disk).
struct Parts {
    http: reqwest::Client,
    health: String,
    store: relay_hub::store::Store,
    committed: usize,
}

impl Parts {
    async fn open(url: &str, dir: &Path) -> Result<Parts> {
        let db = format!("sqlite:{}", dir.join("commit-only.db").display());
        Ok(Parts {
            http: reqwest::Client::new(),
            health: format!("{url}/health"),
            store: relay_hub::store::Store::open(&db).await?,
            committed: 0,
        })
    }

    async fn http(&mut self) -> Result<Duration> {
        let t = Instant::now();
        let answer = self.http.get(&self.health).send().await?;
        answer.error_for_status()?.bytes().await?;
        Ok(t.elapsed())
    }

    /// Reads the request `via_hub` sent last.
    async fn read(&mut self, via_hub: &mut ViaHub) -> Result<Duration> {
        let id = via_hub.last.clone().context("no request sent yet")?;
        let t = Instant::now();
        tokio::time::timeout(LIMIT, via_hub.hub.get(DEVICE, &id, None)).await??;
        Ok(t.elapsed())
    }

    async fn commit(&mut self) -> Result<Duration> {
        let k = self.committed;
        self.committed += 1;
        let now = relay_client::unix_ms();
        let request = relay_hub::submit::NewRequest {
            device: DEVICE.into(),
            id: format!("c{k}"),
            name: "echo".into(),
            kind: relay_core::envelope::Kind::Command,
            role: Role::Admin,
            payload: payload(k)?,
            submitted_by: "bench".into(),
            submitted_at: now,
            expires_at: now + TTL_MS,
            deadline_at: None,
        };
        let t = Instant::now();
        self.store.submit(request).await?;
        Ok(t.elapsed())
    }
}

/// `{"seq": k}` as msgpack: what the hub makes of the same JSON payload.
fn payload(k: usize) -> Result<Vec<u8>> {
    Ok(relay_client::json::json_to_msgpack(&json!({ "seq": k }))?)
}

const FIGURES: [&str; 8] = [
    "one fsync (64 B append + fdatasync), in the hub's store dir",
    "bare broker round trip (QoS 1 both ways)",
    "straight over MQTT: publish -> `succeeded`",
    "through the hub: `POST ?wait_ms` -> `succeeded`",
    "hub submit alone: `POST` -> 201 (durable)",
    "HTTP round trip to the hub: `GET /health`",
    "hub read of one request: `GET .../requests/{id}`",
    "store commit alone: `Store::submit`, in process (SQLite WAL, synchronous=FULL)",
];

fn main() -> Result<()> {
    let s = Settings::from_env();
    let broker = Mosquitto::start(None)?;
    let port = broker.port();
    let dir = tempfile::Builder::new()
        .prefix("relay-hub-latency-")
        .tempdir_in(bench_dir())?;
    let binary = match std::env::var_os("RELAY_BENCH_RELAY") {
        Some(relay) => HubBinary::Relay(PathBuf::from(relay)),
        None => HubBinary::Fleet(PathBuf::from(env!("CARGO_BIN_EXE_relay-fleet"))),
    };
    let hub = HubChild::spawn(&binary, port, dir.path())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut fsync = Fsync::open(dir.path())?;
    let samples = rt.block_on(async {
        let mut config = DeviceConfig::new("127.0.0.1", port);
        config.statuses = s.statuses;
        let mut device = SimDevice::start(&config, DEVICE, Arc::new(Ledger::default()))?;
        device.wait_ready(LIMIT).await?;
        let mut bare = Bare::start(port, payload(0)?).await?;
        let mut direct = Direct::connect(port).await?;
        let mut via_hub = ViaHub {
            hub: HubClient::new(hub.access.url.clone(), Some(hub.access.token.clone())),
            sent: 0,
            last: None,
        };
        via_hub.submit_only().await?;
        let mut parts = Parts::open(&hub.access.url, dir.path()).await?;
        let mut samples: [Vec<Duration>; 8] = Default::default();
        for round in 0..s.warmup + s.rounds {
            for k in 0..FIGURES.len() {
                let which = (round + k) % FIGURES.len();
                let sample = match which {
                    0 => fsync.once()?,
                    1 => bare.round_trip().await?,
                    2 => direct.round_trip().await?,
                    3 => via_hub.round_trip().await?,
                    4 => via_hub.submit_only().await?,
                    5 => parts.http().await?,
                    6 => parts.read(&mut via_hub).await?,
                    _ => parts.commit().await?,
                };
                if round >= s.warmup {
                    samples[which].push(sample);
                }
            }
        }
        device.stop(Duration::from_secs(2)).await;
        anyhow::Ok(samples)
    });
    let samples = samples.with_context(|| format!("hub log:\n{}", hub.log()))?;
    report(&s, &binary, samples.map(dist));
    Ok(())
}

fn report(s: &Settings, binary: &HubBinary, d: [Dist; 8]) {
    println!(
        "## Hub latency: one request at a time, through the hub and straight over MQTT ({} mode)\n",
        if s.smoke { "smoke" } else { "full" }
    );
    println!(
        "Samples: {} interleaved rounds (one of each figure per round) after {} warm-up. Hub: {}, SQLite (WAL, synchronous=FULL). Device: simulated, native handler, {}.\n",
        s.rounds,
        s.warmup,
        binary.describe(),
        match s.statuses {
            Statuses::AcceptedAndFinal => "`accepted` then `succeeded`",
            Statuses::FinalOnly => "`succeeded` only",
        }
    );
    println!("| figure | p50 ms | p90 ms | p99 ms | mean ms |");
    println!("|--------|-------:|-------:|-------:|--------:|");
    for (name, x) in FIGURES.iter().zip(&d) {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |",
            x.p50, x.p90, x.p99, x.mean
        );
    }
    let (fsync, mqtt, hub, submit) = (d[0], d[2], d[3], d[4]);
    let (http, read, commit) = (d[5], d[6], d[7]);
    println!();
    println!(
        "| hub over MQTT | p50 | p90 | p99 |\n|---|---:|---:|---:|\n| added, ms | {:+.3} | {:+.3} | {:+.3} |\n| ratio | {:.2}x | {:.2}x | {:.2}x |",
        hub.p50 - mqtt.p50,
        hub.p90 - mqtt.p90,
        hub.p99 - mqtt.p99,
        hub.p50 / mqtt.p50,
        hub.p90 / mqtt.p90,
        hub.p99 / mqtt.p99,
    );
    println!();
    let added = hub.p50 - mqtt.p50;
    println!(
        "Goal: the hub adds at most 1 ms at p50 -> {} ({:+.3} ms).",
        if added <= 1.0 { "met" } else { "MISSED" },
        added,
    );
    println!();
    println!(
        "Where it goes (p50): the durable submit alone is {:.3} ms, of which an HTTP round trip is {:.3} ms and one store commit {:.3} ms (one bare fsync: {:.3} ms); a read of one request is {:.3} ms. After the submit, a request's path holds at least one more commit (its final status) and that read before the answer.",
        submit.p50,
        http.p50,
        commit.p50,
        fsync.p50,
        read.p50,
    );
    if s.smoke {
        println!("\n(smoke mode: too few samples for the figures to mean anything)");
    }
}
