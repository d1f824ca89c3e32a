//! Plugin updates over the air on the networked emulated device, with the
//! `relay` CLI as an operator would use it (`relay plugin keygen`, `sign`,
//! `push`, `list`, `rollback`): the bundle's chunks are staged in the
//! device's update partition (a host file, NOR semantics), verified there,
//! and run on wasmi. It checks:
//!
//! 1. a plugin the firmware lacks installs and its commands run;
//! 2. a new version of it installs on trial and is confirmed after three
//!    calls;
//! 3. a bundle signed with a key the device does not trust is refused;
//! 4. `relay plugin rollback` returns to the previous version, read from its
//!    bundle region;
//! 5. after a power cut (QEMU killed) the device boots with the state it
//!    had: the rolled-back version, and the plugins the firmware carries.
//!
//! The plugins are generated modules (`host/tests/ota_support/plugin_wat.rs`,
//! the ones the Linux update tests use): a new release is a new module.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::qemu_net::{App, Boot, Emulated};

#[path = "../../host/tests/ota_support/plugin_wat.rs"]
#[allow(dead_code)]
mod plugin_wat;

const CMDS: &[&str] = &["blink", "self-test"];

/// The operator's signing key (`relay plugin keygen`), and one the device
/// does not trust.
pub(super) struct Keys {
    secret: PathBuf,
    foreign: PathBuf,
    pub(super) public: String,
}

impl Keys {
    pub(super) fn new(app: &App, dir: &Path) -> Result<Keys> {
        for name in ["ops", "foreign"] {
            offline(app, &["plugin", "keygen", "--out"], &[dir.join(name)])?;
        }
        Ok(Keys {
            secret: dir.join("ops.key"),
            foreign: dir.join("foreign.key"),
            public: fs::read_to_string(dir.join("ops.pub"))?.trim().to_string(),
        })
    }
}

/// `relay ARGS PATHS...` offline (no broker).
fn offline(app: &App, args: &[&str], paths: &[PathBuf]) -> Result<()> {
    let out = Command::new(&app.relay).args(args).args(paths).output()?;
    ensure!(
        out.status.success(),
        "relay {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A signed bundle of generated plugin `leds` at `version`.
fn bundle(app: &App, dir: &Path, version: &str, key: &Path) -> Result<PathBuf> {
    let module = dir.join(format!("leds-{version}.wasm"));
    let behaviour = plugin_wat::Behaviour::Echo;
    fs::write(
        &module,
        plugin_wat::plugin_module("leds", version, CMDS, behaviour),
    )?;
    let stem = key.file_stem().and_then(|s| s.to_str()).unwrap_or("key");
    let out = dir.join(format!("leds-{version}-{stem}.bundle"));
    let status = Command::new(&app.relay)
        .args(["plugin", "sign"])
        .arg(&module)
        .arg("--key")
        .arg(key)
        .arg("-o")
        .arg(&out)
        .output()?;
    ensure!(
        status.status.success(),
        "relay plugin sign: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    Ok(out)
}

fn push(app: &App, bundle: &Path) -> Result<Value> {
    let path = bundle.to_str().context("a UTF-8 path")?;
    app.query(&["plugin", "push"], &[path, "--chunk-size", "4096"])
}

/// `leds` as `relay plugin list` shows it: (version, update state).
fn listed(app: &App) -> Result<(Option<String>, Option<String>, Vec<String>)> {
    let list = app.query(&["plugin", "list"], &[])?;
    let plugins = list.as_array().context("relay plugin list: an array")?;
    let names = plugins
        .iter()
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect();
    let leds = plugins.iter().find(|p| p["name"] == "leds");
    Ok((
        leds.and_then(|p| p["version"].as_str().map(String::from)),
        leds.and_then(|p| p["update"]["state"].as_str().map(String::from)),
        names,
    ))
}

pub(super) fn checks(
    app: &App,
    boot: &Boot,
    keys: &Keys,
    mut device: Emulated,
    dir: &Path,
) -> Result<()> {
    let v1 = bundle(app, dir, "1.0.0", &keys.secret)?;
    let done = push(app, &v1)?;
    ensure!(
        done["status"] == "succeeded" && done["reply"]["version"] == "1.0.0",
        "relay plugin push leds 1.0.0: {done}"
    );
    let blink = app.send("blink", &json!({"on": true}), &[])?;
    ensure!(
        blink["status"] == "succeeded" && blink["plugin"] == "leds@1.0.0",
        "blink on the installed plugin: {blink}"
    );
    println!("ok - relay plugin push installs a plugin the firmware lacks, staged and verified on flash, run on wasmi");

    let v2 = bundle(app, dir, "2.0.0", &keys.secret)?;
    let done = push(app, &v2)?;
    ensure!(
        done["reply"]["state"] == "trial" && done["reply"]["previous"] == "1.0.0",
        "relay plugin push leds 2.0.0: {done}"
    );
    ensure!(
        listed(app)?.1.as_deref() == Some("trial"),
        "2.0.0 is on trial"
    );
    for _ in 0..3 {
        let blink = app.send("blink", &json!({"on": false}), &[])?;
        ensure!(blink["plugin"] == "leds@2.0.0", "blink on 2.0.0: {blink}");
    }
    let (version, state, _) = listed(app)?;
    ensure!(
        version.as_deref() == Some("2.0.0") && state.as_deref() == Some("confirmed"),
        "2.0.0 confirmed after three calls: {version:?} {state:?}"
    );
    println!("ok - a new version installs on trial and is confirmed after three calls");

    let foreign = bundle(app, dir, "3.0.0", &keys.foreign)?;
    let path = foreign.to_str().context("a UTF-8 path")?;
    let out = Command::new(&app.relay)
        .args([
            "plugin",
            "push",
            "-d",
            super::qemu_net::DEVICE,
            path,
            "--json",
        ])
        .args(["--chunk-size", "4096", "--broker"])
        .arg(format!("mqtt://127.0.0.1:{}", boot.port))
        .output()?;
    let refused: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("null"),
    )?;
    ensure!(
        !out.status.success() && refused["status"] == "failed",
        "a bundle signed with an untrusted key: {refused}"
    );
    ensure!(listed(app)?.0.as_deref() == Some("2.0.0"), "2.0.0 stays");
    println!(
        "ok - a bundle signed with a key the device does not trust is refused ({})",
        refused["code"]
    );

    let back = app.query(&["plugin", "rollback"], &["leds"])?;
    ensure!(
        back["status"] == "succeeded" && back["reply"]["version"] == "1.0.0",
        "relay plugin rollback: {back}"
    );
    let blink = app.send("blink", &json!({"on": true}), &[])?;
    ensure!(
        blink["plugin"] == "leds@1.0.0",
        "blink after the rollback: {blink}"
    );
    println!("ok - relay plugin rollback returns to 1.0.0, read back from its bundle region");

    drop(device);
    device = boot.start()?;
    let (version, _, names) = listed(app)?;
    ensure!(
        version.as_deref() == Some("1.0.0")
            && names.iter().any(|n| n == "echo")
            && names.iter().any(|n| n == "deploy"),
        "after a power cut: leds {version:?}, plugins {names:?}\n{}",
        device.log.join("\n")
    );
    let blink = app.send("blink", &json!({"on": false}), &[])?;
    ensure!(
        blink["plugin"] == "leds@1.0.0",
        "blink after the restart: {blink}"
    );
    println!("ok - after a power cut the device boots with the version it ran, from flash");
    Ok(())
}
