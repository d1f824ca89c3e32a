//! Broker restart while commands flow (issue 3, test 4).
//!
//! - **Mosquitto** with persistence: sessions, their subscriptions and
//!   queued messages survive the restart (SIGTERM saves them). The app keeps
//!   publishing through the restart (its client resends what the broker had
//!   not acked) and nothing is lost: every command reaches a final status,
//!   including those in flight at the restart.
//! - **Embedded broker** (rumqttd keeps sessions in memory only): a restart
//!   loses every session, so the host gets `session_present = false`. What
//!   must hold is that the host resubscribes and that every command
//!   published after it reconnected runs. Commands the old broker had
//!   accepted but not delivered are gone with it (that broker's contract,
//!   not the host's); their count is printed.
//!
//! The host is a `relay run` child process with the `echo` plugin.

#[path = "support/e2e_app.rs"]
mod e2e_app;
#[path = "support/host_process.rs"]
mod host_process;
#[allow(unused_imports)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use e2e_app::{json, App};
use host_process::{HostConfig, HostProcess};
use relay_core::plugin::Role;
use relay_core::status::State;
use serde_json::json;
use support::{BrokerKind, TestBroker};

const LIMIT: Duration = Duration::from_secs(120);
/// Commands sent while the broker restarts, and after.
const DURING: usize = 300;
const AFTER: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_nothing_mosquitto() -> Result<()> {
    broker_restart(BrokerKind::Mosquitto).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_resubscribes_embedded() -> Result<()> {
    broker_restart(BrokerKind::Embedded).await
}

async fn broker_restart(kind: BrokerKind) -> Result<()> {
    let mut broker = TestBroker::start(kind)?;
    let device = "restart";
    // A persistent app session where the broker keeps sessions, so statuses
    // published while the app reconnects are queued for it.
    let app_session = broker
        .keeps_sessions_across_restart()
        .then_some("e2e-restart-app");
    let app = Arc::new(App::connect_with(broker.port(), device, app_session).await?);
    let host = tokio::task::block_in_place(|| {
        HostProcess::start(HostConfig::new(device, broker.port(), &["echo"]))
    })?;

    // Commands flow at a steady pace while the broker restarts in the middle.
    let during: Vec<String> = (0..DURING).map(|i| format!("during-{i:03}")).collect();
    let sender = {
        let app = app.clone();
        let ids = during.clone();
        tokio::spawn(async move {
            for (i, id) in ids.iter().enumerate() {
                app.command(Role::Primary, id, "echo", json!({"n": i}))
                    .await?;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            anyhow::Ok(())
        })
    };
    app.wait_until(LIMIT, |s| {
        s.all.iter().filter(|st| st.is_final()).count() >= DURING / 3
    })
    .await?;
    tokio::task::block_in_place(|| broker.restart())?;
    sender.await??;

    // The host is back: it answers (it resubscribed, also when the broker
    // forgot its session).
    app.probe("echo", json!("probe"), LIMIT).await?;

    let after: Vec<String> = (0..AFTER).map(|i| format!("after-{i:03}")).collect();
    for (i, id) in after.iter().enumerate() {
        app.command(Role::Primary, id, "echo", json!({"n": i}))
            .await?;
    }
    app.wait_all_final(&after, LIMIT).await?;

    if broker.keeps_sessions_across_restart() {
        // Nothing lost: every command the app sent reaches a final status.
        app.wait_acked(&during, LIMIT).await?;
        app.wait_all_final(&during, LIMIT).await?;
    } else {
        // Give stragglers a moment, then report what the fresh broker lost.
        let _ = app.wait_all_final(&during, Duration::from_secs(3)).await;
    }

    let seen = app.seen();
    for id in during.iter().chain(&after) {
        if let Some(last) = seen.final_of(id) {
            ensure!(last.status == State::Succeeded, "{id}: {last:?}");
            let n: usize = id
                .rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_default();
            ensure!(
                json(last.reply.as_deref().unwrap_or_default()) == json!({"n": n}),
                "{id}: wrong reply"
            );
        }
    }
    let during_final = during
        .iter()
        .filter(|id| seen.final_of(id).is_some())
        .count();
    println!(
        "broker restart ({}): {during_final}/{DURING} commands sent around the restart final, \
         {AFTER}/{AFTER} after it; app reconnects: {}",
        kind.name(),
        seen.connects.saturating_sub(1)
    );
    drop(seen);
    let mut host = host;
    ensure!(
        host.is_running(),
        "host exited; log:\n{}",
        host.log_tail(40)
    );
    Ok(())
}
