//! `Rig`: the test driver of the machine's tests (`tests`, `tests_space`).
//! It plays the driver in virtual time: it carries out appends by
//! remembering them (decoded, in `journal`), reports them durable when told
//! to, and turns effects into `Seen` values a test can compare. Probes and
//! health messages are set aside in `probes` and `health`, so tests that are
//! not about a full disk see only the rest.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::health::Health;
use super::*;
use crate::envelope::Envelope;
use crate::journal::record::Record;
use crate::scheduler::AttemptResult;
use crate::status::State;

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
    Upcoming(String),
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
    /// Every status published, whole, in order.
    pub(super) statuses: Vec<Status>,
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
            statuses: Vec::new(),
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
                Effect::Publish(Outgoing::Status(s)) => {
                    self.statuses.push(s.clone());
                    Seen::Status(s.id, s.status)
                }
                Effect::Publish(Outgoing::Event { name, .. }) => Seen::Event(name),
                Effect::Ack(token) => Seen::Ack(token),
                Effect::Start(inv) => Seen::Start(inv.id, inv.attempt),
                Effect::Upcoming(inv) => Seen::Upcoming(inv.id),
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
