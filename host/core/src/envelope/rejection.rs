//! Why an envelope was refused, and the `rejected` status that says so.
//!
//! The app waits for a status carrying the `id` it sent, so a rejection
//! carries the id whenever it can still be read. That is decided by
//! [`header_fields`], a best-effort scan of the top-level map that tolerates
//! what made the strict decode fail (an oversize buffer, a value nested
//! 10,000 levels deep, a bad field after the id) and runs in O(1) memory.

use alloc::string::{String, ToString};

use super::{validate_id, IdError};
use crate::msgpack::{MsgpackError, Reader, DEFAULT_MAX_DEPTH};
use crate::name::{validate_name, NameError};
use crate::status::{Code, State, Status};

/// One reason to refuse an envelope. [`EnvelopeError::code`] gives its status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// `too_large`.
    #[error("envelope is {size} bytes, the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    /// `invalid_payload`: not msgpack, truncated, nested too deep, or bytes
    /// after the map.
    #[error("envelope is not valid msgpack: {0}")]
    Msgpack(MsgpackError),
    /// `invalid_payload`.
    #[error("envelope is not a msgpack map")]
    NotAMap,
    /// `invalid_payload`.
    #[error("envelope field `{0}` is missing")]
    Missing(&'static str),
    /// `invalid_payload`.
    #[error("envelope field `{field}` has the wrong type: {source}")]
    WrongType {
        field: &'static str,
        source: MsgpackError,
    },
    /// `invalid_payload`.
    #[error("envelope field `{0}` appears twice")]
    DuplicateKey(&'static str),
    /// `invalid_payload`.
    #[error("invalid id: {0}")]
    InvalidId(IdError),
    /// `invalid_payload`.
    #[error("invalid command name: {0}")]
    InvalidName(NameError),
    /// `invalid_payload`.
    #[error("unknown kind {0:?} (expected \"command\" or \"rpc\")")]
    UnknownKind(String),
}

/// A refused envelope: the reason plus whatever identity could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The envelope's id, if it could be read and is valid.
    pub id: Option<String>,
    /// The envelope's command name, if it could be read and is valid.
    pub name: Option<String>,
    pub error: EnvelopeError,
}

impl Rejection {
    pub(super) fn new(bytes: &[u8], error: EnvelopeError) -> Self {
        let (id, name) = header_fields(bytes);
        Rejection { id, name, error }
    }

    pub fn code(&self) -> Code {
        self.error.code()
    }

    /// The `rejected` status to publish (attempt 0; empty `id` / `name` when
    /// unreadable; the error's text as `message`).
    pub fn to_status(&self, at: u64) -> Status {
        Status::new(
            self.id.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
            State::Rejected,
            0,
            at,
        )
        .with_code(self.code(), self.error.to_string())
    }
}

impl core::fmt::Display for Rejection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.id {
            Some(id) => write!(f, "command {id:?} rejected: {}", self.error),
            None => write!(f, "command rejected: {}", self.error),
        }
    }
}

/// Best-effort `(id, name)` of a possibly broken envelope: walks the
/// top-level map entry by entry and stops at the first entry it cannot
/// read. A field counts only if it is a string passing its rule and appears
/// once (a second `id` makes the id ambiguous, hence unknown).
pub(crate) fn header_fields(bytes: &[u8]) -> (Option<String>, Option<String>) {
    let mut r = Reader::new(bytes);
    let Ok(entries) = r.read_map_len() else {
        return (None, None);
    };
    let mut id: Field<'_> = Field::Unseen;
    let mut name: Field<'_> = Field::Unseen;
    for _ in 0..entries {
        let step = match r.read_key(DEFAULT_MAX_DEPTH) {
            Err(_) => break,
            Ok(Some(b"id")) => id.read(&mut r, |s| validate_id(s).is_ok()),
            Ok(Some(b"name")) => name.read(&mut r, |s| validate_name(s).is_ok()),
            Ok(_) => r.skip_unbounded(),
        };
        if step.is_err() {
            break;
        }
    }
    (id.into_value(), name.into_value())
}

/// One header field as the scan saw it.
enum Field<'a> {
    Unseen,
    Valid(&'a str),
    /// Invalid, or present more than once.
    Unusable,
}

impl<'a> Field<'a> {
    fn read(
        &mut self,
        r: &mut Reader<'a>,
        valid: impl Fn(&str) -> bool,
    ) -> Result<(), MsgpackError> {
        let before = r.clone();
        let value = r.read_str();
        *self = match (&*self, value) {
            (Field::Unseen, Ok(s)) if valid(s) => Field::Valid(s),
            (_, Ok(_)) => Field::Unusable,
            (_, Err(_)) => {
                // Not a string: skip whatever it is.
                *r = before;
                r.skip_unbounded()?;
                Field::Unusable
            }
        };
        Ok(())
    }

    fn into_value(self) -> Option<String> {
        match self {
            Field::Valid(s) => Some(s.into()),
            _ => None,
        }
    }
}
