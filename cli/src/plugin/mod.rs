//! `relay plugin`: signed plugin bundles and over-the-air updates.
//!
//! - `new` scaffolds a plugin project in any supported language ([`new`]);
//! - `keygen`, `sign`, `inspect` work offline on files ([`keys`], [`sign`]);
//! - `push`, `list`, `rollback`, `remove` talk to a device over MQTT
//!   ([`device`]), as admin: updates travel through the device's durable
//!   FIFO like any command (`docs/ota.md`); with `--hub URL` they go
//!   through the hub, which stores them until the device has run them;
//! - `rollout` sends one bundle to many devices through the hub ([`rollout`]).

use anyhow::Result;
use clap::{Args, Subcommand};

pub mod device;
pub mod keys;
pub mod new;
mod new_templates;
pub mod rollout;
pub mod sign;
pub mod via_hub;

/// Sign plugins and update them on devices.
#[derive(Debug, Args)]
#[command(after_help = "\
A typical update:
  relay plugin keygen --out ops                      # ops.key (secret), ops.pub
  # add the printed public key to [updates] trusted_keys in the device's relay.toml
  relay plugin sign target/plugins/echo.wasm --key ops.key -o echo-1.1.0.bundle
  relay plugin push -d dev-1 echo-1.1.0.bundle       # streamed, verified, on trial
  relay plugin list -d dev-1
  relay plugin rollback -d dev-1 echo                # back to the previous version

See docs/ota.md for the bundle format, the checks and every refusal code.")]
pub struct PluginArgs {
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a plugin project in Rust, C, C++, AssemblyScript or Zig that builds with one command.
    New(new::NewArgs),
    /// Create an ed25519 signing key pair (KEY.key, secret; KEY.pub, public).
    Keygen(keys::KeygenArgs),
    /// Sign a plugin module into a bundle (name, version, commands from its describe()).
    Sign(sign::SignArgs),
    /// Print a bundle's manifest (and check its signature with --key).
    Inspect(sign::InspectArgs),
    /// Stream a signed bundle to a device, which verifies and installs it.
    Push(device::PushArgs),
    /// List the plugins a device runs, with their versions.
    List(device::ListArgs),
    /// Return a plugin to its previous version on a device.
    Rollback(device::NameArgs),
    /// Unload a plugin and its commands from a device (stays removed across restarts).
    Remove(device::NameArgs),
    /// Roll a bundle out to many devices through the hub (rate, abort criteria), or show one.
    Rollout(rollout::RolloutArgs),
}

pub fn run(args: PluginArgs) -> Result<()> {
    match args.command {
        PluginCommand::New(a) => new::new(a),
        PluginCommand::Keygen(a) => keys::keygen(a),
        PluginCommand::Sign(a) => sign::sign(a),
        PluginCommand::Inspect(a) => sign::inspect(a),
        PluginCommand::Push(a) => device::push(a),
        PluginCommand::List(a) => device::list(a),
        PluginCommand::Rollback(a) => device::by_name(a, relay_core::ota::ROLLBACK),
        PluginCommand::Remove(a) => device::by_name(a, relay_core::ota::REMOVE),
        PluginCommand::Rollout(a) => rollout::run(a),
    }
}
