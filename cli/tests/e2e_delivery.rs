//! End to end through a real broker (issue 3, tests 1 and 2, roles, RPC):
//! an app publishes envelopes, a `relay run` child process runs them through
//! its wasm plugins, the app reads the statuses back. Every scenario runs
//! against Mosquitto and against the embedded broker (rumqttd).
//!
//! - `offline_commands_run_in_order`: commands sent while the host is down
//!   are all run, in arrival order, once it starts (the `counter` plugin's
//!   replies number them).
//! - `retries_follow_the_policy`: a handler failing k times (k = 0..=6) gets
//!   min(k+1, 5) attempts, spaced by the configured delay (200 ms here; the
//!   real 5 s is covered in virtual time by the scheduler's unit tests), then
//!   the right final status.
//! - `roles_come_from_the_topic`: a secondary may not `reboot`.
//! - `rpc_replies_in_the_final_status`: an RPC to `echo` (on wasmtime) gets
//!   its payload back.
//!
//! Hosts run the wasmi engine unless a test is about wasmtime (see
//! `support/host_process.rs` for why).
//!
//! No timed assertions: every wait is for an observable event, bounded by a
//! generous limit that only turns a hang into a failure.

#[path = "support/e2e_app.rs"]
mod e2e_app;
#[path = "support/host_process.rs"]
mod host_process;
#[allow(unused_imports)]
mod support;

use std::time::Duration;

use anyhow::{ensure, Result};
use e2e_app::{json, states, App};
use host_process::{HostConfig, HostProcess};
use relay_core::plugin::Role;
use relay_core::status::{Code, State};
use serde_json::json;
use support::{BrokerKind, TestBroker};

/// Upper bound of any single wait.
const LIMIT: Duration = Duration::from_secs(90);

/// One `#[tokio::test]` per broker for an `async fn scenario(BrokerKind)`.
macro_rules! on_both_brokers {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mosquitto() -> anyhow::Result<()> {
                super::$scenario(super::BrokerKind::Mosquitto).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() -> anyhow::Result<()> {
                super::$scenario(super::BrokerKind::Embedded).await
            }
        }
    )*};
}

on_both_brokers!(
    offline_commands_run_in_order,
    retries_follow_the_policy,
    roles_come_from_the_topic,
    rpc_replies_in_the_final_status,
);

fn start_host(config: HostConfig) -> Result<HostProcess> {
    tokio::task::block_in_place(|| HostProcess::start(config))
}

async fn offline_commands_run_in_order(kind: BrokerKind) -> Result<()> {
    const COMMANDS: usize = 50;
    let broker = TestBroker::start(kind)?;
    let device = "offline";
    let app = App::connect(broker.port(), device).await?;
    // A first start creates the host's persistent session (its subscription),
    // so the broker queues commands for it while it is down.
    let mut host = start_host(HostConfig::new(device, broker.port(), &["counter"]))?;
    let status = tokio::task::block_in_place(|| host.terminate())?;
    ensure!(status.success(), "graceful stop failed: {status}");

    let ids: Vec<String> = (0..COMMANDS).map(|i| format!("off-{i:03}")).collect();
    for id in &ids {
        app.command(Role::Primary, id, "increment", serde_json::Value::Null)
            .await?;
    }
    app.wait_acked(&ids, LIMIT).await?;
    ensure!(
        app.seen().all.is_empty(),
        "statuses while the host was down: {:?}",
        app.seen().all
    );

    tokio::task::block_in_place(|| -> Result<()> {
        host.spawn()?;
        host.wait_ready(LIMIT)
    })?;
    app.wait_all_final(&ids, LIMIT).await?;

    let seen = app.seen();
    for (i, id) in ids.iter().enumerate() {
        let last = seen.final_of(id).expect("waited for it");
        ensure!(
            last.status == State::Succeeded,
            "{id}: {:?}",
            states(&seen.statuses_of(id))
        );
        ensure!(last.attempt == 1, "{id} ran {} times", last.attempt);
        let reply = json(last.reply.as_deref().unwrap_or_default());
        // The n-th increment to run sees n: run order == send order.
        ensure!(
            reply == json!({"value": i + 1}),
            "{id}: reply {reply} (expected value {})",
            i + 1
        );
    }
    let finals: Vec<&str> = seen
        .all
        .iter()
        .filter(|s| s.is_final())
        .map(|s| s.id.as_str())
        .collect();
    ensure!(
        finals == ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "final statuses out of order: {finals:?}"
    );
    Ok(())
}

