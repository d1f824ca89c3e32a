//! `relay test`: the desktop harness over scenario files.
//!
//! Role in the data path: a thin shell over [`crate::testing`]. It expands
//! directories into their scenario files, runs each on the chosen engines
//! through one [`ScenarioRunner`] (engines and the artifact are loaded once),
//! prints each report, and fails the process when any scenario fails.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use relay_core::engine::EngineKind;

use relay_harness::{Scenario, ScenarioRunner};

/// What `relay test --help` prints after the options. (The one-line summary
/// comes from the `Test` variant in `cli/mod.rs`, which would override a doc
/// comment here, so the details live in `after_help`.)
const DETAILS: &str = "\
Each scenario (TOML or JSON, format in docs/scenarios.md) lists commands with
their payload, role and attempt, and what to expect: a reply (as JSON), no
reply, a handler error kind, a rejection (unknown_command, not_permitted), a
failed call (trap, timed_out, too_large), the events emitted and the kv
contents after the step. `restart = true` steps reload the plugin and keep its
kv.

Prints one line per step (ok / FAIL) and, for each mismatch, expected vs actual
as a -/+ diff. With --engine both (the default) the two engines must also agree
on every step: replies, error kinds and messages, failure codes, events and kv
state (the differential check).

Exit status: 0 when every scenario passes on every engine; 1 on any mismatch,
disagreement, unreadable scenario or plugin load error.

Example:
  cargo xtask build-plugins
  relay test target/plugins/counter.wasm plugins/counter/scenarios";

/// Arguments of `relay test`: run a plugin against scenario files on
/// wasmtime, wasmi, or both.
#[derive(Debug, clap::Args)]
#[command(after_help = DETAILS)]
pub struct TestArgs {
    /// The plugin module: a core wasm module built with wit-bindgen for the
    /// relay:plugin world (e.g. target/plugins/echo.wasm).
    pub plugin: PathBuf,

    /// Scenario files (.toml or .json), or directories whose .toml/.json
    /// files are all run, in name order.
    #[arg(required = true, value_name = "SCENARIO")]
    pub scenarios: Vec<PathBuf>,

    /// Engine(s) to run on.
    #[arg(long, value_enum, default_value_t = EngineChoice::Both)]
    pub engine: EngineChoice,

    /// Print only failing scenarios (and the summary).
    #[arg(long, short)]
    pub quiet: bool,
}

/// `--engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineChoice {
    Wasmtime,
    Wasmi,
    /// Both, and require identical results (differential).
    Both,
}

impl EngineChoice {
    pub fn kinds(self) -> Vec<EngineKind> {
        match self {
            EngineChoice::Wasmtime => vec![EngineKind::Wasmtime],
            EngineChoice::Wasmi => vec![EngineKind::Wasmi],
            EngineChoice::Both => vec![EngineKind::Wasmtime, EngineKind::Wasmi],
        }
    }
}

pub fn run(args: TestArgs) -> anyhow::Result<()> {
    check_is_wasm(&args.plugin)?;
    let files = expand(&args.scenarios)?;
    let runner = ScenarioRunner::for_kinds(&args.plugin, &args.engine.kinds())
        .with_context(|| format!("cannot run plugin {}", args.plugin.display()))?;
    // Reports go to stdout; a closed pipe (`relay test ... | head`) only
    // stops the printing, never the verdict in the exit status.
    let mut out = std::io::stdout().lock();
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &files {
        match Scenario::from_path(file) {
            Ok(scenario) => {
                let report = runner.run(&scenario);
                if report.passed() {
                    passed += 1;
                    if !args.quiet {
                        let _ = write!(out, "{report}");
                    }
                } else {
                    failed += 1;
                    let _ = write!(out, "{report}");
                }
            }
            Err(e) => {
                failed += 1;
                let message = e.message.replace('\n', "\n        ");
                let _ = writeln!(
                    out,
                    "scenario {}\n  FAIL  {message}\n  => FAIL",
                    file.display()
                );
            }
        }
    }
    let total = files.len();
    let _ = writeln!(
        out,
        "\n{total} scenario(s): {passed} passed, {failed} failed"
    );
    let _ = out.flush();
    if failed > 0 {
        // A failing scenario is a test result, not an error of the tool:
        // exit 1 without an error chain (or a backtrace under RUST_BACKTRACE).
        eprintln!("error: {failed} of {total} scenario(s) failed");
        std::process::exit(1);
    }
    Ok(())
}

/// Catches swapped arguments early: a module starts with `\0asm`.
fn check_is_wasm(plugin: &Path) -> anyhow::Result<()> {
    let mut magic = [0u8; 4];
    std::fs::File::open(plugin)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .with_context(|| format!("cannot read plugin {}", plugin.display()))?;
    if magic != *b"\0asm" {
        bail!(
            "{} is not a wasm module (usage: relay test <plugin.wasm> <scenario>...)",
            plugin.display()
        );
    }
    Ok(())
}

/// Files as given; directories replaced by their `.toml`/`.json` files, sorted.
fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_scenario_file(p))
                .collect();
            if found.is_empty() {
                bail!("no .toml or .json scenario files in {}", path.display());
            }
            found.sort();
            out.extend(found);
        } else if path.exists() {
            out.push(path.clone());
        } else {
            bail!("scenario {} does not exist", path.display());
        }
    }
    Ok(out)
}

fn is_scenario_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("toml" | "json")
    )
}
