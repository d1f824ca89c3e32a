//! Hostile input over the wire (issue 3, test 5), on both brokers: every
//! malformed or refused command gets a `rejected` status with the right
//! code, is acked (so the broker never redelivers it: after a host restart
//! none of them shows up again), and the host stays up (a good command
//! afterwards succeeds).
//!
//! Inputs: invalid msgpack, an empty message, a non-map, nesting 10,000
//! deep, an envelope over the size limit, an invalid name, a missing id, an
//! unknown command, wrong field types, and a topic whose role level is not a
//! role. Each is sent alone and its `rejected` status awaited before the
//! next, so a status with an unreadable (empty) id is still attributed.

#[path = "support/e2e_app.rs"]
mod e2e_app;
#[path = "support/host_process.rs"]
mod host_process;
#[allow(unused_imports)]
mod support;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use e2e_app::{json, msgpack, now_ms, App};
use host_process::{HostConfig, HostProcess};
use relay_core::plugin::Role;
use relay_core::status::{Code, State};
use serde_json::json;
use support::{BrokerKind, TestBroker};

const LIMIT: Duration = Duration::from_secs(90);
/// `[envelope] max_bytes` of the host under test.
const MAX_ENVELOPE: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_acked_and_survived_mosquitto() -> Result<()> {
    bad_input(BrokerKind::Mosquitto).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_acked_and_survived_embedded() -> Result<()> {
    bad_input(BrokerKind::Embedded).await
}

/// One hostile message: where it goes, its bytes, the expected code and,
/// when the device can still read it, the id its status carries.
struct Case {
    what: &'static str,
    role_level: &'static str,
    bytes: Vec<u8>,
    code: Code,
    id: Option<&'static str>,
}

/// A msgpack map from `(key, raw value)` pairs, values already encoded.
fn map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_map_len(&mut out, entries.len() as u32).expect("vec write");
    for (key, value) in entries {
        rmp::encode::write_str(&mut out, key).expect("vec write");
        out.extend_from_slice(value);
    }
    out
}

fn str_(s: &str) -> Vec<u8> {
    msgpack(&json!(s))
}

fn uint(n: u64) -> Vec<u8> {
    msgpack(&json!(n))
}

fn cases() -> Vec<Case> {
    let now = now_ms();
    let deep = {
        // 10,000 nested one-element arrays around a nil.
        let mut v = vec![0x91u8; 10_000];
        v.push(0xc0);
        v
    };
    let big = {
        let mut v = Vec::new();
        rmp::encode::write_bin(&mut v, &vec![0x42u8; MAX_ENVELOPE + 1024]).expect("vec write");
        v
    };
    let good = |id: &str, name: &str| {
        map(&[
            ("id", str_(id)),
            ("name", str_(name)),
            ("sent_at", uint(now)),
        ])
    };
    vec![
        Case {
            what: "invalid msgpack",
            role_level: "admin",
            bytes: vec![0xc1, 0x00, 0xff],
            code: Code::InvalidPayload,
            id: None,
        },
        Case {
            what: "empty message",
            role_level: "admin",
            bytes: Vec::new(),
            code: Code::InvalidPayload,
            id: None,
        },
        Case {
            what: "not a map",
            role_level: "admin",
            bytes: msgpack(&json!(["id", "x"])),
            code: Code::InvalidPayload,
            id: None,
        },
        Case {
            what: "nesting 10,000 deep",
            role_level: "admin",
            bytes: map(&[
                ("id", str_("deep-1")),
                ("name", str_("echo")),
                ("sent_at", uint(now)),
                ("payload", deep),
            ]),
            code: Code::InvalidPayload,
            id: Some("deep-1"),
        },
        Case {
            what: "over the size limit",
            role_level: "admin",
            bytes: map(&[
                ("id", str_("big-1")),
                ("name", str_("echo")),
                ("sent_at", uint(now)),
                ("payload", big),
            ]),
            code: Code::TooLarge,
            id: Some("big-1"),
        },
        Case {
            what: "invalid name",
            role_level: "admin",
            bytes: good("badname-1", "bad name!"),
            code: Code::InvalidPayload,
            id: Some("badname-1"),
        },
        Case {
            what: "missing id",
            role_level: "admin",
            bytes: map(&[("name", str_("echo")), ("sent_at", uint(now))]),
            code: Code::InvalidPayload,
            id: None,
        },
        Case {
            what: "unknown command",
            role_level: "admin",
            bytes: good("unknown-1", "no_such_command"),
            code: Code::UnknownCommand,
            id: Some("unknown-1"),
        },
        Case {
            what: "id of the wrong type",
            role_level: "admin",
            bytes: map(&[
                ("id", uint(42)),
                ("name", str_("echo")),
                ("sent_at", uint(now)),
            ]),
            code: Code::InvalidPayload,
            id: None,
        },
        Case {
            what: "sent_at of the wrong type",
            role_level: "admin",
            bytes: map(&[
                ("id", str_("types-1")),
                ("name", str_("echo")),
                ("sent_at", str_("yesterday")),
            ]),
            code: Code::InvalidPayload,
            id: Some("types-1"),
        },
        Case {
            what: "topic with a bad role",
            role_level: "root",
            bytes: good("role-1", "echo"),
            code: Code::NotPermitted,
            id: Some("role-1"),
        },
    ]
}

