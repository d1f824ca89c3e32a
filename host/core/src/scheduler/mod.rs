//! Step 3 of the data path: the scheduler decides which accepted command
//! runs next, retries failures, expires stale commands and dedupes
//! redeliveries. It is a pure state machine (sans-IO): time is a `now: u64`
//! (unix ms) passed in, and every effect is returned as an [`Action`] for the
//! runtime to carry out, so it is tested with virtual time and runs the same
//! on Linux and on a microcontroller.
//!
//! # Driving it
//!
//! ```text
//! let (mut s, actions) = Scheduler::restore(policy, journal_records, now);  // at start
//! s.accept(envelope, role_from_topic, now)  -> actions   // each decoded envelope
//! s.reject(&envelope, code, message, now)   -> actions   // refused before queuing
//! s.poll(now)                               -> actions   // after every event and timer
//! s.finish(id, AttemptResult, now)          -> actions   // when an attempt ends
//! s.next_wakeup()                           -> Option<u64>  // arm a timer, then poll
//! s.retained_records()                      -> Vec<Record>  // compaction snapshot
//! ```
//!
//! Actions are [`Action::Journal`] (append a record), [`Action::Publish`]
//! (a status) and [`Action::Start`] (run an attempt). Publish a status only
//! once the records before it are durable; see [`Action`] and
//! [`Start::persist_first`]. At most one attempt runs at a time: `poll`
//! starts nothing while one runs; call it again after `finish`.
//!
//! # Semantics
//!
//! * **Order.** Strict FIFO in arrival order: a command starts only when
//!   every command that arrived before it is final.
//! * **Retries.** A retryable failure (handler error of kind transient,
//!   trap, time-out) is retried `retry_delay_ms` (default 5 s) after the
//!   attempt ended, up to `max_attempts` (default 5) attempts in all, then
//!   ends `failed` with the last attempt's code and message. Permanent
//!   errors (invalid argument, out of bounds, permanent handler error,
//!   oversize reply) end `failed` at once; unknown command, not permitted
//!   and bad payload end `rejected`. While the head command waits for its
//!   retry, later commands keep waiting (order is the contract).
//! * **RPC.** An RPC is never retried (its first failure is final) and does
//!   not wait behind a command that is sleeping until its retry: it runs in
//!   the pause. It does wait for a running attempt and for earlier commands
//!   that have not started yet.
//! * **Expiry.** A command whose `expires_at` <= now never starts; it ends
//!   `expired` (code `expired`, attempt = attempts made). Checked at accept,
//!   before every start, and for queued commands as time passes (queued
//!   behind a retrying head, a command expires at its `expires_at`, which
//!   [`Scheduler::next_wakeup`] includes). A running attempt is never cut
//!   short by expiry.
//! * **Dedupe** by id. A duplicate of a command whose outcome is remembered
//!   never runs again: its recorded final status (same `at`, same reply) is
//!   published again. A duplicate of a pending command is ignored (no
//!   action; the runtime just acks it). The last `remembered_outcomes`
//!   outcomes are kept, in memory and across compaction.
//! * **Restart.** [`Scheduler::restore`] rebuilds the state from the journal,
//!   attempt counters included. A command with a `Started` record and no
//!   later `Retrying`/`Finished` was running when the host stopped: it runs
//!   again at once as attempt n+1 if attempts are left; otherwise (and
//!   always for an RPC, never retried) it ends `failed` with code
//!   `interrupted`. A command that kills the host every time it runs (a
//!   poison pill) therefore ends after `max_attempts` crashes instead of
//!   looping forever. A command that succeeded but whose outcome was not
//!   yet durable runs again (at-least-once).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::envelope::{Command, Envelope, Kind};
use crate::journal::record::Record;
use crate::plugin::Role;
use crate::status::{Code, State, Status};

mod action;
mod outcomes;
#[cfg(test)]
mod proptests;
mod restore;
#[cfg(test)]
mod tests;

pub use action::{Action, AttemptResult, Policy, SchedulerError, Start};
use outcomes::Outcomes;

/// A queued (or running) command and its attempt history.
#[derive(Debug, Clone)]
struct Entry {
    cmd: Command,
    /// Attempts started so far.
    attempts: u32,
    /// No attempt may start before this instant (0: at once).
    ready_at: u64,
    /// Code and message of the last failed (or interrupted) attempt.
    last_error: Option<(Code, String)>,
    /// When the entry last changed state (for status queries).
    changed_at: u64,
}

