//! Runs a [`Scenario`] on one or more engines and checks every step.
//!
//! Role in the data path: the loop behind `relay test`. Each engine gets its
//! own [`Harness`] started from the scenario's kv, clock and limits; every
//! step is run through the registry, its [`Observation`] checked against the
//! step's expectations, and, with more than one engine, compared with the
//! first engine's observation of the same step (the differential check: a
//! plugin must behave identically on wasmtime and wasmi).

use std::path::Path;
use std::sync::Arc;

use relay_core::engine::{Engine, EngineKind};
use relay_core::plugin::{Event, Invocation};
use serde_json::{json, Value as Json};

use super::harness::{Harness, HarnessOptions};
use super::outcome::{events_to_json, kv_to_json, Observation, Outcome};
use super::report::{Disagreement, EngineRun, Mismatch, ScenarioReport, StepReport};
use super::scenario::{CallStep, Expect, ExpectedEvent, ExpectedOutcome, Scenario, Step};
use super::HarnessError;
use crate::value::{json_matches, msgpack_to_json};

/// Runs `scenario` (a file) against the plugin at `plugin` on each engine.
pub fn run_scenario(
    plugin: &Path,
    scenario: &Path,
    engines: &[EngineKind],
) -> Result<ScenarioReport, HarnessError> {
    let scenario = Scenario::from_path(scenario)?;
    Ok(ScenarioRunner::for_kinds(plugin, engines)?.run(&scenario))
}

/// One plugin artifact plus the engines to run it on; reused across scenarios
/// so each engine is built once.
pub struct ScenarioRunner {
    wasm: Arc<[u8]>,
    engines: Vec<Arc<dyn Engine>>,
}

impl ScenarioRunner {
    pub fn new(wasm: impl Into<Arc<[u8]>>, engines: Vec<Arc<dyn Engine>>) -> ScenarioRunner {
        ScenarioRunner {
            wasm: wasm.into(),
            engines,
        }
    }

    /// Reads the plugin at `plugin` and builds the engines named.
    pub fn for_kinds(plugin: &Path, kinds: &[EngineKind]) -> Result<ScenarioRunner, HarnessError> {
        let wasm = super::read_artifact(plugin)?;
        let engines = kinds
            .iter()
            .map(|k| super::engine(*k))
            .collect::<Result<_, _>>()?;
        Ok(ScenarioRunner::new(wasm, engines))
    }

    /// Runs every step on every engine, then compares the engines.
    pub fn run(&self, scenario: &Scenario) -> ScenarioReport {
        let runs: Vec<EngineRun> = self
            .engines
            .iter()
            .map(|e| self.run_on(e.clone(), scenario))
            .collect();
        let disagreements = match runs.split_first() {
            Some((first, rest)) => rest
                .iter()
                .flat_map(|other| compare_runs(first, other))
                .collect(),
            None => Vec::new(),
        };
        ScenarioReport {
            origin: scenario.origin.clone(),
            description: scenario.description.clone(),
            runs,
            disagreements,
        }
    }

    fn run_on(&self, engine: Arc<dyn Engine>, scenario: &Scenario) -> EngineRun {
        let kind = engine.kind();
        let options = HarnessOptions {
            limits: scenario.limits.clone(),
            now_ms: scenario.now_ms,
            kv: scenario.kv.clone(),
        };
        let mut run = EngineRun {
            engine: kind,
            info: None,
            load_error: None,
            steps: Vec::new(),
        };
        let mut harness = match Harness::new(engine, self.wasm.clone(), options) {
            Ok(h) => h,
            Err(e) => {
                run.load_error = Some(e.to_string());
                return run;
            }
        };
        run.info = Some(harness.info().clone());
        if let Some(expected) = &scenario.plugin {
            if harness.info().name != *expected {
                run.load_error = Some(format!(
                    "the plugin describes itself as {:?}, the scenario expects {expected:?}",
                    harness.info().name
                ));
                return run;
            }
        }
        for (index, step) in scenario.steps.iter().enumerate() {
            let number = index + 1;
            match step {
                Step::Restart => {
                    let restarted = harness.restart();
                    let mismatches = match &restarted {
                        Ok(()) => Vec::new(),
                        Err(e) => vec![Mismatch::new(
                            "restart",
                            json!("the plugin reloads"),
                            json!(e.to_string()),
                        )],
                    };
                    run.steps.push(StepReport {
                        number,
                        label: "restart".into(),
                        observation: None,
                        mismatches,
                    });
                    if restarted.is_err() {
                        break;
                    }
                }
                Step::Call(call) => {
                    if let Some(now) = call.now_ms {
                        harness.set_now(now);
                    }
                    let observation = harness.observe(&invocation(call));
                    let mismatches = check(&call.expect, &observation);
                    let label = format!(
                        "{} [{}, {}, attempt {}]",
                        call.command, call.id, call.role, call.attempt
                    );
                    run.steps.push(StepReport {
                        number,
                        label,
                        observation: Some(observation),
                        mismatches,
                    });
                }
            }
        }
        run
    }
}

