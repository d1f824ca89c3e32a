//! The MQTT session: connects to the broker, hands every delivery to the
//! device loop and carries out what the loop decided (publishes, PUBACKs),
//! and wakes the loop when its next retry is due.
//!
//! The same guarantees as the Linux host's transport (`host/src/transport/
//! mqtt`), with MQTT 5:
//! - **Ack after durable.** Every delivery is acknowledged manually, when
//!   the machine releases its PUBACK (after the journal write).
//! - **Persistent session.** A fixed client id (the device id), no clean
//!   start, a session that never expires: the broker keeps commands while
//!   the device is away.
//! - **Nothing published is lost on a reconnect**, and a final status
//!   counts as delivered only at its PUBACK ([`Device::on_delivered`]):
//!   the rules of [`Outbox`], which this session follows.
//! - **Presence.** A retained `online: false` will with every CONNECT and a
//!   retained `online: true` after every SUBSCRIBE.
//! - Reconnects back off from 1 s to 60 s.

use alloc::string::String;
use alloc::vec;
use core::net::Ipv4Addr;
use core::num::NonZero;

use embassy_futures::select::{select, Either};
use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpAddress, Stack};
use embassy_time::{Duration, Instant, Timer};
use relay_core::journal::Storage;
use relay_core::presence::Presence;
use relay_core::topics::{CommandTopic, Topics};
use relay_embedded::outbox::Outbox;
use relay_embedded::{Device, DeviceError};
use rust_mqtt::buffer::AllocBuffer;
use rust_mqtt::client::event::{Event, Puback, Publish};
use rust_mqtt::client::options::{
    AckOptions, ConnectOptions, PublicationOptions, SubscriptionOptions, TopicReference,
    WillOptions,
};
use rust_mqtt::client::{Client, MqttError};
use rust_mqtt::config::{KeepAlive, SessionExpiryInterval};
use rust_mqtt::types::{
    IdentifiedQoS, MqttBinary, MqttString, PacketIdentifier, ReasonCode, TopicFilter, TopicName,
};
use rust_mqtt::Bytes;

use crate::topics::route;
use crate::Board;

/// Seconds between two packets before the broker drops us.
const KEEP_ALIVE: u16 = 30;
/// Deliveries the broker may have in flight to us (held until durable).
const RECEIVE_MAXIMUM: usize = 16;
/// Publishes we may have in flight to the broker.
const SEND_MAXIMUM: usize = 16;
const SOCKET_BUFFER: usize = 4096;

/// Where the session connects, and as whom.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig<'a> {
    /// A host name (looked up by DNS) or an IPv4 address.
    pub broker_host: &'a str,
    pub broker_port: u16,
    /// The device id, also the MQTT client id (one persistent session).
    pub device: &'a str,
    /// The topic prefix (`relay` by default).
    pub prefix: &'a str,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("invalid topic prefix or device id: {0}")]
    Topics(relay_core::topics::TopicError),
    #[error("the broker's name does not resolve")]
    Resolve,
    #[error("TCP connect failed: {0:?}")]
    Connect(embassy_net::tcp::ConnectError),
    #[error("MQTT: {0}")]
    Mqtt(String),
    /// The journal failed: only a restart (and replay) recovers.
    #[error("journal failed: {0}")]
    Journal(String),
}

impl<E: core::fmt::Debug> From<MqttError<'_, 0, E>> for Lost {
    fn from(e: MqttError<'_, 0, E>) -> Lost {
        Lost::Mqtt(alloc::format!("{e:?}"))
    }
}

impl<E: core::fmt::Debug + core::fmt::Display> From<DeviceError<E>> for Lost {
    fn from(e: DeviceError<E>) -> Lost {
        Lost::Journal(alloc::format!("{e}"))
    }
}

/// Everything that outlives one connection.
pub struct Session<'a, S: Storage, B: Board> {
    stack: Stack<'static>,
    config: SessionConfig<'a>,
    board: B,
    device: Device<S, Outbox<PacketIdentifier>>,
    outbox: Outbox<PacketIdentifier>,
    boot: u64,
    connections: u32,
}

