//! The forwarding decisions, sans-IO: which stored request goes to which
//! device when, and when the hub itself ends one (`expired`, `timed_out`,
//! `cancelled`). Time is passed in as `now` (unix ms) and effects are
//! returned; the service's I/O loop carries them out (publish, store). Tested
//! in virtual time (`tests.rs`), like the device's scheduler.
//!
//! # Rules
//! - **Order.** Per device, requests are sent in submission order, and after
//!   any reconnect everything unconfirmed is sent again in that order.
//! - **Window.** At most `window` requests per device are out (sent and not
//!   yet final at the hub). A request counts as confirmed only by its
//!   *final* status, not by `accepted`: this bounds the broker's queue
//!   toward the device (so no broker queue limit can drop a command), the
//!   statuses queued toward the hub while it is away, and the outcomes the
//!   device must remember for a resend to be harmless (the window is far
//!   below the device's outcome memory of 1,024), so a resend can never make
//!   the device run a command whose outcome it has forgotten.
//! - **Presence.** Only devices whose presence says online are sent to. A
//!   new presence session (the device reconnected, perhaps to a broker that
//!   lost its queue) or a new hub connection to the broker makes every
//!   unconfirmed request of the lane go out again; the device's dedupe by id
//!   answers a request it already has (pending: ignored; final: its final
//!   status again).
//! - **Silence.** A request sent to an online device is sent again when
//!   nothing was heard about it for `resend_after_ms`: since it was sent,
//!   or since its last status. A status can be lost on its way back (by a
//!   broker, or by a hub instance that dies holding it); the device answers
//!   a request it already has from its outcome memory, or ignores it while
//!   it still runs, so a resend is harmless and nothing stays unfinished.
//! - **TTL.** A request the device never acknowledged is ended `expired` by
//!   the hub at `expires_at` (the device would refuse to start it from then
//!   on). Once the device has spoken about it, the device decides.
//! - **RPC deadline.** An RPC not final at `deadline_at` ends `timed_out`.
//! - **Cancel.** Only a request never sent can be cancelled.
//! - **Ownership** (several hubs on one database). A clustered forwarder
//!   sends only for devices whose lease this instance holds: a request for
//!   any other device is not kept but answered with [`Effect::Claim`] (the
//!   cluster task then tries to take the lease and, if it does, hands over
//!   every open request of the device after [`Forwarder::own`]). Losing
//!   the lease ([`Forwarder::disown`]) forgets the lane's requests;
//!   presence is kept for every device, owned or not. Requests reach a
//!   clustered forwarder in the store's order (the cluster task reads them
//!   back), never straight from a submit, so a device's requests go out in
//!   submission order whichever instance took them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::state::HubState;

/// Tuning of the forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardConfig {
    /// Requests per device out at once (sent, not final).
    pub window: usize,
    /// Resend a request an online device has not answered for this long.
    pub resend_after_ms: u64,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            window: 64,
            resend_after_ms: 30_000,
        }
    }
}

/// A stored request not final yet, as the forwarder needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: String,
    /// The device will not start it from this instant on.
    pub expires_at: u64,
    /// RPCs: the caller's deadline.
    pub deadline_at: Option<u64>,
    /// Already sent at some point (before a hub restart, say): it can no
    /// longer be cancelled.
    pub ever_sent: bool,
    /// The device has reported on it (it decides expiry from then on).
    pub heard: bool,
}

impl Pending {
    pub fn new(id: impl Into<String>, expires_at: u64) -> Self {
        Pending {
            id: id.into(),
            expires_at,
            deadline_at: None,
            ever_sent: false,
            heard: false,
        }
    }
}

/// What the I/O loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Publish the stored request `id` to `device` (record it as `sent` if
    /// it was `queued`).
    Publish { device: String, id: String },
    /// The hub ends the request with `state` (`expired`, `timed_out` or
    /// `cancelled`).
    Finish {
        device: String,
        id: String,
        state: HubState,
    },
    /// Clustered only: a request arrived for a device this instance does
    /// not own; try to take its lease.
    Claim { device: String },
}

/// Why a cancel was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    #[error("no request {id:?} is pending for device {device:?}")]
    Unknown { device: String, id: String },
    #[error(
        "request {id:?} was already sent to the device; only a request never sent can be cancelled"
    )]
    AlreadySent { id: String },
}

#[derive(Debug)]
struct Entry {
    pending: Pending,
    /// When it was last published on the current connection.
    sent_at: Option<u64>,
    /// When the device last reported on it.
    heard_at: Option<u64>,
}

impl Entry {
    /// When the silence about it started, if it is out.
    fn silent_since(&self) -> Option<u64> {
        self.sent_at
            .map(|sent| sent.max(self.heard_at.unwrap_or(0)))
    }
}

