//! Step 6 of the data path: the status messages a device publishes on
//! `<prefix>/<device>/status`, one per transition of a command (`accepted`,
//! `running`, `retrying`, then one final `succeeded` / `failed` / `rejected`
//! / `expired`).
//!
//! The device encodes them ([`Status::to_msgpack`]); the app side (CLI
//! `--wait`, `relay watch`, client library) decodes them
//! ([`Status::from_msgpack`]). The wire form is a msgpack map whose keys are
//! always written in the order `id, name, status, attempt, code, message,
//! reply, next_attempt_at, plugin, at`; absent optional fields are left out (the
//! decoder also accepts them as `nil`). Decoding ignores unknown keys and
//! keeps codes it does not know as [`Code::Other`], so an older app can read
//! a newer device. See `docs/protocol.md` for the full contract.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::msgpack::{MsgpackError, Reader, Writer, DEFAULT_MAX_DEPTH};

/// Where a command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Durably journaled; queued.
    Accepted,
    /// An attempt is running (`attempt` says which).
    Running,
    /// An attempt failed with a retryable error; the next one starts at
    /// `next_attempt_at`.
    Retrying,
    /// Final: the handler returned success (`reply` holds its reply, if any).
    Succeeded,
    /// Final: the last attempt failed, or a permanent error ended it.
    Failed,
    /// Final: never handed to a handler (bad envelope, unknown command, role
    /// not permitted, ...).
    Rejected,
    /// Final: `expires_at` passed before the command could (re)start.
    Expired,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Accepted,
        State::Running,
        State::Retrying,
        State::Succeeded,
        State::Failed,
        State::Rejected,
        State::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Accepted => "accepted",
            State::Running => "running",
            State::Retrying => "retrying",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Rejected => "rejected",
            State::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// True for the four states after which nothing more is published.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Succeeded | State::Failed | State::Rejected | State::Expired
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a command failed, was rejected or expired (the status `code` field).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// No handler listens to this name. Rejected, not retried.
    UnknownCommand,
    /// The topic's role may not run this command. Rejected, not retried.
    NotPermitted,
    /// The envelope is not valid: bad msgpack, nesting too deep, missing or
    /// wrong-typed field, invalid id or name, unknown kind. Rejected.
    InvalidPayload,
    /// The handler refused its payload (`error-kind::invalid-argument`).
    /// Failed, not retried.
    InvalidArgument,
    /// The handler reported a value out of range (`error-kind::out-of-bounds`).
    /// Failed, not retried.
    OutOfBounds,
    /// The envelope exceeds the size limit (rejected), or the handler's reply
    /// did (failed, not retried).
    TooLarge,
    /// The handler returned an error. Retried when it was transient.
    HandlerError,
    /// The handler ran out of time or fuel. Retried.
    TimedOut,
    /// The handler trapped (panic, stack overflow, memory limit, ABI
    /// violation). Retried.
    Trap,
    /// `expires_at` passed (with status `expired`).
    Expired,
    /// The host stopped (crash, power loss) while an attempt ran, and no
    /// attempt is left: the last of `max_attempts` attempts, or an RPC
    /// (never retried). Protects against a command that kills the host
    /// every time it runs (poison pill).
    Interrupted,
    /// A code this build does not know (from a newer device); kept verbatim.
    Other(String),
}

impl Code {
    pub const KNOWN: [Code; 11] = [
        Code::UnknownCommand,
        Code::NotPermitted,
        Code::InvalidPayload,
        Code::InvalidArgument,
        Code::OutOfBounds,
        Code::TooLarge,
        Code::HandlerError,
        Code::TimedOut,
        Code::Trap,
        Code::Expired,
        Code::Interrupted,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            Code::UnknownCommand => "unknown_command",
            Code::NotPermitted => "not_permitted",
            Code::InvalidPayload => "invalid_payload",
            Code::InvalidArgument => "invalid_argument",
            Code::OutOfBounds => "out_of_bounds",
            Code::TooLarge => "too_large",
            Code::HandlerError => "handler_error",
            Code::TimedOut => "timed_out",
            Code::Trap => "trap",
            Code::Expired => "expired",
            Code::Interrupted => "interrupted",
            Code::Other(s) => s,
        }
    }

    /// The known code spelled `s`, or [`Code::Other`].
    pub fn parse(s: &str) -> Code {
        Code::KNOWN
            .into_iter()
            .find(|c| c.as_str() == s)
            .unwrap_or_else(|| Code::Other(s.into()))
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A code compares equal to its wire spelling (`Code::Trap == "trap"`).
impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One status message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The command's id; empty when a rejected envelope's id was unreadable.
    pub id: String,
    /// The command's name; empty when unreadable.
    pub name: String,
    pub status: State,
    /// 1-based number of the attempt this status is about; 0 before the
    /// first attempt (`accepted`, or `rejected`/`expired` without a run).
    pub attempt: u32,
    pub code: Option<Code>,
    /// Human-readable detail (handler's error message, decode error, ...).
    pub message: Option<String>,
    /// The handler's reply: exactly one raw msgpack value.
    pub reply: Option<Vec<u8>>,
    /// With `retrying`: when the next attempt starts (unix ms).
    pub next_attempt_at: Option<u64>,
    /// The plugin version that ran the attempt, `name@version` (absent for
    /// native handlers, built-ins and commands that never ran). After an
    /// over-the-air update it tells which version answered.
    pub plugin: Option<String>,
    /// When this transition happened (unix ms, device clock).
    pub at: u64,
}

