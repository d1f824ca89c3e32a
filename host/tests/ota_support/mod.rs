//! Shared by the update tests of `relay-host` and of the CLI (`#[path]`).

pub mod plugin_wat;

use ed25519_dalek::SigningKey;
use relay_core::ota::{sign_bundle, Manifest, WORLD};
use relay_core::plugin::{CommandSpec, Role};

/// A fixed signing key per seed (tests must be reproducible).
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The public key as the config takes it (hex).
pub fn public_hex(key: &SigningKey) -> String {
    relay_core::ota::bundle::hex(key.verifying_key().as_bytes())
}

/// A manifest for `module` as `relay plugin sign` writes it (all roles).
pub fn manifest(name: &str, version: &str, commands: &[&str]) -> Manifest {
    Manifest {
        name: name.into(),
        version: version.into(),
        world: WORLD.into(),
        sha256: [0; 32],
        size: 0,
        commands: commands
            .iter()
            .map(|c| CommandSpec {
                name: (*c).into(),
                roles: Role::ALL.to_vec(),
                budget_ms: None,
            })
            .collect(),
        min_host: "0.1.0".into(),
        key_id: String::new(),
        allow_downgrade: false,
        signed_at: 1,
    }
}

/// A signed bundle of a generated plugin.
pub fn bundle(
    name: &str,
    version: &str,
    commands: &[&str],
    behaviour: plugin_wat::Behaviour,
    key: &SigningKey,
) -> Vec<u8> {
    let module = plugin_wat::plugin_module(name, version, commands, behaviour);
    sign_bundle(manifest(name, version, commands), &module, key)
}
