//! Scenario files: parsing and checking (format in `docs/scenarios.md`).
//!
//! Role in the data path: turns what a plugin author wrote (TOML or JSON)
//! into typed [`Scenario`] steps with their payloads already encoded as
//! msgpack. Everything that can be wrong with a file is reported here, before
//! any plugin runs, with the file name, the TOML/JSON line and column for
//! syntax and type errors, and the step number for inconsistent steps
//! (unknown fields are errors too, so a typo never silently weakens a test).

use std::collections::BTreeMap;
use std::path::Path;

use relay_core::limits::Limits;
use relay_core::plugin::{ErrorKind, Role};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::harness::DEFAULT_NOW_MS;
use crate::value::{json_to_msgpack, normalize};

/// A parsed, checked scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Where it came from (a path, or a name given by the caller).
    pub origin: String,
    pub description: String,
    /// The plugin name `describe` must report, if given.
    pub plugin: Option<String>,
    pub now_ms: u64,
    /// Initial kv contents, msgpack-encoded.
    pub kv: BTreeMap<String, Vec<u8>>,
    /// Limits to load the plugin with (defaults when absent).
    pub limits: Limits,
    pub steps: Vec<Step>,
}

/// One step of a scenario. (A file has a handful of steps, so the size
/// difference between the variants is not worth a `Box`.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Call(CallStep),
    /// Reload the plugin from the artifact, keeping kv.
    Restart,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallStep {
    pub id: String,
    pub command: String,
    /// msgpack (empty when the step has no payload).
    pub payload: Vec<u8>,
    pub role: Role,
    pub attempt: u32,
    /// Move the clock to this instant before the call.
    pub now_ms: Option<u64>,
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    pub outcome: ExpectedOutcome,
    /// Exact events of the step; a `None` payload is not compared.
    pub events: Option<Vec<ExpectedEvent>>,
    /// Exact kv contents after the step (decoded values).
    pub kv: Option<BTreeMap<String, Json>>,
    /// Substring of the error / rejection / failure message.
    pub error_contains: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExpectedOutcome {
    Reply(Json),
    NoReply,
    Error(ErrorKind),
    /// `unknown_command` or `not_permitted`.
    Rejected(&'static str),
    /// `trap`, `timed_out` or `too_large`.
    Failure(&'static str),
}

impl ExpectedOutcome {
    /// As [`super::Outcome::to_json`] spells outcomes, for diffs.
    pub fn to_json(&self) -> Json {
        match self {
            ExpectedOutcome::Reply(v) => json!({ "reply": v }),
            ExpectedOutcome::NoReply => json!({ "no_reply": true }),
            ExpectedOutcome::Error(kind) => json!({ "error": kind.as_str() }),
            ExpectedOutcome::Rejected(code) => json!({ "rejected": code }),
            ExpectedOutcome::Failure(code) => json!({ "failure": code }),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedEvent {
    pub name: String,
    pub payload: Option<Json>,
}

/// A scenario file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ScenarioError {
    pub origin: String,
    pub message: String,
}

const REJECTIONS: [&str; 2] = ["unknown_command", "not_permitted"];
const FAILURES: [&str; 3] = ["trap", "timed_out", "too_large"];
const ERROR_KINDS: [ErrorKind; 4] = [
    ErrorKind::InvalidArgument,
    ErrorKind::OutOfBounds,
    ErrorKind::Transient,
    ErrorKind::Permanent,
];

impl Scenario {
    /// Reads a `.toml` or `.json` scenario file.
    pub fn from_path(path: &Path) -> Result<Scenario, ScenarioError> {
        let origin = path.display().to_string();
        let fail = |message: String| ScenarioError {
            origin: origin.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Scenario::from_toml(&text, &origin),
            Some("json") => Scenario::from_json(&text, &origin),
            _ => Err(fail("a scenario file must end in .toml or .json".into())),
        }
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| ScenarioError {
            origin: origin.into(),
            message: e.to_string().trim_end().to_string(),
        })?;
        raw.check(origin)
    }

    pub fn from_json(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario = serde_json::from_str(text).map_err(|e| ScenarioError {
            origin: origin.into(),
            message: format!("JSON error: {e}"),
        })?;
        raw.check(origin)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    description: Option<String>,
    plugin: Option<String>,
    now_ms: Option<u64>,
    #[serde(default)]
    kv: BTreeMap<String, Json>,
    limits: Option<Limits>,
    #[serde(default, alias = "steps")]
    step: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    command: Option<String>,
    payload: Option<Json>,
    role: Option<Role>,
    attempt: Option<u32>,
    id: Option<String>,
    now_ms: Option<u64>,
    restart: Option<bool>,
    expect: Option<RawExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    reply: Option<Json>,
    no_reply: Option<bool>,
    error: Option<String>,
    rejected: Option<String>,
    failure: Option<String>,
    events: Option<Vec<RawEvent>>,
    kv: Option<BTreeMap<String, Json>>,
    error_contains: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    name: String,
    payload: Option<Json>,
}

impl RawScenario {
    fn check(self, origin: &str) -> Result<Scenario, ScenarioError> {
        let fail = |message: String| ScenarioError {
            origin: origin.into(),
            message,
        };
        if self.step.is_empty() {
            return Err(fail("the scenario has no [[step]]".into()));
        }
        let mut kv = BTreeMap::new();
        for (key, value) in self.kv {
            let bytes =
                json_to_msgpack(&normalize(value)).map_err(|e| fail(format!("kv {key:?}: {e}")))?;
            kv.insert(key, bytes);
        }
        let steps = self
            .step
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                raw.check(i + 1)
                    .map_err(|message| fail(format!("step {}: {message}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Scenario {
            origin: origin.into(),
            description: self.description.unwrap_or_default(),
            plugin: self.plugin,
            now_ms: self.now_ms.unwrap_or(DEFAULT_NOW_MS),
            kv,
            limits: self.limits.unwrap_or_default(),
            steps,
        })
    }
}

impl RawStep {
    fn check(self, number: usize) -> Result<Step, String> {
        if let Some(restart) = self.restart {
            if !restart {
                return Err("`restart = false` means nothing; remove it".into());
            }
            let extra = [
                ("command", self.command.is_some()),
                ("payload", self.payload.is_some()),
                ("role", self.role.is_some()),
                ("attempt", self.attempt.is_some()),
                ("id", self.id.is_some()),
                ("now_ms", self.now_ms.is_some()),
                ("expect", self.expect.is_some()),
            ];
            if let Some((field, _)) = extra.iter().find(|(_, present)| *present) {
                return Err(format!(
                    "a `restart = true` step takes no other field (found `{field}`)"
                ));
            }
            return Ok(Step::Restart);
        }
        let command = self
            .command
            .ok_or("needs `command = \"...\"` (or `restart = true`)")?;
        let payload = match self.payload {
            Some(value) => {
                json_to_msgpack(&normalize(value)).map_err(|e| format!("payload: {e}"))?
            }
            None => Vec::new(),
        };
        if self.attempt == Some(0) {
            return Err("`attempt` counts from 1".into());
        }
        let expect = self
            .expect
            .ok_or("needs a [step.expect] table (reply, no_reply, error, rejected or failure)")?
            .check()?;
        Ok(Step::Call(CallStep {
            id: self.id.unwrap_or_else(|| format!("step-{number}")),
            command,
            payload,
            role: self.role.unwrap_or(Role::Admin),
            attempt: self.attempt.unwrap_or(1),
            now_ms: self.now_ms,
            expect,
        }))
    }
}

impl RawExpect {
    fn check(self) -> Result<Expect, String> {
        let mut outcomes = Vec::new();
        if let Some(reply) = self.reply {
            outcomes.push(ExpectedOutcome::Reply(normalize(reply)));
        }
        match self.no_reply {
            Some(true) => outcomes.push(ExpectedOutcome::NoReply),
            Some(false) => {
                return Err("`no_reply = false` means nothing; expect a `reply` instead".into())
            }
            None => {}
        }
        if let Some(kind) = self.error {
            outcomes.push(ExpectedOutcome::Error(parse_error_kind(&kind)?));
        }
        if let Some(code) = self.rejected {
            outcomes.push(ExpectedOutcome::Rejected(pick(
                &code,
                &REJECTIONS,
                "rejected",
            )?));
        }
        if let Some(code) = self.failure {
            outcomes.push(ExpectedOutcome::Failure(pick(&code, &FAILURES, "failure")?));
        }
        if outcomes.len() != 1 {
            return Err(format!(
                "expect must name exactly one of reply, no_reply, error, rejected, failure (found {})",
                outcomes.len()
            ));
        }
        let outcome = outcomes.remove(0);
        if self.error_contains.is_some()
            && matches!(
                outcome,
                ExpectedOutcome::Reply(_) | ExpectedOutcome::NoReply
            )
        {
            return Err("`error_contains` needs an error, rejected or failure expectation".into());
        }
        let events = self.events.map(|events| {
            events
                .into_iter()
                .map(|e| ExpectedEvent {
                    name: e.name,
                    payload: e.payload.map(normalize),
                })
                .collect()
        });
        let kv = self
            .kv
            .map(|kv| kv.into_iter().map(|(k, v)| (k, normalize(v))).collect());
        Ok(Expect {
            outcome,
            events,
            kv,
            error_contains: self.error_contains,
        })
    }
}

fn parse_error_kind(text: &str) -> Result<ErrorKind, String> {
    let wanted = text.replace('_', "-");
    ERROR_KINDS
        .into_iter()
        .find(|k| k.as_str() == wanted)
        .ok_or_else(|| {
            let names: Vec<_> = ERROR_KINDS.iter().map(|k| k.as_str()).collect();
            format!(
                "unknown error kind {text:?} (expected one of {})",
                names.join(", ")
            )
        })
}

fn pick(text: &str, allowed: &[&'static str], what: &str) -> Result<&'static str, String> {
    let wanted = text.replace('-', "_");
    allowed
        .iter()
        .copied()
        .find(|a| *a == wanted)
        .ok_or_else(|| {
            format!(
                "unknown {what} code {text:?} (expected one of {})",
                allowed.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_agreed_example() {
        let s = Scenario::from_toml(
            r#"
description = "counter survives a restart"
plugin = "counter"
[kv]
count = 41

[[step]]
command = "increment"
payload = { by = 1 }
[step.expect]
reply = { value = 42 }
kv = { count = 42 }

[[step]]
restart = true

[[step]]
command = "reset"
role = "secondary"
attempt = 2
id = "s3"
[step.expect]
rejected = "not_permitted"
error_contains = "secondary"
"#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(s.kv["count"], vec![41]);
        assert_eq!(s.now_ms, DEFAULT_NOW_MS);
        assert_eq!(s.steps.len(), 3);
        let Step::Call(first) = &s.steps[0] else {
            panic!()
        };
        assert_eq!(first.id, "step-1");
        assert_eq!(first.payload, [0x81, 0xa2, b'b', b'y', 0x01]);
        assert_eq!(
            first.expect.outcome,
            ExpectedOutcome::Reply(json!({"value": 42}))
        );
        assert_eq!(s.steps[1], Step::Restart);
        let Step::Call(third) = &s.steps[2] else {
            panic!()
        };
        assert_eq!(
            (third.role, third.attempt, third.id.as_str()),
            (Role::Secondary, 2, "s3")
        );
        assert!(third.payload.is_empty());
    }

    #[test]
    fn step_errors_name_the_step() {
        let err = |text: &str| Scenario::from_toml(text, "x.toml").unwrap_err().to_string();
        let e = err(
            "[[step]]\ncommand = \"a\"\n[step.expect]\nno_reply = true\nerror = \"transient\"\n",
        );
        assert!(e.contains("step 1") && e.contains("exactly one"), "{e}");
        let e = err("[[step]]\nrestart = true\ncommand = \"a\"\n");
        assert!(e.contains("takes no other field"), "{e}");
        let e = err("[[step]]\ncommand = \"a\"\n[step.expect]\nerror = \"sad\"\n");
        assert!(e.contains("unknown error kind \"sad\""), "{e}");
        let e = err("[[step]]\ncommand = \"a\"\n[step.expect]\nrepyl = 1\n");
        assert!(e.contains("line 4") && e.contains("repyl"), "{e}");
        assert!(err("description = \"x\"\n").contains("no [[step]]"));
    }
}
