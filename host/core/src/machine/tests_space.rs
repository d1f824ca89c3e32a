//! The machine on a full disk, in virtual time (see `space`): an append
//! refused for lack of space holds its PUBACKs and is retried on `tick`; a
//! journal writing into its reserve stops the reading of new commands while
//! the accepted ones run and report; health messages mark the transitions;
//! and everything resumes, in order, when space returns (`Rig`: see `rig`).

use alloc::vec;
use alloc::vec::Vec;

use super::health::{HealthReason, HealthState};
use super::rig::{status, Rig, Seen, T0};
use super::*;
use crate::envelope::{Command, Envelope, Kind};
use crate::journal::record::Record;
use crate::status::State;

const RETRY: u64 = STORAGE_RETRY_MS;

impl Rig {
    /// Reports the oldest outstanding commit failed for lack of space.
    fn no_space(&mut self, now: u64) {
        self.commits.remove(0);
        self.m.on_append_failed(now);
    }

    /// Reports the oldest outstanding commit durable, then the reserve.
    fn durable_reserve(&mut self, in_use: bool, now: u64) {
        self.durable(now);
        self.m.on_space(in_use, now);
    }

    fn last_health(&self) -> (HealthState, Option<HealthReason>) {
        let h = self.health.last().expect("a health message");
        (h.state, h.reason)
    }
}

fn acks(seen: &[Seen]) -> Vec<u32> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Ack(token) => Some(*token),
            _ => None,
        })
        .collect()
}

#[test]
fn a_refused_append_holds_its_acks_is_retried_on_tick_and_acks_in_order_once_space_returns() {
    let mut rig = Rig::new();
    rig.running("a", T0);
    let b = rig.send("b", T0 + 1);
    let c = rig.send("c", T0 + 1);
    rig.m.tick(T0 + 1);
    assert!(rig.effects().contains(&Seen::Append {
        records: 2,
        covered: 4,
        idle: false
    }));
    // The disk refuses the append of `b` and `c`.
    rig.no_space(T0 + 2);
    assert_eq!(acks(&rig.effects()), [] as [u32; 0], "nothing acked");
    assert_eq!(
        rig.last_health(),
        (HealthState::Degraded, Some(HealthReason::StorageFull))
    );
    let health = rig.health.last().unwrap();
    assert_eq!(
        (health.pending, health.unacked, health.since),
        (3, 2, T0 + 2)
    );
    assert!(!rig.m.accepting(), "no new command is read");
    assert!(rig.m.state().storage_full);

    // The accepted `a` still finishes, and `b` starts behind it.
    rig.done("a", T0 + 3);
    rig.m.tick(T0 + 3);
    let seen = rig.effects();
    assert!(seen.contains(&Seen::Start("b".into(), 1)), "{seen:?}");
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::Append { .. })),
        "nothing is submitted while the journal refuses: {seen:?}"
    );
    // Retried on tick, not before its time.
    let retry_at = T0 + 2 + RETRY;
    assert_eq!(rig.m.next_wakeup(T0 + 3), Some(retry_at));
    rig.m.tick(retry_at - 1);
    assert_eq!(rig.effects(), []);
    rig.m.tick(retry_at);
    let seen = rig.effects();
    assert!(
        matches!(seen.as_slice(), [Seen::Retry { covered: 6, .. }]),
        "everything emitted since, in one retry: {seen:?}"
    );
    // Still full: refused again, retried again a period later.
    rig.no_space(retry_at + 1);
    assert_eq!(rig.health.len(), 1, "no new transition");
    rig.m.tick(retry_at + 1 + RETRY);
    assert!(matches!(
        rig.effects().as_slice(),
        [Seen::Retry { covered: 6, .. }]
    ));
    // Space returned: the PUBACKs leave in arrival order, the statuses too.
    rig.durable_reserve(false, retry_at + 1 + RETRY);
    let seen = rig.effects();
    assert_eq!(acks(&seen), [b, c]);
    assert!(seen.contains(&status("a", State::Succeeded)), "{seen:?}");
    assert!(seen.contains(&status("b", State::Running)), "{seen:?}");
    assert_eq!(rig.last_health(), (HealthState::Ok, None));
    assert!(rig.m.accepting(), "new commands are read again");
    // The next command runs after the ones accepted before.
    let d = rig.send("d", T0 + 5000);
    rig.done("b", T0 + 5000);
    let seen = rig.settle(T0 + 5000);
    assert!(seen.contains(&Seen::Ack(d)), "{seen:?}");
    assert!(seen.contains(&Seen::Start("c".into(), 1)), "{seen:?}");
    assert!(!seen.contains(&Seen::Start("d".into(), 1)), "d waits for c");
}

