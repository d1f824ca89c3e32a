//! The MQTT edges of the device runtime against real brokers: every scenario
//! runs against Mosquitto (persistence on) AND the embedded rumqttd broker
//! (`relay broker`), each on a free loopback port.
//!
//! What is asserted: a delivery is acked only when the runtime acks it (else
//! it is redelivered after reconnecting, `clean_session = false`); acks are
//! released in arrival order (an out-of-order completion is held back, and a
//! held-back message is redelivered); the transport resubscribes after the
//! broker lost its session and refuses tokens of the old connection;
//! statuses queued while the broker is down are delivered once it is back;
//! a broker restart while commands flow loses nothing (Mosquitto, which keeps
//! sessions across restarts); the app client and the `relay send` /
//! `relay watch` CLI round-trip and fail clearly on bad input.
//!
//! No timed assertions: every wait is for an observable event, bounded by
//! [`LIMIT`] so a hang becomes a failure.

mod support;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use relay_client::{Client, ClientOptions, CommandRequest, DeviceMessage};
use relay_core::envelope::{Envelope, Kind};
use relay_core::plugin::Role;
use relay_core::status::{Code, State, Status};
use relay_host::transport::{
    AckRefused, Incoming, LinkState, MqttConfig, MqttTransport, Outbound, Transport,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::{BrokerKind, Mode, Proxy, TestBroker};

/// Upper bound of any single wait.
const LIMIT: Duration = Duration::from_secs(30);

fn device_config(broker: &TestBroker, device: &str) -> MqttConfig {
    let mut config = MqttConfig::new(broker.host(), broker.port(), device);
    config.backoff_base = Duration::from_millis(20);
    config.backoff_cap = Duration::from_millis(500);
    config.keep_alive = Duration::from_secs(5);
    config
}

async fn start_device(broker: &TestBroker, device: &str) -> Result<MqttTransport> {
    let transport = MqttTransport::start(device_config(broker, device))?;
    ensure!(
        transport.wait_subscribed(LIMIT).await,
        "device {device} never subscribed: {:?}",
        *transport.link().borrow()
    );
    Ok(transport)
}

async fn app(broker: &TestBroker) -> Result<Client> {
    Ok(Client::connect(ClientOptions::new(broker.host(), broker.port())).await?)
}

async fn recv(transport: &MqttTransport) -> Result<Incoming> {
    tokio::time::timeout(LIMIT, transport.recv())
        .await
        .context("no delivery in time")?
        .context("transport closed")
}

fn id_of(incoming: &Incoming) -> String {
    Envelope::from_msgpack(&incoming.payload)
        .map(|e| e.id)
        .unwrap_or_else(|r| format!("<undecodable: {r:?}>"))
}

async fn send_ids(
    client: &Client,
    device: &str,
    ids: impl IntoIterator<Item = String>,
) -> Result<()> {
    for id in ids {
        client
            .send(device, CommandRequest::new("echo").id(id))
            .await?;
    }
    Ok(())
}

async fn recv_ids(transport: &MqttTransport, n: usize) -> Result<Vec<Incoming>> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(recv(transport).await?);
    }
    Ok(got)
}

fn ids(incoming: &[Incoming]) -> Vec<String> {
    incoming.iter().map(id_of).collect()
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("c{i}")).collect()
}

async fn wait_link(
    transport: &MqttTransport,
    what: &str,
    ready: impl Fn(&LinkState) -> bool,
) -> Result<()> {
    let mut link = transport.link();
    let reached = matches!(
        tokio::time::timeout(LIMIT, link.wait_for(|l| ready(l))).await,
        Ok(Ok(_))
    );
    if !reached {
        bail!(
            "link never reached {what}: {:?}",
            *transport.link().borrow()
        );
    }
    Ok(())
}

/// A device with a stable session: shutting it down and starting it again
/// with the same client id resumes the session.
async fn restart_device(
    transport: MqttTransport,
    broker: &TestBroker,
    device: &str,
) -> Result<MqttTransport> {
    transport.shutdown(LIMIT).await;
    drop(transport);
    start_device(broker, device).await
}

// ---------------------------------------------------------------------------
// Scenarios, each run against both brokers (see the macro at the bottom).

