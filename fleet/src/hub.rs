//! The hub a fleet drives: a child process (for the memory and CPU figures,
//! which must be the hub's alone), or one in this process (the smoke test).
//!
//! The child is `relay hub serve` when a `relay` binary is at hand (`--relay
//! PATH`, or next to this binary in `target/<profile>/`). Otherwise it is
//! this binary's own `relay-fleet hub serve`, which starts the same
//! `relay_hub::run::start` with the options [`options`] builds, the
//! defaults of `relay hub serve` (window 64, resend after 30 s, a persistent
//! broker session). Either way the store is SQLite in a given directory,
//! and one admin user on `*` whose token is made here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use relay_hub::forward::ForwardConfig;
use relay_hub::run::{HubOptions, RunningHub};
use relay_hub::submit::SubmitLimits;
use relay_hub::users::Users;

use crate::{free_port, wait_for_port, FleetError};

/// The hub's MQTT client id in a fleet run.
pub const CLIENT_ID: &str = "relay-hub-fleet";

/// How to reach a hub.
#[derive(Debug, Clone)]
pub struct HubAccess {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub token: String,
}

/// The options `relay hub serve` uses by default, for a hub on `database`
/// listening on `listen`, with the broker at `broker_host:broker_port`
/// under MQTT client id `client_id`.
pub fn options(
    database: &str,
    listen: SocketAddr,
    broker_host: &str,
    broker_port: u16,
    client_id: &str,
    users: Users,
) -> HubOptions {
    HubOptions {
        database: database.to_owned(),
        listen,
        link: relay_hub::run::link_options(client_id, broker_host, broker_port),
        prefix: relay_client::topics::DEFAULT_PREFIX.into(),
        users,
        forward: ForwardConfig::default(),
        limits: SubmitLimits::default(),
        cluster: None,
    }
}

/// A new admin token and the users file text holding its hash.
pub fn admin_user() -> (String, String) {
    let (token, hash) = relay_hub::users::new_token();
    let file = format!(
        "[[user]]\nname = \"fleet\"\ntoken_sha256 = \"{hash}\"\n\
         grants = [{{ devices = \"*\", role = \"admin\" }}]\n"
    );
    (token, file)
}

/// A hub in this process, SQLite at `<dir>/hub.db`, on a free port.
pub async fn start_in_process(
    broker_port: u16,
    dir: &Path,
) -> Result<(RunningHub, HubAccess), FleetError> {
    let (token, users) = admin_user();
    let users = Users::parse(&users).map_err(FleetError::Setup)?;
    let database = format!("sqlite:{}", dir.join("hub.db").display());
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let hub = relay_hub::run::start(options(
        &database,
        listen,
        "127.0.0.1",
        broker_port,
        CLIENT_ID,
        users,
    ))
    .await
    .map_err(|e| FleetError::Setup(format!("starting the hub: {e}")))?;
    let url = format!("http://{}", hub.addr);
    Ok((hub, HubAccess { url, token }))
}

/// Which program serves the hub child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubBinary {
    /// `relay hub serve`.
    Relay(PathBuf),
    /// `relay-fleet hub serve` (this binary).
    Fleet(PathBuf),
}

impl HubBinary {
    /// `explicit`, else `relay` next to this executable, else this
    /// executable itself (`relay-fleet hub serve`).
    pub fn locate(explicit: Option<PathBuf>) -> Result<HubBinary, FleetError> {
        if let Some(path) = explicit {
            if !path.is_file() {
                return Err(FleetError::Setup(format!(
                    "--relay {}: no such file",
                    path.display()
                )));
            }
            return Ok(HubBinary::Relay(path));
        }
        let me = std::env::current_exe().map_err(FleetError::io("finding this executable"))?;
        let sibling = me.with_file_name(format!("relay{}", std::env::consts::EXE_SUFFIX));
        if sibling.is_file() {
            return Ok(HubBinary::Relay(sibling));
        }
        Ok(HubBinary::Fleet(me))
    }

    pub fn path(&self) -> &Path {
        match self {
            HubBinary::Relay(path) | HubBinary::Fleet(path) => path,
        }
    }

    /// How the report names it.
    pub fn describe(&self) -> String {
        match self {
            HubBinary::Relay(path) => format!("relay hub serve ({})", path.display()),
            HubBinary::Fleet(path) => format!("relay-fleet hub serve ({})", path.display()),
        }
    }
}

/// A hub child process on SQLite in a directory; killed on drop.
#[derive(Debug)]
pub struct HubChild {
    child: Child,
    log: PathBuf,
    pub access: HubAccess,
}

impl HubChild {
    /// Starts `binary` with the store, users file and log in `dir` (kept by
    /// the caller), the API on a free port, the broker on `broker_port`.
    pub fn spawn(binary: &HubBinary, broker_port: u16, dir: &Path) -> Result<HubChild, FleetError> {
        let (token, users) = admin_user();
        let users_path = dir.join("users.toml");
        std::fs::write(&users_path, users).map_err(FleetError::io("writing users.toml"))?;
        let log = dir.join("hub.log");
        let stderr = std::fs::File::create(&log).map_err(FleetError::io("creating hub.log"))?;
        let port = free_port()?;
        let child = Command::new(binary.path())
            .args(["hub", "serve", "--db"])
            .arg(format!("sqlite:{}", dir.join("hub.db").display()))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--users")
            .arg(&users_path)
            .arg("--broker")
            .arg(format!("mqtt://127.0.0.1:{broker_port}"))
            .args(["--client-id", CLIENT_ID])
            .env(
                "RUST_LOG",
                std::env::var("RELAY_FLEET_HUB_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(FleetError::io(format!("spawning {}", binary.describe())))?;
        let mut hub = HubChild {
            child,
            log,
            access: HubAccess {
                url: format!("http://127.0.0.1:{port}"),
                token,
            },
        };
        if let Err(e) = wait_for_port(port, Duration::from_secs(30)) {
            let _ = hub.child.kill();
            return Err(FleetError::Setup(format!(
                "the hub did not come up ({e}); its log:\n{}",
                hub.log()
            )));
        }
        Ok(hub)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HubChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
