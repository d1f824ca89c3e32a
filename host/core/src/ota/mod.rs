//! Over-the-air plugin updates: the decisions, `no_std`, shared by the Linux
//! host and the microcontroller build. Files, engines and the registry stay
//! outside; this module says what a bundle is, whether to trust it, and what
//! the device's update state becomes.
//!
//! An update travels as ordinary commands through the durable FIFO (so
//! "install v2, then run deploy" keeps its order), admin only:
//!
//! | command | payload | what it does |
//! |---------|---------|--------------|
//! | `_install` | `{bundle, offset, total, data}` ([`chunk`]) | one chunk of a signed bundle; the last one verifies, stages and switches |
//! | `_rollback` | `{name}` | back to the previous version of a plugin |
//! | `_remove` | `{name}` | unload a plugin and its commands, across restarts |
//!
//! The path of a bundle, and the module that decides each step:
//!
//! 1. [`chunk`]: chunks are written to staging storage as they come, in
//!    order; a repeated chunk (a redelivery, a re-run after a crash) is
//!    written again at its offset, so receiving is idempotent and resumes.
//! 2. [`verify`]: the header, the key (trusted, not revoked), the ed25519
//!    signature over the manifest, then the module's sha256, streamed from
//!    staging in blocks. No module byte is parsed before both pass.
//! 3. [`policy`]: the WIT world, the minimum host version, the size limit,
//!    anti-rollback against the highest version ever installed ([`state`]),
//!    and, once the engine has loaded the module, that its own `describe()`
//!    matches the signed manifest.
//! 4. [`state`]: the durable record of every updated plugin (active,
//!    previous, highest version, trial), written atomically by the host.
//! 5. [`trial`]: after a switch the new version is on trial: its self-test,
//!    then its first commands; a trap or a time-out rolls it back.
//!
//! [`install`] holds what carrying out the commands is, wherever bundles
//! are kept: replies, events, the role check, the self-test.
//!
//! Every refusal is a [`Refusal`] with a status code of its own
//! (`docs/ota.md` lists them).

pub mod bundle;
pub mod chunk;
pub mod install;
pub mod manifest;
pub mod policy;
mod refusal;
pub mod state;
pub mod trial;
pub mod verify;

pub use bundle::{key_id, sign_bundle, KeyId, BUNDLE_MAGIC, HEADER_LEN, SIGNATURE_LEN};
pub use manifest::Manifest;
pub use refusal::Refusal;

/// The WIT world this host runs (`wit/relay-plugin.wit`).
pub const WORLD: &str = "relay:plugin@0.1.0";

/// Reserved command names of the update channel.
pub const INSTALL: &str = "_install";
pub const ROLLBACK: &str = "_rollback";
pub const REMOVE: &str = "_remove";

/// The name of the command a plugin lists to get a self-test: the host runs
/// it (role admin, empty payload) right after switching to a new version,
/// and rolls back if it does not succeed. Plugins without it skip that step.
pub const SELF_TEST: &str = "self-test";

/// True for the built-ins that go through the FIFO and the handler thread
/// (unlike `_status` / `_plugins`, answered at arrival).
pub fn is_update_command(name: &str) -> bool {
    matches!(name, INSTALL | ROLLBACK | REMOVE)
}
