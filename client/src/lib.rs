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
mod connection;
pub mod hub;
pub mod json;
pub mod link;
mod request;
pub mod tls;
pub use relay_core::topics;

pub use request::{
    build_envelope, new_request_id, unix_ms, ClientOptions, CommandRequest, Payload,
};

pub use backoff::Backoff;
pub use tls::{TlsError, TlsFiles};
pub use topics::{TopicError, Topics};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay_core::status::Status;
use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeFilter};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::connection::{
    describe_connection_error, drive, Shared, State, Tracked, Watcher, MAX_INFLIGHT,
};
use crate::link::LinkOptions;
use crate::topics::validate_prefix;

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
    #[error("{host}:{port}: {reason}")]
    Refused {
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
            last_will: None,
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
            Ok(Err(e @ rumqttc::ConnectionError::ConnectionRefused(_))) => {
                return Err(ClientError::Refused {
                    host: options.host.clone(),
                    port: options.port,
                    reason: describe_connection_error(&e),
                })
            }
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
