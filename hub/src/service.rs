//! The hub's I/O loop: feeds the [`Forwarder`] with what happens (a stored
//! submit, a cancel, a status or presence from the broker, the clock) and
//! carries out its effects (publish an envelope, record `sent`, end a
//! request). Every decision is the forwarder's; this loop only moves bytes.
//! With several instances on one database, the cluster task
//! ([`crate::cluster`]) feeds it too: devices taken over or lost, requests
//! submitted and states recorded through other instances.

use std::collections::HashMap;
use std::time::Duration;

use relay_client::topics::Topics;
use relay_core::plugin::Role;
use rumqttc::{AsyncClient, QoS};
use tokio::sync::{mpsc, oneshot};

use crate::forward::{CancelError, Effect, ForwardConfig, Forwarder, Pending};
use crate::mqtt::Inbound;
use crate::state::HubState;
use crate::store::{OpenRequest, Store, StoreError};

/// What the API asks of the loop.
#[derive(Debug)]
pub enum Command {
    /// The API stored a request: forward it (clustered: have the cluster
    /// task read it back in the store's order).
    Submitted(Box<OpenRequest>),
    /// A stored request, read back by the cluster task: forward it.
    Forward(Box<OpenRequest>),
    /// Cancel a request not sent yet (the store is updated by the caller).
    Cancel {
        device: String,
        id: String,
        reply: oneshot::Sender<Result<(), CancelError>>,
    },
    /// This instance took `device`'s lease: its open requests, in order.
    Own {
        device: String,
        open: Vec<OpenRequest>,
    },
    /// Another instance took `device`'s lease.
    Disown { device: String },
    /// States recorded through other instances: `(device, id, state)`.
    Heard(Vec<(String, String, HubState)>),
}

/// The handle the API holds.
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    commands: mpsc::Sender<Command>,
}

impl ServiceHandle {
    /// The API stored `request`.
    pub async fn forward(&self, request: OpenRequest) {
        let _ = self
            .commands
            .send(Command::Submitted(Box::new(request)))
            .await;
    }

    /// The cluster task read `request` back from the store.
    pub(crate) async fn forward_stored(&self, request: OpenRequest) {
        let _ = self
            .commands
            .send(Command::Forward(Box::new(request)))
            .await;
    }

    pub(crate) async fn own(&self, device: &str, open: Vec<OpenRequest>) {
        let device = device.to_owned();
        let _ = self.commands.send(Command::Own { device, open }).await;
    }

    pub(crate) async fn disown(&self, device: &str) {
        let device = device.to_owned();
        let _ = self.commands.send(Command::Disown { device }).await;
    }

    pub(crate) async fn heard(&self, heard: Vec<(String, String, HubState)>) {
        let _ = self.commands.send(Command::Heard(heard)).await;
    }

    pub async fn cancel(&self, device: &str, id: &str) -> Result<(), CancelError> {
        let (reply, answer) = oneshot::channel();
        let unknown = || CancelError::Unknown {
            device: device.into(),
            id: id.into(),
        };
        self.commands
            .send(Command::Cancel {
                device: device.into(),
                id: id.into(),
                reply,
            })
            .await
            .map_err(|_| unknown())?;
        answer.await.map_err(|_| unknown())?
    }
}

fn unix_ms() -> u64 {
    relay_client::unix_ms()
}

struct Loop {
    store: Store,
    client: AsyncClient,
    prefix: String,
    forwarder: Forwarder,
    /// The envelope and role topic of every request the forwarder holds.
    outbox: HashMap<(String, String), (Role, Vec<u8>)>,
    /// Clustered: devices with news for the cluster task (a request
    /// stored here, or one to claim).
    claims: Option<mpsc::Sender<String>>,
}

/// Starts the loop in a task. Alone on its database, the hub forwards
/// every open request; one of several instances (`cluster`) forwards only
/// what the cluster task hands it.
pub async fn start(
    store: Store,
    client: AsyncClient,
    inbound: mpsc::Receiver<Inbound>,
    prefix: String,
    config: ForwardConfig,
    cluster: Option<crate::cluster::ClusterOptions>,
) -> Result<ServiceHandle, StoreError> {
    let (claims, claimed) = mpsc::channel(4096);
    let mut state = Loop {
        store: store.clone(),
        client,
        prefix,
        forwarder: match cluster {
            Some(_) => Forwarder::clustered(config),
            None => Forwarder::new(config),
        },
        outbox: HashMap::new(),
        claims: cluster.is_some().then_some(claims),
    };
    if cluster.is_none() {
        let open = store.open_requests().await?;
        tracing::info!(open = open.len(), "hub: requests to forward");
        let now = unix_ms();
        for request in open {
            let effects = state.add(request, now);
            debug_assert!(effects.is_empty(), "not connected yet");
        }
    }
    let (commands, rx) = mpsc::channel(1024);
    tokio::spawn(state.run(rx, inbound));
    let handle = ServiceHandle { commands };
    if let Some(options) = cluster {
        crate::cluster::spawn(store, handle.clone(), options, claimed);
    }
    Ok(handle)
}

