//! PUBACKs in arrival order, and never on the wrong connection.
//!
//! The runtime acks a command only after the journal has made it durable, and
//! group commit may finish journaling command 7 before command 6. MQTT 3.1.1
//! (4.6) requires a receiver to send PUBACKs in the order the PUBLISHes
//! arrived, and some brokers treat an out-of-order ack as a protocol error or
//! drop the session. So acks are released through this buffer: each incoming
//! publish is registered under an arrival sequence number, and completing one
//! releases the longest finished prefix, oldest first.
//!
//! Each connection is an *epoch*. After a disconnect the broker redelivers
//! every unacked publish under packet ids of the new connection; a PUBACK for an
//! old packet id sent on the new connection would ack some other message (or be
//! "unsolicited"). [`AckOrder::new_connection`] therefore forgets all pending
//! slots and bumps the epoch, and tokens from an older epoch are refused as
//! [`AckRefused::Stale`]: the broker redelivers those messages and the journal
//! dedupes them by id.
//!
//! Pure data structure (sans-IO); the MQTT and fake transports wrap it in a mutex.

use std::collections::VecDeque;

/// Proof that a message was received on a given connection, handed to
/// [`Transport::ack`](super::Transport::ack) once the message is durable.
/// Deliberately neither `Clone` nor `Copy`: each message is acked once.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AckToken {
    epoch: u64,
    seq: u64,
}

impl AckToken {
    /// The connection (epoch) this message arrived on.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Arrival sequence number within the transport's lifetime (monotonic).
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// Why [`AckOrder::complete`] did not accept a token. Never fatal: the caller
/// logs it and moves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckRefused {
    #[error("token belongs to connection {token_epoch}, now on {current_epoch}: the broker will redeliver")]
    Stale {
        token_epoch: u64,
        current_epoch: u64,
    },
    #[error("message {seq} was already acked")]
    AlreadyAcked { seq: u64 },
    #[error("message {seq} was never registered")]
    Unknown { seq: u64 },
}

#[derive(Debug)]
struct Slot<T> {
    item: T,
    done: bool,
}

/// Arrival-ordered ack buffer. `T` is what an ack needs on the wire (the MQTT
/// packet id); the fake transport uses its own message handle.
#[derive(Debug)]
pub struct AckOrder<T> {
    epoch: u64,
    /// Sequence number of `slots[0]`.
    head: u64,
    /// Sequence number the next registration gets.
    next: u64,
    slots: VecDeque<Slot<T>>,
}

impl<T> Default for AckOrder<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> AckOrder<T> {
    pub fn new() -> Self {
        Self {
            epoch: 0,
            head: 0,
            next: 0,
            slots: VecDeque::new(),
        }
    }

    /// Current connection epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Messages registered on this connection and not yet released.
    pub fn pending(&self) -> usize {
        self.slots.len()
    }

    /// Records an arrival; the returned token must come back through [`complete`](Self::complete).
    pub fn register(&mut self, item: T) -> AckToken {
        let seq = self.next;
        self.next += 1;
        self.slots.push_back(Slot { item, done: false });
        AckToken {
            epoch: self.epoch,
            seq,
        }
    }

    /// Marks a message durable and returns the acks that may now leave, in
    /// arrival order (possibly none, if an older message is still pending).
    pub fn complete(&mut self, token: AckToken) -> Result<Vec<T>, AckRefused> {
        if token.epoch != self.epoch {
            return Err(AckRefused::Stale {
                token_epoch: token.epoch,
                current_epoch: self.epoch,
            });
        }
        if token.seq < self.head {
            return Err(AckRefused::AlreadyAcked { seq: token.seq });
        }
        let index = usize::try_from(token.seq - self.head)
            .map_err(|_| AckRefused::Unknown { seq: token.seq })?;
        let slot = self
            .slots
            .get_mut(index)
            .ok_or(AckRefused::Unknown { seq: token.seq })?;
        if slot.done {
            return Err(AckRefused::AlreadyAcked { seq: token.seq });
        }
        slot.done = true;
        let mut released = Vec::new();
        while self.slots.front().is_some_and(|s| s.done) {
            if let Some(slot) = self.slots.pop_front() {
                released.push(slot.item);
                self.head += 1;
            }
        }
        Ok(released)
    }

