//! The device's link to the outside world: commands in, statuses and events out.
//!
//! This is step 0 of a command's data path: a command arrives here as an MQTT
//! publish, goes up to the runtime as an [`Incoming`], and is acked (PUBACK)
//! only when the runtime hands its [`AckToken`] back after journaling it. The
//! runtime talks to the network only through the [`Transport`] trait, so its
//! tests run against [`FakeTransport`] (channels, no sockets) and production
//! against [`MqttTransport`] (rumqttc).
//!
//! # Layout
//! - [`topics`], [`tls`], [`backoff`]: shared with the app side (`relay-client`).
//! - [`ack_order`]: PUBACKs in arrival order, never on a newer connection.
//! - [`mqtt`]: the rumqttc transport (event loop task, reconnects, resubscribes).
//! - [`presence`]: the device's online presence and last will on that link.
//! - [`fake`]: the in-memory transport for runtime tests.

use std::future::Future;

use relay_core::plugin::Role;

pub mod ack_order;
pub mod fake;
pub mod mqtt;
pub mod presence;

/// Shared with the app side (`relay-client`): the same topics, TLS files and
/// reconnect backoff on both ends of the link.
pub use relay_client::{backoff, tls, topics};

pub use ack_order::{AckRefused, AckToken};
pub use backoff::Backoff;
pub use fake::{FakeRemote, FakeTransport};
pub use mqtt::{LinkState, MqttConfig, MqttTransport};
pub use tls::{TlsError, TlsFiles};
pub use topics::{TopicError, Topics};

/// One command delivery, as received. Hand `token` back to
/// [`Transport::ack`] once the command is durable (or once a rejection for it
/// is durable): until then the broker keeps it and redelivers it after a
/// reconnect.
#[derive(Debug)]
pub struct Incoming {
    /// The full topic it arrived on.
    pub topic: String,
    /// The role from the topic's last level; `Err(level)` when that level is
    /// not a role (answer with a `rejected` status, then ack).
    pub role: Result<Role, String>,
    /// The raw envelope bytes (msgpack), not yet validated.
    pub payload: Vec<u8>,
    /// The broker flagged this as a redelivery (MQTT DUP). Informational only:
    /// dedupe is by command id in the journal.
    pub redelivered: bool,
    /// Ack handle; see [`Transport::ack`].
    pub token: AckToken,
}

/// Where an outgoing message goes, relative to the device's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// `<prefix>/<device>/status`
    Status,
    /// `<prefix>/<device>/event/<name>` (`name` follows the seed naming rule)
    Event(String),
    /// `<prefix>/<device>/health`, retained (the broker keeps the last one
    /// for every new subscriber).
    Health,
}

/// Errors at the transport boundary.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("the transport is shut down")]
    Closed,
    #[error("invalid transport configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The seam between the runtime and the network.
///
/// All methods take `&self` so one transport (behind an `Arc`) can be shared
/// by the runtime's receive loop, its journal task (acks) and its status
/// publisher. Implementations never block in `ack`.
pub trait Transport: Send + Sync + 'static {
    /// The next command delivery; `None` once the transport is shut down.
    /// Cancel-safe: dropping the future loses nothing.
    fn recv(&self) -> impl Future<Output = Option<Incoming>> + Send;

    /// The message behind `token` is durable: let its PUBACK go, after those of
    /// every earlier arrival on the same connection. Tokens from a connection
    /// that has since dropped are refused ([`AckRefused::Stale`]); the broker
    /// redelivers those messages. Non-blocking.
    fn ack(&self, token: AckToken) -> Result<(), AckRefused>;

    /// Publishes a status or event at QoS 1. Resolves once the message is
    /// queued for the connection (not when the broker acked it); while the
    /// link is down messages queue up, and when the queue is full this waits.
    /// Queued and in-flight messages survive reconnects, including a broker
    /// that lost our session.
    fn publish(
        &self,
        to: Outbound,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// [`publish`](Self::publish) without waiting, in the same order: `Err`
    /// hands the message back when it cannot be queued right now (queue
    /// full, link closed, or a transport without the feature; the default).
    /// The runtime's driver publishes this way when nothing is queued ahead,
    /// to skip a hand-off to its publisher task.
    fn try_publish(&self, to: Outbound, payload: Vec<u8>) -> Result<(), (Outbound, Vec<u8>)> {
        Err((to, payload))
    }

    /// How many of this transport's publishes the broker has acknowledged
    /// (PUBACK) so far. They are acknowledged in [`publish`](Self::publish)
    /// call order: MQTT requires a broker to send PUBACKs in the order it
    /// received the PUBLISHes (3.1.1 section 4.6), and the transport sends in
    /// call order, also when it re-sends after a reconnect. So a count of n
    /// means the first n publishes reached the broker. The runtime uses it to
    /// journal which final statuses were delivered (`Record::Delivered`).
    fn publish_acks(&self) -> tokio::sync::watch::Receiver<u64>;
}
