//! Scheduler scenarios in virtual time. `H` plays the runtime: it applies
//! actions to an in-memory journal and a list of published statuses, and
//! "crashes" by rebuilding the scheduler from the journal's bytes.

use super::*;
use crate::plugin::{ErrorKind, HandlerError};
use alloc::string::ToString;

const T0: u64 = 1_700_000_000_000;

struct H {
    s: Scheduler,
    now: u64,
    journal: Vec<Record>,
    published: Vec<Status>,
    starts: Vec<(u64, Start)>,
}

impl H {
    fn new(policy: Policy) -> Self {
        H {
            s: Scheduler::new(policy),
            now: T0,
            journal: vec![],
            published: vec![],
            starts: vec![],
        }
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Journal(r) => self.journal.push(r),
                Action::Publish(s) => self.published.push(s),
                Action::Start(s) => self.starts.push((self.now, s)),
            }
        }
    }

    fn poll(&mut self) {
        let a = self.s.poll(self.now);
        self.apply(a);
    }

    fn send_env(&mut self, env: Envelope) -> Vec<Action> {
        let a = self.s.accept(env, Role::Admin, self.now);
        self.apply(a.clone());
        self.poll();
        a
    }

    fn send(&mut self, id: &str) -> Vec<Action> {
        self.send_env(Envelope::new(id, "cmd", T0))
    }

    fn rpc(&mut self, id: &str) -> Vec<Action> {
        self.send_env(Envelope::new(id, "cmd", T0).with_kind(Kind::Rpc))
    }

    fn running_id(&self) -> Option<String> {
        self.s.running().map(|(c, _)| c.id.clone())
    }

    fn finish(&mut self, result: AttemptResult) -> String {
        let id = self.running_id().expect("something runs");
        let a = self.s.finish(&id, result, self.now).unwrap();
        self.apply(a);
        self.poll();
        id
    }

    fn succeed(&mut self) -> String {
        self.finish(AttemptResult::Succeeded { reply: None })
    }

    fn fail(&mut self) -> String {
        self.finish(AttemptResult::Failed {
            code: Code::HandlerError,
            message: "flaky".into(),
            retryable: true,
        })
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        self.poll();
    }

    /// Jumps to the next wakeup (if in the future) and polls.
    fn wake(&mut self) {
        if let Some(t) = self.s.next_wakeup() {
            self.now = self.now.max(t);
        }
        self.poll();
    }

    /// Restart: the scheduler is rebuilt from the journal's encoded bytes.
    fn crash(&mut self) {
        let records: Vec<Record> = self
            .journal
            .iter()
            .map(|r| Record::decode(&r.encode()).unwrap())
            .collect();
        let (s, a) = Scheduler::restore(self.s.policy().clone(), records, self.now);
        self.s = s;
        self.apply(a);
        self.poll();
    }

    fn compact(&mut self) {
        self.journal = self.s.retained_records();
    }

    fn started_ids(&self) -> Vec<(String, u32)> {
        self.starts
            .iter()
            .map(|(_, s)| (s.invocation.id.clone(), s.invocation.attempt))
            .collect()
    }

    fn statuses(&self, id: &str) -> Vec<(State, u32)> {
        self.published
            .iter()
            .filter(|s| s.id == id)
            .map(|s| (s.status, s.attempt))
            .collect()
    }

    fn last(&self, id: &str) -> &Status {
        self.published
            .iter()
            .rev()
            .find(|s| s.id == id)
            .expect("a status")
    }
}

fn ids(v: &[(&str, u32)]) -> Vec<(String, u32)> {
    v.iter().map(|(i, a)| (i.to_string(), *a)).collect()
}

#[test]
fn runs_in_arrival_order_one_at_a_time() {
    let mut h = H::new(Policy::default());
    for id in ["a", "b", "c"] {
        h.send(id);
    }
    assert_eq!(h.started_ids(), ids(&[("a", 1)]));
    assert_eq!(h.s.pending_len(), 3);
    assert_eq!(h.succeed(), "a");
    assert_eq!(h.succeed(), "b");
    assert_eq!(h.succeed(), "c");
    assert_eq!(h.started_ids(), ids(&[("a", 1), ("b", 1), ("c", 1)]));
    use State::*;
    assert_eq!(
        h.statuses("b"),
        [(Accepted, 0), (Running, 1), (Succeeded, 1)]
    );
    assert_eq!(h.s.pending_len(), 0);
    assert_eq!(h.s.next_wakeup(), None);
    // Journal: Accepted before Started before Finished, per command.
    let kinds: Vec<&str> = h
        .journal
        .iter()
        .filter(|r| r.id() == "b")
        .map(|r| match r {
            Record::Accepted(_) => "accepted",
            Record::Started { .. } => "started",
            Record::Retrying { .. } => "retrying",
            Record::Finished(_) => "finished",
            Record::Delivered { .. } => "delivered",
        })
        .collect();
    assert_eq!(kinds, ["accepted", "started", "finished"]);
}

