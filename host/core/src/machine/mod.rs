//! The device's decisions between the link and the handler, as one sans-IO
//! state machine: events in, [`Effect`]s out, time passed in as `now`.
//!
//! It owns the [`Scheduler`] (step 3) and everything around it that used to
//! be decided inside an I/O loop: decoding and refusing envelopes, the
//! built-in commands, the commit pipeline (which records go into which
//! group-commit append, and the short linger of outcome records), the rule
//! that a PUBACK, a status or a careful start waits for its records to be
//! durable, holding and coalescing statuses under load, and compaction. The
//! Linux driver (`relay-host`) and the microcontroller loop only carry out
//! the effects: nothing here awaits, reads a clock or touches a file.
//!
//! # Driving it
//!
//! ```text
//! let mut m = Machine::restore(policy, journal_records, options, now);
//! m.on_message(role, &payload, ack_token, now, plugins)  // each delivery
//! m.on_attempt_done(id, result, events, now)             // a handler returned
//! m.on_durable(covered, now)                             // an Append/Rewrite/Retry is on disk
//! m.on_space(reserve_in_use, now)                        // after it: is the disk full?
//! m.on_append_failed(now)                                // one failed for lack of space
//! m.on_probed(reserve_in_use, now)                       // a Probe came back
//! m.on_delivered(id, now)                                // the broker acked a final status
//! m.tick(now)                  // after a turn's events, and when next_wakeup(now) passes
//! m.take_effects(&mut buf)     // then carry out buf in order
//! m.stop(); m.close(now)       // graceful shutdown (see below)
//! ```
//!
//! Effects are carried out in order: [`Effect::Append`] / [`Effect::Rewrite`]
//! / [`Effect::Retry`] go to the journal, and their `covered` count comes
//! back through [`Machine::on_durable`] once the write is synced (in
//! submission order; a full disk: see `space`), as does [`Effect::Probe`]'s
//! answer through [`Machine::on_probed`];
//! [`Effect::Publish`], [`Effect::Ack`] and [`Effect::Start`] go to the link
//! and the handler; [`Effect::Upcoming`] is advisory (preparation ahead of
//! a command's turn). **Durability is stated by the effects, not by their
//! order:** the machine emits an `Ack`, a `Publish` or a careful `Start` only
//! once `on_durable` reported every record it depends on, so a driver may
//! carry effects out as it likes within that order.
//!
//! Batching is the driver's choice: it may feed several events before one
//! `tick`, and all the records they produced share one `Append` (one fsync).
//!
//! # Shutdown
//! [`Machine::stop`] stops starting attempts and lingering; the driver waits
//! for the running handler (its deadline is the driver's), then calls
//! [`Machine::close`]: held statuses are published, everything left is
//! submitted, and from then on released starts are dropped.
//!
//! # Layout
//! - `types`: the options, effects, counters and snapshot types.
//! - `commit`: actions into records and gated effects; submitting appends.
//! - `pipeline`: record numbering and the durability gates.
//! - `held`: `accepted` statuses held back under load.
//! - [`outgoing`]: what is published, and the coalescing rule.
//! - [`builtins`]: `_status` and `_plugins`, answered at arrival.
//! - `space`: a full disk (stop taking commands, retry, probe, resume).
//! - [`health`]: the health message that says so.
//! - `tests`: the runtime's behaviour in virtual time, no I/O.

use alloc::string::String;
use alloc::vec::Vec;

use crate::envelope;
use crate::journal::record::Record;
use crate::plugin::{Event, Invocation, Role};
use crate::registry::is_reserved;
use crate::scheduler::{Action, AttemptResult, Policy, Scheduler};
use crate::status::{Code, Status};

pub mod builtins;
mod commit;
pub mod health;
mod held;
pub mod outgoing;
mod pipeline;
#[cfg(test)]
mod rig;
mod space;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_space;
mod types;

pub use builtins::{BuiltinAccess, BuiltinAnswer, Listed, UpdateNote};
pub use health::{Health, HealthReason, HealthState};
pub use held::HOLD_MS;
pub use outgoing::{coalesce, Outgoing};
pub use space::STORAGE_RETRY_MS;
pub use types::{
    Counters, Effect, MachineOptions, MachineState, DEFAULT_COMPACT_AFTER_RECORDS,
    DEFAULT_MAX_PENDING, LAZY_LINGER_MS,
};

use held::Held;
use pipeline::{Gated, Pipeline};
use space::Space;
use types::Monotonic;

/// See the module doc.
#[derive(Debug)]
pub struct Machine<A> {
    scheduler: Scheduler,
    pipeline: Pipeline<A>,
    held: Held,
    options: MachineOptions,
    clock: Monotonic,
    /// Since when (monotonic ms) lazy records wait in the outbox.
    lazy_since: Option<u64>,
    /// Records appended since the last compaction.
    since_compaction: u64,
    /// Appends and rewrites handed out and not reported durable yet.
    commits_in_flight: usize,
    /// No new attempts, no linger (a shutdown began).
    stopping: bool,
    /// The driver asked for a compaction (its medium is filling).
    compaction_requested: bool,
    /// The final flush: released starts are dropped, nothing is held.
    closing: bool,
    counters: Counters,
    effects: Vec<Effect<A>>,
    /// The storage's state (a full disk).
    space: Space,
}

