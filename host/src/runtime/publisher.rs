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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use relay_core::status::{State, Status};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::transport::{Outbound, Transport};

/// Most messages taken from the backlog per round (bounds the coalescing map).
const MAX_ROUND: usize = 4096;

/// One outgoing message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Status(Status),
    /// `event/<name>` with a msgpack payload.
    Event {
        name: String,
        payload: Vec<u8>,
    },
}

/// Counters, readable through the runtime handle.
#[derive(Debug, Default)]
pub struct PublishCounters {
    pub statuses: AtomicU64,
    pub events: AtomicU64,
    pub coalesced: AtomicU64,
    pub failed: AtomicU64,
}

/// Starts the publisher task. The ids of final statuses the broker
/// acknowledged come out of `delivered`, in publish order.
pub fn spawn<T: Transport>(
    transport: Arc<T>,
    counters: Arc<PublishCounters>,
    delivered: UnboundedSender<String>,
) -> (UnboundedSender<Outgoing>, JoinHandle<()>) {
    let (tx, rx) = unbounded_channel();
    (tx, tokio::spawn(run(transport, rx, counters, delivered)))
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
    mut rx: UnboundedReceiver<Outgoing>,
    counters: Arc<PublishCounters>,
    delivered: UnboundedSender<String>,
) {
    let acks = transport.publish_acks();
    // The runtime is the transport's only publisher: start from its count.
    let sent = *acks.borrow();
    let mut unacked = Unacked {
        sent,
        acks,
        finals: VecDeque::new(),
    };
    let mut acks_open = true;
    let mut round = Vec::new();
    loop {
        tokio::select! {
            n = rx.recv_many(&mut round, MAX_ROUND) => {
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
        let dropped = coalesce(&mut round);
        counters
            .coalesced
            .fetch_add(dropped as u64, Ordering::Relaxed);
        for message in round.drain(..) {
            let final_id = match &message {
                Outgoing::Status(s) if s.is_final() && !s.id.is_empty() => Some(s.id.clone()),
                _ => None,
            };
            let (to, payload, counter) = match message {
                Outgoing::Status(status) => {
                    (Outbound::Status, status.to_msgpack(), &counters.statuses)
                }
                Outgoing::Event { name, payload } => {
                    (Outbound::Event(name), payload, &counters.events)
                }
            };
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
        unacked.drain(&delivered);
    }
}

/// Drops intermediate statuses superseded later in `round`; returns how many.
pub fn coalesce(round: &mut Vec<Outgoing>) -> usize {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, message) in round.iter().enumerate() {
        if let Outgoing::Status(s) = message {
            if !s.id.is_empty() {
                last.insert(s.id.as_str(), i);
            }
        }
    }
    let superseded: Vec<bool> = round
        .iter()
        .enumerate()
        .map(|(i, message)| match message {
            Outgoing::Status(s) => {
                matches!(s.status, State::Accepted | State::Running)
                    && last.get(s.id.as_str()).is_some_and(|&j| j > i)
            }
            Outgoing::Event { .. } => false,
        })
        .collect();
    let before = round.len();
    let mut flags = superseded.into_iter();
    round.retain(|_| !flags.next().unwrap_or(false));
    before - round.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(id: &str, state: State) -> Outgoing {
        Outgoing::Status(Status::new(id, "n", state, 0, 0))
    }

    #[test]
    fn coalesces_only_superseded_intermediates() {
        let mut round = vec![
            st("a", State::Accepted),
            st("b", State::Accepted),
            st("a", State::Running),
            Outgoing::Event {
                name: "e".into(),
                payload: vec![],
            },
            st("a", State::Retrying),
            st("a", State::Running),
            st("a", State::Succeeded),
            st("b", State::Running),
        ];
        assert_eq!(coalesce(&mut round), 4);
        assert_eq!(
            round,
            vec![
                Outgoing::Event {
                    name: "e".into(),
                    payload: vec![]
                },
                st("a", State::Retrying),
                st("a", State::Succeeded),
                st("b", State::Running),
            ]
        );
    }
}
