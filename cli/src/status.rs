//! `relay status`: the last known status of a request, asked of the device
//! itself through its `_status` built-in (answered at arrival, not queued
//! behind the command it asks about). Works for any request the device still
//! remembers, sent by anyone, and is how an app that lost its connection (or
//! a `relay send` without `--wait`) learns the outcome.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use relay_client::{Client, CommandRequest};
use relay_core::machine::builtins::STATUS;
use relay_core::plugin::Role;
use relay_core::status::{State, Status};

use crate::connect::ConnectArgs;
use crate::render::{status_json, status_line};
use crate::send::parse_role;
use crate::time::{now_ms, parse_duration, relative, timestamp};

/// Exit code when the device has no record of the request.
pub const EXIT_UNKNOWN: i32 = 4;

/// Show the last known status of a request, as the device knows it.
#[derive(Debug, Args)]
#[command(after_help = "\
The device answers from its journal: pending commands (accepted, running, retrying) and
the last remembered outcomes (1024 by default). Built-ins are admin-only unless the
device's relay.toml grants more roles.

Exit status: 0 the device knows the request; 1 error (broker unreachable, no answer in
time, refused); 2 usage error; 4 the device has no record of it (never received, or
forgotten).

Example:
  relay status -d dev-1 0193a5c2e4f-5d1c0e7a9b3f2a61")]
pub struct StatusArgs {
    /// Device id.
    #[arg(long, short)]
    pub device: String,
    /// The request id (printed by `relay send`).
    pub id: String,
    /// Role to ask as (the topic level; the broker's ACL decides who may).
    #[arg(long, short, default_value = "admin", value_parser = parse_role)]
    pub role: Role,
    /// Give up waiting for the device's answer after this long.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// Print the status as one JSON object.
    #[arg(long = "json")]
    pub json_output: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// With --hub: the hub's record (state and history), also while the device is offline.
    #[command(flatten)]
    pub via: crate::hub_client::HubTarget,
}

pub fn run(args: StatusArgs) -> Result<()> {
    relay_client::topics::validate_device(&args.device)?;
    if let Some(hub) = args.via.client() {
        return match crate::hub_client::status(&hub, &args.device, &args.id, args.json_output)? {
            Some(()) => Ok(()),
            None => {
                eprintln!(
                    "the hub has no request {} for device {}",
                    args.id, args.device
                );
                std::process::exit(EXIT_UNKNOWN)
            }
        };
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(query(&args))? {
        Some(status) => {
            let mut out = std::io::stdout().lock();
            if args.json_output {
                writeln!(out, "{}", status_json(&status))?;
            } else {
                writeln!(
                    out,
                    "{} {} {} at={} ({})",
                    status.id,
                    status.name,
                    status_line(&status),
                    timestamp(status.at),
                    relative(status.at, now_ms())
                )?;
            }
            Ok(())
        }
        None => {
            eprintln!(
                "device {} has no record of request {:?} (never received, or forgotten)",
                args.device, args.id
            );
            std::process::exit(EXIT_UNKNOWN)
        }
    }
}

/// The device's answer: `Some(status)`, or `None` for an unknown id.
async fn query(args: &StatusArgs) -> Result<Option<Status>> {
    let client = Client::connect(args.connect.options()?).await?;
    let request = CommandRequest::new(STATUS)
        .role(args.role)
        .rpc(true)
        .ttl(args.timeout)
        .json(serde_json::json!({ "id": args.id }));
    let id = client
        .send(&args.device, request)
        .await
        .context("sending the status query")?;
    let transitions = client.wait(&id, args.timeout).await.map_err(|e| match e {
        relay_client::ClientError::Timeout { .. } => anyhow!(
            "no answer from device {:?} within {:?}: is it running and connected to {}?",
            args.device,
            args.timeout,
            args.connect.describe()
        ),
        other => other.into(),
    });
    client.close().await;
    let answer = transitions?
        .pop()
        .context("the device sent no final status")?;
    if answer.status != State::Succeeded {
        let code = answer.code.as_ref().map_or("", |c| c.as_str());
        let message = answer.message.unwrap_or_default();
        bail!("the device refused the status query ({code}): {message}");
    }
    let reply = answer.reply.unwrap_or_default();
    if reply == [0xc0] || reply.is_empty() {
        return Ok(None);
    }
    Status::from_msgpack(&reply)
        .map(Some)
        .map_err(|e| anyhow!("the device's answer does not decode: {e}"))
}