/// Nothing is acked before the runtime says so; what was not acked comes back.
async fn acks_only_after_the_runtime_acks(kind: BrokerKind) -> Result<()> {
    let broker = TestBroker::start(kind)?;
    let device = start_device(&broker, "d1").await?;
    let client = app(&broker).await?;
    send_ids(&client, "d1", names(0..3)).await?;
    let first = recv_ids(&device, 3).await?;
    assert_eq!(ids(&first), names(0..3));
    assert!(first.iter().all(|i| i.role == Ok(Role::Admin)));

    let mut first = first.into_iter();
    device.ack(first.next().context("c0")?.token)?;
    let device = restart_device(device, &broker, "d1").await?;
    let again = recv_ids(&device, 2).await?;
    assert_eq!(
        ids(&again),
        names(1..3),
        "the two unacked commands are redelivered, the acked one is not"
    );

    for incoming in again {
        device.ack(incoming.token)?;
    }
    let device = restart_device(device, &broker, "d1").await?;
    send_ids(&client, "d1", names(3..4)).await?;
    assert_eq!(
        id_of(&recv(&device).await?),
        "c3",
        "nothing acked is redelivered"
    );
    client.close().await;
    device.shutdown(LIMIT).await;
    Ok(())
}

/// PUBACKs leave in arrival order: completing later messages first releases
/// nothing, so after a reconnect all of them are redelivered.
async fn acks_leave_in_arrival_order(kind: BrokerKind) -> Result<()> {
    let broker = TestBroker::start(kind)?;
    let device = start_device(&broker, "d2").await?;
    let client = app(&broker).await?;
    send_ids(&client, "d2", names(0..5)).await?;

    let mut got: Vec<Option<Incoming>> =
        recv_ids(&device, 5).await?.into_iter().map(Some).collect();
    for i in [4, 2, 3] {
        device.ack(got[i].take().context("token")?.token)?;
    }
    let device = restart_device(device, &broker, "d2").await?;
    let again = recv_ids(&device, 5).await?;
    assert_eq!(
        ids(&again),
        names(0..5),
        "c2..c4 were completed but c0 was not: none may be acked"
    );

    let mut again: Vec<Option<Incoming>> = again.into_iter().map(Some).collect();
    for i in [4, 0, 1] {
        device.ack(again[i].take().context("token")?.token)?;
    }
    let device = restart_device(device, &broker, "d2").await?;
    let rest = recv_ids(&device, 3).await?;
    assert_eq!(
        ids(&rest),
        names(2..5),
        "only the completed prefix c0, c1 was acked"
    );
    for incoming in rest {
        device.ack(incoming.token)?;
    }
    let device = restart_device(device, &broker, "d2").await?;
    send_ids(&client, "d2", names(5..6)).await?;
    assert_eq!(id_of(&recv(&device).await?), "c5");
    client.close().await;
    device.shutdown(LIMIT).await;
    Ok(())
}

/// The broker forgets everything: the device reconnects, sees
/// `session_present = false`, subscribes again, and refuses to ack a message
/// of the old connection.
async fn resubscribes_after_the_session_is_lost(kind: BrokerKind) -> Result<()> {
    let mut broker = TestBroker::start(kind)?;
    let device = start_device(&broker, "d3").await?;
    let client = app(&broker).await?;
    send_ids(&client, "d3", names(0..1)).await?;
    let old = recv(&device).await?;
    client.close().await;

    broker.restart_losing_sessions()?;
    wait_link(&device, "resubscribed without a session", |l| {
        l.connects >= 2 && l.connected && l.subscribed && !l.session_present
    })
    .await?;
    assert!(
        matches!(device.ack(old.token), Err(AckRefused::Stale { .. })),
        "token of the old connection"
    );

    let client = app(&broker).await?;
    send_ids(&client, "d3", names(1..2)).await?;
    let fresh = recv(&device).await?;
    assert_eq!(id_of(&fresh), "c1");
    device.ack(fresh.token)?;
    client.close().await;
    device.shutdown(LIMIT).await;
    Ok(())
}

