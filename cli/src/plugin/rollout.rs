//! `relay plugin rollout`: one signed bundle to many devices through the
//! hub, at a rate, stopped by abort criteria (the hub's `rollout` module
//! decides; this is its client). `rollout status [ID]` shows per-device
//! results, `rollout abort ID` stops one.
//!
//! Devices are named by a file (`@devices.txt`, one per line, `#`
//! comments), a glob over the devices the hub knows (`'sensor-*'`), or a
//! comma-separated list.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::{Args, Subcommand};
use relay_client::hub::HubClient;
use serde_json::{json, Value};

use crate::hub_client::HubTarget;
use crate::send::EXIT_NOT_SUCCEEDED;
use crate::time::parse_duration;

/// Roll a bundle out to many devices through the hub.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "\
Examples:
  relay plugin rollout leds-2.0.0.bundle --devices 'sensor-*' --rate 10/min \\
      --abort-failed-percent 20 --min-executed 5 --hub http://hub:8080 --wait
  relay plugin rollout status 18c2f3a9b1e4d2 --hub http://hub:8080
  relay plugin rollout abort 18c2f3a9b1e4d2 --hub http://hub:8080

Exit status: 0 created (with --wait: completed); 1 error; 3 (with --wait) aborted."
)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: Option<RolloutCommand>,
    /// The signed bundle (from `relay plugin sign`).
    pub bundle: Option<PathBuf>,
    /// Devices: @FILE, a glob over the hub's devices ('sensor-*'), or a,b,c.
    #[arg(long)]
    pub devices: Option<String>,
    /// Devices started per minute: N or N/min.
    #[arg(long, default_value = "60/min", value_parser = parse_rate)]
    pub rate: u64,
    /// Abort when this share of the devices with a result failed.
    #[arg(long, default_value_t = 20)]
    pub abort_failed_percent: u64,
    /// Devices with a result before the abort rule applies.
    #[arg(long, default_value_t = 5)]
    pub min_executed: u64,
    /// A device without a result this long after its start counts as failed.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub device_timeout: Duration,
    /// Bytes per chunk sent to each device.
    #[arg(long, default_value_t = 64 * 1024)]
    pub chunk_size: u64,
    /// Follow the rollout until it ends, with progress on stderr.
    #[arg(long, short)]
    pub wait: bool,
    #[arg(long = "json")]
    pub json_output: bool,
    #[command(flatten)]
    pub via: HubTarget,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// One rollout's per-device results, or every rollout without an id.
    Status {
        id: Option<String>,
        #[arg(long = "json")]
        json_output: bool,
        #[command(flatten)]
        via: HubTarget,
    },
    /// Stop starting devices (those running finish).
    Abort {
        id: String,
        #[command(flatten)]
        via: HubTarget,
    },
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let n = s.strip_suffix("/min").unwrap_or(s);
    match n.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a rate like 10/min")),
    }
}