#[derive(Debug, Default)]
struct Lane {
    online: bool,
    /// `(boot, session)` of the last presence seen online.
    session: Option<(u64, u32)>,
    entries: VecDeque<Entry>,
}

/// The forwarding state of every device with pending requests.
#[derive(Debug)]
pub struct Forwarder {
    config: ForwardConfig,
    /// Several instances share the database: send only for owned devices.
    clustered: bool,
    /// Clustered: the devices whose lease this instance holds.
    owned: BTreeSet<String>,
    /// Each lane's next instant for `tick`, and the same ordered by time,
    /// so neither `tick` nor `next_wakeup` walks every device.
    wake_of: BTreeMap<String, u64>,
    wakeups: BTreeSet<(u64, String)>,
    connected: bool,
    lanes: BTreeMap<String, Lane>,
}

impl Forwarder {
    pub fn new(config: ForwardConfig) -> Self {
        Forwarder {
            config,
            clustered: false,
            owned: BTreeSet::new(),
            wake_of: BTreeMap::new(),
            wakeups: BTreeSet::new(),
            connected: false,
            lanes: BTreeMap::new(),
        }
    }

    /// A forwarder for one of several instances: it sends only for the
    /// devices handed to it with [`Forwarder::own`].
    pub fn clustered(config: ForwardConfig) -> Self {
        Forwarder {
            clustered: true,
            ..Forwarder::new(config)
        }
    }

    /// A request was stored (or reloaded at start, in submission order).
    pub fn submit(&mut self, device: &str, pending: Pending, now: u64) -> Vec<Effect> {
        if !self.owns(device) {
            return vec![Effect::Claim {
                device: device.to_owned(),
            }];
        }
        let lane = self.lanes.entry(device.to_owned()).or_default();
        if lane.entries.iter().any(|e| e.pending.id == pending.id) {
            return Vec::new();
        }
        lane.entries.push_back(Entry {
            pending,
            sent_at: None,
            heard_at: None,
        });
        let mut out = Vec::new();
        self.pump(device, now, &mut out);
        self.settle(device);
        out
    }

    /// This instance now holds `device`'s lease: what is submitted for it
    /// from now on is kept and sent. The caller follows with every open
    /// request of the device, in submission order.
    pub fn own(&mut self, device: &str) {
        self.owned.insert(device.to_owned());
    }

    /// This instance lost `device`'s lease: forget its requests (another
    /// instance sends them now) and return their ids.
    pub fn disown(&mut self, device: &str) -> Vec<String> {
        self.owned.remove(device);
        let Some(lane) = self.lanes.get_mut(device) else {
            return Vec::new();
        };
        let dropped = lane.entries.drain(..).map(|e| e.pending.id).collect();
        self.settle(device);
        dropped
    }

    /// The device's presence changed.
    pub fn presence(
        &mut self,
        device: &str,
        online: bool,
        session: (u64, u32),
        now: u64,
    ) -> Vec<Effect> {
        let lane = self.lanes.entry(device.to_owned()).or_default();
        lane.online = online;
        if online && lane.session != Some(session) {
            lane.session = Some(session);
            for entry in &mut lane.entries {
                entry.sent_at = None;
            }
        }
        let mut out = Vec::new();
        self.pump(device, now, &mut out);
        self.settle(device);
        out
    }

    /// The device reported a status of `id`.
    pub fn status(&mut self, device: &str, id: &str, is_final: bool, now: u64) -> Vec<Effect> {
        let Some(lane) = self.lanes.get_mut(device) else {
            return Vec::new();
        };
        let Some(at) = lane.entries.iter().position(|e| e.pending.id == id) else {
            return Vec::new();
        };
        if is_final {
            lane.entries.remove(at);
        } else {
            lane.entries[at].pending.heard = true;
            lane.entries[at].heard_at = Some(now);
        }
        let mut out = Vec::new();
        self.pump(device, now, &mut out);
        self.settle(device);
        out
    }

    /// The hub's broker connection is up (again): what it sent before may
    /// be lost, so every online lane starts over.
    pub fn connected(&mut self, now: u64) -> Vec<Effect> {
        self.connected = true;
        let mut out = Vec::new();
        let devices: Vec<String> = self.lanes.keys().cloned().collect();
        for device in devices {
            if let Some(lane) = self.lanes.get_mut(&device) {
                lane.entries.iter_mut().for_each(|e| e.sent_at = None);
            }
            self.pump(&device, now, &mut out);
            self.settle(&device);
        }
        out
    }

    pub fn disconnected(&mut self) {
        self.connected = false;
        let devices: Vec<String> = self.lanes.keys().cloned().collect();
        for device in devices {
            self.settle(&device);
        }
    }

