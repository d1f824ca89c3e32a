//! `relay plugin push | list | rollback | remove`: the update commands sent
//! to a device over MQTT, as admin, each followed to its final status.
//!
//! `push` streams the bundle as `_install` chunks (64 KiB by default, under
//! the device's envelope limit) with a few in flight: the device stages each
//! chunk as it comes and verifies the whole bundle at the last one. A
//! transfer is named by the bundle's sha256, so pushing the same bundle
//! again after an interruption rewrites the same bytes and completes it.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use relay_client::json::msgpack_to_json;
use relay_client::{Client, CommandRequest, Payload};
use relay_core::msgpack::Writer;
use relay_core::ota;
use relay_core::status::{State, Status};

use crate::connect::ConnectArgs;
use crate::send::EXIT_NOT_SUCCEEDED;
use crate::time::parse_duration;

/// Chunks sent before waiting for the first one's status.
const WINDOW: usize = 4;

/// Push a signed bundle to a device.
#[derive(Debug, Args)]
#[command(after_help = "\
Exit status: 0 installed (on trial: it is confirmed after its first commands run without
a trap); 1 error; 3 the device refused the bundle (the code says why, see docs/ota.md).

Example: relay plugin push -d dev-1 echo-1.1.0.bundle")]
pub struct PushArgs {
    /// Device id.
    #[arg(long, short)]
    pub device: String,
    /// The bundle (from `relay plugin sign`).
    pub bundle: PathBuf,
    /// Bytes per chunk (the device's envelope limit is 256 KiB by default).
    #[arg(long, default_value_t = 64 * 1024)]
    pub chunk_size: usize,
    /// Give up waiting for a chunk's status after this long.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub timeout: Duration,
    /// Print the result as JSON.
    #[arg(long = "json")]
    pub json_output: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub via: crate::hub_client::HubTarget,
}

pub fn push(args: PushArgs) -> Result<()> {
    relay_client::topics::validate_device(&args.device)?;
    let bundle = std::fs::read(&args.bundle)
        .with_context(|| format!("reading {}", args.bundle.display()))?;
    let manifest = super::sign::read_manifest(&bundle)?;
    if args.chunk_size == 0 || args.chunk_size > 200 * 1024 {
        bail!("--chunk-size must be between 1 and 204800 bytes");
    }
    let transfer = ota::chunk::transfer_id(&bundle);
    let chunks = ota::chunk::payloads(&bundle, args.chunk_size);
    eprintln!(
        "pushing {} {} ({} bytes in {} chunks) to {}",
        manifest.name,
        manifest.version,
        bundle.len(),
        chunks.len(),
        args.device
    );
    if let Some(hub) = args.via.client() {
        let last = super::via_hub::push(&hub, &args.device, &transfer, &chunks, args.timeout)?;
        return super::via_hub::report(&last, args.json_output);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let last = runtime.block_on(async {
        let client = Client::connect(args.connect.options()?).await?;
        let started = Instant::now();
        let mut sent = std::collections::VecDeque::new();
        let mut next = chunks.iter();
        let mut done = 0;
        let mut last = None;
        loop {
            while sent.len() < WINDOW {
                let Some(chunk) = next.next() else { break };
                let mut request = CommandRequest::new(ota::INSTALL);
                request.payload = Payload::Msgpack(chunk.clone());
                sent.push_back(client.send(&args.device, request).await?);
            }
            let Some(id) = sent.pop_front() else { break };
            let status = final_status(&client, &id, args.timeout).await?;
            done += 1;
            if status.status != State::Succeeded || done == chunks.len() {
                last = Some(status);
                break;
            }
            eprint!(
                "\r{done}/{} chunks staged ({:.1}s)",
                chunks.len(),
                started.elapsed().as_secs_f64()
            );
        }
        eprintln!();
        client.close().await;
        Ok::<_, anyhow::Error>(last)
    })?;
    let status = last.ok_or_else(|| anyhow!("no status for the last chunk"))?;
    report(&status, args.json_output)
}

/// List the plugins a device runs.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, short)]
    pub device: String,
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
    #[arg(long = "json")]
    pub json_output: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub via: crate::hub_client::HubTarget,
}

