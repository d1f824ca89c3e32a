//! The scripted run of the emulated device: the same script on the Linux
//! test host (`tests/scenario.rs`) and in the bare-metal QEMU binary, so
//! what passes here is what the microcontroller build was shown to do.
//!
//! With the `deploy` plugin loaded, in virtual time (5 s retries, at most 5
//! attempts):
//!
//! 1. `deploy` as admin succeeds, replies, and emits `deployed`;
//! 2. `deploy` with `fail_times: 2` as primary fails twice (`retrying`,
//!    5 s apart) and succeeds at attempt 3;
//! 3. `deploy` as secondary is `rejected` (`not_permitted`);
//! 4. `get-config` answers the config stored by step 2 (kv);
//! 5. `deploy` with `fail_times: 9` is on its 2nd attempt when the device
//!    **resets**: the journal is replayed from the flash, the first
//!    command's outcome is remembered (a redelivery is not run again) and
//!    the 5th command goes on with attempts 3 to 5, then ends `failed`.
//!
//! Each check is reported as it passes or fails, for the firmware to print.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use relay_core::envelope::Envelope;
use relay_core::journal::Storage;
use relay_core::machine::{MachineOptions, Outgoing};
use relay_core::msgpack::Writer;
use relay_core::plugin::Role;
use relay_core::registry::Registry;
use relay_core::status::{Code, State, Status};

use super::{Device, DeviceError, Link};

/// The scenario's start (unix ms).
pub const T0: u64 = 1_767_225_600_000;
const RETRY_MS: u64 = 5_000;

/// One check of the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// Everything the scenario checked.
#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
    /// Commands run (handler calls), for per-command costs.
    pub calls: u64,
}

impl Report {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    fn check(&mut self, name: &'static str, passed: bool, detail: String) {
        self.checks.push(Check {
            name,
            passed,
            detail,
        });
    }
}

/// Collects what the device publishes and acknowledges.
#[derive(Debug, Default)]
pub struct Recorder {
    pub statuses: Vec<Status>,
    pub events: Vec<String>,
    pub acks: Vec<u32>,
}

impl Link for Recorder {
    type Token = u32;

    fn publish(&mut self, message: Outgoing) {
        match message {
            Outgoing::Status(s) => self.statuses.push(s),
            Outgoing::Event { name, .. } => self.events.push(name),
            Outgoing::Health(_) => {}
        }
    }

    fn ack(&mut self, token: u32) {
        self.acks.push(token);
    }
}

impl Recorder {
    /// The last status published for `id`.
    pub fn last(&self, id: &str) -> Option<&Status> {
        self.statuses.iter().rev().find(|s| s.id == id)
    }

    fn states(&self, id: &str) -> Vec<(State, u32)> {
        self.statuses
            .iter()
            .filter(|s| s.id == id)
            .map(|s| (s.status, s.attempt))
            .collect()
    }
}

fn deploy(version: &str, fail_times: Option<u32>) -> Vec<u8> {
    let mut w = Writer::new();
    w.map_len(if fail_times.is_some() { 4 } else { 3 })
        .str("version")
        .str(version)
        .str("replicas")
        .uint(2)
        .str("timeout_s")
        .uint(30);
    if let Some(n) = fail_times {
        w.str("fail_times").uint(u64::from(n));
    }
    w.into_vec()
}

fn envelope(id: &str, name: &str, payload: Vec<u8>, now: u64) -> Vec<u8> {
    Envelope::new(id, name, now)
        .with_payload(payload)
        .to_msgpack()
}

