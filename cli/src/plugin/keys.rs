//! `relay plugin keygen` and the key files it writes.
//!
//! `NAME.key` holds the 32-byte ed25519 secret seed as hex, created with
//! mode 0600; `NAME.pub` the public key as hex, the form `relay.toml`'s
//! `[updates] trusted_keys` takes. Hex keeps both readable and easy to paste
//! into a config or a secret store.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use ed25519_dalek::{SigningKey, VerifyingKey};
use relay_core::ota::bundle::{hex, key_id, key_id_hex, unhex};

/// Create a signing key pair.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Path prefix of the key files: writes PREFIX.key and PREFIX.pub.
    #[arg(long, short, default_value = "relay-signing")]
    pub out: PathBuf,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
}

pub fn keygen(args: KeygenArgs) -> Result<()> {
    let secret = with_ext(&args.out, "key");
    let public = with_ext(&args.out, "pub");
    for path in [&secret, &public] {
        if path.exists() && !args.force {
            bail!("{} exists (use --force to replace it)", path.display());
        }
    }
    let seed: [u8; 32] = rand::random();
    let key = SigningKey::from_bytes(&seed);
    write_private(&secret, &hex(&seed))?;
    let public_hex = hex(key.verifying_key().as_bytes());
    std::fs::write(&public, format!("{public_hex}\n"))
        .with_context(|| format!("writing {}", public.display()))?;
    println!(
        "secret key: {} (keep it secret; it signs updates)",
        secret.display()
    );
    println!("public key: {}", public.display());
    println!("key id:     {}", key_id_hex(&key_id(&key.verifying_key())));
    println!(
        "\nTrust it on a device, in relay.toml:\n[updates]\ntrusted_keys = [\"{public_hex}\"]"
    );
    Ok(())
}

/// Reads a secret key file written by `keygen`.
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the signing key {}", path.display()))?;
    let seed: [u8; 32] = unhex(text.trim())
        .and_then(|b| b.try_into().ok())
        .with_context(|| {
            format!(
                "{} is not a signing key (64 hex characters)",
                path.display()
            )
        })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads a public key: a `.pub` file, or 64 hex characters.
pub fn read_public_key(arg: &str) -> Result<VerifyingKey> {
    let text = if Path::new(arg).exists() {
        std::fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?
    } else {
        arg.to_string()
    };
    let bytes: [u8; 32] = unhex(text.trim())
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{arg} is not a public key file or 64 hex characters"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("invalid ed25519 public key: {e}"))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{text}").with_context(|| format!("writing {}", path.display()))
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}
