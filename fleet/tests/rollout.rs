//! A plugin rollout through the hub (issue 11): 50 simulated devices, of
//! which every fifth (20 %) fails the new version's health check. The
//! rollout starts 10 devices a second and aborts once at least 10 have a
//! result and 15 % or more of them failed. Asserted: it stops at the
//! threshold, as `aborted` with its reason; the devices it never started
//! are `cancelled` and received no chunk; each started device's result is
//! what the device answered; and the rollout is in the hub's database,
//! where a restarted hub finds it.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use relay_client::hub::HubClient;
use relay_fleet::broker::Mosquitto;
use relay_fleet::device::{DeviceConfig, Ledger, SimDevice};
use serde_json::json;

const DEVICES: usize = 50;

/// A bundle-shaped payload: a real header and manifest (the hub reads the
/// plugin's name and version from it); the devices here do not verify.
fn bundle() -> Vec<u8> {
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let manifest = relay_core::ota::Manifest {
        name: "leds".into(),
        version: "2.0.0".into(),
        world: relay_core::ota::WORLD.into(),
        sha256: [0; 32],
        size: 0,
        commands: Vec::new(),
        min_host: "0.1.0".into(),
        key_id: String::new(),
        allow_downgrade: false,
        signed_at: 1,
    };
    relay_core::ota::sign_bundle(manifest, &[0u8; 3000], &key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_stops_at_its_abort_threshold() -> Result<()> {
    let broker = Mosquitto::start(None)?;
    let dir = tempfile::tempdir()?;
    let prefix = relay_fleet::drive::unique_prefix();
    let ids: Vec<String> = (0..DEVICES).map(|i| format!("{prefix}-{i:02}")).collect();
    let mut config = DeviceConfig::new("127.0.0.1", broker.port());
    config.failing_installs = ids.iter().step_by(5).cloned().collect::<HashSet<_>>();
    let ledger = std::sync::Arc::new(Ledger::default());
    let mut devices = Vec::new();
    for id in &ids {
        let mut d = SimDevice::start(&config, id, ledger.clone())?;
        d.wait_ready(Duration::from_secs(30)).await?;
        devices.push(d);
    }
    let (hub, access) = relay_fleet::hub::start_in_process(broker.port(), dir.path()).await?;
    let client = HubClient::new(access.url.clone(), Some(access.token.clone()));
    let created = client
        .create_rollout(&json!({
            "bundle_base64": base64::engine::general_purpose::STANDARD.encode(bundle()),
            "devices": ids,
            "rate_per_min": 600,
            "abort_failed_percent": 15,
            "min_executed": 10,
            "device_timeout_ms": 60_000,
            "chunk_bytes": 1000,
        }))
        .await?;
    ensure!(
        created["plugin"] == "leds" && created["version"] == "2.0.0",
        "{created}"
    );
    let id = created["id"].as_str().context("rollout id")?.to_string();

    // Bounded wait for the end, and for the started devices to report.
    let mut view = created;
    for _ in 0..600 {
        view = client.rollout(&id).await?;
        if view["state"] != "running" && view["counts"]["running"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(view["state"] == "aborted", "{view:#}");
    ensure!(
        view["reason"]
            .as_str()
            .unwrap_or("")
            .contains("abort threshold"),
        "{view}"
    );
    let counts = &view["counts"];
    let n = |k: &str| counts[k].as_u64().unwrap_or(0);
    let executed = n("succeeded") + n("failed");
    ensure!(executed >= 10, "{counts}");
    ensure!(
        n("cancelled") > 0 && n("cancelled") + executed == DEVICES as u64,
        "{counts}"
    );
    ensure!(n("failed") * 100 >= 15 * executed, "{counts}");
    for target in view["devices"].as_array().unwrap() {
        let device = target["device"].as_str().unwrap();
        let fails = config.failing_installs.contains(device);
        match target["state"].as_str().unwrap() {
            "failed" => ensure!(fails && target["code"] == "self_test_failed", "{target}"),
            "succeeded" => ensure!(!fails, "{target}"),
            "cancelled" => {
                let requests = client_list(&access, device).await?;
                ensure!(
                    requests == 0,
                    "{device} was cancelled but got {requests} requests"
                );
            }
            other => anyhow::bail!("unexpected target state {other}: {target}"),
        }
    }
    // Three chunks per started device (3,000 + header bytes, 1,000 a chunk).
    let chunks = relay_fleet::device::Ledger::get(&ledger.envelopes);
    ensure!(
        chunks >= executed * 3,
        "{chunks} chunks for {executed} devices"
    );

    // The rollout lives in the store: read back from the database file, as a
    // restarted hub would read it.
    let store =
        relay_hub::store::Store::open(&format!("sqlite:{}", dir.path().join("hub.db").display()))
            .await?;
    let stored = store.rollouts(Some(&id)).await?;
    ensure!(
        stored.len() == 1 && stored[0].state == "aborted",
        "{stored:?}"
    );
    let targets = store.rollout_targets(&id).await?;
    ensure!(targets.iter().filter(|t| t.state == "cancelled").count() as u64 == n("cancelled"));
    drop(hub);
    for d in devices {
        d.stop(Duration::from_secs(5)).await;
    }
    Ok(())
}

async fn client_list(access: &relay_fleet::hub::HubAccess, device: &str) -> Result<u64> {
    let url = format!("{}/v1/devices/{device}/requests", access.url);
    let body: serde_json::Value = reqwest::Client::new()
        .get(url)
        .bearer_auth(&access.token)
        .send()
        .await?
        .json()
        .await?;
    Ok(body["requests"].as_array().map_or(0, |r| r.len() as u64))
}
