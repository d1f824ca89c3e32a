//! The hub end to end (issue "Relay hub"): a real Mosquitto with its
//! default queue limit (1,000) and no persistence, a `relay hub serve`
//! child process on SQLite, and a `relay run` device with the `counter`
//! plugin, whose reply (the new count) proves the order it ran in.
//!
//! - 5,000 requests for a device that has never connected all run, in
//!   submission order, at its first connection (a broker alone drops all
//!   but 1,000, or all of them before the first connection);
//! - the broker `kill -9`ed and restarted empty while requests wait for
//!   an offline device: every request is delivered;
//! - status at any time, TTL expiry at the hub, cancel, an RPC's deadline
//!   with the device offline, and every refusal (401, 403, 400 with a code)
//!   with nothing stored.

#[path = "support/host_process.rs"]
mod host_process;
#[path = "support/hub.rs"]
mod hub;
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use host_process::{HostConfig, HostProcess};
use hub::{HubProcess, OUTSIDER};
use serde_json::{json, Value as Json};
use support::Mosquitto;

const DEFAULTS: &str = include_str!("mosquitto-defaults.conf");

fn submit(hub: &HubProcess, device: &str, id: &str, body: Json, expected: u16) -> Result<Json> {
    let mut body = body;
    body["id"] = json!(id);
    hub.admin(
        "POST",
        &format!("/v1/devices/{device}/requests"),
        Some(&body),
        expected,
    )
}

#[test]
fn five_thousand_requests_for_a_device_never_seen_all_run_in_order() -> Result<()> {
    let broker = Mosquitto::start_with(DEFAULTS, &[])?;
    let hub = HubProcess::start(broker.port())?;
    let device = "hub-fresh";
    let n = 5_000;
    let started = Instant::now();
    for i in 0..n {
        let answer = submit(
            &hub,
            device,
            &format!("r{i:05}"),
            json!({"name": "increment"}),
            201,
        )?;
        ensure!(answer["state"] == "queued", "{answer}");
    }
    println!("{n} submits in {:?}", started.elapsed());
    // Idempotent retry: the same id and content is the same request.
    submit(&hub, device, "r00000", json!({"name": "increment"}), 200)?;
    submit(&hub, device, "r00000", json!({"name": "get"}), 409)?;
    let host = HostProcess::start(HostConfig::new(device, broker.port(), &["counter"]))?;
    let started = Instant::now();
    hub.wait_succeeded(device, n as u64, Duration::from_secs(240))?;
    println!("{n} ran in {:?}", started.elapsed());
    let replies = hub.replies_in_order(device, n)?;
    ensure!(replies.len() == n, "{} requests listed", replies.len());
    for (i, (id, reply)) in replies.iter().enumerate() {
        ensure!(*id == format!("r{i:05}"), "position {i}: {id}");
        ensure!(
            *reply == json!({"value": i + 1}),
            "{id} ran out of order or twice: {reply}"
        );
    }
    drop(host);
    Ok(())
}

#[test]
fn a_broker_killed_and_restarted_empty_loses_no_waiting_request() -> Result<()> {
    let mut broker = Mosquitto::start_with(DEFAULTS, &[])?;
    let hub = HubProcess::start(broker.port())?;
    let device = "hub-restart";
    let mut host = HostProcess::start(HostConfig::new(device, broker.port(), &["counter"]))?;
    submit(&hub, device, "warm", json!({"name": "increment"}), 201)?;
    hub.wait_succeeded(device, 1, Duration::from_secs(60))?;
    host.terminate()?;
    for i in 0..200 {
        submit(
            &hub,
            device,
            &format!("w{i:03}"),
            json!({"name": "increment"}),
            201,
        )?;
    }
    broker.kill();
    broker.start_again()?; // no persistence: every session and queue is gone
    host.spawn()?;
    host.wait_ready(Duration::from_secs(120))?;
    hub.wait_succeeded(device, 201, Duration::from_secs(120))?;
    let replies = hub.replies_in_order(device, 201)?;
    for (i, (id, reply)) in replies.iter().enumerate() {
        ensure!(*reply == json!({"value": i + 1}), "{id}: {reply}");
    }
    Ok(())
}

