//! `relay send` end to end against a `relay run` host, on both brokers: the
//! CLI a user types, its output and its exit codes.
//!
//! Exit codes (see `relay send --help`): 0 sent (with `--wait`: succeeded);
//! 1 error (bad JSON, bad name, unreachable broker, no final status in
//! time); 2 usage error; 3 the command ended failed, rejected or expired.

#[path = "support/host_process.rs"]
mod host_process;
#[allow(unused_imports)]
mod support;

use std::process::{Command, Output};

use anyhow::{ensure, Context, Result};
use host_process::{relay_binary, HostConfig, HostProcess};
use serde_json::{json, Value};
use support::{BrokerKind, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_send_mosquitto() -> Result<()> {
    relay_send(BrokerKind::Mosquitto).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_send_embedded() -> Result<()> {
    relay_send(BrokerKind::Embedded).await
}

/// `relay send --port <port> --device <device> <args...>`, bounded by its own `--timeout`.
fn send(port: u16, device: &str, args: &[&str]) -> Result<Output> {
    Command::new(relay_binary())
        .arg("send")
        .args([
            "--port",
            &port.to_string(),
            "--device",
            device,
            "--connect-timeout",
            "5s",
            "--timeout",
            "60s",
        ])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .context("cannot run `relay send`")
}

fn stdout_json_lines(output: &Output) -> Result<Vec<Value>> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l:?}")))
        .collect()
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn relay_send(kind: BrokerKind) -> Result<()> {
    let broker = TestBroker::start(kind)?;
    let port = broker.port();
    let device = "cli";
    let _host = tokio::task::block_in_place(|| {
        HostProcess::start(HostConfig::new(device, port, &["echo", "system"]))
    })?;

    tokio::task::block_in_place(|| -> Result<()> {
        // RPC with --wait --json: the reply is in the final status; exit 0.
        let out = send(
            port,
            device,
            &[
                "echo",
                r#"{"hello":"world","n":[1,2]}"#,
                "--rpc",
                "--wait",
                "--json",
                "--role",
                "secondary",
            ],
        )?;
        ensure!(out.status.code() == Some(0), "rpc: {}", describe(&out));
        let lines = stdout_json_lines(&out)?;
        let id = lines
            .first()
            .and_then(|l| l["id"].as_str())
            .context("first line has the id")?
            .to_string();
        let last = lines.last().context("a final status line")?;
        ensure!(
            last["id"] == id.as_str() && last["status"] == "succeeded",
            "rpc: {}",
            describe(&out)
        );
        ensure!(
            last["reply"] == json!({"hello": "world", "n": [1, 2]}),
            "rpc reply: {}",
            describe(&out)
        );

        // Text mode, explicit id: first line is the id, last the final status.
        let out = send(port, device, &["echo", "7", "--wait", "--id", "cli-text-1"])?;
        ensure!(out.status.code() == Some(0), "text: {}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        ensure!(text.lines().next() == Some("cli-text-1"), "text: {text}");
        ensure!(
            text.lines()
                .last()
                .is_some_and(|l| l.starts_with("succeeded attempt=1 reply=7")),
            "text: {text}"
        );

        // Without --wait: just the id, exit 0.
        let out = send(port, device, &["identify", "{}"])?;
        ensure!(
            out.status.code() == Some(0) && out.stdout.len() > 1,
            "no wait: {}",
            describe(&out)
        );

        // Refused by the device: exit 3 with the final status printed.
        let out = send(
            port,
            device,
            &["reboot", "{}", "--role", "secondary", "--wait", "--json"],
        )?;
        ensure!(
            out.status.code() == Some(3),
            "not permitted: {}",
            describe(&out)
        );
        let last = stdout_json_lines(&out)?.pop().context("final status")?;
        ensure!(
            last["status"] == "rejected" && last["code"] == "not_permitted",
            "not permitted: {}",
            describe(&out)
        );

        let out = send(port, device, &["no_such_command", "--wait", "--json"])?;
        ensure!(out.status.code() == Some(3), "unknown: {}", describe(&out));
        let last = stdout_json_lines(&out)?.pop().context("final status")?;
        ensure!(
            last["status"] == "rejected" && last["code"] == "unknown_command",
            "unknown: {}",
            describe(&out)
        );

        // Local errors: exit 1, nothing sent.
        for (what, args) in [
            ("bad JSON", vec!["echo", "{not json"]),
            ("bad name", vec!["bad name!", "1"]),
        ] {
            let out = send(port, device, &args)?;
            ensure!(out.status.code() == Some(1), "{what}: {}", describe(&out));
            ensure!(!out.stderr.is_empty(), "{what}: no error message");
        }
        // Usage error: exit 2.
        let out = Command::new(relay_binary())
            .args(["send", "echo"])
            .output()?;
        ensure!(out.status.code() == Some(2), "usage: {}", describe(&out));
        Ok(())
    })
}

/// No broker listening: a clear error and exit 1, within the connect timeout.
#[test]
fn relay_send_unreachable_broker_exits_1() -> Result<()> {
    let port = support::free_port();
    let out = Command::new(relay_binary())
        .args([
            "send",
            "--port",
            &port.to_string(),
            "--device",
            "d",
            "--connect-timeout",
            "1s",
            "echo",
            "1",
        ])
        .output()?;
    ensure!(out.status.code() == Some(1), "{}", describe(&out));
    ensure!(!out.stderr.is_empty(), "no error message");
    Ok(())
}
