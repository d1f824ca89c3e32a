//! `relay run --config relay.toml`: the device host against any MQTT broker.
//! Loads the config (flags override it), starts the runtime and runs until
//! Ctrl-C / SIGTERM, then shuts down gracefully.

use std::path::PathBuf;

use anyhow::Context;
use relay_core::engine::EngineKind;

use relay_host::runtime::{self, Config};

/// Arguments of `relay run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The device config (see examples/relay.toml for every key).
    #[arg(long, short, value_name = "FILE", env = "RELAY_CONFIG")]
    pub config: PathBuf,
    /// Override `engine`: wasmtime or wasmi.
    #[arg(long, value_name = "ENGINE")]
    pub engine: Option<EngineKind>,
    /// Override `device`.
    #[arg(long, value_name = "ID")]
    pub device: Option<String>,
    /// Override `data_dir` (journal and plugin kv).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Override `plugin_dir`.
    #[arg(long, value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// Override `broker.host`.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Override `broker.port`.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
}

impl RunArgs {
    /// The config file with the flags applied.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(&self.config)?;
        if let Some(engine) = self.engine {
            config.engine = engine;
        }
        if let Some(device) = &self.device {
            config.device = device.clone();
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(dir) = &self.plugin_dir {
            config.plugin_dir = dir.clone();
        }
        if let Some(host) = &self.host {
            config.broker.host = host.clone();
        }
        if let Some(port) = self.port {
            config.broker.port = port;
        }
        config.validate()?;
        Ok(config)
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    tokio_runtime()?.block_on(serve(config))
}

/// A multi-threaded tokio runtime for the host (driver, link, publisher).
pub fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("relay-io")
        .build()
        .context("cannot start the tokio runtime")
}

/// Runs a device until a signal, then stops it gracefully.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(
        device = %config.device,
        broker = %format!("{}:{}", config.broker.host, config.broker.port),
        engine = %config.engine,
        data_dir = %config.data_dir.display(),
        plugin_dir = %config.plugin_dir.display(),
        "starting"
    );
    let device = runtime::start_device(&config)?;
    wait_then_stop(device.handle).await
}

/// Runs until Ctrl-C / SIGTERM (then stops gracefully) or until the runtime
/// stops by itself (e.g. the journal failed: exit non-zero, restart replays).
pub async fn wait_then_stop(mut handle: runtime::RuntimeHandle) -> anyhow::Result<()> {
    let stopped = tokio::select! {
        _ = runtime::shutdown::signal() => None,
        result = handle.stopped() => Some(result),
    };
    let report = match stopped {
        Some(result) => result.context("the runtime stopped")?,
        None => handle.shutdown().await.context("shutdown failed")?,
    };
    tracing::info!(pending = report.pending, abandoned = ?report.abandoned, "shut down");
    Ok(())
}
