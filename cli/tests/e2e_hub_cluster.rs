//! Two hub instances on one Postgres (issue "Relay hub", test 5): requests
//! for two devices are submitted through both instances alternately, as a
//! load balancer would; one instance is `kill -9`ed mid-run and never comes
//! back. Every request either instance answered with an id reaches its
//! final status, per-device order holds, and none runs twice: the devices'
//! `counter` plugin replies `i + 1` to the `i`-th request only if every
//! request before it ran exactly once, in order.
//!
//! A real Mosquitto (default queue limit), a real Postgres started by the
//! test (`initdb`/`pg_ctl`), `relay hub serve --instance` child processes.

#[path = "support/host_process.rs"]
mod host_process;
#[path = "support/hub.rs"]
mod hub;
#[path = "../../hub/tests/support/postgres.rs"]
mod postgres;
#[allow(unused_imports)]
mod support;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use host_process::{HostConfig, HostProcess};
use hub::HubProcess;
use serde_json::json;
use support::Mosquitto;

const DEFAULTS: &str = include_str!("mosquitto-defaults.conf");
/// Requests per device.
const N: usize = 600;
/// A lease not renewed for this long is taken over.
const LEASE_MS: u64 = 3_000;

#[test]
fn two_instances_one_killed_mid_run_lose_nothing_and_keep_each_devices_order() -> Result<()> {
    let pg = postgres::Postgres::start().context("starting Postgres")?;
    let broker = Mosquitto::start_with(DEFAULTS, &[])?;
    let mut a = HubProcess::start_instance(broker.port(), &pg.url(), "a", LEASE_MS)?;
    let b = HubProcess::start_instance(broker.port(), &pg.url(), "b", LEASE_MS)?;
    let devices = ["cl-1", "cl-2"];
    let hosts = devices
        .iter()
        .map(|d| HostProcess::start(HostConfig::new(d, broker.port(), &["counter"])))
        .collect::<Result<Vec<_>>>()?;
    let kill_at = N * 2 / 5;
    for i in 0..N {
        if i == kill_at {
            a.kill9();
            println!("instance a killed after {i} requests per device");
        }
        for (k, device) in devices.iter().enumerate() {
            // The first request of each device goes through `a` (so `a`
            // holds a device when it dies), then the instances alternate,
            // each device starting at another one, so both take submits
            // for both devices.
            let through = if i >= kill_at || (i > 0 && (i + k) % 2 == 1) {
                &b
            } else {
                &a
            };
            let body = json!({"id": format!("q{i:05}"), "name": "increment"});
            let path = format!("/v1/devices/{device}/requests");
            through.admin("POST", &path, Some(&body), 201)?;
        }
    }
    ensure!(
        a.log().contains("forwarding for this device"),
        "instance a never held a device, so its death proved nothing:\n{}",
        a.log()
    );
    for (device, host) in devices.iter().zip(&hosts) {
        if let Err(e) = b.wait_succeeded(device, N as u64, Duration::from_secs(180)) {
            let open = b.admin(
                "GET",
                &format!("/v1/devices/{device}/requests?state=running"),
                None,
                200,
            )?;
            for r in open["requests"].as_array().into_iter().flatten() {
                let one = b.admin(
                    "GET",
                    &format!(
                        "/v1/devices/{device}/requests/{}",
                        r["id"].as_str().unwrap_or("")
                    ),
                    None,
                    200,
                )?;
                println!("STUCK {one}");
                let id = r["id"].as_str().unwrap_or("");
                for line in host.log().lines().filter(|l| l.contains(id)) {
                    println!("HOST {line}");
                }
            }
            println!(
                "A LOG {}",
                a.log()
                    .lines()
                    .filter(|l| !l.contains("notice"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            return Err(e);
        }
        let replies = b.replies_in_order(device, N)?;
        ensure!(replies.len() == N, "{device}: {} requests", replies.len());
        for (i, (id, reply)) in replies.iter().enumerate() {
            ensure!(
                *id == format!("q{i:05}") && *reply == json!({"value": i + 1}),
                "{device} position {i}: {id} replied {reply}"
            );
        }
        // Every status of the last request reached the store.
        let last = b.admin(
            "GET",
            &format!("/v1/devices/{device}/requests/q{:05}", N - 1),
            None,
            200,
        )?;
        let states: Vec<&str> = last["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["state"].as_str())
            .collect();
        ensure!(
            states.contains(&"queued") && states.last() == Some(&"succeeded"),
            "{device}: history {states:?}"
        );
    }
    println!("{N} requests per device through two instances, one killed: all final, in order, none twice");
    Ok(())
}

/// A cancel that reaches the instance not holding the device is carried
/// out by the holder (through an ask in the store), and every instance
/// answers for every request.
#[test]
fn a_cancel_through_the_other_instance_is_carried_out_by_the_holder() -> Result<()> {
    let pg = postgres::Postgres::start().context("starting Postgres")?;
    let broker = Mosquitto::start_with(DEFAULTS, &[])?;
    let a = HubProcess::start_instance(broker.port(), &pg.url(), "a", LEASE_MS)?;
    let b = HubProcess::start_instance(broker.port(), &pg.url(), "b", LEASE_MS)?;
    let path = "/v1/devices/cl-offline/requests";
    for id in ["x1", "x2"] {
        let body = json!({"id": id, "name": "increment"});
        a.admin("POST", path, Some(&body), 201)?;
    }
    // `a` holds the device once it has read its requests back.
    let started = std::time::Instant::now();
    while !a.log().contains("forwarding for this device") {
        ensure!(
            started.elapsed() < Duration::from_secs(20),
            "a never took the device:\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let cancelled = b.admin("POST", &format!("{path}/x1/cancel"), None, 200)?;
    ensure!(cancelled["state"] == "cancelled", "{cancelled}");
    let seen = a.admin("GET", &format!("{path}/x1"), None, 200)?;
    ensure!(seen["state"] == "cancelled", "{seen}");
    let other = b.admin("GET", &format!("{path}/x2"), None, 200)?;
    ensure!(other["state"] == "queued", "{other}");
    ensure!(
        !b.log().contains("forwarding for this device"),
        "b took the device although a holds it:\n{}",
        b.log()
    );
    Ok(())
}
