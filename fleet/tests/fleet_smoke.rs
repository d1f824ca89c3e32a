//! The fleet simulator end to end, small enough for every `cargo test`: a
//! real Mosquitto (the fleet's own config), a real hub on SQLite, 200
//! simulated devices and 2,000 requests through the hub's HTTP API. Every
//! request must end `succeeded`, none may run twice, and each device must
//! run its requests in submission order. A second test runs the binary's
//! `local` mode (broker and hub as child processes) and reads its JSON.
//! Every wait is bounded.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use relay_fleet::broker::Mosquitto;
use relay_fleet::device::DeviceConfig;
use relay_fleet::drive::{self, RunOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_devices_two_thousand_requests_nothing_lost_none_twice_in_order() -> Result<()>
{
    let broker = Mosquitto::start(None)?;
    let dir = tempfile::tempdir()?;
    let (_hub, access) = relay_fleet::hub::start_in_process(broker.port(), dir.path()).await?;
    let options = RunOptions {
        devices: 200,
        requests: 2_000,
        hub: access,
        device: DeviceConfig::new("127.0.0.1", broker.port()),
        device_prefix: drive::unique_prefix(),
        concurrency: 32,
        connect_concurrency: 50,
        timeout: Duration::from_secs(120),
        hub_pid: None,
        broker_pid: Some(broker.pid()),
        progress: true,
    };
    let report = tokio::time::timeout(Duration::from_secs(240), drive::run(options))
        .await
        .context("the fleet run did not end within 240 s")??;
    println!("{report}");
    let v = &report.verdict;
    assert_eq!(v.succeeded, 2_000, "{report}");
    assert_eq!(
        (v.failed, v.not_final, v.missing, v.unexpected),
        (0, 0, 0, 0),
        "{report}"
    );
    assert_eq!(
        v.out_of_order, 0,
        "each device ran its requests in order: {report}"
    );
    assert_eq!(report.device.reruns, 0, "none ran twice: {report}");
    assert_eq!(report.device.runs, 2_000, "{report}");
    assert!(report.submit_errors.is_empty(), "{report}");
    assert!(report.ok());
    Ok(())
}

#[test]
fn the_binary_runs_a_small_fleet_with_its_own_broker_and_hub() -> Result<()> {
    let fleet = env!("CARGO_BIN_EXE_relay-fleet");
    let help = Command::new(fleet).args(["local", "--help"]).output()?;
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--devices"));

    let out = tempfile::NamedTempFile::new()?;
    let mut child = Command::new(fleet)
        .args([
            "local",
            "--self-hub",
            "--devices",
            "20",
            "--requests",
            "200",
        ])
        .args(["--timeout-s", "60", "--json", "--quiet"])
        .stdout(out.reopen()?)
        .stderr(Stdio::inherit())
        .spawn()?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("relay-fleet local did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(out.path())?;
    assert!(status.success(), "{status}: {text}");
    let report: serde_json::Value = serde_json::from_str(&text).context("the --json report")?;
    assert_eq!(report["verdict"]["succeeded"], 200, "{text}");
    assert_eq!(report["device"]["reruns"], 0, "{text}");
    assert!(
        report["hub"]["peak_rss_mib"].as_f64().unwrap_or(0.0) > 1.0,
        "{text}"
    );
    assert!(report["broker"]["pid"].as_u64().is_some(), "{text}");
    assert!(report["hub_binary"]
        .as_str()
        .is_some_and(|b| b.starts_with("relay-fleet hub serve")));
    Ok(())
}
