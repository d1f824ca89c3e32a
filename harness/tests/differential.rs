//! One artifact, two engines: every bundled plugin must behave identically on
//! wasmtime and wasmi.
//!
//! - Every plugin in `target/plugins/` (built by `cargo xtask build-plugins`)
//!   runs every scenario in `plugins/<name>/scenarios/` on both engines; the
//!   scenarios must pass and the engines must agree on every step (replies,
//!   handler errors with their messages, rejections, failure codes, events,
//!   the whole kv store after each step).
//! - echo gets 200 random msgpack payloads plus garbage, and must echo each
//!   byte for byte on both engines.
//! - Every command of every plugin gets a few hundred generated inputs (random
//!   msgpack, garbage bytes, mutations of the scenarios' payloads, random
//!   roles, attempts, clock moves and restarts), run in lockstep on the two
//!   engines and compared after every step.
//!
//! All randomness comes from a seeded RNG, so a failure repeats; the message
//! names the plugin, the step and the input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use relay_core::engine::{Engine, EngineKind};
use relay_core::plugin::{Invocation, Role};
use relay_harness::value::{json_to_msgpack, to_hex};
use relay_harness::{
    bundled_plugin_dir, engine, Harness, HarnessOptions, Observation, Outcome, Scenario,
    ScenarioRunner, Step,
};
use serde_json::{json, Value as Json};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every bundled plugin artifact, by name. Fails when `plugins/<name>/` has
/// no artifact, so an unbuilt plugin is never silently skipped.
fn bundled_plugins() -> Vec<(String, PathBuf)> {
    let dir = bundled_plugin_dir();
    let hint = "run `cargo xtask build-plugins`";
    // The per-language example plugins are built apart (`languages/`).
    let apart = dir.join("languages");
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}; {hint}", dir.display()))
        .chain(std::fs::read_dir(&apart).into_iter().flatten())
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p.clone())))
        .collect();
    found.sort();
    let sources = std::fs::read_dir(workspace().join("plugins")).expect("list plugins/");
    for source in sources.filter_map(Result::ok) {
        let name = source.file_name().to_string_lossy().into_owned();
        // Rust plugins (Cargo.toml) and plugins in other languages (build.sh).
        if source.path().join("Cargo.toml").is_file() || source.path().join("build.sh").is_file() {
            assert!(
                found.iter().any(|(n, _)| *n == name),
                "plugins/{name} has no built artifact in {}: {hint}",
                dir.display()
            );
        }
    }
    assert!(
        found.iter().any(|(n, _)| n == "echo"),
        "echo.wasm missing in {}: {hint}",
        dir.display()
    );
    found
}

/// A plugin's own scenarios, and the shared conformance scenarios for the
/// plugins listed in `plugins/conformance/PLUGINS`.
fn scenario_files(plugin: &str) -> Vec<PathBuf> {
    let plugins = workspace().join("plugins");
    let listed = std::fs::read_to_string(plugins.join("conformance/PLUGINS")).unwrap_or_default();
    let conformance = listed
        .lines()
        .any(|l| l.split('#').next().unwrap_or("").trim() == plugin);
    let mut dirs = vec![plugins.join(plugin).join("scenarios")];
    if conformance {
        dirs.push(plugins.join("conformance"));
    }
    let mut files: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml" || e == "json"))
        .collect();
    files.sort();
    files
}

