//! The last step of a command's path: statuses and events out to the broker,
//! from a task of their own so a slow or disconnected link never stalls the
//! driver (which must keep journaling and acking).
//!
//! Messages leave in the order the driver released them. Under load the
//! task falls behind and finds many messages waiting; it then **coalesces**:
//! an intermediate status (`accepted`, `running`) is dropped when a later
//! status of the same command is already in the same backlog. The app still
//! sees a consistent sequence that ends in the final status, which is never
//! dropped, and every `retrying` is kept (it carries `next_attempt_at`).
//!
//! It also tells the driver which final statuses the broker acknowledged
//! (from [`Transport::publish_acks`]), so the driver can journal them as
//! delivered; a final status not known delivered is published again after a
//! restart, so a crash between an outcome and its PUBACK loses nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use relay_core::machine::{coalesce, Outgoing};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::transport::{Outbound, Transport};

/// Most messages taken from the backlog per round (bounds the coalescing map).
const MAX_ROUND: usize = 4096;

/// At shutdown, how long to wait for the broker to acknowledge the final
/// statuses already published (a live broker takes milliseconds).
const FINAL_ACK_WAIT: Duration = Duration::from_secs(1);

/// What the driver hands the task.
#[derive(Debug)]
enum Note {
    /// Publish this.
    Send(Outgoing),
    /// The driver published a message itself ([`Front::publish`]); count it
    /// (and track it if it is the final status of command `final_id`).
    Sent {
        final_id: Option<String>,
        kind: Kind,
    },
}

/// Which counter a message counts in.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Status,
    Event,
    Health,
}

impl Kind {
    fn of(message: &Outgoing) -> Kind {
        match message {
            Outgoing::Status(_) => Kind::Status,
            Outgoing::Event { .. } => Kind::Event,
            Outgoing::Health(_) => Kind::Health,
        }
    }

    fn counter(self, counters: &PublishCounters) -> &AtomicU64 {
        match self {
            Kind::Status => &counters.statuses,
            Kind::Event => &counters.events,
            Kind::Health => &counters.health,
        }
    }
}

/// Where a message goes and its bytes.
fn encode(message: &Outgoing) -> (Outbound, Vec<u8>) {
    match message {
        Outgoing::Status(status) => (Outbound::Status, status.to_msgpack()),
        Outgoing::Event { name, payload } => (Outbound::Event(name.clone()), payload.clone()),
        Outgoing::Health(health) => (Outbound::Health, health.to_msgpack()),
    }
}

/// The driver's side of the publisher.
///
/// A message goes to the transport directly ([`Transport::try_publish`])
/// when nothing is queued ahead of it, which skips a hand-off to the task
/// on the idle path; otherwise, or when the transport's queue is full, it
/// goes through the task, in order.
#[derive(Debug)]
pub struct Front {
    tx: UnboundedSender<Note>,
    /// Messages sent to the task and not published yet.
    queued: Arc<AtomicU64>,
}

impl Front {
    /// Publishes `message` now if nothing is queued ahead of it, else queues it.
    pub fn publish<T: Transport>(&self, transport: &T, message: Outgoing) {
        if self.queued.load(Ordering::SeqCst) == 0 {
            let (to, payload) = encode(&message);
            if transport.try_publish(to, payload).is_ok() {
                let note = Note::Sent {
                    final_id: message.final_id().map(str::to_string),
                    kind: Kind::of(&message),
                };
                let _ = self.tx.send(note);
                return;
            }
        }
        self.queue(message);
    }

