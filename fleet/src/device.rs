//! One simulated device: the device side of the wire protocol
//! (`docs/protocol.md`) with a native handler and no engine or journal, so
//! that thousands fit in one process and the hub is what gets measured.
//!
//! Like a `relay run` host it keeps a persistent session (`clean_session =
//! false`, client id = device id), registers a retained offline presence as
//! its last will, publishes a retained online presence after every CONNACK
//! (`boot`, `session`), subscribes to `<prefix>/<device>/cmd/+`, and answers
//! every command envelope at QoS 1 on `<prefix>/<device>/status`: `accepted`
//! (unless [`Statuses::FinalOnly`]) then `succeeded`, whose reply is
//! `{"count": n, "echo": payload}` with `n` the device's run counter, so a
//! checker can see the order the device ran its commands in.
//!
//! Plugin updates: an `_install` chunk is staged (answered `succeeded`);
//! the last one "installs" the bundle, which succeeds unless the device is
//! listed in [`DeviceConfig::failing_installs`], where it fails its health
//! check (`failed`, code `self_test_failed`), as a real host does with a
//! version whose self-test fails. Enough for the hub's rollouts to be
//! measured against a fleet; the install itself is tested on real hosts.
//!
//! Dedupe as on a host: an id whose outcome is remembered (the last
//! [`OUTCOME_MEMORY`]) gets that final status again and never runs again.
//! The [`Ledger`] counts, besides, every run of an id that already ran (an
//! unbounded set, kept only for the check): the hub's window must keep a
//! resend within the device's memory, and `reruns` says whether it did.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use relay_client::link::LinkOptions;
use relay_client::topics::{CommandTopic, Topics};
use relay_client::Backoff;
use relay_core::envelope::Envelope;
use relay_core::presence::Presence;
use relay_core::status::{Code, State, Status};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Packet, QoS};
use tokio::sync::{oneshot, watch};

use crate::FleetError;

/// Final outcomes a device remembers for dedupe (the host's default).
pub const OUTCOME_MEMORY: usize = 1_024;

/// Which statuses a device publishes per command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statuses {
    /// `accepted`, then the final status: an idle host's two messages.
    AcceptedAndFinal,
    /// The final status only (a busy host coalesces the rest).
    FinalOnly,
}

/// Where and how the devices connect.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub prefix: String,
    pub host: String,
    pub port: u16,
    pub statuses: Statuses,
    pub keep_alive: Duration,
    /// Devices whose plugin installs fail the health check.
    pub failing_installs: HashSet<String>,
}

impl DeviceConfig {
    pub fn new(host: &str, port: u16) -> Self {
        DeviceConfig {
            prefix: relay_client::topics::DEFAULT_PREFIX.into(),
            host: host.into(),
            port,
            statuses: Statuses::AcceptedAndFinal,
            keep_alive: Duration::from_secs(30),
            failing_installs: HashSet::new(),
        }
    }
}

/// Counts shared by every device of a fleet.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Command envelopes received (duplicates included).
    pub envelopes: AtomicU64,
    /// Handler runs.
    pub runs: AtomicU64,
    /// Runs of an id that had run before on the same device: must stay 0.
    pub reruns: AtomicU64,
    /// Duplicates answered from memory with their final status again.
    pub duplicates: AtomicU64,
    /// Envelopes answered `rejected` or `expired` (none in a healthy run).
    pub refused: AtomicU64,
    /// Devices subscribed (a SUBACK seen), and connection losses.
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
}

impl Ledger {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The sans-IO part of a device: a command in, the statuses to publish out.
#[derive(Debug)]
pub struct Responder {
    topics: Topics,
    statuses: Statuses,
    ledger: Arc<Ledger>,
    /// Handler runs so far on this device (the reply's `count`).
    count: u64,
    /// Final status bytes by id, the last [`OUTCOME_MEMORY`] of them.
    outcomes: HashMap<String, Vec<u8>>,
    remembered: VecDeque<String>,
    /// Every id that ran (the rerun check only; a device has no such set).
    ran: HashSet<String>,
    /// This device's installs fail their health check.
    fails_installs: bool,
}

impl Responder {
    pub fn new(topics: Topics, statuses: Statuses, ledger: Arc<Ledger>) -> Self {
        Responder {
            topics,
            statuses,
            ledger,
            count: 0,
            outcomes: HashMap::new(),
            remembered: VecDeque::new(),
            ran: HashSet::new(),
            fails_installs: false,
        }
    }

