//! The client's connection task: the one owner of the rumqttc event loop.
//! It routes statuses and events to whoever waits for them, counts PUBACKs,
//! and reconnects, resubscribes and resends (with [`Resend`] and
//! [`Backoff`], shared with the device).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use relay_core::status::Status;
use rumqttc::{
    ConnectionError, Event, EventLoop, Outgoing, Packet, QoS, Request, Subscribe, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::link::Resend;
use crate::{Backoff, DeviceMessage};

/// Reconnect backoff of an app: quick, since a person may be waiting.
pub(crate) const RECONNECT_BASE: Duration = Duration::from_millis(100);
pub(crate) const RECONNECT_CAP: Duration = Duration::from_secs(3);

/// Outgoing publishes awaiting the broker's PUBACK (rumqttc's default).
pub(crate) const MAX_INFLIGHT: u16 = 100;

#[derive(Debug)]
pub(crate) struct Tracked {
    pub(crate) device: String,
    pub(crate) statuses: VecDeque<Status>,
}

/// Where a watched device's messages go.
#[derive(Debug)]
pub(crate) enum Watcher {
    /// Statuses, events and undecodable messages.
    All(mpsc::UnboundedSender<DeviceMessage>),
    /// Decoded statuses only.
    Statuses(mpsc::UnboundedSender<Status>),
}

impl Watcher {
    /// Delivers `message` if this watcher wants it; false once the receiver is gone.
    pub(crate) fn deliver(&self, message: &DeviceMessage) -> bool {
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
pub(crate) struct State {
    pub(crate) tracked: HashMap<String, Tracked>,
    pub(crate) watchers: Vec<(String, Watcher)>,
    /// Filters to restore after a reconnect (clean session).
    pub(crate) filters: HashSet<String>,
    /// The one SUBSCRIBE in flight (subscribes are serialized).
    pub(crate) suback: Option<oneshot::Sender<bool>>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) prefix: String,
    pub(crate) state: Mutex<State>,
    /// Wakes `wait`ers (new status) and `send`ers (new PUBACK).
    pub(crate) changed: Notify,
    /// PUBACKs received so far.
    pub(crate) pubacks: AtomicU64,
    pub(crate) closed: AtomicBool,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn describe_connection_error(error: &ConnectionError) -> String {
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
pub(crate) async fn drive(
    mut eventloop: EventLoop,
    shared: Arc<Shared>,
    connected: watch::Sender<bool>,
) {
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
