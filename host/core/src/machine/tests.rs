//! The device's behaviour between link and handler, in virtual time: every
//! test feeds events to a [`Machine`] through `Rig` (the driver's stand-in,
//! `rig`) and asserts the effects, with no journal, no broker and no clock.

use alloc::vec;
use alloc::vec::Vec;

use super::rig::{status, Rig, Seen, T0};
use super::*;
use crate::envelope::{Command, Envelope, Kind};
use crate::journal::record::Record;
use crate::scheduler::AttemptResult;
use crate::status::State;

#[test]
fn an_idle_command_is_journaled_once_and_acked_after_its_records_are_durable() {
    let mut rig = Rig::new();
    let token = rig.send("a", T0);
    assert_eq!(
        rig.effects(),
        [],
        "nothing is acked or published before a commit"
    );
    rig.m.tick(T0);
    // Started without waiting (not persist_first), `Accepted` and `Started`
    // share one append; idle: the driver may write it inline.
    assert_eq!(
        rig.effects(),
        [
            Seen::Start("a".into(), 1),
            Seen::Append {
                records: 2,
                covered: 2,
                idle: true
            }
        ]
    );
    rig.durable(T0 + 1);
    // `accepted` is superseded by `running` (same release): one publish, then the PUBACK.
    assert_eq!(
        rig.effects(),
        [status("a", State::Running), Seen::Ack(token)]
    );
    assert_eq!(rig.m.counters().coalesced, 1);
}

#[test]
fn a_final_status_waits_for_the_records_before_its_finished_and_the_outcome_lingers() {
    let mut rig = Rig::new();
    rig.running("a", T0);
    rig.done("a", T0 + 2);
    // The final status needs only the records before `Finished`: out at once.
    assert_eq!(rig.effects(), [status("a", State::Succeeded)]);
    // `Finished` is lazy: it waits for company or the linger.
    rig.m.tick(T0 + 2);
    assert_eq!(rig.effects(), []);
    assert_eq!(rig.m.next_wakeup(T0 + 2), Some(T0 + 2 + LAZY_LINGER_MS));
    rig.m.tick(T0 + 2 + LAZY_LINGER_MS);
    assert_eq!(
        rig.effects(),
        [Seen::Append {
            records: 1,
            covered: 3,
            idle: true
        }]
    );
    assert!(matches!(rig.journal.last(), Some(Record::Finished(s)) if s.id == "a"));
}

#[test]
fn a_lingering_outcome_rides_the_next_commands_append() {
    let mut rig = Rig::new();
    rig.send("a", T0);
    rig.m.tick(T0);
    rig.effects();
    rig.durable(T0);
    rig.done("a", T0 + 1);
    rig.m.tick(T0 + 1);
    rig.effects();
    rig.send("b", T0 + 2);
    rig.m.tick(T0 + 2);
    let seen = rig.effects();
    assert!(
        seen.contains(&Seen::Append {
            records: 3,
            covered: 5,
            idle: true
        }),
        "Finished(a) + Accepted(b) + Started(b) in one append: {seen:?}"
    );
}

#[test]
fn garbage_and_bad_roles_are_rejected_journaled_then_acked() {
    let mut rig = Rig::new();
    let garbage = rig.send_bytes(Ok(Role::Admin), &[0xc1, 0x00], T0);
    // No id could be read: published as is at once, acked at once (nothing journaled).
    assert_eq!(
        rig.effects(),
        [status("", State::Rejected), Seen::Ack(garbage)]
    );
    let env = Envelope::new("x", "work", T0).to_msgpack();
    let token = rig.send_bytes(Err("root"), &env, T0);
    // Like any final status it waits only for the records before its
    // `Finished`; the PUBACK waits for `Finished` itself.
    assert_eq!(rig.effects(), [status("x", State::Rejected)]);
    rig.m.tick(T0);
    assert_eq!(
        rig.effects(),
        [Seen::Append {
            records: 1,
            covered: 1,
            idle: true
        }],
        "a lazy record something waits for goes at once"
    );
    rig.durable(T0);
    assert_eq!(rig.effects(), [Seen::Ack(token)]);
    assert_eq!(rig.m.counters().rejected, 2);
    assert_eq!(
        rig.m.status_of("x").and_then(|s| s.code),
        Some(Code::NotPermitted)
    );
}

