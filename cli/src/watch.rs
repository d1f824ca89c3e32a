//! `relay watch`: stream a device's statuses and events until Ctrl-C (or
//! `--count` messages). Thin: printing over [`relay_client::Client::watch`].

use std::io::Write;

use anyhow::Result;
use clap::Args;

use super::send::{status_json, status_line, BrokerArgs};
use relay_client::json::msgpack_to_json;
use relay_client::{Client, DeviceMessage};

/// Stream a device's status messages and events.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Device id.
    #[arg(long, short)]
    pub device: String,
    /// Stop after this many messages (default: run until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
    /// Print JSON lines instead of text.
    #[arg(long = "json")]
    pub json_output: bool,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

pub fn run(args: WatchArgs) -> Result<()> {
    relay_client::topics::validate_device(&args.device)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(watch(args))
}

async fn watch(args: WatchArgs) -> Result<()> {
    let client = Client::connect(args.broker.options()).await?;
    let mut messages = client.watch(&args.device).await?;
    eprintln!(
        "watching {prefix}/{device}/status and {prefix}/{device}/event/+ on {host}:{port} (Ctrl-C to stop)",
        prefix = args.broker.prefix,
        device = args.device,
        host = args.broker.host,
        port = args.broker.port
    );
    let mut seen = 0u64;
    while args.count.is_none_or(|n| seen < n) {
        let message = tokio::select! {
            m = messages.recv() => m,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(message) = message else { break };
        let line = render(&message, args.json_output);
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        seen += 1;
    }
    client.close().await;
    Ok(())
}

fn render(message: &DeviceMessage, json: bool) -> String {
    match (message, json) {
        (DeviceMessage::Status { status, .. }, true) => {
            let mut v = status_json(status);
            v["type"] = "status".into();
            v.to_string()
        }
        (DeviceMessage::Status { status, .. }, false) => {
            format!("{} {} {}", status.id, status.name, status_line(status))
        }
        (DeviceMessage::Event { name, payload, .. }, json) => {
            let value = msgpack_to_json(payload);
            if json {
                serde_json::json!({ "type": "event", "name": name, "payload": value }).to_string()
            } else {
                format!("event {name} {value}")
            }
        }
        (DeviceMessage::Undecodable { topic, error }, true) => {
            serde_json::json!({ "type": "undecodable", "topic": topic, "error": error }).to_string()
        }
        (DeviceMessage::Undecodable { topic, error }, false) => {
            format!("undecodable message on {topic}: {error}")
        }
    }
}
