//! The app side of the end-to-end tests: a plain rumqttc client that sends
//! command envelopes to a device and collects every status it publishes.
//!
//! Not part of the device's data path; it plays the cloud app at both ends
//! of it: `publish cmd/<role>` in, `status` out. It also records which
//! commands the broker acknowledged (PUBACK received), because "every
//! accepted command reaches a final status" is about exactly those.
//!
//! # How a PUBACK is matched to a command id
//! rumqttc reports `Outgoing::Publish(pkid)` when it writes a publish and
//! `Incoming::PubAck(pkid)` when the broker acks it, without the payload.
//! Sends are serialized (one lock around "remember the id, enqueue the
//! publish"), so writes happen in send order: the first write of a packet id
//! that is not in flight belongs to the oldest unassigned id. A rewrite of
//! an in-flight packet id (rumqttc resends unacked publishes after a
//! reconnect with the same packet id) is recognised and skipped.
//!
//! The client resubscribes to the status topic after every CONNACK (a
//! restarted broker may have lost the subscription) and reconnects on its
//! own (rumqttc does on the next poll; we pause briefly between tries).

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use relay_core::envelope::{Envelope, Kind};
use relay_core::plugin::Role;
use relay_core::status::{State, Status};
use relay_host::transport::Topics;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::task::JoinHandle;

/// Statuses and acks seen so far.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every status in arrival order.
    pub all: Vec<Status>,
    /// Statuses by command id (empty id for unreadable envelopes).
    pub by_id: HashMap<String, Vec<Status>>,
    /// Labels of publishes the broker acknowledged.
    pub acked: HashSet<String>,
    /// Labels in send order, not yet written.
    unassigned: VecDeque<String>,
    /// Packet id -> label of publishes written and not yet acked.
    inflight: HashMap<u16, String>,
    /// CONNACKs received.
    pub connects: u64,
    /// SUBACKs of the status subscription.
    pub subscribed: u64,
}

impl Seen {
    /// The final status of `id`, if one arrived (the first one).
    pub fn final_of(&self, id: &str) -> Option<&Status> {
        self.by_id.get(id)?.iter().find(|s| s.is_final())
    }

    /// How many final statuses arrived for `id` (a redelivered duplicate is
    /// answered by publishing the recorded final status again).
    pub fn finals_of(&self, id: &str) -> usize {
        self.by_id
            .get(id)
            .map_or(0, |v| v.iter().filter(|s| s.is_final()).count())
    }

    pub fn statuses_of(&self, id: &str) -> Vec<Status> {
        self.by_id.get(id).cloned().unwrap_or_default()
    }
}

/// A connected app.
pub struct App {
    client: AsyncClient,
    topics: Topics,
    seen: Arc<Mutex<Seen>>,
    send_lock: tokio::sync::Mutex<()>,
    task: JoinHandle<()>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Unix ms now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A JSON value as msgpack (named maps).
pub fn msgpack(value: &serde_json::Value) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("JSON values encode as msgpack")
}

/// A msgpack value as JSON (for asserting on replies).
pub fn json(bytes: &[u8]) -> serde_json::Value {
    rmp_serde::from_slice(bytes).expect("reply decodes as JSON-like msgpack")
}

impl App {
    /// Connects with a clean session and subscribes to the device's status
    /// topic; returns once the subscription is granted.
    pub async fn connect(port: u16, device: &str) -> Result<App> {
        Self::connect_with(port, device, None).await
    }

