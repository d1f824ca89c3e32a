//! From a [`Config`] to a running device on MQTT: what `relay run` and
//! `relay dev` do, and what broker-backed tests call.
//!
//! Order matters: load the plugins, replay the journal into the scheduler,
//! and only then connect and subscribe, so a redelivered command is deduped
//! against the restored state and pending commands resume in journal order
//! before anything new. Exactly one `ready` line is logged (at info level,
//! target `relay::ready`) once the command subscription is granted; tests
//! and scripts wait for it. An unreachable broker does not stop the start:
//! the transport keeps retrying with exponential backoff and logs each try.

use std::sync::Arc;

use relay_core::engine::{Engine, EngineKind};
use relay_core::plugin::PluginInfo;
use relay_core::registry::Registry;

use super::config::{Config, ConfigError};
use super::handlers::Handlers;
use super::installer::Installer;
use super::loader::{self, LoadError};
use super::{Runtime, RuntimeError, RuntimeHandle};
use crate::engine::wasmi_record::ValidatedDir;
use crate::engine::wasmtime::WasmtimeEngine;
use crate::transport::{MqttTransport, TransportError};
use relay_core::engine::wasmi::WasmiEngine;

/// Compiled-plugin cache inside the data dir (wasmtime only).
pub const COMPILE_CACHE_DIR: &str = "compiled";
/// Under the data dir: the wasmi engine's record of validated modules.
pub const VALIDATED_DIR: &str = "validated";

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot build the {kind} engine: {message}")]
    Engine {
        kind: relay_core::engine::EngineKind,
        message: String,
    },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot start the MQTT link: {0}")]
    Transport(#[from] TransportError),
}

/// A device running on MQTT.
pub struct DeviceRuntime {
    pub handle: RuntimeHandle,
    /// The link (its [`MqttTransport::link`] state, e.g. to wait for the subscription).
    pub transport: Arc<MqttTransport>,
    /// Plugins loaded from the plugin dir.
    pub plugins: Vec<PluginInfo>,
    /// The engine they run on (to load more, e.g. an install).
    pub engine: Arc<dyn Engine>,
}

impl std::fmt::Debug for DeviceRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceRuntime")
            .field("handle", &self.handle)
            .field("plugins", &self.plugins)
            .finish()
    }
}

/// Loads plugins, replays the journal, connects (see the module doc).
/// Needs a tokio runtime.
pub fn start_device(config: &Config) -> Result<DeviceRuntime, StartError> {
    let PreparedDevice {
        prepared,
        plugins,
        engine,
    } = prepare_device(config)?;
    let mqtt = config.mqtt();
    let broker = format!("{}:{}", mqtt.host, mqtt.port);
    let transport = Arc::new(MqttTransport::start(mqtt)?);
    let handle = prepared.start(transport.clone())?;
    log_ready_once(&transport, broker, config.device.clone());
    Ok(DeviceRuntime {
        handle,
        transport,
        plugins,
        engine,
    })
}

/// A device loaded and replayed, not connected yet.
pub struct PreparedDevice {
    /// Start it with [`Prepared::start`] on a link.
    pub prepared: super::Prepared,
    /// The plugins it runs (after updates were applied).
    pub plugins: Vec<PluginInfo>,
    pub engine: Arc<dyn Engine>,
}

/// Everything [`start_device`] does before the link: the engine, the
/// plugin directory, the updates over it (`[updates]`), the journal's
/// replay. Tests start the result on an in-memory link.
pub fn prepare_device(config: &Config) -> Result<PreparedDevice, StartError> {
    config.validate()?;
    let limits = config.plugin_limits()?;
    let engine = build_engine(config)?;
    let handlers = Handlers::new(Registry::new());
    let factory = loader::load_dir_files(
        &*engine,
        &config.plugin_dir,
        &limits,
        &config.data_dir,
        &handlers,
    )?;
    // Updated, rolled back and removed plugins replace what the plugin
    // directory holds.
    let installer = handlers.update(|registry| {
        Installer::open(
            engine.clone(),
            limits.clone(),
            &config.data_dir,
            config.updates.options()?,
            factory.into_iter().map(|(i, p)| (i.name, p)).collect(),
            registry,
        )
        .map_err(StartError::from)
    })?;
    let plugins = handlers.plugins();
    if plugins.is_empty() {
        tracing::warn!(dir = %config.plugin_dir.display(), "no plugins (*.wasm) found: only built-in commands will run");
    }
    let prepared = Runtime::builder()
        .options(config.runtime_options()?)
        .handlers(handlers)
        .installer(installer)
        .open_dir(&config.data_dir)?;
    Ok(PreparedDevice {
        prepared,
        plugins,
        engine,
    })
}

/// The configured engine. wasmtime keeps compiled plugins in
/// `<data_dir>/compiled` so a restart (e.g. after a crash) does not pay the
/// Cranelift compile again; wasmi records validated modules in
/// `<data_dir>/validated` so a restart does not validate their bodies again.
fn build_engine(config: &Config) -> Result<Arc<dyn Engine>, StartError> {
    let failed = |message: String| StartError::Engine {
        kind: config.engine,
        message,
    };
    match config.engine {
        EngineKind::Wasmtime => {
            WasmtimeEngine::with_cache_dir(config.data_dir.join(COMPILE_CACHE_DIR))
                .map(|e| Arc::new(e) as Arc<dyn Engine>)
                .map_err(|e| failed(e.to_string()))
        }
        EngineKind::Wasmi => {
            let record = ValidatedDir::open(config.data_dir.join(VALIDATED_DIR))
                .map_err(|e| failed(format!("{VALIDATED_DIR} dir: {e}")))?;
            Ok(Arc::new(
                WasmiEngine::new().with_validated_modules(Arc::new(record)),
            ))
        }
    }
}

/// Logs `ready` the first time the command subscription is granted.
fn log_ready_once(transport: &MqttTransport, broker: String, device: String) {
    let mut link = transport.link();
    let filter = transport.topics().command_filter();
    tokio::spawn(async move {
        if link.wait_for(|l| l.connected && l.subscribed).await.is_ok() {
            tracing::info!(target: "relay::ready", %broker, %device, subscribed = %filter, "ready");
        }
    });
}
