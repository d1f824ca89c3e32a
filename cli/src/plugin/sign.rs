//! `relay plugin sign` and `relay plugin inspect`.
//!
//! Signing loads the module on wasmi (the engine every device has) and
//! reads its own `describe()`: the name, version and command table in the
//! manifest are the module's, so a signer cannot mislabel a module by
//! mistake, and a device checks them again after loading it.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use relay_core::engine::wasmi::WasmiEngine;
use relay_core::engine::Engine;
use relay_core::host_env::HostEnv;
use relay_core::limits::Limits;
use relay_core::ota::bundle::{key_id, key_id_hex, sign_bundle, Header};
use relay_core::ota::verify::{verify, TrustedKeys};
use relay_core::ota::{Manifest, WORLD};

use super::keys::{read_public_key, read_signing_key};

/// Sign a plugin module into a bundle.
#[derive(Debug, Args)]
#[command(
    after_help = "Example: relay plugin sign target/plugins/echo.wasm --key ops.key -o echo.bundle"
)]
pub struct SignArgs {
    /// The plugin module (.wasm).
    pub module: PathBuf,
    /// The secret key file (from `relay plugin keygen`).
    #[arg(long, short)]
    pub key: PathBuf,
    /// Where to write the bundle [default: NAME-VERSION.bundle].
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// The oldest host version that may install it.
    #[arg(long, default_value = "0.1.0")]
    pub min_host: String,
    /// Allow devices to install it over a higher version (an explicit downgrade).
    #[arg(long)]
    pub allow_downgrade: bool,
}

pub fn sign(args: SignArgs) -> Result<()> {
    let key = read_signing_key(&args.key)?;
    let module = std::fs::read(&args.module)
        .with_context(|| format!("reading {}", args.module.display()))?;
    let engine = WasmiEngine::new();
    let limits = Limits::default();
    let plugin = engine
        .load(&module, &limits, &mut |_| HostEnv::detached(&limits))
        .map_err(|e| anyhow!("{} does not load as a plugin: {e}", args.module.display()))?;
    let info = plugin.info().clone();
    semver::Version::parse(&info.version)
        .with_context(|| format!("the plugin's version {:?} is not semver", info.version))?;
    semver::Version::parse(&args.min_host).context("--min-host is not semver")?;
    let manifest = Manifest {
        name: info.name.clone(),
        version: info.version.clone(),
        world: WORLD.into(),
        sha256: [0; 32],
        size: 0,
        commands: info.commands,
        min_host: args.min_host,
        key_id: String::new(),
        allow_downgrade: args.allow_downgrade,
        signed_at: relay_client::unix_ms(),
    };
    let bundle = sign_bundle(manifest, &module, &key);
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{}-{}.bundle", info.name, info.version)));
    std::fs::write(&out, &bundle).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{}: {} {} ({} bytes, key {})",
        out.display(),
        info.name,
        info.version,
        bundle.len(),
        key_id_hex(&key_id(&key.verifying_key()))
    );
    Ok(())
}

/// Print a bundle's manifest.
#[derive(Debug, Args)]
pub struct InspectArgs {
    pub bundle: PathBuf,
    /// Verify the signature and hash with this public key (.pub file or hex).
    #[arg(long, short)]
    pub key: Option<String>,
}

pub fn inspect(args: InspectArgs) -> Result<()> {
    let bytes = std::fs::read(&args.bundle)
        .with_context(|| format!("reading {}", args.bundle.display()))?;
    let manifest = read_manifest(&bytes)?;
    if let Some(key) = &args.key {
        let mut trust = TrustedKeys::new();
        trust
            .trust(read_public_key(key)?.as_bytes())
            .map_err(|e| anyhow!(e))?;
        verify(&mut &bytes[..], &trust, u64::MAX)
            .map_err(|e| anyhow!("{} ({})", e, e.code_str()))?;
    }
    let json = serde_json::json!({
        "name": manifest.name,
        "version": manifest.version,
        "world": manifest.world,
        "sha256": relay_core::ota::bundle::hex(&manifest.sha256),
        "size": manifest.size,
        "commands": manifest.commands,
        "min_host": manifest.min_host,
        "key_id": manifest.key_id,
        "allow_downgrade": manifest.allow_downgrade,
        "signed_at": manifest.signed_at,
        "verified": args.key.is_some(),
    });
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

/// The manifest of a bundle, unverified (for display and routing only).
pub fn read_manifest(bytes: &[u8]) -> Result<Manifest> {
    let header = Header::parse(bytes).map_err(|e| anyhow!(e))?;
    let end = header.signature_offset();
    if bytes.len() < end {
        bail!("the bundle is truncated");
    }
    Manifest::decode(&bytes[relay_core::ota::HEADER_LEN..end]).map_err(|e| anyhow!(e))
}
