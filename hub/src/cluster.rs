//! Several hub instances on one database (Postgres, for fleets). Each
//! instance runs this task beside its forwarding loop:
//!
//! - **Leases.** Only the holder of a device's lease forwards its requests,
//!   so per-device order holds while instances come and go. The holder
//!   renews every `sync_ms`; an instance that dies stops renewing, and
//!   after `lease_ms` another instance takes the device over with every
//!   request not final yet (re-sending what the dead one had sent is
//!   harmless: the device answers a request it knows by id from its
//!   outcome memory).
//! - **Polls.** A request submitted through another instance, and a
//!   status another instance received (statuses come through an MQTT
//!   shared subscription, so any instance may get any device's), reach
//!   the holder by polling the store: requests still `queued` past the
//!   last sequence number seen, and states changed since the last round.
//!   Sequence numbers can commit out of order across instances, so every
//!   `FULL_EVERY_MS` the holder also reloads its devices' open requests
//!   (the forwarder ignores ids it holds already).
//! - **Cancels.** A cancel for a device this instance does not hold is
//!   written as an ask; the holder carries it out and drops the ask.
//!
//! The forwarding decisions stay in the sans-IO [`crate::forward`]
//! machine; this task only moves facts between the store and the loop.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::service::ServiceHandle;
use crate::state::HubState;
use crate::store::{Store, StoreError};

/// The group of the shared status subscription (`$share/<group>/...`).
pub const SHARE_GROUP: &str = "relay-hub";

/// States changed this long before the last round are read again, for
/// clock differences between instances and commits in flight.
const MARGIN_MS: u64 = 5_000;

/// How often the holder reloads every open request of its devices.
const FULL_EVERY_MS: u64 = 10_000;

/// One instance of several on one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Unique among the instances on the database.
    pub instance: String,
    /// A lease not renewed for this long may be taken over.
    pub lease_ms: u64,
    /// How often leases are renewed and the store is polled.
    pub sync_ms: u64,
}

impl ClusterOptions {
    pub fn new(instance: impl Into<String>) -> Self {
        ClusterOptions {
            instance: instance.into(),
            lease_ms: 10_000,
            sync_ms: 500,
        }
    }
}

/// Starts the task; `claims` carries devices with news: a request stored
/// through this instance (read it back, claiming the device if nobody
/// holds it), or one the forwarder asked to claim.
pub(crate) fn spawn(
    store: Store,
    service: ServiceHandle,
    options: ClusterOptions,
    claims: mpsc::Receiver<String>,
) {
    tokio::spawn(run(store, service, options, claims));
}

async fn run(
    store: Store,
    service: ServiceHandle,
    options: ClusterOptions,
    mut claims: mpsc::Receiver<String>,
) {
    let mut member = Member {
        store,
        service,
        options,
        owned: BTreeSet::new(),
        after: 0,
        heard_since: 0,
        full_at: 0,
    };
    let mut interval = tokio::time::interval(Duration::from_millis(member.options.sync_ms.max(10)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut nudged = BTreeSet::new();
        let tick = tokio::select! {
            _ = interval.tick() => true,
            device = claims.recv() => match device {
                Some(device) => {
                    nudged.insert(device);
                    while let Ok(device) = claims.try_recv() {
                        nudged.insert(device);
                    }
                    false
                }
                None => return,
            },
        };
        if let Err(e) = member.round(nudged, tick).await {
            tracing::warn!(error = %e, "hub cluster: a sync round failed");
        }
    }
}

struct Member {
    store: Store,
    service: ServiceHandle,
    options: ClusterOptions,
    /// Devices whose lease this instance holds.
    owned: BTreeSet<String>,
    /// The highest sequence number of a queued request seen.
    after: i64,
    /// Start of the last round that read changed states.
    heard_since: u64,
    /// When the open requests were last reloaded in full.
    full_at: u64,
}

impl Member {
    /// One round: on the clock (`tick`) renew, claim what nobody holds and
    /// poll everything; on news of `nudged` devices, claim those nobody
    /// holds and read back the requests stored since the last round.
    async fn round(&mut self, nudged: BTreeSet<String>, tick: bool) -> Result<(), StoreError> {
        let now = relay_client::unix_ms();
        let me = self.options.instance.clone();
        let until = now + self.options.lease_ms;
        let mut held = self.owned.clone();
        if tick {
            held = self.store.renew_leases(&me, until).await?;
            for lost in self.owned.difference(&held) {
                tracing::warn!(device = %lost, "hub cluster: lease lost to another instance");
                self.service.disown(lost).await;
            }
        }
        let mut candidates: BTreeSet<String> =
            nudged.into_iter().filter(|d| !held.contains(d)).collect();
        if tick {
            candidates.extend(self.store.unleased_devices(now).await?);
        }
        for device in candidates {
            if self.store.claim_lease(&device, &me, until, now).await? {
                held.insert(device);
            }
        }
        let reload_all = tick && now.saturating_sub(self.full_at) >= FULL_EVERY_MS;
        for device in &held {
            let newly = !self.owned.contains(device);
            if newly || reload_all {
                if newly {
                    tracing::info!(%device, "hub cluster: forwarding for this device");
                }
                let open = self.store.open_requests_of(device).await?;
                self.service.own(device, open).await;
            }
        }
        self.owned = held;
        if reload_all {
            self.full_at = now;
        }
        for (seq, request) in self.store.queued_after(&me, self.after).await? {
            self.after = self.after.max(seq);
            self.service.forward_stored(request).await;
        }
        if !tick {
            return Ok(());
        }
        let heard = self
            .store
            .heard_since(&me, self.heard_since.saturating_sub(MARGIN_MS))
            .await?;
        self.heard_since = now;
        if !heard.is_empty() {
            self.service.heard(heard).await;
        }
        for (device, id) in self.store.cancel_asks(&me).await? {
            if self.service.cancel(&device, &id).await.is_ok() {
                self.store
                    .finish(&device, &id, HubState::Cancelled, now)
                    .await?;
            }
            self.store.drop_cancel_ask(&device, &id).await?;
        }
        Ok(())
    }
}
