//! What the journal's opaque records mean: the typed [`Record`]s the
//! scheduler emits (step 3) and rebuilds itself from after a restart, and
//! their byte encoding.
//!
//! # Encoding (format 1)
//!
//! ```text
//! [tag: u8][body: one msgpack array, positional fields]
//! ```
//!
//! | tag | record | body |
//! |-----|--------|------|
//! | `0x01` | [`Record::Accepted`] | `[seq, id, name, role, kind, sent_at, expires_at\|nil, accepted_at, payload: bin]` |
//! | `0x02` | [`Record::Started`]  | `[id, attempt, at]` |
//! | `0x03` | [`Record::Retrying`] | `[id, attempt, next_attempt_at, code, message]` |
//! | `0x04` | [`Record::Finished`] | `[id, name, status, attempt, code\|nil, message\|nil, reply: bin\|nil, at, plugin?]` (the plugin version that ran it, when known) |
//! | `0x05` | [`Record::Delivered`] | `[id]` |
//!
//! The tag byte is the version: a record whose fields change gets a new tag
//! and the decoder keeps reading the old ones, so a device upgraded in place
//! replays the journal its previous version wrote. Raw msgpack (`payload`,
//! `reply`) is stored as `bin`, so the body never nests (depth 1) and a
//! record is decoded without walking user data. Positional arrays keep
//! records small; the journal is not a wire format, apps never see it.
//!
//! Decoding never panics: the journal's CRC framing already drops damaged
//! records, but a record that passes the CRC and still does not decode (a
//! bug, or a downgrade) is a typed [`RecordError`] the caller can skip.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::envelope::{Command, Kind};
use crate::msgpack::{self, MsgpackError, Reader, Writer};
use crate::plugin::Role;
use crate::status::{Code, State, Status};

const TAG_ACCEPTED: u8 = 0x01;
const TAG_STARTED: u8 = 0x02;
const TAG_RETRYING: u8 = 0x03;
const TAG_FINISHED: u8 = 0x04;
const TAG_DELIVERED: u8 = 0x05;

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A command was accepted (written before its PUBACK leaves).
    Accepted(Command),
    /// Attempt `attempt` (1-based) of command `id` started at `at`. Present
    /// without a later `Retrying`/`Finished` after a restart: the host
    /// stopped during that attempt.
    Started { id: String, attempt: u32, at: u64 },
    /// Attempt `attempt` failed with a retryable error; the next one is due
    /// at `next_attempt_at`.
    Retrying {
        id: String,
        attempt: u32,
        next_attempt_at: u64,
        code: Code,
        message: String,
    },
    /// The final outcome: a final [`Status`] (succeeded, failed, rejected or
    /// expired), kept for dedupe and re-published on a duplicate.
    Finished(Status),
    /// The broker acknowledged the final status of `id` (its PUBACK came
    /// back). Written without waiting for a sync: losing it only means the
    /// status is published once more after a restart. A `Finished` without
    /// a later `Delivered` is published again when the host starts, so a
    /// crash between the outcome and its PUBACK never loses the status.
    Delivered { id: String },
}

/// Why record bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("empty journal record")]
    Empty,
    #[error("unknown journal record tag 0x{0:02x} (written by a newer version?)")]
    UnknownTag(u8),
    #[error("journal record 0x{tag:02x} is malformed: {source}")]
    Malformed { tag: u8, source: MsgpackError },
    #[error("journal record 0x{tag:02x} has {found} fields, expected {expected}")]
    Arity { tag: u8, expected: u32, found: u32 },
    #[error("journal record field `{0}` holds an invalid value")]
    InvalidField(&'static str),
}

impl Record {
    /// The command id this record is about.
    pub fn id(&self) -> &str {
        match self {
            Record::Accepted(cmd) => &cmd.id,
            Record::Started { id, .. } | Record::Retrying { id, .. } => id,
            Record::Finished(status) => &status.id,
            Record::Delivered { id } => id,
        }
    }