    /// Makes this device's plugin installs fail their health check.
    pub fn failing_installs(mut self, fails: bool) -> Self {
        self.fails_installs = fails;
        self
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Handles what arrived on `topic` at `now` (unix ms): the status
    /// payloads to publish, in order (none for a foreign topic).
    pub fn on_message(&mut self, topic: &str, payload: &[u8], now: u64) -> Vec<Vec<u8>> {
        let role = match self.topics.parse_command(topic) {
            CommandTopic::Foreign => return Vec::new(),
            CommandTopic::Command(role) => role,
        };
        bump(&self.ledger.envelopes);
        let envelope = match Envelope::from_msgpack(payload) {
            Ok(envelope) => envelope,
            Err(rejection) => {
                bump(&self.ledger.refused);
                let status = Status::new(
                    rejection.id.clone().unwrap_or_default(),
                    rejection.name.clone().unwrap_or_default(),
                    State::Rejected,
                    0,
                    now,
                )
                .with_code(rejection.code(), rejection.to_string());
                return vec![status.to_msgpack()];
            }
        };
        if let Some(done) = self.outcomes.get(&envelope.id) {
            bump(&self.ledger.duplicates);
            return vec![done.clone()];
        }
        if let Err(level) = role {
            bump(&self.ledger.refused);
            let status = Status::new(&envelope.id, &envelope.name, State::Rejected, 0, now)
                .with_code(Code::NotPermitted, format!("unknown role {level:?}"));
            return self.finish(&envelope.id, status, Vec::new());
        }
        let mut out = Vec::with_capacity(2);
        if envelope.expires_at.is_some_and(|at| at <= now) {
            bump(&self.ledger.refused);
            let status = Status::new(&envelope.id, &envelope.name, State::Expired, 0, now)
                .with_code(Code::Expired, "expires_at passed before it started");
            return self.finish(&envelope.id, status, out);
        }
        if self.statuses == Statuses::AcceptedAndFinal {
            out.push(
                Status::new(&envelope.id, &envelope.name, State::Accepted, 0, now).to_msgpack(),
            );
        }
        self.count += 1;
        bump(&self.ledger.runs);
        if !self.ran.insert(envelope.id.clone()) {
            bump(&self.ledger.reruns);
        }
        if envelope.name == relay_core::ota::INSTALL {
            let status = self.install(&envelope, now);
            return self.finish(&envelope.id, status, out);
        }
        let status = Status::new(&envelope.id, &envelope.name, State::Succeeded, 1, now)
            .with_reply(Some(reply(self.count, &envelope.payload)));
        self.finish(&envelope.id, status, out)
    }

    /// An `_install` chunk: staged, or the last one, installed or failed.
    fn install(&self, envelope: &Envelope, now: u64) -> Status {
        let done = Status::new(&envelope.id, &envelope.name, State::Succeeded, 1, now);
        let failed = Status::new(&envelope.id, &envelope.name, State::Failed, 1, now);
        match relay_core::ota::chunk::decode(&envelope.payload) {
            Err(refusal) => failed.with_code(refusal.code(), refusal.to_string()),
            Ok(chunk) if chunk.offset + (chunk.data.len() as u64) < chunk.total => done,
            Ok(_) if self.fails_installs => failed.with_code(
                Code::parse("self_test_failed"),
                "the self-test failed: simulated health-check failure",
            ),
            Ok(_) => done,
        }
    }

    /// Remembers `status` as `id`'s outcome and appends it to `out`.
    fn finish(&mut self, id: &str, status: Status, mut out: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let bytes = status.to_msgpack();
        if self.remembered.len() >= OUTCOME_MEMORY {
            if let Some(old) = self.remembered.pop_front() {
                self.outcomes.remove(&old);
            }
        }
        self.remembered.push_back(id.to_owned());
        self.outcomes.insert(id.to_owned(), bytes.clone());
        out.push(bytes);
        out
    }
}

/// The handler's reply: `{"count": n, "echo": payload}` (`nil` without one).
pub fn reply(count: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + payload.len());
    rmp::encode::write_map_len(&mut out, 2).expect("vec write");
    rmp::encode::write_str(&mut out, "count").expect("vec write");
    rmp::encode::write_uint(&mut out, count).expect("vec write");
    rmp::encode::write_str(&mut out, "echo").expect("vec write");
    if payload.is_empty() {
        rmp::encode::write_nil(&mut out).expect("vec write");
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A `boot` strictly greater than any given before in this process (two
/// devices started in the same millisecond still differ).
fn boot_ms() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = relay_client::unix_ms();
    let previous = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or_else(|last| last);
    now.max(previous + 1)
}

/// A running simulated device.
#[derive(Debug)]
pub struct SimDevice {
    id: String,
    ready: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl SimDevice {
    /// Connects device `id` (in a task of the current runtime).
    pub fn start(
        config: &DeviceConfig,
        id: &str,
        ledger: Arc<Ledger>,
    ) -> Result<SimDevice, FleetError> {
        let topics = Topics::new(&config.prefix, id)?;
        let boot = boot_ms();
        let will = LastWill::new(
            topics.presence(),
            Presence::will(boot).to_msgpack(),
            QoS::AtLeastOnce,
            true,
        );
        let link = LinkOptions {
            client_id: id.to_owned(),
            host: config.host.clone(),
            port: config.port,
            clean_session: false,
            credentials: None,
            tls: None,
            keep_alive: config.keep_alive,
            connect_timeout: Duration::from_secs(10),
            // Above the hub's window (64) times two statuses per command.
            max_inflight: 200,
            queue_capacity: 64,
            max_incoming_packet: 1 << 20,
            max_outgoing_packet: 1 << 20,
            last_will: Some(will),
        };
        let (client, mut eventloop) = AsyncClient::new(link.mqtt_options()?, link.queue_capacity);
        link.configure(&mut eventloop);
        let (ready_tx, ready) = watch::channel(false);
        let (stop, stopped) = oneshot::channel();
        let responder = Responder::new(topics, config.statuses, ledger)
            .failing_installs(config.failing_installs.contains(id));
        let task = tokio::spawn(drive(eventloop, client, responder, boot, ready_tx, stopped));
        Ok(SimDevice {
            id: id.to_owned(),
            ready,
            stop: Some(stop),
            task,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits until the device subscribed to its commands.
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<(), FleetError> {
        let what = || FleetError::Timeout {
            what: format!("device {}'s subscription", self.id),
            limit,
        };
        match tokio::time::timeout(limit, self.ready.wait_for(|ready| *ready)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(what()),
        }
    }

    /// A clean shutdown: `online: false` (retained), then DISCONNECT.
    pub async fn stop(mut self, limit: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(limit, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

/// Something to hand to rumqttc once its request channel has room.
enum Out {
    Subscribe(String),
    Publish {
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
    },
}

/// Hands queued requests to rumqttc without blocking: this task is the one
/// that drains rumqttc's channel, so it must never wait on it.
fn flush(client: &AsyncClient, backlog: &mut VecDeque<Out>) {
    while let Some(out) = backlog.front() {
        let sent = match out {
            Out::Subscribe(filter) => client.try_subscribe(filter.clone(), QoS::AtLeastOnce),
            Out::Publish {
                topic,
                qos,
                retain,
                payload,
            } => client.try_publish(topic.clone(), *qos, *retain, payload.clone()),
        };
        if sent.is_err() {
            return;
        }
        backlog.pop_front();
    }
}

/// The device's event loop: connect (with backoff), presence, commands.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    mut responder: Responder,
    boot: u64,
    ready: watch::Sender<bool>,
    mut stop: oneshot::Receiver<()>,
) {
    let presence = responder.topics().presence();
    let status = responder.topics().status();
    let filter = responder.topics().command_filter();
    let ledger = responder.ledger.clone();
    let mut backlog = VecDeque::new();
    let mut session = 0u32;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        flush(&client, &mut backlog);
        let event = tokio::select! {
            biased;
            _ = &mut stop => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                session += 1;
                let online = Presence::online(boot, session, relay_client::unix_ms());
                backlog.push_front(Out::Publish {
                    topic: presence.clone(),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    payload: online.to_msgpack(),
                });
                backlog.push_front(Out::Subscribe(filter.clone()));
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                bump(&ledger.connects);
                let _ = ready.send(true);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let now = relay_client::unix_ms();
                for payload in responder.on_message(&publish.topic, &publish.payload, now) {
                    backlog.push_back(Out::Publish {
                        topic: status.clone(),
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        payload,
                    });
                }
            }
            Ok(_) => {}
            Err(rumqttc::ConnectionError::RequestsDone) => return,
            Err(error) => {
                bump(&ledger.disconnects);
                tracing::debug!(device = %responder.topics().device(), %error, "fleet device: connection lost");
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
    // A clean shutdown: the broker discards the will, so say offline first.
    let offline = Presence::offline(boot, session, relay_client::unix_ms());
    let _ = client.try_publish(presence, QoS::AtMostOnce, true, offline.to_msgpack());
    let _ = client.try_disconnect();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(event) = tokio::time::timeout_at(give_up, eventloop.poll()).await {
        match event {
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responder(statuses: Statuses) -> Responder {
        let topics = Topics::new("relay", "d1").unwrap();
        Responder::new(topics, statuses, Arc::new(Ledger::default()))
    }

    fn envelope(id: &str) -> Vec<u8> {
        Envelope::new(id, "echo", 1)
            .with_payload(vec![0x07])
            .to_msgpack()
    }

    fn decode(bytes: &[Vec<u8>]) -> Vec<Status> {
        bytes
            .iter()
            .map(|b| Status::from_msgpack(b).unwrap())
            .collect()
    }

    #[test]
    fn runs_in_order_and_answers_a_duplicate_from_memory() {
        let mut r = responder(Statuses::AcceptedAndFinal);
        let first = decode(&r.on_message("relay/d1/cmd/admin", &envelope("a"), 5));
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].status, State::Accepted);
        assert_eq!(first[1].status, State::Succeeded);
        assert_eq!(first[1].reply, Some(reply(1, &[0x07])));
        let second = decode(&r.on_message("relay/d1/cmd/primary", &envelope("b"), 6));
        assert_eq!(second[1].reply, Some(reply(2, &[0x07])));
        let again = decode(&r.on_message("relay/d1/cmd/admin", &envelope("a"), 9));
        assert_eq!(
            again,
            vec![first[1].clone()],
            "the same final status, same `at`"
        );
        assert_eq!(Ledger::get(&r.ledger.runs), 2);
        assert_eq!(Ledger::get(&r.ledger.duplicates), 1);
        assert_eq!(Ledger::get(&r.ledger.reruns), 0);
    }

    #[test]
    fn a_forgotten_id_runs_again_and_is_counted() {
        let mut r = responder(Statuses::FinalOnly);
        for n in 0..=OUTCOME_MEMORY {
            let out = r.on_message("relay/d1/cmd/admin", &envelope(&format!("r{n}")), 1);
            assert_eq!(out.len(), 1);
        }
        r.on_message("relay/d1/cmd/admin", &envelope("r0"), 2);
        assert_eq!(Ledger::get(&r.ledger.reruns), 1);
        // r0's new outcome took r1's place; r2 is still remembered.
        r.on_message("relay/d1/cmd/admin", &envelope("r2"), 2);
        assert_eq!(Ledger::get(&r.ledger.duplicates), 1);
        assert_eq!(Ledger::get(&r.ledger.reruns), 1);
    }

    #[test]
    fn refuses_what_a_host_refuses() {
        let mut r = responder(Statuses::FinalOnly);
        assert!(r
            .on_message("relay/other/cmd/admin", &envelope("x"), 1)
            .is_empty());
        let bad = decode(&r.on_message("relay/d1/cmd/admin", &[0xc1], 1));
        assert_eq!(bad[0].status, State::Rejected);
        let role = decode(&r.on_message("relay/d1/cmd/root", &envelope("y"), 1));
        assert_eq!(role[0].code, Some(Code::NotPermitted));
        let expired = Envelope::new("z", "echo", 1)
            .with_expires_at(10)
            .to_msgpack();
        let late = decode(&r.on_message("relay/d1/cmd/admin", &expired, 10));
        assert_eq!(late[0].status, State::Expired);
        assert_eq!(Ledger::get(&r.ledger.runs), 0);
    }
}
