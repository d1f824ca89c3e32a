//! The MQTT link as both ends of Relay run it: how a rumqttc connection is
//! set up ([`LinkOptions`]), and how publishes survive a reconnect
//! ([`Resend`]). The device's transport (`relay-host`) and the app's
//! [`crate::Client`] each own a rumqttc event loop; what they must do alike
//! lives here, once.
//!
//! # Why resending is ours
//! rumqttc drops its unacknowledged publishes when the broker answers
//! `session_present = false` (always for a clean session, and after a broker
//! lost a persistent one). [`Resend`] takes them out of the event loop on
//! every disconnect and feeds them back after the next CONNACK, with fresh
//! packet ids (QoS 1 keeps no broker state for client-to-broker publishes, so
//! this is safe either way, and it avoids the packet-id collision livelock
//! after a broker lost the session), in the order they were first sent.
//! They re-enter rumqttc's `pending` queue at most one in-flight window at a
//! time, one more per PUBACK: rumqttc sends `pending` without flow control,
//! and a backlog larger than the window would wrap packet ids onto
//! unacknowledged publishes, where a collision silently drops a publish.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{EventLoop, LastWill, MqttOptions, Publish, Request};

use crate::tls::{TlsError, TlsFiles};

/// How to open a rumqttc connection.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    pub client_id: String,
    pub host: String,
    pub port: u16,
    /// Device: `false` (a persistent session keeps commands while offline).
    /// App: `true` (one CLI call must not leave a session behind).
    pub clean_session: bool,
    pub credentials: Option<(String, String)>,
    pub tls: Option<TlsFiles>,
    pub keep_alive: Duration,
    /// TCP connect + CONNACK (rounded up to whole seconds by rumqttc).
    pub connect_timeout: Duration,
    /// Outgoing QoS 1 publishes awaiting the broker's PUBACK.
    pub max_inflight: u16,
    /// Requests queued for the event loop.
    pub queue_capacity: usize,
    pub max_incoming_packet: usize,
    pub max_outgoing_packet: usize,
    /// Sent with every CONNECT; the broker publishes it when the connection
    /// dies without a DISCONNECT (the device's offline presence).
    pub last_will: Option<LastWill>,
}

impl LinkOptions {
    /// The rumqttc options. Fails only on unreadable TLS files.
    pub fn mqtt_options(&self) -> Result<MqttOptions, TlsError> {
        let mut options = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        options
            .set_clean_session(self.clean_session)
            .set_keep_alive(self.keep_alive.max(Duration::from_secs(1)))
            .set_inflight(self.max_inflight)
            .set_request_channel_capacity(self.queue_capacity)
            .set_max_packet_size(self.max_incoming_packet, self.max_outgoing_packet);
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            options.set_transport(tls.transport()?);
        }
        if let Some(will) = &self.last_will {
            options.set_last_will(will.clone());
        }
        Ok(options)
    }

    /// Socket settings of a new event loop: TCP_NODELAY (without it every
    /// hop can stall ~40 ms: Nagle + delayed ACK) and the connect timeout.
    pub fn configure(&self, eventloop: &mut EventLoop) {
        eventloop.network_options.set_tcp_nodelay(true);
        eventloop
            .network_options
            .set_connection_timeout(self.connect_timeout.as_secs().max(1));
    }
}

/// Publishes of dead connections, fed back in send order after a reconnect
/// (see the module doc). Call its `on_*` methods from the event loop task
/// for the matching rumqttc events.
#[derive(Debug)]
pub struct Resend {
    /// Publishes of a dead connection, sent again after the next CONNACK.
    saved: VecDeque<Publish>,
    /// rumqttc's in-flight window (`MqttOptions::set_inflight`).
    max_inflight: usize,
    /// Saved publishes moved into rumqttc's `pending` and not sent yet
    /// (rumqttc sends `pending` before anything from the request channel).
    fed_unsent: usize,
    /// Packet ids of the publishes sent on this connection and not
    /// acknowledged yet, in send order.
    window: VecDeque<u16>,
}

impl Resend {
    pub fn new(max_inflight: u16) -> Self {
        Resend {
            saved: VecDeque::new(),
            max_inflight: usize::from(max_inflight.max(1)),
            fed_unsent: 0,
            window: VecDeque::new(),
        }
    }

