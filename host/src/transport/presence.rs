//! The device's presence on its MQTT link (`docs/protocol.md`, "Presence";
//! the message itself is [`relay_core::presence`]). Kept apart from the
//! event loop in [`super::mqtt`], which calls it at each matching event:
//!
//! - the last will (retained, QoS 1, `online: false`, `session: 0`) goes
//!   with every CONNECT;
//! - every CONNACK queues a retained QoS 1 `online: true` right after the
//!   SUBSCRIBE, ahead of the publishes a dead connection left;
//! - its PUBACK is told apart by packet id, so that
//!   [`super::Transport::publish_acks`] keeps counting the runtime's
//!   publishes only (the runtime maps that count onto its own publishes);
//! - a presence of a dead connection is dropped, never resent: the next
//!   CONNACK publishes a newer one, which must stay the retained one.
//!
//! Telling the presence's PUBACK apart: rumqttc reports an outgoing publish
//! by packet id only, and writes its `pending` queue in order. The presence
//! sits right behind the SUBSCRIBE at the front of `pending`, and the events
//! of the dead connection were cleared, so the first outgoing publish after
//! a CONNACK is the presence.

use std::sync::atomic::{AtomicU64, Ordering};

use relay_client::link::Resend;
use relay_core::presence::Presence;
use rumqttc::{LastWill, Publish, QoS, Request};

/// The presence state of one transport (one run of the host).
#[derive(Debug)]
pub struct PresenceLink {
    boot: u64,
    topic: String,
    /// CONNACKs so far: the `session` of the current connection.
    connects: u32,
    /// This connection's presence is queued and not written yet.
    unsent: bool,
    /// Packet id of this connection's presence until its PUBACK.
    pkid: Option<u16>,
}

impl PresenceLink {
    pub fn new(boot: u64, topic: String) -> Self {
        PresenceLink {
            boot,
            topic,
            connects: 0,
            unsent: false,
            pkid: None,
        }
    }

    /// Sent with every CONNECT; the broker publishes it if the connection
    /// dies without a DISCONNECT.
    pub fn last_will(&self) -> LastWill {
        LastWill::new(
            self.topic.clone(),
            Presence::will(self.boot).to_msgpack(),
            QoS::AtLeastOnce,
            true,
        )
    }

    /// A CONNACK at `now`: the online presence, to queue right after the
    /// SUBSCRIBE (before anything else).
    pub fn on_connack(&mut self, now: u64) -> Request {
        self.connects = self.connects.saturating_add(1);
        let online = Presence::online(self.boot, self.connects, now);
        let mut publish = Publish::new(self.topic.clone(), QoS::AtLeastOnce, online.to_msgpack());
        publish.retain = true;
        self.unsent = true;
        self.pkid = None;
        Request::Publish(publish)
    }

    /// rumqttc wrote publish `pkid`.
    pub fn on_outgoing_publish(&mut self, pkid: u16) {
        if std::mem::take(&mut self.unsent) {
            self.pkid = Some(pkid);
        }
    }

    /// The broker acknowledged publish `pkid`: `true` if it was the
    /// presence (not one of the runtime's publishes).
    pub fn on_puback(&mut self, pkid: u16) -> bool {
        if self.pkid == Some(pkid) {
            self.pkid = None;
            return true;
        }
        false
    }

    /// The connection is gone: its presence, if `resend` saved it, is
    /// dropped. Call after [`Resend::on_connection_lost`].
    pub fn on_connection_lost(&mut self, resend: &mut Resend) {
        resend.forget(|p| p.topic == self.topic);
        self.unsent = false;
        self.pkid = None;
    }
}

/// The `boot` of a transport starting now: unix ms, but strictly greater
/// than any boot given before in this process, so two transports started
/// in the same millisecond (tests, a restart in-process) differ.
pub fn boot_ms(now: u64) -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let previous = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last.saturating_add(1)))
        })
        .unwrap_or_else(|last| last);
    now.max(previous.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{EventLoop, MqttOptions};

    fn presence_of(request: &Request) -> (Presence, bool) {
        let Request::Publish(p) = request else {
            panic!("not a publish: {request:?}")
        };
        assert_eq!(p.topic, "relay/d/presence");
        assert_eq!(p.qos, QoS::AtLeastOnce);
        (Presence::from_msgpack(&p.payload).unwrap(), p.retain)
    }

    #[test]
    fn every_connack_is_a_new_session_and_its_puback_is_told_apart() {
        let mut link = PresenceLink::new(7, "relay/d/presence".into());
        let will = link.last_will();
        assert!(will.retain);
        assert_eq!(Presence::from_msgpack(&will.message), Ok(Presence::will(7)));

        let first = link.on_connack(100);
        assert_eq!(presence_of(&first), (Presence::online(7, 1, 100), true));
        link.on_outgoing_publish(4);
        link.on_outgoing_publish(5);
        assert!(!link.on_puback(5), "a runtime publish");
        assert!(link.on_puback(4), "the presence");
        assert!(!link.on_puback(4), "only once");

        // Lost before the presence went out: it is dropped from the resend queue.
        let second = link.on_connack(200);
        assert_eq!(presence_of(&second).0, Presence::online(7, 2, 200));
        let mut eventloop = EventLoop::new(MqttOptions::new("t", "127.0.0.1", 1), 4);
        let mut resend = Resend::new(4);
        let runtime = Request::Publish(Publish::new("relay/d/status", QoS::AtLeastOnce, [1]));
        eventloop.pending = [second, runtime].into();
        let _ = resend.on_connection_lost(&mut eventloop);
        link.on_connection_lost(&mut resend);
        assert_eq!(resend.saved_len(), 1, "only the runtime's publish is kept");
        link.on_outgoing_publish(1);
        assert!(
            !link.on_puback(1),
            "no presence is in flight after the loss"
        );
        assert_eq!(presence_of(&link.on_connack(300)).0.session, 3);
    }

    #[test]
    fn boots_increase_within_a_process() {
        let a = boot_ms(1_000);
        let b = boot_ms(1_000);
        let c = boot_ms(5);
        assert!(a >= 1_000 && b > a && c > b);
    }
}
