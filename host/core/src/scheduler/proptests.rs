//! Property: for random sequences of arrivals (with duplicate ids, RPCs and
//! expiries), time steps, attempt outcomes, crashes and compactions, the
//! scheduler never runs two attempts at once, never starts a command before
//! every earlier one is final (only an RPC may pass commands, and only while
//! the head of the queue waits for its retry), numbers attempts 1, 2, ...
//! up to `max_attempts`, and, once the inputs stop, brings every accepted
//! command to a final status.

use super::*;
use alloc::string::ToString;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Ev {
    Send {
        id: u8,
        rpc: bool,
        ttl: Option<u16>,
    },
    Advance(u16),
    /// 0 success, 1 retryable failure, 2 permanent failure, 3 rejected.
    Finish(u8),
    Crash,
    Compact,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => (0u8..12, prop::bool::weighted(0.25), prop::option::weighted(0.3, 0u16..4_000))
            .prop_map(|(id, rpc, ttl)| Ev::Send { id, rpc, ttl }),
        3 => (0u16..3_000).prop_map(Ev::Advance),
        4 => (0u8..4).prop_map(Ev::Finish),
        1 => Just(Ev::Crash),
        1 => Just(Ev::Compact),
    ]
}

#[derive(Debug)]
struct Arrival {
    id: String,
    rpc: bool,
    attempts: u32,
    is_final: bool,
}

struct Model {
    s: Scheduler,
    now: u64,
    journal: Vec<Record>,
    arrivals: Vec<Arrival>,
    running: Option<String>,
}

impl Model {
    fn pending(&mut self, id: &str) -> Option<usize> {
        self.arrivals
            .iter()
            .rposition(|a| a.id == id && !a.is_final)
    }

    fn apply(&mut self, actions: Vec<Action>) -> Result<(), TestCaseError> {
        let max = self.s.policy().max_attempts();
        for action in actions {
            match action {
                Action::Journal(record) => {
                    if let Record::Accepted(cmd) = &record {
                        prop_assert!(self.pending(&cmd.id).is_none(), "{} accepted twice", cmd.id);
                        let rpc = cmd.kind == Kind::Rpc;
                        self.arrivals.push(Arrival {
                            id: cmd.id.clone(),
                            rpc,
                            attempts: 0,
                            is_final: false,
                        });
                    }
                    if let Record::Finished(status) = &record {
                        prop_assert!(status.is_final());
                    }
                    self.journal.push(record);
                }
                Action::Publish(status) => {
                    if status.is_final() {
                        if let Some(i) = self.pending(&status.id) {
                            prop_assert_ne!(
                                self.running.as_deref(),
                                Some(status.id.as_str()),
                                "final while running"
                            );
                            self.arrivals[i].is_final = true;
                        }
                    }
                }
                Action::Start(start) => {
                    let inv = start.invocation;
                    prop_assert!(
                        self.running.is_none(),
                        "{} started while {:?} runs",
                        inv.id,
                        self.running
                    );
                    let Some(i) = self.pending(&inv.id) else {
                        return Err(TestCaseError::fail(alloc::format!(
                            "{} started but not pending",
                            inv.id
                        )));
                    };
                    let me = &self.arrivals[i];
                    prop_assert_eq!(
                        inv.attempt,
                        me.attempts + 1,
                        "attempts of {} are consecutive",
                        &inv.id
                    );
                    prop_assert!(inv.attempt <= max);
                    prop_assert_eq!(start.kind == Kind::Rpc, me.rpc);
                    // An RPC may pass the commands queued behind a head that
                    // waits for its retry (they cannot start before it anyway).
                    let head_waits = self.arrivals[..i]
                        .iter()
                        .find(|a| !a.is_final)
                        .is_some_and(|head| !head.rpc && head.attempts > 0);
                    for earlier in &self.arrivals[..i] {
                        let passable = me.rpc && !earlier.rpc && head_waits;
                        prop_assert!(
                            earlier.is_final || passable,
                            "{} started before earlier {:?}",
                            inv.id,
                            earlier
                        );
                    }
                    self.arrivals[i].attempts = inv.attempt;
                    self.running = Some(inv.id);
                }
            }
        }
        Ok(())
    }

    fn poll(&mut self) -> Result<(), TestCaseError> {
        let a = self.s.poll(self.now);
        self.apply(a)
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let open = self.arrivals.iter().filter(|a| !a.is_final).count();
        prop_assert_eq!(self.s.pending_len(), open);
        prop_assert_eq!(
            self.s.running().map(|(c, _)| c.id.clone()),
            self.running.clone()
        );
        Ok(())
    }

    fn step(&mut self, ev: Ev) -> Result<(), TestCaseError> {
        match ev {
            Ev::Send { id, rpc, ttl } => {
                let kind = if rpc { Kind::Rpc } else { Kind::Command };
                let mut env =
                    Envelope::new(alloc::format!("id{id}"), "cmd", self.now).with_kind(kind);
                if let Some(ttl) = ttl {
                    env = env.with_expires_at(self.now + u64::from(ttl));
                }
                let a = self.s.accept(env, Role::Primary, self.now);
                self.apply(a)?;
            }
            Ev::Advance(ms) => self.now += u64::from(ms),
            Ev::Finish(kind) => {
                if let Some(id) = self.running.take() {
                    let result = match kind {
                        0 => AttemptResult::Succeeded { reply: None },
                        1 => AttemptResult::Failed {
                            code: Code::Trap,
                            message: "t".into(),
                            retryable: true,
                        },
                        2 => AttemptResult::Failed {
                            code: Code::InvalidArgument,
                            message: "p".into(),
                            retryable: false,
                        },
                        _ => AttemptResult::Rejected {
                            code: Code::UnknownCommand,
                            message: "r".into(),
                        },
                    };
                    let a = self
                        .s
                        .finish(&id, result, self.now)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    self.apply(a)?;
                }
            }
            Ev::Crash => {
                self.running = None;
                let records: Vec<Record> = self
                    .journal
                    .iter()
                    .map(|r| Record::decode(&r.encode()).unwrap())
                    .collect();
                let (s, a) = Scheduler::restore(self.s.policy().clone(), records, self.now);
                self.s = s;
                self.apply(a)?;
            }
            Ev::Compact => self.journal = self.s.retained_records(),
        }
        self.poll()?;
        self.check()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn order_exclusivity_attempts_and_liveness(events in prop::collection::vec(ev(), 1..120)) {
        let policy = Policy { retry_delay_ms: 1_000, max_attempts: 3, remembered_outcomes: 5 };
        let mut m = Model { s: Scheduler::new(policy), now: 1_000_000, journal: vec![], arrivals: vec![], running: None };
        for e in events {
            m.step(e)?;
        }
        // Inputs stop: every attempt from now on succeeds.
        for _ in 0..1_000 {
            if m.s.pending_len() == 0 {
                break;
            }
            if m.running.is_some() {
                m.step(Ev::Finish(0))?;
            } else {
                let wake = m.s.next_wakeup();
                prop_assert!(wake.is_some(), "pending work but nothing to wait for");
                m.now = m.now.max(wake.unwrap_or_default());
                m.poll()?;
            }
        }
        prop_assert_eq!(m.s.pending_len(), 0);
        prop_assert!(m.arrivals.iter().all(|a| a.is_final));
    }
}
