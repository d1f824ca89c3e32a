//! `relay dev`: everything in one process for trying Relay on a laptop: the
//! embedded MQTT broker, a device host, the bundled plugins and a hub on
//! SQLite. Prints where they listen and ready-to-paste `relay send` lines
//! (straight over MQTT, and through the hub); runs until Ctrl-C.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use relay_core::engine::EngineKind;

use crate::embedded_broker::EmbeddedBroker;
use relay_host::runtime::{self, Config};

/// Arguments of `relay dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Plugin directory [default: $RELAY_PLUGIN_DIR, else the plugins built into
    /// this binary, written to <data-dir>/bundled-plugins].
    #[arg(long, value_name = "DIR", env = "RELAY_PLUGIN_DIR")]
    pub plugins: Option<PathBuf>,
    /// Port of the embedded broker on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Device id.
    #[arg(long, default_value = "dev-1")]
    pub device: String,
    /// Engine: wasmtime or wasmi.
    #[arg(long, default_value = "wasmtime")]
    pub engine: EngineKind,
    /// Journal and plugin kv; kept across runs, so pending commands survive a restart.
    #[arg(long, value_name = "DIR", default_value = ".relay-dev")]
    pub data_dir: PathBuf,
    /// Retry delay in ms (the default 5 s is the product's; shorten it to watch retries).
    #[arg(long, value_name = "MS")]
    pub retry_delay_ms: Option<u64>,
    /// Port of the hub's HTTP API on 127.0.0.1 (0 = any free port). The hub
    /// stores requests in <data-dir>/hub.db; its dev token is in <data-dir>/hub-token.
    #[arg(long, default_value_t = 8080)]
    pub hub_port: u16,
    /// Do not start a hub.
    #[arg(long)]
    pub no_hub: bool,
}

/// The hub `relay dev` runs: its address and the dev user's token.
struct DevHub {
    addr: SocketAddr,
    token: String,
}

/// A hub on SQLite in the data dir, with one admin user whose token is kept
/// in `<data-dir>/hub-token` (made at the first run).
async fn start_dev_hub(args: &DevArgs, broker_port: u16) -> anyhow::Result<DevHub> {
    use relay_hub::users::{new_token, token_hash, Users};
    std::fs::create_dir_all(&args.data_dir)?;
    let token_path = args.data_dir.join("hub-token");
    let token = match std::fs::read_to_string(&token_path) {
        Ok(token) if !token.trim().is_empty() => token.trim().to_owned(),
        _ => {
            let (token, _) = new_token();
            std::fs::write(&token_path, &token)
                .with_context(|| format!("writing {}", token_path.display()))?;
            token
        }
    };
    let users = Users::parse(&format!(
        "[[user]]\nname = \"dev\"\ntoken_sha256 = \"{}\"\ngrants = [{{ devices = \"*\", role = \"admin\" }}]\n",
        token_hash(&token)
    ))
    .map_err(anyhow::Error::msg)?;
    let listen = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, args.hub_port));
    let link = relay_hub::run::link_options(
        "relay-hub-dev",
        &Ipv4Addr::LOCALHOST.to_string(),
        broker_port,
    );
    let options = relay_hub::run::HubOptions {
        database: format!("sqlite:{}", args.data_dir.join("hub.db").display()),
        listen,
        link,
        prefix: relay_client::topics::DEFAULT_PREFIX.into(),
        users,
        forward: relay_hub::forward::ForwardConfig::default(),
        limits: relay_hub::submit::SubmitLimits::default(),
        cluster: None,
    };
    let hub = relay_hub::run::start(options).await.with_context(|| {
        format!(
            "cannot start the hub on {listen}: pass --hub-port 0 (any free port), another port, or --no-hub"
        )
    })?;
    let addr = hub.addr;
    tokio::spawn(hub.wait());
    Ok(DevHub { addr, token })
}

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let plugin_dir = match &args.plugins {
        Some(dir) => dir.clone(),
        None => crate::bundled::extract(&args.data_dir)?.context(
            "this relay was built without its bundled plugins: run `cargo xtask dev` in a \
             checkout (or `cargo xtask build-plugins` before building or installing relay), \
             or pass --plugins DIR",
        )?,
    };
    if !plugin_dir.is_dir() {
        bail!(
            "plugin dir {} does not exist: build the bundled plugins with `cargo xtask build-plugins` \
             (or run `cargo xtask dev`), or pass --plugins DIR",
            plugin_dir.display()
        );
    }
    let addr = free_or_taken(args.port)?;
    let broker = EmbeddedBroker::start(addr).context("cannot start the embedded broker")?;

    let mut config = Config::for_device(args.device.clone());
    config.engine = args.engine;
    config.plugin_dir = plugin_dir;
    config.data_dir = args.data_dir.clone();
    config.broker.host = Ipv4Addr::LOCALHOST.to_string();
    config.broker.port = broker.port();
    config.broker.reconnect_max_ms = 2_000;
    if let Some(delay) = args.retry_delay_ms {
        config.retry.delay_ms = delay;
    }
    config.validate()?;

    super::run::tokio_runtime()?.block_on(async move {
        let device = runtime::start_device(&config)?;
        if !device
            .transport
            .wait_subscribed(Duration::from_secs(10))
            .await
        {
            tracing::warn!("not subscribed after 10 s; the host keeps trying");
        }
        let hub = match args.no_hub {
            true => None,
            false => Some(start_dev_hub(&args, broker.port()).await?),
        };
        print_banner(&config, &broker, &device.plugins, hub.as_ref());
        super::run::wait_then_stop(device.handle).await
    })
}

