//! The task that owns rumqttc's `EventLoop` and is the only code polling
//! it: hands deliveries to the runtime, keeps acks in order across
//! reconnects, resubscribes and announces presence on every ConnAck, and
//! reconnects with backoff (the guarantees are listed in the parent
//! module).

use super::*;

/// Owns the `EventLoop`; the only code that polls it.
pub(super) struct Driver {
    pub(super) eventloop: EventLoop,
    pub(super) shared: Arc<Shared>,
    pub(super) incoming_tx: mpsc::UnboundedSender<Incoming>,
    pub(super) link_tx: watch::Sender<LinkState>,
    pub(super) backoff: Backoff,
    /// Publishes of dead connections, sent again in order (shared with the app side).
    pub(super) resend: Resend,
    /// The online presence of each connection.
    pub(super) presence: PresenceLink,
}

impl Driver {
    pub(super) async fn run(mut self) {
        // DISCONNECT written: wait for the broker to close the connection. Closing
        // first, with unread deliveries in our receive buffer, would send a TCP RST,
        // and the broker may then discard our last PUBACKs before reading them.
        let mut disconnect_sent = false;
        loop {
            let event = self.eventloop.poll().await;
            let stopping = self.shared.shutdown.load(Ordering::SeqCst);
            match event {
                Err(_) if disconnect_sent => break,
                // Deliveries after our DISCONNECT stay unacked; the broker keeps them.
                Ok(_) if disconnect_sent => {}
                Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                    self.on_connack(connack.session_present)
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => self.on_publish(publish),
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if !self.presence.on_puback(ack.pkid) {
                        self.shared.publish_acks.send_modify(|n| *n += 1);
                    }
                    self.resend.on_puback(&mut self.eventloop, ack.pkid);
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    self.presence.on_outgoing_publish(pkid);
                    self.resend.on_outgoing_publish(pkid)
                }
                Ok(Event::Incoming(Packet::SubAck(suback))) => {
                    let granted = suback
                        .return_codes
                        .iter()
                        .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                    if !granted {
                        tracing::error!(filter = %self.shared.topics.command_filter(), "mqtt: broker refused the command subscription");
                    }
                    self.link_tx.send_modify(|l| l.subscribed = granted);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) if stopping => disconnect_sent = true,
                Ok(_) => {}
                Err(ConnectionError::RequestsDone) => break,
                Err(error) => {
                    self.on_connection_lost(&error);
                    if stopping {
                        break;
                    }
                    let delay = self.backoff.next_delay();
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "mqtt: connection lost");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shared.shutdown_wake.notified() => break,
                    }
                }
            }
        }
        self.link_tx.send_modify(|l| {
            l.connected = false;
            l.subscribed = false;
        });
        tracing::debug!("mqtt: event loop stopped");
    }

    fn on_connack(&mut self, session_present: bool) {
        self.backoff.reset();
        let epoch = self.shared.lock().order.epoch();
        let filter = self.shared.topics.command_filter();
        tracing::info!(session_present, %filter, resent = self.resend.saved_len(), "mqtt: connected");
        // Subscribe first, then say online, then what the last connection had not delivered.
        let subscribe = Request::Subscribe(Subscribe::new(filter, QoS::AtLeastOnce));
        let online = self.presence.on_connack(unix_ms());
        self.resend
            .on_connack(&mut self.eventloop, [subscribe, online]);
        self.link_tx.send_modify(|l| {
            l.connected = true;
            l.subscribed = false;
            l.session_present = session_present;
            l.connects += 1;
            l.epoch = epoch;
        });
    }

    fn on_publish(&mut self, publish: Publish) {
        let pkid = (publish.qos != QoS::AtMostOnce).then_some(publish.pkid);
        let mut state = self.shared.lock();
        let token = state.order.register(pkid);
        match self.shared.topics.parse_command(&publish.topic) {
            CommandTopic::Command(role) => {
                let incoming = Incoming {
                    topic: publish.topic,
                    role,
                    payload: publish.payload.to_vec(),
                    redelivered: publish.dup,
                    token,
                };
                if let Err(unsent) = self.incoming_tx.send(incoming) {
                    // Nobody receives any more (runtime gone): leave it unacked, the broker keeps it.
                    tracing::debug!(topic = %unsent.0.topic, "mqtt: delivery after the receiver was dropped");
                }
            }
            CommandTopic::Foreign => {
                tracing::warn!(topic = %publish.topic, "mqtt: message on a foreign topic, acked and dropped");
                // Keeps arrival order: released only after every earlier delivery.
                let _ = self.shared.complete(&mut state, token);
            }
        }
    }

    /// The connection is gone (or never came up). Everything tied to it is
    /// dropped under the ack lock, so no ack of it can reach the next one.
    fn on_connection_lost(&mut self, error: &ConnectionError) {
        {
            let mut state = self.shared.lock();
            state.order.new_connection();
            state.queue.clear();
            // rumqttc already cleaned once inside `poll`; a PUBACK queued between
            // that and the epoch bump above is removed here.
            self.eventloop.clean();
            self.eventloop.state.events.clear();
        }
        // Subscribes are dropped: every CONNACK subscribes again. So is a presence of
        // this connection: the next CONNACK publishes a newer one, which must stay the last.
        let _ = self.resend.on_connection_lost(&mut self.eventloop);
        self.presence.on_connection_lost(&mut self.resend);
        let message = error.to_string();
        self.link_tx.send_modify(|l| {
            l.connected = false;
            l.subscribed = false;
            l.last_error = Some(message);
        });
    }
}