    /// The connection dropped: forget every pending slot (the broker will
    /// redeliver them) and start a new epoch. Returns the new epoch.
    pub fn new_connection(&mut self) -> u64 {
        self.slots.clear();
        self.head = self.next;
        self.epoch += 1;
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_completion_releases_immediately() {
        let mut order = AckOrder::new();
        let a = order.register(1u16);
        let b = order.register(2u16);
        assert_eq!(order.complete(a), Ok(vec![1]));
        assert_eq!(order.complete(b), Ok(vec![2]));
        assert_eq!(order.pending(), 0);
    }

    #[test]
    fn out_of_order_completion_waits_for_the_oldest() {
        let mut order = AckOrder::new();
        let tokens: Vec<_> = (10u16..15).map(|p| order.register(p)).collect();
        let mut it = tokens.into_iter();
        let (t10, t11, t12, t13, t14) = (
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
        );
        assert_eq!(order.complete(t12), Ok(vec![]));
        assert_eq!(order.complete(t14), Ok(vec![]));
        assert_eq!(order.complete(t11), Ok(vec![]));
        assert_eq!(order.complete(t10), Ok(vec![10, 11, 12]));
        assert_eq!(order.complete(t13), Ok(vec![13, 14]));
        assert_eq!(order.pending(), 0);
    }

    #[test]
    fn every_permutation_of_five_releases_in_arrival_order() {
        fn permutations(n: usize) -> Vec<Vec<usize>> {
            if n == 0 {
                return vec![vec![]];
            }
            let mut out = Vec::new();
            for p in permutations(n - 1) {
                for i in 0..=p.len() {
                    let mut q = p.clone();
                    q.insert(i, n - 1);
                    out.push(q);
                }
            }
            out
        }
        for perm in permutations(5) {
            let mut order = AckOrder::new();
            let mut tokens: Vec<Option<AckToken>> =
                (0..5u16).map(|p| Some(order.register(p))).collect();
            let mut released = Vec::new();
            for i in &perm {
                let token = tokens[*i].take().unwrap();
                released.extend(order.complete(token).unwrap());
            }
            assert_eq!(released, vec![0, 1, 2, 3, 4], "completion order {perm:?}");
        }
    }

    #[test]
    fn tokens_from_an_old_connection_are_refused() {
        let mut order = AckOrder::new();
        let old = order.register(7u16);
        let old_later = order.register(8u16);
        assert_eq!(order.new_connection(), 1);
        assert_eq!(order.pending(), 0);
        let fresh = order.register(7u16); // the broker redelivers under a new packet id space
        assert_eq!(
            order.complete(old),
            Err(AckRefused::Stale {
                token_epoch: 0,
                current_epoch: 1
            })
        );
        assert_eq!(
            order.complete(old_later),
            Err(AckRefused::Stale {
                token_epoch: 0,
                current_epoch: 1
            })
        );
        assert_eq!(order.complete(fresh), Ok(vec![7]));
    }

    #[test]
    fn a_stale_pending_message_does_not_block_the_new_connection() {
        let mut order = AckOrder::new();
        let _never_acked = order.register(1u16);
        order.new_connection();
        let t = order.register(2u16);
        assert_eq!(order.complete(t), Ok(vec![2]));
    }

    #[test]
    fn double_and_forged_acks_are_refused() {
        let mut order = AckOrder::new();
        let a = order.register(1u16);
        let b = order.register(2u16);
        let forged_b = AckToken {
            epoch: b.epoch,
            seq: b.seq,
        };
        assert_eq!(order.complete(b), Ok(vec![]));
        assert_eq!(
            order.complete(forged_b),
            Err(AckRefused::AlreadyAcked { seq: 1 })
        );
        let forged_a = AckToken {
            epoch: a.epoch,
            seq: a.seq,
        };
        assert_eq!(order.complete(a), Ok(vec![1, 2]));
        assert_eq!(
            order.complete(forged_a),
            Err(AckRefused::AlreadyAcked { seq: 0 })
        );
        assert_eq!(
            order.complete(AckToken { epoch: 0, seq: 99 }),
            Err(AckRefused::Unknown { seq: 99 })
        );
    }
}
