//! Step 1 of the data path: decode and validate a command envelope, the
//! msgpack map an app publishes on `<prefix>/<device>/cmd/<role>`.
//!
//! ```text
//! { "id": "req-1", "name": "set_led", "kind": "command",
//!   "payload": <any msgpack value>, "sent_at": 1700000000000, "expires_at": 1700000030000 }
//! ```
//!
//! | key | type | rule |
//! |-----|------|------|
//! | `id` | string | required; 1..=64 printable ASCII characters without space (`!`..`~`), see [`validate_id`]; unique per device |
//! | `name` | string | required; the seed rule `[A-Za-z0-9_-]`, 1..=64 ([`crate::name`]) |
//! | `payload` | any | optional; handed to the handler as its original bytes |
//! | `kind` | string | optional, `command` (default) or `rpc`; `nil` = absent |
//! | `sent_at` | uint | required; unix ms (app clock) |
//! | `expires_at` | uint | optional; unix ms; `nil` = absent |
//!
//! Decisions:
//! * The role is never in the envelope: it comes from the topic, where the
//!   broker's ACL decides who may publish ([`Command::new`] takes it).
//! * Unknown keys are ignored, so newer apps can add fields without breaking
//!   older devices. A known key present twice is rejected (which `id` would
//!   we dedupe on?). Non-string keys are ignored like unknown ones.
//! * The payload is not decoded here, only delimited and validated
//!   (well-formed, the whole envelope nesting at most `max_depth` levels), so
//!   the handler gets exactly the bytes the app sent.
//! * Integers may use any msgpack integer encoding whose value is >= 0.
//! * Limits are checked before anything else: size first (`too_large`), then
//!   well-formedness and depth, then fields.
//!
//! Every failure is a [`Rejection`]: an [`EnvelopeError`] (with its status
//! [`Code`]: `too_large` for an oversize envelope, `invalid_payload` for
//! everything else) plus the `id` and `name` when they could still be read,
//! so the `rejected` status reaches the app that waits for that id. They are
//! read by a separate best-effort scan of the top-level map that survives
//! oversize and deeply nested values, but only trusts an `id` / `name` that
//! is itself valid and unambiguous; otherwise the status carries an empty
//! `id` (or `name`).

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::msgpack::{self, MsgpackError, Reader, Writer, DEFAULT_MAX_DEPTH};
use crate::name::{validate_name, NameError};
use crate::plugin::{Invocation, Role};
use crate::status::{Code, State, Status};

#[cfg(test)]
mod protocol_doc;
mod rejection;
#[cfg(test)]
mod tests;

pub use rejection::{EnvelopeError, Rejection};

/// Default largest envelope, in bytes (the whole msgpack map).
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 256 * 1024;

/// Longest id, in bytes (all permitted characters are ASCII).
pub const MAX_ID_LEN: usize = 64;

/// Limits applied to every incoming envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EnvelopeLimits {
    /// Largest accepted envelope in bytes; larger ones are `too_large`.
    pub max_bytes: usize,
    /// Deepest accepted nesting, counting the envelope map itself as 1.
    pub max_depth: usize,
}

impl Default for EnvelopeLimits {
    fn default() -> Self {
        EnvelopeLimits {
            max_bytes: DEFAULT_MAX_ENVELOPE_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// A command, or a request that expects a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Kind {
    /// Durable: queued in FIFO order, retried on transient failure.
    #[default]
    Command,
    /// Request/response: never retried, and does not wait behind a command
    /// that is sleeping until its next attempt.
    Rpc,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Rpc => "rpc",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Command, Kind::Rpc]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is {len} bytes long, the limit is {MAX_ID_LEN}")]
    TooLong { len: usize },
    #[error("id contains {ch:?}; only printable ASCII without space is allowed")]
    InvalidChar { ch: char },
}

/// Validates a command id: 1..=64 characters from `!` (0x21) to `~` (0x7e).
/// Wider than the name rule so UUIDs, ULIDs and `app:123`-style ids all fit,
/// while still being safe to log, print and use as a storage key.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { len: id.len() });
    }
    match id.chars().find(|c| !matches!(c, '!'..='~')) {
        Some(ch) => Err(IdError::InvalidChar { ch }),
        None => Ok(()),
    }
}