    /// The record's bytes (tag + body), as handed to [`super::Storage::append`].
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        let tag = match self {
            Record::Accepted(c) => {
                w.array_len(9)
                    .uint(c.seq)
                    .str(&c.id)
                    .str(&c.name)
                    .str(c.role.as_str());
                w.str(c.kind.as_str())
                    .uint(c.sent_at)
                    .opt_uint(c.expires_at)
                    .uint(c.accepted_at);
                w.bin(&c.payload);
                TAG_ACCEPTED
            }
            Record::Started { id, attempt, at } => {
                w.array_len(3).str(id).uint((*attempt).into()).uint(*at);
                TAG_STARTED
            }
            Record::Retrying {
                id,
                attempt,
                next_attempt_at,
                code,
                message,
            } => {
                w.array_len(5)
                    .str(id)
                    .uint((*attempt).into())
                    .uint(*next_attempt_at);
                w.str(code.as_str()).str(message);
                TAG_RETRYING
            }
            Record::Finished(s) => {
                w.array_len(8 + u32::from(s.plugin.is_some()))
                    .str(&s.id)
                    .str(&s.name)
                    .str(s.status.as_str());
                w.uint(s.attempt.into())
                    .opt_str(s.code.as_ref().map(Code::as_str));
                w.opt_str(s.message.as_deref());
                match &s.reply {
                    Some(reply) => w.bin(reply),
                    None => w.nil(),
                };
                w.uint(s.at);
                if let Some(plugin) = &s.plugin {
                    w.str(plugin);
                }
                TAG_FINISHED
            }
            Record::Delivered { id } => {
                w.array_len(1).str(id);
                TAG_DELIVERED
            }
        };
        let body = w.into_vec();
        let mut out = Vec::with_capacity(1 + body.len());
        out.push(tag);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes bytes written by [`Record::encode`] (any supported tag).
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let (&tag, body) = bytes.split_first().ok_or(RecordError::Empty)?;
        let expected = match tag {
            TAG_ACCEPTED => 9,
            TAG_STARTED => 3,
            TAG_RETRYING => 5,
            TAG_FINISHED => 8,
            TAG_DELIVERED => 1,
            other => return Err(RecordError::UnknownTag(other)),
        };
        let malformed = |source| RecordError::Malformed { tag, source };
        // Fields are scalars or `bin`: nothing may nest inside the array.
        msgpack::validate(body, 1).map_err(malformed)?;
        let mut r = Fields {
            r: Reader::new(body),
        };
        let found = r.r.read_array_len().map_err(malformed)?;
        // A `Finished` may carry the plugin version that ran it as a 9th field.
        let optional_tail = tag == TAG_FINISHED && found == expected + 1;
        if found != expected && !optional_tail {
            return Err(RecordError::Arity {
                tag,
                expected,
                found,
            });
        }
        let record = match tag {
            TAG_ACCEPTED => Record::Accepted(Command {
                seq: r.u64("seq")?,
                id: r.string("id")?,
                name: r.string("name")?,
                role: Role::parse(r.str("role")?).ok_or(RecordError::InvalidField("role"))?,
                kind: Kind::parse(r.str("kind")?).ok_or(RecordError::InvalidField("kind"))?,
                sent_at: r.u64("sent_at")?,
                expires_at: r.opt_u64("expires_at")?,
                accepted_at: r.u64("accepted_at")?,
                payload: r.bin("payload")?.to_vec(),
            }),
            TAG_STARTED => Record::Started {
                id: r.string("id")?,
                attempt: r.u32("attempt")?,
                at: r.u64("at")?,
            },
            TAG_RETRYING => Record::Retrying {
                id: r.string("id")?,
                attempt: r.u32("attempt")?,
                next_attempt_at: r.u64("next_attempt_at")?,
                code: Code::parse(r.str("code")?),
                message: r.string("message")?,
            },
            TAG_DELIVERED => Record::Delivered {
                id: r.string("id")?,
            },
            _ => {
                let mut s = Status::new(r.string("id")?, r.string("name")?, State::Accepted, 0, 0);
                s.status = State::parse(r.str("status")?)
                    .filter(|st| st.is_final())
                    .ok_or(RecordError::InvalidField("status"))?;
                s.attempt = r.u32("attempt")?;
                s.code = r.opt_str("code")?.map(Code::parse);
                s.message = r.opt_str("message")?.map(str::to_string);
                s.reply = r.opt_bin("reply")?.map(<[u8]>::to_vec);
                s.at = r.u64("at")?;
                if optional_tail {
                    s.plugin = Some(r.string("plugin")?);
                }
                Record::Finished(s)
            }
        };
        Ok(record)
    }
}

/// Positional field reads with the field's name in every error.
struct Fields<'a> {
    r: Reader<'a>,
}

