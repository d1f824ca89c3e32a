//! The `relay` command line: thin subcommands over `relay_host`.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    relay_host::cli::init_tracing();
    let cli = relay_host::cli::Cli::parse();
    relay_host::cli::run(cli)
}