async fn retries_follow_the_policy(kind: BrokerKind) -> Result<()> {
    const DELAY_MS: u64 = 200;
    const MAX_ATTEMPTS: u32 = 5;
    let broker = TestBroker::start(kind)?;
    let device = "retries";
    let app = App::connect(broker.port(), device).await?;
    let mut config = HostConfig::new(device, broker.port(), &["deploy"]);
    config.retry_delay_ms = DELAY_MS;
    config.max_attempts = MAX_ATTEMPTS;
    let _host = start_host(config)?;

    let ids: Vec<String> = (0..=6u32).map(|k| format!("deploy-fail-{k}")).collect();
    for (k, id) in ids.iter().enumerate() {
        let config = json!({"version": "1.2.3", "replicas": 2, "timeout_s": 30, "fail_times": k});
        app.command(Role::Primary, id, "deploy", config).await?;
    }
    app.wait_all_final(&ids, LIMIT).await?;

    let seen = app.seen();
    for (k, id) in ids.iter().enumerate() {
        let k = k as u32;
        let statuses = seen.statuses_of(id);
        let trace = states(&statuses);
        let last = seen.final_of(id).expect("waited for it");
        let attempts = (k + 1).min(MAX_ATTEMPTS);
        ensure!(
            last.attempt == attempts,
            "k={k}: final attempt {} (expected {attempts}): {trace:?}",
            last.attempt
        );
        if k < MAX_ATTEMPTS {
            ensure!(last.status == State::Succeeded, "k={k}: {trace:?}");
            ensure!(
                json(last.reply.as_deref().unwrap_or_default())
                    == json!({"stored": true, "version": "1.2.3"})
            );
        } else {
            ensure!(last.status == State::Failed, "k={k}: {trace:?}");
            ensure!(
                last.code == Some(Code::HandlerError),
                "k={k}: code {:?}",
                last.code
            );
        }
        // One `retrying` after each failed attempt but the last, never coalesced.
        let retrying: Vec<_> = statuses
            .iter()
            .filter(|s| s.status == State::Retrying)
            .collect();
        let expected: Vec<u32> = (1..attempts).collect();
        ensure!(
            retrying.iter().map(|s| s.attempt).collect::<Vec<_>>() == expected,
            "k={k}: retrying attempts {trace:?}"
        );
        for r in &retrying {
            let next_at = r.next_attempt_at.unwrap_or(0);
            ensure!(
                next_at >= r.at + DELAY_MS,
                "k={k}: next_attempt_at {next_at} < at {} + delay",
                r.at
            );
            // The next attempt starts no earlier than announced: its first
            // status (`running`, or if that was coalesced under load its
            // `retrying` / final status, which come after its start).
            let next = statuses.iter().find(|s| s.attempt == r.attempt + 1);
            let next = next
                .ok_or_else(|| anyhow::anyhow!("k={k}: no status of attempt {}", r.attempt + 1))?;
            ensure!(
                next.at >= next_at,
                "k={k}: attempt {} at {} before {next_at}",
                next.attempt,
                next.at
            );
        }
        // Attempt numbers never go backwards.
        ensure!(
            statuses.windows(2).all(|w| w[0].attempt <= w[1].attempt),
            "k={k}: {trace:?}"
        );
    }
    Ok(())
}

async fn roles_come_from_the_topic(kind: BrokerKind) -> Result<()> {
    let broker = TestBroker::start(kind)?;
    let device = "roles";
    let app = App::connect(broker.port(), device).await?;
    let _host = start_host(HostConfig::new(
        device,
        broker.port(),
        &["system", "deploy"],
    ))?;

    let config = json!({"version": "1.0.0", "replicas": 1, "timeout_s": 5});
    app.command(Role::Secondary, "reboot-as-secondary", "reboot", json!({}))
        .await?;
    app.command(
        Role::Secondary,
        "deploy-as-secondary",
        "deploy",
        config.clone(),
    )
    .await?;
    app.command(
        Role::Secondary,
        "identify-as-secondary",
        "identify",
        json!({}),
    )
    .await?;
    app.command(Role::Primary, "deploy-as-primary", "deploy", config)
        .await?;
    app.command(
        Role::Admin,
        "reboot-as-admin",
        "reboot",
        json!({"delay_ms": 0}),
    )
    .await?;

    for (id, state, code) in [
        (
            "reboot-as-secondary",
            State::Rejected,
            Some(Code::NotPermitted),
        ),
        (
            "deploy-as-secondary",
            State::Rejected,
            Some(Code::NotPermitted),
        ),
        ("identify-as-secondary", State::Succeeded, None),
        ("deploy-as-primary", State::Succeeded, None),
        ("reboot-as-admin", State::Succeeded, None),
    ] {
        let last = app.wait_final(id, LIMIT).await?;
        ensure!(last.status == state && last.code == code, "{id}: {last:?}");
    }
    // The refused reboot never reached the handler: the plugin counted only
    // the admin's (its `reboots` counter lives in the plugin's kv).
    app.command(Role::Secondary, "identify-after", "identify", json!({}))
        .await?;
    let last = app.wait_final("identify-after", LIMIT).await?;
    let identity = json(last.reply.as_deref().unwrap_or_default());
    ensure!(identity["reboots"] == 1, "reboots counted: {identity}");
    Ok(())
}

async fn rpc_replies_in_the_final_status(kind: BrokerKind) -> Result<()> {
    let broker = TestBroker::start(kind)?;
    let device = "rpc";
    let app = App::connect(broker.port(), device).await?;
    // The echo plugin on wasmtime: the production engine end to end.
    let mut config = HostConfig::new(device, broker.port(), &["echo"]);
    config.engine = "wasmtime".into();
    let _host = start_host(config)?;

    let payload = json!({"hello": "world", "n": [1, 2, 3], "blob": "x".repeat(1000)});
    app.rpc(Role::Secondary, "rpc-1", "echo", payload.clone())
        .await?;
    let last = app.wait_final("rpc-1", LIMIT).await?;
    ensure!(
        last.status == State::Succeeded && last.attempt == 1,
        "{last:?}"
    );
    ensure!(
        json(last.reply.as_deref().unwrap_or_default()) == payload,
        "reply differs"
    );
    // No payload: no reply.
    app.rpc(Role::Admin, "rpc-2", "echo", serde_json::Value::Null)
        .await?;
    let last = app.wait_final("rpc-2", LIMIT).await?;
    ensure!(
        last.status == State::Succeeded && last.reply.is_none(),
        "{last:?}"
    );
    Ok(())
}
