//! What the over-the-air tests share: the `relay` binary run as a user
//! runs it, a signing key and signed `leds` bundles made with the CLI, and
//! a `relay run` device whose plugin directory holds `leds` 1.0.0.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use relay_core::ota::state::UpdateState;

use super::host_process::{relay_binary, HostConfig, HostProcess};
use super::ota_support::plugin_wat::{plugin_module, Behaviour};

pub const CMDS: &[&str] = &["blink", "self-test"];
pub const READY: Duration = Duration::from_secs(120);

pub fn relay(args: &[&str], port: u16) -> Result<Output> {
    Command::new(relay_binary())
        .args(args)
        .args(["--port", &port.to_string()])
        .output()
        .context("running relay")
}

pub fn relay_offline(args: &[&str]) -> Result<Output> {
    Command::new(relay_binary())
        .args(args)
        .output()
        .context("running relay")
}

pub fn ok(out: &Output) -> Result<String> {
    ensure!(
        out.status.success(),
        "relay failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Keys and a signed 2.0.0 bundle of `leds`, made with the CLI.
pub struct Signed {
    dir: tempfile::TempDir,
    pub public: String,
}

impl Signed {
    pub fn make() -> Result<Signed> {
        let dir = tempfile::tempdir()?;
        let prefix = dir.path().join("ops");
        ok(&relay_offline(&[
            "plugin",
            "keygen",
            "--out",
            prefix.to_str().unwrap(),
        ])?)?;
        let public = std::fs::read_to_string(dir.path().join("ops.pub"))?
            .trim()
            .to_string();
        for (version, behaviour) in [("2.0.0", Behaviour::Echo), ("3.0.0", Behaviour::Traps)] {
            let module = dir.path().join(format!("leds-{version}.wasm"));
            std::fs::write(&module, plugin_module("leds", version, CMDS, behaviour))?;
            let bundle = dir.path().join(format!("leds-{version}.bundle"));
            let out = ok(&relay_offline(&[
                "plugin",
                "sign",
                module.to_str().unwrap(),
                "--key",
                dir.path().join("ops.key").to_str().unwrap(),
                "-o",
                bundle.to_str().unwrap(),
            ])?)?;
            ensure!(out.contains(&format!("leds {version}")), "{out}");
        }
        Ok(Signed { dir, public })
    }

    pub fn bundle(&self, version: &str) -> String {
        self.dir
            .path()
            .join(format!("leds-{version}.bundle"))
            .display()
            .to_string()
    }
}

/// A host whose plugin directory holds `leds` 1.0.0, trusting `public`.
pub fn host(port: u16, device: &str, public: &str) -> Result<HostProcess> {
    let mut config = HostConfig::new(device, port, &[]);
    config.extra_toml = format!("[updates]\ntrusted_keys = [\"{public}\"]\ntrial_commands = 1\n");
    let host = HostProcess::prepare(config)?;
    std::fs::write(
        host.dir().join("plugins/leds.wasm"),
        plugin_module("leds", "1.0.0", CMDS, Behaviour::Echo),
    )?;
    Ok(host)
}

pub fn state(dir: &Path) -> Result<UpdateState> {
    let bytes = std::fs::read(dir.join("data/updates/state")).context("update state")?;
    UpdateState::decode(&bytes).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `relay send blink --wait --json`: the final status as JSON.
pub fn blink(port: u16, device: &str) -> Result<serde_json::Value> {
    let out = ok(&relay(
        &[
            "send",
            "-d",
            device,
            "blink",
            "[1]",
            "--wait",
            "--json",
            "--timeout",
            "60s",
        ],
        port,
    )?)?;
    let last = out.lines().last().context("no status")?;
    Ok(serde_json::from_str(last)?)
}
