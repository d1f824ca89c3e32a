//! `relay watch`: stream a device's statuses and events until Ctrl-C,
//! `--count` messages or `--timeout`. Thin: printing over
//! [`relay_client::Client::watch`].

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::connect::ConnectArgs;
use crate::render::{status_json, status_line};
use crate::time::{now_ms, parse_duration, short_duration, timestamp};
use relay_client::json::msgpack_to_json;
use relay_client::{Client, DeviceMessage};

/// Stream a device's status messages and events.
#[derive(Debug, Args)]
#[command(after_help = "\
Each line starts with the time the message arrived (UTC). With --json, one object per line
with \"type\": \"status\" | \"event\" | \"undecodable\".

Exit status: 0 stopped (Ctrl-C, --count reached, or --timeout without --count); 1 error,
or --timeout passed before --count messages arrived.")]
pub struct WatchArgs {
    /// Device id.
    #[arg(long, short)]
    pub device: String,
    /// Stop after this many messages (default: run until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this long (e.g. `30s`, `5m`).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Print JSON lines instead of text.
    #[arg(long = "json")]
    pub json_output: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(args: WatchArgs) -> Result<()> {
    relay_client::topics::validate_device(&args.device)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(watch(args))
}

async fn watch(args: WatchArgs) -> Result<()> {
    let client = Client::connect(args.connect.options()?).await?;
    let mut messages = client.watch(&args.device).await?;
    eprintln!(
        "watching {prefix}/{device}/status and {prefix}/{device}/event/+ on {broker} (Ctrl-C to stop)",
        prefix = args.connect.prefix,
        device = args.device,
        broker = args.connect.describe(),
    );
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut seen = 0u64;
    let mut timed_out = false;
    while args.count.is_none_or(|n| seen < n) {
        let message = tokio::select! {
            m = messages.recv() => m,
            _ = tokio::signal::ctrl_c() => None,
            _ = sleep_until(deadline) => {
                timed_out = true;
                None
            }
        };
        let Some(message) = message else { break };
        let line = render(&message, args.json_output);
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        seen += 1;
    }
    client.close().await;
    match (timed_out, args.count, args.timeout) {
        (true, Some(count), Some(timeout)) => bail!(
            "{seen} of {count} messages within {}",
            short_duration(timeout)
        ),
        _ => Ok(()),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn render(message: &DeviceMessage, json: bool) -> String {
    let arrived = now_ms();
    let line = render_message(message, json);
    if json {
        line
    } else {
        format!("{} {line}", timestamp(arrived))
    }
}

fn render_message(message: &DeviceMessage, json: bool) -> String {
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
