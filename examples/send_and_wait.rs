//! An RPC from an app to a device, with the client library.
//!
//! The app side of Relay is [`relay_client::Client`]: it builds the
//! command envelope exactly as the device will check it, publishes it at
//! QoS 1 and collects the device's status messages. An RPC (`.rpc(true)`)
//! is never retried, and its reply travels in the final status as one
//! msgpack value.
//!
//! What it does, all in one process on 127.0.0.1:
//! 1. starts the embedded MQTT broker;
//! 2. starts a device exactly as `relay run` would (`start_device`): the
//!    bundled plugins (`echo` among them), a journal in a temporary dir;
//! 3. sends `echo` as an RPC with a JSON payload, waits for the final status;
//! 4. decodes the msgpack reply back to JSON and checks it is the payload.
//!
//! Needs the bundled plugins: `cargo xtask build-plugins` first.
//! Run: `cargo run -p relay-cli --example send_and_wait [wasmi|wasmtime]`
//! (default `wasmi`: it starts at once, where wasmtime first compiles every
//! plugin with Cranelift, which takes seconds in a debug build).

use std::time::Duration;

use anyhow::{ensure, Context};
use relay_cli::embedded_broker::EmbeddedBroker;
use relay_client::json::msgpack_to_json;
use relay_client::{Client, ClientOptions, CommandRequest};
use relay_core::engine::EngineKind;
use relay_core::status::State;
use relay_harness::{bundled_plugin, bundled_plugin_dir};
use relay_host::runtime::{start_device, Config};
use serde_json::json;

const DEVICE: &str = "sensor-7";
/// Upper bound of every wait: a hang becomes an error instead of a stuck example.
const LIMIT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let engine: EngineKind = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(anyhow::Error::msg)?,
        None => EngineKind::Wasmi,
    };
    // Fails with "run `cargo xtask build-plugins`" when the plugins are not built.
    bundled_plugin("echo")?;

    // 1. The broker, on a free loopback port.
    let broker = EmbeddedBroker::start_local()?;

    // 2. The device: what `relay.toml` would say, set in code.
    let data_dir = tempfile::tempdir()?;
    let mut config = Config::for_device(DEVICE);
    config.engine = engine;
    config.plugin_dir = bundled_plugin_dir();
    config.data_dir = data_dir.path().to_path_buf();
    config.broker.port = broker.port();
    let device = start_device(&config)?;
    let names: Vec<_> = device.plugins.iter().map(|p| p.name.as_str()).collect();
    println!("device {DEVICE} on {engine}, plugins: {}", names.join(", "));
    // A command published before the subscription would reach nobody.
    ensure!(
        device.transport.wait_subscribed(LIMIT).await,
        "device not subscribed"
    );

    // 3. The app: connect, send the RPC, wait for every transition.
    let client = Client::connect(ClientOptions::new("127.0.0.1", broker.port())).await?;
    let payload = json!({ "temperature": 21.5, "unit": "C", "tags": ["kitchen", "north"] });
    let request = CommandRequest::new("echo").rpc(true).json(payload.clone());
    let id = client.send(DEVICE, request).await?;
    println!("sent echo RPC {id}");
    let transitions = client.wait(&id, LIMIT).await?;
    for status in &transitions {
        println!("  {} (attempt {})", status.status, status.attempt);
    }

    // 4. The reply is exactly one msgpack value in the final status.
    let last = transitions.last().context("no status")?;
    ensure!(last.status == State::Succeeded, "echo failed: {last:?}");
    let reply = last.reply.as_deref().context("the RPC has no reply")?;
    let reply = msgpack_to_json(reply);
    println!("reply: {reply}");
    ensure!(reply == payload, "echo changed the payload");

    client.close().await;
    device.handle.shutdown().await?;
    Ok(())
}
