//! The `relay` CLI. Each subcommand lives in its own file and stays thin: it
//! parses arguments and calls the library.

use clap::{Parser, Subcommand};

#[cfg(feature = "embedded-broker")]
pub mod broker;
#[cfg(feature = "embedded-broker")]
pub mod dev;
#[cfg(feature = "embedded-broker")]
pub mod embedded_broker;
pub mod run;
pub mod send;
pub mod test;
pub mod watch;

/// Relay: durable remote commands for IoT devices, handled by sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "relay", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a plugin against a scenario file on one or both engines.
    Test(test::TestArgs),
    /// Send a command to a device; print its id (and with --wait, its statuses).
    Send(send::SendArgs),
    /// Stream a device's status messages and events.
    Watch(watch::WatchArgs),
    /// Run only the embedded MQTT broker.
    #[cfg(feature = "embedded-broker")]
    Broker(broker::BrokerArgs),
    /// Run a device host against an MQTT broker, configured by relay.toml.
    Run(run::RunArgs),
    /// Embedded broker + host + bundled plugins in one process, for trying Relay.
    #[cfg(feature = "embedded-broker")]
    Dev(dev::DevArgs),
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Test(args) => test::run(args),
        Command::Send(args) => send::run(args),
        Command::Watch(args) => watch::run(args),
        #[cfg(feature = "embedded-broker")]
        Command::Broker(args) => broker::run(args),
        Command::Run(args) => run::run(args),
        #[cfg(feature = "embedded-broker")]
        Command::Dev(args) => dev::run(args),
    }
}
