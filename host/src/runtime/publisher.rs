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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use relay_core::status::{State, Status};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
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

/// Starts the publisher task.
pub fn spawn<T: Transport>(
    transport: Arc<T>,
    counters: Arc<PublishCounters>,
) -> (UnboundedSender<Outgoing>, JoinHandle<()>) {
    let (tx, rx) = unbounded_channel();
    (tx, tokio::spawn(run(transport, rx, counters)))
}

async fn run<T: Transport>(
    transport: Arc<T>,
    mut rx: UnboundedReceiver<Outgoing>,
    counters: Arc<PublishCounters>,
) {
    let mut round = Vec::new();
    while rx.recv_many(&mut round, MAX_ROUND).await > 0 {
        let dropped = coalesce(&mut round);
        counters
            .coalesced
            .fetch_add(dropped as u64, Ordering::Relaxed);
        for message in round.drain(..) {
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
                }
                Err(error) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(?to, %error, "could not publish");
                }
            }
        }
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
