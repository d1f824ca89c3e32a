//! The production [`Transport`]: MQTT over rumqttc, with the delivery
//! guarantees the journal relies on.
//!
//! # Protocol choice: MQTT 3.1.1 with `clean_session = false`
//! A persistent session is what makes "the broker keeps a command until the
//! device acked it" true across device and broker restarts. MQTT 5 would add
//! session expiry and a maximum packet size the broker honours, but the
//! embedded broker (rumqttd 0.20) treats v5 as experimental (its v5 link lacks
//! parts of session handling) and rumqttc's v5 client is the less exercised
//! of its two. Mosquitto supports both; with 3.1.1 it keeps a persistent
//! session until `persistent_client_expiration` (default: forever). So: 3.1.1,
//! `clean_session = false`, and a fixed, non-empty client id derived from the
//! device id (rumqttc panics on an empty id with a persistent session, and a
//! random id would orphan the session on every restart).
//!
//! # Guarantees and how they are kept
//! - **Ack after durable.** `set_manual_acks(true)`: nothing is acked until the
//!   runtime calls [`Transport::ack`].
//! - **PUBACKs in arrival order, never stale.** Acks pass through
//!   [`AckOrder`] (one epoch per connection). When the connection drops, under
//!   the same lock that guards acks, the epoch is bumped, queued acks are
//!   forgotten, rumqttc's request channel is drained of PUBACKs again
//!   (`EventLoop::clean`, covering an ack that slipped in after rumqttc's own
//!   clean) and publishes it had already buffered from the dead connection are
//!   discarded (`state.events`): the broker redelivers all of them under new
//!   packet ids, and an old packet id must never be acked on the new connection.
//! - **No deadlock.** The `EventLoop` runs in its own task and is the only
//!   thing that polls it; that task never awaits the request channel. Acks are
//!   sent with `try_ack`; if the channel is full they wait in a queue that a
//!   small pump task retries. Runtime publishes await channel space from their
//!   own tasks.
//! - **Outgoing messages survive reconnects**, in send order, fed back one
//!   in-flight window at a time ([`relay_client::link::Resend`], shared with
//!   the app side; the window matters: found by the kill -9 test against the
//!   embedded broker).
//! - **Resubscribe on every ConnAck**, also when the session was present (it
//!   costs one SUBSCRIBE; a broker that lost our session gets it back).
//! - **Presence** ([`super::presence`]): a retained `online: false` last
//!   will with every CONNECT, a retained `online: true` right after the
//!   SUBSCRIBE of every ConnAck (not counted in
//!   [`Transport::publish_acks`]). [`MqttTransport::shutdown`] publishes
//!   `online: false` before the DISCONNECT (which makes the broker discard
//!   the will), at QoS 0: no PUBACK to keep apart, and nothing could resend
//!   it after the DISCONNECT anyway.
//! - **Reconnect** with exponential backoff and full jitter ([`Backoff`]),
//!   reset on each successful `ConnAck`.
//! - **TCP_NODELAY** on the socket: without it every hop can stall ~40 ms
//!   (Nagle + delayed ACK).
//! - **Flow control.** Deliveries go to the runtime through an unbounded
//!   channel; it is bounded in practice by the broker's in-flight window
//!   (Mosquitto `max_inflight_messages`, rumqttd `max_inflight_count`), since
//!   nothing more is sent to us until we ack.
//! - **Large packets.** A publish larger than `max_incoming_packet` makes
//!   rumqttc drop the connection, and the broker would redeliver it forever.
//!   The default (16 MiB) is far above any envelope limit so oversized commands
//!   reach the runtime and get a `rejected`/`too_large` status; configure the
//!   broker's own limit (Mosquitto `message_size_limit`) at or below it.
//!
//! Foreign topics (not `<prefix>/<device>/cmd/<level>`, e.g. left over from
//! an old subscription of the persistent session) are acked in order and
//! dropped with a warning; unknown role levels are handed up (see [`Topics`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use relay_client::link::{LinkOptions, Resend};
use relay_core::presence::Presence;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, Publish, QoS, Request,
    Subscribe, SubscribeReasonCode,
};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::ack_order::AckOrder;
use super::backoff::{Backoff, DEFAULT_BASE, DEFAULT_CAP};
use super::presence::{boot_ms, PresenceLink};
use super::topics::{CommandTopic, Topics, DEFAULT_PREFIX};
use super::{AckRefused, AckToken, Incoming, Outbound, Transport, TransportError};
use crate::runtime::clock::unix_ms;

