//! `relay hub`: run the hub (`serve`) and make user tokens (`token`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use relay_client::link::LinkOptions;
use relay_hub::cluster::ClusterOptions;
use relay_hub::forward::ForwardConfig;
use relay_hub::run::HubOptions;
use relay_hub::submit::SubmitLimits;
use relay_hub::users::{new_token, Users};

use crate::connect::ConnectArgs;

#[derive(Debug, Args)]
pub struct HubArgs {
    #[command(subcommand)]
    pub action: HubAction,
}

#[derive(Debug, Subcommand)]
pub enum HubAction {
    /// Run the hub: HTTP API in, MQTT to the devices, every request stored.
    #[command(
        after_help = "Example:\n  relay hub serve --db sqlite:hub.db --users users.toml --broker mqtt://127.0.0.1:1883\n  \
        curl -H \"Authorization: Bearer $TOKEN\" -d '{\"name\":\"echo\",\"payload\":{\"hi\":1}}' \\\n    http://127.0.0.1:8080/v1/devices/dev-1/requests"
    )]
    Serve(Box<ServeArgs>),
    /// Make a user token; prints the token and the users-file entry holding its hash.
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The store: `sqlite:<path>` (created if missing) or `postgres://user@host:port/db`.
    #[arg(long, default_value = "sqlite:relay-hub.db", env = "RELAY_HUB_DB")]
    pub db: String,
    /// HTTP address of the API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The users file (see `relay hub token`).
    #[arg(long, required_unless_present = "insecure_no_auth")]
    pub users: Option<PathBuf>,
    /// Everyone is an admin of every device, without a token. Local development only.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// The hub's MQTT client id (its persistent session keeps statuses while it
    /// is down). With --instance: `relay-hub-<instance>`.
    #[arg(long)]
    pub client_id: Option<String>,
    /// Run as one of several instances on one database (Postgres): a name unique
    /// among them. Devices are shared out by leases in the database; statuses
    /// come through an MQTT shared subscription.
    #[arg(long)]
    pub instance: Option<String>,
    /// With --instance: a device whose holder has not renewed its lease for
    /// this long is taken over by another instance.
    #[arg(long, default_value_t = 10_000, requires = "instance")]
    pub lease_ms: u64,
    /// Requests out to one device at once (sent and not final).
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user's name.
    #[arg(long)]
    pub name: String,
    /// Devices this user may address (`*` matches any run of characters).
    #[arg(long, default_value = "*")]
    pub devices: String,
    /// The role on those devices: admin, primary or secondary.
    #[arg(long, default_value = "primary")]
    pub role: String,
}

pub fn run(args: HubArgs) -> Result<()> {
    match args.action {
        HubAction::Serve(args) => serve(*args),
        HubAction::Token(args) => {
            if relay_core::plugin::Role::parse(&args.role).is_none() {
                bail!("unknown role {:?}: admin, primary or secondary", args.role);
            }
            let (token, hash) = new_token();
            println!(
                "# token for {} (give it to the user; it is not stored): {token}",
                args.name
            );
            println!("[[user]]");
            println!("name = {:?}", args.name);
            println!("token_sha256 = \"{hash}\"");
            println!(
                "grants = [{{ devices = {:?}, role = {:?} }}]",
                args.devices, args.role
            );
            Ok(())
        }
    }
}

/// The hub's link options from the connection flags.
pub fn hub_link(connect: &ConnectArgs, client_id: &str) -> Result<LinkOptions> {
    let options = connect.options()?;
    Ok(LinkOptions {
        credentials: options.credentials,
        tls: options.tls,
        connect_timeout: options.connect_timeout,
        ..relay_hub::run::link_options(client_id, &options.host, options.port)
    })
}

fn serve(args: ServeArgs) -> Result<()> {
    let users = match (&args.users, args.insecure_no_auth) {
        (_, true) => {
            tracing::warn!("hub: --insecure-no-auth: every caller is an admin of every device");
            Users::open_access()
        }
        (Some(path), false) => Users::load(path)?,
        (None, false) => {
            bail!("--users FILE is required (or --insecure-no-auth for local development)")
        }
    };
    let client_id = match (&args.client_id, &args.instance) {
        (Some(id), _) => id.clone(),
        (None, Some(instance)) => format!("relay-hub-{instance}"),
        (None, None) => "relay-hub".into(),
    };
    let cluster = args.instance.as_ref().map(|instance| ClusterOptions {
        lease_ms: args.lease_ms.max(1_000),
        ..ClusterOptions::new(instance.clone())
    });
    let options = HubOptions {
        database: args.db.clone(),
        listen: args.listen,
        link: hub_link(&args.connect, &client_id)?,
        prefix: args.connect.prefix.clone(),
        users,
        forward: ForwardConfig {
            window: args.window.max(1),
            ..ForwardConfig::default()
        },
        limits: SubmitLimits::default(),
        cluster,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let hub = relay_hub::run::start(options)
            .await
            .with_context(|| format!("starting the hub on {}", args.db))?;
        eprintln!(
            "relay hub: API on http://{}, store {}, broker {}",
            hub.addr,
            args.db,
            args.connect.describe()
        );
        tokio::select! {
            served = hub.wait() => served.context("the API server stopped"),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