/// A handler that fails k times (k = 0..=6) gets min(k+1, 5) attempts,
/// exactly 5 s apart, then the right final status.
#[test]
fn k_failures_give_min_k_plus_1_attempts_5s_apart() {
    for k in 0..=6u32 {
        let mut h = H::new(Policy::default());
        h.send("x");
        let mut failures = 0;
        // Bounded: at most 5 attempts.
        for _ in 0..10 {
            if h.running_id().is_none() {
                h.wake();
                continue;
            }
            if failures < k {
                failures += 1;
                h.fail();
            } else {
                h.succeed();
            }
            if h.last("x").is_final() {
                break;
            }
        }
        let attempts = (k + 1).min(5);
        let times: Vec<u64> = h.starts.iter().map(|(t, _)| *t).collect();
        let expected: Vec<u64> = (0..attempts as u64).map(|i| T0 + i * 5_000).collect();
        assert_eq!(times, expected, "k={k}");
        let last = h.last("x");
        if k < 5 {
            assert_eq!(
                (last.status, last.attempt, last.code.clone()),
                (State::Succeeded, k + 1, None),
                "k={k}"
            );
        } else {
            assert_eq!((last.status, last.attempt), (State::Failed, 5), "k={k}");
            assert_eq!(
                (last.code.clone(), last.message.as_deref()),
                (Some(Code::HandlerError), Some("flaky"))
            );
        }
        // Every retrying status names the next attempt's time.
        for s in h.published.iter().filter(|s| s.status == State::Retrying) {
            assert_eq!(s.next_attempt_at, Some(s.at + 5_000));
            assert_eq!(s.code, Some(Code::HandlerError));
        }
        assert_eq!(
            h.published
                .iter()
                .filter(|s| s.status == State::Retrying)
                .count() as u32,
            attempts - 1
        );
    }
}

#[test]
fn retry_policy_is_configurable() {
    let mut h = H::new(Policy {
        retry_delay_ms: 100,
        max_attempts: 2,
        ..Policy::default()
    });
    h.send("x");
    h.fail();
    assert_eq!(h.s.next_wakeup(), Some(T0 + 100));
    h.wake();
    h.fail();
    assert_eq!(
        (h.last("x").status, h.last("x").attempt),
        (State::Failed, 2)
    );
    assert_eq!(h.starts[1].0, T0 + 100);
}

#[test]
fn permanent_errors_are_not_retried() {
    let permanent = [
        AttemptResult::from_handler(Err(HandlerError {
            kind: ErrorKind::InvalidArgument,
            message: "m".into(),
        })),
        AttemptResult::from_handler(Err(HandlerError {
            kind: ErrorKind::OutOfBounds,
            message: "m".into(),
        })),
        AttemptResult::from_handler(Err(HandlerError {
            kind: ErrorKind::Permanent,
            message: "m".into(),
        })),
        AttemptResult::from_plugin_error(&crate::engine::PluginError::ReplyTooLarge {
            size: 9,
            limit: 1,
        }),
        AttemptResult::Rejected {
            code: Code::UnknownCommand,
            message: "no handler".into(),
        },
        AttemptResult::Rejected {
            code: Code::NotPermitted,
            message: "role".into(),
        },
        AttemptResult::Rejected {
            code: Code::InvalidPayload,
            message: "bad".into(),
        },
    ];
    let expected = [
        (State::Failed, Code::InvalidArgument),
        (State::Failed, Code::OutOfBounds),
        (State::Failed, Code::HandlerError),
        (State::Failed, Code::TooLarge),
        (State::Rejected, Code::UnknownCommand),
        (State::Rejected, Code::NotPermitted),
        (State::Rejected, Code::InvalidPayload),
    ];
    for (result, (state, code)) in permanent.into_iter().zip(expected) {
        let mut h = H::new(Policy::default());
        h.send("x");
        h.send("next");
        h.finish(result);
        let last = h.last("x").clone();
        assert_eq!(
            (last.status, last.attempt, last.code),
            (state, 1, Some(code.clone())),
            "{code}"
        );
        assert_eq!(h.started_ids(), ids(&[("x", 1), ("next", 1)]), "{code}");
    }
}