/// A decoded, validated command envelope (the wire fields only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: String,
    pub name: String,
    pub kind: Kind,
    /// Exactly one raw msgpack value, or empty when the envelope had none.
    pub payload: Vec<u8>,
    /// Unix ms, app clock.
    pub sent_at: u64,
    /// Unix ms: the first instant at which the command must no longer run.
    pub expires_at: Option<u64>,
}

impl Envelope {
    /// A `command` without payload or expiry.
    pub fn new(id: impl Into<String>, name: impl Into<String>, sent_at: u64) -> Self {
        Envelope {
            id: id.into(),
            name: name.into(),
            kind: Kind::Command,
            payload: Vec::new(),
            sent_at,
            expires_at: None,
        }
    }

    /// Sets the payload: exactly one encoded msgpack value (or empty for none).
    pub fn with_payload(mut self, payload: Vec<u8>) -> Self {
        self.payload = payload;
        self
    }

    pub fn with_kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    pub fn with_expires_at(mut self, expires_at: u64) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Decodes with the default limits. See [`decode`].
    pub fn from_msgpack(bytes: &[u8]) -> Result<Envelope, Rejection> {
        decode(bytes, &EnvelopeLimits::default())
    }

    /// The wire form (app side: `relay send`, the client library). Keys in
    /// the order `id, name, kind, payload, sent_at, expires_at`; `payload`
    /// and `expires_at` are left out when absent. The payload is copied as
    /// is; use [`Envelope::check`] to validate before sending.
    pub fn to_msgpack(&self) -> Vec<u8> {
        let entries = 4 + !self.payload.is_empty() as u32 + self.expires_at.is_some() as u32;
        let mut w =
            Writer::with_capacity(48 + self.id.len() + self.name.len() + self.payload.len());
        w.map_len(entries);
        w.str("id").str(&self.id);
        w.str("name").str(&self.name);
        w.str("kind").str(self.kind.as_str());
        if !self.payload.is_empty() {
            w.str("payload").raw(&self.payload);
        }
        w.str("sent_at").uint(self.sent_at);
        if let Some(expires_at) = self.expires_at {
            w.str("expires_at").uint(expires_at);
        }
        w.into_vec()
    }

    /// Checks this envelope exactly as a device with `limits` would, so an
    /// app can refuse to send what would be rejected.
    pub fn check(&self, limits: &EnvelopeLimits) -> Result<(), EnvelopeError> {
        decode(&self.to_msgpack(), limits)
            .map(|_| ())
            .map_err(|r| r.error)
    }
}

/// Decodes and validates one envelope. See the module doc for the rules and
/// the code of every failure.
pub fn decode(bytes: &[u8], limits: &EnvelopeLimits) -> Result<Envelope, Rejection> {
    decode_strict(bytes, limits).map_err(|error| Rejection::new(bytes, error))
}