/// Settings of the device's MQTT link. [`MqttConfig::new`] fills in defaults.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    /// Device id (seed naming rule); part of every topic.
    pub device: String,
    /// Topic prefix, default `relay`.
    pub prefix: String,
    /// MQTT client id; default `relay-<device>`. Must stay the same across
    /// restarts for the persistent session to be found again.
    pub client_id: Option<String>,
    /// Username and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
    /// TLS (CA, client identity); `None`: plain TCP.
    pub tls: Option<super::TlsFiles>,
    pub keep_alive: Duration,
    /// TCP connect + CONNACK timeout (rounded up to whole seconds by rumqttc).
    pub connect_timeout: Duration,
    /// Outgoing QoS 1 publishes awaiting the broker's PUBACK.
    pub max_inflight: u16,
    /// Requests (publishes, acks) queued for the event loop.
    pub queue_capacity: usize,
    pub max_incoming_packet: usize,
    pub max_outgoing_packet: usize,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl MqttConfig {
    pub fn new(host: impl Into<String>, port: u16, device: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            device: device.into(),
            prefix: DEFAULT_PREFIX.to_string(),
            client_id: None,
            credentials: None,
            tls: None,
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_inflight: 100,
            queue_capacity: 1024,
            max_incoming_packet: 16 * 1024 * 1024,
            max_outgoing_packet: 1024 * 1024,
            backoff_base: DEFAULT_BASE,
            backoff_cap: DEFAULT_CAP,
        }
    }

    /// The client id actually used.
    pub fn effective_client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("relay-{}", self.device))
    }
}

/// What the link is doing, observable through [`MqttTransport::link`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    /// A CONNACK was received and the connection has not failed since.
    pub connected: bool,
    /// The broker granted the command subscription on the current connection.
    pub subscribed: bool,
    /// The broker still had our session at the last CONNACK.
    pub session_present: bool,
    /// Successful connections so far (CONNACKs).
    pub connects: u64,
    /// Ack epoch of the current connection.
    pub epoch: u64,
    /// The last connection error, if any.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct AckState {
    /// Item: the packet id to PUBACK, `None` for QoS 0 deliveries (nothing to send).
    order: AckOrder<Option<u16>>,
    /// Released PUBACKs that did not fit in the request channel yet.
    queue: VecDeque<u16>,
}

#[derive(Debug)]
struct Shared {
    /// This run's presence `boot`.
    boot: u64,
    acks: Mutex<AckState>,
    /// PUBACKs received for our publishes (see `Transport::publish_acks`).
    publish_acks: watch::Sender<u64>,
    client: AsyncClient,
    topics: Topics,
    ack_wake: Notify,
    shutdown: AtomicBool,
    shutdown_wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, AckState> {
        self.acks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Completes `token` and pushes whatever it releases towards the wire.
    fn complete(&self, state: &mut AckState, token: AckToken) -> Result<(), AckRefused> {
        let released = state.order.complete(token)?;
        state.queue.extend(released.into_iter().flatten());
        if !self.flush(state) {
            self.ack_wake.notify_one();
        }
        Ok(())
    }

    /// Moves queued PUBACKs into rumqttc's request channel without waiting.
    /// Returns whether the queue is empty afterwards.
    fn flush(&self, state: &mut AckState) -> bool {
        while let Some(pkid) = state.queue.front().copied() {
            let mut publish = Publish::new("", QoS::AtLeastOnce, Vec::new());
            publish.pkid = pkid;
            match self.client.try_ack(&publish) {
                Ok(()) => {
                    state.queue.pop_front();
                }
                // Channel full (retry later) or event loop gone (shutdown): stop here.
                Err(_) => return false,
            }
        }
        true
    }
}

/// The MQTT transport. Dropping it stops its tasks; [`shutdown`](Self::shutdown)
/// does so gracefully (queued publishes are written first).
#[derive(Debug)]
pub struct MqttTransport {
    shared: Arc<Shared>,
    incoming_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Incoming>>,
    link_rx: watch::Receiver<LinkState>,
    event_loop_task: Mutex<Option<JoinHandle<()>>>,
    ack_pump_task: JoinHandle<()>,
}

impl MqttTransport {
    /// Starts the link in the background (needs a tokio runtime). Returns at
    /// once: a device must come up even when the broker is down; watch
    /// [`link`](Self::link) or await [`wait_subscribed`](Self::wait_subscribed).
    pub fn start(config: MqttConfig) -> Result<Self, TransportError> {
        Self::start_with_backoff(
            config.clone(),
            Backoff::new(config.backoff_base, config.backoff_cap),
        )
    }

