//! Crash test (issue 3, test 3): `kill -9` the device host at random
//! moments during a 2,000-command run, restart it on the same data dir, at
//! least 20 times; then check that nothing the broker accepted was lost.
//!
//! The app publishes 2,000 `increment` commands (the `counter` plugin) at
//! QoS 1 and records which ones the broker acknowledged. A seeded RNG picks
//! each kill moment: mostly after a random amount of progress (some final
//! statuses observed since the last start, plus a random sub-delay), and
//! sometimes during start-up (journal replay, plugin loading, the careful
//! re-run of the command that was interrupted). After the last kill the host
//! runs undisturbed until every command is final.
//!
//! What is asserted, and why it is the right bound:
//! - every command the broker acked reaches a final status (none lost);
//! - each is `succeeded`, or `failed`/`interrupted` if it was killed on its
//!   every attempt (the poison-pill guard; printed, not expected);
//! - re-runs <= kills. A succeeded command runs again only if it was in
//!   flight at a crash, and one runs at a time. Re-runs are counted two
//!   ways: attempts (`attempt` of the final status - 1, i.e. restarts that
//!   found the command started but not finished) and effects (the counter's
//!   final value minus the number of succeeded commands: handler runs whose
//!   kv write survived but whose outcome did not).
//!
//! The seed is printed; `RELAY_CRASH_SEED=<n>` replays a choice of moments
//! (the timing itself is the machine's). Bounded everywhere: at most
//! `MAX_KILLS` kills and an overall deadline.

#[path = "support/e2e_app.rs"]
mod e2e_app;
#[path = "support/host_process.rs"]
mod host_process;
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use e2e_app::{json, App};
use host_process::{HostConfig, HostProcess};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use relay_core::plugin::Role;
use relay_core::status::{Code, State};
use support::{BrokerKind, TestBroker};