#[test]
fn status_ttl_cancel_rpc_deadline_and_refusals() -> Result<()> {
    let broker = Mosquitto::start_with(DEFAULTS, &[])?;
    let hub = HubProcess::start(broker.port())?;
    let device = "hub-offline";
    let path = format!("/v1/devices/{device}/requests");

    // Refusals: nothing is stored.
    let body = r#"{"name": "increment"}"#;
    let (status, answer) = hub.call("POST", &path, None, Some(body))?;
    ensure!(
        status == 401 && answer["error"]["code"] == "unauthorized",
        "{status} {answer}"
    );
    let (status, answer) = hub.call("POST", &path, Some("wrong"), Some(body))?;
    ensure!(status == 401, "{status} {answer}");
    let (status, answer) = hub.call("POST", &path, Some(OUTSIDER), Some(body))?;
    ensure!(
        status == 403 && answer["error"]["code"] == "forbidden",
        "{status} {answer}"
    );
    let big = "x".repeat(300_000);
    for (body, code) in [
        ("{not json".to_owned(), "invalid_json"),
        (r#"{"name": "has space"}"#.to_owned(), "invalid_name"),
        (
            r#"{"name": "increment", "role": "admin"}"#.to_owned(),
            "invalid_json",
        ),
        (
            format!(r#"{{"name": "increment", "payload": "{big}"}}"#),
            "too_large",
        ),
        (
            r#"{"name": "increment", "ttl_ms": 0}"#.to_owned(),
            "invalid_ttl",
        ),
    ] {
        let (status, answer) = hub.call("POST", &path, Some(hub::ADMIN), Some(&body))?;
        ensure!(
            status == 400 && answer["error"]["code"] == code,
            "{code}: {status} {answer}"
        );
        ensure!(
            !answer["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{answer}"
        );
    }
    let list = hub.admin("GET", &path, None, 200)?;
    ensure!(
        list["requests"].as_array().is_some_and(|r| r.is_empty()),
        "{list}"
    );

    // Status while the device is offline, with its history.
    submit(&hub, device, "q1", json!({"name": "increment"}), 201)?;
    let one = hub.admin("GET", &format!("{path}/q1"), None, 200)?;
    ensure!(
        one["state"] == "queued" && one["history"][0]["state"] == "queued",
        "{one}"
    );
    let (status, _) = hub.call("GET", &format!("{path}/q1"), Some(OUTSIDER), None)?;
    ensure!(status == 403);
    let (status, _) = hub.call("GET", &format!("{path}/nope"), Some(hub::ADMIN), None)?;
    ensure!(status == 404);

    // Cancel a request never sent.
    let cancelled = hub.admin("POST", &format!("{path}/q1/cancel"), None, 200)?;
    ensure!(cancelled["state"] == "cancelled", "{cancelled}");

    // TTL at the hub.
    submit(
        &hub,
        device,
        "short",
        json!({"name": "increment", "ttl_ms": 300}),
        201,
    )?;
    let expired = hub.admin("GET", &format!("{path}/short?wait_ms=10000"), None, 200)?;
    ensure!(
        expired["state"] == "expired" && expired["code"] == "expired",
        "{expired}"
    );

    // An RPC's deadline with the device offline.
    let started = Instant::now();
    let rpc = hub.admin(
        "POST",
        &format!("{path}?wait_ms=10000"),
        Some(&json!({"name": "get", "kind": "rpc", "deadline_ms": 500, "id": "rpc-1"})),
        201,
    )?;
    ensure!(rpc["state"] == "timed_out", "{rpc}");
    ensure!(
        started.elapsed() < Duration::from_secs(8),
        "answered at the deadline"
    );

    // The device comes: the cancelled, expired and timed-out requests never run.
    let _host = HostProcess::start(HostConfig::new(device, broker.port(), &["counter"]))?;
    submit(&hub, device, "after", json!({"name": "increment"}), 201)?;
    let after = hub.admin("GET", &format!("{path}/after?wait_ms=60000"), None, 200)?;
    ensure!(
        after["state"] == "succeeded" && after["reply"] == json!({"value": 1}),
        "{after}"
    );
    let done = hub.admin("POST", &format!("{path}/after/cancel"), None, 409)?;
    ensure!(done["error"]["code"] == "not_pending", "{done}");
    let devices = hub.admin("GET", "/v1/devices", None, 200)?;
    ensure!(devices["devices"][0]["online"] == true, "{devices}");
    Ok(())
}

/// `relay send --hub` and `relay status --hub`, as a user types them.
#[test]
fn the_cli_sends_and_asks_through_the_hub() -> Result<()> {
    let broker = Mosquitto::start_with(DEFAULTS, &[])?;
    let hub = HubProcess::start(broker.port())?;
    let device = "hub-cli";
    let url = format!("http://127.0.0.1:{}", hub.port);
    let relay = |args: &[&str], token: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(args)
            .env("RELAY_HUB", &url)
            .env("RELAY_HUB_TOKEN", token)
            .output()
    };
    // Offline device: the request is stored, and its status is known.
    let out = relay(
        &["send", "-d", device, "increment", "--id", "cli-1"],
        hub::ADMIN,
    )?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(String::from_utf8_lossy(&out.stdout).trim() == "cli-1");
    let out = relay(&["status", "-d", device, "cli-1"], hub::ADMIN)?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.starts_with("cli-1 queued"),
        "{text}"
    );
    let out = relay(&["status", "-d", device, "nope"], hub::ADMIN)?;
    ensure!(out.status.code() == Some(4), "{out:?}");
    let out = relay(&["send", "-d", device, "increment"], "bad-token")?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("unauthorized"),
        "{err}"
    );
    // The device comes; --wait prints the final state.
    let _host = HostProcess::start(HostConfig::new(device, broker.port(), &["counter"]))?;
    let out = relay(
        &[
            "send",
            "-d",
            device,
            "increment",
            "{\"by\": 5}",
            "--wait",
            "--json",
        ],
        hub::ADMIN,
    )?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Json = serde_json::from_slice(&out.stdout)?;
    ensure!(
        answer["state"] == "succeeded" && answer["reply"] == json!({"value": 6}),
        "{answer}"
    );
    let out = relay(&["status", "-d", device, "cli-1", "--json"], hub::ADMIN)?;
    let first: Json = serde_json::from_slice(&out.stdout)?;
    ensure!(
        first["state"] == "succeeded" && first["reply"] == json!({"value": 1}),
        "{first}"
    );
    Ok(())
}