    /// With `Some(client_id)` the session is persistent (`clean_session =
    /// false`): statuses published while the app is disconnected are queued
    /// for it by a broker that keeps sessions.
    pub async fn connect_with(port: u16, device: &str, persistent_id: Option<&str>) -> Result<App> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let client_id = match persistent_id {
            Some(id) => id.to_string(),
            None => format!("e2e-app-{}-{n}", std::process::id()),
        };
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_clean_session(persistent_id.is_none())
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(100)
            .set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        eventloop.network_options.set_tcp_nodelay(true);
        let topics = Topics::new("relay", device)?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let status_topic = topics.status();
        let task = {
            let seen = seen.clone();
            let client = client.clone();
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            lock(&seen).connects += 1;
                            // Never await the request channel inside the loop that drains it.
                            let _ = client.try_subscribe(status_topic.clone(), QoS::AtLeastOnce);
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => lock(&seen).subscribed += 1,
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            if p.topic == status_topic {
                                match Status::from_msgpack(&p.payload) {
                                    Ok(status) => {
                                        let mut s = lock(&seen);
                                        s.by_id
                                            .entry(status.id.clone())
                                            .or_default()
                                            .push(status.clone());
                                        s.all.push(status);
                                    }
                                    Err(e) => eprintln!("e2e app: undecodable status: {e}"),
                                }
                            }
                        }
                        Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                            let mut s = lock(&seen);
                            if !s.inflight.contains_key(&pkid) {
                                if let Some(label) = s.unassigned.pop_front() {
                                    s.inflight.insert(pkid, label);
                                }
                            }
                        }
                        Ok(Event::Incoming(Packet::PubAck(ack))) => {
                            let mut s = lock(&seen);
                            if let Some(label) = s.inflight.remove(&ack.pkid) {
                                s.acked.insert(label);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        };
        let app = App {
            client,
            topics,
            seen,
            send_lock: tokio::sync::Mutex::new(()),
            task,
            next_id: std::sync::atomic::AtomicU64::new(0),
        };
        app.wait_until(Duration::from_secs(15), |s| s.subscribed > 0)
            .await
            .context("status subscription")?;
        Ok(app)
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// A fresh id with `prefix`.
    pub fn fresh_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{}",
            self.next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    }

    /// Sends an envelope on `cmd/<role>` at QoS 1 (returns once queued).
    pub async fn send(&self, role: Role, envelope: &Envelope) -> Result<()> {
        self.send_raw(
            &self.topics.command(role),
            envelope.id.clone(),
            envelope.to_msgpack(),
        )
        .await
    }

    /// A command `name` with a JSON payload (`null` = no payload).
    pub async fn command(
        &self,
        role: Role,
        id: &str,
        name: &str,
        payload: serde_json::Value,
    ) -> Result<()> {
        self.send(role, &envelope(id, name, payload, Kind::Command))
            .await
    }

    /// An RPC `name` with a JSON payload.
    pub async fn rpc(
        &self,
        role: Role,
        id: &str,
        name: &str,
        payload: serde_json::Value,
    ) -> Result<()> {
        self.send(role, &envelope(id, name, payload, Kind::Rpc))
            .await
    }

    /// Publishes arbitrary bytes on an arbitrary topic; `label` names it in
    /// the ack bookkeeping.
    pub async fn send_raw(&self, topic: &str, label: String, payload: Vec<u8>) -> Result<()> {
        let _order = self.send_lock.lock().await;
        lock(&self.seen).unassigned.push_back(label);
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .context("publish")?;
        Ok(())
    }

    /// The collected state, locked.
    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        lock(&self.seen)
    }

    /// Waits until `cond` holds, at most `limit` (then an error).
    pub async fn wait_until(
        &self,
        limit: Duration,
        mut cond: impl FnMut(&Seen) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if cond(&lock(&self.seen)) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("condition not met within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The final status of `id`, waiting at most `limit`.
    pub async fn wait_final(&self, id: &str, limit: Duration) -> Result<Status> {
        self.wait_until(limit, |s| s.final_of(id).is_some())
            .await
            .with_context(|| {
                format!(
                    "no final status for {id:?}; seen: {:?}",
                    self.seen().statuses_of(id)
                )
            })?;
        Ok(self.seen().final_of(id).cloned().expect("checked above"))
    }

    /// Waits until every id in `ids` has a final status.
    pub async fn wait_all_final(&self, ids: &[String], limit: Duration) -> Result<()> {
        let result = self
            .wait_until(limit, |s| ids.iter().all(|id| s.final_of(id).is_some()))
            .await;
        if result.is_err() {
            let s = self.seen();
            let missing: Vec<&String> = ids.iter().filter(|id| s.final_of(id).is_none()).collect();
            bail!(
                "{} of {} commands have no final status within {limit:?}; first missing: {:?}",
                missing.len(),
                ids.len(),
                &missing[..missing.len().min(10)]
            );
        }
        Ok(())
    }

    /// Waits until the broker acked every label in `labels`.
    pub async fn wait_acked(&self, labels: &[String], limit: Duration) -> Result<()> {
        self.wait_until(limit, |s| labels.iter().all(|l| s.acked.contains(l)))
            .await
            .with_context(|| {
                format!(
                    "{} publishes not acked by the broker",
                    labels
                        .iter()
                        .filter(|l| !self.seen().acked.contains(*l))
                        .count()
                )
            })
    }

    /// Sends `name` (admin) with fresh ids until one of them gets a final
    /// status: proves the device is subscribed and running. Returns that status.
    pub async fn probe(
        &self,
        name: &str,
        payload: serde_json::Value,
        limit: Duration,
    ) -> Result<Status> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut sent = Vec::new();
        loop {
            let id = self.fresh_id("probe");
            self.command(Role::Admin, &id, name, payload.clone())
                .await?;
            sent.push(id);
            let window = tokio::time::Instant::now() + Duration::from_millis(500);
            while tokio::time::Instant::now() < window {
                if let Some(status) = sent.iter().find_map(|id| self.seen().final_of(id).cloned()) {
                    return Ok(status);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the device answered none of {} probes within {limit:?}",
                    sent.len()
                );
            }
        }
    }
}

/// An envelope with a JSON payload (`null` = none).
pub fn envelope(id: &str, name: &str, payload: serde_json::Value, kind: Kind) -> Envelope {
    let env = Envelope::new(id, name, now_ms()).with_kind(kind);
    if payload.is_null() {
        env
    } else {
        env.with_payload(msgpack(&payload))
    }
}

/// The states of `statuses`, in order (for readable assertion messages).
pub fn states(statuses: &[Status]) -> Vec<(State, u32)> {
    statuses.iter().map(|s| (s.status, s.attempt)).collect()
}

fn lock(seen: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}
