//! A real Mosquitto for the tests: free loopback port, config from the
//! template `cli/tests/mosquitto.conf`, persistence in a temp directory (so a
//! restart keeps sessions and queued messages), killed on drop.
//!
//! The binary is `$MOSQUITTO` if set, else `mosquitto` on `PATH` or in
//! `/usr/sbin` (Debian's location, not on a normal user's `PATH`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::{free_port, wait_for_port, START_LIMIT};

const TEMPLATE: &str = include_str!("../mosquitto.conf");

/// How long a SIGTERM'd Mosquitto may take to save its database and exit.
const STOP_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Mosquitto {
    port: u16,
    dir: tempfile::TempDir,
    binary: PathBuf,
    child: Option<Child>,
    /// The config template and extra `{{KEY}}` -> value substitutions.
    template: &'static str,
    vars: Vec<(String, String)>,
}

impl Mosquitto {
    /// Starts a broker on a free loopback port with a fresh persistence directory.
    pub fn start() -> Result<Self> {
        Self::start_with(TEMPLATE, &[])
    }

    /// [`Mosquitto::start`] with another config template, whose `{{KEY}}`s
    /// beyond `{{PORT}}` and `{{DIR}}` are filled in from `vars`.
    pub fn start_with(template: &'static str, vars: &[(&str, &str)]) -> Result<Self> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("relay-mosquitto-")
            .tempdir()?;
        let mut broker = Self {
            port: free_port(),
            dir,
            binary,
            child: None,
            template,
            vars: vars
                .iter()
                .map(|(k, v)| (format!("{{{{{k}}}}}"), v.to_string()))
                .collect(),
        };
        broker.start_again()?;
        Ok(broker)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the config, the database and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What Mosquitto logged so far (errors, warnings, connections), then its stderr.
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        read("mosquitto.log") + &read("stderr.log")
    }

    /// (Re)starts the process on the same port and persistence directory.
    pub fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("mosquitto is already running on port {}", self.port);
        }
        let dir = self.dir.path();
        let mut config = self
            .template
            .replace("{{PORT}}", &self.port.to_string())
            .replace(
                "{{DIR}}",
                dir.to_str()
                    .ok_or_else(|| anyhow!("temp dir is not UTF-8"))?,
            );
        for (key, value) in &self.vars {
            config = config.replace(key.as_str(), value);
        }
        let config_path = dir.join("mosquitto.conf");
        std::fs::write(&config_path, config)?;
        // Its stderr (e.g. the "should not be run as root" warning) goes next to its log.
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);
        if let Err(e) = wait_for_port(self.port, START_LIMIT) {
            let log = self.log();
            self.kill();
            return Err(e.context(format!("mosquitto did not come up; its log:\n{log}")));
        }
        Ok(())
    }

    /// Graceful stop (SIGTERM): Mosquitto writes its database, so sessions and
    /// queued messages survive [`start_again`](Self::start_again). Falls back
    /// to SIGKILL after a bounded wait.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id().to_string();
        let signalled = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        if signalled {
            let started = Instant::now();
            while started.elapsed() < STOP_LIMIT {
                if child.try_wait()?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        if signalled {
            bail!("mosquitto ignored SIGTERM for {STOP_LIMIT:?} and was killed");
        }
        Ok(())
    }

    /// Hard stop (SIGKILL): whatever was not saved yet is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Deletes the saved database (sessions, queues) of a stopped broker, so
    /// the next start answers `session_present = false`.
    pub fn wipe_persistence(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("stop mosquitto before wiping its persistence");
        }
        match std::fs::remove_file(self.dir.path().join("mosquitto.db")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Graceful stop, then start on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn find_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MOSQUITTO") {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("mosquitto"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([
            PathBuf::from("/usr/sbin/mosquitto"),
            PathBuf::from("/usr/local/sbin/mosquitto"),
        ])
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "the `mosquitto` binary was not found (PATH, /usr/sbin); install it with \
                 `apt-get install -y mosquitto` or point $MOSQUITTO at it"
            )
        })
}