#[test]
fn retryable_classification() {
    use crate::engine::PluginError;
    let transient = AttemptResult::from_handler(Err(HandlerError {
        kind: ErrorKind::Transient,
        message: "m".into(),
    }));
    assert_eq!(
        transient,
        AttemptResult::Failed {
            code: Code::HandlerError,
            message: "m".into(),
            retryable: true
        }
    );
    for (e, code) in [
        (PluginError::Trap("unreachable".into()), Code::Trap),
        (PluginError::StackOverflow, Code::Trap),
        (PluginError::MemoryLimit, Code::Trap),
        (PluginError::OutOfFuel, Code::TimedOut),
        (PluginError::Timeout, Code::TimedOut),
    ] {
        match AttemptResult::from_plugin_error(&e) {
            AttemptResult::Failed {
                code: c,
                retryable: true,
                ..
            } => assert_eq!(c, code),
            other => panic!("{e}: {other:?}"),
        }
    }
    assert_eq!(
        AttemptResult::from_handler(Ok(Some(vec![0xc0]))),
        AttemptResult::Succeeded {
            reply: Some(vec![0xc0])
        }
    );
}

#[test]
fn expired_at_accept_never_runs_and_is_remembered() {
    let mut h = H::new(Policy::default());
    let env = Envelope::new("old", "cmd", T0 - 60_000).with_expires_at(T0);
    let actions = h.send_env(env.clone());
    assert!(h.starts.is_empty());
    let last = h.last("old").clone();
    assert_eq!(
        (last.status, last.attempt, last.code.clone()),
        (State::Expired, 0, Some(Code::Expired))
    );
    assert!(matches!(
        &actions[..],
        [Action::Journal(Record::Finished(_)), Action::Publish(_)]
    ));
    // A redelivery gets the same final status again.
    assert_eq!(h.send_env(env), vec![Action::Publish(last)]);
    // One millisecond before expiry it still runs.
    h.send_env(Envelope::new("fresh", "cmd", T0).with_expires_at(T0 + 1));
    assert_eq!(h.started_ids(), ids(&[("fresh", 1)]));
}

#[test]
fn expires_while_queued_behind_a_retrying_head() {
    let mut h = H::new(Policy::default());
    h.send("head");
    h.send_env(Envelope::new("short", "cmd", T0).with_expires_at(T0 + 2_000));
    h.send("long");
    h.fail(); // head retries at T0 + 5 s
    assert_eq!(h.s.next_wakeup(), Some(T0 + 2_000));
    h.wake();
    assert_eq!(h.now, T0 + 2_000);
    assert_eq!(
        (h.last("short").status, h.last("short").at),
        (State::Expired, T0 + 2_000)
    );
    assert_eq!(h.s.next_wakeup(), Some(T0 + 5_000));
    h.wake();
    assert_eq!(h.started_ids(), ids(&[("head", 1), ("head", 2)]));
    h.succeed();
    assert_eq!(
        h.started_ids(),
        ids(&[("head", 1), ("head", 2), ("long", 1)])
    );
}

#[test]
fn expiry_is_checked_again_at_start_and_a_retrying_command_can_expire() {
    let mut h = H::new(Policy::default());
    h.send_env(Envelope::new("a", "cmd", T0).with_expires_at(T0 + 3_000));
    h.send_env(Envelope::new("b", "cmd", T0).with_expires_at(T0 + 1_000));
    h.now += 1_000; // b's expiry passes while a runs
    h.fail(); // a's retry would be at T0 + 6 s, after its expiry
    assert_eq!(h.last("b").status, State::Expired);
    assert_eq!(h.s.next_wakeup(), Some(T0 + 3_000));
    h.wake();
    let a = h.last("a").clone();
    assert_eq!(
        (a.status, a.attempt, a.code),
        (State::Expired, 1, Some(Code::Expired))
    );
    assert!(a.message.unwrap().contains("flaky"));
    assert_eq!(h.started_ids(), ids(&[("a", 1)]));
    // A running attempt is not cut short by expiry.
    h.send_env(Envelope::new("c", "cmd", T0).with_expires_at(h.now + 10));
    h.advance(50);
    assert_eq!(h.running_id().as_deref(), Some("c"));
    h.succeed();
    assert_eq!(h.last("c").status, State::Succeeded);
}