    /// [`start`](Self::start) with an explicit (e.g. seeded) backoff.
    pub fn start_with_backoff(
        config: MqttConfig,
        backoff: Backoff,
    ) -> Result<Self, TransportError> {
        let topics = Topics::new(&config.prefix, &config.device)?;
        if config.max_inflight == 0 || config.queue_capacity == 0 {
            return Err(TransportError::Config(
                "max_inflight and queue_capacity must be at least 1".into(),
            ));
        }
        let boot = boot_ms(unix_ms());
        let presence = PresenceLink::new(boot, topics.presence());
        let link = LinkOptions {
            client_id: config.effective_client_id(),
            host: config.host.clone(),
            port: config.port,
            clean_session: false,
            credentials: config.credentials.clone(),
            tls: config.tls.clone(),
            keep_alive: config.keep_alive,
            connect_timeout: config.connect_timeout,
            max_inflight: config.max_inflight,
            queue_capacity: config.queue_capacity,
            max_incoming_packet: config.max_incoming_packet,
            max_outgoing_packet: config.max_outgoing_packet,
            last_will: Some(presence.last_will()),
        };
        let mut options = link.mqtt_options()?;
        options.set_manual_acks(true);
        let (client, mut eventloop) = AsyncClient::new(options, config.queue_capacity);
        link.configure(&mut eventloop);

        let shared = Arc::new(Shared {
            boot,
            acks: Mutex::new(AckState::default()),
            publish_acks: watch::channel(0).0,
            client,
            topics,
            ack_wake: Notify::new(),
            shutdown: AtomicBool::new(false),
            shutdown_wake: Notify::new(),
        });
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let (link_tx, link_rx) = watch::channel(LinkState::default());
        let driver = Driver {
            eventloop,
            shared: shared.clone(),
            incoming_tx,
            link_tx,
            backoff,
            resend: Resend::new(config.max_inflight),
            presence,
        };
        let event_loop_task = tokio::spawn(driver.run());
        let ack_pump_task = tokio::spawn(ack_pump(shared.clone()));
        Ok(Self {
            shared,
            incoming_rx: tokio::sync::Mutex::new(incoming_rx),
            link_rx,
            event_loop_task: Mutex::new(Some(event_loop_task)),
            ack_pump_task,
        })
    }

    /// The device's topics.
    pub fn topics(&self) -> &Topics {
        &self.shared.topics
    }

    /// This run's presence `boot`: unix ms when the transport started,
    /// strictly increasing within the process.
    pub fn boot(&self) -> u64 {
        self.shared.boot
    }

    /// A live view of the link.
    pub fn link(&self) -> watch::Receiver<LinkState> {
        self.link_rx.clone()
    }

