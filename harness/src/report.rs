//! What running a scenario found, and how it is printed.
//!
//! Role in the data path: the harness's output. A [`ScenarioReport`] holds
//! one [`EngineRun`] per engine (a line per step, `ok` or `FAIL` with the
//! mismatches) and the differential [`Disagreement`]s between engines. Its
//! `Display` is what `relay test` prints: expected vs actual as a `-`/`+`
//! diff of pretty-printed JSON.

use std::fmt;

use relay_core::engine::EngineKind;
use relay_core::plugin::PluginInfo;
use serde_json::Value as Json;

use super::diff::json_diff;
use super::outcome::Observation;

/// The result of one scenario on every engine it ran on.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    pub origin: String,
    pub description: String,
    pub runs: Vec<EngineRun>,
    /// Where the engines' observations differ (empty with one engine).
    pub disagreements: Vec<Disagreement>,
}

impl ScenarioReport {
    /// Every engine loaded the plugin, every step met its expectations and
    /// the engines agree.
    pub fn passed(&self) -> bool {
        self.disagreements.is_empty() && self.runs.iter().all(EngineRun::passed)
    }

    /// Steps that failed, over all engines.
    pub fn failed_steps(&self) -> usize {
        self.runs
            .iter()
            .map(|r| r.steps.iter().filter(|s| !s.passed()).count())
            .sum()
    }
}

/// One engine's run of a scenario.
#[derive(Debug, Clone)]
pub struct EngineRun {
    pub engine: EngineKind,
    /// What `describe` returned (when the plugin loaded).
    pub info: Option<PluginInfo>,
    /// Why the run could not start (load error, wrong plugin name).
    pub load_error: Option<String>,
    pub steps: Vec<StepReport>,
}

impl EngineRun {
    pub fn passed(&self) -> bool {
        self.load_error.is_none() && self.steps.iter().all(StepReport::passed)
    }
}

/// One step on one engine.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// 1-based position in the scenario.
    pub number: usize,
    /// `command [id, role, attempt n]` or `restart`.
    pub label: String,
    /// What the step produced (`None` for a restart).
    pub observation: Option<Observation>,
    pub mismatches: Vec<Mismatch>,
}

impl StepReport {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// One expectation a step missed.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// `outcome`, `reply`, `error message`, `events`, `kv` or `restart`.
    pub what: String,
    pub expected: Json,
    pub actual: Json,
}

impl Mismatch {
    pub fn new(what: &str, expected: Json, actual: Json) -> Mismatch {
        Mismatch {
            what: what.into(),
            expected,
            actual,
        }
    }
}

/// Two engines observed different things.
#[derive(Debug, Clone, PartialEq)]
pub struct Disagreement {
    /// The step (1-based), or `None` for loading / the run as a whole.
    pub step: Option<usize>,
    /// `load`, `describe`, `outcome`, `events`, `kv` or `steps run`.
    pub what: String,
    pub a: (EngineKind, Json),
    pub b: (EngineKind, Json),
}

const INDENT: &str = "      ";

/// Longest line the report prints: a plugin can hand back a 256 KiB error
/// message, which helps nobody on a terminal.
const MAX_LINE: usize = 300;

/// `line`, cut at [`MAX_LINE`] bytes (on a char boundary) with a note of
/// how much was left out.
fn clip(line: &str) -> std::borrow::Cow<'_, str> {
    if line.len() <= MAX_LINE {
        return line.into();
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} more bytes)", &line[..end], line.len() - end).into()
}

impl fmt::Display for ScenarioReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scenario {}", self.origin)?;
        if !self.description.is_empty() {
            write!(f, ": {}", self.description)?;
        }
        writeln!(f)?;
        for run in &self.runs {
            write!(f, "{run}")?;
        }
        if self.runs.len() > 1 {
            if self.disagreements.is_empty() {
                writeln!(f, "  engines agree")?;
            } else {
                writeln!(f, "  FAIL  engines disagree (differential):")?;
                for d in &self.disagreements {
                    write!(f, "{d}")?;
                }
            }
        }
        writeln!(f, "  => {}", if self.passed() { "PASS" } else { "FAIL" })
    }
}

impl fmt::Display for EngineRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let engine = self.engine.as_str();
        if let Some(e) = &self.load_error {
            writeln!(f, "  {engine:<8}  FAIL  load: {}", clip(&e.to_string()))?;
        }
        for step in &self.steps {
            let status = if step.passed() { "ok  " } else { "FAIL" };
            writeln!(
                f,
                "  {engine:<8}  {status}  step {}: {}",
                step.number, step.label
            )?;
            for m in &step.mismatches {
                writeln!(f, "{INDENT}{} (- expected, + actual):", m.what)?;
                for line in json_diff(&m.expected, &m.actual) {
                    writeln!(f, "{INDENT}  {}", clip(&line))?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            Some(n) => write!(f, "{INDENT}step {n}: ")?,
            None => write!(f, "{INDENT}")?,
        }
        writeln!(f, "{} (- {}, + {}):", self.what, self.a.0, self.b.0)?;
        for line in json_diff(&self.a.1, &self.b.1) {
            writeln!(f, "{INDENT}  {}", clip(&line))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_lines_are_clipped() {
        let long = "é".repeat(400);
        let clipped = super::clip(&long);
        assert!(clipped.len() < 330, "{}", clipped.len());
        assert!(clipped.ends_with("... (500 more bytes)"), "{clipped}");
        assert_eq!(super::clip("short"), "short");
    }
}
