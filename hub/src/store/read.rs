//! Reads: one request with its history, a device's requests, the requests
//! still open (to rebuild the forwarder at start), devices and presence.

use relay_core::envelope::{Envelope, Kind};
use relay_core::plugin::Role;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{to_u64, Store, StoreError, OPEN};
use crate::state::HubState;

/// One request as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestView {
    pub device: String,
    pub id: String,
    pub name: String,
    pub kind: String,
    pub role: String,
    pub state: HubState,
    pub attempt: u64,
    pub code: Option<String>,
    pub message: Option<String>,
    /// The reply as JSON (binary as `{"$bin": ...}`).
    pub reply: Option<serde_json::Value>,
    pub submitted_by: String,
    pub submitted_at: u64,
    pub expires_at: u64,
    pub deadline_at: Option<u64>,
    pub updated_at: u64,
    /// Every transition, oldest first (only in single-request answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<TransitionView>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransitionView {
    pub at: u64,
    pub state: HubState,
    pub attempt: u64,
    pub code: Option<String>,
    pub message: Option<String>,
}

/// A device the hub has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceView {
    pub device: String,
    pub online: bool,
    pub boot: u64,
    pub session: u64,
    pub seen_at: u64,
}

/// Which of a device's requests to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub state: Option<HubState>,
    /// At most this many (default 100, at most 1,000).
    pub limit: Option<u32>,
    /// Skip this many first (paging).
    pub offset: Option<u32>,
}

/// A request not final yet, for the forwarder and the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    pub device: String,
    pub role: Role,
    pub envelope: Envelope,
    pub deadline_at: Option<u64>,
    pub state: HubState,
}

const COLUMNS: &str = "device, id, name, kind, role, state, attempt, code, message, reply,
    submitted_by, submitted_at, expires_at, deadline_at, updated_at, seq";

fn view(row: &AnyRow) -> Result<RequestView, StoreError> {
    let state: String = row.try_get("state")?;
    let reply: Option<Vec<u8>> = row.try_get("reply")?;
    Ok(RequestView {
        device: row.try_get("device")?,
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        role: row.try_get("role")?,
        state: HubState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("state {state:?}")))?,
        attempt: to_u64(row.try_get("attempt")?),
        code: row.try_get("code")?,
        message: row.try_get("message")?,
        reply: reply.map(|bytes| relay_client::json::msgpack_to_json(&bytes)),
        submitted_by: row.try_get("submitted_by")?,
        submitted_at: to_u64(row.try_get("submitted_at")?),
        expires_at: to_u64(row.try_get("expires_at")?),
        deadline_at: row.try_get::<Option<i64>, _>("deadline_at")?.map(to_u64),
        updated_at: to_u64(row.try_get("updated_at")?),
        history: None,
    })
}

/// An open request from a row holding `device, id, name, kind, role,
/// payload, submitted_at, expires_at, deadline_at, state`.
pub(super) fn open_request(row: &AnyRow) -> Result<OpenRequest, StoreError> {
    let kind: String = row.try_get("kind")?;
    let role: String = row.try_get("role")?;
    let state: String = row.try_get("state")?;
    let envelope = Envelope::new(
        row.try_get::<String, _>("id")?,
        row.try_get::<String, _>("name")?,
        to_u64(row.try_get("submitted_at")?),
    )
    .with_payload(row.try_get("payload")?)
    .with_kind(if kind == "rpc" {
        Kind::Rpc
    } else {
        Kind::Command
    })
    .with_expires_at(to_u64(row.try_get("expires_at")?));
    Ok(OpenRequest {
        device: row.try_get("device")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
        envelope,
        deadline_at: row.try_get::<Option<i64>, _>("deadline_at")?.map(to_u64),
        state: HubState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("state {state:?}")))?,
    })
}

impl RequestView {
    /// A request just stored, as its submitter sees it.
    pub fn queued(r: &crate::submit::NewRequest) -> RequestView {
        RequestView {
            device: r.device.clone(),
            id: r.id.clone(),
            name: r.name.clone(),
            kind: r.kind.as_str().to_owned(),
            role: r.role.as_str().to_owned(),
            state: HubState::Queued,
            attempt: 0,
            code: None,
            message: None,
            reply: None,
            submitted_by: r.submitted_by.clone(),
            submitted_at: r.submitted_at,
            expires_at: r.expires_at,
            deadline_at: r.deadline_at,
            updated_at: r.submitted_at,
            history: Some(vec![TransitionView {
                at: r.submitted_at,
                state: HubState::Queued,
                attempt: 0,
                code: None,
                message: None,
            }]),
        }
    }