    /// Waits until the command subscription is granted on a live connection,
    /// at most `timeout`. Returns whether it happened.
    pub async fn wait_subscribed(&self, timeout: Duration) -> bool {
        let mut rx = self.link_rx.clone();
        tokio::time::timeout(timeout, rx.wait_for(|l| l.connected && l.subscribed))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops taking work: sends DISCONNECT after every publish already queued
    /// and every ack already released, then ends the event loop (waiting at
    /// most `deadline` in all). Afterwards
    /// [`recv`](Transport::recv) drains what was delivered and returns `None`.
    pub async fn shutdown(&self, deadline: Duration) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.shutdown_wake.notify_one();
        let handle = self
            .event_loop_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut handle) = handle else { return };
        let graceful = async {
            // Released acks still waiting for room in the request channel go first:
            // DISCONNECT must queue behind every PUBACK (and publish) already due.
            loop {
                let drained = {
                    let mut state = self.shared.lock();
                    self.shared.flush(&mut state)
                };
                if drained || handle.is_finished() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // The DISCONNECT makes the broker discard our will: say offline ourselves.
            let session = u32::try_from(self.link_rx.borrow().connects).unwrap_or(u32::MAX);
            let offline = Presence::offline(self.shared.boot, session, unix_ms());
            let _ = self
                .shared
                .client
                .publish(
                    self.shared.topics.presence(),
                    QoS::AtMostOnce,
                    true,
                    offline.to_msgpack(),
                )
                .await;
            // Queued behind earlier publishes and acks; fails only if the loop is already gone.
            let _ = self.shared.client.disconnect().await;
            let _ = (&mut handle).await;
        };
        if tokio::time::timeout(deadline, graceful).await.is_err() {
            tracing::warn!("mqtt: shutdown deadline passed, stopping the event loop");
            handle.abort();
        }
        self.ack_pump_task.abort();
    }
}

impl Drop for MqttTransport {
    fn drop(&mut self) {
        if let Some(handle) = self
            .event_loop_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            handle.abort();
        }
        self.ack_pump_task.abort();
    }
}

impl Transport for MqttTransport {
    async fn recv(&self) -> Option<Incoming> {
        self.incoming_rx.lock().await.recv().await
    }

    fn ack(&self, token: AckToken) -> Result<(), AckRefused> {
        let mut state = self.shared.lock();
        self.shared.complete(&mut state, token)
    }

    async fn publish(&self, to: Outbound, payload: Vec<u8>) -> Result<(), TransportError> {
        let topic = match &to {
            Outbound::Status => self.shared.topics.status(),
            Outbound::Event(name) => self.shared.topics.event(name)?,
            Outbound::Health => self.shared.topics.health(),
        };
        let retain = to == Outbound::Health;
        self.shared
            .client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|_| TransportError::Closed)
    }

    fn try_publish(&self, to: Outbound, payload: Vec<u8>) -> Result<(), (Outbound, Vec<u8>)> {
        let topic = match &to {
            Outbound::Status => self.shared.topics.status(),
            Outbound::Event(name) => match self.shared.topics.event(name) {
                Ok(topic) => topic,
                Err(_) => return Err((to, payload)),
            },
            Outbound::Health => self.shared.topics.health(),
        };
        let retain = to == Outbound::Health;
        match self
            .shared
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => Ok(()),
            Err(
                rumqttc::ClientError::TryRequest(Request::Publish(publish))
                | rumqttc::ClientError::Request(Request::Publish(publish)),
            ) => Err((to, publish.payload.to_vec())),
            Err(other) => unreachable!("try_publish gave back a non-publish: {other:?}"),
        }
    }

    fn publish_acks(&self) -> watch::Receiver<u64> {
        self.shared.publish_acks.subscribe()
    }
}

/// Retries PUBACKs that did not fit in the request channel. Sleeps on a
/// `Notify` while there is nothing to retry.
async fn ack_pump(shared: Arc<Shared>) {
    loop {
        let idle = {
            let mut state = shared.lock();
            shared.flush(&mut state)
        };
        if idle {
            shared.ack_wake.notified().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

mod driver;
use driver::Driver;
