//! A native Rust handler inside the device runtime, called over MQTT.
//!
//! Not every handler needs to be a wasm plugin: an app that embeds the
//! runtime can register plain Rust closures with the seed SDK's Command API,
//! `listen(name, handler)` and `off(name)`. They get the same journal,
//! ordering, retries and status messages as plugins.
//!
//! What it does, all in one process on 127.0.0.1:
//! 1. starts the embedded MQTT broker (in production: Mosquitto or a cloud broker);
//! 2. opens the runtime's journal in a temporary data dir and connects it to the broker;
//! 3. `listen("reboot", ...)`, then sends `reboot` with the client library and
//!    prints each status transition until the final one;
//! 4. `off("reboot")` and sends it again: now `rejected` with `unknown_command`;
//! 5. shuts down gracefully.
//!
//! Run: `cargo run -p relay-cli --example native_handler`

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use relay_cli::embedded_broker::EmbeddedBroker;
use relay_client::json::{json_to_msgpack, msgpack_to_json};
use relay_client::{Client, ClientOptions, CommandRequest};
use relay_core::plugin::{HandlerResult, Invocation};
use relay_core::status::State;
use relay_host::runtime::{Config, Runtime};
use relay_host::transport::MqttTransport;
use serde_json::json;

const DEVICE: &str = "kitchen-1";
/// Upper bound of every wait: a hang becomes an error instead of a stuck example.
const LIMIT: Duration = Duration::from_secs(30);

/// The handler: a plain function of the delivery, run on the runtime's
/// handler thread (blocking is allowed). Its reply is msgpack.
fn reboot(cmd: &Invocation) -> HandlerResult {
    let payload = msgpack_to_json(&cmd.payload);
    println!("  [device] reboot attempt {} with {payload}", cmd.attempt);
    std::thread::sleep(Duration::from_millis(200)); // the work
    Ok(Some(
        json_to_msgpack(&json!({ "rebooting": true })).expect("plain JSON always encodes"),
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. A broker on a free loopback port. It runs until the process exits.
    let broker = EmbeddedBroker::start_local()?;

    // 2. The device. `Config` carries the defaults of `relay.toml`; only the
    //    broker's port differs. The journal makes every accepted command
    //    durable before the broker gets its PUBACK, so it needs a data dir.
    let mut config = Config::for_device(DEVICE);
    config.broker.port = broker.port();
    let data_dir = tempfile::tempdir()?;
    let prepared = Runtime::builder()
        .options(config.runtime_options()?)
        .open_dir(data_dir.path())?;
    let transport = Arc::new(MqttTransport::start(config.mqtt())?);
    let device = prepared.start(transport.clone())?;

    // 3. Register the handler; a second `listen` on the same name is refused.
    device.listen("reboot", reboot)?;
    let duplicate = device.listen("reboot", reboot);
    println!(
        "listen twice: {}",
        duplicate.err().context("expected a duplicate")?
    );

    // Commands published before the device subscribed would find no
    // subscriber, so wait for the subscription (a real device's persistent
    // session covers this after its first connection).
    ensure!(
        transport.wait_subscribed(LIMIT).await,
        "device not subscribed"
    );

    let client = Client::connect(ClientOptions::new("127.0.0.1", broker.port())).await?;
    let request = CommandRequest::new("reboot").json(json!({ "delay_s": 0 }));
    let id = client.send(DEVICE, request.clone()).await?;
    println!("sent reboot as {id}");
    // Each transition is a status message. Under load the device may drop an
    // intermediate one (`accepted`) when a later one is already queued; the
    // final status is never dropped.
    loop {
        let status = client.next_status(&id, LIMIT).await?;
        print!("  {} (attempt {})", status.status, status.attempt);
        match status.reply.as_deref().map(msgpack_to_json) {
            Some(reply) => println!(", reply {reply}"),
            None => println!(),
        }
        if status.is_final() {
            ensure!(status.status == State::Succeeded, "reboot did not succeed");
            break;
        }
    }

    // 4. `off` removes the handler (true) and is safe to repeat (false).
    println!(
        "off: {}, again: {}",
        device.off("reboot"),
        device.off("reboot")
    );
    let id = client.send(DEVICE, request).await?;
    let last = client.wait(&id, LIMIT).await?.pop().context("no status")?;
    let code = last.code.as_ref().map_or("-", |c| c.as_str());
    println!("after off: {} ({code})", last.status);
    ensure!(last.status == State::Rejected, "expected a rejection");

    // 5. A graceful stop: finish the running handler, flush the journal,
    //    publish what is queued, disconnect.
    client.close().await;
    let report = device.shutdown().await?;
    println!("stopped; {} command(s) left pending", report.pending);
    Ok(())
}