/// Why a status message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusDecodeError {
    #[error("status is not valid msgpack: {0}")]
    Msgpack(#[from] MsgpackError),
    #[error("status field `{0}` is missing")]
    Missing(&'static str),
    #[error("status field `{field}` is invalid: {source}")]
    Field {
        field: &'static str,
        source: MsgpackError,
    },
    #[error("unknown status {0:?}")]
    UnknownState(String),
}

impl Status {
    /// A status without code, message, reply or retry time.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        status: State,
        attempt: u32,
        at: u64,
    ) -> Self {
        Status {
            id: id.into(),
            name: name.into(),
            status,
            attempt,
            code: None,
            message: None,
            reply: None,
            next_attempt_at: None,
            plugin: None,
            at,
        }
    }

    pub fn with_code(mut self, code: Code, message: impl Into<String>) -> Self {
        self.code = Some(code);
        self.message = Some(message.into());
        self
    }

    pub fn with_reply(mut self, reply: Option<Vec<u8>>) -> Self {
        self.reply = reply;
        self
    }

    pub fn with_next_attempt_at(mut self, at: u64) -> Self {
        self.next_attempt_at = Some(at);
        self
    }

    pub fn with_plugin(mut self, plugin: Option<String>) -> Self {
        self.plugin = plugin;
        self
    }

    /// True when nothing more will be published about this command.
    pub fn is_final(&self) -> bool {
        self.status.is_final()
    }

    /// The wire form (a msgpack map; see the module doc for key order).
    pub fn to_msgpack(&self) -> Vec<u8> {
        let optional = self.code.is_some() as u32
            + self.message.is_some() as u32
            + self.reply.is_some() as u32
            + self.next_attempt_at.is_some() as u32
            + self.plugin.is_some() as u32;
        let mut w = Writer::with_capacity(64 + self.reply.as_ref().map_or(0, Vec::len));
        w.map_len(5 + optional);
        w.str("id").str(&self.id);
        w.str("name").str(&self.name);
        w.str("status").str(self.status.as_str());
        w.str("attempt").uint(self.attempt.into());
        if let Some(code) = &self.code {
            w.str("code").str(code.as_str());
        }
        if let Some(message) = &self.message {
            w.str("message").str(message);
        }
        if let Some(reply) = &self.reply {
            w.str("reply").raw(reply);
        }
        if let Some(next) = self.next_attempt_at {
            w.str("next_attempt_at").uint(next);
        }
        if let Some(plugin) = &self.plugin {
            w.str("plugin").str(plugin);
        }
        w.str("at").uint(self.at);
        w.into_vec()
    }

    /// Decodes a status (app side). Depth-bounded like every network input;
    /// unknown keys are ignored; `reply` is kept as its raw bytes.
    pub fn from_msgpack(bytes: &[u8]) -> Result<Status, StatusDecodeError> {
        crate::msgpack::validate(bytes, DEFAULT_MAX_DEPTH)?;
        let mut r = Reader::new(bytes);
        let entries = r.read_map_len()?;
        let (mut id, mut name, mut state, mut attempt, mut at) = (None, None, None, None, None);
        let mut status = Status::new("", "", State::Accepted, 0, 0);
        for _ in 0..entries {
            let Some(key) = r.read_key(DEFAULT_MAX_DEPTH)? else {
                // A non-string key is not ours: skip its value too.
                r.skip(DEFAULT_MAX_DEPTH)?;
                continue;
            };
            if key != b"reply" && r.read_nil()? {
                continue;
            }
            let field =
                |field: &'static str| move |source| StatusDecodeError::Field { field, source };
            match key {
                b"id" => id = Some(r.read_str().map_err(field("id"))?.to_string()),
                b"name" => name = Some(r.read_str().map_err(field("name"))?.to_string()),
                b"status" => {
                    let s = r.read_str().map_err(field("status"))?;
                    state = Some(
                        State::parse(s).ok_or_else(|| StatusDecodeError::UnknownState(s.into()))?,
                    );
                }
                b"attempt" => attempt = Some(r.read_u32().map_err(field("attempt"))?),
                b"at" => at = Some(r.read_u64().map_err(field("at"))?),
                b"code" => status.code = Some(Code::parse(r.read_str().map_err(field("code"))?)),
                b"message" => {
                    status.message = Some(r.read_str().map_err(field("message"))?.to_string())
                }
                b"reply" => status.reply = Some(r.read_raw(DEFAULT_MAX_DEPTH)?.to_vec()),
                b"next_attempt_at" => {
                    status.next_attempt_at = Some(r.read_u64().map_err(field("next_attempt_at"))?)
                }
                b"plugin" => {
                    status.plugin = Some(r.read_str().map_err(field("plugin"))?.to_string())
                }
                _ => r.skip(DEFAULT_MAX_DEPTH)?,
            }
        }
        status.id = id.ok_or(StatusDecodeError::Missing("id"))?;
        status.name = name.ok_or(StatusDecodeError::Missing("name"))?;
        status.status = state.ok_or(StatusDecodeError::Missing("status"))?;
        status.attempt = attempt.ok_or(StatusDecodeError::Missing("attempt"))?;
        status.at = at.ok_or(StatusDecodeError::Missing("at"))?;
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    fn full() -> Status {
        Status::new("req-1", "set_led", State::Retrying, 2, 1_700_000_000_000)
            .with_code(Code::HandlerError, "bus busy")
            .with_reply(Some(vec![0x81, 0xa2, b'o', b'k', 0xc3]))
            .with_next_attempt_at(1_700_000_005_000)
            .with_plugin(Some("leds@1.2.0".into()))
    }

    #[test]
    fn round_trips() {
        for s in [full(), Status::new("a", "b", State::Accepted, 0, 0)] {
            assert_eq!(Status::from_msgpack(&s.to_msgpack()), Ok(s));
        }
    }

    #[test]
    fn is_readable_by_a_generic_decoder() {
        let v: serde_json::Value = rmp_serde::from_slice(&full().to_msgpack()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": "req-1", "name": "set_led", "status": "retrying", "attempt": 2,
                "code": "handler_error", "message": "bus busy", "reply": {"ok": true},
                "next_attempt_at": 1_700_000_005_000u64, "plugin": "leds@1.2.0", "at": 1_700_000_000_000u64
            })
        );
    }

    #[test]
    fn decode_is_lenient_with_nil_unknown_keys_and_codes() {
        let mut w = Writer::new();
        w.map_len(9);
        w.str("future").array_len(1).uint(1);
        w.uint(7).str("non-string key");
        w.str("id").str("x");
        w.str("name").str("n");
        w.str("status").str("failed");
        w.str("attempt").uint(5);
        w.str("code").str("brand_new_code");
        w.str("message").nil();
        w.str("at").uint(9);
        let s = Status::from_msgpack(&w.into_vec()).unwrap();
        assert_eq!(s.code, Some(Code::Other("brand_new_code".into())));
        assert_eq!(s.message, None);
        assert!(s.is_final());
    }

    #[test]
    fn decode_errors_are_typed() {
        let mut w = Writer::new();
        w.map_len(1).str("id").str("x");
        assert_eq!(
            Status::from_msgpack(&w.into_vec()),
            Err(StatusDecodeError::Missing("name"))
        );
        let mut w = Writer::new();
        w.map_len(1).str("status").str("sleeping");
        assert_eq!(
            Status::from_msgpack(&w.into_vec()),
            Err(StatusDecodeError::UnknownState("sleeping".into()))
        );
        let mut w = Writer::new();
        w.map_len(1).str("attempt").str("one");
        assert!(matches!(
            Status::from_msgpack(&w.into_vec()),
            Err(StatusDecodeError::Field {
                field: "attempt",
                ..
            })
        ));
        assert!(matches!(
            Status::from_msgpack(&[0x91; 100]),
            Err(StatusDecodeError::Msgpack(_))
        ));
    }

    #[test]
    fn vocabulary() {
        for st in State::ALL {
            assert_eq!(State::parse(st.as_str()), Some(st));
        }
        let finals: Vec<_> = State::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            finals,
            [
                State::Succeeded,
                State::Failed,
                State::Rejected,
                State::Expired
            ]
        );
        for c in Code::KNOWN {
            assert_eq!(Code::parse(c.as_str()), c);
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Status::from_msgpack(&bytes);
        }

        #[test]
        fn round_trips_any(id in "[ -~]{0,70}", msg in proptest::option::of(".{0,50}"), attempt in any::<u32>(),
                           at in any::<u64>(), next in proptest::option::of(any::<u64>()), st in 0usize..7) {
            let mut s = Status::new(id, "n", State::ALL[st], attempt, at);
            s.message = msg;
            s.next_attempt_at = next;
            prop_assert_eq!(Status::from_msgpack(&s.to_msgpack()), Ok(s));
        }
    }
}
