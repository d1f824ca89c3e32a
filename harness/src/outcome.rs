//! What one call produced, as the harness records and compares it.
//!
//! Role in the data path: the last stop of a command in the harness. The
//! registry's answer (`Result<CallOutcome, DispatchError>`) is flattened into
//! one [`Outcome`] so scenario expectations, the readable diff and the
//! differential test all speak about the same five cases the device host
//! reports: a reply, success without a reply, a handler error, a rejection
//! by the registry (`unknown_command` / `not_permitted`) and a failed call
//! (`trap` / `timed_out` / `too_large`).

use std::collections::BTreeMap;

use relay_core::plugin::{CallOutcome, ErrorKind, Event};
use relay_core::registry::DispatchError;
use relay_core::status::Code;
use serde_json::{json, Value as Json};

use super::HarnessError;
use crate::value::msgpack_to_json;

/// The result of one command, flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `ok(some(bytes))`: a reply (raw msgpack as the plugin sent it).
    Reply(Vec<u8>),
    /// `ok(none)`: success without a reply.
    NoReply,
    /// The handler returned an error on purpose.
    Error { kind: ErrorKind, message: String },
    /// The registry refused before the plugin ran: `unknown_command` or `not_permitted`.
    Rejected { code: Code, message: String },
    /// The call itself failed: `PluginError::code()` (`trap`, `timed_out`, `too_large`).
    Failure { code: Code, message: String },
}

impl Outcome {
    /// Flattens what `Registry::dispatch` returned; the events travel apart.
    pub fn from_dispatch(result: Result<CallOutcome, DispatchError>) -> (Outcome, Vec<Event>) {
        match result {
            Ok(CallOutcome { result, events }) => {
                let outcome = match result {
                    Ok(Some(reply)) => Outcome::Reply(reply),
                    Ok(None) => Outcome::NoReply,
                    Err(e) => Outcome::Error {
                        kind: e.kind,
                        message: e.message,
                    },
                };
                (outcome, events)
            }
            Err(DispatchError::Plugin(e)) => (
                Outcome::Failure {
                    code: e.code(),
                    message: e.to_string(),
                },
                Vec::new(),
            ),
            Err(e) => (
                Outcome::Rejected {
                    code: e.code(),
                    message: e.to_string(),
                },
                Vec::new(),
            ),
        }
    }

    /// The message of an error, rejection or failure.
    pub fn message(&self) -> Option<&str> {
        match self {
            Outcome::Error { message, .. }
            | Outcome::Rejected { message, .. }
            | Outcome::Failure { message, .. } => Some(message),
            Outcome::Reply(_) | Outcome::NoReply => None,
        }
    }

    /// The outcome as a scenario would spell it (`{"reply": ...}`,
    /// `{"error": "transient", "message": ...}`, ...), for diffs and reports.
    pub fn to_json(&self) -> Json {
        match self {
            Outcome::Reply(bytes) => json!({ "reply": msgpack_to_json(bytes) }),
            Outcome::NoReply => json!({ "no_reply": true }),
            Outcome::Error { kind, message } => {
                json!({ "error": kind.as_str(), "message": message })
            }
            Outcome::Rejected { code, message } => {
                json!({ "rejected": code.as_str(), "message": message })
            }
            Outcome::Failure { code, message } => {
                json!({ "failure": code.as_str(), "message": message })
            }
        }
    }

    /// Whether two engines produced the same outcome. Failures compare by
    /// code only: the trap text is the engine's own wording.
    pub fn agrees_with(&self, other: &Outcome) -> bool {
        match (self, other) {
            (Outcome::Failure { code: a, .. }, Outcome::Failure { code: b, .. }) => a == b,
            _ => self == other,
        }
    }

    /// [`Outcome::to_json`] without the wording that may legitimately differ
    /// between engines (failure messages).
    pub fn comparable_json(&self) -> Json {
        match self {
            Outcome::Failure { code, .. } => json!({ "failure": code.as_str() }),
            other => other.to_json(),
        }
    }
}

/// What one call returned to the author of a Rust test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResult {
    pub outcome: Outcome,
    /// Events the call emitted, in order.
    pub events: Vec<Event>,
}

impl CallResult {
    /// The reply decoded to JSON; an error naming what happened instead when
    /// the call did not reply.
    pub fn reply_json(&self) -> Result<Json, HarnessError> {
        match &self.outcome {
            Outcome::Reply(bytes) => Ok(msgpack_to_json(bytes)),
            other => Err(HarnessError::Unexpected(format!(
                "expected a reply, got {}",
                other.to_json()
            ))),
        }
    }