#[test]
fn the_accepted_of_a_queued_command_is_held_then_superseded_or_published() {
    let mut rig = Rig::new();
    rig.running("a", T0);
    // `b` and `c` queue behind the running `a`.
    let b = rig.send("b", T0 + 1);
    let c = rig.send("c", T0 + 1);
    rig.m.tick(T0 + 1);
    rig.effects();
    rig.durable(T0 + 2);
    assert_eq!(
        rig.effects(),
        [Seen::Ack(b), Seen::Ack(c)],
        "both `accepted` are held"
    );
    let due = T0 + 2 + HOLD_MS + 1;
    assert_eq!(rig.m.next_wakeup(T0 + 2), Some(due));
    // `a` ends, `b` starts within the hold: its `running` supersedes its `accepted`.
    rig.done("a", T0 + 3);
    rig.m.tick(T0 + 3);
    let seen = rig.effects();
    assert!(seen.contains(&Seen::Start("b".into(), 1)), "{seen:?}");
    rig.durable(T0 + 4);
    let seen = rig.effects();
    assert!(seen.contains(&status("b", State::Running)), "{seen:?}");
    assert!(!seen.contains(&status("b", State::Accepted)), "{seen:?}");
    // `c` is still queued: its `accepted` goes out once the hold is over.
    rig.m.tick(due - 1);
    assert!(!rig.effects().contains(&status("c", State::Accepted)));
    rig.m.tick(due);
    assert!(rig.effects().contains(&status("c", State::Accepted)));
}

#[test]
fn a_retryable_failure_wakes_the_machine_at_its_next_attempt() {
    let mut rig = Rig::new();
    rig.running("a", T0);
    let failed = AttemptResult::Failed {
        code: Code::HandlerError,
        message: "busy".into(),
        retryable: true,
    };
    rig.m.on_attempt_done("a", failed, Vec::new(), T0 + 10);
    rig.m.tick(T0 + 10);
    let seen = rig.effects();
    assert!(
        seen.iter().any(|s| matches!(s, Seen::Append { .. })),
        "{seen:?}"
    );
    rig.durable(T0 + 11);
    assert_eq!(rig.effects(), [status("a", State::Retrying)]);
    let retry_at = T0 + 10 + Policy::default().retry_delay_ms;
    assert_eq!(rig.m.next_wakeup(T0 + 11), Some(retry_at));
    rig.m.tick(retry_at - 1);
    assert!(!rig.effects().contains(&Seen::Start("a".into(), 2)));
    rig.m.tick(retry_at);
    assert!(rig.effects().contains(&Seen::Start("a".into(), 2)));
}

#[test]
fn events_leave_with_the_final_status() {
    let mut rig = Rig::new();
    rig.running("a", T0);
    let events = vec![Event {
        name: "progress".into(),
        payload: vec![0xc0],
    }];
    let ok = AttemptResult::Succeeded { reply: None };
    rig.m.on_attempt_done("a", ok, events, T0 + 1);
    assert_eq!(
        rig.effects(),
        [
            Seen::Event("progress".into()),
            status("a", State::Succeeded)
        ]
    );
}

#[test]
fn a_builtin_is_answered_at_arrival_without_the_queue() {
    let mut rig = Rig::new();
    rig.running("a", T0);
    let mut query = crate::msgpack::Writer::new();
    query.map_len(1).str("id").str("a");
    let env = Envelope::new("q", builtins::STATUS, T0).with_payload(query.into_vec());
    let token = rig.send_bytes(Ok(Role::Admin), &env.to_msgpack(), T0 + 1);
    // Not queued behind the running `a` it asks about, nothing journaled.
    assert_eq!(
        rig.effects(),
        [status("q", State::Succeeded), Seen::Ack(token)]
    );
    // A role without access: rejected through the scheduler (journaled).
    let env = Envelope::new("q2", builtins::STATUS, T0);
    rig.send_bytes(Ok(Role::Secondary), &env.to_msgpack(), T0 + 1);
    rig.m.tick(T0 + 1);
    rig.effects();
    assert_eq!(
        rig.m.status_of("q2").map(|s| (s.status, s.code)),
        Some((State::Rejected, Some(Code::NotPermitted)))
    );
}

#[test]
fn a_journal_past_its_threshold_is_compacted_instead_of_appended() {
    let options = MachineOptions {
        compact_after_records: 3,
        ..MachineOptions::default()
    };
    let mut rig = Rig::with(options, Vec::new());
    rig.send("a", T0);
    rig.m.tick(T0);
    assert!(rig.effects().contains(&Seen::Append {
        records: 2,
        covered: 2,
        idle: true
    }));
    rig.durable(T0);
    rig.effects();
    rig.done("a", T0 + 1);
    rig.m.tick(T0 + 1);
    // `Finished` is appended first, then the snapshot replaces the log.
    assert_eq!(
        rig.effects(),
        [
            status("a", State::Succeeded),
            Seen::Append {
                records: 1,
                covered: 3,
                idle: false
            },
            Seen::Rewrite { covered: 3 }
        ]
    );
    assert_eq!(rig.m.counters().compactions, 1);
}

