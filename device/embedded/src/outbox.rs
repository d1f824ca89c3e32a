//! What the device loop left for the network, and what the network has not
//! confirmed yet: the [`Link`] of a device whose MQTT client is async.
//!
//! The device loop is synchronous and decides in one turn; an async MQTT
//! session carries the turn out afterwards. This outbox sits between them
//! and holds the delivery rules the session must keep, sans-IO so they are
//! tested here rather than on a board:
//!
//! - PUBACKs go out in the order the machine released them;
//! - publishes go out in order; one the broker has not PUBACKed stays
//!   in flight, and after a reconnect every publish still in flight goes
//!   out again, first and in its old order;
//! - a final status counts as delivered only at its PUBACK
//!   ([`Outbox::acknowledged`] hands it back so the caller tells the
//!   machine), so a status lost with a connection is published again;
//! - PUBACKs still queued when a connection drops are dropped: the broker
//!   delivers those messages again, and the machine knows them by id.

use alloc::collections::VecDeque;

use relay_core::machine::Outgoing;

use crate::Link;

/// The session's queues; `P` is the MQTT client's packet id type.
#[derive(Debug)]
pub struct Outbox<P> {
    messages: VecDeque<Outgoing>,
    acks: VecDeque<P>,
    in_flight: VecDeque<(P, Outgoing)>,
}

impl<P> Default for Outbox<P> {
    fn default() -> Self {
        Outbox {
            messages: VecDeque::new(),
            acks: VecDeque::new(),
            in_flight: VecDeque::new(),
        }
    }
}

impl<P: PartialEq> Outbox<P> {
    /// The next delivery to PUBACK.
    pub fn next_ack(&mut self) -> Option<P> {
        self.acks.pop_front()
    }

    /// The next message to publish.
    pub fn next_message(&mut self) -> Option<Outgoing> {
        self.messages.pop_front()
    }

    /// `message` (from [`Outbox::next_message`]) did not go out (the
    /// broker's send quota, or the connection failed): it goes first next
    /// time.
    pub fn unsent(&mut self, message: Outgoing) {
        self.messages.push_front(message);
    }

    /// `message` went out; `pid` is its packet id if the broker will
    /// PUBACK it (QoS 1).
    pub fn sent(&mut self, pid: Option<P>, message: Outgoing) {
        if let Some(pid) = pid {
            self.in_flight.push_back((pid, message));
        }
    }

    /// The broker PUBACKed `pid`: the message it carried, if it was ours
    /// (its [`Outgoing::final_id`] is then delivered).
    pub fn acknowledged(&mut self, pid: &P) -> Option<Outgoing> {
        let at = self.in_flight.iter().position(|(p, _)| p == pid)?;
        self.in_flight.remove(at).map(|(_, message)| message)
    }

    /// The connection dropped: queued PUBACKs are void, and what was in
    /// flight goes out again first, in its order.
    pub fn reconnected(&mut self) {
        self.acks.clear();
        while let Some((_, message)) = self.in_flight.pop_back() {
            self.messages.push_front(message);
        }
    }

    /// Publishes waiting or in flight.
    pub fn pending(&self) -> usize {
        self.messages.len() + self.in_flight.len()
    }
}

impl<P> Link for Outbox<P> {
    type Token = Option<P>;

    fn publish(&mut self, message: Outgoing) {
        self.messages.push_back(message);
    }

    /// QoS 0 deliveries carry no packet id and need no PUBACK.
    fn ack(&mut self, token: Option<P>) {
        if let Some(pid) = token {
            self.acks.push_back(pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;

    fn event(n: u8) -> Outgoing {
        Outgoing::Event {
            name: "e".to_string(),
            payload: vec![n],
        }
    }

    fn drain(outbox: &mut Outbox<u16>) -> Vec<Outgoing> {
        core::iter::from_fn(|| outbox.next_message()).collect()
    }

    #[test]
    fn acks_go_out_in_release_order_and_qos0_needs_none() {
        let mut outbox = Outbox::default();
        outbox.ack(Some(7u16));
        outbox.ack(None);
        outbox.ack(Some(3));
        assert_eq!(outbox.next_ack(), Some(7));
        assert_eq!(outbox.next_ack(), Some(3));
        assert_eq!(outbox.next_ack(), None);
    }

    #[test]
    fn in_flight_publishes_go_out_again_first_and_in_order_after_a_reconnect() {
        let mut outbox = Outbox::default();
        for n in 1..=4 {
            outbox.publish(event(n));
        }
        // 1 and 2 go out; 3 hits the send quota; 4 waits behind it.
        let one = outbox.next_message().unwrap();
        outbox.sent(Some(10u16), one);
        let two = outbox.next_message().unwrap();
        outbox.sent(Some(11), two);
        let three = outbox.next_message().unwrap();
        outbox.unsent(three);
        outbox.ack(Some(99));
        assert_eq!(outbox.pending(), 4);

        outbox.reconnected();
        assert_eq!(outbox.next_ack(), None, "PUBACKs die with the connection");
        assert_eq!(
            drain(&mut outbox),
            vec![event(1), event(2), event(3), event(4)]
        );
    }

    #[test]
    fn a_puback_hands_back_its_message_once_and_unknown_ids_are_ignored() {
        let mut outbox = Outbox::default();
        outbox.publish(event(1));
        outbox.publish(event(2));
        let one = outbox.next_message().unwrap();
        outbox.sent(Some(1u16), one);
        let two = outbox.next_message().unwrap();
        outbox.sent(Some(2), two);

        assert_eq!(outbox.acknowledged(&2), Some(event(2)), "out of order");
        assert_eq!(outbox.acknowledged(&2), None, "only once");
        assert_eq!(outbox.acknowledged(&5), None);
        outbox.reconnected();
        assert_eq!(
            drain(&mut outbox),
            vec![event(1)],
            "only the unconfirmed one"
        );
    }

    #[test]
    fn a_qos0_publish_is_not_kept() {
        let mut outbox = Outbox::default();
        outbox.publish(event(1));
        let one = outbox.next_message().unwrap();
        outbox.sent(None::<u16>, one);
        outbox.reconnected();
        assert_eq!(outbox.pending(), 0);
    }
}
