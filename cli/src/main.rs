//! The `relay` command line: thin subcommands over the Relay crates.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    relay_cli::init_tracing();
    let cli = relay_cli::Cli::parse();
    relay_cli::run(cli)
}
