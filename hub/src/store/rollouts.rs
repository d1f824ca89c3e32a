//! Rollouts in the store: created once with their targets, then read and
//! advanced by the rollout driver. Immediate statements on the pool (a
//! rollout changes a few times per device, not per message), so every
//! decision the driver takes is durable before it acts on it, and a hub
//! restarted mid-rollout picks it up where the store says.

use sqlx::Row;

use super::{to_i64, to_u64, Store, StoreError};
use crate::rollout::plan::{Plan, Target};

/// A rollout as created.
#[derive(Debug, Clone)]
pub struct NewRollout {
    pub id: String,
    pub bundle: Vec<u8>,
    pub plugin: String,
    pub version: String,
    pub created_by: String,
    pub created_at: u64,
    pub rate_per_min: u64,
    pub abort_failed_percent: u64,
    pub min_executed: u64,
    pub device_timeout_ms: u64,
    pub chunk_bytes: u64,
    pub devices: Vec<String>,
}

/// A rollout as stored (without its bundle).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RolloutRow {
    pub id: String,
    pub plugin: String,
    pub version: String,
    pub created_by: String,
    pub created_at: u64,
    pub rate_per_min: u64,
    pub abort_failed_percent: u64,
    pub min_executed: u64,
    pub device_timeout_ms: u64,
    pub chunk_bytes: u64,
    /// `running`, `completed` or `aborted`.
    pub state: String,
    pub reason: Option<String>,
    pub updated_at: u64,
}

impl RolloutRow {
    pub fn plan(&self) -> Plan {
        Plan {
            rate_per_min: self.rate_per_min,
            abort_failed_percent: self.abort_failed_percent,
            min_executed: self.min_executed,
            device_timeout_ms: self.device_timeout_ms,
            started_at: self.created_at,
        }
    }
}

/// One target device of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TargetRow {
    pub device: String,
    pub state: String,
    pub code: Option<String>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
}

impl TargetRow {
    /// The plan's view of it.
    pub fn target(&self) -> Target {
        match self.state.as_str() {
            "running" => Target::Running {
                since: self.started_at.unwrap_or(0),
            },
            "succeeded" => Target::Succeeded,
            "failed" => Target::Failed {
                code: self.code.clone().unwrap_or_default(),
            },
            "timed_out" => Target::TimedOut,
            "cancelled" => Target::Cancelled,
            _ => Target::Pending,
        }
    }
}

const ROLLOUT_COLUMNS: &str = "id, plugin, version, created_by, created_at, rate_per_min, \
    abort_failed_percent, min_executed, device_timeout_ms, chunk_bytes, state, reason, updated_at";

impl Store {
    /// Stores a new rollout and its targets (all pending), in one transaction.
    pub async fn create_rollout(&self, r: &NewRollout) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO rollouts (id, bundle, plugin, version, created_by, created_at, rate_per_min,
                abort_failed_percent, min_executed, device_timeout_ms, chunk_bytes, state, reason, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'running', NULL, $6)",
        )
        .bind(&r.id)
        .bind(&r.bundle)
        .bind(&r.plugin)
        .bind(&r.version)
        .bind(&r.created_by)
        .bind(to_i64(r.created_at))
        .bind(to_i64(r.rate_per_min))
        .bind(to_i64(r.abort_failed_percent))
        .bind(to_i64(r.min_executed))
        .bind(to_i64(r.device_timeout_ms))
        .bind(to_i64(r.chunk_bytes))
        .execute(&mut *tx)
        .await?;
        for (position, device) in r.devices.iter().enumerate() {
            sqlx::query(
                "INSERT INTO rollout_targets (rollout, position, device, state) VALUES ($1, $2, $3, 'pending')",
            )
            .bind(&r.id)
            .bind(position as i64)
            .bind(device)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One rollout, or every rollout (newest first) when `id` is `None`.
    pub async fn rollouts(&self, id: Option<&str>) -> Result<Vec<RolloutRow>, StoreError> {
        let rows = match id {
            Some(id) => {
                sqlx::query(&format!(
                    "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = $1"
                ))
                .bind(id)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {ROLLOUT_COLUMNS} FROM rollouts ORDER BY created_at DESC"
                ))
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(rollout_row).collect()
    }

    /// Rollouts still running, and aborted ones with devices still running.
    pub async fn running_rollouts(&self) -> Result<Vec<RolloutRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE state = 'running'
             OR (state = 'aborted' AND EXISTS (SELECT 1 FROM rollout_targets t
                 WHERE t.rollout = rollouts.id AND t.state = 'running'))
             ORDER BY created_at"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(rollout_row).collect()
    }

    pub async fn rollout_bundle(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT bundle FROM rollouts WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get::<Vec<u8>, _>(0)).transpose()?)
    }

    /// A rollout's targets, in rollout order.
    pub async fn rollout_targets(&self, id: &str) -> Result<Vec<TargetRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT device, state, code, started_at, finished_at FROM rollout_targets
             WHERE rollout = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TargetRow {
                    device: row.try_get(0)?,
                    state: row.try_get(1)?,
                    code: row.try_get(2)?,
                    started_at: row.try_get::<Option<i64>, _>(3)?.map(to_u64),
                    finished_at: row.try_get::<Option<i64>, _>(4)?.map(to_u64),
                })
            })
            .collect()
    }

    /// Records a target's new state.
    pub async fn set_target(
        &self,
        rollout: &str,
        device: &str,
        target: &Target,
        now: u64,
    ) -> Result<(), StoreError> {
        let code = match target {
            Target::Failed { code } => Some(code.clone()),
            Target::TimedOut => Some("timed_out".to_string()),
            _ => None,
        };
        let started = matches!(target, Target::Running { .. });
        sqlx::query(
            "UPDATE rollout_targets SET state = $1, code = $2,
                started_at = CASE WHEN $3 = 1 THEN $4 ELSE started_at END,
                finished_at = CASE WHEN $3 = 1 THEN NULL ELSE $4 END
             WHERE rollout = $5 AND device = $6",
        )
        .bind(target.as_str())
        .bind(code)
        .bind(i64::from(started))
        .bind(to_i64(now))
        .bind(rollout)
        .bind(device)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Ends a rollout (`completed` or `aborted`); an abort cancels every
    /// pending target in the same transaction.
    pub async fn end_rollout(
        &self,
        id: &str,
        state: &str,
        reason: Option<&str>,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE rollouts SET state = $1, reason = $2, updated_at = $3 WHERE id = $4 AND state = 'running'")
            .bind(state)
            .bind(reason)
            .bind(to_i64(now))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE rollout_targets SET state = 'cancelled', finished_at = $1
             WHERE rollout = $2 AND state = 'pending'",
        )
        .bind(to_i64(now))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

fn rollout_row(row: &sqlx::any::AnyRow) -> Result<RolloutRow, StoreError> {
    Ok(RolloutRow {
        id: row.try_get(0)?,
        plugin: row.try_get(1)?,
        version: row.try_get(2)?,
        created_by: row.try_get(3)?,
        created_at: to_u64(row.try_get(4)?),
        rate_per_min: to_u64(row.try_get(5)?),
        abort_failed_percent: to_u64(row.try_get(6)?),
        min_executed: to_u64(row.try_get(7)?),
        device_timeout_ms: to_u64(row.try_get(8)?),
        chunk_bytes: to_u64(row.try_get(9)?),
        state: row.try_get(10)?,
        reason: row.try_get(11)?,
        updated_at: to_u64(row.try_get(12)?),
    })
}
