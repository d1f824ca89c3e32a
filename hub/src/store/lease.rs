//! What several hub instances on one database share beyond the requests:
//! per-device leases (only the holder forwards a device's requests, so
//! per-device order holds while instances come and go) and cancel asks
//! (a cancel that reached an instance which does not hold the device's
//! lease waits here for the holder). Also the reads the holder polls:
//! requests submitted through other instances, and states recorded by
//! other instances (statuses arrive at any instance through a shared
//! subscription). These are immediate statements on the pool, not group
//! commits: they are few and their answer is needed now.

use std::collections::BTreeSet;

use sqlx::Row;

use super::read::open_request;
use super::{to_i64, OpenRequest, Store, StoreError, OPEN};
use crate::state::HubState;

impl Store {
    /// Extends every lease `owner` holds to `until`; returns the devices
    /// it holds now (a lease another instance took is no longer among
    /// them).
    pub async fn renew_leases(
        &self,
        owner: &str,
        until: u64,
    ) -> Result<BTreeSet<String>, StoreError> {
        sqlx::query("UPDATE leases SET until = $1 WHERE owner = $2")
            .bind(to_i64(until))
            .bind(owner)
            .execute(self.pool())
            .await?;
        let rows = sqlx::query("SELECT device FROM leases WHERE owner = $1")
            .bind(owner)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<String, _>(0)?))
            .collect()
    }

    /// Takes `device`'s lease for `owner` until `until` if nobody holds it,
    /// its holder let it run out (before `now`), or `owner` holds it
    /// already; `true` if `owner` holds it now.
    pub async fn claim_lease(
        &self,
        device: &str,
        owner: &str,
        until: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "INSERT INTO leases (device, owner, until) VALUES ($1, $2, $3)
             ON CONFLICT (device) DO UPDATE SET owner = excluded.owner, until = excluded.until
             WHERE leases.until < $4 OR leases.owner = excluded.owner
             RETURNING owner",
        )
        .bind(device)
        .bind(owner)
        .bind(to_i64(until))
        .bind(to_i64(now))
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// Devices with open requests whose lease nobody holds at `now`.
    pub async fn unleased_devices(&self, now: u64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT DISTINCT r.device FROM requests r
             LEFT JOIN leases l ON l.device = r.device
             WHERE r.state IN {OPEN} AND (l.device IS NULL OR l.until < $1)"
        ))
        .bind(to_i64(now))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<String, _>(0)?))
            .collect()
    }

    /// `device`'s open requests, in submission order.
    pub async fn open_requests_of(&self, device: &str) -> Result<Vec<OpenRequest>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT seq, device, id, name, kind, role, payload, submitted_at, expires_at,
                    deadline_at, state
             FROM requests WHERE device = $1 AND state IN {OPEN} ORDER BY seq"
        ))
        .bind(device)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(open_request).collect()
    }

    /// Requests still `queued` for devices `owner` holds, stored after
    /// sequence number `after`, with their sequence numbers.
    pub async fn queued_after(
        &self,
        owner: &str,
        after: i64,
    ) -> Result<Vec<(i64, OpenRequest)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.seq, r.device, r.id, r.name, r.kind, r.role, r.payload, r.submitted_at,
                    r.expires_at, r.deadline_at, r.state
             FROM requests r JOIN leases l ON l.device = r.device
             WHERE l.owner = $1 AND r.state = 'queued' AND r.seq > $2 ORDER BY r.seq",
        )
        .bind(owner)
        .bind(after)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get::<i64, _>("seq")?, open_request(row)?)))
            .collect()
    }

    /// `(device, id, state)` of requests of devices `owner` holds that the
    /// device has spoken about, changed at or after `since`.
    pub async fn heard_since(
        &self,
        owner: &str,
        since: u64,
    ) -> Result<Vec<(String, String, HubState)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.device, r.id, r.state FROM requests r
             JOIN leases l ON l.device = r.device
             WHERE l.owner = $1 AND r.updated_at >= $2 AND r.state NOT IN ('queued', 'sent')",
        )
        .bind(owner)
        .bind(to_i64(since))
        .fetch_all(self.pool())
        .await?;
        let mut heard = Vec::with_capacity(rows.len());
        for row in rows {
            let state: String = row.try_get(2)?;
            let state = HubState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("state {state:?}")))?;
            heard.push((row.try_get(0)?, row.try_get(1)?, state));
        }
        Ok(heard)
    }

    /// Asks the holder of `device`'s lease to cancel `id`.
    pub async fn ask_cancel(&self, device: &str, id: &str, now: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cancel_asks (device, id, asked_at) VALUES ($1, $2, $3)
             ON CONFLICT (device, id) DO NOTHING",
        )
        .bind(device)
        .bind(id)
        .bind(to_i64(now))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Cancel asks for devices `owner` holds.
    pub async fn cancel_asks(&self, owner: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.device, c.id FROM cancel_asks c JOIN leases l ON l.device = c.device
             WHERE l.owner = $1",
        )
        .bind(owner)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// The holder has answered a cancel ask (the request's state says how).
    pub async fn drop_cancel_ask(&self, device: &str, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM cancel_asks WHERE device = $1 AND id = $2")
            .bind(device)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