    /// Publishes waiting to be sent again.
    pub fn saved_len(&self) -> usize {
        self.saved.len()
    }

    /// A CONNACK: `first` (e.g. the subscriptions, a presence publish) goes
    /// to the front of the queue, then saved publishes up to a window
    /// (counting the publishes in `first`), then whatever rumqttc itself
    /// kept. While saved publishes wait the window stays full, so rumqttc
    /// takes nothing newer from the request channel: order is kept.
    pub fn on_connack(
        &mut self,
        eventloop: &mut EventLoop,
        first: impl IntoIterator<Item = Request>,
    ) {
        let mut front: VecDeque<Request> = first.into_iter().collect();
        let first_publishes = front
            .iter()
            .filter(|r| matches!(r, Request::Publish(_)))
            .count();
        let room = self.max_inflight.saturating_sub(first_publishes);
        let now = self.saved.len().min(room);
        front.extend(self.saved.drain(..now).map(Request::Publish));
        self.fed_unsent = first_publishes + now;
        front.append(&mut eventloop.pending);
        eventloop.pending = front;
    }

    /// Drops the saved publishes for which `stale` is true (e.g. a presence
    /// of a dead connection, which the next CONNACK replaces). Call between
    /// [`on_connection_lost`](Self::on_connection_lost) and the next
    /// [`on_connack`](Self::on_connack).
    pub fn forget(&mut self, mut stale: impl FnMut(&Publish) -> bool) {
        self.saved.retain(|p| !stale(p));
    }

    /// rumqttc wrote publish `pkid`.
    pub fn on_outgoing_publish(&mut self, pkid: u16) {
        self.window.push_back(pkid);
        self.fed_unsent = self.fed_unsent.saturating_sub(1);
    }

    /// The broker acknowledged publish `pkid`: a slot of the window is free
    /// for the next saved publish.
    pub fn on_puback(&mut self, eventloop: &mut EventLoop, pkid: u16) {
        if let Some(at) = self.window.iter().position(|&p| p == pkid) {
            self.window.remove(at);
        }
        if let Some(publish) = self.saved.pop_front() {
            eventloop.pending.push_back(Request::Publish(publish));
            self.fed_unsent += 1;
        }
    }

