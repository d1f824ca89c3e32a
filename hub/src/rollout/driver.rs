//! The rollout driver: the I/O loop around [`super::plan`]. Every tick it
//! reads each running rollout's targets, collects the result of the ones
//! running (the final state of their last chunk request), asks the plan what
//! to do, and does it: submit a device's chunks through the same durable
//! path as an API submit, record a timeout, end the rollout.
//!
//! Everything is in the store before it is acted on, and a device's chunk
//! requests have ids derived from the rollout (`ro-<rollout>-<n>`), so a
//! hub restarted at any point resumes the rollout: a device started again
//! re-submits the same ids, which the store recognises as duplicates.
//! With several hub instances, one holds the rollout's lease and drives it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use relay_core::plugin::Role;

use super::plan::{decide, Decision, Target};
use crate::service::ServiceHandle;
use crate::state::HubState;
use crate::store::{RolloutRow, Store, StoreError, TargetRow};
use crate::submit::{validate, SubmitBody, SubmitLimits};

/// How often the driver looks at the running rollouts.
pub const TICK: Duration = Duration::from_millis(250);

/// Starts the driver in a task. `owner`: this instance's name when several
/// share the database (the rollout's lease is taken under it).
pub fn spawn(
    store: Store,
    service: ServiceHandle,
    limits: SubmitLimits,
    owner: Option<(String, u64)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut driver = Driver {
            store,
            service,
            limits,
            owner,
            bundles: HashMap::new(),
        };
        loop {
            if let Err(error) = driver.tick().await {
                tracing::warn!(%error, "rollouts: a tick failed (retried next tick)");
            }
            tokio::time::sleep(TICK).await;
        }
    })
}

struct Driver {
    store: Store,
    service: ServiceHandle,
    limits: SubmitLimits,
    owner: Option<(String, u64)>,
    bundles: HashMap<String, Arc<Vec<u8>>>,
}

/// The id of chunk `n` of rollout `rollout`.
pub fn chunk_id(rollout: &str, n: usize) -> String {
    format!("ro-{rollout}-{n}")
}

/// How many chunks a bundle of `len` bytes makes.
pub fn chunk_count(len: usize, chunk_bytes: u64) -> usize {
    len.div_ceil(chunk_bytes.max(1) as usize).max(1)
}

impl Driver {
    async fn tick(&mut self) -> Result<(), StoreError> {
        let rollouts = self.store.running_rollouts().await?;
        // Bundles of rollouts that ended (completed, aborted) are dropped.
        self.bundles
            .retain(|id, _| rollouts.iter().any(|r| &r.id == id));
        for rollout in rollouts {
            if let Some((owner, lease_ms)) = &self.owner {
                let now = relay_client::unix_ms();
                let key = format!("rollout:{}", rollout.id);
                if !self
                    .store
                    .claim_lease(&key, owner, now + lease_ms, now)
                    .await?
                {
                    continue;
                }
            }
            self.advance(&rollout).await?;
        }
        Ok(())
    }

    async fn bundle(&mut self, id: &str) -> Result<Arc<Vec<u8>>, StoreError> {
        if let Some(b) = self.bundles.get(id) {
            return Ok(b.clone());
        }
        let bytes = self
            .store
            .rollout_bundle(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("rollout {id} has no bundle")))?;
        let bytes = Arc::new(bytes);
        self.bundles.insert(id.into(), bytes.clone());
        Ok(bytes)
    }

    async fn advance(&mut self, rollout: &RolloutRow) -> Result<(), StoreError> {
        let now = relay_client::unix_ms();
        let rows = self.store.rollout_targets(&rollout.id).await?;
        let bundle = self.bundle(&rollout.id).await?;
        let last = chunk_id(
            &rollout.id,
            chunk_count(bundle.len(), rollout.chunk_bytes) - 1,
        );
        let mut targets: Vec<Target> = rows.iter().map(TargetRow::target).collect();
        for (row, target) in rows.iter().zip(targets.iter_mut()) {
            if !matches!(target, Target::Running { .. }) {
                continue;
            }
            let Some(view) = self.store.get(&row.device, &last).await? else {
                continue;
            };
            let result = match view.state {
                HubState::Succeeded => Target::Succeeded,
                state if state.is_final() => Target::Failed {
                    code: view.code.unwrap_or_else(|| state.as_str().to_string()),
                },
                _ => continue,
            };
            tracing::info!(rollout = %rollout.id, device = %row.device, result = result.as_str(), "rollout: device done");
            self.store
                .set_target(&rollout.id, &row.device, &result, now)
                .await?;
            *target = result;
        }
        if rollout.state != "running" {
            // Aborted: the devices it had started may still finish.
            return Ok(());
        }
        for decision in decide(&rollout.plan(), &targets, now) {
            match decision {
                Decision::Start(i) => {
                    let device = &rows[i].device;
                    self.start(rollout, device, &bundle).await?;
                    self.store
                        .set_target(&rollout.id, device, &Target::Running { since: now }, now)
                        .await?;
                }
                Decision::TimeOut(i) => {
                    let device = &rows[i].device;
                    tracing::warn!(rollout = %rollout.id, %device, "rollout: device timed out");
                    self.store
                        .set_target(&rollout.id, device, &Target::TimedOut, now)
                        .await?;
                    self.cancel_unsent(rollout, device, bundle.len()).await;
                }
                Decision::Abort { reason } => {
                    tracing::warn!(rollout = %rollout.id, %reason, "rollout: aborted");
                    self.store
                        .end_rollout(&rollout.id, "aborted", Some(&reason), now)
                        .await?;
                }
                Decision::Complete => {
                    tracing::info!(rollout = %rollout.id, "rollout: completed");
                    self.store
                        .end_rollout(&rollout.id, "completed", None, now)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Submits every chunk of the bundle for `device`, in order.
    async fn start(
        &self,
        rollout: &RolloutRow,
        device: &str,
        bundle: &[u8],
    ) -> Result<(), StoreError> {
        let payloads =
            relay_core::ota::chunk::payloads(bundle, rollout.chunk_bytes.max(1) as usize);
        for (n, payload) in payloads.iter().enumerate() {
            let body = SubmitBody {
                id: Some(chunk_id(&rollout.id, n)),
                name: relay_core::ota::INSTALL.into(),
                payload_msgpack: Some(base64::engine::general_purpose::STANDARD.encode(payload)),
                ..SubmitBody::default()
            };
            let now = relay_client::unix_ms();
            let request = validate(
                device,
                body,
                &rollout.created_by,
                Role::Admin,
                now,
                &self.limits,
            )
            .map_err(|e| StoreError::Corrupt(format!("rollout chunk refused: {e}")))?;
            crate::api::store_and_forward(&self.store, &self.service, request).await?;
        }
        tracing::info!(rollout = %rollout.id, %device, "rollout: device started");
        Ok(())
    }

    /// Best effort: cancels the chunks of `device` not sent yet.
    async fn cancel_unsent(&self, rollout: &RolloutRow, device: &str, len: usize) {
        for n in 0..chunk_count(len, rollout.chunk_bytes) {
            let _ = self.service.cancel(device, &chunk_id(&rollout.id, n)).await;
        }
    }
}
