//! A submitted request, checked before anything is stored: the device id,
//! the name rule, the id rule, the payload (JSON, or raw msgpack in base64),
//! its size once in an envelope, the kind and the TTL or RPC deadline. Every
//! refusal has a code and words the API returns as a 400.

use base64::Engine as _;
use relay_core::envelope::{Envelope, EnvelopeLimits, Kind};
use relay_core::plugin::Role;

/// What an app posts (`POST /v1/devices/{device}/requests`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// Chosen by the app for idempotent retries; the hub makes one if absent.
    pub id: Option<String>,
    pub name: String,
    /// The payload as JSON (`{"$bin": "<base64>"}` for bytes, as elsewhere).
    pub payload: Option<serde_json::Value>,
    /// Or the payload as raw msgpack, base64.
    pub payload_msgpack: Option<String>,
    /// `command` (default) or `rpc`.
    pub kind: Option<String>,
    /// Commands: how long the request may wait to start (default 30 days).
    pub ttl_ms: Option<u64>,
    /// RPCs: the caller's deadline (default 30 s); never queued beyond it.
    pub deadline_ms: Option<u64>,
}

/// Bounds of what the hub accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmitLimits {
    pub default_ttl_ms: u64,
    pub max_ttl_ms: u64,
    pub default_deadline_ms: u64,
    pub max_deadline_ms: u64,
    /// Largest envelope (the device refuses larger ones).
    pub max_envelope_bytes: usize,
}

pub const DAY_MS: u64 = 86_400_000;

impl Default for SubmitLimits {
    fn default() -> Self {
        SubmitLimits {
            default_ttl_ms: 30 * DAY_MS,
            max_ttl_ms: 30 * DAY_MS,
            default_deadline_ms: 30_000,
            max_deadline_ms: 3_600_000,
            max_envelope_bytes: relay_core::envelope::DEFAULT_MAX_ENVELOPE_BYTES,
        }
    }
}

/// A request ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    pub device: String,
    pub id: String,
    pub name: String,
    pub kind: Kind,
    /// The role topic the hub publishes on (the user's role, never theirs to pick).
    pub role: Role,
    pub payload: Vec<u8>,
    pub submitted_by: String,
    pub submitted_at: u64,
    pub expires_at: u64,
    pub deadline_at: Option<u64>,
}

impl NewRequest {
    /// The wire form the device receives.
    pub fn envelope(&self) -> Envelope {
        Envelope::new(self.id.clone(), self.name.clone(), self.submitted_at)
            .with_payload(self.payload.clone())
            .with_kind(self.kind)
            .with_expires_at(self.expires_at)
    }

    /// Same request (an idempotent retry), ignoring when it was submitted.
    pub fn same_as(&self, other: &NewRequest) -> bool {
        (&self.name, self.kind, &self.payload) == (&other.name, other.kind, &other.payload)
    }
}

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Device(String),
    #[error("invalid command name {name:?}: {reason}")]
    Name { name: String, reason: String },
    #[error("invalid request id: {0}")]
    Id(String),
    #[error("invalid payload: {0}")]
    Payload(String),
    #[error("the request is {size} bytes as an envelope, the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("invalid kind {0:?}: expected \"command\" or \"rpc\"")]
    Kind(String),
    #[error("{0}")]
    Ttl(String),
}

impl SubmitError {
    /// The machine-readable code in the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            SubmitError::Device(_) => "invalid_device",
            SubmitError::Name { .. } => "invalid_name",
            SubmitError::Id(_) => "invalid_id",
            SubmitError::Payload(_) => "invalid_payload",
            SubmitError::TooLarge { .. } => "too_large",
            SubmitError::Kind(_) => "invalid_kind",
            SubmitError::Ttl(_) => "invalid_ttl",
        }
    }
}

