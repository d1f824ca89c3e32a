//! Transient failures and the retry policy, seen as status messages.
//!
//! A handler error of kind `transient` (or a trap, or a time-out) is retried
//! by the device: after `retry.delay_ms` (5 s by default), at most
//! `retry.max_attempts` attempts in all (5 by default). Every step is a
//! status: `running` per attempt, `retrying` with `next_attempt_at` between
//! them, then one final status. Commands stay in order: the second command
//! waits until the first is final.
//!
//! What it does, all in one process on 127.0.0.1:
//! 1. reads a device config from TOML text, with a 300 ms retry delay;
//! 2. starts the embedded broker and the device with the bundled plugins;
//! 3. sends `deploy` twice: `fail_times = 2` (fails on attempts 1 and 2,
//!    succeeds on 3) and `fail_times = 9` (out of attempts after 5: `failed`);
//! 4. prints every transition of both and the `deployed` event.
//!
//! Needs the bundled plugins: `cargo xtask build-plugins` first.
//! Run: `cargo run -p relay-cli --example retries`

use std::time::Duration;

use anyhow::{ensure, Context};
use relay_cli::embedded_broker::EmbeddedBroker;
use relay_client::json::msgpack_to_json;
use relay_client::{Client, ClientOptions, CommandRequest, DeviceMessage};
use relay_core::status::{State, Status};
use relay_harness::{bundled_plugin, bundled_plugin_dir};
use relay_host::runtime::{start_device, Config};
use serde_json::json;

/// Upper bound of every wait: a hang becomes an error instead of a stuck example.
const LIMIT: Duration = Duration::from_secs(60);

/// One line per transition: state, attempt, and whatever detail it carries.
fn show(s: &Status) {
    let code = s.code.as_ref().map_or(String::new(), |c| format!(" {c}"));
    let message = s
        .message
        .as_deref()
        .map_or(String::new(), |m| format!(": {m}"));
    let next = s.next_attempt_at.map_or(String::new(), |t| {
        format!(" (next attempt in {} ms)", t.saturating_sub(s.at))
    });
    println!("  {} attempt {}{code}{message}{next}", s.status, s.attempt);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bundled_plugin("deploy")?; // "run `cargo xtask build-plugins`" if missing
    let broker = EmbeddedBroker::start_local()?;

    // 1. The same keys as `relay.toml` (see examples/relay.toml for all of them).
    let mut config = Config::parse(&format!(
        r#"
        device = "edge-3"
        engine = "wasmi"
        [broker]
        port = {port}
        [retry]
        delay_ms = 300
        max_attempts = 5
        "#,
        port = broker.port()
    ))?;
    let data_dir = tempfile::tempdir()?;
    config.plugin_dir = bundled_plugin_dir();
    config.data_dir = data_dir.path().to_path_buf();

    // 2. The device, as `relay run` starts it.
    let device = start_device(&config)?;
    ensure!(
        device.transport.wait_subscribed(LIMIT).await,
        "device not subscribed"
    );

    // 3. Both commands are queued at once; the device runs them in order.
    let client = Client::connect(ClientOptions::new("127.0.0.1", broker.port())).await?;
    let mut watch = client.watch(&config.device).await?;
    let deploy = |fail_times: u32| {
        CommandRequest::new("deploy").json(json!({
            "version": "2.4.0", "replicas": 3, "timeout_s": 60, "fail_times": fail_times,
        }))
    };
    let flaky = client.send(&config.device, deploy(2)).await?;
    let broken = client.send(&config.device, deploy(9)).await?;

    // 4. Every transition, in order.
    for (id, expected) in [(&flaky, State::Succeeded), (&broken, State::Failed)] {
        println!("{id}:");
        let transitions = client.wait(id, LIMIT).await?;
        transitions.iter().for_each(show);
        let last = transitions.last().context("no status")?;
        ensure!(
            last.status == expected,
            "expected {expected}, got {}",
            last.status
        );
    }

    // The successful attempt emitted `deployed`; the host published it after the call.
    let event = tokio::time::timeout(LIMIT, async {
        while let Some(message) = watch.recv().await {
            if let DeviceMessage::Event { name, payload, .. } = message {
                return Some((name, payload));
            }
        }
        None
    });
    let (name, payload) = event.await?.context("no event")?;
    let payload = msgpack_to_json(&payload);
    println!("event {name}: {payload}");

    client.close().await;
    device.handle.shutdown().await?;
    Ok(())
}