const COMMANDS: usize = 2_000;
const MIN_KILLS: usize = 20;
const MAX_KILLS: usize = 60;
/// The whole test, start to finish (debug build, 2 cores, CI).
const DEADLINE: Duration = Duration::from_secs(900);
/// One host start (plugin compile + journal replay + connect).
const READY_LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_mosquitto() -> Result<()> {
    crash_loop(BrokerKind::Mosquitto).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_embedded() -> Result<()> {
    crash_loop(BrokerKind::Embedded).await
}

fn seed() -> u64 {
    std::env::var("RELAY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_C0DE)
}

/// Figures of one run (printed; the test's output).
#[derive(Debug, Default)]
struct Figures {
    kills: usize,
    kills_during_startup: usize,
    acked: usize,
    finals: usize,
    succeeded: usize,
    interrupted: usize,
    reruns_by_attempt: u64,
    reruns_by_effect: u64,
    duplicate_finals: usize,
    counter: u64,
    elapsed: Duration,
}

async fn crash_loop(kind: BrokerKind) -> Result<()> {
    let started = Instant::now();
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let broker = TestBroker::start(kind)?;
    let device = "crash";
    let app = App::connect(broker.port(), device).await?;
    let config = HostConfig::new(device, broker.port(), &["counter"]);
    let mut host = tokio::task::block_in_place(|| HostProcess::start(config))?;

    let ids: Vec<String> = (0..COMMANDS).map(|i| format!("crash-{i:04}")).collect();
    // Publish everything up front (QoS 1); the broker queues what the host
    // has not taken yet, across every kill.
    for id in &ids {
        app.command(Role::Primary, id, "increment", serde_json::Value::Null)
            .await?;
    }

    let mut figures = Figures::default();
    let finals = |app: &App| {
        let seen = app.seen();
        ids.iter().filter(|id| seen.final_of(id).is_some()).count()
    };
    while figures.kills < MAX_KILLS && started.elapsed() < DEADLINE / 2 {
        let done = finals(&app);
        if done == COMMANDS {
            break;
        }
        let during_startup = rng.gen_bool(0.15);
        if during_startup {
            // Somewhere in start-up: replay, plugin load, connect, the first (careful) command.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..400))).await;
            figures.kills_during_startup += 1;
        } else {
            tokio::task::block_in_place(|| host.wait_ready(READY_LIMIT))?;
            let target = done + rng.gen_range(10..=100);
            let limit = Instant::now() + Duration::from_secs(60);
            while finals(&app) < target.min(COMMANDS) && Instant::now() < limit {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..20))).await;
        }
        if !host.is_running() {
            anyhow::bail!("the host died on its own; log:\n{}", host.log_tail(60));
        }
        tokio::task::block_in_place(|| host.kill9())?;
        figures.kills += 1;
        host.spawn()?;
        if figures.kills >= MIN_KILLS && finals(&app) == COMMANDS {
            break;
        }
    }
    tokio::task::block_in_place(|| host.wait_ready(READY_LIMIT))?;

    // Everything the broker accepted must reach a final status.
    let acked: Vec<String> = {
        let seen = app.seen();
        ids.iter()
            .filter(|id| seen.acked.contains(*id))
            .cloned()
            .collect()
    };
    let remaining = DEADLINE
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(60));
    if let Err(e) = app.wait_all_final(&acked, remaining).await {
        anyhow::bail!(
            "commands lost after the crashes: {e:#}\nhost log:\n{}",
            host.log_tail(80)
        );
    }

    // The counter's value: how many increments took effect.
    let probe = match app
        .probe("get", serde_json::Value::Null, Duration::from_secs(60))
        .await
    {
        Ok(probe) => probe,
        Err(e) => anyhow::bail!(
            "{e:#} ({}, running: {})\nhost log:\n{}",
            kind.name(),
            host.is_running(),
            host.log_tail(80)
        ),
    };
    let counter = json(probe.reply.as_deref().unwrap_or_default())["value"]
        .as_u64()
        .context("counter value")?;

    {
        let seen = app.seen();
        figures.acked = acked.len();
        for id in &ids {
            let Some(last) = seen.final_of(id) else {
                continue;
            };
            figures.finals += 1;
            figures.duplicate_finals += seen.finals_of(id) - 1;
            match (last.status, &last.code) {
                (State::Succeeded, _) => {
                    figures.succeeded += 1;
                    figures.reruns_by_attempt += u64::from(last.attempt.saturating_sub(1));
                }
                (State::Failed, Some(Code::Interrupted)) => figures.interrupted += 1,
                _ => anyhow::bail!("{id}: unexpected final status {last:?}"),
            }
        }
    }
    figures.counter = counter;
    figures.reruns_by_effect = counter.saturating_sub(figures.succeeded as u64);
    figures.elapsed = started.elapsed();
    println!(
        "crash test ({}, seed {seed}): {} kills ({} during start-up); {} of {COMMANDS} accepted, {} final \
         ({} succeeded, {} failed/interrupted); re-runs: {} by attempt, {} by effect (counter = {}); \
         {} duplicate final statuses (redeliveries answered from the journal); {:.1} s",
        kind.name(),
        figures.kills,
        figures.kills_during_startup,
        figures.acked,
        figures.finals,
        figures.succeeded,
        figures.interrupted,
        figures.reruns_by_attempt,
        figures.reruns_by_effect,
        figures.counter,
        figures.duplicate_finals,
        figures.elapsed.as_secs_f64(),
    );

    ensure!(
        figures.kills >= MIN_KILLS,
        "only {} kills before the run finished: {figures:?}",
        figures.kills
    );
    ensure!(
        figures.acked == COMMANDS,
        "the broker acked only {} of {COMMANDS} publishes",
        figures.acked
    );
    ensure!(figures.finals == COMMANDS, "lost commands: {figures:?}");
    ensure!(
        figures.reruns_by_attempt <= figures.kills as u64,
        "more re-runs than kills: {figures:?}"
    );
    ensure!(
        figures.reruns_by_effect <= figures.kills as u64,
        "more re-runs than kills: {figures:?}"
    );
    ensure!(
        counter >= figures.succeeded as u64,
        "a succeeded increment did not take effect: {figures:?}"
    );
    ensure!(host.is_running(), "host not running at the end");
    Ok(())
}