/// Checks `body` for `device`, sent by `user` holding `role`, at `now`.
pub fn validate(
    device: &str,
    body: SubmitBody,
    user: &str,
    role: Role,
    now: u64,
    limits: &SubmitLimits,
) -> Result<NewRequest, SubmitError> {
    relay_client::topics::validate_device(device)
        .map_err(|e| SubmitError::Device(e.to_string()))?;
    relay_core::name::validate_name(&body.name).map_err(|e| SubmitError::Name {
        name: body.name.clone(),
        reason: e.to_string(),
    })?;
    let id = body.id.unwrap_or_else(|| relay_client::new_request_id(now));
    relay_core::envelope::validate_id(&id).map_err(|e| SubmitError::Id(format!("{id:?}: {e}")))?;
    let payload = match (body.payload, body.payload_msgpack) {
        (Some(_), Some(_)) => {
            return Err(SubmitError::Payload(
                "give `payload` or `payload_msgpack`, not both".into(),
            ))
        }
        (Some(json), None) => relay_client::json::json_to_msgpack(&json)
            .map_err(|e| SubmitError::Payload(e.to_string()))?,
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| SubmitError::Payload(format!("payload_msgpack is not base64: {e}")))?,
        (None, None) => Vec::new(),
    };
    let kind = match body.kind.as_deref() {
        None | Some("command") => Kind::Command,
        Some("rpc") => Kind::Rpc,
        Some(other) => return Err(SubmitError::Kind(other.into())),
    };
    let (expires_at, deadline_at) = match kind {
        Kind::Command => {
            if body.deadline_ms.is_some() {
                return Err(SubmitError::Ttl(
                    "deadline_ms is for RPCs; a command has ttl_ms".into(),
                ));
            }
            let ttl = body.ttl_ms.unwrap_or(limits.default_ttl_ms);
            if ttl == 0 || ttl > limits.max_ttl_ms {
                return Err(SubmitError::Ttl(format!(
                    "ttl_ms must be 1..={} (30 days), got {ttl}",
                    limits.max_ttl_ms
                )));
            }
            (now.saturating_add(ttl), None)
        }
        Kind::Rpc => {
            if body.ttl_ms.is_some() {
                return Err(SubmitError::Ttl(
                    "an RPC has deadline_ms (it is never queued beyond it), not ttl_ms".into(),
                ));
            }
            let deadline = body.deadline_ms.unwrap_or(limits.default_deadline_ms);
            if deadline == 0 || deadline > limits.max_deadline_ms {
                return Err(SubmitError::Ttl(format!(
                    "deadline_ms must be 1..={}, got {deadline}",
                    limits.max_deadline_ms
                )));
            }
            let at = now.saturating_add(deadline);
            (at, Some(at))
        }
    };
    let request = NewRequest {
        device: device.into(),
        id,
        name: body.name,
        kind,
        role,
        payload,
        submitted_by: user.into(),
        submitted_at: now,
        expires_at,
        deadline_at,
    };
    let envelope = request.envelope();
    let size = envelope.to_msgpack().len();
    if size > limits.max_envelope_bytes {
        return Err(SubmitError::TooLarge {
            size,
            limit: limits.max_envelope_bytes,
        });
    }
    let envelope_limits = EnvelopeLimits {
        max_bytes: limits.max_envelope_bytes,
        ..EnvelopeLimits::default()
    };
    envelope
        .check(&envelope_limits)
        .map_err(|e| SubmitError::Payload(e.to_string()))?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn submit(body: serde_json::Value) -> Result<NewRequest, SubmitError> {
        let body: SubmitBody = serde_json::from_value(body).expect("body");
        validate(
            "d1",
            body,
            "alice",
            Role::Primary,
            1_000,
            &SubmitLimits::default(),
        )
    }

    #[test]
    fn a_good_request_gets_an_id_a_ttl_and_the_users_role() {
        let r = submit(json!({"name": "set_led", "payload": {"on": true}})).unwrap();
        assert_eq!(r.role, Role::Primary);
        assert_eq!(r.expires_at, 1_000 + 30 * DAY_MS);
        assert!(r.id.len() > 10);
        let rpc = submit(json!({"name": "ping", "kind": "rpc", "deadline_ms": 5000, "id": "q-1"}))
            .unwrap();
        assert_eq!((rpc.deadline_at, rpc.id.as_str()), (Some(6_000), "q-1"));
    }

    #[test]
    fn bad_input_is_refused_with_a_code() {
        let cases = [
            (json!({"name": "bad name"}), "invalid_name"),
            (json!({"name": "x", "id": "has space"}), "invalid_id"),
            (json!({"name": "x", "kind": "job"}), "invalid_kind"),
            (json!({"name": "x", "ttl_ms": 0}), "invalid_ttl"),
            (json!({"name": "x", "ttl_ms": 31 * DAY_MS}), "invalid_ttl"),
            (
                json!({"name": "x", "kind": "rpc", "ttl_ms": 5}),
                "invalid_ttl",
            ),
            (
                json!({"name": "x", "payload_msgpack": "!!"}),
                "invalid_payload",
            ),
            (
                json!({"name": "x", "payload": "a".repeat(300_000)}),
                "too_large",
            ),
        ];
        for (body, code) in cases {
            let err = submit(body.clone()).expect_err("refused");
            assert_eq!(err.code(), code, "{body}: {err}");
        }
        let err = validate(
            "bad/dev",
            SubmitBody {
                name: "x".into(),
                ..Default::default()
            },
            "a",
            Role::Admin,
            0,
            &SubmitLimits::default(),
        )
        .unwrap_err();
        assert_eq!(err.code(), "invalid_device");
    }
}
