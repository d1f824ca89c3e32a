//! An in-memory [`Transport`] for runtime tests: no broker, no sockets.
//!
//! [`FakeTransport`] is what the runtime holds; [`FakeRemote`] is the test's
//! side of the wire, playing the broker: it injects commands, observes which
//! PUBACKs left (in which order) and what was published, and can simulate a
//! reconnect, after which every unacked message is redelivered (as a broker
//! keeping a persistent session does) and tokens of the old connection are
//! stale. Ack ordering goes through the same [`AckOrder`] as the MQTT
//! transport, so the runtime sees identical semantics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use relay_core::plugin::Role;
use tokio::sync::{mpsc, watch};

use super::ack_order::AckOrder;
use super::topics::{CommandTopic, Topics, DEFAULT_PREFIX};
use super::{AckRefused, AckToken, Incoming, Outbound, Transport, TransportError};

/// A message the runtime published through the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub to: Outbound,
    pub topic: String,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct State {
    topics: Topics,
    order: AckOrder<u64>,
    next_msg: u64,
    /// Delivered but not acked, by message id (= arrival order): redelivered on reconnect.
    unacked: BTreeMap<u64, (String, Vec<u8>)>,
    /// Message ids in the order their PUBACKs "left".
    acked: Vec<u64>,
    published: Vec<Published>,
    incoming_tx: Option<mpsc::UnboundedSender<Incoming>>,
    published_tx: Option<mpsc::UnboundedSender<Published>>,
    /// PUBACKs of the runtime's publishes "received" so far.
    publish_acks: watch::Sender<u64>,
    /// While true, publishes stay unacknowledged (a broker that went quiet).
    hold_publish_acks: bool,
}

