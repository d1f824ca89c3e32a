//! A rollout under two hub instances on one Postgres (issue 11 with the
//! hub's cluster mode): the rollout is created through instance `a`, which
//! drives it under its lease and is `kill -9`ed with the rollout under way
//! and never comes back. Instance `b` takes the lease over when it runs out
//! and finishes the rollout: every device ends on the new version, and none
//! installs it twice (each device's log shows one switch).
//!
//! A real Mosquitto, a real Postgres started by the test (`initdb`/`pg_ctl`),
//! `relay hub serve --instance` child processes and `relay run` devices.

#[path = "support/host_process.rs"]
mod host_process;
#[path = "support/hub.rs"]
mod hub;
#[path = "support/ota_device.rs"]
#[allow(dead_code)]
mod ota_device;
#[path = "../../host/tests/ota_support/mod.rs"]
#[allow(dead_code)]
mod ota_support;
#[path = "../../hub/tests/support/postgres.rs"]
mod postgres;
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use hub::HubProcess;
use ota_device::*;
use support::mosquitto::Mosquitto;

/// A lease not renewed for this long is taken over.
const LEASE_MS: u64 = 3_000;

#[test]
fn a_rollout_driven_by_a_killed_instance_is_finished_by_the_other() -> Result<()> {
    let pg = postgres::Postgres::start().context("starting Postgres")?;
    let broker = Mosquitto::start()?;
    let port = broker.port();
    let signed = Signed::make()?;
    let devices = ["ota-cl-1", "ota-cl-2", "ota-cl-3"];
    let mut hosts = Vec::new();
    for device in devices {
        let mut host = host(port, device, &signed.public)?;
        host.spawn()?;
        host.wait_ready(READY)?;
        hosts.push(host);
    }
    let mut a = HubProcess::start_instance(port, &pg.url(), "a", LEASE_MS)?;
    let b = HubProcess::start_instance(port, &pg.url(), "b", LEASE_MS)?;
    let via_a = format!("http://127.0.0.1:{}", a.port);
    let bundle = signed.bundle("2.0.0");
    // One device a second: `a` dies with the rollout under way.
    let id = ok(&relay_offline(&[
        "plugin",
        "rollout",
        &bundle,
        "--devices",
        &devices.join(","),
        "--rate",
        "60/min",
        "--min-executed",
        "3",
        "--hub",
        &via_a,
        "--token",
        hub::ADMIN,
    ])?)?
    .trim()
    .to_string();
    let started = Instant::now();
    let mut first_done = false;
    while started.elapsed() < Duration::from_secs(60) {
        let view = a.admin("GET", &format!("/v1/rollouts/{id}"), None, 200)?;
        if view["counts"]["succeeded"].as_u64().unwrap_or(0) >= 1 {
            first_done = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(first_done, "instance a started the rollout");
    a.kill9();

    // `b` answers for it at once (the state is in Postgres) and finishes it
    // once `a`'s lease has run out.
    let mut view = serde_json::Value::Null;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(90) {
        view = b.admin("GET", &format!("/v1/rollouts/{id}"), None, 200)?;
        if view["state"] != "running" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        view["state"] == "completed" && view["counts"]["succeeded"] == 3,
        "{view:#}\nb's log:\n{}",
        b.log()
    );
    // `b` drove the rest: it started at least the last device and ended it.
    let log = b.log();
    ensure!(
        log.contains("rollout: device started") && log.contains("rollout: completed"),
        "b did not drive the rollout:\n{log}"
    );
    for (device, host) in devices.iter().zip(&hosts) {
        ensure!(blink(port, device)?["plugin"] == "leds@2.0.0", "{device}");
        let switched = host.log().matches("update: switched").count();
        ensure!(switched == 1, "{device} switched {switched} times");
    }
    Ok(())
}
