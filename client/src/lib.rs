//! The app side: a small Rust library to send commands to devices and follow
//! their statuses, used by `relay send` / `relay watch` and by tests.
//!
//! Not on the device's data path, but its mirror image: it builds the command
//! envelope with [`relay_core::envelope::Envelope`] (so an app can never send
//! what the device's decoder would refuse for a reason known up front),
//! publishes it at QoS 1 to `<prefix>/<device>/cmd/<role>`, and decodes the
//! device's `status` messages with [`relay_core::status::Status`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), relay_client::ClientError> {
//! use std::time::Duration;
//! use relay_client::{Client, ClientOptions, CommandRequest};
//!
//! let client = Client::connect(ClientOptions::new("127.0.0.1", 1883)).await?;
//! let id = client.send("dev-1", CommandRequest::new("echo").json(serde_json::json!({"hi": 1}))).await?;
//! let transitions = client.wait(&id, Duration::from_secs(30)).await?;
//! println!("{id}: {}", transitions.last().map_or("?", |s| s.status.as_str()));
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! # Choices
//! - A clean session with a random client id: an app is not a device, and a
//!   persistent session per CLI invocation would pile up on the broker. A
//!   status published while this client is reconnecting is therefore missed;
//!   [`Client::wait`] then times out rather than guessing.
//! - [`Client::send`] subscribes to the device's statuses (and waits for the
//!   SUBACK) *before* publishing, so no transition can be missed, and returns
//!   once the broker acknowledged the command (PUBACK).
//! - TCP_NODELAY on the socket (see the transport's notes on Nagle stalls).

pub mod backoff;
pub mod json;
pub mod link;
pub mod tls;
pub mod topics;

pub use backoff::Backoff;
pub use tls::{TlsError, TlsFiles};
pub use topics::{TopicError, Topics};

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relay_core::envelope::{validate_id, Envelope, EnvelopeLimits, Kind};
use relay_core::name::validate_name;
use relay_core::plugin::Role;
use relay_core::status::Status;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, QoS, Request, Subscribe,
    SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::link::{LinkOptions, Resend};
use crate::topics::{validate_prefix, DEFAULT_PREFIX};

/// Reconnect backoff of an app: quick, since a person may be waiting.
const RECONNECT_BASE: Duration = Duration::from_millis(100);
const RECONNECT_CAP: Duration = Duration::from_secs(3);

/// Outgoing publishes awaiting the broker's PUBACK (rumqttc's default).
const MAX_INFLIGHT: u16 = 100;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub host: String,
    pub port: u16,
    /// Default: `relay-app-<random>`.
    pub client_id: Option<String>,
    /// Topic prefix, default `relay`; must match the devices'.
    pub prefix: String,
    pub credentials: Option<(String, String)>,
    /// TLS (CA, client identity); `None`: plain TCP.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Limit for the first connection (TCP + CONNACK).
    pub connect_timeout: Duration,
    /// Limit for the broker's SUBACK / PUBACK.
    pub ack_timeout: Duration,
    pub keep_alive: Duration,
}

impl ClientOptions {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            client_id: None,
            prefix: DEFAULT_PREFIX.into(),
            credentials: None,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(30),
        }
    }
}

/// The command's payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Payload {
    #[default]
    None,
    /// Encoded to msgpack before sending.
    Json(serde_json::Value),
    /// Exactly one encoded msgpack value.
    Msgpack(Vec<u8>),
}

/// One command to send. Build with [`CommandRequest::new`] and the builder methods.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRequest {
    pub name: String,
    pub payload: Payload,
    /// The topic level the command is published under (the broker's ACL decides who may).
    pub role: Role,
    /// Request/response: never retried by the device.
    pub rpc: bool,
    /// Sets `expires_at = now + ttl`.
    pub ttl: Option<Duration>,
    /// Default: a fresh unique id.
    pub id: Option<String>,
}

