//! The hub's broker link: one persistent MQTT session (so statuses wait at
//! the broker while the hub restarts), subscribed to every device's status
//! and presence. One of several instances takes statuses through a shared
//! subscription (`$share/<group>/...`: each status reaches one instance of
//! the group) and presence directly (every instance keeps every device's
//! presence; retained messages do not reach shared subscriptions). It turns what arrives into [`Inbound`] events for the
//! service and gives the service a publisher. Reconnects with backoff; what
//! a dead connection may have lost is the forwarder's business (it resends
//! on [`Inbound::Connected`]), not this loop's.

use std::time::Duration;

use relay_client::link::LinkOptions;
use relay_client::topics::{
    parse_device_topic, presence_filter_all, status_filter_all, DeviceTopicKind,
};
use relay_client::Backoff;
use relay_core::presence::Presence;
use relay_core::status::Status;
use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeFilter};
use tokio::sync::mpsc;

/// What the broker link reports to the service.
#[derive(Debug)]
pub enum Inbound {
    Connected,
    Disconnected(String),
    Status { device: String, status: Status },
    Presence { device: String, presence: Presence },
}

/// Starts the link; returns the publisher and the event stream. With
/// `share_group`, statuses come through that shared subscription.
pub fn start(
    link: &LinkOptions,
    prefix: &str,
    share_group: Option<&str>,
) -> Result<(AsyncClient, mpsc::Receiver<Inbound>), relay_client::TlsError> {
    let options = link.mqtt_options()?;
    let (client, mut eventloop) = AsyncClient::new(options, link.queue_capacity);
    link.configure(&mut eventloop);
    let (tx, rx) = mpsc::channel(4096);
    let statuses = status_filter_all(prefix).expect("validated prefix");
    let filters = [
        match share_group {
            Some(group) => format!("$share/{group}/{statuses}"),
            None => statuses,
        },
        presence_filter_all(prefix).expect("validated prefix"),
    ];
    let prefix = prefix.to_owned();
    let subscriber = client.clone();
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    let subscribe = filters
                        .iter()
                        .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if subscriber.subscribe_many(subscribe).await.is_err() {
                        return;
                    }
                    tracing::info!("hub: connected to the broker");
                    if tx.send(Inbound::Connected).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let Some((device, kind)) = parse_device_topic(&prefix, &publish.topic) else {
                        continue;
                    };
                    let event = match kind {
                        DeviceTopicKind::Status => match Status::from_msgpack(&publish.payload) {
                            Ok(status) => Inbound::Status {
                                device: device.to_owned(),
                                status,
                            },
                            Err(e) => {
                                tracing::warn!(topic = %publish.topic, error = %e, "hub: undecodable status");
                                continue;
                            }
                        },
                        DeviceTopicKind::Presence => {
                            match Presence::from_msgpack(&publish.payload) {
                                Ok(presence) => Inbound::Presence {
                                    device: device.to_owned(),
                                    presence,
                                },
                                Err(e) => {
                                    tracing::warn!(topic = %publish.topic, error = %e, "hub: undecodable presence");
                                    continue;
                                }
                            }
                        }
                        DeviceTopicKind::Health => continue,
                    };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(rumqttc::ConnectionError::RequestsDone) => return,
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "hub: broker connection lost");
                    if tx
                        .send(Inbound::Disconnected(error.to_string()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    });
    Ok((client, rx))
}