/// `127.0.0.1:port` after checking nothing listens there (rumqttd would fail
/// on its own thread, and our readiness probe would find the other server).
fn free_or_taken(port: u16) -> anyhow::Result<SocketAddr> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    if port == 0 {
        return Ok(addr);
    }
    match TcpListener::bind(addr) {
        Ok(listener) => {
            drop(listener);
            Ok(addr)
        }
        Err(e) => bail!("port {port} on 127.0.0.1 is not free ({e}); is another broker running? pass --port 0 or another port"),
    }
}

fn print_banner(
    config: &Config,
    broker: &EmbeddedBroker,
    plugins: &[relay_core::plugin::PluginInfo],
    hub: Option<&DevHub>,
) {
    let port = broker.port();
    let names: Vec<String> = plugins
        .iter()
        .map(|p| format!("{} {}", p.name, p.version))
        .collect();
    println!("relay dev: MQTT broker on 127.0.0.1:{port}");
    println!(
        "  device  {} (topics {}/{}/...)",
        config.device, config.prefix, config.device
    );
    println!("  engine  {}", config.engine);
    println!(
        "  plugins {} (from {})",
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        },
        config.plugin_dir.display()
    );
    println!("  data    {}", config.data_dir.display());
    if let Some(hub) = hub {
        println!(
            "  hub     http://{} (requests in {}/hub.db)",
            hub.addr,
            config.data_dir.display()
        );
    }
    println!();
    println!("Send a command from another terminal:");
    println!(
        "  {} send --port {port} --device {} echo '{{\"hello\":\"world\"}}' --wait",
        relay_command(),
        config.device
    );
    if let Some(hub) = hub {
        println!(
            "Or through the hub (stored until the device has run it, even while it is offline):"
        );
        println!(
            "  {} send --hub http://{} --token {} --device {} echo '{{\"hello\":\"world\"}}' --wait",
            relay_command(),
            hub.addr,
            hub.token,
            config.device
        );
        println!(
            "The hub's web page: http://{}/ (token {})",
            hub.addr, hub.token
        );
    }
    println!();
    println!("Ctrl-C stops (gracefully: the running handler finishes, nothing acked is lost).");
}

/// How to invoke this binary from a shell: `relay` when that is on `PATH`,
/// else the full path of the running executable (e.g. under `target/release`).
fn relay_command() -> String {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("relay").is_file()));
    match std::env::current_exe() {
        Ok(exe) if !on_path => exe.display().to_string(),
        _ => "relay".into(),
    }
}