async fn bad_input(kind: BrokerKind) -> Result<()> {
    let broker = TestBroker::start(kind)?;
    let device = "hostile";
    let app = App::connect(broker.port(), device).await?;
    let mut config = HostConfig::new(device, broker.port(), &["echo"]);
    config.extra_toml = format!("[envelope]\nmax_bytes = {MAX_ENVELOPE}\n");
    let mut host = tokio::task::block_in_place(|| HostProcess::start(config))?;

    let command_base = app.topics().command(Role::Admin);
    let command_base = command_base
        .strip_suffix("admin")
        .expect("topic ends with the role");
    for case in cases() {
        let before = app.seen().all.len();
        let topic = format!("{command_base}{}", case.role_level);
        app.send_raw(&topic, case.what.to_string(), case.bytes)
            .await?;
        // An unknown name is found out when the command's turn comes, so it
        // may show `accepted` first; everything else is refused at arrival.
        app.wait_until(LIMIT, |s| s.all[before..].iter().any(|st| st.is_final()))
            .await
            .with_context(|| format!("{}: no final status", case.what))?;
        let seen = app.seen();
        let fresh = &seen.all[before..];
        let status = fresh
            .iter()
            .find(|st| st.is_final())
            .expect("waited for it");
        ensure!(
            fresh.iter().all(|st| st.id == status.id),
            "{}: statuses of other commands: {fresh:?}",
            case.what
        );
        ensure!(
            status.status == State::Rejected,
            "{}: {status:?}",
            case.what
        );
        ensure!(
            status.code.as_ref() == Some(&case.code),
            "{}: code {:?}, expected {}",
            case.what,
            status.code,
            case.code
        );
        // Refused before any attempt, except the unknown name (see above).
        ensure!(
            status.attempt == 0 || case.code == Code::UnknownCommand,
            "{}: counted as an attempt: {status:?}",
            case.what
        );
        if let Some(id) = case.id {
            ensure!(
                status.id == id,
                "{}: status for {:?}, expected {id:?}",
                case.what,
                status.id
            );
        }
        ensure!(
            fresh.iter().filter(|st| st.is_final()).count() == 1,
            "{}: more than one final status: {fresh:?}",
            case.what
        );
        drop(seen);
        ensure!(
            host.is_running(),
            "{}: the host died; log:\n{}",
            case.what,
            host.log_tail(40)
        );
    }

    // The host is still fine.
    app.command(Role::Secondary, "good-1", "echo", json!({"still": "alive"}))
        .await?;
    let last = app.wait_final("good-1", LIMIT).await?;
    ensure!(
        last.status == State::Succeeded
            && json(last.reply.as_deref().unwrap_or_default()) == json!({"still": "alive"})
    );

    // Every hostile message was acked: after a restart the broker has
    // nothing to redeliver, so the only statuses are those of a new command
    // (which the broker delivers after any redelivery).
    let before = app.seen().all.len();
    tokio::task::block_in_place(|| host.restart())?;
    app.command(Role::Secondary, "good-2", "echo", json!(2))
        .await?;
    app.wait_final("good-2", LIMIT).await?;
    let seen = app.seen();
    let after: Vec<_> = seen.all[before..]
        .iter()
        .filter(|s| s.id != "good-2")
        .collect();
    ensure!(
        after.is_empty(),
        "statuses after the restart besides good-2 (a redelivery?): {after:?}"
    );
    Ok(())
}
