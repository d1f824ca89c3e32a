//! A device host as a real `relay run` child process, for the end-to-end
//! tests: the whole data path (MQTT link, journal on disk, scheduler,
//! wasm plugins, statuses) in the binary users run, which the tests can
//! SIGKILL at any moment and start again on the same data dir.
//!
//! Each host gets a tempdir with `relay.toml`, a private plugin dir holding
//! only the plugins the test asked for (copied from the bundled plugin dir:
//! `$RELAY_PLUGIN_DIR` or `<workspace>/target/plugins`, built by
//! `cargo xtask build-plugins`), its data dir and `host.log` (stderr of every
//! start, appended). Readiness is the `relay::ready` log line that
//! `runtime::start` prints once per start when the command subscription is
//! granted.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What a host is started with.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub device: String,
    pub port: u16,
    /// Bundled plugins to load, by file stem (`echo`, `counter`, `deploy`, `system`).
    pub plugins: Vec<String>,
    pub retry_delay_ms: u64,
    pub max_attempts: u32,
    /// `wasmi` (default here) or `wasmtime`. In a debug build, wasmtime's
    /// Cranelift (itself unoptimized) needs seconds to over a minute per
    /// plugin at every start, which would dominate tests that restart the
    /// host dozens of times; the delivery path under test is the same for
    /// both engines. Tests that are about the wasmtime path set it.
    pub engine: String,
    /// Extra TOML appended to `relay.toml` (e.g. an `[envelope]` table).
    pub extra_toml: String,
    /// Extra environment of the next start.
    pub env: Vec<(String, String)>,
}

impl HostConfig {
    pub fn new(device: &str, port: u16, plugins: &[&str]) -> HostConfig {
        HostConfig {
            device: device.into(),
            port,
            plugins: plugins.iter().map(|p| p.to_string()).collect(),
            retry_delay_ms: 200,
            max_attempts: 5,
            engine: "wasmi".into(),
            extra_toml: String::new(),
            env: Vec::new(),
        }
    }

    fn toml(&self) -> String {
        format!(
            "device = \"{device}\"\n\
             plugin_dir = \"plugins\"\n\
             data_dir = \"data\"\n\
             engine = \"{engine}\"\n\
             [broker]\n\
             host = \"127.0.0.1\"\n\
             port = {port}\n\
             reconnect_min_ms = 50\n\
             reconnect_max_ms = 500\n\
             connect_timeout_ms = 2000\n\
             [retry]\n\
             delay_ms = {delay}\n\
             max_attempts = {attempts}\n\
             [runtime]\n\
             shutdown_deadline_ms = 2000\n\
             {extra}\n",
            device = self.device,
            engine = self.engine,
            port = self.port,
            delay = self.retry_delay_ms,
            attempts = self.max_attempts,
            extra = self.extra_toml,
        )
    }
}

/// The `relay` binary built for this test run.
pub fn relay_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_relay"))
}

/// Where the bundled plugins are, checked to exist.
pub fn plugin_source(name: &str) -> Result<PathBuf> {
    relay_harness::bundled_plugin(name).map_err(|e| {
        anyhow::anyhow!(
            "{e}: build the bundled plugins first with `cargo xtask build-plugins` (or set RELAY_PLUGIN_DIR)"
        )
    })
}

/// A `relay run` child process and its files.
pub struct HostProcess {
    pub config: HostConfig,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `ready` lines consumed by [`wait_ready`](Self::wait_ready) so far.
    starts: usize,
    /// The running process printed its `ready` line (and it was consumed).
    ready: bool,
    /// `ready` lines in the log so far, and how far the log was scanned.
    readies: usize,
    scanned: u64,
    pub kills: usize,
}

impl HostProcess {
    /// Prepares the host's dir and starts it, waiting until it is ready.
    pub fn start(config: HostConfig) -> Result<HostProcess> {
        let mut host = Self::prepare(config)?;
        host.spawn()?;
        host.wait_ready(Duration::from_secs(120))?;
        Ok(host)
    }