fn engines() -> Vec<Arc<dyn Engine>> {
    [EngineKind::Wasmtime, EngineKind::Wasmi]
        .into_iter()
        .map(|k| engine(k).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn read(path: &Path) -> Arc<[u8]> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .into()
}

#[test]
fn bundled_scenarios_pass_and_agree_on_both_engines() {
    let engines = engines();
    let (mut ran, mut failures) = (0, Vec::new());
    for (name, path) in bundled_plugins() {
        let runner = ScenarioRunner::new(read(&path), engines.clone());
        let files = scenario_files(&name);
        if name != "echo" && !name.starts_with("hostile") {
            assert!(
                !files.is_empty(),
                "plugins/{name}/scenarios/ has no scenario"
            );
        }
        for file in files {
            let scenario = Scenario::from_path(&file).unwrap_or_else(|e| panic!("{e}"));
            let report = runner.run(&scenario);
            ran += 1;
            if !report.disagreements.is_empty() {
                failures.push(format!("ENGINES DISAGREE on plugin {name}:\n{report}"));
            } else if !report.passed() {
                failures.push(format!(
                    "scenario failed (engines agree) on plugin {name}:\n{report}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} scenario(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The same plugin on both engines, driven in lockstep.
struct Lockstep {
    plugin: String,
    wasmtime: Harness,
    wasmi: Harness,
    steps: usize,
}

impl Lockstep {
    fn new(plugin: &str, wasm: Arc<[u8]>, engines: &[Arc<dyn Engine>]) -> Lockstep {
        let load = |e: &Arc<dyn Engine>| {
            Harness::new(e.clone(), wasm.clone(), HarnessOptions::default())
                .unwrap_or_else(|err| panic!("{plugin} on {}: {err}", e.kind()))
        };
        let (wasmtime, wasmi) = (load(&engines[0]), load(&engines[1]));
        assert_eq!(wasmtime.info(), wasmi.info(), "{plugin}: describe differs");
        Lockstep {
            plugin: plugin.into(),
            wasmtime,
            wasmi,
            steps: 0,
        }
    }

    /// Runs `cmd` on both engines; panics with the input when they differ.
    fn call(&mut self, cmd: &Invocation) -> Observation {
        self.steps += 1;
        let a = self.wasmtime.observe(cmd);
        let b = self.wasmi.observe(cmd);
        if let Some((what, ja, jb)) = a.disagreement(&b) {
            panic!(
                "{}: engines disagree on {what} at step {} ({} as {}, attempt {}, payload {}):\n\
                 wasmtime: {ja}\nwasmi:    {jb}",
                self.plugin,
                self.steps,
                cmd.name,
                cmd.role,
                cmd.attempt,
                to_hex(&cmd.payload)
            );
        }
        a
    }

    fn restart(&mut self) {
        self.wasmtime.restart().expect("wasmtime restart");
        self.wasmi.restart().expect("wasmi restart");
    }

    fn set_now(&mut self, now: u64) {
        self.wasmtime.set_now(now);
        self.wasmi.set_now(now);
    }
}

fn invocation(n: usize, name: &str, payload: Vec<u8>, role: Role, attempt: u32) -> Invocation {
    Invocation {
        id: format!("gen-{n}"),
        name: name.into(),
        payload,
        attempt,
        role,
    }
}

#[test]
fn echo_agrees_on_random_payloads() {
    let path = bundled_plugin_dir().join("echo.wasm");
    assert!(
        path.is_file(),
        "{} missing: run `cargo xtask build-plugins`",
        path.display()
    );
    let mut pair = Lockstep::new("echo", read(&path), &engines());
    let mut rng = StdRng::seed_from_u64(0xEC40);
    for n in 0..250 {
        let payload = if n < 200 {
            random_msgpack(&mut rng)
        } else {
            garbage(&mut rng)
        };
        let role = *Role::ALL.choose(&mut rng).expect("roles");
        let seen = pair.call(&invocation(n, "echo", payload.clone(), role, 1));
        let expected = if payload.is_empty() {
            Outcome::NoReply
        } else {
            Outcome::Reply(payload.clone())
        };
        assert_eq!(
            seen.outcome,
            expected,
            "echo changed payload {}",
            to_hex(&payload)
        );
        assert!(seen.events.is_empty() && seen.kv.is_empty());
    }
}

#[test]
fn every_command_agrees_on_generated_inputs() {
    let engines = engines();
    for (name, path) in bundled_plugins() {
        let mut pair = Lockstep::new(&name, read(&path), &engines);
        let commands: Vec<String> = pair
            .wasmtime
            .info()
            .commands
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let seeds = seed_payloads(&name);
        // Seeded by the plugin's name, so adding a plugin changes no other
        // plugin's sequence.
        let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut rng = StdRng::seed_from_u64(seed);
        let mut outcomes = BTreeMap::<String, usize>::new();
        for n in 0..300 {
            match rng.gen_range(0..100) {
                0..=2 => pair.restart(),
                3..=5 => pair.set_now(rng.gen_range(0..=4_000_000_000_000)),
                _ => {
                    let command = match rng.gen_range(0..20) {
                        0 => ["nope", "_status", "ECHO", "a-b_c"]
                            .choose(&mut rng)
                            .expect("names")
                            .to_string(),
                        _ => commands.choose(&mut rng).cloned().unwrap_or_default(),
                    };
                    let payload = match rng.gen_range(0..20) {
                        0..=4 => random_msgpack(&mut rng),
                        5..=7 => garbage(&mut rng),
                        8 => Vec::new(),
                        _ => match seeds.get(&command).and_then(|s| s.choose(&mut rng)) {
                            Some(seed) => {
                                json_to_msgpack(&mutate(seed, &mut rng, 0)).unwrap_or_default()
                            }
                            None => json_to_msgpack(&random_json(&mut rng, 0)).unwrap_or_default(),
                        },
                    };
                    let role = *Role::ALL.choose(&mut rng).expect("roles");
                    let attempt = if rng.gen_bool(0.05) {
                        u32::MAX
                    } else {
                        rng.gen_range(1..=6)
                    };
                    let seen = pair.call(&invocation(n, &command, payload, role, attempt));
                    *outcomes
                        .entry(outcome_name(&seen.outcome).to_string())
                        .or_default() += 1;
                }
            }
        }
        eprintln!(
            "{name}: {} lockstep calls, outcomes {outcomes:?}",
            pair.steps
        );
    }
}

fn outcome_name(o: &Outcome) -> &str {
    match o {
        Outcome::Reply(_) => "reply",
        Outcome::NoReply => "no_reply",
        Outcome::Error { .. } => "error",
        Outcome::Rejected { code, .. } | Outcome::Failure { code, .. } => code.as_str(),
    }
}

/// The payloads the plugin's own scenarios send, by command: realistic
/// starting points for mutation.
fn seed_payloads(plugin: &str) -> BTreeMap<String, Vec<Json>> {
    let mut seeds: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    for file in scenario_files(plugin) {
        let Ok(scenario) = Scenario::from_path(&file) else {
            continue;
        };
        for step in scenario.steps {
            if let Step::Call(call) = step {
                let value = relay_harness::value::msgpack_to_json(&call.payload);
                seeds.entry(call.command).or_default().push(value);
            }
        }
    }
    seeds
}

// ---- generators ----

/// One random msgpack value, using every marker family (all int widths,
/// f32/f64, str/bin/ext of each size class, nested arrays and maps with
/// string and integer keys).
fn random_msgpack(rng: &mut StdRng) -> Vec<u8> {
    let mut out = Vec::new();
    write_random(rng, &mut out, 0);
    out
}

fn write_random(rng: &mut StdRng, out: &mut Vec<u8>, depth: usize) {
    use rmp::encode as e;
    let leaf_only = depth >= 4;
    let choice = rng.gen_range(0..if leaf_only { 14 } else { 17 });
    // Writing into a Vec cannot fail; the results are ignored on purpose.
    let _ = match choice {
        0 => e::write_nil(out).map_err(drop),
        1 => e::write_bool(out, rng.gen()).map_err(drop),
        2 => e::write_pfix(out, rng.gen_range(0..128)).map_err(drop),
        3 => e::write_nfix(out, rng.gen_range(-32..0)).map_err(drop),
        4 => e::write_u8(out, rng.gen()).map_err(drop),
        5 => e::write_u16(out, rng.gen()).map_err(drop),
        6 => e::write_u64(out, rng.gen()).map_err(drop),
        7 => e::write_i32(out, rng.gen()).map_err(drop),
        8 => e::write_i64(out, rng.gen()).map_err(drop),
        9 => e::write_f32(out, rng.gen::<f32>() * 1e6).map_err(drop),
        10 => e::write_f64(
            out,
            *[f64::NAN, -0.0, 1e308, rng.gen()]
                .choose(rng)
                .unwrap_or(&0.0),
        )
        .map_err(drop),
        11 => e::write_str(out, &random_string(rng)).map_err(drop),
        12 => {
            let len = *[0usize, 3, 40, 300].choose(rng).unwrap_or(&0);
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            e::write_bin(out, &data).map_err(drop)
        }
        13 => {
            let len = *[1u32, 2, 4, 8, 16, 3, 100].choose(rng).unwrap_or(&1);
            let r = e::write_ext_meta(out, len, rng.gen())
                .map(drop)
                .map_err(drop);
            out.extend((0..len).map(|_| rng.gen::<u8>()));
            r
        }
        14 | 15 => {
            let len = rng.gen_range(0..6);
            let r = e::write_array_len(out, len).map(drop).map_err(drop);
            for _ in 0..len {
                write_random(rng, out, depth + 1);
            }
            r
        }
        _ => {
            let len = rng.gen_range(0..6);
            let r = e::write_map_len(out, len).map(drop).map_err(drop);
            for _ in 0..len {
                if rng.gen_bool(0.8) {
                    let _ = e::write_str(out, &random_key(rng));
                } else {
                    let _ = e::write_sint(out, rng.gen_range(-5..5));
                }
                write_random(rng, out, depth + 1);
            }
            r
        }
    };
}

fn random_string(rng: &mut StdRng) -> String {
    let len = *[0usize, 1, 5, 31, 32, 300].choose(rng).unwrap_or(&0);
    (0..len)
        .map(|_| {
            *['a', 'Z', '0', '-', '_', ' ', 'é', '漢', '🦀', '\0']
                .choose(rng)
                .unwrap_or(&'a')
        })
        .collect()
}

fn random_key(rng: &mut StdRng) -> String {
    let common = [
        "value", "by", "name", "id", "delay_ms", "replicas", "fail", "config", "version", "count",
    ];
    if rng.gen_bool(0.5) {
        common.choose(rng).unwrap_or(&"k").to_string()
    } else {
        random_string(rng)
    }
}

/// Bytes that are mostly not valid msgpack: random, truncated, reserved,
/// absurd lengths, very deep nesting.
fn garbage(rng: &mut StdRng) -> Vec<u8> {
    match rng.gen_range(0..6) {
        0 => (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect(),
        1 => {
            let mut v = random_msgpack(rng);
            v.truncate(v.len().saturating_sub(1).max(1) / 2);
            v
        }
        2 => vec![0xc1],
        3 => vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0x01],
        4 => {
            let mut deep = vec![0x91; rng.gen_range(30..3000)];
            deep.push(0xc0);
            deep
        }
        _ => {
            let mut v = random_msgpack(rng);
            v.extend((0..rng.gen_range(1..8)).map(|_| rng.gen::<u8>()));
            v
        }
    }
}

/// A random JSON-shaped value (maps with plausible keys).
fn random_json(rng: &mut StdRng, depth: usize) -> Json {
    match rng.gen_range(0..if depth >= 3 { 5 } else { 7 }) {
        0 => Json::Null,
        1 => json!(rng.gen::<bool>()),
        2 => interesting_number(rng),
        3 => json!(random_string(rng)),
        4 => json!(rng.gen::<f64>() * 1000.0),
        5 => Json::Array(
            (0..rng.gen_range(0..4))
                .map(|_| random_json(rng, depth + 1))
                .collect(),
        ),
        _ => Json::Object(
            (0..rng.gen_range(0..5))
                .map(|_| (random_key(rng), random_json(rng, depth + 1)))
                .collect(),
        ),
    }
}

fn interesting_number(rng: &mut StdRng) -> Json {
    match rng.gen_range(0..10) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(i64::MAX),
        3 => json!(i64::MIN),
        4 => json!(u64::MAX),
        5 => json!(u32::MAX as u64 + 1),
        6 => json!(0.5),
        7 => json!(-1e300),
        _ => json!(rng.gen_range(-1000i64..100_000)),
    }
}

/// A scenario payload with a few values changed, dropped, retyped or added.
fn mutate(seed: &Json, rng: &mut StdRng, depth: usize) -> Json {
    if depth > 6 {
        return seed.clone();
    }
    match seed {
        Json::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                match rng.gen_range(0..10) {
                    0 => continue,
                    1 => out.insert(k.clone(), random_json(rng, depth + 1)),
                    _ => out.insert(k.clone(), mutate(v, rng, depth + 1)),
                };
            }
            if rng.gen_bool(0.15) {
                out.insert(random_key(rng), random_json(rng, depth + 1));
            }
            Json::Object(out)
        }
        Json::Array(items) => {
            Json::Array(items.iter().map(|v| mutate(v, rng, depth + 1)).collect())
        }
        Json::Number(_) if rng.gen_bool(0.5) => interesting_number(rng),
        Json::String(_) if rng.gen_bool(0.3) => json!(random_string(rng)),
        _ if rng.gen_bool(0.1) => random_json(rng, depth + 1),
        other => other.clone(),
    }
}