impl CommandRequest {
    /// A command with no payload, role `admin`, no expiry.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            payload: Payload::None,
            role: Role::Admin,
            rpc: false,
            ttl: None,
            id: None,
        }
    }

    pub fn json(mut self, value: serde_json::Value) -> Self {
        self.payload = Payload::Json(value);
        self
    }

    pub fn msgpack(mut self, bytes: Vec<u8>) -> Self {
        self.payload = Payload::Msgpack(bytes);
        self
    }

    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    pub fn rpc(mut self, rpc: bool) -> Self {
        self.rpc = rpc;
        self
    }

    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// Something a watched device published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceMessage {
    Status {
        device: String,
        status: Status,
    },
    Event {
        device: String,
        name: String,
        payload: Vec<u8>,
    },
    /// A status that did not decode (a device speaking another version?).
    Undecodable {
        topic: String,
        error: String,
    },
}

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the MQTT broker at {host}:{port}: {reason}")]
    Unreachable {
        host: String,
        port: u16,
        reason: String,
    },
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("invalid command name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    #[error("id {0:?} is already waiting for statuses from another device")]
    DuplicateId(String),
    #[error("the broker refused the subscription to {0}")]
    SubscribeRefused(String),
    #[error("the broker did not acknowledge {what} within {waited:?}")]
    NoAck { what: String, waited: Duration },
    #[error("no final status for {id} within {waited:?}")]
    Timeout { id: String, waited: Duration },
    #[error("{0:?} was not sent by this client, or its final status was already taken")]
    NotTracked(String),
    #[error("the connection to the broker is closed")]
    Closed,
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

#[derive(Debug)]
struct Tracked {
    device: String,
    statuses: VecDeque<Status>,
}

/// Where a watched device's messages go.
#[derive(Debug)]
enum Watcher {
    /// Statuses, events and undecodable messages.
    All(mpsc::UnboundedSender<DeviceMessage>),
    /// Decoded statuses only.
    Statuses(mpsc::UnboundedSender<Status>),
}

impl Watcher {
    /// Delivers `message` if this watcher wants it; false once the receiver is gone.
    fn deliver(&self, message: &DeviceMessage) -> bool {
        match (self, message) {
            (Watcher::All(tx), m) => tx.send(m.clone()).is_ok(),
            (Watcher::Statuses(tx), DeviceMessage::Status { status, .. }) => {
                tx.send(status.clone()).is_ok()
            }
            (Watcher::Statuses(tx), _) => !tx.is_closed(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    tracked: HashMap<String, Tracked>,
    watchers: Vec<(String, Watcher)>,
    /// Filters to restore after a reconnect (clean session).
    filters: HashSet<String>,
    /// The one SUBSCRIBE in flight (subscribes are serialized).
    suback: Option<oneshot::Sender<bool>>,
}

#[derive(Debug)]
struct Shared {
    prefix: String,
    state: Mutex<State>,
    /// Wakes `wait`ers (new status) and `send`ers (new PUBACK).
    changed: Notify,
    /// PUBACKs received so far.
    pubacks: AtomicU64,
    closed: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection to the broker, as an app.
#[derive(Debug)]
pub struct Client {
    client: AsyncClient,
    shared: Arc<Shared>,
    options: ClientOptions,
    /// Serializes SUBSCRIBEs (one SUBACK outstanding) and publishes (PUBACK counting).
    subscribe_lock: tokio::sync::Mutex<()>,
    publish_lock: tokio::sync::Mutex<u64>,
    task: Option<JoinHandle<()>>,
    connected: watch::Receiver<bool>,
}

impl Client {
    /// Connects, waiting at most `options.connect_timeout` for the CONNACK.
    pub async fn connect(options: ClientOptions) -> Result<Client, ClientError> {
        validate_prefix(&options.prefix)?;
        let client_id = options
            .client_id
            .clone()
            .unwrap_or_else(|| format!("relay-app-{:016x}", rand::random::<u64>()));
        let link = LinkOptions {
            client_id,
            host: options.host.clone(),
            port: options.port,
            clean_session: true,
            credentials: options.credentials.clone(),
            tls: options.tls.clone(),
            keep_alive: options.keep_alive,
            connect_timeout: options.connect_timeout,
            max_inflight: MAX_INFLIGHT,
            queue_capacity: 256,
            max_incoming_packet: 16 * 1024 * 1024,
            max_outgoing_packet: 16 * 1024 * 1024,
        };
        let (client, mut eventloop) = AsyncClient::new(link.mqtt_options()?, 256);
        link.configure(&mut eventloop);

        let unreachable = |reason: String| ClientError::Unreachable {
            host: options.host.clone(),
            port: options.port,
            reason,
        };
        let first = tokio::time::timeout(options.connect_timeout, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => continue,
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        match first {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(unreachable(describe_connection_error(&e))),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {:?}",
                    options.connect_timeout
                )))
            }
        }

        let shared = Arc::new(Shared {
            prefix: options.prefix.clone(),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            pubacks: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let (connected_tx, connected) = watch::channel(true);
        let task = tokio::spawn(drive(eventloop, shared.clone(), connected_tx));
        Ok(Client {
            client,
            shared,
            options,
            subscribe_lock: tokio::sync::Mutex::new(()),
            publish_lock: tokio::sync::Mutex::new(0),
            task: Some(task),
            connected,
        })
    }

    /// Whether the link is currently up.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Sends a command; returns its id once the broker acknowledged it. Its
    /// statuses are collected for [`wait`](Self::wait) / [`next_status`](Self::next_status).
    pub async fn send(&self, device: &str, request: CommandRequest) -> Result<String, ClientError> {
        let topics = Topics::new(&self.shared.prefix, device)?;
        let envelope = build_envelope(&request, unix_ms())?;
        let id = envelope.id.clone();
        self.subscribe_device(&topics).await?;
        {
            let mut state = self.shared.lock();
            match state.tracked.get(&id) {
                Some(t) if t.device != device => return Err(ClientError::DuplicateId(id)),
                Some(_) => {}
                None => {
                    state.tracked.insert(
                        id.clone(),
                        Tracked {
                            device: device.into(),
                            statuses: VecDeque::new(),
                        },
                    );
                }
            }
        }
        let topic = topics.command(request.role);
        // The lock only orders "enqueue + count"; waiting for the PUBACK happens
        // outside it, so concurrent sends pipeline.
        let mine = {
            let mut published = self.publish_lock.lock().await;
            self.client
                .publish(
                    topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    envelope.to_msgpack(),
                )
                .await
                .map_err(|_| ClientError::Closed)?;
            *published += 1;
            *published
        };
        // Brokers PUBACK QoS 1 publishes in order, so the n-th PUBACK is ours.
        let acked = self
            .wait_until(self.options.ack_timeout, || {
                self.shared.pubacks.load(Ordering::SeqCst) >= mine
            })
            .await;
        if !acked {
            return Err(ClientError::NoAck {
                what: format!("command {id} on {topic}"),
                waited: self.options.ack_timeout,
            });
        }
        Ok(id)
    }

    /// The next status of a command this client sent, waiting at most `timeout`.
    pub async fn next_status(&self, id: &str, timeout: Duration) -> Result<Status, ClientError> {
        let mut found = None;
        let arrived = self
            .wait_until(timeout, || {
                let mut state = self.shared.lock();
                match state.tracked.get_mut(id) {
                    Some(t) => {
                        found = t.statuses.pop_front().map(Ok);
                        found.is_some()
                    }
                    None => {
                        found = Some(Err(ClientError::NotTracked(id.into())));
                        true
                    }
                }
            })
            .await;
        match found {
            Some(Ok(status)) => {
                if status.is_final() {
                    self.shared.lock().tracked.remove(id);
                }
                Ok(status)
            }
            Some(Err(e)) => Err(e),
            None if !arrived && self.shared.closed.load(Ordering::SeqCst) => {
                Err(ClientError::Closed)
            }
            None => Err(ClientError::Timeout {
                id: id.into(),
                waited: timeout,
            }),
        }
    }

    /// Every transition of a command this client sent, up to and including its
    /// final status (the last element), waiting at most `timeout` in all.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Vec<Status>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut transitions = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let status = match self.next_status(id, left).await {
                Ok(s) => s,
                Err(ClientError::Timeout { .. }) => {
                    return Err(ClientError::Timeout {
                        id: id.into(),
                        waited: timeout,
                    })
                }
                Err(e) => return Err(e),
            };
            let done = status.is_final();
            transitions.push(status);
            if done {
                return Ok(transitions);
            }
        }
    }

    /// Stops collecting statuses for `id`.
    pub fn forget(&self, id: &str) {
        self.shared.lock().tracked.remove(id);
    }

    /// Streams every status and event `device` publishes from now on. The
    /// stream ends when the client closes.
    pub async fn watch(
        &self,
        device: &str,
    ) -> Result<mpsc::UnboundedReceiver<DeviceMessage>, ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.add_watcher(device, Watcher::All(tx)).await?;
        Ok(rx)
    }

    /// Streams every status `device` publishes from now on (any command, sent
    /// by anyone). The stream ends when the client closes.
    pub async fn statuses(
        &self,
        device: &str,
    ) -> Result<mpsc::UnboundedReceiver<Status>, ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.add_watcher(device, Watcher::Statuses(tx)).await?;
        Ok(rx)
    }

    async fn add_watcher(&self, device: &str, watcher: Watcher) -> Result<(), ClientError> {
        let topics = Topics::new(&self.shared.prefix, device)?;
        self.shared.lock().watchers.push((device.into(), watcher));
        self.subscribe_device(&topics).await
    }

    /// Sends DISCONNECT after everything queued and stops the connection task
    /// (waiting at most the ack timeout).
    pub async fn close(mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let _ = self.client.disconnect().await;
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(self.options.ack_timeout, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    async fn subscribe_device(&self, topics: &Topics) -> Result<(), ClientError> {
        let filters = [topics.status(), topics.event_filter()];
        let _one_at_a_time = self.subscribe_lock.lock().await;
        if filters
            .iter()
            .all(|f| self.shared.lock().filters.contains(f))
        {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.shared.lock().suback = Some(tx);
        let request = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        self.client
            .subscribe_many(request)
            .await
            .map_err(|_| ClientError::Closed)?;
        match tokio::time::timeout(self.options.ack_timeout, rx).await {
            Ok(Ok(true)) => {
                self.shared.lock().filters.extend(filters);
                Ok(())
            }
            Ok(Ok(false)) => Err(ClientError::SubscribeRefused(filters.join(", "))),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::NoAck {
                what: format!("the subscription to {}", filters.join(", ")),
                waited: self.options.ack_timeout,
            }),
        }
    }

    /// Re-evaluates `ready` on every change until it holds or `limit` passes.
    async fn wait_until(&self, limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if ready() {
                return true;
            }
            if self.shared.closed.load(Ordering::SeqCst)
                && self.task.as_ref().is_none_or(|t| t.is_finished())
            {
                return false;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return ready();
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Builds and checks the envelope exactly as the device will decode it.
pub fn build_envelope(request: &CommandRequest, now_ms: u64) -> Result<Envelope, ClientError> {
    validate_name(&request.name).map_err(|e| ClientError::InvalidName {
        name: request.name.clone(),
        reason: e.to_string(),
    })?;
    let id = request.id.clone().unwrap_or_else(|| new_request_id(now_ms));
    validate_id(&id).map_err(|e| ClientError::InvalidCommand(format!("id {id:?}: {e}")))?;
    let payload = match &request.payload {
        Payload::None => Vec::new(),
        Payload::Json(value) => json::json_to_msgpack(value)
            .map_err(|e| ClientError::InvalidCommand(format!("payload: {e}")))?,
        Payload::Msgpack(bytes) => bytes.clone(),
    };
    let kind = if request.rpc {
        Kind::Rpc
    } else {
        Kind::Command
    };
    let mut envelope = Envelope::new(id, request.name.clone(), now_ms)
        .with_payload(payload)
        .with_kind(kind);
    if let Some(ttl) = request.ttl {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        envelope = envelope.with_expires_at(now_ms.saturating_add(ttl_ms));
    }
    envelope
        .check(&EnvelopeLimits::default())
        .map_err(|e| ClientError::InvalidCommand(e.to_string()))?;
    Ok(envelope)
}

/// A fresh request id: unix ms (hex, so ids sort by time) and 64 random bits.
pub fn new_request_id(now_ms: u64) -> String {
    format!("{now_ms:011x}-{:016x}", rand::random::<u64>())
}

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn describe_connection_error(error: &ConnectionError) -> String {
    match error {
        ConnectionError::Io(e) => e.to_string(),
        // Mosquitto answers NotAuthorized to a wrong password, an unknown
        // user and a missing login alike (MQTT 3.1.1 return code 5).
        ConnectionError::ConnectionRefused(
            code @ (rumqttc::ConnectReturnCode::BadUserNamePassword
            | rumqttc::ConnectReturnCode::NotAuthorized),
        ) => format!(
            "the broker refused the user name or password ({code:?}): check the user and \
             its password, or whether this user may connect at all"
        ),
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection ({code:?})")
        }
        ConnectionError::NetworkTimeout => "connection timed out".into(),
        other => other.to_string(),
    }
}

/// The connection task: routes statuses and events, counts PUBACKs,
/// resubscribes after a reconnect. Never awaits the request channel.
///
/// Publishes of a dead connection are sent again after the next CONNACK
/// ([`Resend`], shared with the device), so every publish eventually gets
/// exactly one PUBACK and the count in [`Client::send`] stays exact (the
/// device dedupes a resent command by id). Subscribes in flight are sent
/// again too (their [`Client::send`] waits for the SUBACK).
async fn drive(mut eventloop: EventLoop, shared: Arc<Shared>, connected: watch::Sender<bool>) {
    let mut backoff = Backoff::new(RECONNECT_BASE, RECONNECT_CAP);
    let mut resend = Resend::new(MAX_INFLIGHT);
    // Subscribes of a dead connection, sent again after the next CONNACK.
    let mut saved: Vec<Request> = Vec::new();
    // After our DISCONNECT, read until the broker closes: closing first with
    // unread data would send a TCP RST that can make the broker drop what we sent last.
    let mut disconnect_sent = false;
    loop {
        match eventloop.poll().await {
            Err(_) if disconnect_sent => break,
            Ok(_) if disconnect_sent => {}
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                route(&shared, &publish.topic, publish.payload.to_vec())
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                resend.on_puback(&mut eventloop, ack.pkid);
                shared.pubacks.fetch_add(1, Ordering::SeqCst);
                shared.changed.notify_waiters();
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => resend.on_outgoing_publish(pkid),
            Ok(Event::Incoming(Packet::SubAck(suback))) => {
                let granted = suback
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                if let Some(tx) = shared.lock().suback.take() {
                    let _ = tx.send(granted);
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                let _ = connected.send(true);
                let filters: Vec<_> = shared
                    .lock()
                    .filters
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
                    .collect();
                let resubscribe =
                    (!filters.is_empty()).then(|| Request::Subscribe(Subscribe::new_many(filters)));
                resend.on_connack(
                    &mut eventloop,
                    resubscribe.into_iter().chain(saved.drain(..)),
                );
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => disconnect_sent = true,
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => break,
            Err(error) => {
                let _ = connected.send(false);
                if shared.closed.load(Ordering::SeqCst) {
                    break;
                }
                eventloop.state.events.clear();
                saved.extend(resend.on_connection_lost(&mut eventloop));
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "relay client: connection lost");
                tokio::time::sleep(delay).await;
            }
        }
    }
    shared.closed.store(true, Ordering::SeqCst);
    let _ = connected.send(false);
    let mut state = shared.lock();
    state.watchers.clear();
    state.suback = None;
    drop(state);
    shared.changed.notify_waiters();
}

/// Dispatches one message from `<prefix>/<device>/status` or `.../event/<name>`.
fn route(shared: &Shared, topic: &str, payload: Vec<u8>) {
    let Some(rest) = topic
        .strip_prefix(shared.prefix.as_str())
        .and_then(|r| r.strip_prefix('/'))
    else {
        return;
    };
    let Some((device, kind)) = rest.split_once('/') else {
        return;
    };
    let message = if kind == "status" {
        match Status::from_msgpack(&payload) {
            Ok(status) => DeviceMessage::Status {
                device: device.into(),
                status,
            },
            Err(e) => DeviceMessage::Undecodable {
                topic: topic.into(),
                error: e.to_string(),
            },
        }
    } else if let Some(name) = kind.strip_prefix("event/") {
        DeviceMessage::Event {
            device: device.into(),
            name: name.into(),
            payload,
        }
    } else {
        return;
    };
    let mut state = shared.lock();
    if let DeviceMessage::Status { device, status } = &message {
        if let Some(tracked) = state
            .tracked
            .get_mut(&status.id)
            .filter(|t| &t.device == device)
        {
            tracked.statuses.push_back(status.clone());
        }
    }
    state.watchers.retain(|(watched, tx)| {
        let mine = match &message {
            DeviceMessage::Status { device, .. } | DeviceMessage::Event { device, .. } => {
                device == watched
            }
            DeviceMessage::Undecodable { topic, .. } => {
                topic.starts_with(&format!("{}/{watched}/", shared.prefix))
            }
        };
        !mine || tx.deliver(&message)
    });
    drop(state);
    shared.changed.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_checked_before_sending() {
        let ok = build_envelope(
            &CommandRequest::new("echo")
                .json(serde_json::json!({"a": 1}))
                .ttl(Duration::from_secs(30)),
            1_000,
        )
        .unwrap();
        assert_eq!(ok.expires_at, Some(31_000));
        assert_eq!(ok.kind, Kind::Command);
        assert!(matches!(
            build_envelope(&CommandRequest::new("bad name"), 0),
            Err(ClientError::InvalidName { .. })
        ));
        assert!(matches!(
            build_envelope(&CommandRequest::new("x").id("has space"), 0),
            Err(ClientError::InvalidCommand(_))
        ));
        let rpc = build_envelope(&CommandRequest::new("x").rpc(true).id("fixed"), 5).unwrap();
        assert_eq!((rpc.kind, rpc.id.as_str()), (Kind::Rpc, "fixed"));
        let decoded = Envelope::from_msgpack(&rpc.to_msgpack()).unwrap();
        assert_eq!(decoded, rpc);
    }

    #[test]
    fn request_ids_are_unique_and_valid() {
        let ids: HashSet<_> = (0..1000).map(|_| new_request_id(unix_ms())).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| validate_id(id).is_ok()));
    }
}