#[test]
fn rpc_runs_while_the_head_waits_for_its_retry_but_not_while_it_runs() {
    let mut h = H::new(Policy::default());
    h.send("head");
    h.rpc("r1"); // head runs: r1 waits
    assert_eq!(h.running_id().as_deref(), Some("head"));
    h.fail(); // head sleeps until +5 s: r1 runs in the pause
    assert_eq!(h.running_id().as_deref(), Some("r1"));
    h.send("later"); // a command never bypasses the head
    h.rpc("r2");
    h.succeed(); // r1 done: r2 may run, "later" may not
    assert_eq!(h.running_id().as_deref(), Some("r2"));
    h.succeed();
    assert_eq!(h.running_id(), None);
    h.wake();
    assert_eq!(h.now, T0 + 5_000);
    h.succeed();
    h.succeed();
    assert_eq!(
        h.started_ids(),
        ids(&[("head", 1), ("r1", 1), ("r2", 1), ("head", 2), ("later", 1)])
    );
}

#[test]
fn rpc_keeps_its_place_behind_commands_that_have_not_started() {
    let mut h = H::new(Policy::default());
    h.send("a");
    h.send("b");
    h.rpc("r");
    h.succeed();
    assert_eq!(h.running_id().as_deref(), Some("b"));
    h.succeed();
    assert_eq!(h.running_id().as_deref(), Some("r"));
}

#[test]
fn rpc_is_never_retried() {
    let mut h = H::new(Policy::default());
    h.rpc("r");
    h.fail();
    let last = h.last("r").clone();
    assert_eq!(
        (last.status, last.attempt, last.code),
        (State::Failed, 1, Some(Code::HandlerError))
    );
    assert_eq!(h.starts.len(), 1);
    assert_eq!(h.s.next_wakeup(), None);
    assert_eq!(h.starts[0].1.kind, Kind::Rpc);
}

#[test]
fn duplicate_of_a_finished_command_republishes_its_outcome() {
    let mut h = H::new(Policy::default());
    h.send("a");
    h.now += 7;
    h.finish(AttemptResult::Succeeded {
        reply: Some(vec![0x2a]),
    });
    let done = h.last("a").clone();
    assert_eq!(done.reply, Some(vec![0x2a]));
    let journal_len = h.journal.len();
    h.now += 1_000;
    assert_eq!(h.send("a"), vec![Action::Publish(done.clone())]);
    assert_eq!(h.journal.len(), journal_len);
    assert_eq!(h.starts.len(), 1);
    assert_eq!(h.s.status_of("a"), Some(done));
}

#[test]
fn duplicate_of_a_pending_command_is_ignored() {
    let mut h = H::new(Policy::default());
    h.send("a");
    h.send("b");
    let before = (h.journal.len(), h.published.len());
    assert_eq!(h.send("a"), vec![]); // running
    assert_eq!(h.send("b"), vec![]); // queued
    h.fail();
    assert_eq!(h.send("a"), vec![]); // waiting for its retry
    assert_eq!(
        (h.journal.len(), h.published.len()),
        (before.0 + 1, before.1 + 1)
    ); // only the retry
    assert_eq!(h.s.pending_len(), 2);
}

#[test]
fn reject_is_journaled_and_deduped() {
    let mut h = H::new(Policy::default());
    let env = Envelope::new("x", "nope", T0);
    let a = h.s.reject(
        &env,
        Code::UnknownCommand,
        "no handler for nope".into(),
        h.now,
    );
    h.apply(a);
    let status = h.last("x").clone();
    assert_eq!(
        (status.status, status.code.clone()),
        (State::Rejected, Some(Code::UnknownCommand))
    );
    assert!(matches!(h.journal.last(), Some(Record::Finished(_))));
    assert_eq!(h.send_env(env), vec![Action::Publish(status)]);
    assert!(h.starts.is_empty());
}

#[test]
fn finish_of_a_command_that_is_not_running_is_an_error() {
    let mut h = H::new(Policy::default());
    assert_eq!(
        h.s.finish("ghost", AttemptResult::Succeeded { reply: None }, 0),
        Err(SchedulerError::NotRunning { id: "ghost".into() })
    );
    h.send("a");
    h.send("b");
    assert!(h
        .s
        .finish("b", AttemptResult::Succeeded { reply: None }, 0)
        .is_err());
    assert_eq!(h.running_id().as_deref(), Some("a"));
}

