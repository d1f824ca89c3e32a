//! Over-the-air updates through the real CLI and a real `relay run` on
//! Mosquitto (issue 11): `relay plugin keygen`, `sign`, `push`, `list`,
//! `rollback`, and a crash at each step of an install.
//!
//! The crash test stops the device, on each engine, at every step of an install (a chunk
//! staged, the bundle verified, the module kept, the state switched, the
//! version on trial, the version confirmed) with the `RELAY_CRASH_AT` hook,
//! which aborts the process there as `kill -9` would; then starts it again
//! without the hook. Each time, `relay plugin push` (still waiting) must
//! get a final answer, never hang: the install completes, exactly one
//! complete version of the plugin is active and runs commands, and the
//! update state on disk agrees.
//!
//! Through the hub: `push --hub` and a `rollout` (a glob over the hub's
//! devices) to two real devices, one of which already runs the version.

#[path = "support/host_process.rs"]
mod host_process;
#[path = "support/hub.rs"]
mod hub;
#[path = "support/ota_device.rs"]
mod ota_device;
#[path = "../../host/tests/ota_support/mod.rs"]
#[allow(dead_code)]
mod ota_support;
#[allow(unused_imports)]
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use host_process::relay_binary;
use ota_device::*;
use support::mosquitto::Mosquitto;

#[test]
fn push_list_rollback_through_the_cli() -> Result<()> {
    let broker = Mosquitto::start()?;
    let port = broker.port();
    let signed = Signed::make()?;
    let mut host = host(port, "ota-cli", &signed.public)?;
    host.spawn()?;
    host.wait_ready(READY)?;
    let out = ok(&relay(
        &[
            "plugin",
            "push",
            "-d",
            "ota-cli",
            &signed.bundle("2.0.0"),
            "--chunk-size",
            "300",
        ],
        port,
    )?)?;
    ensure!(
        out.contains("\"state\":\"trial\"") && out.contains("\"previous\":\"1.0.0\""),
        "{out}"
    );
    let list = ok(&relay(&["plugin", "list", "-d", "ota-cli"], port)?)?;
    ensure!(
        list.contains("leds")
            && list.contains("2.0.0")
            && list.contains("trial, rollback to 1.0.0"),
        "{list}"
    );
    ensure!(blink(port, "ota-cli")?["plugin"] == "leds@2.0.0");

    let out = ok(&relay(
        &["plugin", "rollback", "-d", "ota-cli", "leds"],
        port,
    )?)?;
    ensure!(out.contains("\"version\":\"1.0.0\""), "{out}");
    ensure!(blink(port, "ota-cli")?["plugin"] == "leds@1.0.0");

    // A version that traps: installed, then rolled back by its first command.
    ok(&relay(
        &["plugin", "push", "-d", "ota-cli", &signed.bundle("3.0.0")],
        port,
    )?)?;
    let status = blink(port, "ota-cli")?;
    ensure!(
        status["status"] == "succeeded" && status["plugin"] == "leds@1.0.0",
        "{status}"
    );

    // A refusal exits 3 with the code: the same bundle is now a downgrade.
    let refused = relay(
        &["plugin", "push", "-d", "ota-cli", &signed.bundle("3.0.0")],
        port,
    )?;
    ensure!(refused.status.code() == Some(3), "{refused:?}");
    ensure!(String::from_utf8_lossy(&refused.stderr).contains("bundle_downgrade"));
    let inspect = ok(&relay_offline(&[
        "plugin",
        "inspect",
        &signed.bundle("2.0.0"),
        "--key",
        &signed.public,
    ])?)?;
    ensure!(inspect.contains("\"verified\": true"), "{inspect}");
    Ok(())
}

