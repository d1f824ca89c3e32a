//! The device's behaviour between link and handler, in virtual time: every
//! test feeds events to a [`Machine`] and asserts the effects, with no
//! journal, no broker and no clock. `Rig` plays the driver: it carries out
//! appends by remembering them, and reports them durable when told to.
//! Probes and health messages (a full disk, `tests_space`) are set aside in
//! `probes` and `health`, so the tests here see only the rest.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::health::Health;
use super::*;
use crate::envelope::{Command, Envelope, Kind};
use crate::journal::record::Record;
use crate::scheduler::AttemptResult;

pub(super) const T0: u64 = 1_700_000_000_000;

/// What the driver saw, one effect at a time (tokens are numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seen {
    Append {
        records: usize,
        covered: u64,
        idle: bool,
    },
    Rewrite {
        covered: u64,
    },
    Retry {
        records: usize,
        covered: u64,
    },
    Status(String, State),
    Event(String),
    Ack(u32),
    Start(String, u32),
}

pub(super) struct Rig {
    pub(super) m: Machine<u32>,
    next_token: u32,
    /// `covered` of each append/rewrite handed out and not yet durable.
    pub(super) commits: Vec<u64>,
    /// Every record appended (decoded), in order.
    pub(super) journal: Vec<Record>,
    /// Probes handed out.
    pub(super) probes: usize,
    /// Health messages published, in order.
    pub(super) health: Vec<Health>,
}

impl Rig {
    pub(super) fn new() -> Self {
        Self::with(MachineOptions::default(), Vec::new())
    }

    pub(super) fn with(options: MachineOptions, records: Vec<Record>) -> Self {
        Rig {
            m: Machine::restore(Policy::default(), records, options, T0),
            next_token: 0,
            commits: Vec::new(),
            journal: Vec::new(),
            probes: 0,
            health: Vec::new(),
        }
    }

    /// Takes the effects so far, remembering commits.
    pub(super) fn effects(&mut self) -> Vec<Seen> {
        let mut buf = Vec::new();
        self.m.take_effects(&mut buf);
        let mut seen = Vec::new();
        for e in buf {
            seen.push(match e {
                Effect::Append {
                    records,
                    covered,
                    idle,
                } => {
                    self.commits.push(covered);
                    let n = records.len();
                    self.journal
                        .extend(records.iter().map(|r| Record::decode(r).unwrap()));
                    Seen::Append {
                        records: n,
                        covered,
                        idle,
                    }
                }
                Effect::Rewrite { covered, .. } => {
                    self.commits.push(covered);
                    Seen::Rewrite { covered }
                }
                Effect::Retry { records, covered } => {
                    self.commits.push(covered);
                    Seen::Retry {
                        records: records.len(),
                        covered,
                    }
                }
                Effect::Probe => {
                    self.probes += 1;
                    continue;
                }
                Effect::Publish(Outgoing::Health(health)) => {
                    self.health.push(health);
                    continue;
                }
                Effect::Publish(Outgoing::Status(s)) => Seen::Status(s.id, s.status),
                Effect::Publish(Outgoing::Event { name, .. }) => Seen::Event(name),
                Effect::Ack(token) => Seen::Ack(token),
                Effect::Start(inv) => Seen::Start(inv.id, inv.attempt),
            });
        }
        seen
    }

    pub(super) fn send_bytes(&mut self, role: Result<Role, &str>, payload: &[u8], now: u64) -> u32 {
        self.next_token += 1;
        let token = self.next_token;
        self.m.on_message(role, payload, token, now, Vec::new);
        token
    }

    pub(super) fn send(&mut self, id: &str, now: u64) -> u32 {
        let env = Envelope::new(id, "work", now);
        self.send_bytes(Ok(Role::Admin), &env.to_msgpack(), now)
    }

    /// Reports the oldest outstanding commit durable.
    pub(super) fn durable(&mut self, now: u64) {
        let covered = self.commits.remove(0);
        self.m.on_durable(covered, now);
    }

    /// Sends `id` to an idle device and lets it start: it runs, and its
    /// records are durable.
    pub(super) fn running(&mut self, id: &str, now: u64) {
        self.send(id, now);
        self.m.tick(now);
        self.effects();
        self.durable(now);
        self.effects();
    }

    /// Ends the turn at `now`, lets any linger run out, and reports every
    /// commit durable: the effects of all that, in order.
    pub(super) fn settle(&mut self, now: u64) -> Vec<Seen> {
        self.m.tick(now);
        self.m.tick(now + LAZY_LINGER_MS);
        let mut seen = self.effects();
        while !self.commits.is_empty() {
            self.durable(now + LAZY_LINGER_MS);
            seen.extend(self.effects());
        }
        seen
    }

    pub(super) fn done(&mut self, id: &str, now: u64) {
        let ok = AttemptResult::Succeeded { reply: None };
        self.m.on_attempt_done(id, ok, Vec::new(), now);
    }
}

pub(super) fn status(id: &str, state: State) -> Seen {
    Seen::Status(id.to_string(), state)
}

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
