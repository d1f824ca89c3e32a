//! The hub `kill -9`ed again and again while 2,000 requests flow (issue
//! "Relay hub", tests 4 and 7): every request the hub answered with an id
//! reaches its final status, in order, and none runs twice. The device's
//! `counter` plugin proves both: request `i` must reply `i + 1`.
//!
//! While the hub is down the device keeps finishing what it was sent, and
//! its statuses wait in (or are dropped by) the broker; when the hub comes
//! back it sends every unconfirmed request again, and the device answers
//! each from its outcome memory instead of running it again (the hub's
//! window, 64, is far below that memory, 1,024).

#[path = "support/host_process.rs"]
mod host_process;
#[path = "support/hub.rs"]
mod hub;
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use host_process::{HostConfig, HostProcess};
use hub::HubProcess;
use serde_json::json;
use support::Mosquitto;

const DEFAULTS: &str = include_str!("mosquitto-defaults.conf");
const N: usize = 2_000;
const KILLS: usize = 10;

#[test]
fn hub_killed_ten_times_mid_run_loses_nothing_and_runs_nothing_twice() -> Result<()> {
    let broker = Mosquitto::start_with(DEFAULTS, &[])?;
    let mut hub = HubProcess::start(broker.port())?;
    let device = "hub-crash";
    let _host = HostProcess::start(HostConfig::new(device, broker.port(), &["counter"]))?;
    let path = format!("/v1/devices/{device}/requests");
    let mut submitted = 0;
    let mut kills = 0;
    let started = Instant::now();
    while submitted < N || kills < KILLS {
        // A burst of submits, each answered only once durable.
        let burst = (N / KILLS).min(N - submitted);
        for i in submitted..submitted + burst {
            let body = json!({"id": format!("c{i:05}"), "name": "increment"});
            hub.admin("POST", &path, Some(&body), 201)?;
        }
        submitted += burst;
        // Let some run, at a varying moment, then kill -9 and restart.
        std::thread::sleep(Duration::from_millis(50 + 97 * (kills as u64 % 7)));
        if kills < KILLS {
            hub.kill9();
            hub.spawn()?;
            kills += 1;
        }
        ensure!(started.elapsed() < Duration::from_secs(300), "run too long");
    }
    // Everything reaches a final status.
    let started = Instant::now();
    loop {
        let list = hub.admin("GET", &format!("{path}?limit=1"), None, 200)?;
        let done = list["counts"]["succeeded"].as_u64().unwrap_or(0);
        if done as usize == N {
            break;
        }
        if started.elapsed() > Duration::from_secs(180) {
            bail!(
                "{done} of {N} succeeded: {}\nhub log:\n{}",
                list["counts"],
                hub.log()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // In order, each exactly once.
    let mut replies = Vec::new();
    for offset in (0..N).step_by(1_000) {
        let page = hub.admin(
            "GET",
            &format!("{path}?limit=1000&offset={offset}"),
            None,
            200,
        )?;
        replies.extend(page["requests"].as_array().cloned().unwrap_or_default());
    }
    replies.reverse();
    ensure!(replies.len() == N);
    for (i, r) in replies.iter().enumerate() {
        ensure!(
            r["id"] == format!("c{i:05}") && r["reply"] == json!({"value": i + 1}),
            "position {i}: {r}"
        );
    }
    println!("{N} requests, {kills} hub kills: all final, in order, none twice");
    Ok(())
}
