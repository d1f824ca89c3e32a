//! The WIT world's types (`wit/relay-plugin.wit`) in plain Rust, shared by both
//! engines, the registry and the harness. Engines convert to and from these at
//! their edge, so everything past the engine is engine-agnostic.

use alloc::{string::String, vec::Vec};
use core::fmt;

/// Who sent a command; from the MQTT topic, never from the payload.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Primary,
    Secondary,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Primary, Role::Secondary];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Primary => "primary",
            Role::Secondary => "secondary",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One command a plugin handles, as reported by `describe`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommandSpec {
    pub name: String,
    pub roles: Vec<Role>,
    pub budget_ms: Option<u32>,
}

impl CommandSpec {
    pub fn allows(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// A plugin's identity and command table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub commands: Vec<CommandSpec>,
}

/// One delivery of a command to a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub id: String,
    pub name: String,
    /// Raw msgpack; empty when the command carried no payload.
    pub payload: Vec<u8>,
    /// 1-based attempt number.
    pub attempt: u32,
    pub role: Role,
}

/// The handler's own classification of a failure. Only `Transient` is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    Transient,
    InvalidArgument,
    OutOfBounds,
    Permanent,
}

impl ErrorKind {
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::InvalidArgument => "invalid-argument",
            ErrorKind::OutOfBounds => "out-of-bounds",
            ErrorKind::Permanent => "permanent",
        }
    }
}

/// An error a handler returned on purpose (as opposed to a trap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub kind: ErrorKind,
    pub message: String,
}

/// `Ok(Some(msgpack))` is a reply, `Ok(None)` success without one.
pub type HandlerResult = Result<Option<Vec<u8>>, HandlerError>;

/// An event a plugin asked the host to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    /// msgpack bytes.
    pub payload: Vec<u8>,
}

/// Everything one call produced: the handler's result plus the events it
/// emitted (published by the host only after the call returns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    pub result: HandlerResult,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("key or value exceeds the per-entry limit")]
    TooLarge,
    #[error("the plugin's kv quota would be exceeded")]
    QuotaExceeded,
}
