//! The `relay` CLI. Each subcommand lives in its own file and stays thin: it
//! parses arguments and calls the library crates (`relay-client` for the
//! app side, `relay-host` for the device, `relay-harness` for `relay test`).
//!
//! # Layout
//! - one module per subcommand: `send`, `status`, `watch`, `test`, `run`,
//!   `dev`, `broker` (the last two with the `embedded-broker` feature);
//! - [`connect`]: the one set of broker flags of the app-side subcommands;
//! - [`render`]: statuses as text and JSON lines; [`time`]: readable times.

use clap::{CommandFactory, Parser, Subcommand};

#[cfg(feature = "embedded-broker")]
pub mod broker;
#[cfg(feature = "embedded-broker")]
pub mod bundled;
pub mod connect;
#[cfg(feature = "embedded-broker")]
pub mod dev;
#[cfg(feature = "embedded-broker")]
pub mod embedded_broker;
pub mod hub;
pub mod hub_client;
pub mod plugin;
pub mod render;
pub mod run;
pub mod send;
pub mod status;
pub mod test;
pub mod time;
pub mod watch;

const EXIT_CODES: &str = "\
Exit status (every subcommand): 0 success; 1 error (the message says which and why);
2 usage error. `send --wait`: 3 the command ended failed, rejected or expired.
`status`: 4 the device has no record of the request.

Get started: `relay dev` (broker + device + bundled plugins), then in another terminal
`relay send -d dev-1 echo '{\"hello\": 1}' --wait`.";

/// Relay: durable remote commands for IoT devices, handled by sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "relay", version, about, long_about = None, after_help = EXIT_CODES)]
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
    /// Show the last known status of a request, asked of the device.
    Status(status::StatusArgs),
    /// Stream a device's status messages and events.
    Watch(watch::WatchArgs),
    /// Run only the embedded MQTT broker.
    #[cfg(feature = "embedded-broker")]
    Broker(broker::ListenArgs),
    /// Run a device host against an MQTT broker, configured by relay.toml.
    Run(run::RunArgs),
    /// Sign plugins and update them on devices over the air (keygen, sign, push, list, rollback, remove).
    Plugin(plugin::PluginArgs),
    /// The hub: durable delivery from apps to devices, request tracking (`serve`, `token`).
    Hub(hub::HubArgs),
    /// Embedded broker + host + bundled plugins in one process, for trying Relay.
    #[cfg(feature = "embedded-broker")]
    Dev(dev::DevArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Example: relay completions bash > ~/.local/share/bash-completion/completions/relay"
    )]
    Completions { shell: clap_complete::Shell },
}

/// The log filter without `RUST_LOG`: our own logs at info, the embedded
/// broker's at warn, and none of its per-connection messages: rumqttd logs
/// an ERROR for every client that disconnects (and for the readiness probe
/// of `relay dev`), which on a healthy start would read as a failure. The
/// clients report their own connection problems. `RUST_LOG=rumqttd=info`
/// brings them back.
pub const DEFAULT_LOG_FILTER: &str = "info,rumqttd=warn,rumqttd::server::broker=off";

/// Logs go to stderr, filtered by `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Test(args) => test::run(args),
        Command::Send(args) => send::run(args),
        Command::Status(args) => status::run(args),
        Command::Watch(args) => watch::run(args),
        #[cfg(feature = "embedded-broker")]
        Command::Broker(args) => broker::run(args),
        Command::Run(args) => run::run(args),
        Command::Hub(args) => hub::run(args),
        Command::Plugin(args) => plugin::run(args),
        #[cfg(feature = "embedded-broker")]
        Command::Dev(args) => dev::run(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "relay", &mut std::io::stdout());
            Ok(())
        }
    }
}