fn decode_strict(bytes: &[u8], limits: &EnvelopeLimits) -> Result<Envelope, EnvelopeError> {
    if bytes.len() > limits.max_bytes {
        return Err(EnvelopeError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let depth = limits.max_depth;
    msgpack::validate(bytes, depth)?;
    let mut r = Reader::new(bytes);
    let entries = r.read_map_len().map_err(|_| EnvelopeError::NotAMap)?;

    let mut id: Option<&str> = None;
    let mut name: Option<&str> = None;
    let mut kind: Option<Kind> = None;
    let mut payload: Option<&[u8]> = None;
    let mut sent_at: Option<u64> = None;
    let mut expires_at: Option<u64> = None;
    let mut seen = Seen::default();

    for _ in 0..entries {
        let Some(key) = r.read_key(depth)? else {
            r.skip(depth)?;
            continue;
        };
        let wrong = |field: &'static str| move |source| EnvelopeError::WrongType { field, source };
        match key {
            b"id" => {
                seen.first("id")?;
                let s = r.read_str().map_err(wrong("id"))?;
                validate_id(s)?;
                id = Some(s);
            }
            b"name" => {
                seen.first("name")?;
                let s = r.read_str().map_err(wrong("name"))?;
                validate_name(s)?;
                name = Some(s);
            }
            b"kind" => {
                seen.first("kind")?;
                if !r.read_nil()? {
                    let s = r.read_str().map_err(wrong("kind"))?;
                    kind = Some(Kind::parse(s).ok_or_else(|| EnvelopeError::UnknownKind(clip(s)))?);
                }
            }
            b"payload" => {
                seen.first("payload")?;
                payload = Some(r.read_raw(depth)?);
            }
            b"sent_at" => {
                seen.first("sent_at")?;
                sent_at = Some(r.read_u64().map_err(wrong("sent_at"))?);
            }
            b"expires_at" => {
                seen.first("expires_at")?;
                if !r.read_nil()? {
                    expires_at = Some(r.read_u64().map_err(wrong("expires_at"))?);
                }
            }
            _ => r.skip(depth)?,
        }
    }
    Ok(Envelope {
        id: id.ok_or(EnvelopeError::Missing("id"))?.to_string(),
        name: name.ok_or(EnvelopeError::Missing("name"))?.to_string(),
        kind: kind.unwrap_or_default(),
        payload: payload.map(<[u8]>::to_vec).unwrap_or_default(),
        sent_at: sent_at.ok_or(EnvelopeError::Missing("sent_at"))?,
        expires_at,
    })
}

/// Which known keys a map has shown so far (to reject duplicates).
#[derive(Default)]
struct Seen(Vec<&'static str>);

impl Seen {
    fn first(&mut self, key: &'static str) -> Result<(), EnvelopeError> {
        if self.0.contains(&key) {
            return Err(EnvelopeError::DuplicateKey(key));
        }
        self.0.push(key);
        Ok(())
    }
}

/// At most 64 characters of untrusted text, for error messages.
fn clip(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => alloc::format!("{}...", &s[..i]),
        None => s.into(),
    }
}

/// A command this device accepted: the envelope plus what the device adds
/// (the role from the topic, its arrival sequence number and time). This is
/// what the journal records and the scheduler queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Arrival order on this device (assigned by the scheduler).
    pub seq: u64,
    pub id: String,
    pub name: String,
    pub role: Role,
    pub kind: Kind,
    /// Raw msgpack; empty when the envelope had no payload.
    pub payload: Vec<u8>,
    pub sent_at: u64,
    pub expires_at: Option<u64>,
    /// Unix ms, device clock.
    pub accepted_at: u64,
}

impl Command {
    pub fn new(envelope: Envelope, role: Role, seq: u64, accepted_at: u64) -> Self {
        let Envelope {
            id,
            name,
            kind,
            payload,
            sent_at,
            expires_at,
        } = envelope;
        Command {
            seq,
            id,
            name,
            role,
            kind,
            payload,
            sent_at,
            expires_at,
            accepted_at,
        }
    }

    /// True once `now` has reached `expires_at`.
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// What the handler receives for attempt number `attempt` (1-based).
    pub fn invocation(&self, attempt: u32) -> Invocation {
        Invocation {
            id: self.id.clone(),
            name: self.name.clone(),
            payload: self.payload.clone(),
            attempt,
            role: self.role,
        }
    }

    /// A status about this command (no code, message or reply yet).
    pub fn status(&self, state: State, attempt: u32, at: u64) -> Status {
        Status::new(self.id.clone(), self.name.clone(), state, attempt, at)
    }
}

impl From<NameError> for EnvelopeError {
    fn from(e: NameError) -> Self {
        EnvelopeError::InvalidName(e)
    }
}

impl From<IdError> for EnvelopeError {
    fn from(e: IdError) -> Self {
        EnvelopeError::InvalidId(e)
    }
}

impl From<MsgpackError> for EnvelopeError {
    fn from(e: MsgpackError) -> Self {
        EnvelopeError::Msgpack(e)
    }
}

impl EnvelopeError {
    /// The status code of a `rejected` status for this failure.
    pub fn code(&self) -> Code {
        match self {
            EnvelopeError::TooLarge { .. } => Code::TooLarge,
            _ => Code::InvalidPayload,
        }
    }
}