fn hub(via: &HubTarget) -> Result<HubClient> {
    via.client()
        .context("rollouts go through the hub: give --hub URL (or $RELAY_HUB) and --token")
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn run(args: RolloutArgs) -> Result<()> {
    match args.command {
        Some(RolloutCommand::Status {
            id,
            json_output,
            via,
        }) => {
            let hub = hub(&via)?;
            runtime()?.block_on(async {
                let v = match &id {
                    Some(id) => hub.rollout(id).await?,
                    None => hub.rollouts().await?,
                };
                if json_output {
                    println!("{v}");
                } else if id.is_some() {
                    print_rollout(&v)?;
                } else {
                    for r in v["rollouts"].as_array().into_iter().flatten() {
                        println!("{}", summary(r));
                    }
                }
                Ok(())
            })
        }
        Some(RolloutCommand::Abort { id, via }) => {
            let hub = hub(&via)?;
            let v = runtime()?.block_on(hub.abort_rollout(&id))?;
            println!("{}", summary(&v));
            Ok(())
        }
        None => create(args),
    }
}

fn create(args: RolloutArgs) -> Result<()> {
    let Some(bundle_path) = &args.bundle else {
        bail!("give a bundle to roll out (or `rollout status`)");
    };
    let Some(devices) = &args.devices else {
        bail!("--devices is required: @FILE, a glob like 'sensor-*', or a,b,c");
    };
    let bundle =
        std::fs::read(bundle_path).with_context(|| format!("reading {}", bundle_path.display()))?;
    let manifest = super::sign::read_manifest(&bundle)?;
    let hub = hub(&args.via)?;
    runtime()?.block_on(async {
        let devices = resolve_devices(&hub, devices).await?;
        if devices.is_empty() {
            bail!(
                "--devices {:?} names no device",
                args.devices.as_deref().unwrap_or("")
            );
        }
        eprintln!(
            "rolling out {} {} to {} devices at {}/min",
            manifest.name,
            manifest.version,
            devices.len(),
            args.rate
        );
        let created = hub
            .create_rollout(&json!({
                "bundle_base64": base64::engine::general_purpose::STANDARD.encode(&bundle),
                "devices": devices,
                "rate_per_min": args.rate,
                "abort_failed_percent": args.abort_failed_percent,
                "min_executed": args.min_executed,
                "device_timeout_ms": args.device_timeout.as_millis() as u64,
                "chunk_bytes": args.chunk_size,
            }))
            .await?;
        let id = created["id"].as_str().unwrap_or_default().to_string();
        if !args.wait {
            if args.json_output {
                println!("{created}");
            } else {
                println!("{id}");
            }
            return Ok(());
        }
        let mut view = created;
        while view["state"] == "running" || view["counts"]["running"].as_u64().unwrap_or(0) > 0 {
            eprint!("\r{}", summary(&view));
            tokio::time::sleep(Duration::from_secs(1)).await;
            view = hub.rollout(&id).await?;
        }
        eprintln!();
        if args.json_output {
            println!("{view}");
        } else {
            print_rollout(&view)?;
        }
        if view["state"] != "completed" {
            let _ = std::io::stdout().flush();
            std::process::exit(EXIT_NOT_SUCCEEDED);
        }
        Ok(())
    })
}

/// `@file`, a glob over the hub's devices, or a comma-separated list.
async fn resolve_devices(hub: &HubClient, spec: &str) -> Result<Vec<String>> {
    if let Some(path) = spec.strip_prefix('@') {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        return Ok(text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect());
    }
    if spec.contains(['*', '?']) {
        let known = hub.devices().await?;
        return Ok(known.into_iter().filter(|d| glob(spec, d)).collect());
    }
    Ok(spec
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect())
}

/// `*` (any run) and `?` (one character) glob.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

fn summary(v: &Value) -> String {
    let c = &v["counts"];
    format!(
        "{} {} {}@{}: {} succeeded, {} failed, {} timed out, {} running, {} pending, {} cancelled",
        v["id"].as_str().unwrap_or("?"),
        v["state"].as_str().unwrap_or("?"),
        v["plugin"].as_str().unwrap_or("?"),
        v["version"].as_str().unwrap_or("?"),
        c["succeeded"],
        c["failed"],
        c["timed_out"],
        c["running"],
        c["pending"],
        c["cancelled"]
    )
}

fn print_rollout(v: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", summary(v))?;
    if let Some(reason) = v["reason"].as_str() {
        writeln!(out, "reason: {reason}")?;
    }
    writeln!(out, "{:<32} {:<10} CODE", "DEVICE", "STATE")?;
    for d in v["devices"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{:<32} {:<10} {}",
            d["device"].as_str().unwrap_or("?"),
            d["state"].as_str().unwrap_or("?"),
            d["code"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_rates() {
        assert!(glob("sensor-*", "sensor-12"));
        assert!(glob("s?n*-1", "sensor-1"));
        assert!(!glob("sensor-*", "pump-1"));
        assert_eq!(parse_rate("10/min"), Ok(10));
        assert_eq!(parse_rate("7"), Ok(7));
        assert!(parse_rate("0/min").is_err());
    }
}