#[test]
fn crash_mid_attempt_reruns_with_the_next_attempt_number() {
    let mut h = H::new(Policy::default());
    h.send("a");
    h.send("b");
    h.fail(); // attempt 1 failed
    h.wake(); // attempt 2 starts
    assert!(!h.starts[1].1.persist_first);
    h.crash(); // ... and the host dies during it
    assert_eq!(h.started_ids(), ids(&[("a", 1), ("a", 2), ("a", 3)]));
    assert!(
        h.starts[2].1.persist_first,
        "first start after a restart is persisted first"
    );
    assert_eq!(h.s.status_of("a").unwrap().status, State::Running);
    h.succeed();
    assert_eq!(
        (h.last("a").status, h.last("a").attempt),
        (State::Succeeded, 3)
    );
    // b was pending at the restart: still careful.
    assert!(h.starts[3].1.persist_first);
    h.succeed();
    h.send("c");
    // The start right after the careful ones persists (it flushes their
    // outcomes); the one after that is lazy again.
    assert!(h.starts[4].1.persist_first);
    h.succeed();
    h.send("d");
    assert!(!h.starts[5].1.persist_first);
}

#[test]
fn poison_pill_ends_interrupted_after_max_attempts() {
    let mut h = H::new(Policy::default());
    h.send("pill");
    h.send("next");
    // Bounded: every restart consumes one attempt.
    for _ in 0..10 {
        if h.s.status_of("pill").is_some_and(|s| s.is_final()) {
            break;
        }
        h.now += 100;
        h.crash();
    }
    assert_eq!(
        h.starts
            .iter()
            .filter(|(_, s)| s.invocation.id == "pill")
            .count(),
        5
    );
    let pill = h.last("pill").clone();
    assert_eq!(
        (pill.status, pill.attempt, pill.code.clone()),
        (State::Failed, 5, Some(Code::Interrupted))
    );
    assert!(h
        .starts
        .iter()
        .all(|(_, s)| s.invocation.attempt == 1 || s.persist_first));
    assert_eq!(h.running_id().as_deref(), Some("next"));
    // And the outcome is durable: another restart does not bring it back.
    h.crash();
    assert_eq!(h.s.status_of("pill"), Some(pill));
}

#[test]
fn restart_keeps_the_retry_schedule() {
    let mut h = H::new(Policy::default());
    h.send("a");
    h.fail(); // retry due at T0 + 5 s
    h.now += 1_000;
    h.crash();
    assert_eq!(h.running_id(), None);
    let waiting = h.s.status_of("a").unwrap();
    assert_eq!(
        (waiting.status, waiting.next_attempt_at),
        (State::Retrying, Some(T0 + 5_000))
    );
    assert_eq!(h.s.next_wakeup(), Some(T0 + 5_000));
    h.wake();
    assert_eq!(h.started_ids(), ids(&[("a", 1), ("a", 2)]));
}

#[test]
fn rpc_in_flight_at_a_crash_is_interrupted_not_rerun() {
    let mut h = H::new(Policy::default());
    h.rpc("r");
    h.crash();
    let r = h.last("r").clone();
    assert_eq!(
        (r.status, r.attempt, r.code),
        (State::Failed, 1, Some(Code::Interrupted))
    );
    assert_eq!(h.starts.len(), 1);
}

#[test]
fn commands_queued_at_a_crash_all_run_in_order_after_it() {
    let mut h = H::new(Policy::default());
    for i in 0..5 {
        h.send(&alloc::format!("c{i}"));
    }
    h.crash();
    for _ in 0..5 {
        h.succeed();
    }
    let order: Vec<String> = h
        .starts
        .iter()
        .map(|(_, s)| s.invocation.id.clone())
        .collect();
    assert_eq!(order, ["c0", "c0", "c1", "c2", "c3", "c4"]);
}