/// Runs the scenario on `storage` (empty), with `registry()` loading the
/// `deploy` plugin (called again after the reset) and `reset` standing for
/// a power cycle of the storage (a flash log is reopened on the same flash).
pub fn run<S: Storage>(
    storage: S,
    mut registry: impl FnMut() -> Registry,
    mut reset: impl FnMut(S) -> S,
) -> Result<Report, DeviceError<S::Error>> {
    let mut report = Report::default();
    let mut link = Recorder::default();
    let options = MachineOptions::default();
    let (mut dev, _) =
        Device::<S, Recorder>::open(storage, registry(), crate::policy(), options.clone(), T0)?;
    let mut now = T0;
    let mut token = 0;
    let mut send = |dev: &mut Device<S, Recorder>,
                    link: &mut Recorder,
                    role,
                    id: &str,
                    name: &str,
                    payload,
                    now| {
        token += 1;
        dev.on_message(
            Ok(role),
            &envelope(id, name, payload, now),
            token,
            now,
            link,
        )
    };

    // 1. A success, with its reply and its event.
    send(
        &mut dev,
        &mut link,
        Role::Admin,
        "d1",
        "deploy",
        deploy("1.2.0", None),
        now,
    )?;
    let d1 = link.last("d1").cloned();
    let replied = d1
        .as_ref()
        .and_then(|s| s.reply.as_deref())
        .is_some_and(|r| contains(r, b"1.2.0"));
    report.check(
        "a command succeeds and replies",
        d1.as_ref().is_some_and(|s| s.status == State::Succeeded) && replied,
        format!("{d1:?}"),
    );
    report.check(
        "its event is published",
        link.events.iter().any(|e| e == "deployed"),
        format!("{:?}", link.events),
    );

    // 2. Two transient failures, retried 5 s apart in virtual time.
    send(
        &mut dev,
        &mut link,
        Role::Primary,
        "d2",
        "deploy",
        deploy("1.3.0", Some(2)),
        now,
    )?;
    for _ in 0..2 {
        now += RETRY_MS;
        dev.tick(now, &mut link)?;
    }
    let states = link.states("d2");
    let retried = states.contains(&(State::Retrying, 1))
        && states.contains(&(State::Retrying, 2))
        && states.last() == Some(&(State::Succeeded, 3));
    report.check(
        "a failing command is retried and succeeds at attempt 3",
        retried,
        format!("{states:?}"),
    );
    let first_retry = link
        .statuses
        .iter()
        .find(|s| s.id == "d2" && s.status == State::Retrying)
        .and_then(|s| s.next_attempt_at.map(|at| at - s.at));
    report.check(
        "the retry waits 5 s",
        first_retry == Some(RETRY_MS),
        format!("{first_retry:?}"),
    );

    // 3. A role the command does not allow.
    send(
        &mut dev,
        &mut link,
        Role::Secondary,
        "d3",
        "deploy",
        deploy("9.9.9", None),
        now,
    )?;
    let d3 = link.last("d3").cloned();
    report.check(
        "a role the command does not allow is rejected",
        d3.as_ref()
            .is_some_and(|s| s.status == State::Rejected && s.code == Some(Code::NotPermitted)),
        format!("{d3:?}"),
    );

    // 4. State kept by the plugin between calls.
    send(
        &mut dev,
        &mut link,
        Role::Admin,
        "g1",
        "get-config",
        Vec::new(),
        now,
    )?;
    let g1 = link.last("g1").cloned();
    report.check(
        "the plugin's kv holds the last config",
        g1.as_ref()
            .and_then(|s| s.reply.as_deref())
            .is_some_and(|r| contains(r, b"1.3.0")),
        format!("{g1:?}"),
    );

    // 5. A command mid-retries when the device resets.
    send(
        &mut dev,
        &mut link,
        Role::Admin,
        "d5",
        "deploy",
        deploy("2.0.0", Some(9)),
        now,
    )?;
    now += RETRY_MS;
    dev.tick(now, &mut link)?;
    let before = link.states("d5");
    report.calls = before.len() as u64;
    let storage = reset(dev.into_storage());
    let (mut dev, restored) =
        Device::<S, Recorder>::open(storage, registry(), crate::policy(), options, now)?;
    report.check(
        "the journal replays from flash after the reset",
        restored.report.records > 0 && restored.undecodable == 0,
        format!("{restored:?}"),
    );
    dev.tick(now, &mut link)?;
    report.check(
        "a finished command's outcome is remembered",
        dev.status_of("d1")
            .is_some_and(|s| s.status == State::Succeeded),
        format!("{:?}", dev.status_of("d1")),
    );
    let events_before = link.events.len();
    send(
        &mut dev,
        &mut link,
        Role::Admin,
        "d1",
        "deploy",
        deploy("1.2.0", None),
        now,
    )?;
    report.check(
        "a redelivered command is not run again",
        link.events.len() == events_before
            && link
                .last("d1")
                .is_some_and(|s| s.status == State::Succeeded),
        format!("{:?}", link.last("d1")),
    );
    for _ in 0..6 {
        now += RETRY_MS;
        dev.tick(now, &mut link)?;
    }
    let d5 = link.last("d5").cloned();
    report.check(
        "the command retried across the reset ends failed after 5 attempts",
        d5.as_ref()
            .is_some_and(|s| s.status == State::Failed && s.attempt == 5),
        format!("before the reset {before:?}, last {d5:?}"),
    );
    report.check(
        "every delivery was acknowledged",
        link.acks.len() == token as usize,
        format!("{} acks for {token} deliveries", link.acks.len()),
    );
    report.calls = link
        .statuses
        .iter()
        .filter(|s| matches!(s.status, State::Succeeded | State::Failed | State::Retrying))
        .count() as u64;
    Ok(report)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