/// A publish on `cmd/<not a role>` is handed up as a bad-topic input and can be acked.
async fn bad_role_level_is_handed_up(kind: BrokerKind) -> Result<()> {
    let broker = TestBroker::start(kind)?;
    let device = start_device(&broker, "d4").await?;
    let (raw, task) = raw_client(&broker, "raw-d4", true).await?;
    raw.publish("relay/d4/cmd/root", QoS::AtLeastOnce, false, b"x".to_vec())
        .await?;
    raw.publish(
        "relay/d4/cmd/secondary",
        QoS::AtLeastOnce,
        false,
        b"y".to_vec(),
    )
    .await?;
    let bad = recv(&device).await?;
    assert_eq!(bad.role, Err("root".to_string()));
    assert_eq!(bad.payload, b"x");
    let good = recv(&device).await?;
    assert_eq!(good.role, Ok(Role::Secondary));
    device.ack(bad.token)?;
    device.ack(good.token)?;
    task.abort();
    device.shutdown(LIMIT).await;
    Ok(())
}

/// Statuses published while the broker is down wait in the transport and are
/// delivered after it comes back, in order, even when there are more of them
/// than the in-flight window (rumqttc would otherwise send them all at once,
/// wrap the packet ids onto unacknowledged ones and drop the colliding
/// publishes). Needs a broker that keeps the watcher's session across the
/// restart (Mosquitto); with the embedded broker the watcher's own
/// subscription would be gone.
async fn statuses_queued_while_the_broker_is_down_are_delivered(kind: BrokerKind) -> Result<()> {
    const N: usize = 350; // 3.5 times the default window of 100
    let mut broker = TestBroker::start(kind)?;
    if !broker.keeps_sessions_across_restart() {
        return Ok(());
    }
    let device = start_device(&broker, "d5").await?;
    let (_watcher_client, watcher, mut events) =
        raw_watcher(&broker, "watch-d5", "relay/d5/status").await?;
    device
        .publish(Outbound::Status, status("s0").to_msgpack())
        .await?;
    assert_eq!(next_status_id(&mut events).await?, "s0");

    broker.stop()?;
    wait_link(&device, "disconnected", |l| !l.connected).await?;
    for i in 1..=N {
        device
            .publish(Outbound::Status, status(&format!("s{i}")).to_msgpack())
            .await?;
    }
    broker.start_again()?;
    let mut seen = Vec::new();
    while seen.len() < N {
        seen.push(next_status_id(&mut events).await?);
    }
    assert_eq!(seen, (1..=N).map(|i| format!("s{i}")).collect::<Vec<_>>());
    // Every publish was acknowledged, and counted once.
    let mut acks = device.publish_acks();
    let started = tokio::time::Instant::now();
    while *acks.borrow_and_update() < (N + 1) as u64 {
        ensure!(started.elapsed() < LIMIT, "acks: {}", *acks.borrow());
        let _ = tokio::time::timeout(Duration::from_millis(100), acks.changed()).await;
    }
    assert_eq!(*acks.borrow(), (N + 1) as u64);
    watcher.abort();
    device.shutdown(LIMIT).await;
    Ok(())
}

