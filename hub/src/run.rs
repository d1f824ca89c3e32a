//! Starting a hub: open the store, connect to the broker, load what is
//! still open, serve the API. [`start`] returns once the API listens, so a
//! caller (the CLI, a test) knows the address.

use std::net::SocketAddr;
use std::sync::Arc;

use relay_client::link::LinkOptions;

use crate::api::{router, ApiState};
use crate::cluster::{ClusterOptions, SHARE_GROUP};
use crate::forward::ForwardConfig;
use crate::store::{Store, StoreError};
use crate::submit::SubmitLimits;
use crate::users::Users;

/// Everything a hub needs.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// `sqlite:<path>` or `postgres://...`.
    pub database: String,
    pub listen: SocketAddr,
    pub link: LinkOptions,
    pub prefix: String,
    pub users: Users,
    pub forward: ForwardConfig,
    pub limits: SubmitLimits,
    /// One of several instances on one database (see [`crate::cluster`]).
    pub cluster: Option<ClusterOptions>,
}

/// The hub's broker link: a persistent session under `client_id` (so
/// statuses wait at the broker while the hub restarts), room for many
/// requests in flight. Credentials and TLS are the caller's to add.
pub fn link_options(client_id: &str, host: &str, port: u16) -> LinkOptions {
    LinkOptions {
        client_id: client_id.to_owned(),
        host: host.to_owned(),
        port,
        clean_session: false,
        credentials: None,
        tls: None,
        keep_alive: std::time::Duration::from_secs(30),
        connect_timeout: std::time::Duration::from_secs(5),
        max_inflight: 100,
        queue_capacity: 1024,
        max_incoming_packet: 16 * 1024 * 1024,
        max_outgoing_packet: 16 * 1024 * 1024,
        last_will: None,
    }
}

/// Why a hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("broker TLS: {0}")]
    Tls(#[from] relay_client::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Prefix(#[from] relay_client::TopicError),
}

/// A running hub.
#[derive(Debug)]
pub struct RunningHub {
    pub addr: SocketAddr,
    pub store: Store,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningHub {
    /// Serves until the server stops (it does not, unless it fails).
    pub async fn wait(self) -> std::io::Result<()> {
        self.server
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

pub async fn start(options: HubOptions) -> Result<RunningHub, StartError> {
    relay_client::topics::validate_prefix(&options.prefix)?;
    let store = Store::open(&options.database).await?;
    // One of several instances: a clean session, since a persistent one
    // would keep taking its share of statuses while the instance is dead
    // (what is lost meanwhile is re-asked by the device's new holder).
    let mut link = options.link.clone();
    if options.cluster.is_some() {
        link.clean_session = true;
    }
    let share = options.cluster.as_ref().map(|_| SHARE_GROUP);
    let (client, inbound) = crate::mqtt::start(&link, &options.prefix, share)?;
    let service = crate::service::start(
        store.clone(),
        client,
        inbound,
        options.prefix.clone(),
        options.forward,
        options.cluster.clone(),
    )
    .await?;
    crate::rollout::driver::spawn(
        store.clone(),
        service.clone(),
        options.limits,
        options
            .cluster
            .as_ref()
            .map(|c| (c.instance.clone(), c.lease_ms)),
    );
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: options.listen,
        source,
    })?;
    let app = router(ApiState {
        store: store.clone(),
        service,
        users: Arc::new(options.users),
        limits: options.limits,
        cluster: options.cluster,
    });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    tracing::info!(%addr, "hub: listening");
    Ok(RunningHub {
        addr,
        store,
        server,
    })
}