#[test]
fn a_journal_in_its_reserve_stops_new_commands_while_accepted_ones_run_and_report() {
    let mut rig = Rig::new();
    // The start-up probe found the reserve whole.
    rig.m.on_probed(false, T0);
    rig.running("a", T0);
    let b = rig.send("b", T0 + 1);
    rig.m.tick(T0 + 1);
    rig.effects();
    // The append that found the disk full went into the reserve.
    rig.durable_reserve(true, T0 + 2);
    let seen = rig.effects();
    assert_eq!(acks(&seen), [b], "it is durable, so acked");
    assert_eq!(
        rig.last_health(),
        (HealthState::Degraded, Some(HealthReason::StorageFull))
    );
    assert!(!rig.m.accepting());
    // `a` and `b` finish and report, their records in the reserve.
    rig.done("a", T0 + 3);
    assert_eq!(rig.effects(), [status("a", State::Succeeded)]);
    rig.m.tick(T0 + 3);
    assert!(rig.effects().contains(&Seen::Start("b".into(), 1)));
    rig.durable_reserve(true, T0 + 4);
    rig.done("b", T0 + 5);
    assert!(rig.effects().contains(&status("b", State::Succeeded)));
    // A probe every period: still full, then space returned.
    let probe_at = T0 + 2 + RETRY;
    rig.m.tick(T0 + 5);
    rig.m.tick(T0 + 5 + LAZY_LINGER_MS);
    rig.effects();
    rig.durable_reserve(true, T0 + 11);
    let probes = rig.probes;
    assert_eq!(rig.m.next_wakeup(T0 + 11), Some(probe_at));
    rig.m.tick(probe_at);
    rig.effects();
    assert_eq!(rig.probes, probes + 1);
    rig.m.on_probed(true, probe_at + 1);
    assert!(!rig.m.accepting());
    assert_eq!(rig.m.next_wakeup(probe_at + 1), Some(probe_at + 1 + RETRY));
    rig.m.tick(probe_at + 1 + RETRY);
    rig.effects();
    rig.m.on_probed(false, probe_at + 2 + RETRY);
    rig.effects();
    assert_eq!(rig.last_health(), (HealthState::Ok, None));
    assert_eq!(rig.health.len(), 3, "ok at start, then one per transition");
    assert!(rig.m.accepting());
}

#[test]
fn a_device_started_on_a_full_disk_runs_what_it_journaled_and_takes_nothing_new() {
    let env = Envelope::new("x", "work", T0).with_kind(Kind::Command);
    let records = vec![Record::Accepted(Command::new(env, Role::Admin, 1, T0))];
    let mut rig = Rig::with(MachineOptions::default(), records);
    rig.m.tick(T0);
    let seen = rig.effects();
    assert_eq!(rig.probes, 1, "the start-up probe");
    // The probe finds no room for the reserve.
    rig.m.on_probed(true, T0);
    rig.effects();
    assert_eq!(
        rig.last_health(),
        (HealthState::Degraded, Some(HealthReason::StorageFull))
    );
    assert!(!rig.m.accepting());
    // The journaled command still runs (after its `Started` is durable).
    assert!(!seen.iter().any(|s| matches!(s, Seen::Start(..))));
    rig.durable_reserve(true, T0 + 1);
    assert!(rig.effects().contains(&Seen::Start("x".into(), 1)));
    rig.done("x", T0 + 2);
    assert!(rig.effects().contains(&status("x", State::Succeeded)));
}

#[test]
fn a_healthy_start_says_ok_once() {
    let mut rig = Rig::new();
    rig.effects();
    assert_eq!(rig.probes, 1);
    assert!(rig.health.is_empty(), "nothing before the journal answered");
    rig.m.on_probed(false, T0);
    rig.send("a", T0);
    rig.m.tick(T0);
    rig.effects();
    rig.durable_reserve(false, T0 + 1);
    rig.effects();
    assert_eq!(rig.health.len(), 1);
    assert_eq!(rig.last_health(), (HealthState::Ok, None));
    assert_eq!(rig.m.next_wakeup(T0 + 1), None, "no probes while healthy");
}