impl Loop {
    fn add(&mut self, request: OpenRequest, now: u64) -> Vec<Effect> {
        let envelope = &request.envelope;
        let pending = Pending {
            id: envelope.id.clone(),
            expires_at: envelope.expires_at.unwrap_or(u64::MAX),
            deadline_at: request.deadline_at,
            ever_sent: request.state != HubState::Queued,
            heard: matches!(
                request.state,
                HubState::Accepted | HubState::Running | HubState::Retrying
            ),
        };
        let effects = self.forwarder.submit(&request.device, pending, now);
        let kept = !effects.iter().any(|e| matches!(e, Effect::Claim { .. }));
        if kept {
            self.outbox.insert(
                (request.device.clone(), envelope.id.clone()),
                (request.role, envelope.to_msgpack()),
            );
        }
        effects
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<Inbound>,
    ) {
        loop {
            let wait = self
                .forwarder
                .next_wakeup()
                .map(|at| Duration::from_millis(at.saturating_sub(unix_ms())))
                .unwrap_or(Duration::from_secs(3600));
            let effects = tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => return,
                },
                event = inbound.recv() => match event {
                    Some(event) => self.on_inbound(event).await,
                    None => return,
                },
                _ = tokio::time::sleep(wait) => self.forwarder.tick(unix_ms()),
            };
            self.carry_out(effects).await;
        }
    }

    fn on_command(&mut self, command: Command) -> Vec<Effect> {
        match command {
            Command::Submitted(request) => match &self.claims {
                Some(nudge) => {
                    let _ = nudge.try_send(request.device);
                    Vec::new()
                }
                None => self.add(*request, unix_ms()),
            },
            Command::Forward(request) => self.add(*request, unix_ms()),
            Command::Cancel { device, id, reply } => {
                let result = self.forwarder.cancel(&device, &id).map(|_| {
                    self.outbox.remove(&(device, id));
                });
                let _ = reply.send(result);
                Vec::new()
            }
            Command::Own { device, open } => {
                let now = unix_ms();
                self.forwarder.own(&device);
                open.into_iter()
                    .flat_map(|request| self.add(request, now))
                    .collect()
            }
            Command::Disown { device } => {
                for id in self.forwarder.disown(&device) {
                    self.outbox.remove(&(device.clone(), id));
                }
                Vec::new()
            }
            Command::Heard(heard) => {
                let now = unix_ms();
                let mut effects = Vec::new();
                for (device, id, state) in heard {
                    if state.is_final() {
                        self.outbox.remove(&(device.clone(), id.clone()));
                    }
                    effects.extend(self.forwarder.status(&device, &id, state.is_final(), now));
                }
                effects
            }
        }
    }

    async fn on_inbound(&mut self, event: Inbound) -> Vec<Effect> {
        let now = unix_ms();
        match event {
            Inbound::Connected => self.forwarder.connected(now),
            Inbound::Disconnected(_) => {
                self.forwarder.disconnected();
                Vec::new()
            }
            Inbound::Status { device, status } => {
                let is_final = status.status.is_final();
                let id = status.id.clone();
                if let Err(e) = self.store.status(&device, status, now).await {
                    tracing::error!(error = %e, "hub: cannot record a status");
                }
                if is_final {
                    self.outbox.remove(&(device.clone(), id.clone()));
                }
                self.forwarder.status(&device, &id, is_final, now)
            }
            Inbound::Presence { device, presence } => {
                let connection = presence.connection();
                if let Err(e) = self
                    .store
                    .presence(&device, presence.online, connection, now)
                    .await
                {
                    tracing::error!(error = %e, "hub: cannot record a presence");
                }
                self.forwarder
                    .presence(&device, presence.online, connection, now)
            }
        }
    }

    async fn carry_out(&mut self, effects: Vec<Effect>) {
        let now = unix_ms();
        for effect in effects {
            match effect {
                Effect::Publish { device, id } => {
                    let Some((role, bytes)) = self.outbox.get(&(device.clone(), id.clone())) else {
                        tracing::error!(%device, %id, "hub: nothing to publish for a forwarded request");
                        continue;
                    };
                    let topic = match Topics::new(&self.prefix, &device) {
                        Ok(topics) => topics.command(*role),
                        Err(e) => {
                            tracing::error!(error = %e, "hub: bad device id in the store");
                            continue;
                        }
                    };
                    if self
                        .client
                        .publish(topic, QoS::AtLeastOnce, false, bytes.clone())
                        .await
                        .is_err()
                    {
                        tracing::error!("hub: the broker link has stopped");
                        return;
                    }
                    let _ = self.store.sent(&device, &id, now).await;
                }
                Effect::Claim { device } => {
                    if let Some(claims) = &self.claims {
                        let _ = claims.try_send(device);
                    }
                }
                Effect::Finish { device, id, state } => {
                    self.outbox.remove(&(device.clone(), id.clone()));
                    if let Err(e) = self.store.finish(&device, &id, state, now).await {
                        tracing::error!(error = %e, "hub: cannot end a request");
                    }
                }
            }
        }
    }
}