#[test]
fn at_most_max_pending_commands_are_read() {
    let options = MachineOptions {
        max_pending: 2,
        ..MachineOptions::default()
    };
    let mut rig = Rig::with(options, Vec::new());
    rig.send("a", T0);
    assert!(rig.m.accepting());
    rig.send("b", T0);
    assert!(!rig.m.accepting(), "the broker keeps the rest");
}

#[test]
fn a_stopping_machine_starts_nothing_and_its_close_publishes_what_it_held() {
    let mut rig = Rig::new();
    rig.running("a", T0);
    let b = rig.send("b", T0 + 1);
    rig.m.tick(T0 + 1);
    rig.effects();
    rig.durable(T0 + 1);
    assert_eq!(rig.effects(), [Seen::Ack(b)], "b's accepted is held");
    rig.m.stop();
    assert!(!rig.m.accepting());
    rig.done("a", T0 + 2);
    rig.m.tick(T0 + 2);
    let seen = rig.effects();
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::Start(..))),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|s| matches!(s, Seen::Append { .. })),
        "no linger while stopping: {seen:?}"
    );
    rig.m.close(T0 + 3);
    assert_eq!(rig.effects(), [status("b", State::Accepted)]);
    assert_eq!(rig.m.pending_len(), 1, "b resumes after a restart");
}

#[test]
fn a_restart_reruns_an_interrupted_command_only_after_its_records_are_durable() {
    let env = Envelope::new("a", "work", T0).with_kind(Kind::Command);
    let records = vec![
        Record::Accepted(Command::new(env, Role::Admin, 1, T0)),
        Record::Started {
            id: "a".into(),
            attempt: 1,
            at: T0,
        },
    ];
    let mut rig = Rig::with(MachineOptions::default(), records);
    rig.m.tick(T0);
    let seen = rig.effects();
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::Start(..))),
        "a careful start waits for its `Started`: {seen:?}"
    );
    rig.durable(T0);
    assert!(rig.effects().contains(&Seen::Start("a".into(), 2)));
}

#[test]
fn the_linger_ends_even_if_the_wall_clock_is_set_back() {
    let mut rig = Rig::new();
    rig.send("a", T0);
    rig.m.tick(T0);
    rig.effects();
    rig.durable(T0);
    rig.done("a", T0);
    rig.m.tick(T0);
    rig.effects();
    // The wall clock jumps back an hour; monotonic time goes on from there.
    let back = T0 - 3_600_000;
    rig.m.tick(back);
    assert_eq!(rig.effects(), []);
    assert_eq!(rig.m.next_wakeup(back), Some(back + LAZY_LINGER_MS));
    rig.m.tick(back + LAZY_LINGER_MS);
    assert!(matches!(
        rig.effects().as_slice(),
        [Seen::Append { records: 1, .. }]
    ));
}

#[test]
fn pubacks_leave_in_arrival_order_across_commits() {
    let mut rig = Rig::new();
    let a = rig.send("a", T0);
    rig.m.tick(T0);
    rig.effects();
    // `b` arrives while `a`'s commit is still in flight: its own commit.
    let b = rig.send("b", T0 + 1);
    rig.m.tick(T0 + 1);
    let seen = rig.effects();
    assert!(
        seen.contains(&Seen::Append {
            records: 1,
            covered: 3,
            idle: false
        }),
        "busy: not idle, so a driver hands it to its writer: {seen:?}"
    );
    rig.durable(T0 + 2);
    assert!(rig.effects().contains(&Seen::Ack(a)));
    rig.durable(T0 + 2);
    assert!(rig.effects().contains(&Seen::Ack(b)));
}

#[test]
fn a_redelivered_finished_command_republishes_its_outcome_and_never_reruns() {
    let mut rig = Rig::new();
    rig.send("a", T0);
    rig.settle(T0);
    rig.done("a", T0 + 10);
    rig.settle(T0 + 10);
    // The broker redelivers `a` (its PUBACK was lost).
    let again = rig.send("a", T0 + 20);
    let seen = rig.settle(T0 + 20);
    assert!(seen.contains(&status("a", State::Succeeded)), "{seen:?}");
    assert!(seen.contains(&Seen::Ack(again)), "{seen:?}");
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::Start(..))),
        "{seen:?}"
    );
}

