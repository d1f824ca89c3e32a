//! A Mosquitto child for a fleet: a free loopback port, no connection limit,
//! queues deep enough that no status waiting for the hub is ever dropped,
//! killed on drop. Adapted from the tests' fixture
//! (`cli/tests/support/mosquitto.rs`), with the settings a fleet needs:
//!
//! - `max_connections -1`: Mosquitto's own cap is off; what bounds it is its
//!   open-file limit, inherited from this process (raise it first with
//!   [`crate::procstat::raise_open_files`]);
//! - `max_queued_messages 1000000`: the default 1,000 drops statuses queued
//!   toward a hub that falls behind 10,000 devices;
//! - no persistence and no connection log (10,000 sessions would be saved
//!   at shutdown and logged twice each).
//!
//! The binary is `$MOSQUITTO` if set, else `mosquitto` on `PATH` or in
//! `/usr/sbin` (Debian's location).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for_port, FleetError};

/// How long Mosquitto may take to listen.
const START_LIMIT: Duration = Duration::from_secs(15);

const CONFIG: &str = "\
listener {{PORT}} 127.0.0.1
allow_anonymous true
# Without it every hop may stall ~40 ms (Nagle + delayed ACK).
set_tcp_nodelay true
max_connections -1
max_inflight_messages 1000
max_queued_messages 1000000
max_queued_bytes 0
persistence false
# Stay root when started as root (no effect for another user).
user root
log_dest file {{DIR}}/mosquitto.log
log_type error
log_type warning
connection_messages false
";

/// A running Mosquitto.
#[derive(Debug)]
pub struct Mosquitto {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Mosquitto {
    /// Starts a broker on a free loopback port, its config and log in a
    /// new temp dir under `parent` (the system's temp dir if `None`).
    pub fn start(parent: Option<&Path>) -> Result<Mosquitto, FleetError> {
        let binary = find_binary()?;
        let mut builder = tempfile::Builder::new();
        builder.prefix("relay-fleet-mosquitto-");
        let dir = match parent {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .map_err(FleetError::io("creating the broker's temp dir"))?;
        let port = free_port()?;
        let dir_text = dir
            .path()
            .to_str()
            .ok_or_else(|| FleetError::Setup("the temp dir's path is not UTF-8".into()))?;
        let config = CONFIG
            .replace("{{PORT}}", &port.to_string())
            .replace("{{DIR}}", dir_text);
        let config_path = dir.path().join("mosquitto.conf");
        std::fs::write(&config_path, config).map_err(FleetError::io("writing mosquitto.conf"))?;
        let stderr = std::fs::File::create(dir.path().join("stderr.log"))
            .map_err(FleetError::io("creating the broker's stderr log"))?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(FleetError::io(format!("spawning {}", binary.display())))?;
        let broker = Mosquitto { port, dir, child };
        if let Err(e) = wait_for_port(port, START_LIMIT) {
            return Err(FleetError::Setup(format!(
                "mosquitto did not come up ({e}); its log:\n{}",
                broker.log()
            )));
        }
        Ok(broker)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What Mosquitto logged (errors, warnings), then its stderr.
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        read("mosquitto.log") + &read("stderr.log")
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary() -> Result<PathBuf, FleetError> {
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
            FleetError::Setup(
                "the `mosquitto` binary was not found (PATH, /usr/sbin); install it with \
                 `apt-get install -y mosquitto` or point $MOSQUITTO at it"
                    .into(),
            )
        })
}