pub fn list(args: ListArgs) -> Result<()> {
    let reply = if let Some(hub) = args.via.client() {
        let plugins = relay_core::machine::builtins::PLUGINS;
        let request = super::via_hub::one(&hub, &args.device, plugins, &[], args.timeout)?;
        match request.reply.clone() {
            Some(reply) if request.state == "succeeded" => Some(reply),
            _ => return super::via_hub::report(&request, args.json_output),
        }
    } else {
        let status = one_command(
            &args.device,
            relay_core::machine::builtins::PLUGINS,
            Payload::None,
            args.timeout,
            &args.connect,
        )?;
        match status.reply.as_deref().map(msgpack_to_json) {
            Some(reply) if status.status == State::Succeeded => Some(reply),
            _ => return report(&status, args.json_output),
        }
    };
    let Some(serde_json::Value::Array(plugins)) = reply else {
        bail!("the device's plugin list is not a list");
    };
    if args.json_output {
        println!("{}", serde_json::Value::Array(plugins));
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<20} {:<12} {:<24} COMMANDS",
        "PLUGIN", "VERSION", "UPDATE"
    )?;
    for p in plugins {
        let commands: Vec<&str> = p["commands"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        writeln!(
            out,
            "{:<20} {:<12} {:<24} {}",
            p["name"].as_str().unwrap_or("?"),
            p["version"].as_str().unwrap_or("?"),
            update_column(&p["update"]),
            commands.join(", ")
        )?;
    }
    Ok(())
}

/// `trial, rollback to 1.0.0` / `confirmed` / `-` (never updated: the
/// plugin directory's version).
fn update_column(update: &serde_json::Value) -> String {
    let Some(state) = update["state"].as_str() else {
        return "-".into();
    };
    match update["previous"].as_str() {
        Some(previous) => format!("{state}, rollback to {previous}"),
        None => state.into(),
    }
}

/// A device and a plugin name.
#[derive(Debug, Args)]
pub struct NameArgs {
    #[arg(long, short)]
    pub device: String,
    /// The plugin's name.
    pub name: String,
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
    #[arg(long = "json")]
    pub json_output: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub via: crate::hub_client::HubTarget,
}

pub fn by_name(args: NameArgs, command: &str) -> Result<()> {
    let mut w = Writer::new();
    w.map_len(1).str("name").str(&args.name);
    if let Some(hub) = args.via.client() {
        let request = super::via_hub::one(&hub, &args.device, command, w.as_slice(), args.timeout)?;
        return super::via_hub::report(&request, args.json_output);
    }
    let status = one_command(
        &args.device,
        command,
        Payload::Msgpack(w.into_vec()),
        args.timeout,
        &args.connect,
    )?;
    report(&status, args.json_output)
}

fn one_command(
    device: &str,
    name: &str,
    payload: Payload,
    timeout: Duration,
    connect: &ConnectArgs,
) -> Result<Status> {
    relay_client::topics::validate_device(device)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = Client::connect(connect.options()?).await?;
        let mut request = CommandRequest::new(name);
        request.payload = payload;
        let id = client.send(device, request).await?;
        let status = final_status(&client, &id, timeout).await;
        client.close().await;
        status
    })
}

async fn final_status(client: &Client, id: &str, timeout: Duration) -> Result<Status> {
    let statuses = client.wait(id, timeout).await.map_err(|e| match e {
        relay_client::ClientError::Timeout { .. } => anyhow!(
            "no final status for {id} within {timeout:?}: is the device online? (the update stays queued)"
        ),
        other => other.into(),
    })?;
    statuses
        .into_iter()
        .last()
        .ok_or_else(|| anyhow!("no status for {id}"))
}

/// Prints the outcome; exits 3 when the device refused.
fn report(status: &Status, json: bool) -> Result<()> {
    let reply = status.reply.as_deref().map(msgpack_to_json);
    if json {
        println!("{}", crate::render::status_json(status));
    } else if status.status == State::Succeeded {
        println!(
            "{}",
            reply
                .map(|r| r.to_string())
                .unwrap_or_else(|| "done".into())
        );
    } else {
        eprintln!(
            "{} {}: {}",
            status.status,
            status.code.as_ref().map_or("", |c| c.as_str()),
            status.message.as_deref().unwrap_or("")
        );
    }
    if status.status != State::Succeeded {
        let _ = std::io::stdout().flush();
        std::process::exit(EXIT_NOT_SUCCEEDED);
    }
    Ok(())
}