impl<A> Machine<A> {
    /// Rebuilds the state from the journal's records (oldest first) and
    /// queues what the restart calls for (re-runs, re-published outcomes).
    pub fn restore(
        policy: Policy,
        records: Vec<Record>,
        options: MachineOptions,
        now: u64,
    ) -> Self {
        let replayed = records.len() as u64;
        let upcoming: Vec<Invocation> = records
            .iter()
            .filter_map(|r| match r {
                Record::Accepted(cmd) => upcoming(cmd),
                _ => None,
            })
            .collect();
        let (scheduler, startup) = Scheduler::restore(policy, records, now);
        let mut machine = Machine {
            scheduler,
            pipeline: Pipeline::new(),
            held: Held::default(),
            options,
            clock: Monotonic::default(),
            lazy_since: None,
            // Replayed records count towards the next compaction.
            since_compaction: replayed,
            commits_in_flight: 0,
            stopping: false,
            compaction_requested: false,
            closing: false,
            counters: Counters::default(),
            effects: Vec::new(),
            space: Space::default(),
        };
        let mono = machine.clock.advance(now);
        machine.probe_at_start();
        // Still pending: their preparation was lost with the process.
        for inv in upcoming {
            if machine
                .scheduler
                .status_of(&inv.id)
                .is_some_and(|s| !s.is_final())
            {
                machine.effects.push(Effect::Upcoming(inv));
            }
        }
        machine.apply(startup, mono);
        machine
    }

    /// Compacts the journal at the next [`Machine::tick`] that may (not
    /// while the storage is full), whatever the record count: the driver's
    /// medium is filling ([`Storage::wants_compaction`](crate::journal::Storage::wants_compaction)).
    pub fn request_compaction(&mut self) {
        self.compaction_requested = true;
    }

    /// Moves the effects produced so far to the end of `into`, in order.
    pub fn take_effects(&mut self, into: &mut Vec<Effect<A>>) {
        into.append(&mut self.effects);
    }

    /// A delivery arrived on the command topic whose last level gave `role`
    /// (`Err(level)`: not a role). `plugins` lists the loaded plugins, for
    /// the `_plugins` built-in.
    pub fn on_message(
        &mut self,
        role: Result<Role, &str>,
        payload: &[u8],
        token: A,
        now: u64,
        plugins: impl FnOnce() -> Vec<Listed>,
    ) {
        let mono = self.clock.advance(now);
        let decoded = envelope::decode(payload, &self.options.envelope_limits);
        let actions = match (role, decoded) {
            (Err(level), decoded) => {
                let (id, name) = match decoded {
                    Ok(env) => (Some(env.id), Some(env.name)),
                    Err(rejection) => (rejection.id, rejection.name),
                };
                let message = alloc::format!(
                    "topic level {level:?} is not a role (admin, primary, secondary)"
                );
                self.reject(id, name, Code::NotPermitted, message, now)
            }
            (Ok(_), Err(rejection)) => {
                crate::diag::event!(warn, %rejection, "invalid command envelope");
                let (message, code) = (
                    alloc::string::ToString::to_string(&rejection.error),
                    rejection.code(),
                );
                self.reject(rejection.id, rejection.name, code, message, now)
            }
            (Ok(role), Ok(env)) if is_reserved(&env.name) => {
                match builtins::answer(
                    &env,
                    role,
                    &self.options.builtins,
                    &self.scheduler,
                    plugins,
                    now,
                ) {
                    BuiltinAnswer::Publish(status) => alloc::vec![Action::Publish(status)],
                    BuiltinAnswer::Queue => self.scheduler.accept(env, role, now),
                    BuiltinAnswer::Reject { code, message } => {
                        self.reject(Some(env.id), Some(env.name), code, message, now)
                    }
                }
            }
            (Ok(role), Ok(env)) => {
                crate::diag::event!(debug, id = %env.id, name = %env.name, %role, "command received");
                self.scheduler.accept(env, role, now)
            }
        };
        self.apply(actions, mono);
        // The PUBACK waits for every record this message produced (its
        // `Accepted`, or its rejection's `Finished`).
        self.pipeline
            .gate(self.pipeline.emitted(), Gated::Ack(token));
        self.release(mono);
    }

    /// The attempt of command `id` ended with `result`; `events` are what
    /// the call emitted (they leave with its status).
    pub fn on_attempt_done(
        &mut self,
        id: &str,
        result: AttemptResult,
        events: Vec<Event>,
        now: u64,
    ) {
        self.on_attempt_done_by(id, result, events, None, now)
    }

