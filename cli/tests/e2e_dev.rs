//! `relay dev`, the README's main command, end to end: it starts the
//! embedded broker, the host and the bundled plugins, prints a ready-to-paste
//! `relay send` line, and that very line works. SIGTERM then stops it
//! gracefully (exit 0).
//!
//! The host runs on wasmi here: the default wasmtime engine would first
//! compile the four bundled plugins with Cranelift, which takes a minute in a
//! debug build (the e2e tests of the wasmtime engine are elsewhere).

#[path = "support/host_process.rs"]
mod host_process;
#[allow(unused_imports)]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use host_process::{plugin_source, relay_binary};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// Kills the child if the test fails half-way.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `send` line's arguments after the binary: `send --port P --device D
/// echo '{"hello":"world"}' --wait`, split like a shell would (single quotes).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[test]
fn relay_dev_prints_a_send_line_that_works_and_stops_on_sigterm() -> Result<()> {
    let plugins = plugin_source("echo")?
        .parent()
        .context("plugin dir")?
        .to_path_buf();
    let data = tempfile::tempdir()?;
    let child = Command::new(relay_binary())
        .args([
            "dev",
            "--port",
            "0",
            "--engine",
            "wasmi",
            "--device",
            "e2e-dev",
            "--hub-port",
            "0",
        ])
        .arg("--plugins")
        .arg(&plugins)
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start `relay dev`")?;
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // The banner, up to the ready-to-paste line.
    let started = Instant::now();
    let mut banner = Vec::new();
    let send_line = loop {
        let left = LIMIT.saturating_sub(started.elapsed());
        let line = rx
            .recv_timeout(left)
            .with_context(|| format!("no `relay send` line; banner so far: {banner:#?}"))?;
        banner.push(line.clone());
        if let Some(at) = line.find(" send --port ") {
            break line[at + 1..].to_string();
        }
    };
    ensure!(
        banner[0].starts_with("relay dev: MQTT broker on 127.0.0.1:"),
        "{banner:#?}"
    );
    ensure!(
        banner
            .iter()
            .any(|l| l.contains("plugins") && l.contains("echo")),
        "the banner lists the bundled plugins: {banner:#?}"
    );

    // The hub's line follows.
    let hub_line = loop {
        let left = LIMIT.saturating_sub(started.elapsed());
        let line = rx
            .recv_timeout(left)
            .with_context(|| format!("no `relay send --hub` line; banner: {banner:#?}"))?;
        banner.push(line.clone());
        if let Some(at) = line.find(" send --hub ") {
            break line[at + 1..].to_string();
        }
    };
    let mut args = shell_words(&hub_line);
    args.push("--json".into());
    let out = Command::new(relay_binary())
        .args(&args)
        .args(["--timeout", "60s"])
        .output()
        .context("cannot run `relay send --hub`")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "`relay {}` failed ({}):\n{stdout}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_str(stdout.trim())?;
    ensure!(
        answer["state"] == "succeeded" && answer["reply"] == serde_json::json!({"hello": "world"}),
        "{answer}"
    );

    // Paste the MQTT line (plus --json to read the outcome).
    let mut args = shell_words(&send_line);
    args.push("--json".into());
    let out = Command::new(relay_binary())
        .args(&args)
        .args(["--timeout", "60s"])
        .env("NO_COLOR", "1")
        .output()
        .context("cannot run `relay send`")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "`relay {}` failed ({}):\n{stdout}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("no JSON status in: {stdout}"))?;
    ensure!(last["status"] == "succeeded", "{last}");
    ensure!(
        last["reply"] == serde_json::json!({"hello": "world"}),
        "{last}"
    );

    // Graceful stop on SIGTERM.
    let pid = guard.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status()?;
    ensure!(killed.success(), "kill -TERM {pid}");
    let started = Instant::now();
    loop {
        if let Some(status) = guard.0.try_wait()? {
            ensure!(
                status.success(),
                "relay dev exited with {status} on SIGTERM"
            );
            return Ok(());
        }
        if started.elapsed() > LIMIT {
            bail!("relay dev did not stop within {LIMIT:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shell_words_keep_single_quoted_json_together() {
    assert_eq!(
        shell_words(r#"send --port 1 --device d echo '{"a": 1}' --wait"#),
        [
            "send",
            "--port",
            "1",
            "--device",
            "d",
            "echo",
            r#"{"a": 1}"#,
            "--wait"
        ]
    );
}

/// A first run as a new user makes it: no plugin dir, no `RUST_LOG`, an
/// empty working directory. `relay dev` finds the plugins built into the
/// binary, and its healthy start logs no error or warning (the embedded
/// broker's per-connection noise stays out unless `RUST_LOG` asks).
#[test]
fn relay_dev_first_run_uses_the_built_in_plugins_and_logs_no_error() -> Result<()> {
    let cwd = tempfile::tempdir()?;
    let child = Command::new(relay_binary())
        .args([
            "dev",
            "--port",
            "0",
            "--engine",
            "wasmi",
            "--device",
            "first-run",
        ])
        .current_dir(cwd.path())
        .env_remove("RELAY_PLUGIN_DIR")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start `relay dev`")?;
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().context("stdout")?;
    let stderr = guard.0.stderr.take().context("stderr")?;
    let (tx, rx) = mpsc::channel();
    for (stream, reader) in [
        ("out", Box::new(stdout) as Box<dyn std::io::Read + Send>),
        ("err", Box::new(stderr)),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if tx.send((stream, line)).is_err() {
                    break;
                }
            }
        });
    }
    let started = Instant::now();
    let mut lines = Vec::new();
    loop {
        let left = LIMIT.saturating_sub(started.elapsed());
        let (stream, line) = rx
            .recv_timeout(left)
            .with_context(|| format!("no banner; output so far: {lines:#?}"))?;
        lines.push(format!("{stream}: {line}"));
        if stream == "out" && line.contains(" send --port ") {
            break;
        }
    }
    // Whatever else it logs while settling (the device's connection).
    std::thread::sleep(Duration::from_millis(500));
    while let Ok((stream, line)) = rx.try_recv() {
        lines.push(format!("{stream}: {line}"));
    }
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("plugins") && l.contains("echo") && l.contains("bundled-plugins")),
        "the built-in plugins are used: {lines:#?}"
    );
    ensure!(
        cwd.path()
            .join(".relay-dev/bundled-plugins/echo.wasm")
            .is_file(),
        "written under the data dir"
    );
    let noisy: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    ensure!(
        noisy.is_empty(),
        "a healthy start logs no error: {noisy:#?}"
    );
    Ok(())
}