    /// The raw reply bytes, if the call replied.
    pub fn reply_bytes(&self) -> Option<&[u8]> {
        match &self.outcome {
            Outcome::Reply(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The handler error's kind, if the handler failed on purpose.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match &self.outcome {
            Outcome::Error { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// The status code of a rejection or a failed call.
    pub fn code(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Rejected { code, .. } | Outcome::Failure { code, .. } => Some(code.as_str()),
            _ => None,
        }
    }

    /// The events as `[{"name": ..., "payload": <decoded>}]`.
    pub fn events_json(&self) -> Json {
        events_to_json(&self.events)
    }
}

/// Events as `[{"name": ..., "payload": <decoded>}]`.
pub fn events_to_json(events: &[Event]) -> Json {
    Json::Array(
        events
            .iter()
            .map(|e| json!({ "name": e.name, "payload": msgpack_to_json(&e.payload) }))
            .collect(),
    )
}

/// kv contents as a JSON object with decoded values.
pub fn kv_to_json(kv: &BTreeMap<String, Vec<u8>>) -> Json {
    Json::Object(
        kv.iter()
            .map(|(k, v)| (k.clone(), msgpack_to_json(v)))
            .collect(),
    )
}

/// Everything a step left behind: what the differential test compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub outcome: Outcome,
    pub events: Vec<Event>,
    /// The plugin's whole kv store after the step, raw bytes.
    pub kv: BTreeMap<String, Vec<u8>>,
}

impl Observation {
    /// The first way `self` (engine `a`) and `other` (engine `b`) differ, as
    /// `(what, a_json, b_json)`: outcome, events (raw bytes) or kv (raw bytes).
    pub fn disagreement(&self, other: &Observation) -> Option<(&'static str, Json, Json)> {
        if !self.outcome.agrees_with(&other.outcome) {
            return Some((
                "outcome",
                self.outcome.comparable_json(),
                other.outcome.comparable_json(),
            ));
        }
        if self.events != other.events {
            return Some((
                "events",
                raw_events(&self.events),
                raw_events(&other.events),
            ));
        }
        if self.kv != other.kv {
            return Some(("kv", raw_kv(&self.kv), raw_kv(&other.kv)));
        }
        None
    }
}

/// Events with hex payloads, so a byte-level difference is visible even when
/// both decode to the same JSON.
fn raw_events(events: &[Event]) -> Json {
    Json::Array(
        events
            .iter()
            .map(|e| json!({ "name": e.name, "payload_hex": super::value::to_hex(&e.payload) }))
            .collect(),
    )
}

fn raw_kv(kv: &BTreeMap<String, Vec<u8>>) -> Json {
    Json::Object(
        kv.iter()
            .map(|(k, v)| (k.clone(), Json::String(super::value::to_hex(v))))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(outcome: Outcome) -> Observation {
        Observation {
            outcome,
            events: Vec::new(),
            kv: BTreeMap::new(),
        }
    }

    #[test]
    fn failures_agree_by_code_only() {
        let a = obs(Outcome::Failure {
            code: Code::Trap,
            message: "wasm trap: unreachable".into(),
        });
        let b = obs(Outcome::Failure {
            code: Code::Trap,
            message: "unreachable executed".into(),
        });
        assert_eq!(a.disagreement(&b), None);
        let c = obs(Outcome::Failure {
            code: Code::TimedOut,
            message: String::new(),
        });
        assert_eq!(a.disagreement(&c).map(|d| d.0), Some("outcome"));
    }

    #[test]
    fn handler_errors_compare_kind_and_message() {
        let err = |m: &str| {
            obs(Outcome::Error {
                kind: ErrorKind::Transient,
                message: m.into(),
            })
        };
        assert_eq!(err("busy").disagreement(&err("busy")), None);
        assert!(err("busy").disagreement(&err("Busy")).is_some());
    }

    #[test]
    fn events_and_kv_compare_raw_bytes() {
        let base = obs(Outcome::NoReply);
        let mut with_event = base.clone();
        with_event.events.push(Event {
            name: "e".into(),
            payload: vec![0xcb; 9],
        });
        let (what, a, b) = base.disagreement(&with_event).expect("events differ");
        assert_eq!((what, a), ("events", json!([])));
        assert_eq!(b, json!([{ "name": "e", "payload_hex": "cb".repeat(9) }]));

        let mut with_kv = base.clone();
        // Same JSON value (1), different bytes: still a difference.
        with_kv.kv.insert("k".into(), vec![0x01]);
        let mut other_kv = base.clone();
        other_kv.kv.insert("k".into(), vec![0xcc, 0x01]);
        assert_eq!(with_kv.disagreement(&other_kv).map(|d| d.0), Some("kv"));
    }

    #[test]
    fn rejected_and_failed_calls_read_back() {
        let r = CallResult {
            outcome: Outcome::Rejected {
                code: Code::NotPermitted,
                message: "no".into(),
            },
            events: Vec::new(),
        };
        assert_eq!(r.code(), Some("not_permitted"));
        let e = r.reply_json().unwrap_err().to_string();
        assert!(
            e.contains("expected a reply") && e.contains("not_permitted"),
            "{e}"
        );
    }
}
