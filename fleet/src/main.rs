//! `relay-fleet`: simulate N devices and drive M requests through a Relay
//! hub, check that nothing was lost, run twice or reordered, and report the
//! time and the hub's memory and CPU.
//!
//! - `run`: against a hub and broker that are already running;
//! - `local`: starts Mosquitto and a hub itself (on SQLite in a temp dir),
//!   so one command reproduces the figure in `docs/benchmarks.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use relay_fleet::broker::Mosquitto;
use relay_fleet::device::{DeviceConfig, Statuses};
use relay_fleet::drive::{self, Report, RunOptions};
use relay_fleet::hub::{HubAccess, HubBinary, HubChild};
use relay_fleet::procstat;

#[derive(Debug, Parser)]
#[command(
    name = "relay-fleet",
    version,
    about = "Simulate a fleet of Relay devices and drive requests through a hub"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive a hub and broker that are already running.
    #[command(
        after_help = "Example:\n  relay-fleet run --devices 1000 --requests 10000 --hub http://127.0.0.1:8080 \\\n    --token $TOKEN --broker mqtt://127.0.0.1:1883 --hub-pid $(pidof relay)"
    )]
    Run(RunArgs),
    /// Start Mosquitto and a hub (SQLite in a temp dir), then drive them.
    #[command(
        after_help = "Example:\n  cargo run --release -p relay-fleet -- local --devices 10000 --requests 100000"
    )]
    Local(LocalArgs),
    /// Serve a hub, as `relay hub serve` does (used by `local` when no `relay` binary is at hand).
    #[command(hide = true)]
    Hub {
        #[command(subcommand)]
        action: HubAction,
    },
}

#[derive(Debug, Args)]
struct FleetArgs {
    /// Simulated devices, each its own MQTT session.
    #[arg(long, default_value_t = 200)]
    devices: usize,
    /// Requests in all, spread evenly over the devices.
    #[arg(long, default_value_t = 2_000)]
    requests: usize,
    /// HTTP calls to the hub at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Devices connecting at once.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Bound on submitting and waiting for every request to be final, in seconds.
    #[arg(long, default_value_t = 1_800)]
    timeout_s: u64,
    /// Devices publish only the final status (default: `accepted` too, as an idle host does).
    #[arg(long)]
    final_only: bool,
    /// Device ids are `<prefix>-<n>` [default: fleet-<unique per run>].
    #[arg(long)]
    device_prefix: Option<String>,
    /// Print the report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// The hub's base URL.
    #[arg(long)]
    hub: String,
    /// A hub token with a role on the fleet's devices.
    #[arg(long, env = "RELAY_HUB_TOKEN")]
    token: String,
    /// The broker the hub uses, `mqtt://host:port`.
    #[arg(long)]
    broker: String,
    /// The hub's process id: report its peak RSS and CPU time (from /proc).
    #[arg(long)]
    hub_pid: Option<u32>,
}

#[derive(Debug, Args)]
struct LocalArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// The `relay` binary serving the hub [default: `relay` next to this
    /// binary, else this binary's own `hub serve`].
    #[arg(long)]
    relay: Option<PathBuf>,
    /// Serve the hub with this binary (`relay-fleet hub serve`) even if a `relay` binary is at hand.
    #[arg(long, conflicts_with = "relay")]
    self_hub: bool,
    /// Where the temp dir with the hub's store and both logs goes [default: the system's temp dir].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep that temp dir (its path is printed).
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Subcommand)]
enum HubAction {
    Serve(HubServeArgs),
}

/// The subset of `relay hub serve`'s flags that `local` passes.
#[derive(Debug, Args)]
struct HubServeArgs {
    #[arg(long)]
    db: String,
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    users: PathBuf,
    #[arg(long)]
    broker: String,
    #[arg(long, default_value = relay_fleet::hub::CLIENT_ID)]
    client_id: String,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command {
        Command::Run(args) => run(&runtime, args),
        Command::Local(args) => local(&runtime, args),
        Command::Hub {
            action: HubAction::Serve(args),
        } => runtime.block_on(serve_hub(args)),
    }
}