/// The app client sees the device's statuses and events; `wait` returns every
/// transition up to the final one.
async fn client_follows_statuses_and_events(kind: BrokerKind) -> Result<()> {
    let broker = TestBroker::start(kind)?;
    let device = start_device(&broker, "d6").await?;
    let client = app(&broker).await?;
    let mut watch = client.watch("d6").await?;
    let mut statuses = client.statuses("d6").await?;
    let id = client
        .send(
            "d6",
            CommandRequest::new("echo")
                .json(serde_json::json!({"n": 1}))
                .role(Role::Primary)
                .rpc(true)
                .ttl(LIMIT),
        )
        .await?;
    let incoming = recv(&device).await?;
    assert_eq!(incoming.role, Ok(Role::Primary));
    let envelope =
        Envelope::from_msgpack(&incoming.payload).map_err(|r| anyhow::anyhow!("{r:?}"))?;
    assert_eq!(
        (envelope.id.as_str(), envelope.name.as_str(), envelope.kind),
        (id.as_str(), "echo", Kind::Rpc)
    );
    assert!(envelope.expires_at.is_some());
    device.ack(incoming.token)?;

    for state in [State::Accepted, State::Running] {
        device
            .publish(
                Outbound::Status,
                Status::new(&id, "echo", state, 1, 1).to_msgpack(),
            )
            .await?;
    }
    device
        .publish(Outbound::Event("door".into()), vec![0xc3])
        .await?;
    let done =
        Status::new(&id, "echo", State::Succeeded, 1, 2).with_reply(Some(envelope.payload.clone()));
    device.publish(Outbound::Status, done.to_msgpack()).await?;

    let transitions = client.wait(&id, LIMIT).await?;
    let states: Vec<_> = transitions.iter().map(|s| s.status).collect();
    assert_eq!(states, [State::Accepted, State::Running, State::Succeeded]);
    assert_eq!(
        transitions[2].reply.as_deref(),
        Some(envelope.payload.as_slice())
    );

    let mut watched = Vec::new();
    while watched.len() < 4 {
        let message = tokio::time::timeout(LIMIT, watch.recv())
            .await?
            .context("watch ended")?;
        watched.push(message);
    }
    assert!(watched.iter().any(|m| matches!(m, DeviceMessage::Event { name, payload, .. } if name == "door" && payload == &[0xc3])));
    assert_eq!(
        watched
            .iter()
            .filter(|m| matches!(m, DeviceMessage::Status { .. }))
            .count(),
        3
    );
    for expected in [State::Accepted, State::Running, State::Succeeded] {
        let status = tokio::time::timeout(LIMIT, statuses.recv())
            .await?
            .context("statuses ended")?;
        assert_eq!((status.id.as_str(), status.status), (id.as_str(), expected));
    }
    client.close().await;
    device.shutdown(LIMIT).await;
    Ok(())
}