    /// [`Machine::on_attempt_done`] for an attempt that ran on plugin
    /// version `ran_by` (`name@version`): its statuses and its `Finished`
    /// record name it.
    pub fn on_attempt_done_by(
        &mut self,
        id: &str,
        result: AttemptResult,
        events: Vec<Event>,
        ran_by: Option<String>,
        now: u64,
    ) {
        let mono = self.clock.advance(now);
        // Events leave with the call's final status: after the records
        // before its `Finished`.
        let after = self.pipeline.emitted();
        for Event { name, payload } in events {
            self.pipeline.gate(after, Gated::Event { name, payload });
        }
        match self.scheduler.finish(id, result, now) {
            Ok(mut actions) => {
                if let Some(plugin) = &ran_by {
                    self.scheduler.name_runner(id, plugin);
                    for action in &mut actions {
                        match action {
                            Action::Publish(s) | Action::Journal(Record::Finished(s))
                                if s.id == id =>
                            {
                                s.plugin.clone_from(&ran_by)
                            }
                            _ => {}
                        }
                    }
                }
                self.apply(actions, mono)
            }
            Err(_error) => {
                crate::diag::event!(error, error = %_error, "scheduler refused an attempt result")
            }
        }
    }

    /// The records up to `covered` are durable (an `Append` or `Rewrite`
    /// finished; they finish in the order they were handed out).
    pub fn on_durable(&mut self, covered: u64, now: u64) {
        let mono = self.clock.advance(now);
        self.commits_in_flight = self.commits_in_flight.saturating_sub(1);
        self.space_durable(mono);
        self.pipeline.durable_up_to(covered);
        self.release(mono);
    }

    /// The broker acknowledged the final status of command `id`: journal it
    /// as delivered (rides the next append; nothing waits for it).
    pub fn on_delivered(&mut self, id: &str, now: u64) {
        let mono = self.clock.advance(now);
        let actions: Vec<Action> = self.scheduler.delivered(id).into_iter().collect();
        self.apply(actions, mono);
    }

    /// The end of a turn, and every time [`Machine::next_wakeup`] passes:
    /// start what can start, publish held statuses that fell due, and
    /// submit the turn's records as one append (or a compaction).
    pub fn tick(&mut self, now: u64) {
        let mono = self.clock.advance(now);
        if !self.stopping {
            let actions = self.scheduler.poll(now);
            self.apply(actions, mono);
        }
        for status in self.held.due(mono) {
            self.effects.push(Effect::Publish(Outgoing::Status(status)));
        }
        self.submit(mono);
    }

    /// A graceful shutdown began: start nothing new, stop lingering.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// The final flush of a shutdown (after [`Machine::stop`] and the
    /// running handler): held statuses are still true and go out first,
    /// then everything left is submitted. Releases after this drop starts.
    pub fn close(&mut self, now: u64) {
        self.stopping = true;
        self.closing = true;
        for status in self.held.drain() {
            self.effects.push(Effect::Publish(Outgoing::Status(status)));
        }
        self.tick(now);
    }

    /// Whether the driver should read more messages.
    pub fn accepting(&self) -> bool {
        !self.stopping
            && !self.space.degraded()
            && self.scheduler.pending_len() < self.options.max_pending
    }

    /// When (wall ms) [`Machine::tick`] has work without new input: a retry
    /// or expiry, the end of the lazy records' linger, a held status due.
    pub fn next_wakeup(&self, now: u64) -> Option<u64> {
        let scheduler = self.scheduler.next_wakeup().filter(|_| !self.stopping);
        let linger = self
            .lazy_since
            .map(|since| self.clock.to_wall(since + LAZY_LINGER_MS, now));
        let held = self.held.next_due().map(|at| self.clock.to_wall(at, now));
        let space = self.space_wakeup(now);
        [scheduler, linger, held, space].into_iter().flatten().min()
    }

    /// The last known status of request `id` (what `_status` answers).
    pub fn status_of(&self, id: &str) -> Option<Status> {
        self.scheduler.status_of(id)
    }

    /// The command whose attempt runs now, if any.
    pub fn running(&self) -> Option<(&str, u32)> {
        self.scheduler
            .running()
            .map(|(cmd, attempt)| (cmd.id.as_str(), attempt))
    }

    /// Commands journaled and not final.
    pub fn pending_len(&self) -> usize {
        self.scheduler.pending_len()
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn state(&self) -> MachineState {
        MachineState {
            pending: self.scheduler.pending_len(),
            remembered: self.scheduler.remembered_len(),
            running: self.scheduler.running().map(|(c, a)| (c.id.clone(), a)),
            records_emitted: self.pipeline.emitted(),
            records_durable: self.pipeline.durable(),
            next_wakeup: self.scheduler.next_wakeup(),
            storage_full: self.space.degraded(),
        }
    }
}

/// The [`Effect::Upcoming`] a queued command calls for, if any: an
/// `_install` chunk (the only command a driver prepares ahead).
fn upcoming(cmd: &crate::envelope::Command) -> Option<Invocation> {
    (cmd.name == crate::ota::INSTALL).then(|| Invocation {
        id: cmd.id.clone(),
        name: cmd.name.clone(),
        payload: cmd.payload.clone(),
        attempt: 1,
        role: cmd.role,
    })
}