#[test]
fn a_crash_at_every_step_of_an_install_leaves_one_complete_version() -> Result<()> {
    let broker = Mosquitto::start()?;
    let port = broker.port();
    let signed = Signed::make()?;
    let steps = [
        "chunk",
        "verified",
        "staged",
        "switched",
        "trial",
        "confirmed",
    ];
    for (engine, step) in ["wasmi", "wasmtime"]
        .into_iter()
        .flat_map(|e| steps.map(|s| (e, s)))
    {
        let device = format!("ota-{engine}-{step}");
        let mut host = host(port, &device, &signed.public)?;
        host.config.engine = engine.into();
        host.config.env = vec![("RELAY_CRASH_AT".into(), step.into())];
        host.spawn()?;
        host.wait_ready(READY)?;
        let push = Command::new(relay_binary())
            .args([
                "plugin",
                "push",
                "-d",
                &device,
                &signed.bundle("2.0.0"),
                "--chunk-size",
                "600",
            ])
            .args(["--timeout", "120s", "--json", "--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // `confirmed` needs the trial command that confirms the version.
        let confirmer = if step == "confirmed" {
            let device = device.clone();
            Some(std::thread::spawn(move || {
                // After the install: the push is queued before this command.
                std::thread::sleep(Duration::from_millis(500));
                blink(port, &device)
            }))
        } else {
            None
        };
        let crashed = host.wait_exit(Duration::from_secs(120))?;
        ensure!(
            !crashed.success(),
            "{engine} {step}: the host stopped at the hook ({crashed})"
        );
        host.config.env.clear();
        host.spawn()?;
        host.wait_ready(READY)?;
        let pushed = push.wait_with_output()?;
        let out = ok(&pushed).with_context(|| format!("{engine} {step}: push after the crash"))?;
        ensure!(out.contains("\"succeeded\""), "{engine} {step}: {out}");
        if let Some(confirmer) = confirmer {
            let status = confirmer.join().unwrap()?;
            ensure!(status["status"] == "succeeded", "{engine} {step}: {status}");
        }
        let list = ok(&relay(&["plugin", "list", "-d", &device, "--json"], port)?)?;
        let plugins: serde_json::Value = serde_json::from_str(&list)?;
        let leds: Vec<_> = plugins
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == "leds")
            .collect();
        ensure!(
            leds.len() == 1 && leds[0]["version"] == "2.0.0",
            "{engine} {step}: {list}"
        );
        let status = blink(port, &device)?;
        ensure!(
            status["plugin"] == "leds@2.0.0",
            "{engine} {step}: {status}"
        );
        let on_disk = state(host.dir())?;
        let entry = &on_disk.plugins["leds"];
        ensure!(
            entry.active.as_ref().map(|a| a.version.as_str()) == Some("2.0.0"),
            "{engine} {step}: {on_disk:?}"
        );
        let modules = std::fs::read_dir(host.dir().join("data/updates/modules"))?.count();
        ensure!(modules == 1, "{engine} {step}: {modules} modules kept");
        if step == "confirmed" {
            ensure!(
                !entry.trial,
                "{engine} {step}: confirmed before the crash stays confirmed"
            );
        }
        host.terminate()?;
    }
    Ok(())
}

#[test]
fn push_and_rollout_through_the_hub() -> Result<()> {
    let broker = Mosquitto::start()?;
    let port = broker.port();
    let signed = Signed::make()?;
    let mut hosts = Vec::new();
    for device in ["ota-hub-1", "ota-hub-2"] {
        let mut host = host(port, device, &signed.public)?;
        host.spawn()?;
        host.wait_ready(READY)?;
        hosts.push(host);
    }
    let hub = hub::HubProcess::start(port)?;
    let url = format!("http://127.0.0.1:{}", hub.port);
    let via = ["--hub", url.as_str(), "--token", hub::ADMIN];
    let bundle = signed.bundle("2.0.0");
    let mut push = vec![
        "plugin",
        "push",
        "-d",
        "ota-hub-1",
        &bundle,
        "--chunk-size",
        "400",
    ];
    push.extend(via);
    let out = ok(&relay_offline(&push)?)?;
    ensure!(out.contains("\"state\":\"trial\""), "{out}");
    let mut list = vec!["plugin", "list", "-d", "ota-hub-1", "--json"];
    list.extend(via);
    let out = ok(&relay_offline(&list)?)?;
    ensure!(out.contains("\"version\":\"2.0.0\""), "{out}");

    // Both devices, by a glob over the devices the hub has seen.
    let mut rollout = vec!["plugin", "rollout", &bundle, "--devices", "ota-hub-*"];
    rollout.extend([
        "--rate",
        "600/min",
        "--min-executed",
        "1",
        "--wait",
        "--json",
    ]);
    rollout.extend(via);
    let mut seen = false;
    for _ in 0..100 {
        let known = hub.admin("GET", "/v1/devices", None, 200)?;
        if known["devices"].as_array().is_some_and(|d| d.len() >= 2) {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(seen, "the hub saw both devices");
    let out = ok(&relay_offline(&rollout)?)?;
    let view: serde_json::Value = serde_json::from_str(out.trim())?;
    ensure!(
        view["state"] == "completed" && view["counts"]["succeeded"] == 2,
        "{view:#}"
    );
    let status = blink(port, "ota-hub-2")?;
    ensure!(status["plugin"] == "leds@2.0.0", "{status}");
    Ok(())
}

/// A rollout survives a `kill -9` of the hub: restarted on its database,
/// the hub finishes it, and no device installs twice.
#[test]
fn a_rollout_continues_after_the_hub_is_killed() -> Result<()> {
    let broker = Mosquitto::start()?;
    let port = broker.port();
    let signed = Signed::make()?;
    let devices = ["ota-ro-1", "ota-ro-2", "ota-ro-3"];
    let mut hosts = Vec::new();
    for device in devices {
        let mut host = host(port, device, &signed.public)?;
        host.spawn()?;
        host.wait_ready(READY)?;
        hosts.push(host);
    }
    let mut hub = hub::HubProcess::start(port)?;
    let url = format!("http://127.0.0.1:{}", hub.port);
    let via = ["--hub", url.as_str(), "--token", hub::ADMIN];
    let bundle = signed.bundle("2.0.0");
    // One device a second: the hub dies with the rollout under way.
    let mut create = vec![
        "plugin",
        "rollout",
        &bundle,
        "--devices",
        "ota-ro-1,ota-ro-2,ota-ro-3",
    ];
    create.extend(["--rate", "60/min", "--min-executed", "3"]);
    create.extend(via);
    let id = ok(&relay_offline(&create)?)?.trim().to_string();
    std::thread::sleep(Duration::from_millis(300));
    hub.kill9();
    std::thread::sleep(Duration::from_millis(500));
    hub.spawn()?;
    let mut view = serde_json::Value::Null;
    for _ in 0..300 {
        view = hub.admin("GET", &format!("/v1/rollouts/{id}"), None, 200)?;
        if view["state"] != "running" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        view["state"] == "completed" && view["counts"]["succeeded"] == 3,
        "{view:#}"
    );
    for (device, host) in devices.iter().zip(&hosts) {
        ensure!(blink(port, device)?["plugin"] == "leds@2.0.0", "{device}");
        let switched = host.log().matches("update: switched").count();
        ensure!(switched == 1, "{device} switched {switched} times");
    }
    Ok(())
}