fn invocation(call: &CallStep) -> Invocation {
    Invocation {
        id: call.id.clone(),
        name: call.command.clone(),
        payload: call.payload.clone(),
        attempt: call.attempt,
        role: call.role,
    }
}

/// Every way `observed` misses `expect`.
pub fn check(expect: &Expect, observed: &Observation) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let outcome_ok = match (&expect.outcome, &observed.outcome) {
        (ExpectedOutcome::Reply(want), Outcome::Reply(bytes)) => {
            let got = msgpack_to_json(bytes);
            if !json_matches(want, &got) {
                out.push(Mismatch::new("reply", want.clone(), got));
            }
            true
        }
        (ExpectedOutcome::NoReply, Outcome::NoReply) => true,
        (ExpectedOutcome::Error(want), Outcome::Error { kind, .. }) => want == kind,
        (ExpectedOutcome::Rejected(want), Outcome::Rejected { code, .. }) => code == want,
        (ExpectedOutcome::Failure(want), Outcome::Failure { code, .. }) => code == want,
        _ => false,
    };
    if !outcome_ok {
        out.push(Mismatch::new(
            "outcome",
            expect.outcome.to_json(),
            observed.outcome.to_json(),
        ));
    }
    if let (Some(needle), true) = (&expect.error_contains, outcome_ok) {
        let message = observed.outcome.message().unwrap_or("");
        if !message.contains(needle.as_str()) {
            out.push(Mismatch::new(
                "error message",
                json!(format!("a message containing {needle:?}")),
                json!(message),
            ));
        }
    }
    if let Some(want) = &expect.events {
        if !events_match(want, &observed.events) {
            out.push(Mismatch::new(
                "events",
                expected_events_json(want),
                events_to_json(&observed.events),
            ));
        }
    }
    if let Some(want) = &expect.kv {
        let want = Json::Object(want.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        let got = kv_to_json(&observed.kv);
        if !json_matches(&want, &got) {
            out.push(Mismatch::new("kv", want, got));
        }
    }
    out
}

fn events_match(want: &[ExpectedEvent], got: &[Event]) -> bool {
    want.len() == got.len()
        && want.iter().zip(got).all(|(w, g)| {
            w.name == g.name
                && w.payload
                    .as_ref()
                    .is_none_or(|p| json_matches(p, &msgpack_to_json(&g.payload)))
        })
}

fn expected_events_json(want: &[ExpectedEvent]) -> Json {
    Json::Array(
        want.iter()
            .map(|e| match &e.payload {
                Some(p) => json!({ "name": e.name, "payload": p }),
                None => json!({ "name": e.name }),
            })
            .collect(),
    )
}

/// Where engine run `b` differs from `a`: loading, `describe`, then each
/// step's observation (outcome, events, kv).
pub fn compare_runs(a: &EngineRun, b: &EngineRun) -> Vec<Disagreement> {
    let mut out = Vec::new();
    let side = |run: &EngineRun, v: Json| (run.engine, v);
    let load = |run: &EngineRun| match &run.load_error {
        Some(e) => json!({ "load_error": e }),
        None => json!("loaded"),
    };
    if a.load_error.is_some() != b.load_error.is_some() {
        out.push(Disagreement {
            step: None,
            what: "load".into(),
            a: side(a, load(a)),
            b: side(b, load(b)),
        });
        return out;
    }
    if a.info != b.info {
        let info = |run: &EngineRun| serde_json::to_value(&run.info).unwrap_or(Json::Null);
        out.push(Disagreement {
            step: None,
            what: "describe".into(),
            a: side(a, info(a)),
            b: side(b, info(b)),
        });
    }
    for (sa, sb) in a.steps.iter().zip(&b.steps) {
        if let (Some(oa), Some(ob)) = (&sa.observation, &sb.observation) {
            if let Some((what, ja, jb)) = oa.disagreement(ob) {
                out.push(Disagreement {
                    step: Some(sa.number),
                    what: what.into(),
                    a: side(a, ja),
                    b: side(b, jb),
                });
            }
        }
    }
    if a.steps.len() != b.steps.len() {
        let count = |run: &EngineRun| json!({ "steps_run": run.steps.len() });
        out.push(Disagreement {
            step: None,
            what: "steps run".into(),
            a: side(a, count(a)),
            b: side(b, count(b)),
        });
    }
    out
}