    /// An app cancels `id`.
    pub fn cancel(&mut self, device: &str, id: &str) -> Result<Vec<Effect>, CancelError> {
        let unknown = || CancelError::Unknown {
            device: device.into(),
            id: id.into(),
        };
        let lane = self.lanes.get_mut(device).ok_or_else(unknown)?;
        let at = lane
            .entries
            .iter()
            .position(|e| e.pending.id == id)
            .ok_or_else(unknown)?;
        if lane.entries[at].pending.ever_sent {
            return Err(CancelError::AlreadySent { id: id.into() });
        }
        lane.entries.remove(at);
        self.settle(device);
        Ok(vec![Effect::Finish {
            device: device.into(),
            id: id.into(),
            state: HubState::Cancelled,
        }])
    }

    /// Time passed: deadlines, expiries, resends.
    pub fn tick(&mut self, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        let due: Vec<String> = self
            .wakeups
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, device)| device.clone())
            .collect();
        for device in due {
            let Some(lane) = self.lanes.get_mut(&device) else {
                continue;
            };
            lane.entries.retain(|entry| {
                let p = &entry.pending;
                let state = if p.deadline_at.is_some_and(|d| d <= now) {
                    HubState::TimedOut
                } else if !p.heard && p.expires_at <= now {
                    HubState::Expired
                } else {
                    return true;
                };
                out.push(Effect::Finish {
                    device: device.clone(),
                    id: p.id.clone(),
                    state,
                });
                false
            });
            let resend_after = self.config.resend_after_ms;
            for entry in &mut lane.entries {
                if entry
                    .silent_since()
                    .is_some_and(|t| now.saturating_sub(t) >= resend_after)
                {
                    entry.sent_at = None;
                }
            }
            self.pump(&device, now, &mut out);
            self.settle(&device);
        }
        out
    }

    /// The next instant `tick` has something to do, if any.
    pub fn next_wakeup(&self) -> Option<u64> {
        self.wakeups.first().map(|(at, _)| *at)
    }

    /// The next instant `lane` needs a tick: a deadline, an expiry of a
    /// request not heard of, a resend after silence (only while sending).
    fn lane_wakeup(&self, lane: &Lane) -> Option<u64> {
        let resend_after = self.config.resend_after_ms;
        let sending = self.connected && lane.online;
        lane.entries
            .iter()
            .flat_map(|e| {
                let p = &e.pending;
                let resend = e
                    .silent_since()
                    .filter(|_| sending)
                    .map(|t| t.saturating_add(resend_after));
                [p.deadline_at, (!p.heard).then_some(p.expires_at), resend]
            })
            .flatten()
            .min()
    }

    /// Requests pending for `device` (not final at the hub).
    pub fn pending(&self, device: &str) -> usize {
        self.lanes.get(device).map_or(0, |lane| lane.entries.len())
    }

    /// Requests out to `device` now (sent on this connection, not final).
    pub fn out(&self, device: &str) -> usize {
        self.lanes.get(device).map_or(0, |lane| {
            lane.entries.iter().filter(|e| e.sent_at.is_some()).count()
        })
    }

    pub fn is_online(&self, device: &str) -> bool {
        self.lanes.get(device).is_some_and(|lane| lane.online)
    }

    /// Whether this instance sends for `device`.
    pub fn owns(&self, device: &str) -> bool {
        !self.clustered || self.owned.contains(device)
    }

    /// Sends what the window allows, front first.
    fn pump(&mut self, device: &str, now: u64, out: &mut Vec<Effect>) {
        let Some(lane) = self.lanes.get_mut(device) else {
            return;
        };
        if !self.connected || !lane.online {
            return;
        }
        for entry in lane.entries.iter_mut().take(self.config.window) {
            if entry.sent_at.is_none() {
                entry.sent_at = Some(now);
                entry.pending.ever_sent = true;
                out.push(Effect::Publish {
                    device: device.to_owned(),
                    id: entry.pending.id.clone(),
                });
            }
        }
    }

    /// After `device`'s lane changed: forgets it if it is offline with
    /// nothing pending (its presence is kept by the store; a lane comes
    /// back with the next request), and files its next wake-up.
    fn settle(&mut self, device: &str) {
        if self
            .lanes
            .get(device)
            .is_some_and(|lane| lane.entries.is_empty() && !lane.online)
        {
            self.lanes.remove(device);
        }
        if let Some(at) = self.wake_of.remove(device) {
            self.wakeups.remove(&(at, device.to_owned()));
        }
        let next = self
            .lanes
            .get(device)
            .and_then(|lane| self.lane_wakeup(lane));
        if let Some(at) = next {
            self.wake_of.insert(device.to_owned(), at);
            self.wakeups.insert((at, device.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests;