    /// This view with the device's final `status` applied, as the store
    /// will record it (a final status ends any request not final, and
    /// replaces the hub's own `expired`); `None` if it changes nothing.
    pub fn finished_by(&self, status: &relay_core::status::Status, at: u64) -> Option<RequestView> {
        let state = HubState::from_device(status.status);
        let open = !self.state.is_final() || self.state == HubState::Expired;
        if !state.is_final() || !open || status.id != self.id {
            return None;
        }
        let code = status.code.as_ref().map(|c| c.as_str().to_owned());
        let mut view = self.clone();
        view.state = state;
        view.attempt = u64::from(status.attempt);
        view.code = code.clone();
        view.message = status.message.clone();
        view.reply = status
            .reply
            .as_ref()
            .map(|bytes| relay_client::json::msgpack_to_json(bytes));
        view.updated_at = at;
        if let Some(history) = &mut view.history {
            history.push(TransitionView {
                at: status.at,
                state,
                attempt: view.attempt,
                code,
                message: status.message.clone(),
            });
        }
        Some(view)
    }
}

impl Store {
    /// One request with its history.
    pub async fn get(&self, device: &str, id: &str) -> Result<Option<RequestView>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM requests WHERE device = $1 AND id = $2"
        ))
        .bind(device)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut request = view(&row)?;
        let seq: i64 = row.try_get("seq")?;
        let rows = sqlx::query(
            "SELECT at, state, attempt, code, message FROM transitions
             WHERE request_seq = $1 ORDER BY at, state",
        )
        .bind(seq)
        .fetch_all(self.pool())
        .await?;
        let mut history = Vec::with_capacity(rows.len());
        for row in rows {
            let state: String = row.try_get(1)?;
            history.push(TransitionView {
                at: to_u64(row.try_get(0)?),
                state: HubState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("state {state:?}")))?,
                attempt: to_u64(row.try_get(2)?),
                code: row.try_get(3)?,
                message: row.try_get(4)?,
            });
        }
        request.history = Some(history);
        Ok(Some(request))
    }

    /// A device's requests, newest first.
    pub async fn list(
        &self,
        device: &str,
        filter: &ListFilter,
    ) -> Result<Vec<RequestView>, StoreError> {
        let limit = i64::from(filter.limit.unwrap_or(100).min(1_000));
        let offset = i64::from(filter.offset.unwrap_or(0));
        let rows = match filter.state {
            Some(state) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM requests WHERE device = $1 AND state = $2
                     ORDER BY seq DESC LIMIT $3 OFFSET $4"
                ))
                .bind(device)
                .bind(state.as_str())
                .bind(limit)
                .bind(offset)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM requests WHERE device = $1 ORDER BY seq DESC LIMIT $2 OFFSET $3"
                ))
                .bind(device)
                .bind(limit)
                .bind(offset)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(view).collect()
    }

    /// Counts of a device's requests by state.
    pub async fn count_by_state(&self, device: &str) -> Result<Vec<(HubState, u64)>, StoreError> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) FROM requests WHERE device = $1 GROUP BY state")
                .bind(device)
                .fetch_all(self.pool())
                .await?;
        let mut counts = Vec::new();
        for row in rows {
            let state: String = row.try_get(0)?;
            if let Some(state) = HubState::parse(&state) {
                counts.push((state, to_u64(row.try_get(1)?)));
            }
        }
        Ok(counts)
    }

    /// Every request not final yet, in submission order.
    pub async fn open_requests(&self) -> Result<Vec<OpenRequest>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT device, id, name, kind, role, payload, submitted_at, expires_at,
                    deadline_at, state
             FROM requests WHERE state IN {OPEN} ORDER BY seq"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(open_request).collect()
    }

    /// Every device that ever announced itself.
    pub async fn devices(&self) -> Result<Vec<DeviceView>, StoreError> {
        let rows = sqlx::query(
            "SELECT device, online, boot, session, seen_at FROM devices ORDER BY device",
        )
        .fetch_all(self.pool())
        .await?;
        let mut devices = Vec::with_capacity(rows.len());
        for row in rows {
            devices.push(DeviceView {
                device: row.try_get(0)?,
                online: row.try_get::<i64, _>(1)? != 0,
                boot: to_u64(row.try_get(2)?),
                session: to_u64(row.try_get(3)?),
                seen_at: to_u64(row.try_get(4)?),
            });
        }
        Ok(devices)
    }
}
