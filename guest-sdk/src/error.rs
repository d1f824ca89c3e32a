//! What a handler returns when a command fails.
//!
//! Role in the data path: the last step of `handle`. The host only looks at
//! the kind to decide what happens next (it retries `transient` and nothing
//! else), so the constructors are named after that decision; the message
//! travels to the caller in the command's status.

use crate::bindings::relay::plugin::types::{ErrorKind as WitErrorKind, HandlerError, KvError};

/// Why a command failed; the host retries only [`ErrorKind::Transient`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth retrying later (device busy, resource not ready, ...).
    Transient,
    /// The payload is malformed or violates the command's contract.
    InvalidArgument,
    /// A value is outside its permitted bounds.
    OutOfBounds,
    /// Will never succeed; do not retry.
    Permanent,
}

/// A handler failure: a kind (drives retries) and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// A failure of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// Worth retrying: the host delivers the command again later.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }

    /// The payload is malformed or breaks the command's contract.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// A value is outside its permitted range.
    pub fn out_of_bounds(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OutOfBounds, message)
    }

    /// Will never succeed; the host does not retry.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// A full store is not fixed by retrying the same command: `permanent`.
impl From<KvError> for Error {
    fn from(err: KvError) -> Self {
        match err {
            KvError::TooLarge => Error::permanent("kv: key or value exceeds the per-entry limit"),
            KvError::QuotaExceeded => Error::permanent("kv: the plugin's store quota is exhausted"),
        }
    }
}

impl From<ErrorKind> for WitErrorKind {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Transient => WitErrorKind::Transient,
            ErrorKind::InvalidArgument => WitErrorKind::InvalidArgument,
            ErrorKind::OutOfBounds => WitErrorKind::OutOfBounds,
            ErrorKind::Permanent => WitErrorKind::Permanent,
        }
    }
}

impl From<Error> for HandlerError {
    fn from(err: Error) -> Self {
        HandlerError {
            kind: err.kind.into(),
            message: err.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_the_kind_the_host_retries_on() {
        assert_eq!(Error::transient("busy").kind(), ErrorKind::Transient);
        assert_eq!(
            Error::invalid_argument("x").kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(Error::out_of_bounds("x").kind(), ErrorKind::OutOfBounds);
        assert_eq!(Error::permanent("x").kind(), ErrorKind::Permanent);
    }

    #[test]
    fn maps_onto_the_world_handler_error() {
        let wit: HandlerError = Error::out_of_bounds("replicas = 20 is outside 1..=16").into();
        assert_eq!(wit.kind, WitErrorKind::OutOfBounds);
        assert_eq!(wit.message, "replicas = 20 is outside 1..=16");
        let wit: HandlerError = Error::transient("busy").into();
        assert_eq!(wit.kind, WitErrorKind::Transient);
    }

    #[test]
    fn kv_errors_are_permanent() {
        assert_eq!(Error::from(KvError::TooLarge).kind(), ErrorKind::Permanent);
        assert_eq!(
            Error::from(KvError::QuotaExceeded).kind(),
            ErrorKind::Permanent
        );
    }
}
