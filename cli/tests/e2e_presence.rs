//! The device's presence through a real broker and a real `relay run`
//! (`docs/protocol.md`, "Presence"): retained `online: true` after the
//! connection, the broker's retained last will `online: false` after a
//! `kill -9`, a new `boot` after the restart, and `online: false` from the
//! host itself on a graceful stop (whose DISCONNECT discards the will).
//!
//! A `kill -9` closes the host's socket, so the broker sees the connection
//! die at once and publishes the will right away. The host still runs with
//! a 1 s keepalive: should the close not reach the broker, it gives up on
//! the connection after 1.5 keepalives (1.5 s) instead of 45 s.

#[path = "support/host_process.rs"]
mod host_process;
#[allow(unused_imports)]
mod support;

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use host_process::{HostConfig, HostProcess};
use relay_core::presence::Presence;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use support::{BrokerKind, TestBroker};

/// One wait for a presence message, or for the host to be ready.
const LIMIT: Duration = Duration::from_secs(20);
const DEVICE: &str = "dev-p";
const TOPIC: &str = "relay/dev-p/presence";

/// A host with a 1 s keepalive (the `[broker]` table is in the generated
/// `relay.toml`; `extra_toml` would land in `[runtime]`).
fn host(port: u16) -> Result<HostProcess> {
    let mut host = HostProcess::prepare(HostConfig::new(DEVICE, port, &[]))?;
    let path = host.config_path();
    let toml = std::fs::read_to_string(&path)?;
    ensure!(toml.contains("[broker]\n"), "no [broker] table in:\n{toml}");
    std::fs::write(
        &path,
        toml.replacen("[broker]\n", "[broker]\nkeep_alive_ms = 1000\n", 1),
    )?;
    host.spawn()?;
    host.wait_ready(LIMIT)?;
    Ok(host)
}

/// The next presence message (retained or live), at most `LIMIT` away.
async fn next_presence(eventloop: &mut EventLoop) -> Result<(Presence, bool)> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .context("no presence message in time")??;
        match event {
            Event::Incoming(Packet::Publish(p)) if p.topic == TOPIC => {
                let presence = Presence::from_msgpack(&p.payload)?;
                return Ok((presence, p.retain));
            }
            Event::Incoming(Packet::Disconnect) => bail!("the broker disconnected"),
            _ => {}
        }
    }
}

/// Skips presence messages until one matches `want` (a reconnect or a
/// retained copy may come first).
async fn wait_presence(
    eventloop: &mut EventLoop,
    what: &str,
    want: impl Fn(&Presence) -> bool,
) -> Result<Presence> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        ensure!(tokio::time::Instant::now() < deadline, "never saw {what}");
        let (presence, _) = next_presence(eventloop).await?;
        if want(&presence) {
            return Ok(presence);
        }
        eprintln!("while waiting for {what}: {presence:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_presence_follows_the_host_through_kill_restart_and_stop() -> Result<()> {
    presence_follows_the_host(BrokerKind::Mosquitto).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_presence_follows_the_host_through_kill_restart_and_stop() -> Result<()> {
    presence_follows_the_host(BrokerKind::Embedded).await
}

async fn presence_follows_the_host(kind: BrokerKind) -> Result<()> {
    let broker = TestBroker::start(kind)?;
    let mut device = tokio::task::block_in_place(|| host(broker.port()))?;

    // An app that subscribes only now gets the retained online presence.
    let mut options = MqttOptions::new("presence-watcher", broker.host(), broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client.subscribe(TOPIC, QoS::AtLeastOnce).await?;
    // Usually the retained copy; it may also arrive live: the host says
    // online right after it subscribes (so that no command sent on seeing
    // it can be missed), and `ready` follows the SUBACK, which can beat the
    // broker's storing of the presence. Retention is checked at the end.
    let (first, _retained) = next_presence(&mut eventloop).await?;
    ensure!(
        first.online && first.session == 1 && first.boot > 0 && first.at >= first.boot,
        "first connection: {first:?}"
    );

    // kill -9: the connection dies without a DISCONNECT, so the broker publishes the will.
    tokio::task::block_in_place(|| device.kill9())?;
    let will = wait_presence(&mut eventloop, "the will", |p| !p.online).await?;
    ensure!(
        will == Presence::will(first.boot),
        "the will of the first run: {will:?}"
    );

    // A new run: a new boot, its first session.
    tokio::task::block_in_place(|| {
        device.spawn()?;
        device.wait_ready(LIMIT)
    })?;
    let second = wait_presence(&mut eventloop, "online again", |p| p.online).await?;
    ensure!(
        second.boot > first.boot && second.session == 1,
        "after the restart: {second:?} (first run {first:?})"
    );

    // A graceful stop says offline itself, with the session it ends.
    let status = tokio::task::block_in_place(|| device.terminate())?;
    ensure!(status.success(), "relay run exited with {status}");
    let stopped = wait_presence(&mut eventloop, "offline on stop", |p| !p.online).await?;
    ensure!(
        stopped.boot == second.boot && stopped.session == 1 && stopped.at >= second.at,
        "clean shutdown: {stopped:?}"
    );

    // Retained: a later subscriber sees the device offline.
    let mut options = MqttOptions::new("presence-latecomer", broker.host(), broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (late, mut late_loop) = AsyncClient::new(options, 10);
    late.subscribe(TOPIC, QoS::AtLeastOnce).await?;
    let (last, retained) = next_presence(&mut late_loop).await?;
    ensure!(retained && last == stopped, "retained: {last:?}");
    Ok(())
}