/// The scheduler's state. See the module doc.
#[derive(Debug, Clone)]
pub struct Scheduler {
    policy: Policy,
    /// Pending commands by arrival sequence: the FIFO.
    queue: BTreeMap<u64, Entry>,
    /// Pending ids -> sequence.
    by_id: BTreeMap<String, u64>,
    /// Sequences of pending RPCs (to find the first one quickly).
    rpcs: BTreeSet<u64>,
    /// `(expires_at, seq)` of pending commands that expire.
    expiries: BTreeSet<(u64, u64)>,
    /// Sequence of the command whose attempt is running.
    running: Option<u64>,
    outcomes: Outcomes,
    next_seq: u64,
    /// Commands with a sequence below this were pending at the last restart
    /// (see [`Start::persist_first`]).
    careful_below: u64,
    last_start_careful: bool,
}

impl Scheduler {
    /// An empty scheduler (no journal yet).
    pub fn new(policy: Policy) -> Self {
        let outcomes = Outcomes::new(policy.remembered_outcomes);
        Scheduler {
            policy,
            queue: BTreeMap::new(),
            by_id: BTreeMap::new(),
            rpcs: BTreeSet::new(),
            expiries: BTreeSet::new(),
            running: None,
            outcomes,
            next_seq: 0,
            careful_below: 0,
            last_start_careful: false,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Takes a decoded envelope that arrived on a `cmd/<role>` topic.
    ///
    /// New: `Journal(Accepted)`, `Publish(accepted)`; the runtime acks the
    /// PUBACK once the record is durable. Already expired: `Journal(Finished)`,
    /// `Publish(expired)`. Duplicate of a remembered outcome:
    /// `Publish(<that final status>)`. Duplicate of a pending command: no
    /// action.
    pub fn accept(&mut self, envelope: Envelope, role: Role, now: u64) -> Vec<Action> {
        if let Some(done) = self.outcomes.get(&envelope.id) {
            return vec![Action::Publish(done.clone())];
        }
        if self.by_id.contains_key(&envelope.id) {
            return Vec::new();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let cmd = Command::new(envelope, role, seq, now);
        if cmd.is_expired(now) {
            let status = cmd
                .status(State::Expired, 0, now)
                .with_code(Code::Expired, expired_message(&cmd, None));
            return self.record_outcome(status);
        }
        let actions = vec![
            Action::Journal(Record::Accepted(cmd.clone())),
            Action::Publish(cmd.status(State::Accepted, 0, now)),
        ];
        self.insert(Entry {
            cmd,
            attempts: 0,
            ready_at: 0,
            last_error: None,
            changed_at: now,
        });
        actions
    }

    /// Refuses an envelope before queuing it (e.g. the runtime found no
    /// handler for its name, or the role may not call it): a final
    /// `rejected` status that is journaled and remembered like any outcome,
    /// so a redelivery gets the same answer. Duplicates behave as in
    /// [`Scheduler::accept`].
    pub fn reject(
        &mut self,
        envelope: &Envelope,
        code: Code,
        message: String,
        now: u64,
    ) -> Vec<Action> {
        if let Some(done) = self.outcomes.get(&envelope.id) {
            return vec![Action::Publish(done.clone())];
        }
        if self.by_id.contains_key(&envelope.id) {
            return Vec::new();
        }
        let status = Status::new(
            envelope.id.clone(),
            envelope.name.clone(),
            State::Rejected,
            0,
            now,
        )
        .with_code(code, message);
        self.record_outcome(status)
    }

    /// Expires what is due and, unless an attempt runs, starts the next one:
    /// the head of the FIFO if it is ready, else (head waiting for its
    /// retry) the first queued RPC.
    pub fn poll(&mut self, now: u64) -> Vec<Action> {
        let mut actions = self.expire_due(now);
        if self.running.is_some() {
            return actions;
        }
        // Bounded: each pass removes an entry or returns.
        while let Some((&head, entry)) = self.queue.first_key_value() {
            let next = if entry.ready_at <= now {
                head
            } else {
                // Only the head can be waiting for a retry (it started
                // while everything before it was final), so every RPC in
                // the queue comes after it.
                match self.rpcs.first() {
                    Some(&rpc) => rpc,
                    None => break,
                }
            };
            let entry = &self.queue[&next];
            if entry.attempts >= self.policy.max_attempts() {
                // Only reachable after `max_attempts` was lowered between runs.
                let (code, message) = entry
                    .last_error
                    .clone()
                    .unwrap_or((Code::Interrupted, String::new()));
                actions.extend(self.conclude(
                    next,
                    State::Failed,
                    Some((code, message)),
                    None,
                    now,
                ));
                continue;
            }
            actions.extend(self.start(next, now));
            break;
        }
        actions
    }

    /// Reports the end of the running attempt of `id`.
    /// Names the plugin version that ran the finished command `id`
    /// (`name@version`, which the driver knows and the scheduler does not)
    /// in its remembered outcome, so a duplicate is answered with the very
    /// status the first delivery got.
    pub fn name_runner(&mut self, id: &str, plugin: &str) {
        if let Some(status) = self.outcomes.get_mut(id) {
            status.plugin = Some(plugin.into());
        }
    }

    pub fn finish(
        &mut self,
        id: &str,
        result: AttemptResult,
        now: u64,
    ) -> Result<Vec<Action>, SchedulerError> {
        let seq = match self.running {
            Some(seq) if self.queue.get(&seq).is_some_and(|e| e.cmd.id == id) => seq,
            _ => return Err(SchedulerError::NotRunning { id: id.into() }),
        };
        self.running = None;
        let max_attempts = self.policy.max_attempts();
        let delay = self.policy.retry_delay_ms;
        let actions = match result {
            AttemptResult::Succeeded { reply } => {
                self.conclude(seq, State::Succeeded, None, reply, now)
            }
            AttemptResult::Failed {
                code,
                message,
                retryable,
            } => {
                let Some(entry) = self.queue.get_mut(&seq) else {
                    return Err(SchedulerError::NotRunning { id: id.into() });
                };
                if retryable && entry.cmd.kind == Kind::Command && entry.attempts < max_attempts {
                    let next_attempt_at = now.saturating_add(delay);
                    entry.ready_at = next_attempt_at;
                    entry.changed_at = now;
                    entry.last_error = Some((code.clone(), message.clone()));
                    let status = entry
                        .cmd
                        .status(State::Retrying, entry.attempts, now)
                        .with_code(code.clone(), message.clone())
                        .with_next_attempt_at(next_attempt_at);
                    let record = Record::Retrying {
                        id: entry.cmd.id.clone(),
                        attempt: entry.attempts,
                        next_attempt_at,
                        code,
                        message,
                    };
                    vec![Action::Journal(record), Action::Publish(status)]
                } else {
                    self.conclude(seq, State::Failed, Some((code, message)), None, now)
                }
            }
            AttemptResult::Rejected { code, message } => {
                self.conclude(seq, State::Rejected, Some((code, message)), None, now)
            }
        };
        Ok(actions)
    }

    /// The earliest instant at which [`Scheduler::poll`] has work without
    /// new input (a retry falls due, a queued command expires, or something
    /// can start). It may be <= now: then poll now. `None`: nothing to wait for.
    pub fn next_wakeup(&self) -> Option<u64> {
        let expiry = self
            .expiries
            .iter()
            .find(|(_, seq)| Some(*seq) != self.running)
            .map(|(t, _)| *t);
        let start = match self.running {
            Some(_) => None,
            None => self
                .queue
                .first_key_value()
                .map(|(_, head)| match self.rpcs.first() {
                    Some(_) => 0,
                    None => head.ready_at,
                }),
        };
        [expiry, start].into_iter().flatten().min()
    }

    /// Commands accepted and not yet final (the running one included).
    pub fn pending_len(&self) -> usize {
        self.queue.len()
    }

    /// The command whose attempt is running, and that attempt's number.
    pub fn running(&self) -> Option<(&Command, u32)> {
        let entry = self.queue.get(&self.running?)?;
        Some((&entry.cmd, entry.attempts))
    }

    /// Outcomes currently remembered for dedupe.
    pub fn remembered_len(&self) -> usize {
        self.outcomes.len()
    }

    /// The broker acknowledged the final status of `id`. Returns the
    /// `Delivered` record to journal (no sync needed; see
    /// [`Record::Delivered`]), or nothing if `id` has no remembered,
    /// undelivered outcome (e.g. a duplicate's re-published status).
    pub fn delivered(&mut self, id: &str) -> Option<Action> {
        self.outcomes
            .mark_delivered(id)
            .then(|| Action::Journal(Record::Delivered { id: id.into() }))
    }

    /// The latest status of `id` (for a status query): its remembered final
    /// status, or `accepted` / `running` / `retrying` while pending.
    pub fn status_of(&self, id: &str) -> Option<Status> {
        if let Some(done) = self.outcomes.get(id) {
            return Some(done.clone());
        }
        let seq = *self.by_id.get(id)?;
        let e = self.queue.get(&seq)?;
        Some(if self.running == Some(seq) {
            e.cmd.status(State::Running, e.attempts, e.changed_at)
        } else if e.attempts > 0 {
            let (code, message) = e
                .last_error
                .clone()
                .unwrap_or((Code::Interrupted, String::new()));
            let status = e
                .cmd
                .status(State::Retrying, e.attempts, e.changed_at)
                .with_code(code, message);
            status.with_next_attempt_at(e.ready_at)
        } else {
            e.cmd.status(State::Accepted, 0, e.cmd.accepted_at)
        })
    }

    fn insert(&mut self, entry: Entry) {
        let seq = entry.cmd.seq;
        self.by_id.insert(entry.cmd.id.clone(), seq);
        if entry.cmd.kind == Kind::Rpc {
            self.rpcs.insert(seq);
        }
        if let Some(t) = entry.cmd.expires_at {
            self.expiries.insert((t, seq));
        }
        self.queue.insert(seq, entry);
    }

    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.queue.remove(&seq)?;
        self.by_id.remove(&entry.cmd.id);
        self.rpcs.remove(&seq);
        if let Some(t) = entry.cmd.expires_at {
            self.expiries.remove(&(t, seq));
        }
        if self.running == Some(seq) {
            self.running = None;
        }
        Some(entry)
    }

    fn start(&mut self, seq: u64, now: u64) -> Vec<Action> {
        let careful = self
            .queue
            .first_key_value()
            .is_some_and(|(&first, _)| first < self.careful_below);
        let persist_first = careful || self.last_start_careful;
        self.last_start_careful = careful;
        let Some(entry) = self.queue.get_mut(&seq) else {
            return Vec::new();
        };
        entry.attempts += 1;
        entry.ready_at = 0;
        entry.changed_at = now;
        self.running = Some(seq);
        let attempt = entry.attempts;
        vec![
            Action::Journal(Record::Started {
                id: entry.cmd.id.clone(),
                attempt,
                at: now,
            }),
            Action::Publish(entry.cmd.status(State::Running, attempt, now)),
            Action::Start(Start {
                invocation: entry.cmd.invocation(attempt),
                kind: entry.cmd.kind,
                persist_first,
            }),
        ]
    }

    /// Expires every due queued command except the running one.
    fn expire_due(&mut self, now: u64) -> Vec<Action> {
        let due: Vec<u64> = self
            .expiries
            .range(..=(now, u64::MAX))
            .map(|&(_, seq)| seq)
            .filter(|seq| Some(*seq) != self.running)
            .collect();
        let mut actions = Vec::new();
        for seq in due {
            let Some(entry) = self.queue.get(&seq) else {
                continue;
            };
            let message = expired_message(&entry.cmd, entry.last_error.as_ref());
            actions.extend(self.conclude(
                seq,
                State::Expired,
                Some((Code::Expired, message)),
                None,
                now,
            ));
        }
        actions
    }

    /// Ends a pending command with a final status.
    fn conclude(
        &mut self,
        seq: u64,
        state: State,
        error: Option<(Code, String)>,
        reply: Option<Vec<u8>>,
        now: u64,
    ) -> Vec<Action> {
        let Some(entry) = self.remove(seq) else {
            return Vec::new();
        };
        let mut status = entry
            .cmd
            .status(state, entry.attempts, now)
            .with_reply(reply);
        if let Some((code, message)) = error {
            status = status.with_code(code, message);
        }
        self.record_outcome(status)
    }

    /// Journals, publishes and remembers a final status.
    fn record_outcome(&mut self, status: Status) -> Vec<Action> {
        self.outcomes.remember(status.clone());
        vec![
            Action::Journal(Record::Finished(status.clone())),
            Action::Publish(status),
        ]
    }
}

fn expired_message(cmd: &Command, last_error: Option<&(Code, String)>) -> String {
    let at = cmd.expires_at.unwrap_or_default();
    match last_error {
        Some((code, message)) => {
            format!("expired at {at} before its next attempt; last error {code}: {message}")
        }
        None => format!("expired at {at} before it could start"),
    }
}