#[test]
fn a_redelivered_command_gets_the_very_status_its_first_delivery_got_plugin_included() {
    let mut rig = Rig::new();
    rig.send("a", T0);
    rig.settle(T0);
    let ok = AttemptResult::Succeeded { reply: None };
    rig.m
        .on_attempt_done_by("a", ok, Vec::new(), Some("echo@1.2.3".into()), T0 + 10);
    rig.settle(T0 + 10);
    let first = rig.statuses.last().cloned().unwrap();
    assert_eq!(first.plugin.as_deref(), Some("echo@1.2.3"));
    rig.send("a", T0 + 20);
    rig.settle(T0 + 20);
    assert_eq!(rig.statuses.last(), Some(&first));
    assert_eq!(rig.m.status_of("a"), Some(first));
}

#[test]
fn delivered_outcomes_are_journaled_lazily_and_not_republished_after_a_restart() {
    let mut rig = Rig::new();
    rig.send("a", T0);
    rig.send("b", T0);
    rig.settle(T0);
    rig.done("a", T0 + 10);
    rig.settle(T0 + 10);
    rig.done("b", T0 + 20);
    rig.settle(T0 + 20);
    // The broker acknowledged `a`'s final status, not `b`'s.
    rig.m.on_delivered("a", T0 + 30);
    assert_eq!(rig.effects(), [], "a Delivered record waits for company");
    rig.settle(T0 + 30);
    assert!(matches!(rig.journal.last(), Some(Record::Delivered { id }) if id == "a"));
    // After a restart only `b`'s outcome is published again.
    let mut restarted = Rig::with(MachineOptions::default(), rig.journal.clone());
    let seen = restarted.settle(T0 + 100);
    assert!(seen.contains(&status("b", State::Succeeded)), "{seen:?}");
    assert!(!seen.contains(&status("a", State::Succeeded)), "{seen:?}");
}

#[test]
fn an_expired_command_never_starts() {
    let mut rig = Rig::new();
    let env = Envelope::new("old", "work", T0).with_expires_at(T0 + 5);
    let token = rig.send_bytes(Ok(Role::Admin), &env.to_msgpack(), T0 + 10);
    rig.m.tick(T0 + 10);
    let seen = rig.effects();
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::Start(..))),
        "{seen:?}"
    );
    assert!(seen.contains(&status("old", State::Expired)), "{seen:?}");
    rig.durable(T0 + 11);
    assert_eq!(rig.effects(), [Seen::Ack(token)]);
}

#[test]
fn an_install_chunk_is_announced_upcoming_when_queued_and_again_after_a_restart() {
    let mut rig = Rig::new();
    let install = |id: &str| {
        Envelope::new(id, crate::ota::INSTALL, T0)
            .with_payload(vec![0x80])
            .to_msgpack()
    };
    rig.send("w", T0);
    rig.send_bytes(Ok(Role::Admin), &install("i1"), T0);
    rig.send_bytes(Ok(Role::Admin), &install("i2"), T0);
    rig.m.tick(T0);
    let upcoming: Vec<Seen> = rig
        .effects()
        .into_iter()
        .filter(|s| matches!(s, Seen::Upcoming(_)))
        .collect();
    // Ordinary commands are not announced; installs are, in arrival order.
    assert_eq!(
        upcoming,
        [Seen::Upcoming("i1".into()), Seen::Upcoming("i2".into())]
    );
    rig.durable(T0 + 1);
    rig.effects();
    rig.done("w", T0 + 2);
    rig.settle(T0 + 3);
    rig.done("i1", T0 + 4);
    rig.settle(T0 + 5 + LAZY_LINGER_MS);

    // After a restart only the install still pending is announced again.
    let mut restarted = Rig::with(MachineOptions::default(), rig.journal.clone());
    let again: Vec<Seen> = restarted
        .effects()
        .into_iter()
        .filter(|s| matches!(s, Seen::Upcoming(_)))
        .collect();
    assert_eq!(again, [Seen::Upcoming("i2".into())]);
}

#[test]
fn a_requested_compaction_happens_at_the_next_tick_whatever_the_count() {
    let mut rig = Rig::new();
    rig.running("a", T0);
    rig.done("a", T0 + 1);
    rig.settle(T0 + 2);
    rig.m.request_compaction();
    rig.m.tick(T0 + 3);
    let seen = rig.effects();
    assert!(
        seen.iter().any(|s| matches!(s, Seen::Rewrite { .. })),
        "{seen:?}"
    );
    // Once: the next tick does not compact again.
    rig.durable(T0 + 4);
    rig.m.tick(T0 + 5);
    assert!(!rig
        .effects()
        .iter()
        .any(|s| matches!(s, Seen::Rewrite { .. })));
}
