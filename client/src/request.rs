//! What an app sends: where to connect ([`ClientOptions`]), the command
//! ([`CommandRequest`], [`Payload`]), and the envelope it becomes, built and
//! checked exactly as the device will decode it ([`build_envelope`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relay_core::envelope::{validate_id, Envelope, EnvelopeLimits, Kind};
use relay_core::name::validate_name;
use relay_core::plugin::Role;

use crate::json;
use crate::topics::DEFAULT_PREFIX;
use crate::ClientError;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub host: String,
    pub port: u16,
    /// Default: `relay-app-<random>`.
    pub client_id: Option<String>,
    /// Topic prefix, default `relay`; must match the devices'.
    pub prefix: String,
    pub credentials: Option<(String, String)>,
    /// TLS (CA, client identity); `None`: plain TCP.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Limit for the first connection (TCP + CONNACK).
    pub connect_timeout: Duration,
    /// Limit for the broker's SUBACK / PUBACK.
    pub ack_timeout: Duration,
    pub keep_alive: Duration,
}

impl ClientOptions {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            client_id: None,
            prefix: DEFAULT_PREFIX.into(),
            credentials: None,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(30),
        }
    }
}

/// The command's payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Payload {
    #[default]
    None,
    /// Encoded to msgpack before sending.
    Json(serde_json::Value),
    /// Exactly one encoded msgpack value.
    Msgpack(Vec<u8>),
}

/// One command to send. Build with [`CommandRequest::new`] and the builder methods.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRequest {
    pub name: String,
    pub payload: Payload,
    /// The topic level the command is published under (the broker's ACL decides who may).
    pub role: Role,
    /// Request/response: never retried by the device.
    pub rpc: bool,
    /// Sets `expires_at = now + ttl`.
    pub ttl: Option<Duration>,
    /// Default: a fresh unique id.
    pub id: Option<String>,
}

impl CommandRequest {
    /// A command with no payload, role `admin`, no expiry.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            payload: Payload::None,
            role: Role::Admin,
            rpc: false,
            ttl: None,
            id: None,
        }
    }

    pub fn json(mut self, value: serde_json::Value) -> Self {
        self.payload = Payload::Json(value);
        self
    }

    pub fn msgpack(mut self, bytes: Vec<u8>) -> Self {
        self.payload = Payload::Msgpack(bytes);
        self
    }

    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    pub fn rpc(mut self, rpc: bool) -> Self {
        self.rpc = rpc;
        self
    }

    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// Builds and checks the envelope exactly as the device will decode it.
pub fn build_envelope(request: &CommandRequest, now_ms: u64) -> Result<Envelope, ClientError> {
    validate_name(&request.name).map_err(|e| ClientError::InvalidName {
        name: request.name.clone(),
        reason: e.to_string(),
    })?;
    let id = request.id.clone().unwrap_or_else(|| new_request_id(now_ms));
    validate_id(&id).map_err(|e| ClientError::InvalidCommand(format!("id {id:?}: {e}")))?;
    let payload = match &request.payload {
        Payload::None => Vec::new(),
        Payload::Json(value) => json::json_to_msgpack(value)
            .map_err(|e| ClientError::InvalidCommand(format!("payload: {e}")))?,
        Payload::Msgpack(bytes) => bytes.clone(),
    };
    let kind = if request.rpc {
        Kind::Rpc
    } else {
        Kind::Command
    };
    let mut envelope = Envelope::new(id, request.name.clone(), now_ms)
        .with_payload(payload)
        .with_kind(kind);
    if let Some(ttl) = request.ttl {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        envelope = envelope.with_expires_at(now_ms.saturating_add(ttl_ms));
    }
    envelope
        .check(&EnvelopeLimits::default())
        .map_err(|e| ClientError::InvalidCommand(e.to_string()))?;
    Ok(envelope)
}

/// A fresh request id: unix ms (hex, so ids sort by time) and 64 random bits.
pub fn new_request_id(now_ms: u64) -> String {
    format!("{now_ms:011x}-{:016x}", rand::random::<u64>())
}

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn envelope_is_checked_before_sending() {
        let ok = build_envelope(
            &CommandRequest::new("echo")
                .json(serde_json::json!({"a": 1}))
                .ttl(Duration::from_secs(30)),
            1_000,
        )
        .unwrap();
        assert_eq!(ok.expires_at, Some(31_000));
        assert_eq!(ok.kind, Kind::Command);
        assert!(matches!(
            build_envelope(&CommandRequest::new("bad name"), 0),
            Err(ClientError::InvalidName { .. })
        ));
        assert!(matches!(
            build_envelope(&CommandRequest::new("x").id("has space"), 0),
            Err(ClientError::InvalidCommand(_))
        ));
        let rpc = build_envelope(&CommandRequest::new("x").rpc(true).id("fixed"), 5).unwrap();
        assert_eq!((rpc.kind, rpc.id.as_str()), (Kind::Rpc, "fixed"));
        let decoded = Envelope::from_msgpack(&rpc.to_msgpack()).unwrap();
        assert_eq!(decoded, rpc);
    }

    #[test]
    fn request_ids_are_unique_and_valid() {
        let ids: HashSet<_> = (0..1000).map(|_| new_request_id(unix_ms())).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| validate_id(id).is_ok()));
    }
}