    /// Prepares the dir (config, plugins) without starting.
    pub fn prepare(config: HostConfig) -> Result<HostProcess> {
        let dir = tempfile::tempdir().context("host tempdir")?;
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins)?;
        for name in &config.plugins {
            let source = plugin_source(name)?;
            std::fs::copy(&source, plugins.join(format!("{name}.wasm")))
                .with_context(|| format!("copy {}", source.display()))?;
        }
        std::fs::write(dir.path().join("relay.toml"), config.toml())?;
        Ok(HostProcess {
            config,
            child: None,
            dir,
            starts: 0,
            ready: false,
            readies: 0,
            scanned: 0,
            kills: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("relay.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("host.log")
    }

    /// Everything the host logged so far (all starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Starts `relay run` (does not wait for readiness).
    pub fn spawn(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("host already running");
        }
        self.ready = false;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(relay_binary())
            .arg("run")
            .arg("--config")
            .arg(self.config_path())
            .env(
                "RUST_LOG",
                std::env::var("RELAY_E2E_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start `relay run`")?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits for the `ready` line of the current start (bounded; at once if
    /// it was already seen). Fails at once if the process exits.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        if self.ready {
            return Ok(());
        }
        let started = Instant::now();
        loop {
            if self.scan_readies() > self.starts {
                self.starts = self.readies;
                self.ready = true;
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                bail!(
                    "relay run exited with {status} before it was ready; log:\n{}",
                    self.log_tail(40)
                );
            }
            if started.elapsed() > limit {
                bail!(
                    "relay run not ready within {limit:?}; log:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Async-friendly [`wait_ready`](Self::wait_ready).
    pub async fn wait_ready_async(&mut self, limit: Duration) -> Result<()> {
        tokio::task::block_in_place(|| self.wait_ready(limit))
    }

    /// Counts `ready` lines in the part of the log not scanned yet (whole
    /// lines only); returns the total so far.
    fn scan_readies(&mut self) -> usize {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(self.log_path()) else {
            return self.readies;
        };
        let mut fresh = Vec::new();
        if file.seek(SeekFrom::Start(self.scanned)).is_err()
            || file.read_to_end(&mut fresh).is_err()
        {
            return self.readies;
        }
        let Some(end) = fresh.iter().rposition(|&b| b == b'\n') else {
            return self.readies;
        };
        let text = String::from_utf8_lossy(&fresh[..=end]);
        self.readies += text.lines().filter(|l| l.contains("relay::ready")).count();
        self.scanned += end as u64 + 1;
        self.readies
    }

    /// `None` while running; the exit status once it exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("host not started"),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL (`kill -9`): no shutdown code runs. Waits for the exit.
    pub fn kill9(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("host not running")
        };
        child.kill().context("SIGKILL")?; // std sends SIGKILL on Unix
        child.wait()?;
        self.kills += 1;
        // A start that was killed before `ready` printed nothing; one that was
        // ready already counted. Re-sync with the log either way.
        self.starts = self.scan_readies();
        Ok(())
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait()? {
                self.child = None;
                self.starts = self.scan_readies();
                return Ok(status);
            }
            if started.elapsed() > limit {
                bail!(
                    "relay run still running after {limit:?}; log:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM: graceful shutdown; waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("host not running")
        };
        super_signal(child.id(), "TERM")?;
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "relay run did not stop within 30 s of SIGTERM; log:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Graceful stop, then start again and wait until ready.
    pub fn restart(&mut self) -> Result<()> {
        let status = self.terminate()?;
        if !status.success() {
            bail!(
                "relay run exited with {status} on SIGTERM; log:\n{}",
                self.log_tail(40)
            );
        }
        self.spawn()?;
        self.wait_ready(Duration::from_secs(120))
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- host log ({}) ---\n{}",
                self.config.device,
                self.log_tail(60)
            );
        }
    }
}

/// `kill -<name> <pid>`.
fn super_signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{name} {pid} failed: {status}");
    }
    Ok(())
}