#[test]
fn compaction_keeps_dedupe_and_pending_state() {
    let policy = Policy {
        remembered_outcomes: 4,
        ..Policy::default()
    };
    let mut h = H::new(policy);
    for i in 0..10 {
        h.send(&alloc::format!("done{i}"));
        h.succeed();
    }
    assert_eq!(h.s.remembered_len(), 4);
    h.send("retrying");
    h.send("queued");
    h.fail();
    h.compact();
    // 4 outcomes + 2 pending commands + 1 retry state.
    assert_eq!(h.journal.len(), 7);
    h.crash();
    assert_eq!(
        h.s.retained_records(),
        h.journal,
        "restore inverts retained_records"
    );
    // Recent outcome: deduped; forgotten one: runs again.
    let done9 = h.s.status_of("done9").unwrap();
    assert_eq!(h.send("done9"), vec![Action::Publish(done9)]);
    assert!(h.s.status_of("done0").is_none());
    h.wake(); // the retry is still due at T0 + 5 s with attempt 2
    assert_eq!(
        h.starts.last().map(|(t, s)| (*t, s.invocation.attempt)),
        Some((T0 + 5_000, 2))
    );
    h.succeed();
    h.succeed();
    h.send("done0");
    assert_eq!(h.running_id().as_deref(), Some("done0"));
}

#[test]
fn compaction_while_running_keeps_the_attempt_in_flight() {
    let mut h = H::new(Policy::default());
    h.send("a");
    h.compact();
    h.crash();
    assert_eq!(h.started_ids(), ids(&[("a", 1), ("a", 2)]));
}

#[test]
fn zero_remembered_outcomes_disables_dedupe_of_finished_commands() {
    let mut h = H::new(Policy {
        remembered_outcomes: 0,
        ..Policy::default()
    });
    h.send("a");
    h.succeed();
    h.send("a");
    assert_eq!(h.started_ids(), ids(&[("a", 1), ("a", 1)]));
}

#[test]
fn status_queries_follow_the_command() {
    let mut h = H::new(Policy::default());
    assert_eq!(h.s.status_of("a"), None);
    h.send("a");
    h.send("b");
    assert_eq!(h.s.status_of("b").map(|s| s.status), Some(State::Accepted));
    assert_eq!(
        h.s.status_of("a").map(|s| (s.status, s.attempt)),
        Some((State::Running, 1))
    );
    h.fail();
    assert_eq!(h.s.status_of("a").map(|s| s.status), Some(State::Retrying));
}

#[test]
fn lowering_max_attempts_between_runs_fails_an_exhausted_command() {
    let mut h = H::new(Policy::default());
    h.send("a");
    h.fail();
    h.wake();
    h.fail(); // 2 attempts done, waiting for the third
    let records = h.journal.clone();
    let (mut s, _) = Scheduler::restore(
        Policy {
            max_attempts: 2,
            ..Policy::default()
        },
        records,
        h.now,
    );
    let actions = s.poll(h.now + 10_000);
    assert!(!actions.iter().any(|a| matches!(a, Action::Start(_))));
    assert_eq!(
        s.status_of("a").map(|s| (s.status, s.attempt)),
        Some((State::Failed, 2))
    );
}

/// A crash between an outcome and the broker's PUBACK of its status must not
/// lose the status: every final status without a `Delivered` record is
/// published again at restore, oldest first; delivered ones are not, and
/// compaction keeps the difference.
#[test]
fn undelivered_final_statuses_are_published_again_after_a_restart() {
    let mut h = H::new(Policy::default());
    for id in ["a", "b", "c"] {
        h.send(id);
        h.succeed();
    }
    let delivered =
        h.s.delivered("a")
            .expect("a's status was not delivered yet");
    assert_eq!(
        delivered,
        Action::Journal(Record::Delivered { id: "a".into() })
    );
    h.apply(vec![delivered]);
    assert_eq!(h.s.delivered("a"), None, "a second PUBACK writes nothing");
    assert_eq!(h.s.delivered("unknown"), None);

    h.published.clear();
    h.crash();
    let again: Vec<(&str, State)> = h
        .published
        .iter()
        .map(|s| (s.id.as_str(), s.status))
        .collect();
    assert_eq!(again, [("b", State::Succeeded), ("c", State::Succeeded)]);

    // Compaction keeps which statuses were delivered.
    let delivered = h.s.delivered("b").unwrap();
    h.apply(vec![delivered]);
    h.compact();
    assert_eq!(h.s.retained_records(), h.journal);
    h.published.clear();
    h.crash();
    let again: Vec<&str> = h.published.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(again, ["c"]);
    // Re-published statuses are the recorded ones (same `at`, same reply).
    assert_eq!(h.published[0], h.s.status_of("c").unwrap());
}