impl<'a, S, B> Session<'a, S, B>
where
    S: Storage,
    S::Error: core::fmt::Debug + core::fmt::Display,
    B: Board,
{
    /// A session for `device`, which booted at unix ms `boot`.
    pub fn new(
        stack: Stack<'static>,
        config: SessionConfig<'a>,
        board: B,
        device: Device<S, Outbox<PacketIdentifier>>,
        boot: u64,
    ) -> Self {
        Session {
            stack,
            config,
            board,
            device,
            outbox: Outbox::default(),
            boot,
            connections: 0,
        }
    }

    /// Serves the broker forever, reconnecting as needed.
    pub async fn run(mut self) -> ! {
        let mut backoff = 1;
        loop {
            self.connections += 1;
            let lost = self.serve(&mut backoff).await;
            match lost {
                Lost::Journal(e) => {
                    self.board.log(format_args!(
                        "relay: journal failed ({e}); restarting to replay it"
                    ));
                    self.board.restart();
                }
                other => self.board.log(format_args!(
                    "relay: connection lost ({other}); again in {backoff} s"
                )),
            }
            self.outbox.reconnected();
            Timer::after(Duration::from_secs(backoff)).await;
            backoff = (backoff * 2).min(60);
        }
    }

    /// One connection, until it fails.
    async fn serve(&mut self, backoff: &mut u64) -> Lost {
        match self.connection(backoff).await {
            Ok(never) => match never {},
            Err(lost) => lost,
        }
    }

    async fn connection(&mut self, backoff: &mut u64) -> Result<core::convert::Infallible, Lost> {
        let (host, port) = (self.config.broker_host, self.config.broker_port);
        let topics = Topics::new(self.config.prefix, self.config.device).map_err(Lost::Topics)?;
        let address = self.resolve(host).await?;
        let mut rx = vec![0u8; SOCKET_BUFFER];
        let mut tx = vec![0u8; SOCKET_BUFFER];
        let mut socket = TcpSocket::new(self.stack, &mut rx, &mut tx);
        socket.set_timeout(Some(Duration::from_secs(u64::from(KEEP_ALIVE) * 2)));
        socket
            .connect((address, port))
            .await
            .map_err(Lost::Connect)?;

        let mut buffer = AllocBuffer;
        let mut client =
            Client::<'_, '_, _, _, 1, RECEIVE_MAXIMUM, SEND_MAXIMUM, 0, 0, 0, 0>::new(&mut buffer);
        client.ack_manually_when(&|_| true);
        let presence = topics.presence();
        let will_payload = Presence::will(self.boot).to_msgpack();
        let will = WillOptions::new(topic_name(&presence)?, binary(&will_payload)?)
            .at_least_once()
            .retain();
        let options = ConnectOptions::new()
            .keep_alive(KeepAlive::Seconds(
                NonZero::new(KEEP_ALIVE).expect("keep-alive is not zero"),
            ))
            .session_expiry_interval(SessionExpiryInterval::NeverEnd)
            .will(will);
        client
            .connect(socket, &options, Some(mqtt_string(self.config.device)?))
            .await?;
        *backoff = 1;

        let filter = topics.command_filter();
        let filter = TopicFilter::new(mqtt_string(&filter)?)
            .ok_or_else(|| Lost::Mqtt("bad command topic filter".into()))?;
        client
            .subscribe(filter, &SubscriptionOptions::new().at_least_once())
            .await?;
        let online =
            Presence::online(self.boot, self.connections, self.board.now_ms()).to_msgpack();
        client
            .publish(
                &PublicationOptions::new(TopicReference::Name(topic_name(&presence)?))
                    .at_least_once()
                    .retain(),
                Bytes::Borrowed(&online),
            )
            .await?;
        self.board.log(format_args!(
            "relay: connected to {host}:{port} as {}",
            self.config.device
        ));

        let mut last_sent = Instant::now();
        loop {
            let now = self.board.now_ms();
            self.device.tick(now, &mut self.outbox)?;
            if self.flush(&topics, &mut client).await? {
                last_sent = Instant::now();
            }
            let ping_at = last_sent + Duration::from_secs(u64::from(KEEP_ALIVE) / 2);
            let wake_at = self
                .device
                .next_wakeup(self.board.now_ms())
                .map(|at| self.board.instant_at(at))
                .map_or(ping_at, |at| at.min(ping_at));
            match select(client.poll_header(), Timer::at(wake_at)).await {
                Either::First(header) => {
                    let header = header?;
                    let event = client.poll_body(header).await?;
                    self.on_event(&topics, event)?;
                }
                Either::Second(()) => {
                    if Instant::now() >= ping_at {
                        client.ping().await?;
                        last_sent = Instant::now();
                    }
                }
            }
        }
    }

    fn on_event<const SUB: usize, const UNSUB: usize>(
        &mut self,
        topics: &Topics,
        event: Event<'_, SUB, UNSUB>,
    ) -> Result<(), Lost> {
        let now = self.board.now_ms();
        match event {
            Event::Publish(Publish {
                topic,
                identified_qos,
                message,
                ..
            }) => {
                let token = match identified_qos {
                    IdentifiedQoS::AtMostOnce => None,
                    IdentifiedQoS::AtLeastOnce(pid) | IdentifiedQoS::ExactlyOnce(pid) => Some(pid),
                };
                let name = topic.name().map(|n| n.as_ref().as_str()).unwrap_or("");
                match topics.parse_command(name) {
                    CommandTopic::Command(role) => self.device.on_message(
                        role.as_ref().map(|r| *r).map_err(String::as_str),
                        message.as_bytes(),
                        token,
                        now,
                        &mut self.outbox,
                    )?,
                    CommandTopic::Foreign => {
                        // Left over from an old subscription of the
                        // persistent session: acked, dropped.
                        self.board
                            .log(format_args!("relay: dropping a message on {name}"));
                        relay_embedded::Link::ack(&mut self.outbox, token);
                    }
                }
            }
            Event::PublishAcknowledged(Puback {
                packet_identifier, ..
            }) => self.on_puback(packet_identifier, true, now)?,
            Event::PublishRejected(rejected) => {
                self.board.log(format_args!(
                    "relay: the broker refused a publish: {:?}",
                    rejected.reason_code
                ));
                self.on_puback(rejected.packet_identifier, false, now)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn on_puback(&mut self, pid: PacketIdentifier, accepted: bool, now: u64) -> Result<(), Lost> {
        let Some(message) = self.outbox.acknowledged(&pid) else {
            return Ok(());
        };
        if let Some(id) = message.final_id() {
            if !accepted {
                self.board.log(format_args!(
                    "relay: the final status of {id} was refused by the broker"
                ));
            }
            self.device.on_delivered(id, now, &mut self.outbox)?;
        }
        Ok(())
    }

    /// Sends the outbox's acks and as many publishes as the broker's send
    /// quota allows. True if anything went out.
    async fn flush<'c, const SUB: usize, const UNSUB: usize, N, P>(
        &mut self,
        topics: &Topics,
        client: &mut Client<'_, 'c, N, P, 1, RECEIVE_MAXIMUM, SEND_MAXIMUM, SUB, UNSUB, 0, 0>,
    ) -> Result<bool, Lost>
    where
        N: rust_mqtt::io::Transport,
        P: rust_mqtt::buffer::BufferProvider<'c>,
    {
        let mut sent = false;
        while let Some(pid) = self.outbox.next_ack() {
            client
                .manual_acknowledge(pid, ReasonCode::Success, &AckOptions::new())
                .await?;
            sent = true;
        }
        while let Some(message) = self.outbox.next_message() {
            let Some(out) = route(topics, &message) else {
                self.board
                    .log(format_args!("relay: dropping {message:?}: no topic"));
                continue;
            };
            let mut options =
                PublicationOptions::new(TopicReference::Name(topic_name(&out.topic)?))
                    .at_least_once();
            if out.retain {
                options = options.retain();
            }
            match client
                .publish(&options, Bytes::Borrowed(&out.payload))
                .await
            {
                Ok(pid) => self.outbox.sent(pid, message),
                Err(MqttError::SendQuotaExceeded) => {
                    self.outbox.unsent(message);
                    break;
                }
                Err(e) => {
                    self.outbox.unsent(message);
                    return Err(e.into());
                }
            }
            sent = true;
        }
        Ok(sent)
    }

    async fn resolve(&self, host: &str) -> Result<IpAddress, Lost> {
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return Ok(IpAddress::Ipv4(ip));
        }
        match self.stack.dns_query(host, DnsQueryType::A).await {
            Ok(found) if !found.is_empty() => Ok(found[0]),
            _ => Err(Lost::Resolve),
        }
    }
}

fn mqtt_string(s: &str) -> Result<MqttString<'_>, Lost> {
    MqttString::try_from(s).map_err(|e| Lost::Mqtt(alloc::format!("{e:?}")))
}

fn topic_name(s: &str) -> Result<TopicName<'_>, Lost> {
    TopicName::new(mqtt_string(s)?).ok_or_else(|| Lost::Mqtt(alloc::format!("bad topic {s}")))
}

fn binary(bytes: &[u8]) -> Result<MqttBinary<'_>, Lost> {
    MqttBinary::try_from(bytes).map_err(|e| Lost::Mqtt(alloc::format!("{e:?}")))
}