    /// The connection is gone: every publish rumqttc still holds is saved,
    /// in send order, with its packet id cleared. Returns the other requests
    /// it held (subscribes), oldest first, for the caller to keep or drop.
    ///
    /// After rumqttc's clean, `pending` holds, in this order: the saved
    /// publishes let in but not sent yet, the publishes in flight on the dead
    /// connection (older than those), then requests drained from the channel
    /// (newer than everything saved). rumqttc lists the in-flight ones by
    /// packet id from its last PUBACK on, which is not send order once ids
    /// wrapped (a SUBSCRIBE takes an id too): they are sorted by when they
    /// were sent.
    pub fn on_connection_lost(&mut self, eventloop: &mut EventLoop) -> Vec<Request> {
        let mut others = Vec::new();
        let mut publishes = Vec::new();
        for request in eventloop.pending.drain(..) {
            match request {
                Request::Publish(publish) => publishes.push(publish),
                other @ (Request::Subscribe(_) | Request::Unsubscribe(_)) => others.push(other),
                _ => {}
            }
        }
        let mut publishes = publishes.into_iter();
        let let_in: Vec<Publish> = publishes.by_ref().take(self.fed_unsent).collect();
        let mut in_flight: Vec<Publish> = publishes.by_ref().take(self.window.len()).collect();
        in_flight.sort_by_key(|p| {
            self.window
                .iter()
                .position(|&pkid| pkid == p.pkid)
                .unwrap_or(usize::MAX)
        });
        let drained: Vec<Publish> = publishes.collect();
        let still_saved = std::mem::take(&mut self.saved);
        self.saved = in_flight
            .into_iter()
            .chain(let_in)
            .chain(still_saved)
            .chain(drained)
            .map(|mut publish| {
                publish.pkid = 0;
                publish.dup = false;
                publish
            })
            .collect();
        self.fed_unsent = 0;
        self.window.clear();
        others
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::QoS;

    fn eventloop() -> EventLoop {
        EventLoop::new(MqttOptions::new("t", "127.0.0.1", 1), 16)
    }

    fn publish(n: u8, pkid: u16) -> Request {
        let mut p = Publish::new("t", QoS::AtLeastOnce, vec![n]);
        p.pkid = pkid;
        Request::Publish(p)
    }

    fn payloads(requests: &VecDeque<Request>) -> Vec<u8> {
        requests
            .iter()
            .filter_map(|r| match r {
                Request::Publish(p) => Some(p.payload[0]),
                _ => None,
            })
            .collect()
    }

    /// In flight (by send order, not packet id), then let in, then saved,
    /// then drained; fed back one window at a time, one more per PUBACK.
    #[test]
    fn publishes_come_back_in_send_order_one_window_at_a_time() {
        let mut el = eventloop();
        let mut resend = Resend::new(2);
        // Sent on the dead connection: 1 (pkid 9), then 2 (pkid 3: ids wrapped).
        resend.on_outgoing_publish(9);
        resend.on_outgoing_publish(3);
        // rumqttc lists in-flight publishes by packet id; 3 then 4 drained from the channel.
        el.pending = VecDeque::from([publish(2, 3), publish(1, 9), publish(3, 0), publish(4, 0)]);
        let others = resend.on_connection_lost(&mut el);
        assert!(others.is_empty());
        assert_eq!(resend.saved_len(), 4);
        let subscribe = Request::Subscribe(rumqttc::Subscribe::new("x", QoS::AtLeastOnce));
        resend.on_connack(&mut el, [subscribe]);
        assert!(matches!(el.pending.front(), Some(Request::Subscribe(_))));
        assert_eq!(payloads(&el.pending), [1, 2], "one window");
        assert!(el
            .pending
            .iter()
            .all(|r| !matches!(r, Request::Publish(p) if p.pkid != 0)));
        resend.on_outgoing_publish(1);
        resend.on_puback(&mut el, 1);
        assert_eq!(payloads(&el.pending), [1, 2, 3], "one more per PUBACK");
    }

    /// Subscribes held by a dead connection are handed back, not lost.
    #[test]
    fn subscribes_are_returned_to_the_caller() {
        let mut el = eventloop();
        let mut resend = Resend::new(4);
        let subscribe = Request::Subscribe(rumqttc::Subscribe::new("x", QoS::AtLeastOnce));
        el.pending = VecDeque::from([subscribe, publish(1, 0)]);
        let others = resend.on_connection_lost(&mut el);
        assert_eq!(others.len(), 1);
        assert_eq!(resend.saved_len(), 1);
    }

    /// Publishes given with the subscribe (a presence) take their place in
    /// the window, and can be forgotten after the connection is lost.
    #[test]
    fn publishes_given_first_count_in_the_window_and_can_be_forgotten() {
        let mut el = eventloop();
        let mut resend = Resend::new(2);
        el.pending = VecDeque::from([publish(1, 0), publish(2, 0), publish(3, 0)]);
        let _ = resend.on_connection_lost(&mut el);
        let Request::Publish(mut presence) = publish(9, 0) else {
            unreachable!()
        };
        presence.topic = "presence".into();
        resend.on_connack(&mut el, [Request::Publish(presence)]);
        assert_eq!(
            payloads(&el.pending),
            [9, 1],
            "the presence, then one saved"
        );
        // Lost before anything was sent: all come back, in order.
        let _ = resend.on_connection_lost(&mut el);
        assert_eq!(resend.saved_len(), 4);
        resend.forget(|p| p.topic == "presence");
        resend.on_connack(&mut el, []);
        assert_eq!(payloads(&el.pending), [1, 2]);
    }

    #[test]
    fn the_last_will_goes_into_the_options() {
        let link = LinkOptions {
            client_id: "c".into(),
            host: "127.0.0.1".into(),
            port: 1883,
            clean_session: false,
            credentials: None,
            tls: None,
            keep_alive: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_inflight: 10,
            queue_capacity: 10,
            max_incoming_packet: 1024,
            max_outgoing_packet: 1024,
            last_will: Some(LastWill::new(
                "t/presence",
                vec![0xc2],
                QoS::AtLeastOnce,
                true,
            )),
        };
        let will = link.mqtt_options().unwrap().last_will().unwrap();
        assert_eq!(will.topic, "t/presence");
        assert!(will.retain);
    }
}