/// `mqtt://host:port` -> (host, port).
fn parse_broker(url: &str) -> Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .with_context(|| format!("broker {url:?}: use mqtt://host:port"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .with_context(|| format!("broker {url:?}: no port"))?;
    let port = port
        .parse()
        .with_context(|| format!("broker {url:?}: bad port"))?;
    Ok((host.to_owned(), port))
}

fn options(fleet: &FleetArgs, hub: HubAccess, host: &str, port: u16) -> RunOptions {
    let mut device = DeviceConfig::new(host, port);
    if fleet.final_only {
        device.statuses = Statuses::FinalOnly;
    }
    RunOptions {
        devices: fleet.devices,
        requests: fleet.requests,
        hub,
        device,
        device_prefix: fleet
            .device_prefix
            .clone()
            .unwrap_or_else(drive::unique_prefix),
        concurrency: fleet.concurrency,
        connect_concurrency: fleet.connect_concurrency,
        timeout: Duration::from_secs(fleet.timeout_s),
        hub_pid: None,
        broker_pid: None,
        progress: !fleet.quiet,
    }
}

/// Sockets this process needs: one per device, the HTTP calls, some slack.
fn files_needed(fleet: &FleetArgs) -> u64 {
    (fleet.devices + 3 * fleet.concurrency + 256) as u64
}

fn print(report: &Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{report}");
    }
    if !report.ok() {
        bail!("the fleet run found problems (see the report)");
    }
    Ok(())
}

fn run(runtime: &tokio::runtime::Runtime, args: RunArgs) -> Result<()> {
    procstat::raise_open_files(files_needed(&args.fleet))?;
    let (host, port) = parse_broker(&args.broker)?;
    let hub = HubAccess {
        url: args.hub.trim_end_matches('/').to_owned(),
        token: args.token.clone(),
    };
    let mut options = options(&args.fleet, hub, &host, port);
    options.hub_pid = args.hub_pid;
    let report = runtime.block_on(drive::run(options))?;
    print(&report, args.fleet.json)
}

fn local(runtime: &tokio::runtime::Runtime, args: LocalArgs) -> Result<()> {
    // Before starting Mosquitto, so that it inherits the raised limit.
    let limit = procstat::raise_open_files(files_needed(&args.fleet))?;
    let binary = if args.self_hub {
        HubBinary::Fleet(std::env::current_exe().context("finding this executable")?)
    } else {
        HubBinary::locate(args.relay.clone())?
    };
    let mut dir = tempfile::Builder::new();
    dir.prefix("relay-fleet-");
    let dir = match &args.dir {
        Some(parent) => dir.tempdir_in(parent),
        None => dir.tempdir(),
    }
    .context("creating the run's temp dir")?;
    let quiet = args.fleet.quiet;
    let say = |line: String| {
        if !quiet {
            eprintln!("relay-fleet: {line}");
        }
    };
    say(format!(
        "open-file limit {limit}; store and logs in {}",
        dir.path().display()
    ));
    let broker = Mosquitto::start(Some(dir.path()))?;
    let hub = HubChild::spawn(&binary, broker.port(), dir.path())?;
    say(format!(
        "broker on 127.0.0.1:{} (pid {}), hub on {} (pid {}): {}",
        broker.port(),
        broker.pid(),
        hub.access.url,
        hub.pid(),
        binary.describe()
    ));
    let mut options = options(&args.fleet, hub.access.clone(), "127.0.0.1", broker.port());
    options.hub_pid = Some(hub.pid());
    options.broker_pid = Some(broker.pid());
    let result = runtime.block_on(drive::run(options));
    let mut report = match result {
        Ok(report) => report,
        Err(e) => {
            let tail = |log: String| log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
            bail!(
                "{e}\nhub log (last lines, newest first):\n{}\nbroker log (newest first):\n{}",
                tail(hub.log()),
                tail(broker.log())
            );
        }
    };
    report.hub_binary = Some(binary.describe());
    drop(hub);
    drop(broker);
    if args.keep {
        let kept = dir.keep();
        say(format!("kept {}", kept.display()));
    }
    print(&report, args.fleet.json)
}

/// `relay-fleet hub serve`: the hub `relay hub serve` would run with these flags.
async fn serve_hub(args: HubServeArgs) -> Result<()> {
    let (host, port) = parse_broker(&args.broker)?;
    let users = relay_hub::users::Users::load(&args.users)?;
    let options =
        relay_fleet::hub::options(&args.db, args.listen, &host, port, &args.client_id, users);
    let hub = relay_hub::run::start(options)
        .await
        .with_context(|| format!("starting the hub on {}", args.db))?;
    eprintln!(
        "relay-fleet hub: API on http://{}, store {}",
        hub.addr, args.db
    );
    tokio::select! {
        served = hub.wait() => served.context("the API server stopped"),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