impl<'a> Fields<'a> {
    fn map<T>(&self, field: &'static str, v: Result<T, MsgpackError>) -> Result<T, RecordError> {
        v.map_err(|_| RecordError::InvalidField(field))
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str, RecordError> {
        let v = self.r.read_str();
        self.map(field, v)
    }

    fn string(&mut self, field: &'static str) -> Result<String, RecordError> {
        self.str(field).map(str::to_string)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, RecordError> {
        let v = self.r.read_u64();
        self.map(field, v)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, RecordError> {
        let v = self.r.read_u32();
        self.map(field, v)
    }

    fn bin(&mut self, field: &'static str) -> Result<&'a [u8], RecordError> {
        let v = self.r.read_bin();
        self.map(field, v)
    }

    fn is_nil(&mut self, field: &'static str) -> Result<bool, RecordError> {
        let v = self.r.read_nil();
        self.map(field, v)
    }

    fn opt_u64(&mut self, field: &'static str) -> Result<Option<u64>, RecordError> {
        if self.is_nil(field)? {
            return Ok(None);
        }
        self.u64(field).map(Some)
    }

    fn opt_str(&mut self, field: &'static str) -> Result<Option<&'a str>, RecordError> {
        if self.is_nil(field)? {
            return Ok(None);
        }
        self.str(field).map(Some)
    }

    fn opt_bin(&mut self, field: &'static str) -> Result<Option<&'a [u8]>, RecordError> {
        if self.is_nil(field)? {
            return Ok(None);
        }
        self.bin(field).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    fn command() -> Command {
        Command {
            seq: 12,
            id: "req-1".into(),
            name: "set_led".into(),
            role: Role::Primary,
            kind: Kind::Rpc,
            payload: vec![0x81, 0xa2, b'o', b'n', 0xc3],
            sent_at: 1_700_000_000_000,
            expires_at: Some(1_700_000_030_000),
            accepted_at: 1_700_000_000_005,
        }
    }

    fn samples() -> Vec<Record> {
        vec![
            Record::Accepted(command()),
            Record::Accepted(Command {
                payload: vec![],
                expires_at: None,
                kind: Kind::Command,
                ..command()
            }),
            Record::Started {
                id: "req-1".into(),
                attempt: 1,
                at: 5,
            },
            Record::Retrying {
                id: "req-1".into(),
                attempt: 1,
                next_attempt_at: 5_005,
                code: Code::Trap,
                message: "unreachable".into(),
            },
            Record::Finished(
                Status::new("req-1", "set_led", State::Succeeded, 1, 9)
                    .with_reply(Some(vec![0xc0])),
            ),
            Record::Finished(
                Status::new("req-2", "set_led", State::Failed, 2, 9)
                    .with_code(Code::Trap, "unreachable")
                    .with_plugin(Some("leds@2.0.0".into())),
            ),
            Record::Finished(
                Status::new("x", "y", State::Failed, 5, 9)
                    .with_code(Code::Other("future".into()), "m"),
            ),
            Record::Finished(Status::new("x", "", State::Expired, 0, 9)),
            Record::Delivered { id: "x".into() },
        ]
    }

    #[test]
    fn round_trips() {
        for r in samples() {
            let bytes = r.encode();
            assert_eq!(Record::decode(&bytes), Ok(r.clone()), "{bytes:x?}");
        }
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(Record::decode(&[]), Err(RecordError::Empty));
        assert_eq!(
            Record::decode(&[0x7f, 0x90]),
            Err(RecordError::UnknownTag(0x7f))
        );
        assert_eq!(
            Record::decode(&[TAG_STARTED, 0x92, 0xa1, b'a', 0x01]),
            Err(RecordError::Arity {
                tag: TAG_STARTED,
                expected: 3,
                found: 2
            })
        );
        assert!(matches!(
            Record::decode(&[TAG_STARTED, 0x93, 0x91]),
            Err(RecordError::Malformed { .. })
        ));
        // A non-final status cannot be an outcome.
        let bytes = Record::Finished(Status::new("a", "b", State::Running, 1, 1)).encode();
        assert_eq!(
            Record::decode(&bytes),
            Err(RecordError::InvalidField("status"))
        );
        // Role from an unknown vocabulary.
        let mut bytes = Record::Accepted(command()).encode();
        let at = bytes.windows(7).position(|w| w == b"primary").unwrap();
        bytes[at..at + 7].copy_from_slice(b"primarx");
        assert_eq!(
            Record::decode(&bytes),
            Err(RecordError::InvalidField("role"))
        );
    }

    proptest! {
        /// Truncations and byte flips of valid records decode to an error or
        /// to some record, never a panic.
        #[test]
        fn damaged_records_never_panic(which in 0usize..8, cut in any::<prop::sample::Index>(),
                                       flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
            let mut bytes = samples()[which].encode();
            for (i, b) in flips {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            let _ = Record::decode(&bytes);
        }

        #[test]
        fn noise_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            let _ = Record::decode(&bytes);
        }

        #[test]
        fn accepted_round_trips(seq in any::<u64>(), id in "[!-~]{1,64}", payload in prop::collection::vec(any::<u8>(), 0..300),
                                exp in prop::option::of(any::<u64>()), role in 0usize..3) {
            let r = Record::Accepted(Command { seq, id, payload, expires_at: exp, role: Role::ALL[role], ..command() });
            prop_assert_eq!(Record::decode(&r.encode()), Ok(r));
        }
    }
}
