//! How the machine's decisions become effects: the scheduler's actions
//! turned into journal records and gated publishes ([`Machine::apply`]), the
//! gates released as records become durable ([`Machine::release`]), and the
//! outbox submitted as one group-commit append or a compaction snapshot
//! ([`Machine::submit`]).

use alloc::string::String;
use alloc::vec::Vec;

use crate::envelope::Envelope;
use crate::journal::record::Record;
use crate::scheduler::{Action, Start};
use crate::status::{Code, State, Status};

use super::pipeline::Gated;
use super::{coalesce, upcoming, Effect, Machine, Outgoing, LAZY_LINGER_MS};

impl<A> Machine<A> {
    /// Submits the outbox: one append, unless only lazy records wait and
    /// their linger is not over; then a compaction snapshot when one is due.
    /// On a full disk, the retry or probe that is due instead (`space`).
    pub(super) fn submit(&mut self, mono: u64) {
        if self.submit_degraded(mono) {
            return;
        }
        let compact_after = self.options.compact_after_records;
        let due = compact_after > 0 && self.since_compaction >= compact_after;
        if (due || self.compaction_requested) && !self.space.degraded() {
            self.compaction_requested = false;
            // The outbox goes first as an append: a compaction with no room
            // for its new file is skipped, and must not take records along.
            if let Some((records, covered)) = self.pipeline.take_batch() {
                self.commits_in_flight += 1;
                self.effects.push(Effect::Append {
                    records,
                    covered,
                    idle: false,
                });
            }
            self.lazy_since = None;
            let covered = self.pipeline.emitted();
            let records: Vec<Vec<u8>> = self
                .scheduler
                .retained_records()
                .iter()
                .map(Record::encode)
                .collect();
            crate::diag::event!(debug, records = records.len(), "compacting the journal");
            self.counters.compactions += 1;
            self.since_compaction = 0;
            self.commits_in_flight += 1;
            self.effects.push(Effect::Rewrite { records, covered });
            return;
        }
        if !self.stopping && self.pipeline.has_outbox() && !self.pipeline.must_submit() {
            let since = *self.lazy_since.get_or_insert(mono);
            if mono.saturating_sub(since) < LAZY_LINGER_MS {
                return;
            }
        }
        self.lazy_since = None;
        if let Some((records, covered)) = self.pipeline.take_batch() {
            let idle = self.commits_in_flight == 0 && self.scheduler.pending_len() <= 1;
            self.commits_in_flight += 1;
            self.effects.push(Effect::Append {
                records,
                covered,
                idle,
            });
        }
    }

    /// Turns the scheduler's actions into records and gated effects.
    pub(super) fn apply(&mut self, actions: Vec<Action>, mono: u64) {
        let mut finished_id: Option<String> = None;
        for action in actions {
            match action {
                Action::Journal(record) => {
                    finished_id = match &record {
                        Record::Finished(s) => Some(s.id.clone()),
                        _ => None,
                    };
                    if let Record::Accepted(cmd) = &record {
                        if let Some(inv) = upcoming(cmd) {
                            self.effects.push(Effect::Upcoming(inv));
                        }
                    }
                    match &record {
                        Record::Finished(_) | Record::Delivered { .. } => {
                            self.pipeline.record_lazy(record.encode())
                        }
                        _ => self.pipeline.record(record.encode()),
                    }
                    self.since_compaction += 1;
                }
                Action::Publish(status) => {
                    let mut after = self.pipeline.emitted();
                    // A final status waits for the records before its own
                    // `Finished`, not for it: a crash before it is durable
                    // re-runs the command, which was in flight (docs/architecture.md).
                    if status.is_final() && finished_id.as_deref() == Some(status.id.as_str()) {
                        after -= 1;
                    }
                    self.pipeline.gate(after, Gated::Publish(status));
                    finished_id = None;
                }
                Action::Start(start) => {
                    finished_id = None;
                    if start.persist_first {
                        self.pipeline
                            .gate(self.pipeline.emitted(), Gated::Start(start));
                    } else {
                        self.start(start);
                    }
                }
            }
        }
        self.release(mono);
    }

    /// Turns what became durable into effects. Messages released together
    /// are coalesced first: a fast handler's final status is released by
    /// the same fsync as its `accepted`, which it supersedes.
    pub(super) fn release(&mut self, mono: u64) {
        let mut messages = Vec::new();
        let mut acks = Vec::new();
        for gated in self.pipeline.release() {
            match gated {
                Gated::Ack(token) => acks.push(token),
                Gated::Publish(status) => messages.push(Outgoing::Status(status)),
                Gated::Event { name, payload } => messages.push(Outgoing::Event { name, payload }),
                Gated::Start(start) if !self.closing => self.start(start),
                Gated::Start(_) => {}
            }
        }
        let mut dropped = coalesce(&mut messages);
        for message in messages {
            if let Outgoing::Status(status) = &message {
                if !self.closing
                    && status.status == State::Accepted
                    && self.queued_behind(&status.id)
                {
                    if let Outgoing::Status(status) = message {
                        self.held.hold(status, mono);
                    }
                    continue;
                }
                if self.held.supersede(&status.id) {
                    dropped += 1;
                }
            }
            self.effects.push(Effect::Publish(message));
        }
        self.counters.coalesced += dropped as u64;
        // PUBACKs after the statuses: the app waits for a status, the
        // broker for nothing in particular (acks keep their own order).
        self.effects.extend(acks.into_iter().map(Effect::Ack));
    }

    /// Command `id` waits behind another one (see `held`).
    pub(super) fn queued_behind(&self, id: &str) -> bool {
        self.scheduler.pending_len() > 1
            && self.scheduler.running().is_none_or(|(cmd, _)| cmd.id != id)
    }

    pub(super) fn start(&mut self, start: Start) {
        self.effects.push(Effect::Start(start.invocation));
    }

    /// A `rejected` status: journaled and deduped when the id is known,
    /// published as is (empty id) otherwise.
    pub(super) fn reject(
        &mut self,
        id: Option<String>,
        name: Option<String>,
        code: Code,
        message: String,
        now: u64,
    ) -> Vec<Action> {
        self.counters.rejected += 1;
        let name = name.unwrap_or_default();
        match id {
            Some(id) => self
                .scheduler
                .reject(&Envelope::new(id, name, 0), code, message, now),
            None => alloc::vec![Action::Publish(
                Status::new("", name, State::Rejected, 0, now).with_code(code, message),
            )],
        }
    }
}
