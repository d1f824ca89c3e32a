//! Rebuilding the scheduler from the journal after a (re)start, and the
//! minimal record set that rebuilds it (compaction). Both directions live
//! together so they stay each other's inverse: replaying
//! [`Scheduler::retained_records`] yields the same queue, attempt counters
//! and dedupe memory.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{Action, Entry, Policy, Scheduler};
use crate::envelope::Kind;
use crate::journal::record::Record;
use crate::status::{Code, State};

impl Scheduler {
    /// Replays journal records (oldest first) into a scheduler.
    ///
    /// A command `Started` without a later `Retrying` or `Finished` was
    /// running when the host stopped. With attempts left it runs again at
    /// once as the next attempt; on its last attempt, or if it is an RPC
    /// (never retried), it ends `failed` with code `interrupted`. The
    /// returned actions journal and publish those outcomes.
    ///
    /// Records that contradict the state (a second `Accepted` of a pending
    /// id, `Started` of an unknown id) are skipped: replay never fails.
    pub fn restore(
        policy: Policy,
        records: impl IntoIterator<Item = Record>,
        now: u64,
    ) -> (Scheduler, Vec<Action>) {
        let mut s = Scheduler::new(policy);
        let mut in_flight: BTreeSet<u64> = BTreeSet::new();
        for record in records {
            match record {
                Record::Accepted(mut cmd) => {
                    if s.by_id.contains_key(&cmd.id) {
                        continue;
                    }
                    // Accepted again after its outcome was forgotten live.
                    s.outcomes.forget(&cmd.id);
                    // Journal order is arrival order; keep sequences increasing.
                    cmd.seq = cmd.seq.max(s.next_seq);
                    s.next_seq = cmd.seq + 1;
                    let changed_at = cmd.accepted_at;
                    s.insert(Entry {
                        cmd,
                        attempts: 0,
                        ready_at: 0,
                        last_error: None,
                        changed_at,
                    });
                }
                Record::Started { id, attempt, at } => {
                    let Some(&seq) = s.by_id.get(&id) else {
                        continue;
                    };
                    if let Some(e) = s.queue.get_mut(&seq) {
                        e.attempts = e.attempts.max(attempt);
                        e.ready_at = 0;
                        e.changed_at = at;
                        in_flight.insert(seq);
                    }
                }
                Record::Retrying {
                    id,
                    attempt,
                    next_attempt_at,
                    code,
                    message,
                } => {
                    let Some(&seq) = s.by_id.get(&id) else {
                        continue;
                    };
                    if let Some(e) = s.queue.get_mut(&seq) {
                        e.attempts = e.attempts.max(attempt);
                        e.ready_at = next_attempt_at;
                        e.last_error = Some((code, message));
                        in_flight.remove(&seq);
                    }
                }
                Record::Finished(status) => {
                    if let Some(&seq) = s.by_id.get(&status.id) {
                        s.remove(seq);
                        in_flight.remove(&seq);
                    }
                    s.outcomes.remember(status);
                }
                Record::Delivered { id } => {
                    s.outcomes.mark_delivered(&id);
                }
            }
        }

        // Final statuses the broker never acknowledged (the host stopped
        // between the outcome and its PUBACK): publish them again, oldest
        // first. Apps see at most a duplicate, never a missing final status.
        let mut actions: Vec<Action> = s
            .outcomes
            .iter_delivery()
            .filter(|(_, delivered)| !delivered)
            .map(|(status, _)| Action::Publish(status.clone()))
            .collect();

        let max_attempts = s.policy.max_attempts();
        for seq in in_flight {
            let Some(e) = s.queue.get_mut(&seq) else {
                continue;
            };
            let attempt = e.attempts;
            if e.cmd.kind == Kind::Rpc {
                let message = format!(
                    "the host stopped while this RPC ran (attempt {attempt}); RPCs are not retried"
                );
                actions.extend(s.conclude(
                    seq,
                    State::Failed,
                    Some((Code::Interrupted, message)),
                    None,
                    now,
                ));
            } else if attempt >= max_attempts {
                let message = format!(
                    "the host stopped during attempt {attempt} of {max_attempts}; no attempt left"
                );
                actions.extend(s.conclude(
                    seq,
                    State::Failed,
                    Some((Code::Interrupted, message)),
                    None,
                    now,
                ));
            } else {
                e.last_error = Some((
                    Code::Interrupted,
                    format!("the host stopped during attempt {attempt}"),
                ));
                e.ready_at = 0;
                e.changed_at = now;
            }
        }
        s.careful_below = s.next_seq;
        (s, actions)
    }

    /// The smallest record set that restores this state: the remembered
    /// outcomes (oldest first, each followed by `Delivered` if the broker
    /// acknowledged its status), then every pending command in arrival order
    /// with its attempt state (`Started` for the running one, `Retrying` for
    /// one with attempts behind it). Hand it to the storage's `rewrite`.
    pub fn retained_records(&self) -> Vec<Record> {
        let mut records: Vec<Record> = Vec::new();
        for (status, delivered) in self.outcomes.iter_delivery() {
            records.push(Record::Finished(status.clone()));
            if delivered {
                records.push(Record::Delivered {
                    id: status.id.clone(),
                });
            }
        }
        for (&seq, e) in &self.queue {
            records.push(Record::Accepted(e.cmd.clone()));
            let id = e.cmd.id.clone();
            if self.running == Some(seq) {
                records.push(Record::Started {
                    id,
                    attempt: e.attempts,
                    at: e.changed_at,
                });
            } else if e.attempts > 0 {
                let (code, message) = e
                    .last_error
                    .clone()
                    .unwrap_or((Code::Interrupted, String::new()));
                records.push(Record::Retrying {
                    id,
                    attempt: e.attempts,
                    next_attempt_at: e.ready_at,
                    code,
                    message,
                });
            }
        }
        records
    }
}