/// `relay send` publishes and prints the id; `--wait --json` prints every
/// transition and exits 3 when the command did not succeed; `relay watch`
/// streams what the device publishes.
async fn cli_send_and_watch(kind: BrokerKind) -> Result<()> {
    let broker = TestBroker::start(kind)?;
    let device = Arc::new(start_device(&broker, "d7").await?);
    let port = broker.port().to_string();

    let out = relay(&[
        "send",
        "--device",
        "d7",
        "--port",
        &port,
        "echo",
        r#"{"a": [1, 2]}"#,
    ])
    .await?;
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout)?.trim().to_string();
    let incoming = recv(&device).await?;
    assert_eq!(id_of(&incoming), id, "the printed id is the id sent");
    let envelope =
        Envelope::from_msgpack(&incoming.payload).map_err(|r| anyhow::anyhow!("{r:?}"))?;
    assert_eq!(
        relay_client::json::msgpack_to_json(&envelope.payload),
        serde_json::json!({"a": [1, 2]})
    );
    device.ack(incoming.token)?;

    // A fake device answering the next command: running, then failed.
    let responder = {
        let device = device.clone();
        tokio::spawn(async move {
            let incoming = recv(&device).await?;
            let id = id_of(&incoming);
            device.ack(incoming.token)?;
            device
                .publish(
                    Outbound::Status,
                    Status::new(&id, "boom", State::Running, 1, 1).to_msgpack(),
                )
                .await?;
            let failed =
                Status::new(&id, "boom", State::Failed, 5, 2).with_code(Code::HandlerError, "nope");
            device
                .publish(Outbound::Status, failed.to_msgpack())
                .await?;
            anyhow::Ok(id)
        })
    };
    let out = relay(&[
        "send",
        "-d",
        "d7",
        "--port",
        &port,
        "boom",
        "--wait",
        "--json",
        "--timeout",
        "30s",
    ])
    .await?;
    let answered = responder.await??;
    assert_eq!(out.status.code(), Some(3), "failed => exit 3: {out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["id"], answered.as_str());
    assert_eq!(lines[1]["status"], "running");
    assert_eq!(
        (
            lines[2]["status"].as_str(),
            lines[2]["code"].as_str(),
            lines[2]["attempt"].as_u64()
        ),
        (Some("failed"), Some("handler_error"), Some(5))
    );

    // relay watch: wait for its "watching" line (it is subscribed then), publish, read two lines.
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args([
            "watch", "--device", "d7", "--port", &port, "--count", "2", "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr = watch.stderr.take().context("stderr")?;
    let mut stderr = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    loop {
        let line = tokio::time::timeout(LIMIT, stderr.next_line())
            .await??
            .context("watch exited early")?;
        if line.starts_with("watching") {
            break;
        }
    }
    device
        .publish(
            Outbound::Status,
            Status::new("w1", "echo", State::Accepted, 0, 1).to_msgpack(),
        )
        .await?;
    device
        .publish(Outbound::Event("boot".into()), vec![0x01])
        .await?;
    let out = tokio::time::timeout(LIMIT, watch.wait_with_output()).await??;
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines[0]["type"], "status");
    assert_eq!(lines[0]["id"], "w1");
    assert_eq!(
        lines[1],
        serde_json::json!({"type": "event", "name": "boot", "payload": 1})
    );
    Ok(())
}

/// The pitfall: rumqttc drops its unacknowledged publishes when the broker
/// answers `session_present = false`. Statuses in flight (written, never
/// acknowledged: the proxy black-holes them) when the broker loses the
/// session must still arrive after the reconnect.
async fn inflight_statuses_survive_a_broker_that_lost_the_session(kind: BrokerKind) -> Result<()> {
    let mut broker = TestBroker::start(kind)?;
    let proxy = Proxy::start(broker.port()).await?;
    let mut config = device_config(&broker, "d9");
    config.port = proxy.port();
    let config_window = config.max_inflight;
    let device = MqttTransport::start(config)?;
    ensure!(device.wait_subscribed(LIMIT).await, "never subscribed");

    proxy.set_mode(Mode::Freeze);
    let topic = "relay/d9/status";
    // More than the in-flight window (100): the backlog must go out through
    // the window, in order, without packet-id collisions.
    const N: usize = 350;
    let payloads: Vec<Vec<u8>> = (1..=N)
        .map(|i| status(&format!("s{i}")).to_msgpack())
        .collect();
    // What rumqttc writes before its window is full (the rest waits in its
    // request channel until acks come, which the frozen proxy never lets in).
    let window = usize::from(config_window);
    let written: u64 = payloads[..window]
        .iter()
        .map(|p| publish_packet_len(topic, p.len()))
        .sum();
    for payload in payloads {
        device.publish(Outbound::Status, payload).await?;
    }
    let started = tokio::time::Instant::now();
    while proxy.frozen_bytes() < written {
        ensure!(
            started.elapsed() < LIMIT,
            "the statuses never left the device"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.set_mode(Mode::Closed);
    wait_link(&device, "disconnected", |l| !l.connected).await?;

    broker.restart_losing_sessions()?;
    let (_watcher, watcher_task, mut events) = raw_watcher(&broker, "watch-d9", topic).await?;
    proxy.set_mode(Mode::Forward);
    let mut seen = Vec::new();
    while seen.len() < N {
        seen.push(next_status_id(&mut events).await?);
    }
    assert_eq!(seen, (1..=N).map(|i| format!("s{i}")).collect::<Vec<_>>());
    let link = device.link().borrow().clone();
    assert!(link.connects >= 2 && !link.session_present, "{link:?}");
    watcher_task.abort();
    device.shutdown(LIMIT).await;
    Ok(())
}

/// 2,000 commands queued for an offline device arrive in order once it
/// connects (more than the broker's in-flight window, so this also needs the
/// acks to flow); acked in reversed batches, as group commit may finish
/// them; none is redelivered afterwards.
async fn thousands_queued_offline_arrive_in_order(kind: BrokerKind) -> Result<()> {
    const N: usize = 2000;
    const BATCH: usize = 64;
    let broker = TestBroker::start(kind)?;
    let device = start_device(&broker, "d10").await?;
    device.shutdown(LIMIT).await;
    drop(device);

    let client = app(&broker).await?;
    send_ids(&client, "d10", names(0..N)).await?;
    // No waiting for the SUBACK here: the broker may queue it behind the backlog.
    let device = MqttTransport::start(device_config(&broker, "d10"))?;
    let mut received = Vec::with_capacity(N);
    while received.len() < N {
        let batch = recv_ids(&device, BATCH.min(N - received.len())).await?;
        received.extend(ids(&batch));
        for incoming in batch.into_iter().rev() {
            device.ack(incoming.token)?;
        }
    }
    assert_eq!(
        received,
        names(0..N),
        "arrival order is send order, nothing lost or repeated"
    );
    let device = restart_device(device, &broker, "d10").await?;
    send_ids(&client, "d10", names(N..N + 1)).await?;
    assert_eq!(
        id_of(&recv(&device).await?),
        format!("c{N}"),
        "all {N} were acked"
    );
    client.close().await;
    device.shutdown(LIMIT).await;
    Ok(())
}

/// Sends from many tasks at once pipeline over one client; each returns
/// only after its own PUBACK, and every command arrives.
async fn concurrent_sends_all_arrive(kind: BrokerKind) -> Result<()> {
    const N: usize = 300;
    let broker = TestBroker::start(kind)?;
    let device = start_device(&broker, "d11").await?;
    let client = Arc::new(app(&broker).await?);
    let sends: Vec<_> = (0..N)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .send("d11", CommandRequest::new("echo").id(format!("c{i}")))
                    .await
            })
        })
        .collect();
    for send in sends {
        tokio::time::timeout(LIMIT, send).await???;
    }
    let mut seen = BTreeSet::new();
    while seen.len() < N {
        let incoming = recv(&device).await?;
        seen.insert(id_of(&incoming));
        device.ack(incoming.token)?;
    }
    assert_eq!(seen, names(0..N).into_iter().collect());
    device.shutdown(LIMIT).await;
    Ok(())
}