    fn queue(&self, message: Outgoing) {
        self.queued.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(Note::Send(message)).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Counters, readable through the runtime handle.
#[derive(Debug, Default)]
pub struct PublishCounters {
    pub statuses: AtomicU64,
    pub events: AtomicU64,
    pub coalesced: AtomicU64,
    pub failed: AtomicU64,
    /// Health messages.
    pub health: AtomicU64,
}

/// Starts the publisher task. The ids of final statuses the broker
/// acknowledged come out of `delivered`, in publish order.
pub fn spawn<T: Transport>(
    transport: Arc<T>,
    counters: Arc<PublishCounters>,
    delivered: UnboundedSender<String>,
) -> (Front, JoinHandle<()>) {
    let (tx, rx) = unbounded_channel();
    let queued = Arc::new(AtomicU64::new(0));
    // The runtime is the transport's only publisher: count from here, now
    // (the driver may publish directly before the task first runs).
    let acks = transport.publish_acks();
    let sent = *acks.borrow();
    let unacked = Unacked {
        sent,
        acks,
        finals: VecDeque::new(),
    };
    let task = tokio::spawn(run(
        transport,
        rx,
        queued.clone(),
        unacked,
        counters,
        delivered,
    ));
    (Front { tx, queued }, task)
}

/// Final statuses handed to the transport and not yet acknowledged.
struct Unacked {
    acks: watch::Receiver<u64>,
    /// The transport's publishes so far (its PUBACK count's unit).
    sent: u64,
    /// (publish number, 1-based; command id) of each final status.
    finals: VecDeque<(u64, String)>,
}

impl Unacked {
    /// Moves every acknowledged final status to `delivered`.
    fn drain(&mut self, delivered: &UnboundedSender<String>) {
        let acked = *self.acks.borrow_and_update();
        while self.finals.front().is_some_and(|(n, _)| *n <= acked) {
            if let Some((_, id)) = self.finals.pop_front() {
                let _ = delivered.send(id);
            }
        }
    }
}

async fn run<T: Transport>(
    transport: Arc<T>,
    mut rx: UnboundedReceiver<Note>,
    queued: Arc<AtomicU64>,
    mut unacked: Unacked,
    counters: Arc<PublishCounters>,
    delivered: UnboundedSender<String>,
) {
    let mut acks_open = true;
    let mut notes = Vec::new();
    let mut round = Vec::new();
    loop {
        tokio::select! {
            n = rx.recv_many(&mut notes, MAX_ROUND) => {
                if n == 0 {
                    break;
                }
            }
            changed = unacked.acks.changed(), if acks_open && !unacked.finals.is_empty() => {
                acks_open = changed.is_ok();
                unacked.drain(&delivered);
                continue;
            }
        }
        // Notes keep their order: what the driver published itself was
        // published after everything queued before it, and before anything
        // queued after it (it publishes itself only when nothing is queued).
        let mut taken = 0u64;
        for note in notes.drain(..) {
            match note {
                Note::Send(message) => {
                    taken += 1;
                    round.push(message);
                }
                Note::Sent { final_id, kind } => {
                    publish_round(&*transport, &mut round, &counters, &mut unacked).await;
                    kind.counter(&counters).fetch_add(1, Ordering::Relaxed);
                    unacked.sent += 1;
                    if let Some(id) = final_id {
                        unacked.finals.push_back((unacked.sent, id));
                    }
                }
            }
        }
        publish_round(&*transport, &mut round, &counters, &mut unacked).await;
        queued.fetch_sub(taken, Ordering::SeqCst);
        unacked.drain(&delivered);
    }
    // Closed (shutdown): wait a little for the broker to acknowledge the
    // final statuses already handed over, so the driver can journal them as
    // delivered and a restart does not publish them again.
    let wait = tokio::time::sleep(FINAL_ACK_WAIT);
    tokio::pin!(wait);
    while acks_open && !unacked.finals.is_empty() {
        tokio::select! {
            changed = unacked.acks.changed() => {
                acks_open = changed.is_ok();
                unacked.drain(&delivered);
            }
            _ = &mut wait => break,
        }
    }
}

/// Publishes `round` (coalesced first) in order and empties it.
async fn publish_round<T: Transport>(
    transport: &T,
    round: &mut Vec<Outgoing>,
    counters: &PublishCounters,
    unacked: &mut Unacked,
) {
    if round.is_empty() {
        return;
    }
    {
        let dropped = coalesce(round);
        counters
            .coalesced
            .fetch_add(dropped as u64, Ordering::Relaxed);
        for message in round.drain(..) {
            let final_id = message.final_id().map(str::to_string);
            let counter = Kind::of(&message).counter(counters);
            let (to, payload) = encode(&message);
            match transport.publish(to.clone(), payload).await {
                Ok(()) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    unacked.sent += 1;
                    if let Some(id) = final_id {
                        unacked.finals.push_back((unacked.sent, id));
                    }
                }
                Err(error) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(?to, %error, "could not publish");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::FakeTransport;
    use relay_core::status::{State, Status};

    /// Published directly or through the task, in order; final statuses the
    /// broker acknowledged are reported as delivered either way.
    #[tokio::test]
    async fn direct_and_queued_publishes_keep_order_and_report_deliveries() {
        let (transport, remote) = FakeTransport::new("dev-1").unwrap();
        let transport = Arc::new(transport);
        let counters = Arc::new(PublishCounters::default());
        let (delivered_tx, mut delivered) = unbounded_channel();
        let (front, task) = spawn(transport.clone(), counters.clone(), delivered_tx);
        let fin = |id: &str| Outgoing::Status(Status::new(id, "n", State::Succeeded, 1, 0));
        // Nothing queued: published at once, before this call returns.
        front.publish(&*transport, fin("a"));
        assert_eq!(remote.published().len(), 1);
        // Queued behind something: goes through the task, in order.
        front.queue(fin("b"));
        front.publish(&*transport, fin("c"));
        let mut got = Vec::new();
        while got.len() < 3 {
            got.push(delivered.recv().await.unwrap());
        }
        assert_eq!(got, ["a", "b", "c"]);
        let ids: Vec<String> = remote
            .published()
            .iter()
            .map(|p| Status::from_msgpack(&p.payload).unwrap().id)
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(counters.statuses.load(Ordering::Relaxed), 3);
        drop(front);
        task.await.unwrap();
    }
}