#[derive(Debug)]
struct Shared(Mutex<State>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a test failure anyway; keep going with the data.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The runtime's end: implements [`Transport`].
#[derive(Debug)]
pub struct FakeTransport {
    shared: Arc<Shared>,
    incoming_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Incoming>>,
}

/// The test's end, playing the broker and the apps.
#[derive(Debug, Clone)]
pub struct FakeRemote {
    shared: Arc<Shared>,
    published_rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Published>>>,
}

impl FakeTransport {
    /// A connected pair for `device` under the default prefix.
    pub fn new(device: &str) -> Result<(FakeTransport, FakeRemote), TransportError> {
        Ok(Self::with_topics(Topics::new(DEFAULT_PREFIX, device)?))
    }

    /// A connected pair with explicit topics.
    pub fn with_topics(topics: Topics) -> (FakeTransport, FakeRemote) {
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let (published_tx, published_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared(Mutex::new(State {
            topics,
            order: AckOrder::new(),
            next_msg: 0,
            unacked: BTreeMap::new(),
            acked: Vec::new(),
            published: Vec::new(),
            incoming_tx: Some(incoming_tx),
            published_tx: Some(published_tx),
            publish_acks: watch::channel(0).0,
            hold_publish_acks: false,
        })));
        let transport = FakeTransport {
            shared: shared.clone(),
            incoming_rx: tokio::sync::Mutex::new(incoming_rx),
        };
        let remote = FakeRemote {
            shared,
            published_rx: Arc::new(tokio::sync::Mutex::new(published_rx)),
        };
        (transport, remote)
    }
}

impl FakeTransport {
    /// Records a publish (both `publish` and `try_publish`).
    fn publish_now(&self, to: Outbound, payload: Vec<u8>) -> Result<(), TransportError> {
        let mut state = self.shared.lock();
        let topic = match &to {
            Outbound::Status => state.topics.status(),
            Outbound::Event(name) => state.topics.event(name)?,
            Outbound::Health => state.topics.health(),
        };
        let message = Published { to, topic, payload };
        let tx = state.published_tx.as_ref().ok_or(TransportError::Closed)?;
        // The remote may have dropped its receiver; the log below still records the message.
        let _ = tx.send(message.clone());
        state.published.push(message);
        if !state.hold_publish_acks {
            let n = state.published.len() as u64;
            state.publish_acks.send_replace(n);
        }
        Ok(())
    }
}

impl Transport for FakeTransport {
    async fn recv(&self) -> Option<Incoming> {
        self.incoming_rx.lock().await.recv().await
    }

    fn ack(&self, token: AckToken) -> Result<(), AckRefused> {
        let mut state = self.shared.lock();
        let released = state.order.complete(token)?;
        for id in released {
            state.unacked.remove(&id);
            state.acked.push(id);
        }
        Ok(())
    }

    async fn publish(&self, to: Outbound, payload: Vec<u8>) -> Result<(), TransportError> {
        self.publish_now(to, payload)
    }

    fn try_publish(&self, to: Outbound, payload: Vec<u8>) -> Result<(), (Outbound, Vec<u8>)> {
        // Topic errors are left to `publish`, which reports them.
        let valid = match &to {
            Outbound::Status | Outbound::Health => true,
            Outbound::Event(name) => self.shared.lock().topics.event(name).is_ok(),
        };
        if !valid {
            return Err((to, payload));
        }
        self.publish_now(to.clone(), payload.clone())
            .map_err(|_| (to, payload))
    }

    fn publish_acks(&self) -> watch::Receiver<u64> {
        self.shared.lock().publish_acks.subscribe()
    }
}

impl FakeRemote {
    /// An app publishes `payload` on `cmd/<role>`. Returns the message id
    /// (arrival order), as used by [`acked`](Self::acked).
    pub fn send_command(&self, role: Role, payload: impl Into<Vec<u8>>) -> u64 {
        let topic = self.shared.lock().topics.command(role);
        self.send_on(&topic, payload.into())
    }

    /// An app publishes on `cmd/<level>` with an arbitrary last level (e.g. a bad role).
    pub fn send_raw(&self, level: &str, payload: impl Into<Vec<u8>>) -> u64 {
        let topic = format!("{}/{}/cmd/{level}", self.prefix(), self.device());
        self.send_on(&topic, payload.into())
    }

    fn send_on(&self, topic: &str, payload: Vec<u8>) -> u64 {
        let mut state = self.shared.lock();
        let id = state.next_msg;
        state.next_msg += 1;
        state
            .unacked
            .insert(id, (topic.to_string(), payload.clone()));
        deliver(&mut state, id, topic, payload, false);
        id
    }

    /// Simulates a dropped and resumed connection with a persistent session:
    /// every unacked message is delivered again (DUP set), in arrival order,
    /// under a new epoch; tokens handed out before are now stale.
    pub fn reconnect(&self) {
        let mut state = self.shared.lock();
        state.order.new_connection();
        let redeliver: Vec<_> = state
            .unacked
            .iter()
            .map(|(id, (t, p))| (*id, t.clone(), p.clone()))
            .collect();
        for (id, topic, payload) in redeliver {
            deliver(&mut state, id, &topic, payload, true);
        }
    }

    /// Message ids whose PUBACK left, in the order they left.
    pub fn acked(&self) -> Vec<u64> {
        self.shared.lock().acked.clone()
    }

    /// Message ids delivered and not yet acked, oldest first.
    pub fn unacked(&self) -> Vec<u64> {
        self.shared.lock().unacked.keys().copied().collect()
    }

    /// Everything published so far, in order.
    pub fn published(&self) -> Vec<Published> {
        self.shared.lock().published.clone()
    }

    /// While `hold` is true the runtime's publishes are not acknowledged (as
    /// if the broker never answered); setting it false acknowledges every
    /// publish so far.
    pub fn hold_publish_acks(&self, hold: bool) {
        let mut state = self.shared.lock();
        state.hold_publish_acks = hold;
        if !hold {
            let n = state.published.len() as u64;
            state.publish_acks.send_replace(n);
        }
    }

    /// Waits for the next published message (in order); `None` after [`close`](Self::close)
    /// once all were taken.
    pub async fn next_published(&self) -> Option<Published> {
        self.published_rx.lock().await.recv().await
    }

    /// Shuts the link: `recv` returns `None` once the queued deliveries are
    /// taken and `publish` fails with [`TransportError::Closed`].
    pub fn close(&self) {
        let mut state = self.shared.lock();
        state.incoming_tx = None;
        state.published_tx = None;
    }

    pub fn prefix(&self) -> String {
        self.shared.lock().topics.prefix().to_string()
    }

    pub fn device(&self) -> String {
        self.shared.lock().topics.device().to_string()
    }
}

fn deliver(state: &mut State, id: u64, topic: &str, payload: Vec<u8>, redelivered: bool) {
    let role = match state.topics.parse_command(topic) {
        CommandTopic::Command(role) => role,
        CommandTopic::Foreign => Err(topic.to_string()),
    };
    let token = state.order.register(id);
    if let Some(tx) = &state.incoming_tx {
        let _ = tx.send(Incoming {
            topic: topic.to_string(),
            role,
            payload,
            redelivered,
            token,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_acks_in_arrival_order_and_redelivers_unacked() {
        let (transport, remote) = FakeTransport::new("dev").unwrap();
        let a = remote.send_command(Role::Admin, b"a".to_vec());
        let b = remote.send_raw("bogus", b"b".to_vec());
        let c = remote.send_command(Role::Secondary, b"c".to_vec());

        let ia = transport.recv().await.unwrap();
        let ib = transport.recv().await.unwrap();
        let ic = transport.recv().await.unwrap();
        assert_eq!(ia.role, Ok(Role::Admin));
        assert_eq!(ib.role, Err("bogus".to_string()));
        assert_eq!(ic.payload, b"c");

        transport.ack(ic.token).unwrap();
        assert!(remote.acked().is_empty(), "c must wait for a and b");
        transport.ack(ia.token).unwrap();
        assert_eq!(remote.acked(), vec![a]);

        remote.reconnect();
        assert!(matches!(
            transport.ack(ib.token),
            Err(AckRefused::Stale { .. })
        ));
        let again = transport.recv().await.unwrap();
        assert!(again.redelivered);
        assert_eq!(again.payload, b"b");
        transport.ack(again.token).unwrap();
        assert_eq!(remote.acked(), vec![a, b]);
        // c was completed on the old connection but not released: redelivered too.
        let c_again = transport.recv().await.unwrap();
        assert_eq!(c_again.payload, b"c");
        transport.ack(c_again.token).unwrap();
        assert_eq!(remote.acked(), vec![a, b, c]);
        assert!(remote.unacked().is_empty());
    }

    #[tokio::test]
    async fn publishes_are_observable_and_close_ends_the_stream() {
        let (transport, remote) = FakeTransport::new("dev").unwrap();
        transport.publish(Outbound::Status, vec![1]).await.unwrap();
        transport
            .publish(Outbound::Event("boot".into()), vec![2])
            .await
            .unwrap();
        assert!(transport
            .publish(Outbound::Event("a/b".into()), vec![3])
            .await
            .is_err());
        let first = remote.next_published().await.unwrap();
        assert_eq!(first.topic, "relay/dev/status");
        assert_eq!(
            remote.next_published().await.unwrap().topic,
            "relay/dev/event/boot"
        );
        assert_eq!(remote.published().len(), 2);
        remote.close();
        assert!(transport.recv().await.is_none());
        assert!(matches!(
            transport.publish(Outbound::Status, vec![]).await,
            Err(TransportError::Closed)
        ));
    }
}
