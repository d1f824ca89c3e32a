//! The device's health message through real brokers (Mosquitto and the
//! embedded one): it is published retained on `<prefix>/<device>/health`, so
//! an app that subscribes later still gets the latest one at once (what a
//! dashboard opening during a full-disk episode needs). The state machine
//! that decides it is tested in `relay_core::machine` and
//! `host/tests/storage_faults.rs`; this checks the MQTT edge only.

#[allow(unused_imports)]
mod support;

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use relay_host::transport::{MqttConfig, MqttTransport, Outbound, Transport};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::{BrokerKind, TestBroker};

const LIMIT: Duration = Duration::from_secs(30);

async fn health_is_retained_for_later_subscribers(kind: BrokerKind) -> Result<()> {
    let broker = TestBroker::start(kind)?;
    let device = MqttTransport::start(MqttConfig::new(broker.host(), broker.port(), "dev-h"))?;
    ensure!(device.wait_subscribed(LIMIT).await, "never subscribed");
    let mut acks = device.publish_acks();
    device
        .publish(Outbound::Health, b"\x81\xa5state\xa8degraded".to_vec())
        .await?;
    // Wait until the broker has it.
    tokio::time::timeout(LIMIT, acks.wait_for(|n| *n >= 1)).await??;

    // An app that subscribes only now.
    let mut options = MqttOptions::new("health-watcher", broker.host(), broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .subscribe("relay/dev-h/health", QoS::AtLeastOnce)
        .await?;
    let deadline = tokio::time::Instant::now() + LIMIT;
    let publish = loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await?? {
            Event::Incoming(Packet::Publish(p)) => break p,
            Event::Incoming(Packet::Disconnect) => bail!("the broker disconnected"),
            _ => continue,
        }
    };
    assert_eq!(publish.topic, "relay/dev-h/health");
    assert!(publish.retain, "delivered as the retained message");
    assert_eq!(&publish.payload[..], b"\x81\xa5state\xa8degraded");
    device.shutdown(LIMIT).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_keeps_the_health_message() -> Result<()> {
    health_is_retained_for_later_subscribers(BrokerKind::Mosquitto).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_keeps_the_health_message() -> Result<()> {
    health_is_retained_for_later_subscribers(BrokerKind::Embedded).await
}