macro_rules! against_both_brokers {
    ($($scenario:ident),* $(,)?) => {
        mod mosquitto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> anyhow::Result<()> {
                    super::$scenario(super::BrokerKind::Mosquitto).await
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> anyhow::Result<()> {
                    super::$scenario(super::BrokerKind::Embedded).await
                }
            )*
        }
    };
}

against_both_brokers!(
    acks_only_after_the_runtime_acks,
    acks_leave_in_arrival_order,
    resubscribes_after_the_session_is_lost,
    bad_role_level_is_handed_up,
    statuses_queued_while_the_broker_is_down_are_delivered,
    client_follows_statuses_and_events,
    cli_send_and_watch,
    inflight_statuses_survive_a_broker_that_lost_the_session,
    thousands_queued_offline_arrive_in_order,
    concurrent_sends_all_arrive,
);

// ---------------------------------------------------------------------------
// Mosquitto only: the embedded broker keeps sessions in memory, so its restart
// loses queued commands by design.

/// Mosquitto restarts (gracefully, persistence on) while 300 commands flow:
/// every command reaches the device (duplicates allowed, dedupe is by id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_while_commands_flow_loses_nothing() -> Result<()> {
    const N: usize = 300;
    let mut broker = TestBroker::start(BrokerKind::Mosquitto)?;
    let device = Arc::new(start_device(&broker, "d8").await?);
    let received = Arc::new(Mutex::new(BTreeSet::new()));

    let consumer = {
        let (device, received) = (device.clone(), received.clone());
        tokio::spawn(async move {
            while received.lock().unwrap().len() < N {
                let incoming = recv(&device).await?;
                received.lock().unwrap().insert(id_of(&incoming));
                // Stale tokens (connection dropped meanwhile) are refused; the broker redelivers.
                let _ = device.ack(incoming.token);
            }
            anyhow::Ok(())
        })
    };
    let client = app(&broker).await?;
    let sender = tokio::spawn(async move {
        for i in 0..N {
            let mut attempts = 0;
            // Retried with the same id until the broker acknowledged it (bounded).
            while let Err(error) = client
                .send("d8", CommandRequest::new("echo").id(format!("c{i}")))
                .await
            {
                attempts += 1;
                if attempts > 100 {
                    bail!("c{i} never acknowledged: {error}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        client.close().await;
        anyhow::Ok(())
    });

    let started = tokio::time::Instant::now();
    while received.lock().unwrap().len() < N / 3 {
        ensure!(started.elapsed() < LIMIT, "commands did not start flowing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.restart()?;
    tokio::time::timeout(LIMIT * 2, sender).await???;
    tokio::time::timeout(LIMIT * 2, consumer).await???;
    let received = received.lock().unwrap().clone();
    let expected: BTreeSet<_> = names(0..N).into_iter().collect();
    assert_eq!(received, expected, "every command arrived");
    assert!(
        device.link().borrow().connects >= 2,
        "the device reconnected"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// CLI errors (no broker needed, or an unreachable one).

#[tokio::test]
async fn send_rejects_bad_input_clearly() -> Result<()> {
    let port = support::free_port().to_string();
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "send",
                "-d",
                "d",
                "--port",
                &port,
                "echo",
                "{\"a\": 1,\n oops}",
            ],
            "invalid JSON payload at line 2, column 2",
        ),
        (
            &["send", "-d", "d", "--port", &port, "bad name"],
            "invalid command name \"bad name\"",
        ),
        (
            &["send", "-d", "a/b", "--port", &port, "echo"],
            "invalid device id \"a/b\"",
        ),
        (
            &[
                "send",
                "-d",
                "d",
                "--port",
                &port,
                "echo",
                "--id",
                "has space",
            ],
            "invalid command: id",
        ),
        (
            &[
                "send",
                "-d",
                "d",
                "--port",
                &port,
                "echo",
                "--connect-timeout",
                "2s",
            ],
            &format!("cannot reach the MQTT broker at 127.0.0.1:{port}"),
        ),
    ];
    for (args, expected) in cases {
        let out = relay(args).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
        assert!(out.stdout.is_empty(), "no id printed on error");
    }
    let out = relay(&["send", "-d", "d", "--role", "root", "echo"]).await?;
    assert_eq!(out.status.code(), Some(2), "usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected admin, primary or secondary"));
    let help = relay(&["send", "--help"]).await?;
    let help = String::from_utf8(help.stdout)?;
    for flag in [
        "--device",
        "--role",
        "--rpc",
        "--ttl",
        "--wait",
        "--json",
        "--host",
        "--port",
        "--prefix",
        "--timeout",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Helpers.

async fn relay(args: &[&str]) -> Result<std::process::Output> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_relay"));
    command
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    Ok(tokio::time::timeout(LIMIT, command.output()).await??)
}

/// Bytes of a QoS 1 PUBLISH on the wire (fixed header, topic, packet id, payload).
fn publish_packet_len(topic: &str, payload: usize) -> u64 {
    let remaining = 2 + topic.len() + 2 + payload;
    let length_bytes = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    (1 + length_bytes + remaining) as u64
}

fn status(id: &str) -> Status {
    Status::new(id, "echo", State::Succeeded, 1, 1)
}

/// A plain rumqttc client (TCP_NODELAY), polled by its own task.
async fn raw_client(
    broker: &TestBroker,
    id: &str,
    clean: bool,
) -> Result<(AsyncClient, tokio::task::JoinHandle<()>)> {
    let (client, task, _events) = raw_client_with_events(broker, id, clean).await?;
    Ok((client, task))
}

async fn raw_client_with_events(
    broker: &TestBroker,
    id: &str,
    clean: bool,
) -> Result<(
    AsyncClient,
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<Packet>,
)> {
    let mut options = MqttOptions::new(id, broker.host(), broker.port());
    options
        .set_clean_session(clean)
        .set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    eventloop.network_options.set_tcp_nodelay(true);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        // Reconnects on its own; bounded by the test (aborted at the end).
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    let _ = tx.send(packet);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await? {
            Some(Packet::ConnAck(_)) => break,
            Some(_) => continue,
            None => bail!("raw client {id} stopped"),
        }
    }
    Ok((client, task, rx))
}

/// A persistent-session subscriber to `filter` (survives a Mosquitto restart).
async fn raw_watcher(
    broker: &TestBroker,
    id: &str,
    filter: &str,
) -> Result<(
    AsyncClient,
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<Packet>,
)> {
    let (client, task, mut events) = raw_client_with_events(broker, id, false).await?;
    client.subscribe(filter, QoS::AtLeastOnce).await?;
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await? {
            Some(Packet::SubAck(_)) => break,
            Some(_) => continue,
            None => bail!("watcher stopped"),
        }
    }
    Ok((client, task, events))
}

async fn next_status_id(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Packet>,
) -> Result<String> {
    // One deadline for the whole wait: PINGRESPs keep arriving and must not extend it.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("no status in time")?
            .context("watcher stopped")?
        {
            Packet::Publish(p) => return Ok(Status::from_msgpack(&p.payload)?.id),
            _ => continue,
        }
    }
}
